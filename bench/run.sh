#!/usr/bin/env bash
# bench/run.sh: tunnel throughput and latency of metanet against wireguard-go,
# boringtun, Yggdrasil and a no-crypto TUN-to-TUN forwarder (tunfwd: the ceiling of
# a TUN-based tunnel here), between two network namespaces on this machine, in one run.
# metanet runs with its default cipher policy (AES-256-GCM where the CPU has AES
# instructions); metanet-chacha is the same daemon held to ChaCha20-Poly1305.
#
#   bench/run.sh [--rounds N] [--duration S] [--parallel N] [--ping-count N]
#                [--only metanet,metanet-chacha,wireguard-go,boringtun,yggdrasil,tunfwd]
#                [--out FILE]
#                [--metanet-socket-buffer BYTES] [--no-install] [--no-build] [--keep]
#
# For every round and tunnel: fresh namespaces mnbench-<pid>-a/-b joined by a veth
# pair, the tunnel's two daemons, then iperf3 with 1 TCP stream and with N streams
# (B receives), then ping from A.  Prints a table and the metanet/peer ratio of each
# metric, and appends JSON lines to bench/results/<run id>.jsonl (or --out).
# --metanet-socket-buffer sets metanetd's `socket-buffer` (default: its own default,
# 8 MiB; 106496 gives the kernel's default 208 KiB that the WireGuard daemons use).
# Needs root.  Not part of .ci/run: see docs/benchmarks.md.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

ROUNDS=1 DURATION=10 PARALLEL=4 PING_COUNT=100 PING_INTERVAL=0.02 UP_TIMEOUT=30
TUNNELS="metanet metanet-chacha wireguard-go boringtun yggdrasil tunfwd" MN_CIPHER="" OUT="" INSTALL=1 BUILD=1 KEEP=0 MN_BUFFER=""
usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --parallel) PARALLEL=${2:?}; shift 2 ;;
        --ping-count) PING_COUNT=${2:?}; shift 2 ;;
        --only) TUNNELS=$(echo "${2:?}" | tr ',' ' '); shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --metanet-socket-buffer) MN_BUFFER=${2:?}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$ROUNDS" "$DURATION" "$PARALLEL" "$PING_COUNT" ${MN_BUFFER:+"$MN_BUFFER"}; do
    case "$n" in '' | *[!0-9]* | 0) echo "run.sh: counts and durations are positive integers" >&2; exit 2 ;; esac
done
for t in $TUNNELS; do
    case "$t" in metanet | metanet-chacha | wireguard-go | boringtun | yggdrasil | tunfwd) ;;
        *) echo "run.sh: unknown tunnel '$t' (metanet, metanet-chacha, wireguard-go, boringtun, yggdrasil, tunfwd)" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh needs root (network namespaces): sudo $0" >&2; exit 1; }

exec 3>&2 # the log: stderr as it was at the start, whatever a caller redirected
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
has() { command -v "$1" >/dev/null 2>&1; }
want() { case " $TUNNELS " in *" $1 "*) return 0 ;; esac; return 1; }

CACHE=${METANET_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metanet-bench}
BORINGTUN_VERSION=${BORINGTUN_VERSION:-0.7.1}
export PATH="$CACHE/bin:$HOME/.cargo/bin:$PATH"

