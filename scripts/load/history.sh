#!/usr/bin/env bash
# history.sh measures what a long history of finished operations costs the API:
# accept (POST /sites), poll (GET /operations/{id} of a finished operation) and
# list (GET /operations?limit=20), each with wrk against the real `chom ingress`
# on real PostgreSQL and Redis, at cumulative steps of historical finished
# operations (and one audit row each) loaded into one database, all in one run.
#
#   scripts/load/history.sh                          # steps 0, 1M, 10M; 10s per measure
#   STEPS="0 10000000" DURATION=10s ROUNDS=3 scripts/load/history.sh
#
# Beside the loaded database runs a control: a second `chom ingress` on a
# second database that stays empty. Every measure alternates between the two
# (control, history, control, history, …) and each step reports the history's
# medians beside the control's from the same minutes, with their ratio. On a
# machine shared with other work, that ratio is what says whether history
# costs anything: the empty database's figures measured ten minutes earlier
# (before the load) differ by more than the 10 % goal from one minute to the
# next. Step 0 (both empty) shows the noise floor of the ratio itself.
#
# STEPS are cumulative totals of historical rows (each step loads the
# difference; see load below for how). ROUNDS runs each measure that many times
# per step per database (after an unrecorded WARMUP run, 3s) and reports the
# median. The history belongs to the
# token's tenant (the worst case for a tenant's list) and finished 40 to 100
# days ago, so with the default 30-day retention all of it is prunable: PRUNE=1
# then runs the prune in batches of 5,000 on the last step and reports rows
# deleted per second and the longest statement (each table's prune bounded by
# CHOM_PRUNE_MAX_RUN, default 1h).
#
# Only the measuring holds the shared measurement lock (MEASURE_LOCK, default
# /tmp/chom-measure.lock), never the loading. KEEP=1 keeps the databases and
# the temporary directory (drop them afterwards: 10 M rows are 12 GB).
#
# Uses CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL, or throwaway servers from
# scripts/test-services.sh. Needs go, wrk, psql, redis-cli, curl, and a role that may
# CREATE EXTENSION pg_freespacemap (contrib; the test servers' role may).
set -euo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/../.."
if [[ -z "${CHOM_TEST_DATABASE_URL:-}" || -z "${CHOM_TEST_REDIS_URL:-}" ]]; then
	exec bash scripts/test-services.sh run -- bash "$self" "$@"
