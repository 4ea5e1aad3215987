#!/usr/bin/env bash
# poll.sh measures operation polling on the real binary against its ceiling, in
# the same run: `chom dev` on real PostgreSQL and Redis (CHOM_TEST_DATABASE_URL /
# CHOM_TEST_REDIS_URL, or throwaway servers from scripts/test-services.sh), N
# operations created through the API and left to finish; then, RUNS times, wrk
# (same threads, connections, duration and poll.lua) against
#   1. bare: a bare net/http server (scripts/load/bare) answering every request
#      with the bytes of one real poll response (headers and body), and
#   2. chom: GET /api/v1/operations/{id} over the N operations,
# and prints each run, the medians and chom's throughput as a share of bare.
#
#   scripts/load/poll.sh                              # 1000 operations, 3 × 20s each, 200 connections
#   CLIENTS=50 DURATION=10s scripts/load/poll.sh
#   PROFILE=/tmp/prof CLIENTS=50 scripts/load/poll.sh # + a CPU profile of chom during its first run
#
# Knobs: OPS (1000), DURATION (20s), CLIENTS (200), THREADS (2), RUNS (3),
# PROFILE=DIR (builds chom with -tags pprof, writes DIR/poll.pprof and prints
# its top entries), CHOM_BIN=PATH (measure that chom binary instead of building
# this checkout: an older commit's, for a before/after in the same conditions;
# build it with -tags pprof for PROFILE), KEEP=1 (keep the temp dir and the
# database).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -z "${CHOM_TEST_DATABASE_URL:-}" || -z "${CHOM_TEST_REDIS_URL:-}" ]]; then
	exec bash scripts/test-services.sh run -- "$0" "$@"
