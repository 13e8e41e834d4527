#!/usr/bin/env bash
# Install anvil (the local Ethereum node used by the tests and benchmarks) into <repo>/.tools
# from the npm package @foundry-rs/anvil, and print the path of the binary.
#
# Idempotent: a second run finds the binary and only prints its path. Needs node and npm.
# The binary ships inside the platform package (@foundry-rs/anvil-linux-amd64 or -arm64), an
# optional dependency of @foundry-rs/anvil. npm may skip the wrapper's postinstall script (for
# example with --ignore-scripts), which is fine: we use the platform package's binary directly.
# Set ANVIL_VERSION to pin another version.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/.tools"
version="${ANVIL_VERSION:-1.7.1}"

case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "install_anvil.sh: no anvil npm package for machine $(uname -m)" >&2; exit 1 ;;
esac
platform_pkg="@foundry-rs/anvil-linux-$arch"
binary="$tools/node_modules/$platform_pkg/bin/anvil"

if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
    echo "$binary"
    exit 0
fi

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install_anvil.sh: '$tool' not found; install Node.js and npm first" \
            "(Debian: apt-get install -y nodejs npm)" >&2
        exit 1
    fi
done

mkdir -p "$tools"
# Keep everything npm writes here out of git without touching the repo's .gitignore.
[ -f "$tools/.gitignore" ] || printf '*\n' >"$tools/.gitignore"

# Installing the platform package by name does not depend on npm honouring optional
# dependencies or running postinstall scripts.
npm install --prefix "$tools" --no-audit --no-fund --no-save --loglevel=error \
    --ignore-scripts "@foundry-rs/anvil@$version" "$platform_pkg@$version" >/dev/null

if [ ! -x "$binary" ]; then
    # Some npm versions unpack without the executable bit.
    chmod +x "$binary" 2>/dev/null || true
fi
if ! "$binary" --version >/dev/null 2>&1; then
    echo "install_anvil.sh: npm finished but $binary does not run" >&2
    exit 1
fi
echo "$binary"
