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
#   scripts/kafka.sh start-sasl DIR [PORT]
#                                      as start, with one SASL_SSL listener instead of
#                                      PLAINTEXT (SCRAM-SHA-512 and PLAIN) and ACLs on
#                                      (StandardAuthorizer). DIR/sasl/ must hold, before
#                                      the first start:
#                                        broker.pem  the broker's key (unencrypted PKCS#8)
#                                                    and certificate chain, for 127.0.0.1
#                                        ca.pem      the CA that signed it
#                                        users       "name password" lines: the first is
#                                                    the super user the broker itself logs
#                                                    in as; every user gets PLAIN and
#                                                    SCRAM-SHA-512 credentials
#                                      (internal/testenv's StartKafkaSASLServer writes them).
#   scripts/kafka.sh start-cluster DIR [N]
#                                      start an N-node cluster (default 3) in DIR/node1..N:
#                                      every node is a broker and a controller (combined
#                                      KRaft, N voters), CHOM's internal topics (consumer
#                                      offsets, transactions) get min(N,3) replicas and min
#                                      ISR 2. The nodes start in parallel (one alone never
#                                      finishes starting: it waits for a quorum). Prints the
#                                      bootstrap list (host:port,host:port,...), node 1 first.
#                                      Starting again on the same DIR restarts the stopped
#                                      nodes with their data and ports.
#   scripts/kafka.sh start DIR/nodeK   (re)start node K of a cluster alone, same port and data
#   scripts/kafka.sh stop DIR          stop the broker of DIR (SIGTERM, SIGKILL after 30s)
#   scripts/kafka.sh stop-cluster DIR  stop every node of the cluster in DIR, in parallel
#   scripts/kafka.sh kill DIR          SIGKILL the broker of DIR (a crash); DIR/nodeK for
#                                      one node of a cluster
#
# Knobs (environment):
#   CHOM_KAFKA_VERSION     org.apache.kafka:kafka_2.13 version (default 4.1.1)
#   CHOM_KAFKA_CACHE       where the jars are kept (default ~/.cache/chom/kafka); never in git
#   CHOM_KAFKA_HEAP        each broker's -Xmx (default 512m)
#   CHOM_KAFKA_JVM_OPTS    more java options (default -XX:TieredStopAtLevel=1)
#   CHOM_TEST_KAFKA_PORT   first port to try (default 59092)
#
# Needs java (17+) and mvn: as root, `apt-get install openjdk-17-jre-headless maven`;
# otherwise the script says what to install and exits 1.
set -euo pipefail

readonly version="${CHOM_KAFKA_VERSION:-4.1.1}"
readonly cache="${CHOM_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chom/kafka}"
readonly libs="$cache/$version/libs"
readonly heap="${CHOM_KAFKA_HEAP:-512m}"
# C1 only: a test broker starts in about half the CPU time (the JIT's second
# tier is most of a start's work on two busy cores) and serves tests as fast.
readonly jvm_opts="${CHOM_KAFKA_JVM_OPTS:--XX:TieredStopAtLevel=1}"
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

# mode is "plaintext" (start) or "sasl" (start-sasl).
mode=plaintext

write_config() {
	local dir="$1" port="$2" cport="$3" internal_rf=1 internal_isr=1
	if [[ -s "$dir/cluster.env" ]]; then
		write_cluster_config "$dir" "$port" "$cport"
		internal_rf=$((cluster_nodes < 3 ? cluster_nodes : 3))
		internal_isr=$((internal_rf < 2 ? internal_rf : 2))
	elif [[ "$mode" == sasl ]]; then
		write_sasl_config "$dir" "$port" "$cport"
	else
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
		EOF
	fi
	cat >>"$dir/server.properties" <<-EOF
		log.dirs=$dir/data
		num.network.threads=2
		num.io.threads=4
		num.partitions=1
		auto.create.topics.enable=false
		delete.topic.enable=true
		offsets.topic.replication.factor=$internal_rf
		offsets.topic.num.partitions=4
		transaction.state.log.replication.factor=$internal_rf
		transaction.state.log.min.isr=$internal_isr
		transaction.state.log.num.partitions=4
		share.coordinator.state.topic.replication.factor=$internal_rf
		share.coordinator.state.topic.min.isr=$internal_isr
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

# Filled by load_cluster from DIR/cluster.env, which start-cluster writes for
# each node: its id, the cluster's size, id and voters, and the node's ports.
cluster_node="" cluster_nodes="" cluster_id="" cluster_voters="" cluster_port="" cluster_cport=""

load_cluster() {
	local dir="$1" key value
	while IFS='=' read -r key value; do
		case "$key" in
		node) cluster_node="$value" ;;
		nodes) cluster_nodes="$value" ;;
		id) cluster_id="$value" ;;
		voters) cluster_voters="$value" ;;
		port) cluster_port="$value" ;;
		cport) cluster_cport="$value" ;;
		esac
	done <"$dir/cluster.env"
	[[ -n "$cluster_node" && -n "$cluster_nodes" && -n "$cluster_id" && -n "$cluster_voters" &&
		-n "$cluster_port" && -n "$cluster_cport" ]] || die "$dir/cluster.env is incomplete"
}

