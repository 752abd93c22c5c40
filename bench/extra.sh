#!/usr/bin/env bash
# The benchmark rows beside bench/run.sh's keep-alive HTTP/1.1 run, each through both agents vs direct:
#   grpc  gRPC unary calls with h2load: h2load -> agent "out" (upstream echo, protocol grpc) -> mTLS HTTP/2 ->
#         agent "in" (service echo, protocol grpc) -> bench/grpc-server.ts; req/s, mean, p50, p99
#   bulk  TCP bulk throughput: bench/bulk.ts source -> out (upstream bulk, protocol tcp) -> mTLS -> in -> sink; MiB/s,
#         beside the plain loopback connection and the stunnel pair (when installed)
#   conn  new-connection rate: wrk with `Connection: close` (one request per connection) to a 1 KiB nginx app, direct,
#         through an nginx sidecar pair and through the agents (upstream api as http, and as tcp: one mTLS handshake each)
#   cost  CPU seconds per 1,000 requests and RSS of each agent (and of each nginx sidecar) from /proc, sampled right
#         before and after a keep-alive wrk run of the HTTP path
# Load generators run on CPU 0; the agents, the apps and the sidecars on CPU 1 (like bench/run.sh and the peers).
# Every result line ends with the 1-minute load average at its end. Assumes `npm run build` has been done.
# Usage: bash bench/extra.sh [seconds] [connections] [sections...]   (sections: grpc bulk conn cost; default all)
# Env: BULK_MIB (default 256), BULK_RUNS (3), GRPC_CONNS (4), GRPC_STREAMS (8 per connection), KEEP=1, MESH_CLI, NODE_FLAGS.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
s=${1:-8}; c=${2:-32}; shift $(($# < 2 ? $# : 2))
sections=${*:-grpc bulk conn cost}
peers=${PEERS_DIR:-$root/../shared/bench/peers}
# Ports 18500-18599: none of run.sh's (18010-18243) or the peers' (18080, 18001-18006, 18443-18448).
P_SERVER=18510 P_SERVER_ADMIN=18514 P_UPSTREAM=18520 P_WEB=18529
P_OUT_INBOUND=18543 P_OUT_ADMIN=18500 P_IN_INBOUND=18544 P_IN_ADMIN=18501 P_APP=18580
P_GRPC_UP=18521 P_BULK_UP=18522 P_TCP_UP=18523 P_GRPC_APP=18581 P_SINK=18582
P_NGX_OUT=18591 P_NGX_IN=18592 P_ST_OUT=18593 P_ST_IN=18594
. "$root/bench/lib.sh"

for sec in $sections; do
  case $sec in grpc | bulk | conn | cost) ;; *) echo "unknown section \"$sec\" (known: grpc bulk conn cost)"; exit 2 ;; esac
done
need wrk h2load nginx openssl curl getconf
[ -f "$peers/nginx-app.conf" ] || { echo "missing $peers/nginx-app.conf (the peers' configs, reused with other ports)"; exit 2; }
for f in grpc-server bulk; do [ -f "$root/dist/bench/$f.js" ] || { echo "missing dist/bench/$f.js: run \"npm run build\" first"; exit 2; }; done
mesh_init $P_SERVER $P_SERVER_ADMIN $P_UPSTREAM $P_OUT_INBOUND $P_OUT_ADMIN $P_IN_INBOUND $P_IN_ADMIN $P_APP \
  $P_GRPC_UP $P_BULK_UP $P_TCP_UP $P_GRPC_APP $P_SINK $P_NGX_OUT $P_NGX_IN $P_ST_OUT $P_ST_IN
hz=$(getconf CLK_TCK)
errors=0

