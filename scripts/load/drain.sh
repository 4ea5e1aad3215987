#!/usr/bin/env bash
# drain.sh measures how close CHOM's workers come to asynq's own throughput
# (internal/drainbench TestDrain): N site provisions accepted with the rows the
# ingress writes, drained end to end by two worker processes (the production
# worker assembly over a no-op driver: operations succeeded, sites active and
# placed, one outbox event each), against two bare asynq servers of the same
# concurrency draining N no-op tasks of the same payload on the same Redis, in
# the same run, ROUNDS times (alternating which goes first), each round then
# measuring the floor (PostgreSQL alone writing the rows a provision changes,
# one and ten provisions per statement: the most any worker could reach on
# these cores); then an untimed pass counts the database transactions per
# provision. Prints DRAIN lines: each pass (with the machine's CPU per
# operation, split into the workers, PostgreSQL, Redis and the rest, and the
# Redis commands per operation), the medians and their ratio, the floor and
# the ceiling it sets, the transactions per provision.
#
#   scripts/load/drain.sh                       # N=20000, 3 rounds
#   N=5000 ROUNDS=3 scripts/load/drain.sh
#   MEASURE_LOCK=/tmp/chom-measure.lock scripts/load/drain.sh   # build first, then
#                                               # measure under flock on that file
#
# Uses real PostgreSQL and Redis: CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL if
# set, otherwise it re-runs itself under scripts/test-services.sh (throwaway
# servers on loopback). Every pass gets a fresh schema and Redis database.
# Knobs: N (default 20000), ROUNDS (3), COUNT_N (transactions pass, 2000),
# MEASURE_LOCK (unset: no lock), DB_CORE=1 (PostgreSQL on a core of its own:
# every PostgreSQL process pinned to the last core, Redis, the benchmark and
# the workers it starts, chom's and bare asynq's alike, to the others, with
# taskset; the shape of a deployment whose database has its own machine, on
# one machine; the servers' affinity is restored afterwards). Exit status: the
# test's (a ledger mismatch fails it).
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
repo_root="$(cd "$(dirname "$self")/../.." && pwd)"
cd "$repo_root"

log() { printf 'drain: %s\n' "$*" >&2; }

if [[ -z "${CHOM_TEST_DATABASE_URL:-}" || -z "${CHOM_TEST_REDIS_URL:-}" ]]; then
	[[ -z "${CHOM_LOAD_REEXEC:-}" ]] || { log "test-services.sh did not export the server URLs"; exit 1; }
	log "CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL not set: starting throwaway servers with scripts/test-services.sh"
	export CHOM_LOAD_REEXEC=1
	exec bash "$repo_root/scripts/test-services.sh" run -- bash "$self" "$@"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/chom-drain.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "building the benchmark (go test -c ./internal/drainbench)"
go test -c -o "$tmp/drainbench.test" ./internal/drainbench

export CHOM_DRAIN_N="${N:-20000}" CHOM_DRAIN_ROUNDS="${ROUNDS:-3}" CHOM_DRAIN_COUNT_N="${COUNT_N:-2000}" CI="${CI:-true}"
echo "== CHOM workers against the queue's ceiling: N=$CHOM_DRAIN_N, $CHOM_DRAIN_ROUNDS rounds =="
echo "date     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
echo "machine  $(nproc) cores (nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "tree     $(git rev-parse --short HEAD 2>/dev/null || echo '?') ($(git status --porcelain 2>/dev/null | wc -l | tr -d ' ') changed files), $(go version | cut -d' ' -f3)"
run=("$tmp/drainbench.test" -test.run '^TestDrain$' -test.count 1 -test.v -test.timeout 30m)
if [[ -n "${MEASURE_LOCK:-}" ]]; then
	log "waiting for the measurement lock $MEASURE_LOCK"
	run=(flock "$MEASURE_LOCK" "${run[@]}")
fi
if [[ "${DB_CORE:-}" == 1 ]]; then
	# pin CPULIST PID...: each process and all of its threads.
	pin() { local c=$1 p; shift; for p in "$@"; do taskset -apc "$c" "$p" >/dev/null; done; }
	last=$(($(nproc) - 1))
	((last >= 1)) || { log "DB_CORE=1 needs at least 2 cores"; exit 1; }
	rest="0-$((last - 1))"
	datadir="$(psql "$CHOM_TEST_DATABASE_URL" -qAtc 'SHOW data_directory')"
	postmaster="$(head -n 1 "$datadir/postmaster.pid")"
	redis_pid="$(redis-cli -u "$CHOM_TEST_REDIS_URL" INFO server | tr -d '\r' | sed -n 's/^process_id://p')"
	[[ -n "$postmaster" && -n "$redis_pid" ]] || { log "DB_CORE=1: PostgreSQL's or Redis's process not found"; exit 1; }
	# Backends forked later inherit the postmaster's affinity.
	pin "$last" "$postmaster" $(pgrep -P "$postmaster")
	pin "$rest" "$redis_pid"
	trap 'pin "0-$last" "$postmaster" $(pgrep -P "$postmaster"); pin "0-$last" "$redis_pid"; rm -rf "$tmp"' EXIT
	run=(taskset -c "$rest" "${run[@]}")
	echo "cores    PostgreSQL on core $last alone; Redis, the benchmark and its workers on $rest (DB_CORE=1)"
fi
echo "load     $(cut -d' ' -f1-3 /proc/loadavg) (before the run)"
status=0
(cd internal/drainbench && "${run[@]}") >"$tmp/out" 2>&1 || status=$?
grep '^DRAIN' "$tmp/out" || true
echo "load     $(cut -d' ' -f1-3 /proc/loadavg) (after the run)"
if ((status != 0)); then
	grep -v '^{' "$tmp/out" | tail -n 40 >&2
fi
exit "$status"