# write_cluster_config writes the listener part of one node of a cluster: a
# broker and a controller (combined mode), every node a voter.
write_cluster_config() {
	local dir="$1" port="$2" cport="$3"
	cat >"$dir/server.properties" <<-EOF
		# Written by scripts/kafka.sh start-cluster: node $cluster_node of $cluster_nodes,
		# each a broker and a controller, loopback only, sized for tests.
		process.roles=broker,controller
		node.id=$cluster_node
		controller.quorum.voters=$cluster_voters
		listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
		advertised.listeners=PLAINTEXT://127.0.0.1:$port
		controller.listener.names=CONTROLLER
		inter.broker.listener.name=PLAINTEXT
		listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
	EOF
}

# sasl_users prints the "name password" lines of DIR/sasl/users.
sasl_users() {
	grep -v '^[[:space:]]*$' "$1/sasl/users"
}

# write_sasl_config writes the listener part of a SASL_SSL broker: clients and
# the broker itself on SASL_SSL (PLAIN and SCRAM-SHA-512), the controller on
# SASL_PLAINTEXT with PLAIN (loopback), ACLs enforced with the first user of
# DIR/sasl/users as the super user.
write_sasl_config() {
	local dir="$1" port="$2" cport="$3" name pass admin="" admin_pass="" plain_users=""
	for f in broker.pem ca.pem users; do
		[[ -s "$dir/sasl/$f" ]] || die "$dir/sasl/$f is missing (see the usage of start-sasl)"
	done
	while read -r name pass; do
		[[ "$name$pass" =~ ^[A-Za-z0-9._-]+$ ]] || die "$dir/sasl/users: names and passwords are [A-Za-z0-9._-]"
		if [[ -z "$admin" ]]; then
			admin="$name" admin_pass="$pass"
		fi
		plain_users+=" user_$name=\"$pass\""
	done < <(sasl_users "$dir")
	local plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$admin\" password=\"$admin_pass\"$plain_users;"
	cat >"$dir/server.properties" <<-EOF
		# Written by scripts/kafka.sh start-sasl: one KRaft node, loopback only, sized
		# for tests, clients on SASL_SSL, ACLs on.
		process.roles=broker,controller
		node.id=1
		controller.quorum.voters=1@127.0.0.1:$cport
		listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
		advertised.listeners=SASL_SSL://127.0.0.1:$port
		controller.listener.names=CONTROLLER
		inter.broker.listener.name=SASL_SSL
		listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
		sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
		sasl.mechanism.inter.broker.protocol=PLAIN
		sasl.mechanism.controller.protocol=PLAIN
		listener.name.sasl_ssl.plain.sasl.jaas.config=$plain
		listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
		listener.name.controller.sasl.enabled.mechanisms=PLAIN
		listener.name.controller.plain.sasl.jaas.config=$plain
		ssl.keystore.type=PEM
		ssl.keystore.location=$dir/sasl/broker.pem
		ssl.truststore.type=PEM
		ssl.truststore.location=$dir/sasl/ca.pem
		ssl.client.auth=none
		authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
		super.users=User:$admin
		allow.everyone.if.no.acl.found=false
	EOF
	chmod 600 "$dir/server.properties"
}

# format_args prints the extra arguments of kafka-storage format: the SCRAM
# credentials of start-sasl's users, which live in the cluster metadata.
format_args() {
	local dir="$1" name pass
	[[ "$mode" == sasl ]] || return 0
	while read -r name pass; do
		printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$name,password=$pass]"
	done < <(sasl_users "$dir")
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
	local member=""
	if [[ -s "$dir/cluster.env" ]]; then
		# A node of a cluster: its ports are in the other nodes' voters list.
		load_cluster "$dir"
		member=1 port="$cluster_port"
		printf '%s\n' "$cluster_cport" >"$dir/controller-port"
	fi
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
			local extra=()
			mapfile -t extra < <(format_args "$dir")
			if [[ -z "$member" ]]; then
				cluster_id="$(new_cluster_id)"
			fi
			java -Xmx256m -cp "$libs/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
				kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" "${extra[@]}" \
				>"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "kafka-storage format failed"; }
		fi
		: >"$dir/server.log"
		# setsid: the broker outlives this script and gets signals only from stop/kill.
		# shellcheck disable=SC2086 # CHOM_KAFKA_JVM_OPTS is a list of options
		setsid java -Xms128m -Xmx"$heap" -XX:+UseSerialGC $jvm_opts -Djava.awt.headless=true \
			-Dlog4j2.configurationFile="$dir/log4j2.properties" \
			-cp "$libs/*" kafka.Kafka "$dir/server.properties" \
			>>"$dir/stdout.log" 2>&1 </dev/null &
		pid=$!
		printf '%s\n' "$pid" >"$dir/kafka.pid"
		# 120s: three JVMs starting at once on two busy cores take a while.
		for ((i = 0; i < 480; i++)); do
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
			die "the broker did not start within 120s"
		fi
		# It died: most likely a port taken between the check and the bind.
		# A cluster node cannot move (start-cluster retries with new ports).
		if [[ -z "$member" ]] && grep -qi 'Address already in use' "$dir/server.log" "$dir/stdout.log" 2>/dev/null && [[ ! -s "$dir/address" ]]; then
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

