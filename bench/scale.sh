#!/usr/bin/env bash
# bench/scale.sh: metanetd with thousands of idle sessions beside one busy one
# (issue 13's goal benchmark), in one run on this machine.
#
#   bench/scale.sh [--sessions "0 2000 4000"] [--duration S] [--ping-count N]
#                  [--idle-seconds S] [--status-calls N] [--cli-connects N]
#                  [--cli-parallel N] [--concurrency N] [--flood-rate R]
#                  [--session-wait S] [--fresh-wait S] [--b-overlay-filter on|off]
#                  [--bin-dir DIR] [--flood-bin FILE] [--label TEXT] [--out FILE]
#                  [--no-build] [--keep]
#
# Namespaces mnscale-<pid>-a, -b, -c on one bridge (in mnscale-<pid>-br), underlay
# 198.18.90.1/.2/.3.  Daemon A (measured) in a, daemon B in b, the flood tool in c.
# For each N (ascending; the sessions add up): B creates identities s<i> and connects
# each to A (--cli-connects of them with `metanet connect`, --cli-parallel at a time,
# the rest straight through the control socket, --concurrency clients), waits for the
# sessions (at most --session-wait s, default 60 + N/4), then measures A: RSS per idle
# session, CPU with no traffic (--idle-seconds), ping RTT and iperf3 TCP (1 stream,
# --duration s) from B's default identity, `metanet status --json` times under a
# line-rate stream, and a flood of handshake initiations (mn-flood, --flood-rate per
# second, 0 = unpaced) from c during a stream, with a fresh identity on B connecting
# (it must be up within --fresh-wait s, default 35, the flood lasting that long).
# Prints a table and PASS/FAIL per goal of issue 13 (informative: exit 0 when it could
# measure), JSON lines to bench/results/scale-<date>-<pid>.jsonl (or --out).
# --bin-dir DIR uses metanetd, metanet and mn-flood from DIR and builds nothing
# (default: builds into $ROOT/target/release unless --no-build); --label TEXT goes
# into the run's JSON line (e.g. the commit the binaries were built from). Needs root.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

SESSIONS="0 2000 4000" DURATION=10 PING_COUNT=200 PING_INTERVAL=0.02 IDLE_SECS=10 STATUS_CALLS=20
CLI_CONNECTS=200 CLI_PARALLEL=4 CONC=16 FLOOD_RATE=0 SESSION_WAIT="" B_FILTER=off FRESH_WAIT=35
BIN="" FLOOD_BIN="" OUT="" BUILD=1 KEEP=0 LABEL=""
MAX_PEERS=4096 # proto/src/node.rs Config::default(); metanetd does not change it
usage() { sed -n '2,27s/^# \{0,1\}//p' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --sessions) SESSIONS=${2?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --ping-count) PING_COUNT=${2:?}; shift 2 ;;
        --idle-seconds) IDLE_SECS=${2:?}; shift 2 ;;
        --status-calls) STATUS_CALLS=${2:?}; shift 2 ;;
        --cli-connects) CLI_CONNECTS=${2:?}; shift 2 ;;
        --cli-parallel) CLI_PARALLEL=${2:?}; shift 2 ;;
        --concurrency) CONC=${2:?}; shift 2 ;;
        --flood-rate) FLOOD_RATE=${2:?}; shift 2 ;;
        --session-wait) SESSION_WAIT=${2:?}; shift 2 ;;
        --fresh-wait) FRESH_WAIT=${2:?}; shift 2 ;;
        --b-overlay-filter) B_FILTER=${2:?}; shift 2 ;;
        --bin-dir) BIN=${2:?}; BUILD=0; shift 2 ;;
        --flood-bin) FLOOD_BIN=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --label) LABEL=${2?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "scale.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$PING_COUNT" "$IDLE_SECS" "$STATUS_CALLS" "$CLI_PARALLEL" "$CONC" "$FRESH_WAIT" ${SESSION_WAIT:+"$SESSION_WAIT"}; do
    case "$n" in '' | *[!0-9]* | 0) echo "scale.sh: counts and durations are positive integers" >&2; exit 2 ;; esac
done
for n in "$CLI_CONNECTS" "$FLOOD_RATE"; do
    case "$n" in '' | *[!0-9]*) echo "scale.sh: --cli-connects and --flood-rate are integers >= 0" >&2; exit 2 ;; esac
