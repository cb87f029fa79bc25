#!/usr/bin/env bash
# Build metanet and its Debian package, install the package, start two daemons from
# it (/usr/bin/metanetd) in two throw-away network namespaces joined by a veth pair
# (198.18.77.1/.2), connect them by address + endpoint, ping across the overlay, show
# the peers and scrape one daemon's Prometheus endpoint. Everything is removed on exit,
# the package too when this script installed it (keep it with --keep-package). Needs
# root, and a Rust toolchain (rustup, Rust >= 1.85); installs iproute2, ping, a C
# compiler, nftables, python3 and binutils if missing.
#
#   scripts/demo.sh [--keep-package]
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep-package) KEEP=1 ;;
        -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (network namespaces): sudo $0" >&2; exit 1; }
export PATH="$PATH:$HOME/.cargo/bin"
command -v cargo >/dev/null || {
    echo "demo.sh needs cargo (Rust >= 1.85): install it with rustup (https://rustup.rs), then rerun" >&2
    exit 1
}
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v nft >/dev/null || need+=(nftables)
command -v python3 >/dev/null || need+=(python3)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release --locked --bins
echo "== the Debian package"
packaging/deb.sh --no-build
INSTALLED=0
if dpkg-query -W -f='${db:Status-Status}' metanet 2>/dev/null | grep -qx installed; then
    echo "== metanet is installed already: upgrading it in place (and keeping it)"
else
    INSTALLED=1
fi
dpkg -i target/debian/metanet_*.deb >/dev/null
echo "== installed: $(dpkg-query -W -f='${Package} ${Version}, ${Installed-Size} KiB' metanet)"
BIN=/usr/bin
W=$(mktemp -d)
A=mndemo-a-$$ B=mndemo-b-$$
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$rc" != 0 ]; then
        for s in a b; do
            [ -s "$W/$s.log" ] && { echo "== metanetd $s log:" >&2; tail -n 20 "$W/$s.log" >&2; }
        done
    fi
    for p in "${PA:-}" "${PB:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    for _ in $(seq 30); do
        kill -0 "${PA:-0}" 2>/dev/null || kill -0 "${PB:-0}" 2>/dev/null || break
        sleep 0.1
    done
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$W"
    if [ "${INSTALLED:-0}" = 1 ] && [ "$KEEP" = 0 ]; then
        echo "== removing the package (keep it with --keep-package)"
        dpkg --purge metanet >/dev/null
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ip netns add "$A"; ip netns add "$B"
ip link add mnd-a netns "$A" type veth peer name mnd-b netns "$B"
ip -n "$A" addr add 198.18.77.1/24 dev mnd-a; ip -n "$B" addr add 198.18.77.2/24 dev mnd-b
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set mnd-a up; ip -n "$B" link set mnd-b up
# --config /dev/null: /etc/metanet/metanetd.toml is the system service's, not the demo's
NO_COLOR=1 ip netns exec "$A" "$BIN/metanetd" --config /dev/null --state-dir "$W/a" --socket "$W/a.sock" --tun mn-demo --metrics-listen 127.0.0.1:9474 2>"$W/a.log" & PA=$!
NO_COLOR=1 ip netns exec "$B" "$BIN/metanetd" --config /dev/null --state-dir "$W/b" --socket "$W/b.sock" --tun mn-demo 2>"$W/b.log" & PB=$!
for s in a b; do
    for _ in $(seq 100); do [ -S "$W/$s.sock" ] && break; sleep 0.1; done
    [ -S "$W/$s.sock" ] || { echo "metanetd $s did not open its control socket within 10 s" >&2; exit 1; }
done
mn() { local side=$1; shift; ip netns exec "$([ "$side" = a ] && echo "$A" || echo "$B")" "$BIN/metanet" --socket "$W/$side.sock" "$@"; }
field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p"; } # one string field of `--json` output
echo "== host A"; mn a id show
echo "== host B"; mn b id show
ADDR_B=$(mn b id show --json | field address)
IP_B=$(mn b id show --json | field ipv6)
echo "== A: metanet connect $ADDR_B --endpoint 198.18.77.2:51820"
mn a connect "$ADDR_B" --endpoint 198.18.77.2:51820
echo "== A: ping -6 $IP_B (B's overlay address)"
ip netns exec "$A" ping -6 -c 4 -i 0.3 -W 2 "$IP_B"
echo "== A: metanet peers"; mn a peers
echo "== A: its Prometheus endpoint, http://127.0.0.1:9474/metrics (a few series)"
ip netns exec "$A" python3 -c "
import urllib.request
body = urllib.request.urlopen('http://127.0.0.1:9474/metrics', timeout=5).read().decode()
keep = ('metanet_peers_connected', 'metanet_peer_rx_bytes_total', 'metanet_peer_tx_bytes_total', 'metanet_handshakes_processed_total')
print('\\n'.join(l for l in body.splitlines() if l.startswith(keep)))
"
