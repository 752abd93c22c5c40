#!/usr/bin/env bash
# mesh-agent data plane, measured side by side with the peer sidecar pairs (../shared/bench/peers/run.sh).
# Path: wrk -> agent "out" upstream port (plain) -> mTLS -> agent "in" inbound port -> app :18080 (1 KiB body).
# Starts a mesh-agent server and two agents (pinned to CPU 1 like the peers; see bench/lib.sh), runs the peers'
# script with EXTRA="mesh-agent:18010", then stops everything it started. Assumes `npm run build` has been done.
# Usage: bash bench/run.sh [seconds] [connections]     (UPSTREAM_PROTOCOL=tcp measures the byte path; REQUEST_TELEMETRY=false takes metrics off; MULTIPLEX=false: one agent-to-agent connection per request; KEEP=1 keeps the temp dir with logs and configs;
#        MESH_CLI=/path/to/dist/src/cli/main.js measures that build)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
s=${1:-8}; c=${2:-32}
peers=${PEERS_DIR:-$root/../shared/bench/peers}
# Ports: none of the peers' (18080 app, 18001-18006, 18443-18448); bench/extra.sh uses 18500-18599.
P_SERVER=18110 P_SERVER_ADMIN=18114 P_UPSTREAM=18010 P_WEB=18020
P_OUT_INBOUND=18143 P_OUT_ADMIN=18100 P_IN_INBOUND=18243 P_IN_ADMIN=18200 P_APP=18080
. "$root/bench/lib.sh"

[ -f "$peers/run.sh" ] || { echo "missing $peers/run.sh"; exit 2; }
mesh_init $P_SERVER $P_SERVER_ADMIN $P_UPSTREAM $P_OUT_INBOUND $P_OUT_ADMIN $P_IN_INBOUND $P_IN_ADMIN
mesh_start
echo "mesh-agent: server :$P_SERVER, agent out (upstream api on :$P_UPSTREAM), agent in (inbound :$P_IN_INBOUND -> app :$P_APP); logs in $tmp"

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these 2 CPUs skews every row)"
EXTRA="mesh-agent:$P_UPSTREAM${EXTRA:+ $EXTRA}" bash "$peers/run.sh" "$s" "$c" 2>&1 | tee "$tmp/peers.txt"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -f /tmp/peerbench/mesh-agent.wrk ] && cp /tmp/peerbench/*.wrk "$tmp/" 2>/dev/null

agent_report
grep -q '^mesh-agent rps=[0-9]' "$tmp/peers.txt" || { echo "mesh-agent was not measured (see $tmp)"; exit 1; }
# Errors during the run (wrk's Non-2xx or socket errors): keep the logs for a look.
grep -qE '^mesh-agent .*(Non-2xx|Socket errors)' "$tmp/peers.txt" || ok=1
