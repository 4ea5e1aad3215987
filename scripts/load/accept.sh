#!/usr/bin/env bash
# accept.sh measures the accept path of the real `chom ingress` binary:
# POST /api/v1/sites (INSERT site + operation + audit in PostgreSQL, enqueue the
# asynq task in Redis, answer 202), closed loop (wrk, 200 concurrent clients:
# each sends its next request when the last is answered) and, with OPEN_LOOP_RATE,
# open loop (scripts/load/openloop: requests sent at a fixed rate whatever the
# answers do, latency from each request's scheduled send time), in the same run
# against the same ingress.
#
#   scripts/load/accept.sh                 # 5s warm-up, then a 30s closed-loop run
#   DURATION=10s scripts/load/accept.sh
#   OPEN_LOOP_RATE=8000 ROUNDS=3 DURATION=20s scripts/load/accept.sh
#                                          # 3 rounds of (closed loop, open loop at
#                                          # 8,000 req/s), each run 20s, and the medians
#
# Uses real PostgreSQL and Redis: CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL
# if set, otherwise it re-runs itself under scripts/test-services.sh (throwaway
# servers on loopback). Each run gets a fresh database (chom_load_<random>) and an
# empty Redis logical database, both removed at the end. No workers run: the
# queue only grows, and the numbers are those of the accept path alone.
#
# Every measured run prints one line: requests/s, latency percentiles, errors,
# the CPU of chom, PostgreSQL, Redis and the load generator over the run (from
# /proc; the load generator shares the cores), and the 1-minute load average
# before it; then the medians per kind of run.
#
# After the runs it checks the ledger: operations = sites = pending tasks (with the
# same IDs), and all of them = the 202s received (plus at most the requests still
# in flight when a load generator stopped). Exit status 1 on a ledger mismatch, on
# any non-202 response or on any socket error / timeout.
#
# Knobs (environment):
#   DURATION=30s     length of each measured run
#   WARMUP=5s        closed-loop warm-up length; 0 skips it
#   ROUNDS=1         measured rounds (each: closed loop, then open loop)
#   OPEN_LOOP_RATE   requests/s of the open-loop run; unset: no open loop
#   CLOSED_LOOP=1    0 skips the closed-loop runs (the open loop alone)
#   CLIENTS=200      concurrent connections (wrk -c; the open loop's most connections)
#   THREADS=2        wrk threads (wrk -t)
#   TIMEOUT=10s      wrk per-request timeout (wrk's 2s default would cut the tail
#                    off the latency histogram); the open loop gives up a request
#                    not sent within TIMEOUT of its due time (and one unanswered
#                    TIMEOUT after it was sent) and counts it as a timeout
#   IDEMPOTENCY=1    send a unique Idempotency-Key with every request
#   CHOM_BIN=PATH    measure that chom binary instead of building this checkout
#                    (an older commit's, for a before/after in the same conditions)
#   PROFILE=DIR      build chom with -tags pprof; take a CPU profile and a 2s
#                    execution trace of chom during the first run of each kind
#                    (DIR/closed.pprof, DIR/open.pprof, DIR/*.trace) and print the
#                    profiles' top entries (with CHOM_BIN, build it with -tags pprof)
#   CHOM_DB_MAX_CONNS, CHOM_TOKEN_CACHE_TTL, GOGC, ...  passed through to chom ingress
#   KEEP=1           keep the temp dir (binary, ingress log, load generator output, and
#                    each open-loop run's timeline TAG.timeline.csv: every request's
#                    due, written and answered times, to place a stall in time) and
#                    the run's database and Redis db (they still vanish with the
#                    servers when test-services.sh started them)
# Needs: go, wrk (apt-get installs it when root), psql, redis-cli, curl.
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
load_dir="$(dirname "$self")"
repo_root="$(cd "$load_dir/../.." && pwd)"
cd "$repo_root"

