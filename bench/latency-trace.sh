#!/usr/bin/env bash
# bench/latency-trace.sh: where an idle round trip spends its time in the tunnel
# daemons. Two daemons (metanetd by default, or boringtun-cli with TUNNEL=boringtun)
# in fresh namespaces on a veth pair (198.18.81.0/24), then COUNT pings 20 ms apart
# while ftrace records the daemons' system calls and the scheduler's wake-ups.
# Prints, over all daemon threads, the time from returning from the wait (ppoll,
# epoll_wait) to the first read, and from a read to the next send or write: the
# user-space part of each of the four hops of a round trip.
# TRACE=0: no tracing, only ping summaries, one per interval in INTERVALS (seconds,
# default 0.02), to compare tunnels side by side; PIN=CPU pins the daemons and ping to
# one CPU (no cross-CPU wake-ups); CIPHER=... sets metanetd's --cipher.
# Needs root (and tracefs unless TRACE=0).  Results: docs/benchmarks.md ("Latency").
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$(dirname "$HERE")/target/release}
TUNNEL=${TUNNEL:-metanet} COUNT=${COUNT:-100} INTERVALS=${INTERVALS:-0.02} PIN=${PIN:-}
T=/sys/kernel/tracing
[ "$(id -u)" = 0 ] || { echo "latency-trace.sh needs root" >&2; exit 1; }
TRACE=${TRACE:-1}
[ "$TRACE" = 0 ] || [ -w "$T/trace" ] || { echo "latency-trace.sh needs tracefs at $T" >&2; exit 1; }
export PATH="${METANET_BENCH_CACHE:-$HOME/.cache/metanet-bench}/bin:$PATH"
W=$(mktemp -d /tmp/mnlt.XXXX)
A=mnlt$$a B=mnlt$$b
cleanup() {
    if [ "$TRACE" != 0 ]; then
        echo 0 >"$T/tracing_on"
        for e in raw_syscalls/sys_enter raw_syscalls/sys_exit sched/sched_wakeup sched/sched_switch; do
            echo 0 >"$T/events/$e/enable"
        done
        echo 0 >"$T/events/raw_syscalls/sys_enter/filter"
        echo 0 >"$T/events/raw_syscalls/sys_exit/filter"
    fi
    [ -n "${PIDS:-}" ] && kill $PIDS 2>/dev/null
    sleep 0.5
    ip netns del "$A" 2>/dev/null
    ip netns del "$B" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$A" && ip netns add "$B" || exit 1
ip link add "la$$" netns "$A" type veth peer name "lb$$" netns "$B" || exit 1
ip -n "$A" link set lo up && ip -n "$B" link set lo up
ip -n "$A" addr add 198.18.81.1/24 dev "la$$" && ip -n "$B" addr add 198.18.81.2/24 dev "lb$$"
ip -n "$A" link set "la$$" up && ip -n "$B" link set "lb$$" up
case "$TUNNEL" in
metanet)
    : >"$W/c.toml"
    for s in a b; do
        ns=$A
        [ "$s" = b ] && ns=$B
        ip netns exec "$ns" env METANET_LOG=warn ${PIN:+taskset -c "$PIN"} "$BIN/metanetd" \
            --config "$W/c.toml" --state-dir "$W/$s" --socket "$W/$s.sock" --tun mnlt0 --mtu 1420 \
            ${CIPHER:+--cipher "$CIPHER"} >"$W/$s.log" 2>&1 &
    done
    for _ in $(seq 50); do [ -S "$W/a.sock" ] && [ -S "$W/b.sock" ] && break; sleep 0.1; done
    J=$(timeout 10 "$BIN/metanet" --socket "$W/b.sock" id show --json) || exit 1
    ADDR=$(printf '%s' "$J" | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
    IP=$(printf '%s' "$J" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ipv6"])')
    timeout 20 ip netns exec "$A" "$BIN/metanet" --socket "$W/a.sock" connect "$ADDR" \
        --endpoint 198.18.81.2:51820 >/dev/null || exit 1
    ;;
boringtun)
    for s in a b; do
        (umask 077 && wg genkey >"$W/$s.key") && wg pubkey <"$W/$s.key" >"$W/$s.pub" || exit 1
    done
    ip netns exec "$A" ${PIN:+taskset -c "$PIN"} boringtun-cli --foreground --disable-drop-privileges --verbosity error "lta$$" >/dev/null 2>&1 &
    ip netns exec "$B" ${PIN:+taskset -c "$PIN"} boringtun-cli --foreground --disable-drop-privileges --verbosity error "ltb$$" >/dev/null 2>&1 &
    for _ in $(seq 50); do ip -n "$B" link show "ltb$$" >/dev/null 2>&1 && ip -n "$A" link show "lta$$" >/dev/null 2>&1 && break; sleep 0.1; done
    sleep 0.5
    ip netns exec "$A" wg set "lta$$" private-key "$W/a.key" listen-port 51823 peer "$(cat "$W/b.pub")" \
        allowed-ips fd00:6d6e:6300::2/128 endpoint 198.18.81.2:51823 || exit 1
    ip netns exec "$B" wg set "ltb$$" private-key "$W/b.key" listen-port 51823 peer "$(cat "$W/a.pub")" \
        allowed-ips fd00:6d6e:6300::1/128 endpoint 198.18.81.1:51823 || exit 1
    ip -n "$A" addr add fd00:6d6e:6300::1/64 dev "lta$$" nodad && ip -n "$B" addr add fd00:6d6e:6300::2/64 dev "ltb$$" nodad
    ip -n "$A" link set "lta$$" mtu 1420 up && ip -n "$B" link set "ltb$$" mtu 1420 up
    IP=fd00:6d6e:6300::2
    ;;
*) echo "TUNNEL is metanet or boringtun" >&2; exit 2 ;;
esac
timeout 10 ip netns exec "$A" ping -c 3 -W 2 "$IP" >/dev/null || { echo "no tunnel" >&2; exit 1; }
case "$TUNNEL" in
metanet) PIDS=$(pgrep -f "$W/") ;;
boringtun) PIDS=$(pgrep -f "boringtun-cli.*lt[ab]$$") ;;
esac
if [ "$TRACE" = 0 ]; then
    for iv in $INTERVALS; do
        echo "$TUNNEL, pings $iv s apart: $(timeout 300 ip netns exec "$A" ${PIN:+taskset -c "$PIN"} \
            ping -n -q -c "$COUNT" -i "$iv" "$IP" | tail -1)"
    done
    exit 0