# ---- install what is missing --------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
    pkgs=()
    for pc in iperf3:iperf3 iputils-ping:ping iproute2:ip python3:python3 procps:ps; do
        has "${pc#*:}" || pkgs+=("${pc%%:*}")
    done
    if want wireguard-go || want boringtun; then has wg || pkgs+=(wireguard-tools); fi
    if want wireguard-go; then has wireguard-go || pkgs+=(wireguard-go); fi
    if want yggdrasil; then has yggdrasil || pkgs+=(yggdrasil); fi
    if [ ${#pkgs[@]} -gt 0 ]; then
        log "apt-get install ${pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -qq >&2 || log "apt-get update failed"
        timeout 900 apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 ||
            { log "apt-get install failed"; exit 1; }
    fi
    if want boringtun && ! has boringtun-cli; then
        has cargo || { log "cargo is needed to build boringtun-cli"; exit 1; }
        log "cargo install boringtun-cli $BORINGTUN_VERSION into $CACHE (once, a few minutes)"
        timeout 2400 cargo install --locked --root "$CACHE" boringtun-cli --version "$BORINGTUN_VERSION" >&2 ||
            { log "cargo install boringtun-cli failed"; exit 1; }
    fi
fi
for c in iperf3 ping ip ss python3 timeout; do has "$c" || { log "'$c' is missing (run without --no-install)"; exit 1; }; done
want wireguard-go && { has wireguard-go && has wg || { log "wireguard-go or wg is missing"; exit 1; }; }
want boringtun && { has boringtun-cli && has wg || { log "boringtun-cli or wg is missing"; exit 1; }; }
want yggdrasil && { has yggdrasil || { log "yggdrasil is missing"; exit 1; }; }

BIN=$ROOT/target/release
if want metanet || want tunfwd; then
    if [ "$BUILD" = 1 ]; then
        log "cargo build --release (metanetd, metanet, the tun_forward example)"
        (cd "$ROOT" && timeout 3600 cargo build --release --locked --bins -p metanet-daemon -p metanet-cli \
            --example tun_forward >&2) || { log "release build failed"; exit 1; }
    fi
    if want metanet; then
        [ -x "$BIN/metanetd" ] && [ -x "$BIN/metanet" ] || { log "no release binaries in $BIN (run without --no-build)"; exit 1; }
    fi
    if want tunfwd; then
        [ -x "$BIN/examples/tun_forward" ] || { log "no $BIN/examples/tun_forward (run without --no-build)"; exit 1; }
    fi
fi

# One run at a time: two would measure each other.
mkdir -p "$CACHE"
exec 9>"$CACHE/run.lock"
flock -n 9 || { log "another bench/run.sh holds $CACHE/run.lock"; exit 1; }

# ---- run state, and teardown on every exit path ---------------------------------------
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
[ -n "$OUT" ] || OUT=$HERE/results/$RUN_ID.jsonl
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mnbench.XXXXXX")
NS_A=mnbench-$$-a NS_B=mnbench-$$-b
VETH_A=mnb$$a VETH_B=mnb$$b
UNDER_A=198.18.200.1 UNDER_B=198.18.200.2
WG_SOCKDIR=/var/run/wireguard
PIDS=$WORK/pids # "pid starttime name" of the tunnel daemons we started
AUX=$WORK/aux   # the same for helpers (iperf3, ping): stopped too, but not measured
: >"$PIDS"
: >"$AUX"
MEASURE_DIR=""

# start time of a process (field 22 of /proc/PID/stat), to never signal a reused pid
starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }
alive() { [ -n "$2" ] && [ "$(starttime "$1")" = "$2" ]; }

# spawn NS NAME CMD...: run CMD in namespace NS in the background, logged and tracked.
spawn() {
    local ns=$1 name=$2 pid
    shift 2
    ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid $(starttime "$pid") $name" >>"$PIDS"
}

# stop FILE: TERM every process listed in FILE, wait at most 5 s, then KILL the rest.
stop() {
    local pid st name i left
    while read -r pid st name; do alive "$pid" "$st" && kill -TERM "$pid" 2>/dev/null; done <"$1"
    for i in $(seq 50); do
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
stop_all() { stop "$AUX"; stop "$PIDS"; }

# bounded SECONDS NAME CMD...: run CMD in the background (tracked as a helper) under a
# time limit, and wait for it. Unlike a foreground command, `wait` returns at once when
# a signal arrives, so an interrupted run is torn down immediately.
bounded() {
    local secs=$1 name=$2 pid rc
    shift 2
    timeout -k 2 "$secs" "$@" &
    pid=$!
    echo "$pid $(starttime "$pid") $name" >>"$AUX"
    wait "$pid"
    rc=$?
    sed -i "/^$pid /d" "$AUX"
    return $rc
}

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF "$1"; }
topo_down() {
    local ns
    for ns in "$NS_A" "$NS_B"; do ns_exists "$ns" && ip netns del "$ns" 2>/dev/null; done
    rm -f "$WG_SOCKDIR/wgo$$a.sock" "$WG_SOCKDIR/wgo$$b.sock" "$WG_SOCKDIR/bt$$a.sock" "$WG_SOCKDIR/bt$$b.sock"
    return 0
}

cleanup() {
    trap - EXIT INT TERM
    stop_all
    topo_down
    if [ "$KEEP" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# wait_for SECONDS WHAT CMD...: poll CMD every 0.1 s until it succeeds or time is up.
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for i in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "timed out after ${secs}s waiting for $what"
    return 1
}

topo_up() {
    topo_down
    ip netns add "$NS_A" && ip netns add "$NS_B" &&
        ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B" &&
        ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up &&
        ip -n "$NS_A" addr add "$UNDER_A/24" dev "$VETH_A" &&
        ip -n "$NS_B" addr add "$UNDER_B/24" dev "$VETH_B" &&
        ip -n "$NS_A" link set "$VETH_A" up && ip -n "$NS_B" link set "$VETH_B" up &&
        wait_for 10 "the veth underlay" timeout 2 ip netns exec "$NS_A" ping -n -c1 -W1 "$UNDER_B"
}

# ---- the tunnels ----------------------------------------------------------------------
# up_<tunnel> starts both ends (with spawn) and sets OVERLAY_B (what A measures
# against) and DEV_A (the tunnel device in A).  All overlays are IPv6 with MTU 1420,
# carried over UDP on the IPv4 underlay, so the inner packets have the same size.

mn() { # mn a|b ARGS...: the metanet CLI inside namespace A or B
    local side=$1 ns=$NS_A
    shift
    [ "$side" = b ] && ns=$NS_B
    timeout 20 ip netns exec "$ns" "$BIN/metanet" --socket "$WORK/mn-$side.sock" "$@"
}
version_metanet() {
    echo "$("$BIN/metanetd" --version 2>/dev/null | head -n1), socket-buffer ${MN_BUFFER:-default}, cipher ${MN_CIPHER:-auto}"
}
version_metanet-chacha() { MN_CIPHER=chacha20-poly1305 version_metanet; }
up_metanet-chacha() { MN_CIPHER=chacha20-poly1305 up_metanet; }
up_metanet() {
    local side ns json addr_b
    # an explicit config, so that an installed /etc/metanet/metanetd.toml is not read
    : >"$WORK/metanetd.toml"
    [ -n "$MN_BUFFER" ] && echo "socket-buffer = $MN_BUFFER" >>"$WORK/metanetd.toml"
    [ -n "$MN_CIPHER" ] && echo "cipher = \"$MN_CIPHER\"" >>"$WORK/metanetd.toml"
    for side in b a; do
        ns=$NS_A
        [ "$side" = b ] && ns=$NS_B
        spawn "$ns" "metanetd-$side" env METANET_LOG=warn NO_COLOR=1 "$BIN/metanetd" --config "$WORK/metanetd.toml" \
            --state-dir "$WORK/mn-$side" --socket "$WORK/mn-$side.sock" --port 51820 --tun mnb0 --mtu 1420
    done
    wait_for 15 "metanetd control sockets" test -S "$WORK/mn-a.sock" -a -S "$WORK/mn-b.sock" || return 1
    json=$(mn b id show --json) || return 1
    addr_b=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])') || return 1
    OVERLAY_B=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ipv6"])') || return 1
    mn a connect "$addr_b" --endpoint "$UNDER_B:51820" >&2 || return 1
    DEV_A=mnb0
}