done
case "$B_FILTER" in on | off) ;; *) echo "scale.sh: --b-overlay-filter is on or off" >&2; exit 2 ;; esac
# the session counts, ascending and unique; 0 (the baseline) is always measured first
SESSIONS=$(for n in 0 $SESSIONS; do
    case "$n" in *[!0-9]*) echo "scale.sh: --sessions takes non-negative integers, not '$n'" >&2; exit 2 ;; esac
    echo "$((10#$n))"
done | sort -n | uniq | tr '\n' ' ') || exit 2
[ "$(id -u)" = 0 ] || { echo "scale.sh needs root (network namespaces): sudo $0" >&2; exit 1; }

exec 3>&2 # the log: stderr as it was at the start
log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
has() { command -v "$1" >/dev/null 2>&1; }
for c in iperf3 ping ip ss python3 timeout xargs flock; do has "$c" || { log "'$c' is missing"; exit 1; }; done

if [ -z "$BIN" ]; then
    BIN=$ROOT/target/release
    if [ "$BUILD" = 1 ]; then
        log "cargo build --release (metanetd, metanet), then mn-flood"
        (cd "$ROOT" && timeout 3600 cargo build --release --locked -p metanet-daemon -p metanet-cli --bins >&2) ||
            { log "release build failed"; exit 1; }
        (cd "$ROOT" && timeout 3600 cargo build --release --locked -p metanet-tests --bin mn-flood >&2) ||
            log "mn-flood did not build: the flood is not measured"
    fi
fi
BIN=$(cd "$BIN" 2>/dev/null && pwd) || { log "no directory $BIN"; exit 1; }
[ -n "$FLOOD_BIN" ] || FLOOD_BIN=$BIN/mn-flood
[ -x "$BIN/metanetd" ] && [ -x "$BIN/metanet" ] || { log "no metanetd and metanet in $BIN (build them, or --bin-dir)"; exit 1; }
[ -x "$FLOOD_BIN" ] || { log "no flood tool $FLOOD_BIN: the flood is not measured"; FLOOD_BIN=""; }
CLIENT=$HERE/scale_client.py
[ -r "$CLIENT" ] || { log "missing $CLIENT"; exit 1; }

# One run at a time (also against bench/run.sh): two would measure each other.
CACHE=${METANET_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metanet-bench}
mkdir -p "$CACHE"
exec 9>"$CACHE/run.lock"
flock -n 9 || { log "another benchmark holds $CACHE/run.lock"; exit 1; }

# ---- run state, and teardown on every exit path ---------------------------------------
RUN_ID=scale-$(date -u +%Y%m%dT%H%M%SZ)-$$
[ -n "$OUT" ] || OUT=$HERE/results/$RUN_ID.jsonl
mkdir -p "$(dirname "$OUT")" || exit 1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mnscale.XXXXXX") || exit 1
NS_BR=mnscale-$$-br NS_A=mnscale-$$-a NS_B=mnscale-$$-b NS_C=mnscale-$$-c
UNDER_A=198.18.90.1 UNDER_B=198.18.90.2 UNDER_C=198.18.90.3
PORT=51820 TUN=mns0
SOCK_A=$WORK/a.sock SOCK_B=$WORK/b.sock
PIDS=$WORK/pids # "pid starttime name" of the daemons
AUX=$WORK/aux   # the same for helpers (iperf3, ping, flood)
: >"$PIDS"
: >"$AUX"
STEP_DIR=$WORK

starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }
alive() { [ -n "$2" ] && [ "$(starttime "$1")" = "$2" ]; }

