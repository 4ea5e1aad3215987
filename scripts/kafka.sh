#!/usr/bin/env bash
# kafka.sh runs a throwaway Apache Kafka broker (KRaft, one node that is both
# broker and controller) on loopback, for the integration tests. No Kafka broker
# is packaged by Debian: the server jars come from Maven Central through Maven.
#
#   scripts/kafka.sh fetch             download the server and its dependencies into the
#                                      cache (once), print the directory of the jars
#   scripts/kafka.sh start DIR [PORT]  format DIR if new, start a broker with its data and
#                                      logs in DIR on 127.0.0.1:PORT (default: the first free
#                                      port from CHOM_TEST_KAFKA_PORT or 59092), wait until
#                                      it serves, print host:port. Starting again on the same
#                                      DIR restarts the same broker, with its topics.
#   scripts/kafka.sh stop DIR          stop the broker of DIR (SIGTERM, SIGKILL after 30s)
#   scripts/kafka.sh kill DIR          SIGKILL the broker of DIR (a crash)
#
# Knobs (environment):
#   CHOM_KAFKA_VERSION     org.apache.kafka:kafka_2.13 version (default 4.1.1)
#   CHOM_KAFKA_CACHE       where the jars are kept (default ~/.cache/chom/kafka); never in git
#   CHOM_KAFKA_HEAP        the broker's -Xmx (default 512m)
#   CHOM_TEST_KAFKA_PORT   first port to try (default 59092)
#
# Needs java (17+) and mvn: as root, `apt-get install openjdk-17-jre-headless maven`;
# otherwise the script says what to install and exits 1.
set -euo pipefail

readonly version="${CHOM_KAFKA_VERSION:-4.1.1}"
readonly cache="${CHOM_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chom/kafka}"
readonly libs="$cache/$version/libs"
readonly heap="${CHOM_KAFKA_HEAP:-512m}"
# log4j-slf4j-impl routes the broker's logs to DIR/server.log; the version is the
# log4j that kafka_2.13 itself depends on.
readonly log4j_version=2.24.3

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

ensure_tools() {
	command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 && return 0
	if [[ "$(id -u)" -ne 0 ]]; then
		die "java or mvn is missing.
  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless maven
  then run this script again."
	fi
	log "installing openjdk-17-jre-headless and maven with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends openjdk-17-jre-headless maven >&2
}

cmd_fetch() {
	if [[ -f "$libs/.complete" ]]; then
		printf '%s\n' "$libs"
		return 0
	fi
	ensure_tools
	local work
	work="$(mktemp -d "${TMPDIR:-/tmp}/chom-kafka-fetch.XXXXXX")"
	cat >"$work/pom.xml" <<-EOF
		<project xmlns="http://maven.apache.org/POM/4.0.0">
		  <modelVersion>4.0.0</modelVersion>
		  <groupId>chom.test</groupId>
		  <artifactId>kafka-server</artifactId>
		  <version>1</version>
		  <packaging>pom</packaging>
		  <dependencies>
		    <dependency>
		      <groupId>org.apache.kafka</groupId>
		      <artifactId>kafka_2.13</artifactId>
		      <version>$version</version>
		    </dependency>
		    <dependency>
		      <groupId>org.apache.logging.log4j</groupId>
		      <artifactId>log4j-slf4j-impl</artifactId>
		      <version>$log4j_version</version>
		    </dependency>
		  </dependencies>
		</project>
	EOF
	log "fetching org.apache.kafka:kafka_2.13:$version and its dependencies with Maven"
	rm -rf "$libs"
	mkdir -p "$libs"
	if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$libs" >"$work/mvn.log" 2>&1; then
		tail -n 40 "$work/mvn.log" >&2
		rm -rf "$work"
		die "mvn dependency:copy-dependencies failed (see above)"
	fi
	rm -rf "$work"
	[[ -f "$libs/kafka_2.13-$version.jar" ]] || die "kafka_2.13-$version.jar missing after mvn"
	touch "$libs/.complete"
	printf '%s\n' "$libs"
}

# port_in_use and free_port come from scripts/lib/ports.sh.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/ports.sh"

broker_pid() {
	local dir="$1" pid
	[[ -s "$dir/kafka.pid" ]] || return 1
	pid="$(cat "$dir/kafka.pid")"
	kill -0 "$pid" 2>/dev/null || return 1
	printf '%s\n' "$pid"
}