# WireGuard (both implementations speak the UAPI socket and are configured with wg).
wg_pair() { # wg_pair IFACE_A IFACE_B PORT START_FUNCTION
    local ifa=$1 ifb=$2 port=$3 start=$4 s
    for s in a b; do
        (umask 077 && timeout 10 wg genkey >"$WORK/wg-$s.key") || return 1
        timeout 10 wg pubkey <"$WORK/wg-$s.key" >"$WORK/wg-$s.pub" || return 1
    done
    "$start" "$NS_A" "$ifa" || return 1
    "$start" "$NS_B" "$ifb" || return 1
    wait_for 15 "UAPI sockets of $ifa and $ifb" test -S "$WG_SOCKDIR/$ifa.sock" -a -S "$WG_SOCKDIR/$ifb.sock" || return 1
    wait_for 10 "device $ifa" ip -n "$NS_A" link show "$ifa" || return 1
    wait_for 10 "device $ifb" ip -n "$NS_B" link show "$ifb" || return 1
    timeout 10 ip netns exec "$NS_A" wg set "$ifa" private-key "$WORK/wg-a.key" listen-port "$port" \
        peer "$(cat "$WORK/wg-b.pub")" allowed-ips fd00:6d6e:6200::2/128 endpoint "$UNDER_B:$port" || return 1
    timeout 10 ip netns exec "$NS_B" wg set "$ifb" private-key "$WORK/wg-b.key" listen-port "$port" \
        peer "$(cat "$WORK/wg-a.pub")" allowed-ips fd00:6d6e:6200::1/128 endpoint "$UNDER_A:$port" || return 1
    ip -n "$NS_A" addr add fd00:6d6e:6200::1/64 dev "$ifa" nodad || return 1
    ip -n "$NS_B" addr add fd00:6d6e:6200::2/64 dev "$ifb" nodad || return 1
    ip -n "$NS_A" link set "$ifa" mtu 1420 up || return 1
    ip -n "$NS_B" link set "$ifb" mtu 1420 up || return 1
    OVERLAY_B=fd00:6d6e:6200::2 DEV_A=$ifa
}
version_wireguard-go() {
    echo "wireguard-go $(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null || wireguard-go --version 2>/dev/null | head -n1)"
}
start_wireguard_go() {
    spawn "$1" "wireguard-go-$2" env LOG_LEVEL=error WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
        wireguard-go -f "$2"
}
up_wireguard-go() { wg_pair "wgo$$a" "wgo$$b" 51821 start_wireguard_go; }
version_boringtun() { boringtun-cli --version 2>/dev/null | head -n1; }
start_boringtun() {
    spawn "$1" "boringtun-$2" boringtun-cli --foreground --disable-drop-privileges \
        --log "$WORK/boringtun-$2.inner.log" --verbosity error "$2"
}
up_boringtun() { wg_pair "bt$$a" "bt$$b" 51822 start_boringtun; }

