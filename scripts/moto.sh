#!/usr/bin/env bash
# moto.sh installs moto (an S3-compatible server, among other AWS mocks, from
# PyPI, Apache-2.0) in a pinned venv, for the tests of drivers/s3store.
#
#   scripts/moto.sh install    build the venv once; print the path of moto_server
#
# internal/testenv.StartS3Server runs `install` itself on first use and then
# starts `moto_server -H 127.0.0.1 -p PORT` on a free loopback port for each
# test, so nothing has to be done by hand; .ci/run calls `install` before the
# tests so a broken PyPI download fails early, with its own message.
#
# Knobs (environment):
#   CHOM_CACHE_DIR     where the venv lives (default: .cache/ in the repo)
#   CI                 when set, a missing python3 or venv module fails instead of skipping
#
# Exit status: 0 and the path on stdout; 2 when python3 (with venv) is missing
# and CI is not set (the caller skips); 1 on any other failure.
set -euo pipefail

readonly MOTO_VERSION=5.2.5
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root
cache_dir="${CHOM_CACHE_DIR:-$repo_root/.cache}"

log() { printf 'moto.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ "${1:-}" == install ]] || die "usage: scripts/moto.sh install"

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
	if [[ -n "${CI:-}" ]]; then
		die "python3 with the venv and ensurepip modules is required (Debian: apt-get install -y python3 python3-venv python3-pip)"
	fi
	log "python3 (with venv) not found"
	exit 2
fi

# The venv, built once per version and reused. Parallel test binaries may ask at
# once: the lock makes the second wait for the first. The stamp file is written
# last, so an interrupted install is redone rather than trusted.
venv="$cache_dir/moto-$MOTO_VERSION"
mkdir -p "$cache_dir"
exec 9>"$cache_dir/moto-$MOTO_VERSION.lock"
flock 9
if [[ ! -f "$venv/.installed" ]]; then
	log "installing moto[server] $MOTO_VERSION into $venv"
	rm -rf "$venv"
	python3 -m venv "$venv"
	"$venv/bin/python" -m pip install --disable-pip-version-check --quiet "moto[server]==$MOTO_VERSION" >&2 ||
		die "pip install moto[server]==$MOTO_VERSION failed"
	touch "$venv/.installed"
fi
[[ -x "$venv/bin/moto_server" ]] || die "$venv has no bin/moto_server"
echo "$venv/bin/moto_server"
