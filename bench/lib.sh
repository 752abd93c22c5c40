# Shared start-up of the benchmark mesh, sourced by bench/run.sh and bench/extra.sh: a mesh-agent server and two
# agents, "out" (local service web, upstream api on $P_UPSTREAM) and "in" (service api, app on $P_APP), both pinned
# to CPU 1, enrolled with fresh join tokens in a temp dir; everything started is stopped on exit.
# The caller sets root, the ports P_SERVER P_SERVER_ADMIN P_UPSTREAM P_WEB P_OUT_INBOUND P_OUT_ADMIN P_IN_INBOUND
# P_IN_ADMIN P_APP, and may set MESH_EXTRA_UPSTREAMS (YAML items for out's upstream list), MESH_EXTRA_SERVICES
# (items for in's service list) and MESH_EXTRA_ENDPOINTS (entries for the endpoints file) before mesh_start.
# Env: MESH_CLI (another build), NODE_FLAGS (for both agents), UPSTREAM_PROTOCOL (api upstream, default http), REQUEST_TELEMETRY, MULTIPLEX (agent config, default true), KEEP.

# MESH_CLI: measure another build (e.g. a snapshot of a commit built elsewhere) instead of this tree's dist/.
cli=${MESH_CLI:-$root/dist/src/cli/main.js}
pids=()
ok=0

# need TOOL... : exits 2 naming the first tool that is not on PATH.
need() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null || { echo "missing: $t (see bench/README.md for the apt-get line)"; exit 2; }; done
}

# mesh_init PORT...: checks the build and that the ports are free, makes $tmp and sets the cleanup trap.
mesh_init() {
  local p
  [ -f "$cli" ] || { echo "missing $cli: run \"npm run build\" first"; exit 2; }
  need taskset node
  for p in "$@"; do
    if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use; stop whatever holds it"; exit 2; fi
  done
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/mesh-bench.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

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

# spawn NAME CMD...: runs CMD pinned to CPU 1; stdout to NAME.out, stderr (logs) to NAME.log; its pid in pid_NAME.
spawn() { local name=$1; shift; taskset -c 1 "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" & pids+=($!); eval "pid_$name=$!"; }
# start NAME ARGS...: the mesh-agent CLI through spawn.
start() { local name=$1; shift; spawn "$name" node ${NODE_FLAGS:-} "$cli" "$@"; }
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

token() {
  node "$cli" token create --admin 127.0.0.1:$P_SERVER_ADMIN --data-dir "$tmp/server" --description "bench $1" -o json |
    node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>process.stdout.write(JSON.parse(s).token))'
}

# mesh_start: the server, then both agents, until each is ready.
mesh_start() {
  local tok_out tok_in
  start server server --data-dir "$tmp/server" --listen 127.0.0.1:$P_SERVER --advertise 127.0.0.1:$P_SERVER --admin-listen 127.0.0.1:$P_SERVER_ADMIN
  wait_for server "server ready"
  tok_out=$(token out) && tok_in=$(token in) || { echo "token create failed"; exit 1; }
  cat >"$tmp/endpoints.yaml" <<EOF
# api runs on node "in": reach it through that node's inbound mTLS port
services:
  api:
    - address: 127.0.0.1
      port: $P_IN_INBOUND
${MESH_EXTRA_ENDPOINTS:-}
EOF
  cat >"$tmp/out.yaml" <<EOF
nodeName: out
stateDir: ./out-state
requestTelemetry: ${REQUEST_TELEMETRY:-true}
multiplex: ${MULTIPLEX:-true}
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
${MESH_EXTRA_UPSTREAMS:-}
EOF
  cat >"$tmp/in.yaml" <<EOF
nodeName: in
stateDir: ./in-state
requestTelemetry: ${REQUEST_TELEMETRY:-true}
multiplex: ${MULTIPLEX:-true}
inbound: { listen: "127.0.0.1:$P_IN_INBOUND" }
admin: { listen: "127.0.0.1:$P_IN_ADMIN" }
services:
  - name: api
    port: $P_APP
    protocol: http
${MESH_EXTRA_SERVICES:-}
EOF
  start out agent --config "$tmp/out.yaml" --join "$tok_out"
  start in agent --config "$tmp/in.yaml" --join "$tok_in"
  wait_for out "agent ready"; wait_for in "agent ready"
  echo "mesh-agent build: $cli ($(node "$cli" version 2>/dev/null))"
}

# agent_report: the agents' own counters (to tell refused or failed connections apart from slow ones) and the
# warnings and errors in their logs.
agent_report() {
  local n port warn
  for n in out in; do
    port=$P_OUT_ADMIN; [ $n = in ] && port=$P_IN_ADMIN
    node "$cli" status --agent 127.0.0.1:$port --state-dir "$tmp/$n-state" -o json >"$tmp/status-$n.json" 2>&1
  done
  node -e '
    const [o, i] = process.argv.slice(1).map((f) => { try { return JSON.parse(require("fs").readFileSync(f, "utf8")); } catch { return {}; } });
    for (const u of o.upstreams ?? []) console.log(`agent out upstream ${u.service} (${u.listen}) stats: ${JSON.stringify(u.stats ?? "unavailable")}`);
    console.log(`agent in inbound stats: ${JSON.stringify(i.inboundStats ?? "unavailable")}`);
  ' "$tmp/status-out.json" "$tmp/status-in.json"
  for n in out in; do
    warn=$(grep -hE ' (WARN|ERROR) |uncaught|unhandled' "$tmp/$n.log" | sed -E 's/^[0-9T:.Z-]+ //; s/ peer=[^ ]+//g' | cut -c1-220 | sort | uniq -c | sort -rn | head -5)
    [ -n "$warn" ] && printf 'agent %s log, warnings and errors (count, line):\n%s\n' "$n" "$warn"
  done
  return 0
}
