#!/usr/bin/env bash
# history.sh measures what a long history of finished operations costs the API:
# accept (POST /sites), poll (GET /operations/{id} of a finished operation) and
# list (GET /operations?limit=20), each with wrk against the real `chom ingress`
# on real PostgreSQL and Redis, first on an empty database, then after COPYing
# each step of historical finished operations (and one audit row each) into the
# same database, all in one run. It prints one table: throughput and p99 per
# step, and their ratio to the empty database's.
#
#   scripts/load/history.sh                          # steps 0, 1M, 10M; 10s per measure
#   STEPS="0 1000000" DURATION=10s ROUNDS=3 scripts/load/history.sh
#
# STEPS are cumulative totals of historical rows (each step COPYs the
# difference). ROUNDS runs each measure that many times per step and reports the
# median. The history belongs to the token's tenant (the worst case for a
# tenant's list) and finished 40 to 100 days ago, so with the default 30-day
# retention all of it is prunable: PRUNE=1 then runs the prune in batches of
# 5,000 on the last step and reports rows deleted per second and the longest
# statement.
#
# Uses CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL, or throwaway servers from
# scripts/test-services.sh. Needs go, wrk, psql, redis-cli, curl.
set -euo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/../.."
if [[ -z "${CHOM_TEST_DATABASE_URL:-}" || -z "${CHOM_TEST_REDIS_URL:-}" ]]; then
	exec bash scripts/test-services.sh run -- bash "$self" "$@"
