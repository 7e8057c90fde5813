#!/usr/bin/env bash
# Install every Debian package gppd needs to build, run and test.
# Idempotent: installs only what is missing and says what it installs.
# Uses sudo when not root.  Usage: deploy/install-deps.sh [--no-browser]
set -euo pipefail

want_browser=1
for a in "$@"; do
  case "$a" in
    --no-browser) want_browser=0 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "install-deps: unknown option $a" >&2; exit 2 ;;
  esac
done

# build
pkgs=(build-essential pkg-config meson ninja-build
      libuv1-dev libmicrohttpd-dev libsqlite3-dev libcjson-dev
      libopenblas-dev libcmocka-dev zlib1g-dev
      libonnx-dev libprotobuf-c-dev protobuf-c-compiler
# fuzzing (libFuzzer comes with clang's runtime)
      clang libclang-rt-14-dev
# run and test: data set, the PyTorch peer and fixtures, tools the tests call
      dataset-fashion-mnist python3 python3-numpy python3-torch python3-torchvision
      curl sqlite3 wrk
# node: the ONNX Runtime check (onnxruntime-node) and the browser tests
      nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
# the browser tests drive Debian's chromium
[ "$want_browser" = 1 ] && pkgs+=(chromium)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} Debian packages present"
else
  echo "install-deps: installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages (pinned by their lock files): the dashboard's charting library,
# playwright-core for the browser tests, onnxruntime-node for the export check.
# --ignore-scripts: nothing downloads a browser or a binary of its own.
here=$(cd "$(dirname "$0")/.." && pwd)
for d in web tests/browser tests/unit/export; do
  if [ -f "$here/$d/package-lock.json" ] && [ ! -d "$here/$d/node_modules" ]; then
    echo "install-deps: npm ci in $d"
    (cd "$here/$d" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
done
echo "install-deps: done"