fi
TIDS=$(for p in $PIDS; do ls "/proc/$p/task"; done)
F=""
for t in $TIDS; do F="$F${F:+ || }common_pid == $t"; done
echo 0 >"$T/tracing_on"
echo >"$T/trace"
echo 20000 >"$T/buffer_size_kb"
for e in raw_syscalls/sys_enter raw_syscalls/sys_exit; do
    echo "$F" >"$T/events/$e/filter"
    echo 1 >"$T/events/$e/enable"
done
echo 1 >"$T/events/sched/sched_wakeup/enable"
echo 1 >"$T/events/sched/sched_switch/enable"
echo 1 >"$T/tracing_on"
echo "$TUNNEL: $(timeout 60 ip netns exec "$A" ping -n -q -c "$COUNT" -i 0.02 "$IP" | tail -1)"
echo 0 >"$T/tracing_on"
cp "$T/trace" "$W/trace.txt"
[ -n "${KEEP_TRACE:-}" ] && cp "$W/trace.txt" "$KEEP_TRACE"
python3 - "$W/trace.txt" <<'PY'
import re, statistics, sys
WAIT = {7, 232, 271, 281}       # poll, epoll_wait, ppoll, epoll_pwait
READ = {0, 19, 45, 299}         # read, readv, recvfrom, recvmmsg
SEND = {1, 20, 44, 46, 307}     # write, writev, sendto, sendmsg, sendmmsg
line_re = re.compile(r'^\s*\S+-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): sys_(enter|exit): NR (\d+)')
state, wake, work = {}, [], []
for line in open(sys.argv[1]):
    m = line_re.match(line)
    if not m:
        continue
    tid, t, kind, nr = m.group(1), float(m.group(2)), m.group(3), int(m.group(4))
    s = state.setdefault(tid, {})
    if kind == 'exit' and nr in WAIT:
        s['woke'] = t
    elif kind == 'enter' and nr in READ and 'woke' in s:
        wake.append((t - s.pop('woke')) * 1e6)
    elif kind == 'exit' and nr in READ:
        s['read'] = t
    elif kind == 'enter' and nr in SEND and 'read' in s:
        work.append((t - s.pop('read')) * 1e6)
    elif kind == 'enter' and nr in WAIT:
        s.pop('read', None)
def show(name, v):
    if not v:
        print(f"{name}: no samples")
        return
    v.sort()
    print(f"{name}: median {statistics.median(v):.0f} µs, p10 {v[len(v) // 10]:.0f}, p90 {v[9 * len(v) // 10]:.0f} (n = {len(v)})")
show("wake-up to first read", wake)
show("read to first send or write", work)
PY
