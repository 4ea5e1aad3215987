#!/usr/bin/env bash
# test-services.sh starts a throwaway PostgreSQL, Redis and Apache Kafka broker on
# loopback for the integration tests (see internal/testenv) and tells them where
# to connect. Kafka is started by scripts/kafka.sh (jars from Maven Central, cached).
#
#   scripts/test-services.sh run -- <command...>   start, run the command, stop, clean up;
#                                                  exits with the command's exit code
#   scripts/test-services.sh start                 start and leave running (local dev);
#                                                  prints `export ...` lines, records the
#                                                  state dir in .chom-test-services
#   scripts/test-services.sh stop                  stop what `start` started
#   scripts/test-services.sh env                   print the export lines again
#
# Exported to the command: CHOM_TEST_DATABASE_URL, CHOM_TEST_REDIS_URL,
# CHOM_TEST_KAFKA_BROKERS and CHOM_TEST_KAFKA_LAUNCHER (scripts/kafka.sh, for tests
# that start, stop and restart a broker of their own).
#
# Knobs (environment):
#   CHOM_TEST_SERVICES_DIR  state dir (data, sockets, logs); default: a fresh mktemp -d.
#                           It is removed on exit, so never point it at anything you keep.
#   CHOM_KEEP_SERVICES=1    `run` still stops both servers but keeps the state dir
#                           (data and logs) for a post-mortem, and prints its path.
#   CHOM_TEST_PG_PORT       first port to try for PostgreSQL (default 55432)
#   CHOM_TEST_REDIS_PORT    first port to try for Redis (default 56379)
#   CHOM_TEST_KAFKA_PORT    first port to try for Kafka (default 59092); see scripts/kafka.sh
#                           for its other knobs (version, jar cache, heap)
#
# Missing binaries: as root, `apt-get install redis-server postgresql kcat` (and
# openjdk-17-jre-headless maven for Kafka); otherwise the script says what to
# install and exits 1.
set -euo pipefail

readonly PG_USER=chom
readonly PG_DB=chom_test
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root
readonly state_file="$repo_root/.chom-test-services"

# Filled by start_services / load_state.
dir="" pg_bin="" pg_port="" redis_port="" kafka_addr="" run_as=()

