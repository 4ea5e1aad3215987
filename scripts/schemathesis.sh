#!/usr/bin/env bash
# schemathesis.sh fuzzes a running CHOM with schemathesis (a property-based API
# tester from PyPI) driven by the OpenAPI document CHOM serves at
# /api/v1/openapi.json, and fails on any 5xx or any response that breaks the
# document.
#
#   scripts/schemathesis.sh            build chom, start it, fuzz it, stop it
#
# The stack: with CHOM_TEST_DATABASE_URL and CHOM_TEST_REDIS_URL set (as
# scripts/test-services.sh does), `chom migrate up`, then `chom ingress` and
# `chom worker` as separate processes on a fresh PostgreSQL database and a
# Redis database of their own, both dropped afterwards; otherwise `chom dev`
# (embedded SQLite and Redis) in a temporary directory.
#
# Two runs: every operation with a tenant token (read, write), then the admin
# operations (tag vps) with an admin token. The checks are schemathesis's own:
# no 5xx, documented status codes, content types, headers and body schemas,
# invalid input rejected, auth enforced, 405 with Allow on other methods. Not
# checked: positive_data_acceptance (the document cannot say that a
# dedicated server's tenant must exist, that an Idempotency-Key is spent or
# that ?wait is at most 30s) and use_after_free (a deleted site stays
# readable, with status "deleted", by design).
#
# Knobs (environment):
#   CHOM_CACHE_DIR                  where the Python venv lives (default: .cache/ in the repo)
#   CHOM_SCHEMATHESIS_MAX_EXAMPLES  examples per operation and phase (default 150)
#   CHOM_SCHEMATHESIS_SEED          generation seed (default fixed, so CI is reproducible)
#   CI                              when set, a missing python3 or venv module fails instead of skipping
set -euo pipefail

readonly SCHEMATHESIS_VERSION=4.32.5
readonly CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,allow_header_conformance,ignored_auth,ensure_resource_availability
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root
cache_dir="${CHOM_CACHE_DIR:-$repo_root/.cache}"
max_examples="${CHOM_SCHEMATHESIS_MAX_EXAMPLES:-150}"
seed="${CHOM_SCHEMATHESIS_SEED:-20261125}"