fi
STEPS="${STEPS:-0 1000000 10000000}" DURATION="${DURATION:-10s}" ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-50}" ACCEPT_CLIENTS="${ACCEPT_CLIENTS:-200}" PRUNE="${PRUNE:-0}"
log() { printf 'history: %s\n' "$*" >&2; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/chom-history.XXXXXX")"
db="chom_history_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
admin_url="$CHOM_TEST_DATABASE_URL"
pid=""
cleanup() {
	[[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[[ -n "${KEEP:-}" ]] && { log "kept $tmp and database $db"; return; }
	psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/chom" ./cmd/chom
psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
db_url="${admin_url/\/chom_test\?//$db?}"
export CHOM_DATABASE_URL="$db_url" CHOM_REDIS_URL="${CHOM_TEST_REDIS_URL%/*}/$((900 + RANDOM % 100))"
export CHOM_LOG_LEVEL=warn CHOM_OPS_UI=false CHOM_AUTO_MIGRATE=false CHOM_RATE_LIMIT=0
redis-cli -u "$CHOM_REDIS_URL" FLUSHDB >/dev/null
"$tmp/chom" migrate up >"$tmp/migrate.log" 2>&1 || { cat "$tmp/migrate.log" >&2; exit 1; }
export CHOM_LOAD_TOKEN="$("$tmp/chom" token create --tenant load --scope read,write)"
tenant="$(psql "$db_url" -qAt -c "SELECT id FROM tenants WHERE name = 'load'")"
psql "$db_url" -qc "ANALYZE" >/dev/null

port=$((20000 + RANDOM % 40000))
CHOM_LISTEN="127.0.0.1:$port" "$tmp/chom" ingress 2>"$tmp/ingress.log" &
pid=$!
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$port/api/v1/health" >/dev/null && break; sleep 0.2; done
base="http://127.0.0.1:$port"

# The polled operations: 1,000 finished ones, the same at every step.
psql "$db_url" -qAt -c "INSERT INTO operations (id, tenant_id, op_type, status, progress, target_type, target_id, payload,
	created_at, updated_at, started_at, finished_at)
	SELECT 'op_' || lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5('poll' || g), 1, 20), '$tenant', 'site.provision', 'succeeded', 100, 'site', 'site_poll' || g, '{}',
	now(), now(), now(), now() FROM generate_series(1, 1000) g RETURNING id" >"$tmp/ids"

cat >"$tmp/list.lua" <<'LUA'
local token = os.getenv("CHOM_LOAD_TOKEN")
local threads = {}
function setup(t) threads[#threads + 1] = t end
function init() bad = 0; wrk.headers["Authorization"] = "Bearer " .. token end
function request() return wrk.format("GET", "/api/v1/operations?limit=20") end
function response(status) if status ~= 200 then bad = bad + 1 end end
function done(s, l)
  local nbad = 0
  for _, t in ipairs(threads) do nbad = nbad + t:get("bad") end
  io.write(string.format("poll: %d requests in %.1fs = %.0f req/s; p50 %.2fms p90 %.2fms p99 %.2fms p99.9 %.2fms; non-200 %d; socket errors %d\n",
    s.requests, s.duration / 1e6, s.requests / (s.duration / 1e6), l:percentile(50) / 1000, l:percentile(90) / 1000,
    l:percentile(99) / 1000, l:percentile(99.9) / 1000, nbad, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
LUA

# measure KIND → "req/s p99_ms" (one wrk run)
measure() {
	local out
	case "$1" in
	accept)
		CHOM_LOAD_RUN="h$RANDOM$RANDOM" CHOM_LOAD_RESULT="$tmp/accept.kv" wrk -t2 -c"$ACCEPT_CLIENTS" -d"$DURATION" --timeout 10s --latency \
			-s scripts/load/create-site.lua "$base" >"$tmp/wrk.out"
		grep -q '^non202=0$' "$tmp/accept.kv" || log "accept: non-202 answers: $(grep non202 "$tmp/accept.kv" | tr '\n' ' ')"
		echo "$(sed -n 's/^rps=//p' "$tmp/accept.kv") $(sed -n 's/^p99_ms=//p' "$tmp/accept.kv")" ;;
	poll | list)
		local script=scripts/load/poll.lua
		[[ "$1" == list ]] && script="$tmp/list.lua"
		out="$(CHOM_POLL_IDS="$tmp/ids" wrk -t2 -c"$CLIENTS" -d"$DURATION" --latency -s "$script" "$base" | grep '^poll:')"
		[[ "$out" == *"non-200 0;"* ]] || log "$1: $out"
		echo "$(sed -E 's/.*= ([0-9]+) req\/s.*/\1/' <<<"$out") $(sed -E 's/.*p99 ([0-9.]+)ms.*/\1/' <<<"$out")" ;;
	esac
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# load FROM TO: COPY historical rows FROM+1..TO (finished 40–100 days ago).
load() {
	local t0=$SECONDS
	# IDs are UUIDv7-shaped (a millisecond timestamp, then random hex), as
	# models.NewID makes them, so they sort by age like real ones.
	psql "$db_url" -q -c "COPY (SELECT 'op_' || lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || substr(md5('hist' || g), 1, 20),
		'$tenant', 'site.provision', (ARRAY['succeeded','failed','cancelled'])[1 + g % 3], 100, 'site', 'site_hist' || g, '{}',
		t - interval '1 minute', t, t
		FROM (SELECT g, now() - interval '100 days' + g * interval '1 second' * (5184000.0 / $2) AS t
		      FROM generate_series($1 + 1, $2) g) h) TO STDOUT" |
		psql "$db_url" -q -c "COPY operations (id, tenant_id, op_type, status, progress, target_type, target_id, payload,
			created_at, updated_at, finished_at) FROM STDIN"
	psql "$db_url" -q -c "COPY (SELECT '$tenant', 'tok_history', 'site.create', 'site', 'site_hist' || g, NULL,
		now() - interval '100 days' + g * interval '1 second' * (5184000.0 / $2) - interval '1 minute'
		FROM generate_series($1 + 1, $2) g) TO STDOUT" |
		psql "$db_url" -q -c "COPY audit_logs (tenant_id, actor, action, target_type, target_id, operation_id, created_at) FROM STDIN"
	psql "$db_url" -q -c "VACUUM ANALYZE operations" -c "VACUUM ANALYZE audit_logs" >/dev/null
	log "loaded rows $(($1 + 1))..$2 in $((SECONDS - t0)) s ($(psql "$db_url" -qAt -c "SELECT pg_size_pretty(pg_total_relation_size('operations'))") operations)"
}

echo "== history: $(nproc) cores, $(git rev-parse --short HEAD), $DURATION × $ROUNDS per measure (medians), poll/list $CLIENTS connections, accept $ACCEPT_CLIENTS"
printf '%-12s | %-22s | %-22s | %-22s\n' "history rows" "accept req/s, p99 ms" "poll req/s, p99 ms" "list req/s, p99 ms"
loaded=0
declare -A base_rps base_p99
for step in $STEPS; do
	((step > loaded)) && { load "$loaded" "$step"; loaded=$step; }
	row="$(printf '%-12s' "$step")"
	for kind in accept poll list; do
		: >"$tmp/r"
		for _ in $(seq "$ROUNDS"); do measure "$kind" >>"$tmp/r"; done
		rps="$(cut -d' ' -f1 "$tmp/r" | median)" p99="$(cut -d' ' -f2 "$tmp/r" | median)"
		if [[ -z "${base_rps[$kind]:-}" ]]; then
			base_rps[$kind]=$rps base_p99[$kind]=$p99
			cell="$(printf '%s, %s' "$rps" "$p99")"
		else
			cell="$(awk -v r="$rps" -v p="$p99" -v br="${base_rps[$kind]}" -v bp="${base_p99[$kind]}" \
				'BEGIN { printf "%s, %s (%.2f×, %.2f×)", r, p, r / br, p / bp }')"
		fi
		row+=" | $(printf '%-22s' "$cell")"
	done
	echo "$row"
done
if [[ "$PRUNE" == 1 ]]; then
	kill "$pid" && wait "$pid" 2>/dev/null || true
	pid=""
	CHOM_PRUNE_DB="$db_url" go run ./scripts/load/history-prune
fi