fi
OPS="${OPS:-1000}" DURATION="${DURATION:-20s}" CLIENTS="${CLIENTS:-200}" THREADS="${THREADS:-2}" RUNS="${RUNS:-3}"
PROFILE="${PROFILE:-}"
tmp="$(mktemp -d)"
db="chom_poll_$RANDOM$RANDOM"
admin_url="$CHOM_TEST_DATABASE_URL"
cleanup() {
	[[ -n "${bare_pid:-}" ]] && kill "$bare_pid" 2>/dev/null && wait "$bare_pid" 2>/dev/null
	[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[[ -n "${KEEP:-}" ]] && { echo "kept $tmp and database $db" >&2; return; }
	psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
tags=()
[[ -n "$PROFILE" ]] && tags=(-tags pprof)
if [[ -n "${CHOM_BIN:-}" ]]; then
	cp "$CHOM_BIN" "$tmp/chom"
else
	go build "${tags[@]}" -o "$tmp/chom" ./cmd/chom
fi
go build -o "$tmp/bare" ./scripts/load/bare
psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
export CHOM_DATABASE_URL="${admin_url/\/chom_test\?//$db?}"
export CHOM_REDIS_URL="${CHOM_TEST_REDIS_URL%/*}/$((900 + RANDOM % 100))"
redis-cli -u "$CHOM_REDIS_URL" FLUSHDB >/dev/null
export CHOM_LOG_LEVEL=warn CHOM_RATE_LIMIT=0
port=$((20000 + RANDOM % 40000))
pprof_addr="127.0.0.1:$((port + 1))"
PPROF_LISTEN="$pprof_addr" "$tmp/chom" dev --data-dir "$tmp/data" --listen "127.0.0.1:$port" >"$tmp/dev.out" 2>"$tmp/dev.err" &
pid=$!
up=
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$port/api/v1/health" >/dev/null && { up=1; break; }; sleep 0.2; done
[[ -n "$up" ]] || { echo "chom dev did not answer on 127.0.0.1:$port within 30s:" >&2; tail -20 "$tmp/dev.err" >&2; exit 1; }
export CHOM_LOAD_TOKEN="$(cat "$tmp/data/dev-token")"
for i in $(seq "$OPS"); do
	curl -fs -X POST "http://127.0.0.1:$port/api/v1/sites" -H "Authorization: Bearer $CHOM_LOAD_TOKEN" \
		-H 'Content-Type: application/json' -d "{\"domain\":\"p$i.poll.example\",\"site_type\":\"html\",\"https\":\"off\"}" |
		grep -o '^{"id":"op_[0-9a-f]*"' | cut -d'"' -f4
done >"$tmp/ids"
# Polls of finished operations are the common case: wait until every one is.
# The sites are created with https off, so no certificate issuance (which the
# embedded CA would run, retried against the server's job limit) keeps the
# worker busy during the measurement: the runs measure polling alone.
for _ in $(seq 600); do # up to 2 minutes
	pending="$(psql "$CHOM_DATABASE_URL" -tAc "SELECT count(*) FROM operations WHERE finished_at IS NULL")"
	[[ "$pending" == 0 ]] && break
	sleep 0.2
done
[[ "$pending" == 0 ]] || echo "warning: $pending operations still unfinished" >&2
# The ceiling answers with the bytes of a real poll response.
curl -fs -D "$tmp/headers" -o "$tmp/body" "http://127.0.0.1:$port/api/v1/operations/$(head -1 "$tmp/ids")" \
	-H "Authorization: Bearer $CHOM_LOAD_TOKEN"
"$tmp/bare" -listen "127.0.0.1:0" -headers "$tmp/headers" -body "$tmp/body" >"$tmp/bare.addr" &
bare_pid=$!
for _ in $(seq 50); do [[ -s "$tmp/bare.addr" ]] && break; sleep 0.1; done
bare_url="http://$(head -1 "$tmp/bare.addr")"
load() { cut -d' ' -f1 /proc/loadavg; }
measure() { # measure NAME URL: one wrk run, its poll: line prefixed with NAME and the 1-min load before it
	local before
	before="$(load)"
	CHOM_POLL_IDS="$tmp/ids" wrk -t"$THREADS" -c"$CLIENTS" -d"$DURATION" --latency -s scripts/load/poll.lua "$2" |
		grep '^poll:' | sed "s/^poll:/$1 (load $before):/"
}
echo "== polling: $(wc -l <"$tmp/ids") finished operations, response $(wc -c <"$tmp/body") bytes; $CLIENTS connections, $THREADS wrk threads, $DURATION × $RUNS runs; $(nproc) cores shared by wrk, chom and the servers; chom ${CHOM_BIN:-of $(git rev-parse --short HEAD)}"
for run in $(seq "$RUNS"); do
	measure bare "$bare_url" | tee -a "$tmp/results"
	if [[ -n "$PROFILE" && "$run" == 1 ]]; then
		mkdir -p "$PROFILE"
		secs="${DURATION%s}"
		curl -fs -o "$PROFILE/poll.pprof" "http://$pprof_addr/debug/pprof/profile?seconds=$((secs > 2 ? secs - 2 : 1))" &
		prof_pid=$!
	fi
	measure chom "http://127.0.0.1:$port" | tee -a "$tmp/results"
	[[ -n "${prof_pid:-}" ]] && { wait "$prof_pid"; prof_pid=; }
done
# Medians (of throughput, p99 and the per-run ratio) over the runs.
awk '
	function median(a, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{
		name = $1
		for (i = 1; i <= NF; i++) {
			if ($i == "req/s;") rps = $(i - 1)
			if ($i == "p99") p99 = $(i + 1)
		}
		sub(/ms$/, "", p99)
		k = ++n[name]; r[name, k] = rps; p[name, k] = p99
		if (name == "chom") { ratio[k] = rps / r["bare", k] }
	}
	END {
		for (s in n) { for (k = 1; k <= n[s]; k++) { a[k] = r[s, k]; b[k] = p[s, k] }; mr[s] = median(a, n[s]); mp[s] = median(b, n[s]) }
		for (k = 1; k <= n["chom"]; k++) c[k] = ratio[k]
		printf "median of %d runs: bare %.0f req/s p99 %.2fms; chom %.0f req/s p99 %.2fms; chom/bare %.1f %% (median of the per-run ratios %.1f %%)\n",
			n["chom"], mr["bare"], mp["bare"], mr["chom"], mp["chom"], 100 * mr["chom"] / mr["bare"], 100 * median(c, n["chom"])
	}' "$tmp/results"
if [[ -n "$PROFILE" ]]; then
	cp "$tmp/chom" "$PROFILE/chom"
	echo "== CPU profile of chom during its first run: $PROFILE/poll.pprof (binary $PROFILE/chom)"
	go tool pprof -top -nodecount=25 "$PROFILE/chom" "$PROFILE/poll.pprof" 2>/dev/null | sed -n '1,32p'
fi
