# ports.sh: free-port helpers shared by scripts/test-services.sh and scripts/kafka.sh.
# Sourced, not run; the caller defines die MESSAGE.

# port_in_use PORT: true when something listens on 127.0.0.1:PORT.
port_in_use() {
	local port="$1"
	if command -v ss >/dev/null 2>&1; then
		[[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]] && return 0
	fi
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# free_port FIRST: prints the first port >= FIRST that nobody listens on.
free_port() {
	local port="$1" i
	for ((i = 0; i < 200; i++)); do
		if ! port_in_use "$port"; then
			printf '%s\n' "$port"
			return 0
		fi
		port=$((port + 1))
	done
	die "no free port found from $1 to $port"
}
