#!/usr/bin/env bash
# poll.sh measures operation polling on the real binary: `chom dev` on real
# PostgreSQL and Redis (CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL, or throwaway
# servers from scripts/test-services.sh), N operations created through the API and
# left to finish, then wrk polling them with 200 connections.
#
#   scripts/load/poll.sh                  # 1000 operations, 20s
#   OPS=200 DURATION=10s scripts/load/poll.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -z "${CHOM_TEST_DATABASE_URL:-}" || -z "${CHOM_TEST_REDIS_URL:-}" ]]; then
	exec bash scripts/test-services.sh run -- "$0" "$@"
fi
OPS="${OPS:-1000}" DURATION="${DURATION:-20s}" CLIENTS="${CLIENTS:-200}"
tmp="$(mktemp -d)"
db="chom_poll_$RANDOM$RANDOM"
admin_url="$CHOM_TEST_DATABASE_URL"
cleanup() {
	[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[[ -n "${KEEP:-}" ]] && { echo "kept $tmp and database $db" >&2; return; }
	psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/chom" ./cmd/chom
psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
export CHOM_DATABASE_URL="${admin_url/\/chom_test\?//$db?}"
export CHOM_REDIS_URL="${CHOM_TEST_REDIS_URL%/*}/$((900 + RANDOM % 100))"
redis-cli -u "$CHOM_REDIS_URL" FLUSHDB >/dev/null
export CHOM_LOG_LEVEL=warn CHOM_RATE_LIMIT=0
port=$((20000 + RANDOM % 40000))
"$tmp/chom" dev --data-dir "$tmp/data" --listen "127.0.0.1:$port" >"$tmp/dev.out" 2>"$tmp/dev.err" &
pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/api/v1/health" >/dev/null && break; sleep 0.2; done
export CHOM_LOAD_TOKEN="$(cat "$tmp/data/dev-token")"
for i in $(seq "$OPS"); do
	curl -fs -X POST "http://127.0.0.1:$port/api/v1/sites" -H "Authorization: Bearer $CHOM_LOAD_TOKEN" \
		-H 'Content-Type: application/json' -d "{\"domain\":\"p$i.poll.example\",\"site_type\":\"html\"}" |
		grep -o '^{"id":"op_[0-9a-f]*"' | cut -d'"' -f4
done >"$tmp/ids"
sleep 3 # let the worker finish them: polls of finished operations are the common case
echo "== polling: $(wc -l <"$tmp/ids") operations, $CLIENTS connections, $DURATION, $(nproc) cores; $(git rev-parse --short HEAD)"
CHOM_POLL_IDS="$tmp/ids" wrk -t2 -c"$CLIENTS" -d"$DURATION" --latency -s scripts/load/poll.lua "http://127.0.0.1:$port" | grep '^poll:'
