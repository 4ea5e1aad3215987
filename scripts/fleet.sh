#!/usr/bin/env bash
# fleet.sh runs CHOM the way it is deployed — two ingresses behind HAProxy,
# three workers, two schedulers, two relays and a billing consumer, each its
# own process, on Redis under Sentinel, a three-node Kafka cluster and a
# PostgreSQL primary with a synchronous standby — under the load harness's
# user mix through the balancer, while one of each (an ingress, a scheduler, a
# relay, the Redis master, a Kafka broker, the PostgreSQL primary, a worker)
# is killed in turn and brought back; then it checks the ledger
# (internal/faults TestFleet). CI runs the same test with FLEET_SCALE=1 (each fault 5s down);
# this runs it longer:
#
#   bash scripts/fleet.sh [SCALE]     # default 6: each fault 30s down, about 10 min
#
# Needs haproxy, redis-server, redis-sentinel, postgresql and Java 17 (Kafka),
# as for the fault suite (docs/development.md). The load harness's report
# (report.md, chart.png with the faults shaded, result.json) is written to a
# temporary directory, whose path it prints.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Inside scripts/test-services.sh (its servers for the stack's shared schema).
if [[ -z "${CHOM_TEST_DATABASE_URL:-}" ]]; then
	exec bash scripts/test-services.sh run -- bash scripts/fleet.sh "$@"
fi
scale="${1:-6}"
out="$(mktemp -d /tmp/chom-fleet.XXXXXX)"
export CI=true
if FLEET_SCALE="$scale" FLEET_REPORT_DIR="$out" go test -race -count=1 -timeout 60m -v -run '^TestFleet$' ./internal/faults >"$out/test.log" 2>&1; then
	grep -E '^\s+fleet_test\.go:[0-9]+: |^\s+ledger_test\.go:[0-9]+: |^--- |^(ok|PASS)' "$out/test.log"
	echo "fleet: report in $out/report.md and $out/chart.png, the whole log in $out/test.log"
else
	tail -n 200 "$out/test.log"
	echo "fleet: FAILED; the whole log in $out/test.log" >&2
	exit 1
fi
