#!/bin/sh
# image-root.sh OUT builds the container image's whole file system into OUT:
# the static chom binary and the little a binary without a shell needs around
# it. deploy/Dockerfile runs it in its `root` stage on a Go base image; CI
# (internal/imagecheck) runs it on the host and builds the Dockerfile's final
# stage, verbatim, over its output. One script for both is how the image users
# build and the image CI tests hold the same files.
#
# Run it as root from anywhere in the repository: /data is chowned to the
# image's user.
set -eu
out=${1:?usage: deploy/image-root.sh OUT}
cd "$(dirname "$0")/.."
umask 022
mkdir -p "$out"

# A static binary: SQLite is pure Go (modernc.org/sqlite), nothing needs cgo.
# -buildvcs=false: a build context holds no .git, so the host's build must not
# stamp one either; the revision is the image's OCI label.
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$out/chom" ./cmd/chom

# The image's one user, 65532 (the "nonroot" UID of distroless images), with
# no login shell: there is none.
mkdir -p "$out/etc/ssl/certs" "$out/data" "$out/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nchom:x:65532:65532:chom:/data:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nchom:x:65532:\n' >"$out/etc/group"
# Go's crypto/x509 reads this bundle (Debian's ca-certificates) on Linux:
# Kafka over TLS, S3, PostgreSQL with sslmode=verify-full.
cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$out/tmp"
# /data is chom dev's data directory and the volume mount point; a new named
# volume takes this owner and mode.
chown 65532:65532 "$out/data"
chmod 0750 "$out/data"