log() { printf 'accept: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

DURATION="${DURATION:-30s}"
WARMUP="${WARMUP:-5s}"
CLIENTS="${CLIENTS:-200}"
THREADS="${THREADS:-2}"
TIMEOUT="${TIMEOUT:-10s}"
ROUNDS="${ROUNDS:-1}"
OPEN_LOOP_RATE="${OPEN_LOOP_RATE:-}"
CLOSED_LOOP="${CLOSED_LOOP:-1}"
PROFILE="${PROFILE:-}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ -z "$OPEN_LOOP_RATE" || "$OPEN_LOOP_RATE" =~ ^[1-9][0-9]*$ ]] || die "OPEN_LOOP_RATE must be a positive integer (requests/s)"
[[ "$CLOSED_LOOP" == 1 || -n "$OPEN_LOOP_RATE" ]] || die "CLOSED_LOOP=0 needs OPEN_LOOP_RATE"
[[ -z "$PROFILE" || "$DURATION" =~ ^[0-9]+s$ ]] || die "PROFILE needs DURATION in whole seconds (20s)"

# ---- tools -------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
	if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		log "installing wrk with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >&2 ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >&2; }
	fi
	command -v wrk >/dev/null 2>&1 || die "wrk is missing: sudo apt-get install wrk (or brew install wrk)"
fi
command -v go >/dev/null 2>&1 || die "go is missing"

# ---- real PostgreSQL and Redis ---------------------------------------------------
if [[ -z "${CHOM_TEST_DATABASE_URL:-}" || -z "${CHOM_TEST_REDIS_URL:-}" ]]; then
	[[ -z "${CHOM_LOAD_REEXEC:-}" ]] || die "test-services.sh did not export CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL"
	log "CHOM_TEST_DATABASE_URL / CHOM_TEST_REDIS_URL not set: starting throwaway servers with scripts/test-services.sh"
	export CHOM_LOAD_REEXEC=1
	exec bash "$repo_root/scripts/test-services.sh" run -- bash "$self" "$@"
fi
for t in psql redis-cli curl; do
	command -v "$t" >/dev/null 2>&1 || die "$t is missing (Debian: postgresql-client, redis-tools, curl)"
done

# ---- state and cleanup -------------------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/chom-load.XXXXXX")"
run_id="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
db_name="chom_load_$run_id"
db_created="" redis_db="" chom_pid="" wrk_pid=""
admin_db_url="$CHOM_TEST_DATABASE_URL"

stop_chom() {
	[[ -n "$chom_pid" ]] || return 0
	local i
	kill -TERM "$chom_pid" 2>/dev/null || true
	for ((i = 0; i < 400; i++)); do
		kill -0 "$chom_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$chom_pid" 2>/dev/null || true
	wait "$chom_pid" 2>/dev/null || true
	chom_pid=""
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [[ -n "$wrk_pid" ]]; then kill -TERM "$wrk_pid" 2>/dev/null || true; wait "$wrk_pid" 2>/dev/null || true; fi
	stop_chom
	if [[ "${KEEP:-}" == 1 ]]; then
		[[ -z "$db_created" ]] || log "kept database $db_url (KEEP=1)"
		[[ -z "$redis_db" ]] || log "kept redis db $redis_url (KEEP=1)"
		db_created="" redis_db=""
	fi
	if [[ -n "$db_created" ]]; then
		psql "$admin_db_url" -qAt -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" >/dev/null 2>&1 ||
			psql "$admin_db_url" -qAt -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db_name" >/dev/null 2>&1 ||
			log "could not drop database $db_name"
	fi
	if [[ -n "$redis_db" ]]; then
		redis-cli -u "$redis_url" FLUSHDB >/dev/null 2>&1 || log "could not flush redis db $redis_db"
	fi
	if [[ "${KEEP:-}" == 1 ]]; then
		log "kept $tmp (KEEP=1)"
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- build -----------------------------------------------------------------------------
tags=()
[[ -n "$PROFILE" ]] && tags=(-tags pprof) && mkdir -p "$PROFILE"
if [[ -n "${CHOM_BIN:-}" ]]; then
	cp "$CHOM_BIN" "$tmp/chom"
else
	log "building ./cmd/chom"
	go build "${tags[@]}" -o "$tmp/chom" ./cmd/chom || die "go build ./cmd/chom failed"
fi
chom="$tmp/chom"
openloop=""
if [[ -n "$OPEN_LOOP_RATE" ]]; then
	go build -o "$tmp/openloop" ./scripts/load/openloop || die "go build ./scripts/load/openloop failed"
	openloop="$tmp/openloop"
fi

# ---- fresh database ----------------------------------------------------------------------
[[ "$admin_db_url" =~ ^postgres(ql)?://[^/]+/ ]] || die "CHOM_TEST_DATABASE_URL is not a postgres:// URL with a database name"
psql "$admin_db_url" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db_name" >/dev/null
db_created=1
db_url="$(sed -E "s#^(postgres(ql)?://[^/]+/)[^?]*#\1$db_name#" <<<"$admin_db_url")"

# ---- an empty Redis logical database, claimed with SET NX -----------------------------
redis_base="${CHOM_TEST_REDIS_URL%/}"
if [[ "$redis_base" =~ ^(rediss?://[^/]+)/[0-9]+$ ]]; then redis_base="${BASH_REMATCH[1]}"; fi
[[ "$redis_base" =~ ^rediss?://[^/]+$ ]] || die "CHOM_TEST_REDIS_URL is not a redis://host:port[/db] URL"
ndb="$(redis-cli -u "$redis_base/0" CONFIG GET databases 2>/dev/null | sed -n 2p || true)"
[[ "$ndb" =~ ^[0-9]+$ ]] || ndb=16
redis_url=""
for ((i = 0; i < 30 && ndb > 1; i++)); do
	cand=$((1 + RANDOM % (ndb - 1)))
	u="$redis_base/$cand"
	if [[ "$(redis-cli -u "$u" SET chom:load:owner "$run_id" NX 2>/dev/null)" == OK ]]; then
		if [[ "$(redis-cli -u "$u" DBSIZE)" == 1 ]]; then
			redis_url="$u" redis_db="$cand"
			break
		fi
		redis-cli -u "$u" DEL chom:load:owner >/dev/null
	fi
done
[[ -n "$redis_url" ]] || die "found no empty Redis logical database on $redis_base"

export CHOM_DATABASE_URL="$db_url" CHOM_REDIS_URL="$redis_url"
export CHOM_LOG_LEVEL=warn CHOM_OPS_UI=false CHOM_AUTO_MIGRATE=false CHOM_RATE_LIMIT="${CHOM_RATE_LIMIT:-0}"

"$chom" migrate up >"$tmp/migrate.log" 2>&1 || { cat "$tmp/migrate.log" >&2; die "chom migrate up failed"; }
token="$("$chom" token create --tenant load --scope read,write)" || die "chom token create failed"
[[ -n "$token" ]] || die "chom token create printed nothing"
export CHOM_LOAD_TOKEN="$token"

# ---- chom ingress ---------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_ingress() {
	local port i
	for ((i = 0; i < 50; i++)); do
		port=$((20000 + RANDOM % 40000))
		port_free "$port" && break
	done
	pprof_addr="127.0.0.1:$((port + 1))"
	PPROF_LISTEN="$pprof_addr" CHOM_LISTEN="127.0.0.1:$port" "$chom" ingress 2>>"$tmp/ingress.log" &
	chom_pid=$!
	for ((i = 0; i < 300; i++)); do
		if ! kill -0 "$chom_pid" 2>/dev/null; then
			wait "$chom_pid" 2>/dev/null || true
			chom_pid=""
			return 1
		fi
		if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/v1/health" || true)" == 200 ]]; then
			base="http://127.0.0.1:$port"
			return 0
		fi
		sleep 0.1
	done
	die "chom ingress did not answer 200 on /api/v1/health within 30s; log: $(tail -n 20 "$tmp/ingress.log")"
}
base="" pprof_addr=""
for attempt in 1 2 3; do
	start_ingress && break
	((attempt < 3)) || { tail -n 30 "$tmp/ingress.log" >&2; die "chom ingress exited at start (see above)"; }
done

# ---- CPU accounting from /proc ------------------------------------------------------
clk_tck="$(getconf CLK_TCK)"
# ticks PID [children]: utime+stime of PID (and cutime+cstime, i.e. its reaped children).
ticks() {
	local s f
	{ read -r s <"/proc/$1/stat"; } 2>/dev/null || { echo 0; return; }
	s="${s##*) }"
	read -ra f <<<"$s"
	# f[0] is field 3 (state): utime=14 stime=15 cutime=16 cstime=17.
	if [[ "${2:-}" == children ]]; then
		echo $((f[11] + f[12] + f[13] + f[14]))
	else
		echo $((f[11] + f[12]))
	fi
}
# Postgres: the postmaster of the test server, with its reaped children, plus its live children.
pg_master=""
pg_datadir="$(psql "$db_url" -qAt -c 'SHOW data_directory' 2>/dev/null || true)"
if [[ -n "$pg_datadir" && -r "$pg_datadir/postmaster.pid" ]]; then
	pg_master="$(head -n 1 "$pg_datadir/postmaster.pid")"
fi
if [[ -z "$pg_master" ]] && [[ "$db_url" =~ ://[^/]*:([0-9]+)/ ]]; then
	pg_master="$(ss -Hltnp "sport = :${BASH_REMATCH[1]}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2 || true)"
fi
pg_ticks() {
	[[ -n "$pg_master" ]] || { echo 0; return; }
	local total p s pp
	total="$(ticks "$pg_master" children)"
	for p in /proc/[0-9]*/stat; do
		{ read -r s <"$p"; } 2>/dev/null || continue
		s="${s##*) }"
		pp="${s#* }"
		pp="${pp%% *}"
		[[ "$pp" == "$pg_master" ]] || continue
		p="${p#/proc/}"
		total=$((total + $(ticks "${p%/stat}")))
	done
	echo "$total"
}
redis_pid="$(redis-cli -u "$redis_url" INFO server | tr -d '\r' | sed -n 's/^process_id://p')"
now_ns() { date +%s%N; }
pct() { # ticks_delta elapsed_ns
	awk -v t="$1" -v ns="$2" -v hz="$clk_tck" 'BEGIN { if (ns <= 0) { print "?"; exit } printf "%.0f", 100 * t / hz / (ns / 1e9) }'
}

# ---- load generators --------------------------------------------------------------------------
# run_wrk TAG DURATION RESULTFILE: the closed loop. wrk's own CPU goes to
# $tmp/TAG.time as "user sys real".
run_wrk() {
	local tag="$1" dur="$2" result="$3"
	local TIMEFORMAT='%U %S %R'
	{
		time CHOM_LOAD_RUN="$tag$run_id" CHOM_LOAD_RESULT="$result" CHOM_LOAD_IDEMPOTENCY="${IDEMPOTENCY:-0}" \
			wrk -t"$THREADS" -c"$CLIENTS" -d"$dur" --timeout "$TIMEOUT" --latency \
			-s "$load_dir/create-site.lua" "$base" >"$tmp/$tag.out" 2>&1
	} 2>"$tmp/$tag.time" || { cat "$tmp/$tag.out" >&2; die "wrk failed ($tag)"; }
	[[ -s "$result" ]] || { cat "$tmp/$tag.out" >&2; die "wrk wrote no result ($tag)"; }
	date +%s%3N >"$tmp/$tag.end"
}
# run_open TAG DURATION RESULTFILE: the open loop at OPEN_LOOP_RATE (scripts/load/openloop,
# at most CLIENTS connections); its CPU goes to $tmp/TAG.time like wrk's.
run_open() {
	local tag="$1" dur="$2" result="$3"
	local TIMEFORMAT='%U %S %R'
	{
		time "$openloop" -mode create -rate "$OPEN_LOOP_RATE" -duration "$dur" -connections "$CLIENTS" -timeout "$TIMEOUT" \
			-url "$base" -token "$token" -run "$tag$run_id" -result "$result" -timeline "$tmp/$tag.timeline.csv" \
			-idempotency="$([[ "${IDEMPOTENCY:-0}" == 1 ]] && echo true || echo false)" >"$tmp/$tag.out" 2>&1
	} 2>"$tmp/$tag.time" || { cat "$tmp/$tag.out" >&2; die "openloop failed ($tag)"; }
	[[ -s "$result" ]] || { cat "$tmp/$tag.out" >&2; die "openloop wrote no result ($tag)"; }
	date +%s%3N >"$tmp/$tag.end"
}
# val FILE KEY
val() { sed -n "s/^$2=//p" "$1"; }

echo "== CHOM accept path: POST /api/v1/sites -> chom ingress -> PostgreSQL + Redis =="
echo "date        $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
echo "machine     $(nproc) cores (nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); load generator, chom, PostgreSQL and Redis share them"
echo "tree        $(git rev-parse --short HEAD 2>/dev/null || echo '?') ($(git status --porcelain 2>/dev/null | wc -l | tr -d ' ') changed files), $(go version | cut -d' ' -f3)${CHOM_BIN:+; chom binary $CHOM_BIN}"
echo "postgres    $(psql "$db_url" -qAt -c 'SHOW server_version'), database $db_name"
echo "redis       $(redis-cli -u "$redis_url" INFO server | tr -d '\r' | sed -n 's/^redis_version://p'), db $redis_db"
echo "ingress     $base (CHOM_LOG_LEVEL=warn, CHOM_OPS_UI=false, CHOM_RATE_LIMIT=$CHOM_RATE_LIMIT (0 = off), CHOM_DB_MAX_CONNS=${CHOM_DB_MAX_CONNS:-default}, GOGC=${GOGC:-default})"
echo "workers     NOT started: this measures the accept path only; tasks stay pending in Redis"
[[ "$CLOSED_LOOP" == 1 ]] && echo "closed loop wrk -t$THREADS -c$CLIENTS -d$DURATION --timeout $TIMEOUT --latency"
[[ -n "$OPEN_LOOP_RATE" ]] && echo "open loop   scripts/load/openloop -rate $OPEN_LOOP_RATE -duration $DURATION -connections $CLIENTS (latency from each request's scheduled send time)"
echo "rounds      $ROUNDS (each: $([[ "$CLOSED_LOOP" == 1 ]] && echo "closed loop")$([[ "$CLOSED_LOOP" == 1 && -n "$OPEN_LOOP_RATE" ]] && echo ", then ")$([[ -n "$OPEN_LOOP_RATE" ]] && echo "open loop")), idempotency keys: $([[ "${IDEMPOTENCY:-0}" == 1 ]] && echo yes || echo no)"
echo

results=()
if [[ "$WARMUP" != 0 && "$WARMUP" != 0s ]]; then
	log "warm-up $WARMUP"
	run_wrk w "$WARMUP" "$tmp/warm.res"
	results+=("$tmp/warm.res")
fi

# measure TAG KIND(closed|open): one measured run with the CPU of every process
# sampled from /proc around it; prints one line and keeps KIND's figures in
# $tmp/KIND.rows for the medians.
measure() {
	local tag="$1" kind="$2" c0 p0 r0 t0 c1 p1 r1 t1 elapsed load wu ws wr
	local res="$tmp/$tag.res"
	load="$(cut -d' ' -f1 /proc/loadavg)"
	local prof=()
	if [[ -n "$PROFILE" && ! -e "$PROFILE/$kind.pprof" ]]; then
		local secs="${DURATION%s}"
		curl -fs -o "$PROFILE/$kind.pprof" "http://$pprof_addr/debug/pprof/profile?seconds=$((secs > 4 ? secs - 4 : 1))" &
		prof+=($!)
		(sleep 2 && curl -fs -o "$PROFILE/$kind.trace" "http://$pprof_addr/debug/pprof/trace?seconds=2") &
		prof+=($!)
	fi
	c0="$(ticks "$chom_pid")" p0="$(pg_ticks)" r0="$(ticks "${redis_pid:-0}")" t0="$(now_ns)"
	if [[ "$kind" == closed ]]; then run_wrk "$tag" "$DURATION" "$res"; else run_open "$tag" "$DURATION" "$res"; fi
	t1="$(now_ns)" c1="$(ticks "$chom_pid")" p1="$(pg_ticks)" r1="$(ticks "${redis_pid:-0}")"
	((${#prof[@]} == 0)) || wait "${prof[@]}" || log "could not take the $kind profile (chom built without -tags pprof?)"
	results+=("$res")
	elapsed=$((t1 - t0))
	read -r wu ws wr <"$tmp/$tag.time"
	local cc cp cr cg
	cc="$(pct $((c1 - c0)) "$elapsed")" cp="$(pct $((p1 - p0)) "$elapsed")" cr="$(pct $((r1 - r0)) "$elapsed")"
	cg="$(awk -v u="$wu" -v s="$ws" -v r="$wr" 'BEGIN { printf "%.0f", 100 * (u + s) / r }')"
	[[ -n "$pg_master" ]] || cp="?"
	[[ -n "$redis_pid" ]] || cr="?"
	local gen=wrk extra=""
	if [[ "$kind" == open ]]; then
		gen=openloop
		extra="  offered $(val "$res" offered_rps)/s, worst send $(val "$res" late_ms)ms late, p99 from send $(val "$res" send_p99_ms)ms"
	fi
	printf '%-6s %-6s %7s req/s  p50 %6sms  p90 %6sms  p99 %6sms  p99.9 %6sms  max %7sms  non-202 %s  socket errors %s  cpu chom %s%% pg %s%% redis %s%% %s %s%%  load %s%s\n' \
		"$kind" "$tag" "$(val "$res" rps)" "$(val "$res" p50_ms)" "$(val "$res" p90_ms)" "$(val "$res" p99_ms)" \
		"$(val "$res" p999_ms)" "$(val "$res" max_ms)" "$(val "$res" non202)" \
		"$(($(val "$res" err_connect) + $(val "$res" err_read) + $(val "$res" err_write) + $(val "$res" err_timeout)))" \
		"$cc" "$cp" "$cr" "$gen" "$cg" "$load" "$extra"
	printf '%s %s %s %s %s %s %s %s %s\n' "$(val "$res" rps)" "$(val "$res" p50_ms)" "$(val "$res" p99_ms)" \
		"$(val "$res" p999_ms)" "$cc" "$cp" "$cr" "$cg" "$load" >>"$tmp/$kind.rows"
}
# medians KIND: the median of each column of $tmp/KIND.rows.
medians() {
	local kind="$1" gen=wrk
	[[ "$kind" == open ]] && gen=openloop
	[[ -s "$tmp/$kind.rows" ]] || return 0
	awk -v kind="$kind" -v gen="$gen" '
		{ for (i = 1; i <= NF; i++) v[i, NR] = $i; n = NR; nf = NF }
		END {
			for (i = 1; i <= nf; i++) {
				for (k = 1; k <= n; k++) a[k] = v[i, k]
				for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (a[y] + 0 < a[x] + 0) { t = a[x]; a[x] = a[y]; a[y] = t }
				m[i] = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
				lo[i] = a[1]; hi[i] = a[n]
			}
			printf "%-6s median of %d: %.0f req/s (%s-%s)  p50 %.1fms  p99 %.1fms (%s-%s)  p99.9 %.1fms  cpu chom %s%% pg %s%% redis %s%% %s %s%%  load %s-%s\n",
				kind, n, m[1], lo[1], hi[1], m[2], m[3], lo[3], hi[3], m[4], m[5], m[6], m[7], gen, m[8], lo[9], hi[9]
		}' "$tmp/$kind.rows"
}

for ((round = 1; round <= ROUNDS; round++)); do
	if [[ "$CLOSED_LOOP" == 1 ]]; then
		log "round $round/$ROUNDS: closed loop $DURATION"
		measure "m$round" closed
	fi
	if [[ -n "$OPEN_LOOP_RATE" ]]; then
		log "round $round/$ROUNDS: open loop at $OPEN_LOOP_RATE req/s, $DURATION"
		measure "o$round" open
	fi
done
echo
medians closed
medians open
echo "(cpu: % of one core; $(nproc) cores = $(($(nproc) * 100))%; load: the 1-minute load average before each run)"
echo
if [[ "$ROUNDS" == 1 ]]; then
	for f in "$tmp"/m1.out "$tmp"/o1.out; do
		[[ -s "$f" ]] || continue
		echo "---- $(basename "$f" .out) ----"
		cat "$f"
		echo
	done
fi
if [[ -n "$PROFILE" ]]; then
	cp "$tmp/chom" "$PROFILE/chom"
	for kind in closed open; do
		[[ -s "$PROFILE/$kind.pprof" ]] || continue
		echo "== CPU profile of chom during its first $kind-loop run: $PROFILE/$kind.pprof (trace: $PROFILE/$kind.trace, binary $PROFILE/chom)"
		go tool pprof -top -nodecount=30 "$PROFILE/chom" "$PROFILE/$kind.pprof" 2>/dev/null | sed -n '1,38p'
		echo
	done
fi

# ---- ledger ------------------------------------------------------------------------------------
# Stop the ingress gracefully first: requests wrk abandoned when its time ran out
# finish (or roll back) before we count.
stop_chom
ops="$(psql "$db_url" -qAt -c 'SELECT count(*) FROM operations')"
sites="$(psql "$db_url" -qAt -c 'SELECT count(*) FROM sites')"
tasks="$(redis-cli -u "$redis_url" LLEN 'asynq:{default}:pending')"
not_pending="$(psql "$db_url" -qAt -c "SELECT count(*) FROM operations WHERE status <> 'pending'")"
psql "$db_url" -qAt -c 'SELECT id FROM operations' | sort >"$tmp/op.ids"
redis-cli -u "$redis_url" LRANGE 'asynq:{default}:pending' 0 -1 | sort >"$tmp/task.ids"
ids_diff="$(comm -3 "$tmp/op.ids" "$tmp/task.ids" | wc -l | tr -d ' ')"
# Operations without a task: with their request IDs, matched against the ingress log.
comm -23 "$tmp/op.ids" "$tmp/task.ids" >"$tmp/orphan.ids"
: >"$tmp/orphans.txt"
if [[ -s "$tmp/orphan.ids" ]]; then
	psql "$db_url" -qAt -F ' ' -c "SELECT id, request_id, (extract(epoch FROM created_at) * 1000)::bigint FROM operations
		WHERE id IN ($(sed "s/.*/'&'/" "$tmp/orphan.ids" | paste -sd,)) ORDER BY created_at" |
		while read -r oid rid at; do
			when="after the last run ended"
			for r in "${results[@]}"; do # the first run that ended after the operation was written
				e="$(cat "${r%.res}.end" 2>/dev/null || true)"
				[[ "$r" == "$tmp/warm.res" ]] && e="$(cat "$tmp/w.end" 2>/dev/null || true)"
				if [[ -n "$e" ]] && ((at <= e)); then when="$((e - at))ms before run $(basename "${r%.res}") ended"; break; fi
			done
			printf '%s %s accepted %s; ingress log: %s\n' "$oid" "$rid" "$when" \
				"$(grep -F "\"$rid\"" "$tmp/ingress.log" | grep -o '"error":"[^"]*"\|"status":[0-9]*' | paste -sd' ' || true)"
		done >"$tmp/orphans.txt"
fi

# sum KEY: KEY summed over every run's result, warm-up included (the ledger counts them all).
sum() { local r t=0 v; for r in "${results[@]}"; do v="$(val "$r" "$1")"; t=$((t + ${v:-0})); done; echo "$t"; }
s202="$(sum s202)"
non202="$(sum non202)"
unanswered=$(($(sum sent) - $(sum requests)))
sockerr=0
for k in err_connect err_read err_write err_timeout; do
	sockerr=$((sockerr + $(sum "$k")))
done
non202_detail="$(for r in "${results[@]}"; do val "$r" non202_by_status; done | grep -v '^$' | paste -sd' ' || true)"

ledger=OK
why=()
[[ "$ops" == "$sites" && "$ops" == "$tasks" ]] || why+=("operations, sites and tasks differ")
((ids_diff == 0)) || why+=("$ids_diff operation/task IDs without their counterpart")
((ops >= s202)) || why+=("fewer operations than 202s")
((ops <= s202 + unanswered)) || why+=("more operations than 202s + requests in flight at the load generator's stop")
((not_pending == 0)) || why+=("$not_pending operations not pending although no worker runs")
((${#why[@]} == 0)) || ledger=MISMATCH
extra=""
if ((unanswered > 0)); then
	extra=" +$((ops - s202)) of $unanswered in flight at the load generator's stop"
fi

if [[ -s "$tmp/ingress.log" ]]; then
	echo "---- chom ingress log (warn and above): $(wc -l <"$tmp/ingress.log" | tr -d ' ') lines, last 5 ----"
	tail -n 5 "$tmp/ingress.log"
	echo
fi

printf 'errors      socket %s, non-202 %s%s (all runs, warm-up included)\n' "$sockerr" "$non202" "${non202_detail:+ ($non202_detail)}"
printf 'ledger      %s (operations=%s sites=%s tasks=%s 202s=%s%s; task IDs = operation IDs: %s)\n' \
	"$ledger" "$ops" "$sites" "$tasks" "$s202" "$extra" "$([[ "$ids_diff" == 0 ]] && echo yes || echo "no, $ids_diff differ")"
echo "ledger: $ledger"
for w in "${why[@]}"; do log "ledger: $w"; done
if [[ -s "$tmp/orphans.txt" ]]; then
	echo "operations without a task ($(wc -l <"$tmp/orphans.txt" | tr -d ' ')), first 10 (an empty ingress log means the handler logged nothing at warn):"
	head -n 10 "$tmp/orphans.txt" | sed 's/^/  /'
fi

status=0
[[ "$ledger" == OK ]] || status=1
if ((non202 > 0)); then log "FAIL: $non202 non-202 responses ($non202_detail)"; status=1; fi
if ((sockerr > 0)); then log "FAIL: $sockerr socket errors/timeouts"; status=1; fi
exit "$status"
