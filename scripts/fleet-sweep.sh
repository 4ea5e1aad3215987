#!/usr/bin/env bash
# Sweeps a simulated fleet of N servers (default 10000) on loopback with two
# worker processes of 200 checks in flight each, twice: cold (every check
# dials and handshakes) and warm (pooled SSH connections, open breakers on the
# dead servers). Prints one FLEET line per sweep. Runs without -race: it is a
# measurement, not part of the normal suite (internal/fleetsim TestFleetSweep
# runs a 200-server fleet there).
#
#   bash scripts/fleet-sweep.sh [N]
#   CHOM_FLEET_PROFILE_DIR=/tmp/prof bash scripts/fleet-sweep.sh   # + worker CPU profiles
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CHOM_FLEET_SIZE="${1:-10000}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! go test -count=1 -timeout 10m -run '^TestFleetSweep$' -v ./internal/fleetsim/ >"$out" 2>&1; then
	tail -n 40 "$out" >&2
	exit 1
fi
grep -E 'fleet:|worker [0-9]+:' "$out" | sed 's/^ *fleetsim_test.go:[0-9]*: /  /'
grep '^FLEET' "$out"
if [[ -n "${CHOM_FLEET_PROFILE_DIR:-}" ]]; then
	echo "worker CPU profiles: ${CHOM_FLEET_PROFILE_DIR}/worker{0,1}.pprof (go tool pprof -top FILE)"
fi