fi
STEPS="${STEPS:-0 1000000 10000000}" DURATION="${DURATION:-10s}" ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-3s}" CLIENTS="${CLIENTS:-50}" ACCEPT_CLIENTS="${ACCEPT_CLIENTS:-200}" PRUNE="${PRUNE:-0}"
log() { printf 'history: %s\n' "$*" >&2; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/chom-history.XXXXXX")"
db="chom_history_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
admin_url="$CHOM_TEST_DATABASE_URL"
declare -A url base token
pids=""
stop_ingress() {
	local p
	for p in $pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	pids=""
}
cleanup() {
	stop_ingress
	[[ -n "${KEEP:-}" ]] && { log "kept $tmp and databases $db, ${db}_control"; return; }
	psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" -qc "DROP DATABASE IF EXISTS ${db}_control" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/chom" ./cmd/chom
export CHOM_LOG_LEVEL=warn CHOM_OPS_UI=false CHOM_AUTO_MIGRATE=false CHOM_RATE_LIMIT=0

# start TARGET DB N: a migrated database DB with a load tenant and token, its
# 1,000 polled operations (finished, the same at every step), and a `chom
# ingress` on it with a Redis database of its own (900 + N + 0..49).
start() {
	local u="${admin_url/\/chom_test\?//$2?}" r="${CHOM_TEST_REDIS_URL%/*}/$((900 + RANDOM % 50 + $3))" port
	psql "$admin_url" -qc "CREATE DATABASE $2" >/dev/null
	redis-cli -u "$r" FLUSHDB >/dev/null
	CHOM_DATABASE_URL="$u" "$tmp/chom" migrate up >"$tmp/migrate.log" 2>&1 || { cat "$tmp/migrate.log" >&2; exit 1; }
	token[$1]="$(CHOM_DATABASE_URL="$u" "$tmp/chom" token create --tenant load --scope read,write)"
	local tn
	tn="$(psql "$u" -qAt -c "SELECT id FROM tenants WHERE name = 'load'")"
	psql "$u" -qAt -c "INSERT INTO operations (id, tenant_id, op_type, status, progress, target_type, target_id, payload,
		created_at, updated_at, started_at, finished_at)
		SELECT 'op_' || lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || '7' || substr(md5('poll' || g), 1, 3) || substr('89ab', 1 + g % 4, 1) || substr(md5('poll' || g), 4, 15),
		'$tn', 'site.provision', 'succeeded', 100, 'site', 'site_poll' || g, '{}',
		now(), now(), now(), now() FROM generate_series(1, 1000) g RETURNING id" >"$tmp/$1.ids"
	psql "$u" -qc "ANALYZE" >/dev/null
	port=$((20000 + RANDOM % 40000))
	CHOM_DATABASE_URL="$u" CHOM_REDIS_URL="$r" CHOM_LISTEN="127.0.0.1:$port" "$tmp/chom" ingress 2>"$tmp/$1.ingress.log" &
	pids+=" $!"
	for _ in $(seq 150); do curl -fs "http://127.0.0.1:$port/api/v1/health" >/dev/null && break; sleep 0.2; done
	url[$1]="$u" base[$1]="http://127.0.0.1:$port"
}
start control "${db}_control" 0
start history "$db" 50
db_url="${url[history]}"
tenant="$(psql "$db_url" -qAt -c "SELECT id FROM tenants WHERE name = 'load'")"
actor="$(psql "$db_url" -qAt -c "SELECT id FROM api_tokens WHERE tenant_id = '$tenant'")"

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

# measure TARGET KIND → "req/s p99_ms" (one wrk run)
measure() {
	local out
	case "$2" in
	accept)
		CHOM_LOAD_TOKEN="${token[$1]}" CHOM_LOAD_RUN="h$RANDOM$RANDOM" CHOM_LOAD_RESULT="$tmp/accept.kv" \
			wrk -t2 -c"$ACCEPT_CLIENTS" -d"$DURATION" --timeout 10s --latency -s scripts/load/create-site.lua "${base[$1]}" >"$tmp/wrk.out"
		grep -q '^non202=0$' "$tmp/accept.kv" || log "$1 accept: non-202 answers: $(grep non202 "$tmp/accept.kv" | tr '\n' ' ')"
		echo "$(sed -n 's/^rps=//p' "$tmp/accept.kv") $(sed -n 's/^p99_ms=//p' "$tmp/accept.kv")" ;;
	poll | list)
		local script=scripts/load/poll.lua
		[[ "$2" == list ]] && script="$tmp/list.lua"
		out="$(CHOM_LOAD_TOKEN="${token[$1]}" CHOM_POLL_IDS="$tmp/$1.ids" wrk -t2 -c"$CLIENTS" -d"$DURATION" --latency -s "$script" "${base[$1]}" | grep '^poll:')"
		[[ "$out" == *"non-200 0;"* ]] || log "$1 $2: $out"
		echo "$(sed -E 's/.*= ([0-9]+) req\/s.*/\1/' <<<"$out") $(sed -E 's/.*p99 ([0-9.]+)ms.*/\1/' <<<"$out")" ;;
	esac
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# The indexes of operations and audit_logs that no constraint owns, as the
# migrations made them: load drops them, fills the tables, and rebuilds them
# from these saved definitions, so the script never drifts from the
# migrations. (The primary keys stay: both are appended to in key order.)
secondary_indexes() {
	psql "$db_url" -qAt -F $'\t' -c "SELECT indexname, indexdef FROM pg_indexes p
		WHERE schemaname = current_schema() AND tablename IN ('operations', 'audit_logs')
		AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = format('%I.%I', p.schemaname, p.indexname)::regclass)
		ORDER BY indexname"
}