# Yggdrasil (Debian package): two nodes peered directly over the veth with TCP (B
# listens, A dials), multicast discovery and the admin socket off, its own defaults
# otherwise (its TUN MTU is 65535: TCP links carry whole super-packets).
version_yggdrasil() { echo "yggdrasil $(dpkg-query -W -f '${Version}' yggdrasil 2>/dev/null)"; }
ygg_conf() { # ygg_conf a|b IFNAME OUTFILE
    timeout 20 yggdrasil -genconf -json >"$3.gen" || return 1
    python3 - "$1" "$2" "$3.gen" "$3" "$UNDER_B" <<'PY' || return 1
import json, sys
side, ifname, src, dst, under_b = sys.argv[1:]
c = json.load(open(src))
c.update(MulticastInterfaces=[], AdminListen="none", IfName=ifname, NodeInfoPrivacy=True,
         InterfacePeers={})
peer = "tcp://%s:23456" % under_b
c["Listen"], c["Peers"] = ([peer], []) if side == "b" else ([], [peer])
json.dump(c, open(dst, "w"))
PY
    chmod 600 "$3"
    rm -f "$3.gen"
}
ygg_listening() { ip netns exec "$NS_B" ss -Hltn 'sport = :23456' | grep -q .; }
up_yggdrasil() {
    ygg_conf a "ygg$$a" "$WORK/ygg-a.json" && ygg_conf b "ygg$$b" "$WORK/ygg-b.json" || return 1
    OVERLAY_B=$(timeout 10 yggdrasil -useconffile "$WORK/ygg-b.json" -address) || return 1
    spawn "$NS_B" yggdrasil-b yggdrasil -useconffile "$WORK/ygg-b.json" -logto stdout
    # A dials once at start and then backs off: B must listen first.
    wait_for 15 "yggdrasil listener" ygg_listening || return 1
    spawn "$NS_A" yggdrasil-a yggdrasil -useconffile "$WORK/ygg-a.json" -logto stdout
    wait_for 15 "device ygg$$a" ip -n "$NS_A" link show "ygg$$a" || return 1
    DEV_A=ygg$$a
}

