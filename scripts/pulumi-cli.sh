#!/usr/bin/env bash
# Find or build the Pulumi CLI the driver needs, and print the directory holding it (put it first on PATH).
#
#   export PATH="$(bash scripts/pulumi-cli.sh):$PATH"
#
# 1. An installed `pulumi` >= $MIN_VERSION on PATH is used as is (the official distribution carries the
#    dynamic-provider plugin beside it).
# 2. Otherwise the CLI is built from the Go module proxy into a cache that survives between runs:
#    ${CLOUDCOMPUTE_CACHE:-$XDG_CACHE_HOME/cloudcompute}/pulumi-v$VERSION/bin/. The wrapper module in scripts/pulumi-cli/
#    pins every dependency (go.sum), because `go install github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@v...` refuses a
#    module with replace directives. The version string must be injected: the Automation API parses `pulumi version`.
#    The dynamic-provider plugin (pulumi-resource-pulumi-nodejs, shipped in node_modules/@pulumi/pulumi) is copied
#    beside the binary, where the engine looks for bundled plugins.
set -euo pipefail

VERSION=3.248.0
MIN_VERSION=3.248.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cache_root="${CLOUDCOMPUTE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudcompute}"
# The layout <root>/bin/pulumi is what the Automation API expects of PulumiCommand.get({ root }).
bin_dir="$cache_root/pulumi-v$VERSION/bin"

log() { echo "pulumi-cli: $*" >&2; }

version_at_least() { # $1 >= $2 (both without the leading v)
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

installed_version() { # prints the version of the pulumi binary $1, or nothing
  "$1" version 2>/dev/null | head -n1 | sed -n 's/^v\{0,1\}\([0-9][0-9.]*\).*/\1/p'
}

copy_plugins() {
  local plugin_src="$repo/node_modules/@pulumi/pulumi"
  if [ ! -f "$plugin_src/pulumi-resource-pulumi-nodejs" ]; then
    log "node_modules/@pulumi/pulumi is missing: run 'npm ci' first (it ships the dynamic-provider plugin)"
    exit 1
  fi
  for plugin in pulumi-resource-pulumi-nodejs pulumi-analyzer-policy; do
    if [ -f "$plugin_src/$plugin" ]; then
      install -m 0755 "$plugin_src/$plugin" "$bin_dir/$plugin"
    fi
  done
}

# 1. An installed CLI that is recent enough.
if command -v pulumi >/dev/null 2>&1; then
  found="$(command -v pulumi)"
  found_dir="$(cd "$(dirname "$found")" && pwd)"
  if [ "$found_dir" != "$bin_dir" ]; then
    v="$(installed_version "$found")"
    if [ -n "$v" ] && version_at_least "$v" "$MIN_VERSION"; then
      log "using installed pulumi $v at $found"
      echo "$found_dir"
      exit 0
    fi
    log "ignoring pulumi ${v:-of unknown version} at $found (need >= $MIN_VERSION)"
  fi
fi

mkdir -p "$bin_dir"

# 2. The cached build, or build it now. One build at a time: a lock serialises concurrent callers (CI, tests).
exec 9>"$bin_dir/.build.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

if [ "$(installed_version "$bin_dir/pulumi" 2>/dev/null || true)" != "$VERSION" ]; then
  if ! command -v go >/dev/null 2>&1; then
    log "no pulumi >= $MIN_VERSION on PATH and no Go toolchain to build one."
    log "Install Pulumi (https://www.pulumi.com/docs/install/) or Go >= 1.25 (https://go.dev/dl/), then rerun $0."
    exit 1
  fi
  log "building pulumi v$VERSION from the Go module proxy into $bin_dir (several minutes the first time)"
  tmp="$bin_dir/pulumi.building.$$"
  (
    cd "$here/pulumi-cli"
    GOFLAGS=-mod=readonly go build -o "$tmp" \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$VERSION" \
      github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  ) >&2 || { rm -f "$tmp"; log "go build failed"; exit 1; }
  mv -f "$tmp" "$bin_dir/pulumi"
fi

copy_plugins

# `pulumi up` of index.ts needs the Node.js language host, which an installed Pulumi ships and the module proxy does
# not serve. Build it from the source kept beside the project (../shared/pulumi-language-nodejs, or
# PULUMI_LANGUAGE_NODEJS_SRC) when it is there; inline programs (the driver) work without it.
language_src="${PULUMI_LANGUAGE_NODEJS_SRC:-$(dirname "$repo")/shared/pulumi-language-nodejs}"
# A clone made elsewhere (CI clones into a scratch directory) still finds the machine's shared copy.
[ -f "$language_src/build.sh" ] || [ ! -f /work/shared/pulumi-language-nodejs/build.sh ] || language_src=/work/shared/pulumi-language-nodejs
if [ ! -x "$bin_dir/pulumi-language-nodejs" ]; then
  if [ -f "$language_src/build.sh" ]; then
    log "building pulumi-language-nodejs from $language_src"
    bash "$language_src/build.sh" "$bin_dir" >/dev/null || { log "pulumi-language-nodejs build failed"; exit 1; }
  else
    log "no pulumi-language-nodejs source at $language_src: 'pulumi up' of index.ts needs an installed Pulumi"
  fi
fi
log "pulumi $(installed_version "$bin_dir/pulumi") at $bin_dir/pulumi"
echo "$bin_dir"
