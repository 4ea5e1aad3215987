#!/usr/bin/env bash
# sweep.sh measures the health sweep end to end through the queue: for each
# fleet size N, a simulated fleet of N SSH servers on loopback
# (internal/fleetsim, its own process), registered as VPS rows with their
# pinned host keys in a fresh PostgreSQL database, two real `chom worker`
# processes (built with -tags pprof), and the sweep's tick enqueued as
# `chom scheduler` enqueues it. Each size is swept twice: cold (every check
# dials and handshakes) then warm (pooled connections). It prints per sweep
# the time from the tick to the last check recorded, checks/s, CPU per check
# (workers, split by call stack; PostgreSQL; Redis; the fleet), the fleet's
# share of the 2 cores, and after the cold sweep the workers' memory per
# pooled connection; it fails when a period's ledger is not exactly one check
# per server. See docs/performance.md, "The health sweep end to end".
#
#   scripts/load/sweep.sh                  # N = 1000 10000
#   scripts/load/sweep.sh 1000 10000 30000 100000
#   SWEEPS=3 scripts/load/sweep.sh 10000   # a third sweep
#   PROFILE=DIR scripts/load/sweep.sh 10000   # keep the workers' CPU profiles
#   BIN_DIR=DIR scripts/load/sweep.sh …   # use DIR/chom (-tags pprof) and DIR/sweep,
#                                         # built before (e.g. outside a measurement lock)
#
# Any CHOM_* variable set (CHOM_WORKER_CONCURRENCY, CHOM_DB_MAX_CONNS, …)
# reaches the workers. Uses CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL if
# set, otherwise re-runs itself under scripts/test-services.sh. Needs root (or
# a hard RLIMIT_NOFILE above 2N) for the descriptors of large fleets.
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
repo_root="$(cd "$(dirname "$self")/../.." && pwd)"
cd "$repo_root"
log() { printf 'sweep: %s\n' "$*" >&2; }

if [[ -z "${CHOM_TEST_DATABASE_URL:-}" || -z "${CHOM_TEST_REDIS_URL:-}" ]]; then
	[[ -z "${CHOM_LOAD_REEXEC:-}" ]] || { log "test-services.sh did not export the server URLs"; exit 1; }
	log "CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL not set: starting throwaway servers with scripts/test-services.sh"
	export CHOM_LOAD_REEXEC=1
	exec bash "$repo_root/scripts/test-services.sh" run -- bash "$self" "$@"
fi

sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 10000)
tmp="$(mktemp -d "${TMPDIR:-/tmp}/chom-sweep.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
bin="${BIN_DIR:-$tmp}"
if [[ -z "${BIN_DIR:-}" ]]; then
	go build -tags pprof -o "$bin/chom" ./cmd/chom
	go build -o "$bin/sweep" ./scripts/load/sweep
fi
args=(-chom "$bin/chom" -n "$(IFS=,; echo "${sizes[*]}")" -sweeps "${SWEEPS:-2}")
[[ -z "${PROFILE:-}" ]] || { mkdir -p "$PROFILE"; args+=(-profile-dir "$PROFILE"); }
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%FT%TZ)"
"$bin/sweep" "${args[@]}"
