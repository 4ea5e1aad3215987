#!/usr/bin/env bash
# Backs up a 1 GiB site (16 files of incompressible data) through `chom worker`
# run as its own process against the test PostgreSQL and Redis, with the local
# driver and the filesystem store, and prints the archive size, the time and
# the worker's peak RSS (VmHWM) before and after. Runs without -race: it is a
# measurement (internal/integration TestBackupOneGiBFlatMemory, which fails
# when the peak reaches 200 MiB). Needs ~2.2 GiB free under $TMPDIR.
#
#   bash scripts/backup-rss.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(bash scripts/test-services.sh env)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! CHOM_TEST_BACKUP_RSS=1 go test -count=1 -timeout 15m -run '^TestBackupOneGiBFlatMemory$' -v ./internal/integration/ >"$out" 2>&1; then
	tail -n 40 "$out" >&2
	exit 1
fi
grep -E '1 GiB site:' "$out" | sed 's/^ *backup_rss_test.go:[0-9]*: /  /'
