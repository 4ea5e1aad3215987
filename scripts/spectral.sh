#!/usr/bin/env bash
# spectral.sh lints the OpenAPI document (ingress/openapi.json) with Spectral
# (@stoplight/spectral-cli from npm, an independent OpenAPI linter) and the
# ruleset .spectral.yaml at the repository root (spectral:oas). Every finding
# fails, warnings included (--fail-severity=warn).
#
#   scripts/spectral.sh                 lint ingress/openapi.json
#   scripts/spectral.sh FILE...         lint other documents with the same rules
#
# The CLI is installed once per version with npm into $CHOM_CACHE_DIR/spectral
# (default .cache/spectral in the repo, git-ignored) and reused; the stamp file
# is written last, so an interrupted install is redone rather than trusted.
#
# Knobs (environment):
#   CHOM_CACHE_DIR   where the npm prefix lives (default: .cache/ in the repo)
#   CI               when set, a missing node or npm fails instead of skipping
set -euo pipefail

readonly SPECTRAL_VERSION=6.16.3
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root
cache_dir="${CHOM_CACHE_DIR:-$repo_root/.cache}"
prefix="$cache_dir/spectral"

log() { printf 'spectral.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# A missing Node.js fails in CI and skips elsewhere.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	if [[ -n "${CI:-}" ]]; then
		die "node and npm are required (Debian: apt-get install -y nodejs npm)"
	fi
	log "node or npm not found: skipping the OpenAPI lint (it fails instead when CI is set)"
	exit 0
fi

if [[ "$(cat "$prefix/.installed" 2>/dev/null || true)" != "$SPECTRAL_VERSION" ]]; then
	log "installing @stoplight/spectral-cli $SPECTRAL_VERSION into $prefix"
	rm -rf "$prefix"
	mkdir -p "$prefix"
	npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error --save-exact \
		"@stoplight/spectral-cli@$SPECTRAL_VERSION" >&2 ||
		die "npm install @stoplight/spectral-cli@$SPECTRAL_VERSION failed"
	printf '%s\n' "$SPECTRAL_VERSION" >"$prefix/.installed"
fi

if [[ $# -eq 0 ]]; then
	set -- "$repo_root/ingress/openapi.json"
fi
cd "$repo_root"
exec "$prefix/node_modules/.bin/spectral" lint --ruleset "$repo_root/.spectral.yaml" \
	--fail-severity=warn --display-only-failures "$@"
