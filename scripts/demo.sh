#!/usr/bin/env bash
# Build metanet, start two daemons in two throw-away network namespaces joined by a
# veth pair (198.18.77.1/.2), connect them by address + endpoint, ping across the
# overlay and show the peers. Everything is removed on exit. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (network namespaces): sudo $0" >&2; exit 1; }
command -v ping >/dev/null || { apt-get update -qq && apt-get install -y -qq iputils-ping iproute2; }
cargo build --release --bins
BIN=$PWD/target/release
W=$(mktemp -d)
A=mndemo-a-$$ B=mndemo-b-$$
cleanup() {
    [ -n "${PA:-}" ] && kill "$PA" 2>/dev/null || true
    [ -n "${PB:-}" ] && kill "$PB" 2>/dev/null || true
    sleep 0.3
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
ip netns add "$A"; ip netns add "$B"
ip link add mnd-a netns "$A" type veth peer name mnd-b netns "$B"
ip -n "$A" addr add 198.18.77.1/24 dev mnd-a; ip -n "$B" addr add 198.18.77.2/24 dev mnd-b
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set mnd-a up; ip -n "$B" link set mnd-b up
ip netns exec "$A" "$BIN/metanetd" --config /dev/null --state-dir "$W/a" --socket "$W/a.sock" --tun mn-demo 2>"$W/a.log" & PA=$!
ip netns exec "$B" "$BIN/metanetd" --config /dev/null --state-dir "$W/b" --socket "$W/b.sock" --tun mn-demo 2>"$W/b.log" & PB=$!
for s in a b; do for _ in $(seq 100); do [ -S "$W/$s.sock" ] && break; sleep 0.1; done; done
mn() { local side=$1; shift; ip netns exec "$([ "$side" = a ] && echo "$A" || echo "$B")" "$BIN/metanet" --socket "$W/$side.sock" "$@"; }
echo "== host A"; mn a id show
echo "== host B"; mn b id show
ADDR_B=$(mn b id show --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
IP_B=$(mn b id show --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ipv6"])')
echo "== A: metanet connect $ADDR_B --endpoint 198.18.77.2:51820"
mn a connect "$ADDR_B" --endpoint 198.18.77.2:51820
echo "== A: ping -6 $IP_B (B's overlay address)"
ip netns exec "$A" ping -6 -c 4 -i 0.3 -W 2 "$IP_B"
echo "== A: metanet peers"; mn a peers