write_config() {
	local dir="$1" port="$2" cport="$3"
	cat >"$dir/server.properties" <<-EOF
		# Written by scripts/kafka.sh: one KRaft node, loopback only, sized for tests.
		process.roles=broker,controller
		node.id=1
		controller.quorum.voters=1@127.0.0.1:$cport
		listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
		advertised.listeners=PLAINTEXT://127.0.0.1:$port
		controller.listener.names=CONTROLLER
		inter.broker.listener.name=PLAINTEXT
		listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
		log.dirs=$dir/data
		num.network.threads=2
		num.io.threads=4
		num.partitions=1
		auto.create.topics.enable=false
		delete.topic.enable=true
		offsets.topic.replication.factor=1
		offsets.topic.num.partitions=4
		transaction.state.log.replication.factor=1
		transaction.state.log.min.isr=1
		transaction.state.log.num.partitions=4
		share.coordinator.state.topic.replication.factor=1
		share.coordinator.state.topic.min.isr=1
		group.initial.rebalance.delay.ms=0
		group.consumer.min.session.timeout.ms=6000
		group.min.session.timeout.ms=2000
		log.segment.bytes=67108864
	EOF
	cat >"$dir/log4j2.properties" <<-EOF
		status = warn
		appender.file.type = File
		appender.file.name = file
		appender.file.fileName = $dir/server.log
		appender.file.layout.type = PatternLayout
		appender.file.layout.pattern = [%d] %p %m (%c)%n
		rootLogger.level = info
		rootLogger.appenderRef.file.ref = file
		logger.kafka.name = kafka
		logger.kafka.level = info
		logger.apache.name = org.apache.kafka
		logger.apache.level = warn
	EOF
}

cmd_start() {
	local dir="${1:-}" port="${2:-}" cport attempt i pid
	[[ -n "$dir" ]] || usage
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	if pid="$(broker_pid "$dir")"; then
		log "a broker (pid $pid) already runs in $dir"
		cat "$dir/address"
		return 0
	fi
	cmd_fetch >/dev/null
	# A restart reuses the ports of the first start, so clients reconnect.
	if [[ -z "$port" && -s "$dir/address" ]]; then
		port="$(sed 's/.*://' "$dir/address")"
	fi
	for attempt in 1 2 3 4 5; do
		if [[ -z "$port" ]]; then
			port="$(free_port "${CHOM_TEST_KAFKA_PORT:-59092}")"
		fi
		if [[ -s "$dir/controller-port" ]]; then
			cport="$(cat "$dir/controller-port")"
		else
			cport="$(free_port $((port + 1000)))"
		fi
		write_config "$dir" "$port" "$cport"
		if [[ ! -f "$dir/data/meta.properties" ]]; then
			local cluster_id
			# A Kafka UUID: 16 random bytes, URL-safe base64 without padding.
			cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
			java -Xmx256m -cp "$libs/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
				kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
				>"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "kafka-storage format failed"; }
		fi
		: >"$dir/server.log"
		# setsid: the broker outlives this script and gets signals only from stop/kill.
		setsid java -Xms128m -Xmx"$heap" -XX:+UseSerialGC -Djava.awt.headless=true \
			-Dlog4j2.configurationFile="$dir/log4j2.properties" \
			-cp "$libs/*" kafka.Kafka "$dir/server.properties" \
			>>"$dir/stdout.log" 2>&1 </dev/null &
		pid=$!
		printf '%s\n' "$pid" >"$dir/kafka.pid"
		for ((i = 0; i < 240; i++)); do
			if grep -q 'Kafka Server started' "$dir/server.log" 2>/dev/null; then
				printf '%s\n' "$cport" >"$dir/controller-port"
				printf '127.0.0.1:%s\n' "$port" >"$dir/address"
				cat "$dir/address"
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
			tail -n 40 "$dir/server.log" "$dir/stdout.log" >&2 || true
			die "the broker did not start within 60s"
		fi
		# It died: most likely a port taken between the check and the bind.
		if grep -qi 'Address already in use' "$dir/server.log" "$dir/stdout.log" 2>/dev/null && [[ ! -s "$dir/address" ]]; then
			port=$((port + 1))
			rm -f "$dir/controller-port"
			continue
		fi
		break
	done
	tail -n 40 "$dir/server.log" "$dir/stdout.log" >&2 || true
	die "the broker exited during start-up (see above)"
}

cmd_stop() {
	local dir="${1:-}" pid i
	[[ -n "$dir" ]] || usage
	pid="$(broker_pid "$dir")" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$dir/kafka.pid"; return 0; }
		sleep 0.1
	done
	log "broker $pid did not stop within 30s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$dir/kafka.pid"
}

cmd_kill() {
	local dir="${1:-}" pid i
	[[ -n "$dir" ]] || usage
	pid="$(broker_pid "$dir")" || return 0
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$dir/kafka.pid"
}

main() {
	local cmd="${1:-}"
	shift || true
	case "$cmd" in
	fetch) cmd_fetch ;;
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	kill) cmd_kill "$@" ;;
	*) usage ;;
	esac
}

main "$@"