# spawn FILE NS NAME CMD...: CMD in namespace NS in the background, tracked in FILE
spawn() {
    local file=$1 ns=$2 name=$3 pid
    shift 3
    ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid $(starttime "$pid") $name" >>"$file"
}
# stop FILE: TERM every process listed, wait at most 5 s, then KILL the rest
stop() {
    local pid st name left
    while read -r pid st name; do alive "$pid" "$st" && kill -TERM "$pid" 2>/dev/null; done <"$1"
    for _ in $(seq 50); do
        left=0
        while read -r pid st name; do alive "$pid" "$st" && left=1; done <"$1"
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    while read -r pid st name; do
        alive "$pid" "$st" && { log "killing $name ($pid)"; kill -KILL "$pid" 2>/dev/null; }
    done <"$1"
    : >"$1"
}
# bounded SECONDS CMD...: CMD in the background under a time limit, tracked; wait for it
bounded() {
    local secs=$1 pid rc
    shift
    timeout -k 2 "$secs" "$@" &
    pid=$!
    echo "$pid $(starttime "$pid") bounded" >>"$AUX"
    wait "$pid"
    rc=$?
    sed -i "/^$pid /d" "$AUX"
    return $rc
}
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF "$1"; }
topo_down() {
    local ns
    for ns in "$NS_A" "$NS_B" "$NS_C" "$NS_BR"; do ns_exists "$ns" && ip netns del "$ns" 2>/dev/null; done
    return 0
}
cleanup() {
    trap - EXIT INT TERM
    stop "$AUX"
    stop "$PIDS"
    topo_down
    if [ "$KEEP" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

wait_for() { # wait_for SECONDS WHAT CMD...: poll CMD every 0.1 s
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "timed out after ${secs}s waiting for $what"
    return 1
}

topo_up() {
    local s ns ip
    ip netns add "$NS_BR" && ip -n "$NS_BR" link set lo up &&
        ip -n "$NS_BR" link add br0 type bridge && ip -n "$NS_BR" link set br0 up || return 1
    for s in a b c; do
        case $s in a) ns=$NS_A ip=$UNDER_A ;; b) ns=$NS_B ip=$UNDER_B ;; c) ns=$NS_C ip=$UNDER_C ;; esac
        ip netns add "$ns" && ip -n "$ns" link set lo up &&
            ip link add eth0 netns "$ns" type veth peer name "mns$$$s" netns "$NS_BR" &&
            ip -n "$NS_BR" link set "mns$$$s" master br0 up &&
            ip -n "$ns" addr add "$ip/24" dev eth0 && ip -n "$ns" link set eth0 up || return 1
    done
    wait_for 10 "the underlay" timeout 2 ip netns exec "$NS_B" ping -n -c1 -W1 "$UNDER_A" &&
        wait_for 10 "the underlay" timeout 2 ip netns exec "$NS_C" ping -n -c1 -W1 "$UNDER_A"
}

cl() { timeout -k 2 "${CL_TIMEOUT:-60}" python3 "$CLIENT" "$@"; } # the socket client, bounded
jget() { python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k] if isinstance(v, dict) else v[int(k)]
print("" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else v)' "$1"; }
mn() { timeout -k 2 "${MN_TIMEOUT:-20}" "$BIN/metanet" --socket "$1" "${@:2}"; } # the CLI; a Unix socket needs no namespace

daemon_pid() { awk -v n="metanetd-$1" '$3 == n {print $1; exit}' "$PIDS"; }
daemon_alive() { local p s; read -r p s _ < <(awk -v n="metanetd-$1" '$3 == n' "$PIDS"); alive "$p" "$s"; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }
# CPU time of a process, all threads, in ns (schedstat: finer than the ticks of /proc/PID/stat)
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }

start_daemons() {
    local s ns
    printf 'dns-system = "off"\n' >"$WORK/a.toml"
    printf 'dns-system = "off"\n' >"$WORK/b.toml"
    [ "$B_FILTER" = off ] && echo 'overlay-filter = false' >>"$WORK/b.toml"
    for s in a b; do
        ns=$NS_A
        [ "$s" = b ] && ns=$NS_B
        spawn "$PIDS" "$ns" "metanetd-$s" env METANET_LOG=warn NO_COLOR=1 "$BIN/metanetd" --config "$WORK/$s.toml" \
            --state-dir "$WORK/state-$s" --socket "$WORK/$s.sock" --port "$PORT" --tun "$TUN" --mtu 1420 \
            --dns-listen 127.0.0.1:5353 --dht-port 51821
    done
    wait_for 20 "metanetd control sockets" cl req "$SOCK_A" status && wait_for 20 "B's control socket" cl req "$SOCK_B" status
}