# hist_rows FROM TO TOTAL [ORIGIN]: historical rows FROM+1..TO of a step of
# TOTAL, as columns g, id, site, req, t (when the operation finished), st,
# spread evenly over 100 to 40 days ago (row ORIGIN + TOTAL the newest; ORIGIN
# defaults to 0). IDs are shaped as models.NewID makes them (the
# prefix, then a UUIDv7's 32 hex digits: a 48-bit millisecond timestamp,
# version 7, the variant), so they sort by age like real ones; the site was
# created the same millisecond.
hist_rows() {
	cat <<-SQL
	SELECT g, 'op_' || ms || '7' || substr(h, 1, 3) || substr('89ab', 1 + g % 4, 1) || substr(h, 4, 15) AS id,
		'site_' || ms || '7' || substr(h, 19, 3) || substr('89ab', 1 + g / 4 % 4, 1) || substr(h, 22, 11) || substr(md5('s' || g), 1, 4) AS site,
		'req_' || substr(md5('r' || g), 1, 24) AS req, t,
		CASE WHEN g % 50 = 0 THEN 'failed' WHEN g % 97 = 0 THEN 'cancelled' ELSE 'succeeded' END AS st
	FROM (SELECT g, t, md5('hist' || g) AS h, lpad(to_hex((extract(epoch FROM t - interval '1 minute') * 1000)::bigint), 12, '0') AS ms
	      FROM (SELECT g, now() - interval '100 days' + (g - ${4:-0}) * interval '1 second' * (5184000.0 / $3) AS t
	            FROM generate_series($1 + 1, $2) g) s) h
	SQL
}

# The two tables' columns and rows: a finished site.provision (mostly
# succeeded; some failed, some cancelled) as the worker leaves it, and the
# audit row the accept wrote beside it.
ops_cols="id, tenant_id, op_type, status, progress, target_type, target_id, payload, error_code, error_message,
	request_id, attempts, created_at, updated_at, started_at, finished_at, server_touched_at"
audit_cols="tenant_id, actor, action, target_type, target_id, operation_id, request_id, created_at"
ops_select() {
	cat <<-SQL
	SELECT id, '$tenant', 'site.provision', st, CASE st WHEN 'succeeded' THEN 100 WHEN 'failed' THEN 60 ELSE 0 END, 'site', site,
		'{"site_id":"' || site || '","domain":"s' || g || '.hist.load.example","site_type":"html"}',
		CASE st WHEN 'failed' THEN 'driver_failed' END, CASE st WHEN 'failed' THEN 'nginx reload failed on the server' END,
		req, 1, t - interval '1 minute', t, t - interval '50 seconds', t, t - interval '45 seconds'
	FROM ($(hist_rows "$@")) r
	SQL
}
audit_select() {
	echo "SELECT '$tenant', '$actor', 'site.create', 'site', site, id, req, t - interval '1 minute' FROM ($(hist_rows "$@")) r"
}

# load_chunk FROM TO TOTAL: rows FROM+1..TO into both tables, generated by the
# server: INSERT … SELECT, or with LOAD_VIA=copy the same SELECT COPYed out
# and back in through two psql processes. Each statement is its own
# transaction, synchronous_commit off for this session only.
load_chunk() {
	local s=(psql "$db_url" -qv ON_ERROR_STOP=1 -c "SET synchronous_commit = off")
	if [[ "${LOAD_VIA:-insert}" == copy ]]; then
		psql "$db_url" -qv ON_ERROR_STOP=1 -c "COPY ($(ops_select "$@")) TO STDOUT" |
			"${s[@]}" -c "COPY operations ($ops_cols) FROM STDIN" >/dev/null
		psql "$db_url" -qv ON_ERROR_STOP=1 -c "COPY ($(audit_select "$@")) TO STDOUT" |
			"${s[@]}" -c "COPY audit_logs ($audit_cols) FROM STDIN" >/dev/null
	else
		"${s[@]}" -c "INSERT INTO operations ($ops_cols) $(ops_select "$@")" \
			-c "INSERT INTO audit_logs ($audit_cols) $(audit_select "$@")" >/dev/null
	fi
}