# The peers' nginx app and sidecars (and stunnel pair), with this script's ports and files under $tmp/peer.
mkdir -p "$tmp/peer"
bash "$peers/gen-certs.sh" "$tmp/peer/certs" >/dev/null 2>&1 || { echo "gen-certs.sh failed"; exit 1; }
peer_conf() { # FILE: the peers' FILE with this script's ports and paths, written to $tmp/peer
  sed -e "s#/tmp/peerbench#$tmp/peer#g; s/:18080\b/:$P_APP/g; s/:18001\b/:$P_NGX_OUT/g; s/:18443\b/:$P_NGX_IN/g" \
    -e "s/:18006\b/:$P_ST_OUT/g; s/:18448\b/:$P_ST_IN/g" "$peers/$1" >"$tmp/peer/$1"
}
for f in nginx-app.conf nginx-out.conf nginx-in.conf; do peer_conf $f; done
spawn ngx_app nginx -c "$tmp/peer/nginx-app.conf"
spawn ngx_out nginx -c "$tmp/peer/nginx-out.conf"
spawn ngx_in nginx -c "$tmp/peer/nginx-in.conf"
if command -v stunnel >/dev/null; then
  peer_conf stunnel-out.conf; peer_conf stunnel-in.conf
  sed -i "s/:$P_APP\b/:$P_SINK/" "$tmp/peer/stunnel-in.conf"   # the stunnel pair carries the bulk transfer
  spawn st_out stunnel "$tmp/peer/stunnel-out.conf"; spawn st_in stunnel "$tmp/peer/stunnel-in.conf"
fi
grpc_data="$tmp/grpc-request.bin"
spawn grpc_app node "$root/dist/bench/grpc-server.js" $P_GRPC_APP "$grpc_data"
spawn sink node "$root/dist/bench/bulk.js" sink $P_SINK

MESH_EXTRA_UPSTREAMS="      - { service: echo, port: $P_GRPC_UP, bind: 127.0.0.1, protocol: grpc }
      - { service: bulk, port: $P_BULK_UP, bind: 127.0.0.1, protocol: tcp }
      - { service: api, port: $P_TCP_UP, bind: 127.0.0.1, protocol: tcp }"
MESH_EXTRA_SERVICES="  - { name: echo, port: $P_GRPC_APP, protocol: grpc }
  - { name: bulk, port: $P_SINK, protocol: tcp }"
MESH_EXTRA_ENDPOINTS="  echo: [{ address: 127.0.0.1, port: $P_IN_INBOUND }]
  bulk: [{ address: 127.0.0.1, port: $P_IN_INBOUND }]"
mesh_start
wait_for grpc_app listening; wait_for sink listening
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:$P_NGX_OUT/ && curl -sf -o /dev/null http://127.0.0.1:$P_UPSTREAM/ && break; sleep 0.1; done
echo "mesh-agent: agent out (upstreams api http :$P_UPSTREAM, api tcp :$P_TCP_UP, echo grpc :$P_GRPC_UP, bulk tcp :$P_BULK_UP),"
echo "  agent in (inbound :$P_IN_INBOUND -> api :$P_APP nginx, echo :$P_GRPC_APP grpc-server, bulk :$P_SINK sink); logs in $tmp"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these 2 CPUs skews every row)"

load() { echo "load=$(cut -d' ' -f1 /proc/loadavg)"; }

