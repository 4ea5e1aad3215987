#!/usr/bin/env bash
# run-tests.sh is the Go test suite as `go tool task test` runs it, inside
# scripts/test-services.sh (which starts the servers and exports their URLs).
# Every package runs with the race detector. The fault suite (internal/faults)
# runs last and verbose, so that what it measured and the ledger it checked after
# each fault are in the log; on a failure its whole output is printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
faults=github.com/chomhq/chom/internal/faults
mapfile -t pkgs < <(go list ./... | grep -vx "$faults")
# The isolation attack suite runs on its own below, verbose, so the attacks it
# performed and what each proved are in the log.
isolation='^TestIsolationOnRealServers$'
go test -race -count=1 -timeout 40m -skip "$isolation" "${pkgs[@]}"

echo "== isolation attack suite: tenant code against the shared server's isolation, on real sshd, nginx, php-fpm and MariaDB"
log="$(mktemp)"
if go test -race -count=1 -timeout 10m -v -run "$isolation" ./drivers/ssh/ >"$log" 2>&1; then
	grep -E '^\s+[a-z_]+_test\.go:[0-9]+: |^\s*--- |^(ok|PASS)' "$log"
	rm -f "$log"
else
	cat "$log"
	rm -f "$log"
	exit 1
fi

echo "== fault suite: each test injects one fault into a real stack, then checks the ledger"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if go test -race -count=1 -timeout 20m -v "$faults" >"$log" 2>&1; then
	# The t.Logf lines (figures and ledgers), then go test's own result lines.
	grep -E '^\s+[a-z_]+_test\.go:[0-9]+: |^--- |^(ok|PASS)' "$log"
else
	cat "$log"
	exit 1
fi
