#!/usr/bin/env bash
# Installs the Debian packages the tests use (openssl for `openssl verify`, systemd for `systemd-analyze verify`), when they are missing.
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v systemd-analyze >/dev/null || need+=(systemd)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the tests need: ${need[*]} — install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
