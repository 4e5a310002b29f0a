#!/usr/bin/env bash
# One-time setup for a fresh clone: system packages the tests and demo use, npm packages, the Pulumi CLI and the
# agent bundle. Safe to run again (every step skips what is already there).
#
#   bash scripts/setup.sh          # as root, or with sudo available for apt-get
set -euo pipefail
cd "$(dirname "$0")/.."

# podman + runc run containers (crun fails on these machines), awscli is the old scripts' peer tool in benchmarks,
# the user-data tests run shellcheck, docker-registry serves images locally, busybox-static builds the test image,
# headless chromium renders the batch report page in its tests (with DejaVu fonts the page names).
apt_packages=(podman runc awscli shellcheck docker-registry busybox-static openssl chromium fonts-dejavu-core)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v moto_server >/dev/null 2>&1 || {
  echo "setup: installing moto[server] (local S3/EC2/IAM for the demo and tests)" >&2
  python3 -m pip install --quiet 'moto[server]==5.2.1'
}

echo "setup: npm packages" >&2
npm ci --no-audit --no-fund

echo "setup: Pulumi CLI" >&2
bash scripts/pulumi-cli.sh >/dev/null

# npm ci's "prepare" builds these too; again here so a tree set up before that script existed gets them.
echo "setup: agent bundle and prebuilt CLI (dist/agent.js, dist/cli.js)" >&2
npm run --silent build >/dev/null

echo "setup: done. Try: npm run demo   then: npm test" >&2