# new_cluster_id prints a Kafka UUID: 16 random bytes, URL-safe base64 without padding,
# never starting with "-" (as Kafka's own Uuid.randomUuid avoids): kafka-storage's
# argument parser takes "-t -abc…" for a missing value and an unknown option, so one
# start in 64 failed ("argument --cluster-id/-t: expected one argument").
new_cluster_id() {
	local id
	while :; do
		id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
		[[ "$id" == -* ]] || break
	done
	printf '%s\n' "$id"
}

# plan_cluster writes DIR/nodeK/cluster.env for K in 1..N: free client ports
# from CHOM_TEST_KAFKA_PORT (or 59092) and controller ports 1000 above, all
# distinct, and one cluster ID.
plan_cluster() {
	local dir="$1" n="$2" id i next cnext voters=""
	local ports=() cports=()
	id="$(new_cluster_id)"
	next="${CHOM_TEST_KAFKA_PORT:-59092}"
	cnext=$((next + 1000))
	for ((i = 1; i <= n; i++)); do
		ports[i]="$(free_port "$next")"
		next=$((ports[i] + 1))
		cports[i]="$(free_port "$cnext")"
		cnext=$((cports[i] + 1))
		voters+="${voters:+,}$i@127.0.0.1:${cports[i]}"
	done
	for ((i = 1; i <= n; i++)); do
		mkdir -p "$dir/node$i"
		printf 'node=%s\nnodes=%s\nid=%s\nvoters=%s\nport=%s\ncport=%s\n' \
			"$i" "$n" "$id" "$voters" "${ports[i]}" "${cports[i]}" >"$dir/node$i/cluster.env"
	done
}

# cluster_nodes_of prints the node directories of the cluster in DIR, in order.
cluster_nodes_of() {
	local dir="$1" i=1
	while [[ -s "$dir/node$i/cluster.env" ]]; do
		printf '%s\n' "$dir/node$i"
		i=$((i + 1))
	done
}

cmd_start_cluster() {
	local dir="${1:-}" n="${2:-3}" attempt fresh node failed addrs pids=()
	[[ -n "$dir" ]] || usage
	[[ "$n" =~ ^[1-9]$ ]] || die "start-cluster: N must be 1 to 9"
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	cmd_fetch >/dev/null
	for attempt in 1 2 3; do
		fresh=""
		if [[ ! -s "$dir/node1/cluster.env" ]]; then
			plan_cluster "$dir" "$n"
			fresh=1
		fi
		pids=()
		while read -r node; do
			# Each node in its own process: a node starts only once a quorum of
			# voters runs, so they must all be starting at once.
			bash "${BASH_SOURCE[0]}" start "$node" >"$node/start.out" 2>"$node/start.err" &
			pids+=($!)
		done < <(cluster_nodes_of "$dir")
		failed=""
		for pid in "${pids[@]}"; do
			wait "$pid" || failed=1
		done
		if [[ -z "$failed" ]]; then
			addrs=""
			while read -r node; do
				addrs+="${addrs:+,}$(cat "$node/address")"
			done < <(cluster_nodes_of "$dir")
			printf '%s\n' "$addrs"
			return 0
		fi
		while read -r node; do
			cmd_kill "$node"
		done < <(cluster_nodes_of "$dir")
		# A port taken between the check and the bind: plan again with new ports.
		# grep reads the logs itself: behind a pipe, grep -q leaves at the first
		# match, cat dies of SIGPIPE on a log longer than the pipe's buffer (a
		# broker's stack traces are), and pipefail turned the match into a miss.
		if [[ -n "$fresh" ]] && grep -qis 'Address already in use' "$dir"/node*/server.log "$dir"/node*/stdout.log; then
			log "start-cluster: a port was taken; trying again with others"
			rm -rf "$dir"/node*
			continue
		fi
		break
	done
	for node in "$dir"/node*; do
		log "== $node"
		cat "$node/start.err" >&2 2>/dev/null || true
	done
	die "the cluster in $dir did not start (see above)"
}

cmd_stop_cluster() {
	local dir="${1:-}" node pids=()
	[[ -n "$dir" ]] || usage
	while read -r node; do
		cmd_stop "$node" &
		pids+=($!)
	done < <(cluster_nodes_of "$dir")
	for pid in "${pids[@]}"; do
		wait "$pid" || true
	done
}

main() {
	local cmd="${1:-}"
	shift || true
	case "$cmd" in
	fetch) cmd_fetch ;;
	start) cmd_start "$@" ;;
	start-sasl)
		mode=sasl
		cmd_start "$@"
		;;
	start-cluster) cmd_start_cluster "$@" ;;
	stop) cmd_stop "$@" ;;
	stop-cluster) cmd_stop_cluster "$@" ;;
	kill) cmd_kill "$@" ;;
	*) usage ;;
	esac
}

main "$@"