log() { printf 'test-services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

find_pg_bin() {
	local d
	if command -v pg_config >/dev/null 2>&1; then
		d="$(pg_config --bindir 2>/dev/null || true)"
		if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	fi
	# Newest installed server first.
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
		if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	done
	d="$(command -v initdb 2>/dev/null || true)"
	if [[ -n "$d" && -x "$(dirname "$d")/pg_ctl" ]]; then
		dirname "$d"
		return 0
	fi
	return 1
}

have_binaries() {
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && find_pg_bin >/dev/null &&
		command -v kcat >/dev/null 2>&1
}

ensure_binaries() {
	have_binaries && return 0
	if [[ "$(id -u)" -ne 0 ]]; then
		die "redis-server/redis-cli, the PostgreSQL server binaries (initdb, pg_ctl) or kcat are missing.
  Debian/Ubuntu: sudo apt-get install -y redis-server postgresql kcat
  macOS:         brew install redis postgresql@15 kcat
  then run this script again."
	fi
	log "installing redis-server, postgresql and kcat with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends redis-server postgresql kcat >&2
	have_binaries || die "redis-server, PostgreSQL server binaries or kcat still missing after apt-get install"
}

# port_in_use and free_port come from scripts/lib/ports.sh.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/ports.sh"

# Sets run_as so PostgreSQL tools run unprivileged: postgres refuses to run as root.
setup_pg_user() {
	run_as=()
	[[ "$(id -u)" -eq 0 ]] || return 0
	if ! id postgres >/dev/null 2>&1; then
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
	fi
	chown -R postgres: "$dir"
	if ! runuser -u postgres -- test -w "$dir"; then
		die "user postgres cannot write $dir (a parent directory is not searchable); set CHOM_TEST_SERVICES_DIR under /tmp"
	fi
	run_as=(runuser -u postgres --)
}

start_postgres() {
	local data="$dir/pg/data" sock="$dir/pg/sock" attempt
	mkdir -p "$dir/pg" "$sock"
	setup_pg_user
	if (( ${#sock} > 100 )); then
		die "unix socket path $sock is too long; use a shorter CHOM_TEST_SERVICES_DIR"
	fi
	"${run_as[@]}" "$pg_bin/initdb" -D "$data" --username="$PG_USER" --auth=trust \
		--encoding=UTF8 --locale=C >"$dir/pg/initdb.log" 2>&1 ||
		{ cat "$dir/pg/initdb.log" >&2; die "initdb failed"; }
	cat >>"$data/postgresql.conf" <<-EOF

		# chom test-services
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$sock'
		max_connections = 300
		shared_buffers = 256MB
		fsync = on
		synchronous_commit = on
		full_page_writes = on
		# Write-heavy workload (group-committed accepts): checkpoints by time, not
		# by WAL volume; the 1GB default forced one every few seconds under load
		# and they were the accept path's latency tail (p99 55-61 ms -> 43-46 ms).
		max_wal_size = 8GB
		checkpoint_timeout = 15min
		wal_buffers = 64MB
		log_min_messages = warning
		log_line_prefix = '%m [%p] %q%u@%d '
	EOF
	# Only loopback, trust: the server is private to this machine and this run.
	cat >"$data/pg_hba.conf" <<-EOF
		local all all              trust
		host  all all 127.0.0.1/32 trust
	EOF
	# Retry on another port if someone grabbed ours between the check and the bind.
	pg_port="${CHOM_TEST_PG_PORT:-55432}"
	for attempt in 1 2 3 4 5; do
		pg_port="$(free_port "$pg_port")"
		if "${run_as[@]}" "$pg_bin/pg_ctl" -D "$data" -l "$dir/pg/server.log" -w -t 120 \
			-o "-p $pg_port" start >>"$dir/pg/pg_ctl.log" 2>&1; then
			break
		fi
		if (( attempt == 5 )); then
			tail -n 30 "$dir/pg/server.log" >&2 || true
			die "PostgreSQL did not start (see above)"
		fi
		pg_port=$((pg_port + 1))
	done
	local i
	for ((i = 0; i < 120; i++)); do
		"$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U "$PG_USER" -d postgres && break
		sleep 0.5
	done
	"$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U "$PG_USER" -d postgres ||
		die "PostgreSQL on 127.0.0.1:$pg_port is not ready"
	"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U "$PG_USER" "$PG_DB"
}

start_redis() {
	local rdir="$dir/redis" attempt i
	mkdir -p "$rdir"
	redis_port="${CHOM_TEST_REDIS_PORT:-56379}"
	for attempt in 1 2 3 4 5; do
		redis_port="$(free_port "$redis_port")"
		rm -f "$rdir/redis.pid"
		redis-server --bind 127.0.0.1 --port "$redis_port" --protected-mode yes \
			--daemonize yes --pidfile "$rdir/redis.pid" --logfile "$rdir/redis.log" \
			--dir "$rdir" --appendonly yes --appendfsync everysec --save '' \
			--databases 1024 >/dev/null
		for ((i = 0; i < 60; i++)); do
			[[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" == PONG ]] && return 0
			# A daemon that failed to bind exits right away: stop waiting.
			if [[ -s "$rdir/redis.pid" ]] && ! kill -0 "$(cat "$rdir/redis.pid")" 2>/dev/null; then
				break
			fi
			sleep 0.25
		done
		stop_redis
		redis_port=$((redis_port + 1))
	done
	tail -n 30 "$rdir/redis.log" >&2 || true
	die "redis-server did not start (see above)"
}

start_kafka() {
	kafka_addr="$(bash "$repo_root/scripts/kafka.sh" start "$dir/kafka")" || die "Kafka did not start (see above)"
}

stop_kafka() {
	[[ -n "$dir" && -d "$dir/kafka" ]] || return 0
	bash "$repo_root/scripts/kafka.sh" stop "$dir/kafka" || true
}

kafka_alive() {
	[[ -n "$kafka_addr" ]] && (exec 3<>"/dev/tcp/${kafka_addr%:*}/${kafka_addr##*:}") 2>/dev/null
}

stop_postgres() {
	[[ -n "$dir" && -f "$dir/pg/data/postmaster.pid" ]] || return 0
	if [[ -z "$pg_bin" ]]; then pg_bin="$(find_pg_bin)" || return 0; fi
	if [[ "$(id -u)" -eq 0 ]]; then run_as=(runuser -u postgres --); else run_as=(); fi
	"${run_as[@]}" "$pg_bin/pg_ctl" -D "$dir/pg/data" -m fast -w -t 60 stop >>"$dir/pg/pg_ctl.log" 2>&1 ||
		"${run_as[@]}" "$pg_bin/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >>"$dir/pg/pg_ctl.log" 2>&1 || true
}

stop_redis() {
	local pidfile="$dir/redis/redis.pid" pid i
	[[ -n "$dir" && -s "$pidfile" ]] || return 0
	pid="$(cat "$pidfile")"
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

env_lines() {
	printf "export CHOM_TEST_DATABASE_URL='%s'\n" "postgres://$PG_USER@127.0.0.1:$pg_port/$PG_DB?sslmode=disable"
	printf "export CHOM_TEST_REDIS_URL='%s'\n" "redis://127.0.0.1:$redis_port/0"
	printf "export CHOM_TEST_KAFKA_BROKERS='%s'\n" "$kafka_addr"
	printf "export CHOM_TEST_KAFKA_LAUNCHER='%s'\n" "$repo_root/scripts/kafka.sh"
}

start_services() {
	ensure_binaries
	pg_bin="$(find_pg_bin)"
	if [[ -n "${CHOM_TEST_SERVICES_DIR:-}" ]]; then
		dir="$CHOM_TEST_SERVICES_DIR"
		mkdir -p "$dir"
		[[ -z "$(ls -A "$dir")" ]] || die "CHOM_TEST_SERVICES_DIR=$dir is not empty"
	else
		dir="$(mktemp -d "${TMPDIR:-/tmp}/chom-test-services.XXXXXX")"
	fi
	dir="$(cd "$dir" && pwd)"
	start_postgres
	start_redis
	start_kafka
	env_lines >"$dir/env"
}

stop_services() {
	stop_kafka
	stop_redis
	stop_postgres
}

cleanup_run() {
	local rc=$?
	trap - EXIT INT TERM HUP
	stop_services
	if [[ -n "$dir" && -d "$dir" ]]; then
		if [[ "${CHOM_KEEP_SERVICES:-}" == 1 ]]; then
			log "kept $dir (CHOM_KEEP_SERVICES=1)"
		else
			rm -rf "$dir"
		fi
	fi
	exit "$rc"
}

cmd_run() {
	[[ "${1:-}" == -- ]] && shift
	(($# > 0)) || usage
	trap cleanup_run EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	start_services
	eval "$(env_lines)"
	local rc=0
	"$@" || rc=$?
	exit "$rc"
}

load_state() {
	[[ -f "$state_file" ]] || return 1
	dir="$(cat "$state_file")"
	[[ -d "$dir" && -f "$dir/env" ]] || return 1
	pg_port="$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\)\/'"$PG_DB"'.*/\1/p' "$dir/env")"
	redis_port="$(sed -n 's/.*redis:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$dir/env")"
	kafka_addr="$(sed -n "s/^export CHOM_TEST_KAFKA_BROKERS='\(.*\)'$/\1/p" "$dir/env")"
}

on_start_exit() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if ((rc != 0)); then
		stop_services
		[[ -z "$dir" ]] || rm -rf "$dir"
	fi
	exit "$rc"
}

cmd_start() {
	if load_state; then
		pg_bin="$(find_pg_bin 2>/dev/null || true)"
		if [[ -n "$pg_bin" ]] && "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" &&
			[[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" == PONG ]]; then
			if ! kafka_alive; then
				# Started by an older version of this script, or Kafka died: add it.
				log "starting Kafka next to the running PostgreSQL and Redis in $dir"
				start_kafka
				env_lines >"$dir/env"
			fi
			log "already running in $dir"
			cat "$dir/env"
			return 0
		fi
		# Stale state (machine rebooted, a server died): start over.
		stop_services
		rm -rf "$dir"
		rm -f "$state_file"
		dir=""
	fi
	trap on_start_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	start_services
	printf '%s\n' "$dir" >"$state_file"
	log "running in $dir; stop with: scripts/test-services.sh stop"
	cat "$dir/env"
	trap - EXIT INT TERM HUP
}

cmd_stop() {
	if ! load_state; then
		log "nothing to stop ($state_file missing or stale)"
		rm -f "$state_file"
		return 0
	fi
	stop_services
	rm -rf "$dir"
	rm -f "$state_file"
	log "stopped"
}

cmd_env() {
	load_state || die "not running; use: scripts/test-services.sh start"
	cat "$dir/env"
}

main() {
	local cmd="${1:-}"
	shift || true
	case "$cmd" in
	run) cmd_run "$@" ;;
	start) cmd_start ;;
	stop) cmd_stop ;;
	env) cmd_env ;;
	*) usage ;;
	esac
}

main "$@"