# tunfwd: the ceiling. One process (daemon/examples/tun_forward.rs) holds a TUN device
# in each namespace and copies packets between them with metanetd's tun-rs offload
# and batching, but no crypto and no UDP. Same MTU and IPv6 as the others.
version_tunfwd() { echo "tun_forward example, commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)"; }
up_tunfwd() {
    spawn "$NS_A" tunfwd "$BIN/examples/tun_forward" tfa tfb 1420
    wait_for 10 "tun_forward devices" ip -n "$NS_A" link show tfb || return 1
    ip -n "$NS_A" link set tfb netns "$NS_B" || return 1
    ip -n "$NS_A" addr add fd00:6d6e:6206::1/64 dev tfa nodad || return 1
    ip -n "$NS_B" addr add fd00:6d6e:6206::2/64 dev tfb nodad || return 1
    ip -n "$NS_A" link set tfa up && ip -n "$NS_B" link set tfb up || return 1
    OVERLAY_B=fd00:6d6e:6206::2 DEV_A=tfa
}

# ---- measuring one tunnel -------------------------------------------------------------
info() { printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')" >>"$MEASURE_DIR/info"; }

daemon_ticks() { # user+system clock ticks of every tracked process, all threads
    local pid st name sum=0 t
    while read -r pid st name; do
        alive "$pid" "$st" || continue
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
        sum=$((sum + ${t:-0}))
    done <"$PIDS"
    echo "$sum"
}
udp_drops() { # UDP receive-buffer overflows in both namespaces (/proc/net/snmp)
    local ns sum=0 n
    for ns in "$NS_A" "$NS_B"; do
        n=$(ip netns exec "$ns" awk '$1 == "Udp:" && !h {for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next}
            $1 == "Udp:" {print $col["RcvbufErrors"] + 0; exit}' /proc/net/snmp 2>/dev/null)
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}
host_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
all_alive() {
    local pid st name
    while read -r pid st name; do alive "$pid" "$st" || return 1; done <"$PIDS"
}

iperf_listening() { ip netns exec "$NS_B" ss -Hltn 'sport = :5201' | grep -q .; }
# iperf NAME [ARGS]: one-off iperf3 server in B, client in A; JSON to NAME.json
iperf() {
    local name=$1 spid rc
    shift
    ip netns exec "$NS_B" timeout -k 2 $((DURATION + 40)) iperf3 -s -1 -p 5201 \
        >"$MEASURE_DIR/$name-server.log" 2>&1 </dev/null &
    spid=$!
    echo "$spid $(starttime "$spid") iperf3-server" >>"$AUX"
    if wait_for 10 "iperf3 server" iperf_listening; then
        bounded $((DURATION + 30)) iperf3-client ip netns exec "$NS_A" iperf3 -c "$OVERLAY_B" -p 5201 \
            -t "$DURATION" -J --connect-timeout 5000 "$@" >"$MEASURE_DIR/$name.json" 2>"$MEASURE_DIR/$name.err" </dev/null
        rc=$?
    else
        rc=1
    fi
    # the one-off server ends after its test; give it 3 s, then stop it
    for _ in $(seq 30); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    stop "$AUX"
    wait "$spid" 2>/dev/null
    return $rc
}

measure() { # measure TUNNEL ROUND: prints one JSON line
    local tunnel=$1 round=$2 t0 cpu0 cpu1 host0 host1 drops0
    MEASURE_DIR=$WORK/r$round-$tunnel
    mkdir -p "$MEASURE_DIR"
    info run_id "$RUN_ID"
    info round "$round"
    info tunnel "$tunnel"
    info time "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    info loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
    info duration_s "$DURATION"
    info parallel "$PARALLEL"
    info ping_count "$PING_COUNT"
    info version "$("version_$tunnel")"
    OVERLAY_B="" DEV_A=""
    if ! topo_up; then
        info error "could not build the namespaces"
    elif t0=$(date +%s.%N) && ! "up_$tunnel" >&2; then
        info error "$tunnel did not start"
    elif ! wait_for "$UP_TIMEOUT" "ping $OVERLAY_B through $tunnel" \
        timeout 3 ip netns exec "$NS_A" ping -n -c1 -W1 "$OVERLAY_B"; then
        info error "$OVERLAY_B not reachable through $tunnel within ${UP_TIMEOUT}s"
    else
        info setup_s "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}')"
        info overlay_b "$OVERLAY_B"
        info mtu "$(ip -n "$NS_A" -o link show dev "$DEV_A" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')"
        info daemons "$(wc -l <"$PIDS")"
        cpu0=$(daemon_ticks) host0=$(host_ticks) drops0=$(udp_drops)
        iperf tcp1 || log "$tunnel: iperf3 with 1 stream failed"
        cpu1=$(daemon_ticks) host1=$(host_ticks)
        info udp_drops "$(($(udp_drops) - drops0))"
        info cpu_s "$(awk -v a="$cpu0" -v b="$cpu1" -v c="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b - a) / c}')"
        info host_cpu_s "$(awk -v a="$host0" -v b="$host1" -v c="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b - a) / c}')"
        sleep 1
        iperf tcp4 -P "$PARALLEL" || log "$tunnel: iperf3 with $PARALLEL streams failed"
        sleep 1
        bounded $((PING_COUNT / 10 + 30)) ping ip netns exec "$NS_A" ping -n -c "$PING_COUNT" -i "$PING_INTERVAL" \
            -W 1 "$OVERLAY_B" >"$MEASURE_DIR/ping.txt" 2>&1 </dev/null
        info measured 1
        all_alive && info alive 1 || info alive 0
    fi
    local f
    if ! grep -q '^measured=1' "$MEASURE_DIR/info"; then
        for f in "$WORK"/*.log; do [ -s "$f" ] && { log "--- $(basename "$f")"; tail -n 5 "$f" >&2; }; done
    fi
    stop_all
    topo_down
    for f in "$WORK"/*.log; do [ -e "$f" ] && mv "$f" "$MEASURE_DIR/"; done # kept with --keep
    rm -f "$WORK"/*.sock
    python3 "$HERE/report.py" result "$MEASURE_DIR"
}

# ---- the run --------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
python3 - "$RUN_ID" "$(nproc)" "$cpu_model" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$ROUNDS" "$DURATION" "$PARALLEL" "$PING_COUNT" "$TUNNELS" "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)" "$MN_BUFFER" \
    >>"$OUT" <<'EOF'
import json, sys
a = sys.argv[1:]
print(json.dumps({"kind": "run", "run_id": a[0], "nproc": int(a[1]), "cpu": a[2], "kernel": a[3],
                  "loadavg": a[4], "rounds": int(a[5]), "duration_s": int(a[6]), "parallel": int(a[7]),
                  "ping_count": int(a[8]), "tunnels": a[9].split(), "metanet_commit": a[10],
                  "metanet_socket_buffer": int(a[11]) if a[11] else None}))
EOF
set -- $TUNNELS
N=$#
log "run $RUN_ID: $ROUNDS round(s) of: $TUNNELS (${DURATION}s per iperf3 test) -> $OUT"
for round in $(seq "$ROUNDS"); do
    # rotate the order each round so that no tunnel always goes first
    order=()
    for i in $(seq 0 $((N - 1))); do
        j=$(((i + round - 1) % N + 1))
        order+=("${!j}")
    done
    for tunnel in "${order[@]}"; do
        log "round $round/$ROUNDS: $tunnel"
        measure "$tunnel" "$round" >"$WORK/line.json" # not in a subshell: cleanup sees its state
        cat "$WORK/line.json" >>"$OUT"
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("   ", r.get("tunnel"), "ok" if r.get("ok") else "FAILED: " + r.get("error", "?"), "tcp1", r.get("tcp1_gbps"), "tcp4", r.get("tcp4_gbps"), "rtt avg", r.get("rtt_avg_ms"))' <"$WORK/line.json" >&2
    done
done
python3 "$HERE/report.py" summary "$OUT" "$RUN_ID"
log "JSON lines: $OUT"
