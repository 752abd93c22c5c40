#!/usr/bin/env bash
# mesh-agent data plane, measured side by side with the peer sidecar pairs (../shared/bench/peers/run.sh).
# Path: wrk -> agent "out" upstream port (plain) -> mTLS -> agent "in" inbound port -> app :18080 (1 KiB body).
# Starts a mesh-agent server and two agents (pinned to CPU 1 like the peers), runs the peers' script with
# EXTRA="mesh-agent:18010", then stops everything it started. Assumes `npm run build` has been done.
# Usage: bash bench/run.sh [seconds] [connections]     (UPSTREAM_PROTOCOL=tcp measures the byte path; REQUEST_TELEMETRY=false takes metrics off; KEEP=1 keeps the temp dir with logs and configs;
#        MESH_CLI=/path/to/dist/src/cli/main.js measures that build)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
s=${1:-8}; c=${2:-32}
peers=${PEERS_DIR:-$root/../shared/bench/peers}
# MESH_CLI: measure another build (e.g. a snapshot of a commit built elsewhere) instead of this tree's dist/.
cli=${MESH_CLI:-$root/dist/src/cli/main.js}
# Ports: none of the peers' (18080 app, 18001-18006, 18443-18448).
P_SERVER=18110 P_SERVER_ADMIN=18114 P_UPSTREAM=18010 P_WEB=18020
P_OUT_INBOUND=18143 P_OUT_ADMIN=18100 P_IN_INBOUND=18243 P_IN_ADMIN=18200 P_APP=18080

[ -f "$cli" ] || { echo "missing $cli: run \"npm run build\" first"; exit 2; }
[ -f "$peers/run.sh" ] || { echo "missing $peers/run.sh"; exit 2; }
command -v taskset >/dev/null || { echo "missing: taskset"; exit 2; }
for p in $P_SERVER $P_SERVER_ADMIN $P_UPSTREAM $P_OUT_INBOUND $P_OUT_ADMIN $P_IN_INBOUND $P_IN_ADMIN; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use; stop whatever holds it"; exit 2; fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mesh-bench.XXXXXX")
pids=()
ok=0
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ $ok = 1 ] && [ -z "${KEEP:-}" ]; then rm -rf "$tmp"; else echo "logs and configs kept in $tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME ARGS...: runs the CLI pinned to CPU 1; stdout to NAME.out, stderr (logs) to NAME.log.
start() { local name=$1; shift; taskset -c 1 node ${NODE_FLAGS:-} "$cli" "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" & pids+=($!); eval "pid_$name=$!"; }
# wait_for NAME PATTERN: until NAME.out has PATTERN (15 s), failing early if the process exits.
wait_for() {
  local name=$1 pat=$2 pid; eval "pid=\$pid_$name"
  for _ in $(seq 150); do
    grep -q "$pat" "$tmp/$name.out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$name exited before \"$pat\"; its log:"; tail -20 "$tmp/$name.log"; exit 1; }
    sleep 0.1
  done
  echo "$name not ready within 15 s; its log:"; tail -20 "$tmp/$name.log"; exit 1
}

start server server --data-dir "$tmp/server" --listen 127.0.0.1:$P_SERVER --advertise 127.0.0.1:$P_SERVER --admin-listen 127.0.0.1:$P_SERVER_ADMIN
wait_for server "server ready"
token() {
  node "$cli" token create --admin 127.0.0.1:$P_SERVER_ADMIN --data-dir "$tmp/server" --description "bench $1" -o json |
    node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>process.stdout.write(JSON.parse(s).token))'
}
tok_out=$(token out) && tok_in=$(token in) || { echo "token create failed"; exit 1; }

cat >"$tmp/endpoints.yaml" <<EOF
# api runs on node "in": reach it through that node's inbound mTLS port
services:
  api:
    - address: 127.0.0.1
      port: $P_IN_INBOUND
EOF
cat >"$tmp/out.yaml" <<EOF
nodeName: out
stateDir: ./out-state
requestTelemetry: ${REQUEST_TELEMETRY:-true}
inbound: { listen: "127.0.0.1:$P_OUT_INBOUND" }
admin: { listen: "127.0.0.1:$P_OUT_ADMIN" }
endpointsFile: ./endpoints.yaml
services:
  - name: web
    port: $P_WEB
    protocol: http
    upstreams:
      - service: api
        port: $P_UPSTREAM
        bind: 127.0.0.1
        protocol: ${UPSTREAM_PROTOCOL:-http}
EOF
cat >"$tmp/in.yaml" <<EOF
nodeName: in
stateDir: ./in-state
requestTelemetry: ${REQUEST_TELEMETRY:-true}
inbound: { listen: "127.0.0.1:$P_IN_INBOUND" }
admin: { listen: "127.0.0.1:$P_IN_ADMIN" }
services:
  - name: api
    port: $P_APP
    protocol: http
EOF

start out agent --config "$tmp/out.yaml" --join "$tok_out"
start in agent --config "$tmp/in.yaml" --join "$tok_in"
wait_for out "agent ready"; wait_for in "agent ready"
echo "mesh-agent build: $cli ($(node "$cli" version 2>/dev/null))"
echo "mesh-agent: server :$P_SERVER, agent out (upstream api on :$P_UPSTREAM), agent in (inbound :$P_IN_INBOUND -> app :$P_APP); logs in $tmp"

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these 2 CPUs skews every row)"
EXTRA="mesh-agent:$P_UPSTREAM${EXTRA:+ $EXTRA}" bash "$peers/run.sh" "$s" "$c" 2>&1 | tee "$tmp/peers.txt"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -f /tmp/peerbench/mesh-agent.wrk ] && cp /tmp/peerbench/*.wrk "$tmp/" 2>/dev/null

# The agents' own counters, to tell refused or failed connections apart from slow ones.
for n in out in; do
  port=$P_OUT_ADMIN; [ $n = in ] && port=$P_IN_ADMIN
  node "$cli" status --agent 127.0.0.1:$port --state-dir "$tmp/$n-state" -o json >"$tmp/status-$n.json" 2>&1
done
node -e '
  const [o, i] = process.argv.slice(1).map((f) => { try { return JSON.parse(require("fs").readFileSync(f, "utf8")); } catch { return {}; } });
  const up = (o.upstreams ?? [])[0]?.stats;
  console.log(`agent out upstream stats: ${JSON.stringify(up ?? "unavailable")}`);
  console.log(`agent in inbound stats: ${JSON.stringify(i.inboundStats ?? "unavailable")}`);
' "$tmp/status-out.json" "$tmp/status-in.json"
for n in out in; do
  warn=$(grep -hE ' (WARN|ERROR) |uncaught|unhandled' "$tmp/$n.log" | sed -E 's/^[0-9T:.Z-]+ //; s/ peer=[^ ]+//g' | cut -c1-220 | sort | uniq -c | sort -rn | head -5)
  [ -n "$warn" ] && printf 'agent %s log, warnings and errors (count, line):\n%s\n' "$n" "$warn"
done
grep -q '^mesh-agent rps=[0-9]' "$tmp/peers.txt" || { echo "mesh-agent was not measured (see $tmp)"; exit 1; }
# Errors during the run (wrk's Non-2xx or socket errors): keep the logs for a look.
grep -qE '^mesh-agent .*(Non-2xx|Socket errors)' "$tmp/peers.txt" || ok=1
