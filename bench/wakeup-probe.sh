#!/usr/bin/env bash
# bench/wakeup-probe.sh: how much of metanet's idle round-trip time is wake-up latency.
# Two metanetd (release build) in fresh namespaces on a veth pair (198.18.77.0/24),
# connected, then 300 pings at 200 ms, 20 ms and 2 ms intervals.  PIN=0 pins both
# daemons and ping to CPU 0 (no cross-CPU wake-ups); CIPHER=... sets --cipher.
# Needs root.  Results: docs/benchmarks.md ("Latency is wake-up latency").
set -u
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
[ "$(id -u)" = 0 ] || { echo "wakeup-probe.sh needs root" >&2; exit 1; }
W=$(mktemp -d /tmp/mnwake.XXXX)
A=mnwake$$a B=mnwake$$b
cleanup() {
    pkill -f "$W/" 2>/dev/null
    sleep 0.5
    ip netns del "$A" 2>/dev/null
    ip netns del "$B" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$A" && ip netns add "$B" || exit 1
ip link add "va$$" netns "$A" type veth peer name "vb$$" netns "$B" || exit 1
ip -n "$A" link set lo up && ip -n "$B" link set lo up
ip -n "$A" addr add 198.18.77.1/24 dev "va$$" && ip -n "$B" addr add 198.18.77.2/24 dev "vb$$"
ip -n "$A" link set "va$$" up && ip -n "$B" link set "vb$$" up
: >"$W/c.toml"
for s in a b; do
    ns=$A
    [ "$s" = b ] && ns=$B
    ip netns exec "$ns" env METANET_LOG=warn ${PIN:+taskset -c "$PIN"} "$BIN/metanetd" --config "$W/c.toml" \
        --state-dir "$W/$s" --socket "$W/$s.sock" --tun mnw0 --mtu 1420 ${CIPHER:+--cipher "$CIPHER"} >"$W/$s.log" 2>&1 &
done
for _ in $(seq 50); do [ -S "$W/a.sock" ] && [ -S "$W/b.sock" ] && break; sleep 0.1; done
J=$(timeout 10 "$BIN/metanet" --socket "$W/b.sock" id show --json) || exit 1
ADDR=$(printf '%s' "$J" | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
IP=$(printf '%s' "$J" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ipv6"])')
timeout 20 ip netns exec "$A" "$BIN/metanet" --socket "$W/a.sock" connect "$ADDR" --endpoint 198.18.77.2:51820 >/dev/null || exit 1
timeout 10 ip netns exec "$A" ping -c 3 -W 2 "$IP" >/dev/null || { echo "no tunnel" >&2; exit 1; }
for iv in 0.2 0.02 0.002; do
    echo "interval $iv s: $(timeout 120 ip netns exec "$A" ${PIN:+taskset -c "$PIN"} ping -n -q -c "${N:-300}" -i "$iv" "$IP" | tail -1)"
done