# ---- measurements ---------------------------------------------------------------------
info() { printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')" >>"$STEP_DIR/info"; }
fail() { log "N=$STEP_N: $*"; info error "$*"; }

iperf_listening() { ip netns exec "$NS_A" ss -Hltn 'sport = :5201' | grep -q .; }
# iperf_start NAME SECONDS: a one-off iperf3 server in A, the client in B (B's default
# identity, 1 TCP stream) in the background; iperf_end waits for it (bounded).
iperf_start() {
    local name=$1 secs=$2
    ip netns exec "$NS_A" timeout -k 2 $((secs + 40)) iperf3 -s -1 -p 5201 >"$STEP_DIR/$name-server.log" 2>&1 </dev/null &
    echo "$! $(starttime $!) iperf3-server" >>"$AUX"
    wait_for 10 "iperf3 server" iperf_listening || return 1
    IPERF_PID=""
    ip netns exec "$NS_B" timeout -k 2 $((secs + 30)) iperf3 -c "$IPV6_A" -B "$IPV6_B" -p 5201 -t "$secs" -J \
        --connect-timeout 5000 >"$STEP_DIR/$name.json" 2>"$STEP_DIR/$name.err" </dev/null &
    IPERF_PID=$!
    echo "$IPERF_PID $(starttime $IPERF_PID) iperf3-client" >>"$AUX"
}
iperf_end() { # iperf_end NAME: IPERF_GBPS = the throughput in Gbit/s (receiver side), or empty
    local name=$1
    wait "$IPERF_PID" 2>/dev/null
    sed -i "/^$IPERF_PID /d" "$AUX"
    for _ in $(seq 30); do iperf_listening || break; sleep 0.1; done
    IPERF_GBPS=$(python3 - "$STEP_DIR/$name.json" <<'PY' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1]))
print("%.3f" % (r["end"]["sum_received"]["bits_per_second"] / 1e9))
PY
)
}
iperf() { # iperf NAME SECONDS: both of the above
    IPERF_GBPS=""
    iperf_start "$1" "$2" || return 1
    iperf_end "$1"
}

counters() { cl req "${1:-$SOCK_A}" status | python3 -c 'import json,sys; print(json.dumps(dict(json.load(sys.stdin)["result"]["counters"])))'; }

counter_delta() { # counter_delta BEFORE AFTER: the counters that changed, as JSON
    python3 -c 'import json,sys; a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({k: v - a.get(k, 0) for k, v in b.items() if v != a.get(k, 0)}))' "$1" "$2" 2>/dev/null
}