# The page tails. Rows loaded in bulk fill each heap page of operations until
# the next history row does not fit, and leave a tail that no history row
# fits but a smaller row may: an accepted (pending) operation is about 25 bytes
# shorter than a finished one, and at 50 M rows 860,000 pages had exactly its
# room. A table the API grew has no such tails, since each page was offered to
# every smaller row that came while it was recent; left in place, they send each
# accepted operation to a different old page (through the free space map the
# VACUUM below fills), each a full-page image in the WAL: three times an
# accept's WAL and 0.78 x its throughput against the control at 50 M rows. So,
# after the VACUUM, every page with room for one is given a cancelled-before-start
# operation (no started_at, a short domain: smaller than any row an accept
# writes) with its audit row, as history; the step's log says how many.
filled=0
# filler_select LO HI: fillers LO+1..HI as the columns of ops_cols.
filler_select() {
	echo "SELECT id, '$tenant', 'site.provision', 'cancelled', 0, 'site', site,
		'{\"site_id\":\"' || site || '\",\"domain\":\"c' || g || '.x\",\"site_type\":\"html\"}', NULL::text, NULL::text,
		req, 0, t - interval '1 minute', t, NULL::timestamptz, t, NULL::timestamptz FROM ($(hist_rows "$1" "$2" "$(($2 - $1))" "$1")) r"
}
fill_page_tails() {
	local pass need n lo hi
	psql "$db_url" -qc "CREATE EXTENSION IF NOT EXISTS pg_freespacemap" >/dev/null
	# A filler's room: its tuple, aligned to 8 bytes, and its line pointer.
	need="$(psql "$db_url" -qAt -c "SELECT (pg_column_size(f.*) + 7) / 8 * 8 + 4 FROM ($(filler_select 1000000000 1000000001)) f")"
	for pass in 1 2 3; do
		n="$(psql "$db_url" -qAt -c "SELECT count(*) FROM pg_freespace('operations') WHERE avail >= $need")"
		# A few may stay listed (the last page, whose room the inserts
		# passed by): not worth a pass.
		((n >= 10)) || break
		lo=$((1000000000 + filled)) hi=$((1000000000 + filled + n))
		psql "$db_url" -qv ON_ERROR_STOP=1 -c "SET synchronous_commit = off" \
			-c "INSERT INTO operations ($ops_cols) $(filler_select "$lo" "$hi")" \
			-c "INSERT INTO audit_logs ($audit_cols) SELECT '$tenant', '$actor', 'site.create', 'site', site, id, req, t - interval '1 minute'
				FROM ($(hist_rows "$lo" "$hi" "$n" "$lo")) r" >/dev/null
		filled=$((filled + n))
		log "  page tails, pass $pass: $n pages had room for a filler ($need bytes, less than an accepted operation); filled"
	done
}

