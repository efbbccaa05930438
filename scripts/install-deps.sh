#!/bin/sh
# Installs the Debian packages edgeforge builds and tests with (run as root, or
# with sudo). Idempotent: skips apt when everything is already present.
set -e
PKGS="build-essential pkg-config libcmocka-dev libjansson-dev libpcre2-dev libopenblas-dev \
libopenblas0-openmp libcurl4-openssl-dev libhiredis-dev redis-server python3 python3-pip unzip clang-format"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $missing
fi