# step N: bring the idle sessions up to N, then measure
step() {
    local n=$1 add=$((n - CURRENT)) from=$CURRENT pid_a pid_b t0 t1 k rest wait_s g r rss0 c0 c1 b0 b1 ka0 kb0
    STEP_N=$n STEP_DIR=$WORK/n$n
    mkdir -p "$STEP_DIR"
    : >"$STEP_DIR/info"
    info n "$n"
    info added "$add"
    info time "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    info loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
    pid_a=$(daemon_pid a) pid_b=$(daemon_pid b)
    if [ "$n" -ge "$MAX_PEERS" ]; then
        log "N=$n: A holds N+1 peers (and one per earlier flood check), more than max_peers $MAX_PEERS of this build: connects beyond it are refused"
        info warning "N + 1 exceeds max_peers $MAX_PEERS"
    fi
    if [ "$add" -gt 0 ]; then
        log "N=$n: $add identities on B"
        CL_TIMEOUT=$((60 + add)) cl id-new "$SOCK_B" s "$from" "$n" "$CONC" >"$STEP_DIR/id_new.json" ||
            fail "id new on B did not finish"
        info id_new_json "$(cat "$STEP_DIR/id_new.json")"
        rss0=$(rss_kib "$pid_a")
        info rss_before_kib "$rss0"
        # the connects: the first ones with the CLI, the rest through the socket
        k=$CLI_CONNECTS
        [ "$k" -gt "$add" ] && k=$add
        rest=$((add - k))
        log "N=$n: connecting $add identities to A ($k with the CLI, $CLI_PARALLEL at a time; $rest through the socket, $CONC clients)"
        ka0=$(counters) kb0=$(counters "$SOCK_B")
        t0=$(date +%s.%N)
        if [ "$k" -gt 0 ]; then
            seq "$from" $((from + k - 1)) | bounded $((60 + k)) xargs -P "$CLI_PARALLEL" -I{} \
                timeout -k 2 30 "$BIN/metanet" --socket "$SOCK_B" connect "$ADDR_A" --endpoint "$UNDER_A:$PORT" --identity s{} \
                >/dev/null 2>"$STEP_DIR/cli_connect.err"
            r=$?
            t1=$(date +%s.%N)
            info cli_connects "$k"
            info cli_connect_rc "$r"
            info cli_connect_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')"
            [ "$r" = 0 ] || fail "some CLI connects failed (xargs rc $r): $(head -c 300 "$STEP_DIR/cli_connect.err")"
        fi
        if [ "$rest" -gt 0 ]; then
            CL_TIMEOUT=$((60 + rest)) cl connect "$SOCK_B" "$ADDR_A" "$UNDER_A:$PORT" s $((from + k)) "$n" "$CONC" \
                >"$STEP_DIR/connect.json" || fail "socket connects did not finish"
            info connect_json "$(cat "$STEP_DIR/connect.json")"
        fi
        wait_s=${SESSION_WAIT:-$((60 + add / 4))}
        log "N=$n: waiting for the sessions (at most ${wait_s}s)"
        CL_TIMEOUT=$((wait_s + 30)) cl wait-connected "$SOCK_B" s "$n" "$wait_s" >"$STEP_DIR/wait.json" ||
            fail "waiting for the sessions failed"
        t1=$(date +%s.%N)
        info sessions_json "$(cat "$STEP_DIR/wait.json")"
        info sessions_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')"
        info connect_counters_a_json "$(counter_delta "$ka0" "$(counters)")"
        info connect_counters_b_json "$(counter_delta "$kb0" "$(counters "$SOCK_B")")"
        [ "$(jget done <"$STEP_DIR/wait.json" 2>/dev/null)" = True ] ||
            fail "only $(jget handshaken <"$STEP_DIR/wait.json" 2>/dev/null) of $n sessions came up within ${wait_s}s"
    fi
    CURRENT=$n
    daemon_alive a || { fail "metanetd A died"; return 1; }
    daemon_alive b || { fail "metanetd B died"; return 1; }
    sleep 2
    info rss_kib "$(rss_kib "$pid_a")"
    info rss_b_kib "$(rss_kib "$pid_b")"
    info peers_a_json "$(cl peers "$SOCK_A")"
    info peers_b_json "$(cl peers "$SOCK_B")"
    # idle CPU: no traffic for IDLE_SECS
    log "N=$n: idle CPU over ${IDLE_SECS}s"
    c0=$(cpu_ns "$pid_a") b0=$(cpu_ns "$pid_b") t0=$(date +%s.%N)
    sleep "$IDLE_SECS"
    c1=$(cpu_ns "$pid_a") b1=$(cpu_ns "$pid_b") t1=$(date +%s.%N)
    info cpu_idle_pct "$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.3f", (b - a) / 1e7 / (t1 - t0)}')"
    info cpu_idle_b_pct "$(awk -v a="$b0" -v b="$b1" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.3f", (b - a) / 1e7 / (t1 - t0)}')"
    # RTT
    log "N=$n: ping ($PING_COUNT) and iperf3 (${DURATION}s)"
    bounded $((PING_COUNT / 10 + 30)) ip netns exec "$NS_B" ping -n -c "$PING_COUNT" -i "$PING_INTERVAL" -W 1 \
        -I "$IPV6_B" "$IPV6_A" >"$STEP_DIR/ping.txt" 2>&1 </dev/null
    info rtt_avg_ms "$(sed -n 's|^rtt .* = [0-9.]*/\([0-9.]*\)/.*|\1|p' "$STEP_DIR/ping.txt")"
    info ping_loss_pct "$(sed -n 's|.* \([0-9.]*\)% packet loss.*|\1|p' "$STEP_DIR/ping.txt")"
    sleep 1
    # throughput
    iperf tcp "$DURATION"
    g=$IPERF_GBPS
    [ -n "$g" ] || fail "iperf3 failed: $(tail -c 300 "$STEP_DIR/tcp.err" 2>/dev/null) $(grep -o '"error":.*' "$STEP_DIR/tcp.json" 2>/dev/null | head -c 200)"
    info gbps "$g"
    sleep 1
    # `metanet status --json` on A under a line-rate stream
    log "N=$n: $STATUS_CALLS x metanet status --json under load"
    r=$(((STATUS_CALLS * 3 + 9) / 10 + 4)) # seconds: 0.1 s between calls, and a margin
    [ "$r" -lt "$DURATION" ] && r=$DURATION
    if iperf_start tcp-status "$r"; then
        sleep 1.5
        CL_TIMEOUT=$((STATUS_CALLS * 11 + 30)) cl time-cli 10 "$STATUS_CALLS" 0.1 "$BIN/metanet" --socket "$SOCK_A" status --json >"$STEP_DIR/status.json" ||
            fail "timing status failed"
        info status_json "$(cat "$STEP_DIR/status.json")"
        iperf_end tcp-status
        info status_load_gbps "$IPERF_GBPS"
    else
        fail "iperf3 for the status test did not start"
    fi
    sleep 1
    flood_check
    daemon_alive a || { fail "metanetd A died"; return 1; }
    daemon_alive b || { fail "metanetd B died"; return 1; }
    info measured 1
}