# ticks_rss PID...: summed utime+stime (clock ticks) and VmRSS (kB) of the processes and their children (nginx workers).
ticks_rss() {
  local p all=() t=0 r=0
  for p in "$@"; do all+=("$p" $(cat /proc/"$p"/task/*/children 2>/dev/null)); done
  for p in "${all[@]}"; do
    [ -r /proc/"$p"/stat ] || continue
    t=$((t + $(sed 's/.*) //' /proc/"$p"/stat | awk '{print $12 + $13}')))
    r=$((r + $(awk '/^VmRSS:/{print $2}' /proc/"$p"/status)))
  done
  echo "$t $r"
}
# cost_begin NAME=PID... / cost_end LABEL COUNT UNIT NAME=PID...: each process's CPU seconds between the two, per
# 1,000 requests (UNIT 1000req, COUNT requests) or per GiB (UNIT GiB, COUNT MiB), and its RSS before and after.
declare -A cost0
cost_begin() { local np; for np in "$@"; do cost0[${np%%=*}]=$(ticks_rss "${np#*=}"); done; }
cost_end() {
  local label=$1 n=$2 unit=$3 np name before after; shift 3
  for np in "$@"; do
    name=${np%%=*}; before=${cost0[$name]}; after=$(ticks_rss "${np#*=}")
    awk -v l="$label" -v who="$name" -v n="$n" -v u="$unit" -v hz="$hz" -v b="$before" -v a="$after" -v ld="$(load)" 'BEGIN {
      split(b, x, " "); split(a, y, " "); cpu = (y[1] - x[1]) / hz; per = (u == "GiB" ? 1024 : 1000)
      printf "  %s %s cpu=%.2fs cpu_per_%s=%s rss_before=%.1fMiB rss_after=%.1fMiB %s\n", l, who, cpu, u,
        (n > 0 ? sprintf("%.3fs", cpu * per / n) : "?"), x[2] / 1024, y[2] / 1024, ld }'
  done
}
agents="out=$pid_out in=$pid_in"
# measure: "NAME=PID ..." whose cost wrk_one and grpc_one report over their measured run (not the warm-up); empty: none.
measure=

# wrk_one LABEL PORT [wrk args...]: warm-up, then a measured run; prints rps p50 p99 and wrk's errors, sets $reqs.
wrk_one() {
  local label=$1 port=$2 f="$tmp/wrk-$1.txt" rps p50 p99 errs; shift 2
  curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "$label no answer on port $port"; errors=1; reqs=0; return; }
  taskset -c 0 wrk -t1 -c"$c" -d2s "$@" "http://127.0.0.1:$port/" >/dev/null 2>&1
  [ -n "$measure" ] && cost_begin $measure
  taskset -c 0 wrk -t1 -c"$c" -d"${s}s" --latency "$@" "http://127.0.0.1:$port/" >"$f" 2>&1
  rps=$(awk '/Requests\/sec/{print $2}' "$f"); p50=$(awk '$1=="50%"{print $2}' "$f"); p99=$(awk '$1=="99%"{print $2}' "$f")
  reqs=$(awk '/requests in/{print $1}' "$f")
  errs=$(awk '/Non-2xx|Socket errors/{printf "%s ", $0}' "$f"); [ -n "$errs" ] && errors=1
  echo "$label rps=$rps p50=$p50 p99=$p99 $errs$(load)"
  [ -n "$measure" ] && cost_end "$label" "$reqs" 1000req $measure
  return 0
}

# out_conns PORT: connections agent out accepted so far on that upstream port.
out_conns() {
  node "$cli" status --agent 127.0.0.1:$P_OUT_ADMIN --state-dir "$tmp/out-state" -o json 2>/dev/null |
    node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>{const u=(JSON.parse(s).upstreams??[]).find((x)=>x.listen.endsWith(":"+process.argv[1]));process.stdout.write(String(u?.stats?.connections??0))})' "$1"
}

# grpc_one LABEL PORT: h2load warm-up, then a measured run of unary calls; req/s, mean, p50, p99 (from its log file).
grpc_one() {
  local label=$1 port=$2 f="$tmp/h2load-$1.txt" log="$tmp/h2load-$1.log" rps ok mean pct
  local args=(-c "${GRPC_CONNS:-4}" -m "${GRPC_STREAMS:-8}" -H 'content-type: application/grpc' -H 'te: trailers' -d "$grpc_data")
  taskset -c 0 h2load "${args[@]}" -n 2000 "http://127.0.0.1:$port/bench.Echo/Call" >/dev/null 2>&1
  [ -n "$measure" ] && cost_begin $measure
  taskset -c 0 h2load "${args[@]}" -D "$s" --log-file="$log" "http://127.0.0.1:$port/bench.Echo/Call" >"$f" 2>&1
  rps=$(awk '/^finished in/{print $4}' "$f"); ok=$(awk '/^requests:/{print $8, $10, $12}' "$f"); mean=$(awk '/^time for request:/{print $6}' "$f")
  reqs=$(awk '/^requests:/{print $8}' "$f")
  pct=$(awk '{print $3}' "$log" 2>/dev/null | sort -n | awk '{v[NR]=$1} END { if (NR) printf "p50=%.2fms p99=%.2fms", v[int(NR*0.5)+1]/1000, v[int(NR*0.99)+1]/1000 }')
  # grpc-status is in the trailers, which h2load does not check: the sample call below does.
  set -- $ok; [ "${1:-0}" -gt 0 ] && [ "${2:-1}" = 0 ] && [ "${3:-1}" = 0 ] || errors=1
  echo "$label rps=$rps mean=$mean $pct succeeded/failed/errored=${ok// //} $(load)"
  [ -n "$measure" ] && cost_end "$label" "$reqs" 1000req $measure
  return 0
}

for sec in $sections; do case $sec in
grpc)
  echo "== gRPC unary (h2load -c ${GRPC_CONNS:-4} -m ${GRPC_STREAMS:-8}, ${s} s after 2,000 warm-up calls; 64-byte messages)"
  st=$(node -e '
    const h2 = require("node:http2"); const s = h2.connect("http://127.0.0.1:" + process.argv[1]);
    const r = s.request({ ":method": "POST", ":path": "/bench.Echo/Call", "content-type": "application/grpc", te: "trailers" });
    const done = (what) => { console.log(what); process.exit(0); };
    setTimeout(() => done("no answer within 10 s"), 10000); s.on("error", (e) => done("error " + e.message));
    r.on("trailers", (t) => done("grpc-status=" + t["grpc-status"])); r.on("data", () => {});
    r.on("error", (e) => done("error " + e.message)); r.on("close", () => done("closed without trailers"));
    r.end(require("fs").readFileSync(process.argv[2]));
  ' $P_GRPC_UP "$grpc_data")
  echo "one call through the agents: $st"; [ "$st" = grpc-status=0 ] || errors=1
  measure="grpc-server=$pid_grpc_app" grpc_one grpc-direct $P_GRPC_APP
  measure="$agents grpc-server=$pid_grpc_app" grpc_one grpc-mesh-agent $P_GRPC_UP
  ;;
bulk)
  mib=${BULK_MIB:-256}; runs=${BULK_RUNS:-3}
  echo "== TCP bulk ($mib MiB per connection, $runs connections one after another, median and min-max)"
  bulk_one() { # LABEL PORT
    local out; out=$(taskset -c 0 node "$root/dist/bench/bulk.js" source "$2" "$mib" "$runs" 2>&1) || errors=1
    echo "$1 $out $(load)"
  }
  bulk_one bulk-direct $P_SINK
  command -v stunnel >/dev/null && bulk_one bulk-stunnel-l4 $P_ST_OUT
  cost_begin $agents; bulk_one bulk-mesh-agent $P_BULK_UP; cost_end bulk-mesh-agent $((mib * runs)) GiB $agents
  ;;
conn)
  echo "== new connections (wrk -t1 -c$c -H 'Connection: close': one request per connection, ${s} s after 2 s warm-up)"
  wrk_one conn-direct $P_APP -H 'Connection: close'
  wrk_one conn-nginx-pair $P_NGX_OUT -H 'Connection: close'
  for up in http:$P_UPSTREAM tcp:$P_TCP_UP; do
    port=${up#*:} c0=$(out_conns "${up#*:}")
    measure=$agents wrk_one "conn-mesh-agent-${up%%:*}" "$port" -H 'Connection: close'
    c1=$(out_conns "$port")
    echo "  agent out accepted $((c1 - c0)) connections on :$port in warm-up and run (wrk: $reqs requests in the run)"
  done
  ;;
cost)
  echo "== cost per request (wrk -t1 -c$c keep-alive, ${s} s after 2 s warm-up; CPU of each process over the measured run)"
  measure=$agents wrk_one cost-mesh-agent $P_UPSTREAM
  measure="nginx-out=$pid_ngx_out nginx-in=$pid_ngx_in" wrk_one cost-nginx-pair $P_NGX_OUT
  ;;
esac; done

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
agent_report
[ $errors = 0 ] && ok=1
[ $errors = 0 ] || { echo "errors during the run: see the lines above and $tmp"; exit 1; }