# load FROM TO: historical rows FROM+1..TO into operations and audit_logs, the
# standard bulk-load way: the secondary indexes dropped (their definitions
# saved), the rows generated by the server in chunks of LOAD_CHUNK, a
# CHECKPOINT after each (the WAL may otherwise grow to max_wal_size = 8 GB
# before a timed checkpoint, on a disk with 20 GB free); then VACUUM (hint
# bits, visibility map, while there are no indexes to scan) and the page tails
# filled (fill_page_tails, above), the indexes
# rebuilt from the saved definitions with a raised maintenance_work_mem
# (sorted builds; a CHECKPOINT after each, for the WAL again), the set compared with the one dropped, and ANALYZE. COPY
# FREEZE is not legal here: the tables were not created or truncated in the
# loading transaction.
load() {
	local t0=$SECONDS from=$1 to=$2 n hi t1 tv ti
	local chunk="${LOAD_CHUNK:-1000000}"
	secondary_indexes >"$tmp/indexes.before"
	[[ -s "$tmp/indexes.before" ]] || { log "no secondary indexes found"; exit 1; }
	cut -f1 "$tmp/indexes.before" | sed 's/.*/DROP INDEX &;/' | psql "$db_url" -qv ON_ERROR_STOP=1 >/dev/null
	for ((n = from; n < to; n += chunk)); do
		hi=$((n + chunk < to ? n + chunk : to))
		load_chunk "$n" "$hi" "$to"
		psql "$db_url" -qc CHECKPOINT
		log "  rows $((n + 1))..$hi: $((SECONDS - t0)) s, $(df -h --output=avail / | tail -1 | tr -d ' ') free"
	done
	local tr=$((SECONDS - t0))
	t1=$SECONDS
	psql "$db_url" -qv ON_ERROR_STOP=1 -c "VACUUM operations" -c "VACUUM audit_logs"
	fill_page_tails
	tv=$((SECONDS - t1)) t1=$SECONDS
	{ echo "SET maintenance_work_mem = '${LOAD_MAINTENANCE_WORK_MEM:-1GB}';"; cut -f2 "$tmp/indexes.before" | sed 's/$/; CHECKPOINT;/'; } |
		psql "$db_url" -qv ON_ERROR_STOP=1 >/dev/null
	ti=$((SECONDS - t1))
	secondary_indexes >"$tmp/indexes.after"
	cmp -s "$tmp/indexes.before" "$tmp/indexes.after" ||
		{ log "the rebuilt indexes differ from the migrations':"; diff "$tmp/indexes.before" "$tmp/indexes.after" >&2; exit 1; }
	psql "$db_url" -q -c "ANALYZE operations" -c "ANALYZE audit_logs"
	log "loaded rows $((from + 1))..$to (${LOAD_VIA:-insert}) in $((SECONDS - t0)) s: rows $tr s, vacuum and page tails $tv s ($filled filler rows in all), $(wc -l <"$tmp/indexes.before") indexes rebuilt in $ti s; operations $(psql "$db_url" -qAt -c "SELECT pg_size_pretty(pg_total_relation_size('operations'))"), audit_logs $(psql "$db_url" -qAt -c "SELECT pg_size_pretty(pg_total_relation_size('audit_logs'))"); $(df -h --output=avail / | tail -1 | tr -d ' ') free"
}

echo "== history: $(nproc) cores, $(git rev-parse --short HEAD), $DURATION × $ROUNDS per measure and database (medians, control and history alternating), poll/list $CLIENTS connections, accept $ACCEPT_CLIENTS"
printf '%-10s | %-6s | %-20s | %-20s | %s\n' "history" "path" "history req/s, p99" "control req/s, p99" "ratio req/s, p99"
loaded=0
for step in $STEPS; do
	((step > loaded)) && { load "$loaded" "$step"; loaded=$step; }
	exec {lockfd}>"${MEASURE_LOCK:-/tmp/chom-measure.lock}"
	flock "$lockfd"
	log "step $step: measuring from $(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	for kind in accept poll list; do
		# A short unrecorded run of each first: connections, caches, plans.
		for t in control history; do DURATION="$WARMUP" measure "$t" "$kind" >/dev/null; done
		: >"$tmp/control.r"
		: >"$tmp/history.r"
		for _ in $(seq "$ROUNDS"); do
			for t in control history; do measure "$t" "$kind" >>"$tmp/$t.r"; done
		done
		log "step $step $kind, each run (req/s p99_ms): control $(paste -sd, "$tmp/control.r"); history $(paste -sd, "$tmp/history.r")"
		for t in control history; do
			read -r "rps_$t" "p99_$t" <<<"$(cut -d' ' -f1 "$tmp/$t.r" | median) $(cut -d' ' -f2 "$tmp/$t.r" | median)"
		done
		# shellcheck disable=SC2154 # set by read above
		awk -v s="$step" -v k="$kind" -v hr="$rps_history" -v hp="$p99_history" -v cr="$rps_control" -v cp="$p99_control" \
			'BEGIN { printf "%-10s | %-6s | %-20s | %-20s | %.2f×, %.2f×\n", s, k, hr ", " hp " ms", cr ", " cp " ms", hr / cr, hp / cp }'
	done
	log "step $step: measured until $(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	exec {lockfd}>&-
done
if [[ "$PRUNE" == 1 ]]; then
	stop_ingress
	CHOM_PRUNE_DB="$db_url" go run ./scripts/load/history-prune
fi
