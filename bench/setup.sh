#!/usr/bin/env bash
# Installs what the benchmark needs beyond npm: h2load (Debian package nghttp2-client).
set -euo pipefail
if ! command -v h2load > /dev/null; then
  echo "bench: installing h2load (nghttp2-client)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q nghttp2-client > /dev/null || { apt-get update -q > /dev/null && apt-get install -y -q nghttp2-client > /dev/null; }
fi
h2load --version | head -1 >&2
