#!/usr/bin/env bash
# Installs the Debian packages the tests use, when they are missing: openssl (`openssl verify`), systemd (`systemd-analyze
# verify`), and for the single-file binary and the .deb: binutils (strip), dpkg-dev (dpkg-shlibdeps), lintian, and the
# compiler and make that node-gyp needs to build better-sqlite3 for the binary's Node.js.
# As root, also what the several-host and failure tests use (they are skipped for other users): iproute2 for
# `ip netns`, tcpdump to read the bridge, curl as the unmodified client, util-linux for unshare/nsenter (and setpriv, to
# run that client as an ordinary user), iptables for transparent capture (only inside the tests' own namespaces), and
# chromium for the dashboard's browser test (test/e2e/dashboard.test.ts).
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v strip >/dev/null || need+=(binutils)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v lintian >/dev/null || need+=(lintian)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
if [ "$(id -u)" -eq 0 ]; then
  command -v ip >/dev/null || need+=(iproute2)
  command -v tcpdump >/dev/null || need+=(tcpdump)
  command -v curl >/dev/null || need+=(curl)
  { command -v nsenter >/dev/null && command -v setpriv >/dev/null; } || need+=(util-linux)
  command -v iptables-restore >/dev/null || need+=(iptables)
  [ -x /usr/bin/chromium ] || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the tests need: ${need[*]} — install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