log() { printf 'schemathesis.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# A missing Python fails in CI and skips elsewhere.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
	if [[ -n "${CI:-}" ]]; then
		die "python3 with the venv and ensurepip modules is required (Debian: apt-get install -y python3 python3-venv python3-pip)"
	fi
	log "python3 (with venv) not found: skipping the schemathesis run (it fails instead when CI is set)"
	exit 0
fi

# The venv, built once per version and reused. The stamp file is written last,
# so an interrupted install is redone rather than trusted.
venv="$cache_dir/schemathesis-$SCHEMATHESIS_VERSION"
if [[ ! -f "$venv/.installed" ]]; then
	log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
	rm -rf "$venv"
	mkdir -p "$cache_dir"
	python3 -m venv "$venv"
	"$venv/bin/python" -m pip install --disable-pip-version-check --quiet "schemathesis==$SCHEMATHESIS_VERSION" ||
		die "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
	touch "$venv/.installed"
fi
"$venv/bin/schemathesis" --version | grep -qF "$SCHEMATHESIS_VERSION" || die "$venv does not hold schemathesis $SCHEMATHESIS_VERSION"

# The document itself first: valid against the OpenAPI 3.1 meta-schema that
# schemathesis bundles (an internal module of the pinned version).
"$venv/bin/python" - "$repo_root/ingress/openapi.json" <<'EOF' || die "ingress/openapi.json is not a valid OpenAPI 3.1 document"
import json, sys
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
errors = list(OPENAPI_31_VALIDATOR.iter_errors(json.load(open(sys.argv[1], encoding="utf-8"))))
for e in errors[:20]:
    print(f"openapi.json: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

work="$(mktemp -d "${TMPDIR:-/tmp}/chom-schemathesis.XXXXXX")"
pids=()
pg_admin_url="" pg_db="" redis_url=""
cleanup() {
	local rc=$?
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n "$pg_db" ]]; then
		psql -q "$pg_admin_url" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 ||
			log "could not drop database $pg_db"
	fi
	if [[ -n "$redis_url" ]]; then
		redis-cli -u "$redis_url" FLUSHDB >/dev/null 2>&1 || true
	fi
	if ((rc != 0)); then
		for f in "$work"/*.log; do
			[[ -f "$f" ]] || continue
			log "last lines of $(basename "$f"):"
			tail -n 20 "$f" >&2
		done
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building chom"
(cd "$repo_root" && go build -o "$work/chom" ./cmd/chom)
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

wait_healthy() {
	for _ in $(seq 1 100); do
		if curl -fsS "$base/api/v1/health" >/dev/null 2>&1; then
			return 0
		fi
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null || die "a chom process exited before the API answered"
		done
		sleep 0.2
	done
	die "the API did not answer on $base within 20s"
}

export CHOM_LISTEN="127.0.0.1:$port" CHOM_LOG_FORMAT=text CHOM_LOG_LEVEL=warn CHOM_RATE_LIMIT=0
if [[ -n "${CHOM_TEST_DATABASE_URL:-}" && -n "${CHOM_TEST_REDIS_URL:-}" ]]; then
	pg_admin_url="$CHOM_TEST_DATABASE_URL"
	pg_db="chom_schemathesis_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
	psql -q "$pg_admin_url" -c "CREATE DATABASE \"$pg_db\"" >/dev/null || die "could not create database $pg_db"
	# Same URL, another database (the path is the database name).
	CHOM_DATABASE_URL="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$pg_admin_url" "$pg_db")"
	# A Redis database from the counter internal/testenv hands them out with.
	n="$(redis-cli -u "$CHOM_TEST_REDIS_URL" -n 0 INCR chom:testenv:next-db)"
	redis_url="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$CHOM_TEST_REDIS_URL" "$((1 + n % 1023))")"
	redis-cli -u "$redis_url" FLUSHDB >/dev/null
	export CHOM_DATABASE_URL CHOM_REDIS_URL="$redis_url" CHOM_LOCAL_ROOT="$work/vps" CHOM_WORKER_CONCURRENCY=4
	mkdir -p "$CHOM_LOCAL_ROOT"
	log "stack: chom ingress + chom worker on PostgreSQL database $pg_db and Redis database $((1 + n % 1023))"
	"$work/chom" migrate up >"$work/migrate.log" 2>&1 || die "chom migrate up failed: $(cat "$work/migrate.log")"
	tenant_token="$("$work/chom" token create --tenant schemathesis --scope read,write --name schemathesis)"
	admin_token="$("$work/chom" token create --tenant platform --scope admin --name schemathesis)"
	"$work/chom" ingress >"$work/ingress.log" 2>&1 &
	pids+=($!)
	"$work/chom" worker >"$work/worker.log" 2>&1 &
	pids+=($!)
	wait_healthy
	# One shared server for the sites schemathesis creates.
	curl -fsS -o /dev/null -X POST "$base/api/v1/vps" -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
		-d '{"hostname":"vps1.schemathesis.test","ip_address":"127.0.0.1","provider":"local","region":"local","site_capacity":10000}' ||
		die "could not register the local server"
else
	log "stack: chom dev (embedded SQLite and Redis); set CHOM_TEST_DATABASE_URL and CHOM_TEST_REDIS_URL for the real one"
	"$work/chom" dev --data-dir "$work/dev" --listen "127.0.0.1:$port" >"$work/dev.log" 2>&1 &
	pids+=($!)
	wait_healthy
	tenant_token="$(cat "$work/dev/dev-token")"
	admin_token="$(cat "$work/dev/admin-token")"
fi

passed=0 failed=0
# run NAME TOKEN ARGS... runs schemathesis once and adds its results to the totals.
run() {
	local name="$1" token="$2"
	shift 2
	log "run: $name (max $max_examples examples per operation, seed $seed)"
	local rc=0
	(cd "$work" && "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
		--checks "$CHECKS" --max-examples "$max_examples" --seed "$seed" \
		--generation-database none --request-timeout 45 --no-color --output-truncate true \
		--report junit --report-junit-path "$work/$name.xml" \
		-H "Authorization: Bearer $token" "$@") || rc=$?
	local counts
	counts="$(python3 - "$work/$name.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 1")
    raise SystemExit
cases = root.iter("testcase")
total = bad = 0
for c in cases:
    total += 1
    if c.find("failure") is not None or c.find("error") is not None:
        bad += 1
print(total - bad, bad)
EOF
)"
	passed=$((passed + ${counts% *}))
	failed=$((failed + ${counts#* }))
	if ((rc != 0 && ${counts#* } == 0)); then
		failed=$((failed + 1)) # schemathesis failed without a failing case: count it
	fi
}

start=$SECONDS
run tenant "$tenant_token"
run admin "$admin_token" --include-tag vps
log "done in $((SECONDS - start))s"
# The plain closing line of a test run.
echo "schemathesis: $passed passed, $failed failed"
((failed == 0))