# the flood: initiations with a valid mac1 at A from c, during a stream from B, while a
# fresh identity on B connects to A
flood_check() {
    local fs=$((DURATION + 8)) fresh=fresh$STEP_N g k0 k1 t0 t1 rc left flood_pid
    [ "$fs" -lt "$FRESH_WAIT" ] && fs=$FRESH_WAIT
    if [ -z "$FLOOD_BIN" ]; then
        info flood_error "no flood tool"
        return 0
    fi
    log "N=$STEP_N: flood (rate $FLOOD_RATE, ${fs}s) during iperf3 (${DURATION}s), a fresh identity connecting"
    k0=$(counters)
    spawn "$AUX" "$NS_C" flood timeout -k 2 $((fs + 10)) "$FLOOD_BIN" "$UNDER_A:$PORT" "$fs" "$FLOOD_RATE" init "$PUB_A" "$NOISE_A"
    mv "$WORK/flood.log" "$STEP_DIR/flood.log" 2>/dev/null # the open file goes on being written
    flood_pid=$(tail -n1 "$AUX" | awk '{print $1}')
    sleep 2
    IPERF_PID=""
    iperf_start tcp-flood "$DURATION" || fail "iperf3 under flood did not start"
    sleep 1
    # the new peer: `metanet connect` (answered once B has A's record), then its handshake;
    # both within fs - 5 s, while the flood goes on
    cl id-new "$SOCK_B" "$fresh" 0 1 1 >"$STEP_DIR/fresh_id.json"
    t0=$(date +%s.%N)
    MN_TIMEOUT=$((fs - 5)) mn "$SOCK_B" connect "$ADDR_A" --endpoint "$UNDER_A:$PORT" --identity "${fresh}0" \
        >"$STEP_DIR/fresh_connect.txt" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    info fresh_connect_rc "$rc"
    info fresh_connect_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')"
    if [ "$rc" = 0 ]; then
        left=$(awk -v a="$t0" -v b="$t1" -v f="$fs" 'BEGIN{l = int(f - 5 - (b - a)); print (l < 1 ? 1 : l)}')
        CL_TIMEOUT=$((left + 10)) cl wait-connected "$SOCK_B" "$fresh" 1 "$left" >"$STEP_DIR/fresh.json"
        t1=$(date +%s.%N)
        info fresh_json "$(cat "$STEP_DIR/fresh.json")"
        info fresh_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')"
    else
        fail "metanet connect of a fresh identity during the flood: rc $rc$([ "$rc" = 124 ] && echo " (no answer within $((fs - 5))s)") $(head -c 200 "$STEP_DIR/fresh_connect.txt")"
        info fresh_json '{"done": false}'
    fi
    IPERF_GBPS=""
    [ -n "${IPERF_PID:-}" ] && iperf_end tcp-flood
    info flood_gbps "$IPERF_GBPS"
    # the flood ends by itself after fs seconds
    for _ in $(seq $(((fs + 15) * 10))); do kill -0 "$flood_pid" 2>/dev/null || break; sleep 0.1; done
    k1=$(counters)
    stop "$AUX"
    info flood_out "$(cat "$STEP_DIR/flood.log" 2>/dev/null)"
    info flood_counters_json "$(counter_delta "$k0" "$k1")"
    # forget the fresh peer on B, so that it is no idle session of the next step
    mn "$SOCK_B" disconnect "$ADDR_A" --identity "${fresh}0" >/dev/null 2>&1
    sleep 3 # out of the load window (1 s) of the flood before anything else is measured
    return 0
}

