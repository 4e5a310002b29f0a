#!/usr/bin/env bash
# Build (once) the S3 server the benchmarks use and print the path of its binary.
#
#   bash scripts/s3-server.sh            # -> ~/.cache/cloudcompute/bin/versitygw
#
# versitygw (Versity S3 Gateway, Apache-2.0) with its posix backend is a Go program; `go install` fetches it from the
# Go module proxy (no replace directives in its go.mod, so no wrapper module is needed). About a minute on 2 cores.
# bench/s3-server.ts calls this when the binary is missing and falls back to moto when it fails.
set -euo pipefail

VERSION=v1.8.0 # keep in step with VERSITYGW_VERSION in bench/s3-server.ts
cache_root="${CLOUDCOMPUTE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudcompute}"
bin_dir="$cache_root/bin"
binary="$bin_dir/versitygw"

log() { echo "s3-server: $*" >&2; }

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed: cannot build versitygw (the benchmarks fall back to moto)"
  exit 1
fi
mkdir -p "$bin_dir"
log "building github.com/versity/versitygw/cmd/versitygw@$VERSION into $bin_dir"
# Build into a temporary GOBIN so an interrupted build never leaves a half-written binary at the cached path.
staging="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
GOBIN="$staging" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install -trimpath "github.com/versity/versitygw/cmd/versitygw@$VERSION"
mv "$staging/versitygw" "$binary"
echo "$binary"