# ---- the run --------------------------------------------------------------------------
log "run $RUN_ID: N in $SESSIONS-> $OUT (binaries from $BIN)"
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)
python3 - "$RUN_ID" "$(nproc)" "$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)" "$(uname -r)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$SESSIONS" "$DURATION" "$PING_COUNT" "$IDLE_SECS" "$STATUS_CALLS" \
    "$CLI_CONNECTS" "$CLI_PARALLEL" "$CONC" "$FLOOD_RATE" "$B_FILTER" "$BIN" "$("$BIN/metanetd" --version 2>/dev/null | head -n1)" \
    "$COMMIT" "$LABEL" >"$WORK/run.json" <<'EOF'
import json, sys
a = sys.argv[1:]
print(json.dumps({"kind": "run", "run_id": a[0], "nproc": int(a[1]), "cpu": a[2], "kernel": a[3], "loadavg": a[4],
                  "sessions": [int(x) for x in a[5].split()], "duration_s": int(a[6]), "ping_count": int(a[7]),
                  "idle_s": int(a[8]), "status_calls": int(a[9]), "cli_connects": int(a[10]),
                  "cli_parallel": int(a[11]), "concurrency": int(a[12]), "flood_rate": int(a[13]),
                  "b_overlay_filter": a[14] == "on", "bin_dir": a[15], "metanetd_version": a[16],
                  "script_commit": a[17], "label": a[18]}))
EOF
cat "$WORK/run.json" >>"$OUT"
RUN_T0=$(date +%s)
topo_up || { log "could not build the namespaces"; exit 1; }
start_daemons || {
    for f in "$WORK"/*.log; do [ -s "$f" ] && { log "--- $(basename "$f")"; tail -n 5 "$f" >&2; }; done
    exit 1
}
j=$(cl req "$SOCK_A" id_show '{"name":null}')
ADDR_A=$(jget result.address <<<"$j") IPV6_A=$(jget result.ipv6 <<<"$j")
PUB_A=$(jget result.public_key <<<"$j") NOISE_A=$(jget result.noise_key <<<"$j")
j=$(cl req "$SOCK_B" id_show '{"name":null}')
ADDR_B=$(jget result.address <<<"$j") IPV6_B=$(jget result.ipv6 <<<"$j")
[ -n "$ADDR_A" ] && [ -n "$IPV6_B" ] && [ -n "$NOISE_A" ] || { log "could not read the identities"; exit 1; }
# the busy session: B's default identity to A
mn "$SOCK_B" connect "$ADDR_A" --endpoint "$UNDER_A:$PORT" >&2 || { log "B could not connect to A"; exit 1; }
wait_for 30 "the session B -> A" timeout 3 ip netns exec "$NS_B" ping -n -c1 -W1 -I "$IPV6_B" "$IPV6_A" ||
    { log "no overlay ping from B to A"; tail -n 5 "$WORK"/metanetd-*.log >&2; exit 1; }
log "A $ADDR_A ($IPV6_A), B $ADDR_B ($IPV6_B); B's overlay filter $B_FILTER"

CURRENT=0 MEASURED=0
for n in $SESSIONS; do
    step "$n"
    if grep -q '^measured=1' "$STEP_DIR/info"; then MEASURED=$((MEASURED + 1)); fi
    python3 "$HERE/scale_report.py" step "$STEP_DIR/info" >"$WORK/line.json" && cat "$WORK/line.json" >>"$OUT"
    if ! daemon_alive a || ! daemon_alive b; then
        log "a daemon died: the larger N are not measured"
        for f in "$WORK"/metanetd-*.log; do log "--- $(basename "$f")"; tail -n 10 "$f" >&2; done
        break
    fi
done
echo "{\"kind\": \"end\", \"run_id\": \"$RUN_ID\", \"seconds\": $(($(date +%s) - RUN_T0))}" >>"$OUT"
python3 "$HERE/scale_report.py" summary "$OUT" "$RUN_ID" --write
log "JSON lines: $OUT ($(($(date +%s) - RUN_T0)) s)"
[ "$MEASURED" -gt 0 ] || exit 1
exit 0
