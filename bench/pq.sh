#!/usr/bin/env bash
# bench/pq.sh: what the hybrid post-quantum handshake (ML-KEM-512) costs, in one run.
# Two pairs of daemons, each pair in two namespaces joined by a veth: "hybrid" (both
# default, --pq auto) and "classical" (both --pq off). Per mode: the cold connect time
# (`metanet connect ADDRESS --endpoint IP:PORT`, peer removed on both sides before each
# one; median of N), the pq field `metanet peers --json` shows, and single-stream TCP
# over the overlay (iperf3 -6, median of interleaved runs).
#
#   bench/pq.sh [--runs N] [--seconds S] [--connects N] [--no-build]
#
# Release binaries (built unless --no-build). Needs root and iperf3. Prints Markdown for
# docs/benchmarks.md. Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=3 SECS=8 BUILD=1 CONNECTS=15
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=${2:?}; shift 2 ;;
        --seconds) SECS=${2:?}; shift 2 ;;
        --connects) CONNECTS=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/pq.sh needs root (network namespaces)" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "bench/pq.sh needs iperf3" >&2; exit 2; }
if [ "$BUILD" = 1 ]; then
    cargo build --release --locked -p metanet-daemon -p metanet-cli >&2
fi
BIN=$PWD/target/release
for b in metanetd metanet; do
    [ -x "$BIN/$b" ] || { echo "no $BIN/$b: build it or drop --no-build" >&2; exit 2; }
done
T=mnpq$$
W=$(mktemp -d /tmp/metanet-bench-pq.XXXXXX)
NSS=()
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for n in "${NSS[@]}"; do
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
    rm -rf "$W"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM
die() { echo "bench/pq.sh: $*" >&2; exit 1; }
ns() { ip netns add "$1"; ip -n "$1" link set lo up; NSS+=("$1"); }

# pair MODE SUBNET: namespaces $T-MODE1 (.1) and $T-MODE2 (.2) on 198.18.SUBNET.0/24.
pair() {
    ns "$T-${1}1"; ns "$T-${1}2"
    ip link add "$T-${1}a" netns "$T-${1}1" type veth peer name "$T-${1}b" netns "$T-${1}2"
    ip -n "$T-${1}1" addr add "198.18.$2.1/24" dev "$T-${1}a"; ip -n "$T-${1}1" link set "$T-${1}a" up
    ip -n "$T-${1}2" addr add "198.18.$2.2/24" dev "$T-${1}b"; ip -n "$T-${1}2" link set "$T-${1}b" up
}
daemon() { # host dir [metanetd flags]
    local host=$1 dir=$2; shift 2
    mkdir -p "$W/$dir"
    ip netns exec "$host" "$BIN/metanetd" --state-dir "$W/$dir/state" --socket "$W/$dir/s.sock" \
        --tun mnb0 --config /dev/null "$@" >"$W/$dir/log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$W/$dir/s.sock" ] && return; sleep 0.1; done
    echo "metanetd in $host did not start" >&2; cat "$W/$dir/log" >&2; exit 1
}
m() { local dir=$1; shift; timeout 30 "$BIN/metanet" --socket "$W/$dir/s.sock" "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# The pq field of the one peer in `peers --json` (JSON text: "ml-kem-512" or null).
pq_of() { m "$1" --json peers | python3 -c "
import json,sys
p = json.load(sys.stdin)
assert len(p) == 1 and p[0]['connected'], p
print(json.dumps(p[0]['pq']))"; }
npeers() { m "$1" --json peers | python3 -c "import json,sys; print(len(json.load(sys.stdin)))"; }

pair hy 252; pair cl 253
daemon $T-hy1 hy1; daemon $T-hy2 hy2
daemon $T-cl1 cl1 --pq off; daemon $T-cl2 cl2 --pq off
declare -A ADDR ADDR1 IP6 EP
for mode in hy cl; do
    ADDR1[$mode]=$(m ${mode}1 --json id show | field "['address']")
    ADDR[$mode]=$(m ${mode}2 --json id show | field "['address']")
    IP6[$mode]=$(m ${mode}2 --json id show | field "['ipv6']")
    PORT=$(m ${mode}2 --json status | field "['port']")
    EP[$mode]=198.18.$([ $mode = hy ] && echo 252 || echo 253).2:$PORT
done

# Forget the peer on both sides, and wait (bounded) until neither lists it.
forget() { # mode
    [ "$(npeers "${1}1")" = 0 ] || m "${1}1" disconnect "${ADDR[$1]}" >/dev/null
    [ "$(npeers "${1}2")" = 0 ] || m "${1}2" disconnect "${ADDR1[$1]}" >/dev/null
    for _ in $(seq 50); do
        [ "$(npeers "${1}1")" = 0 ] && [ "$(npeers "${1}2")" = 0 ] && return
        sleep 0.1
    done
    die "$1: peers still listed 5 s after disconnect"
}
# One cold connect from MODE1 to MODE2: microseconds; checks the session is up and its
# pq field is WANT (JSON text).
connect_us() { # mode want
    local s e out
    forget "$1"
    sleep 0.2
    s=$(date +%s%N)
    out=$(m "${1}1" --json connect "${ADDR[$1]}" --endpoint "${EP[$1]}")
    e=$(date +%s%N)
    echo "$out" | python3 -c "
import json,sys
p = json.load(sys.stdin)
want = json.loads(sys.argv[1])
if not p['connected']: sys.exit('$1: connect returned without a session: %s' % p)
if p['pq'] != want: sys.exit('$1: pq is %r, expected %r' % (p['pq'], want))" "$2" >&2 \
        || die "$1: connect check failed"
    echo $(( (e - s) / 1000 ))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ms() { awk '{printf "%.1f", $1/1000}'; }

# Cold connects, interleaved by mode.
WANT_hy='"ml-kem-512"' WANT_cl=null
CT_hy=() CT_cl=()
for _ in $(seq "$CONNECTS"); do
    CT_hy+=("$(connect_us hy "$WANT_hy")")
    CT_cl+=("$(connect_us cl "$WANT_cl")")
done
# The mode both sides see on the session left up.
for mode in hy cl; do
    want=WANT_$mode
    for side in 1 2; do
        got=$(pq_of $mode$side)
        [ "$got" = "${!want}" ] || die "$mode$side: peers --json pq is $got, expected ${!want}"
    done
    ip netns exec $T-${mode}1 ping -6 -c 2 -W 2 -q "${IP6[$mode]}" >/dev/null \
        || die "$mode: no ping over the overlay"
done

# One iperf3 stream from namespace $1 to $2's address $3: Gbit/s received.
iperf() {
    ip netns exec "$2" timeout $((SECS + 15)) iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
    local srv=$!
    sleep 0.5
    ip netns exec "$1" timeout $((SECS + 10)) iperf3 -6 -c "$3" -t "$SECS" -J 2>/dev/null \
        | python3 -c "import json,sys; print('%.2f' % (json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9))"
    wait $srv 2>/dev/null || true
}
TP_hy=() TP_cl=()
for _ in $(seq "$RUNS"); do
    TP_hy+=("$(iperf $T-hy1 $T-hy2 "${IP6[hy]}")")
    TP_cl+=("$(iperf $T-cl1 $T-cl2 "${IP6[cl]}")")
done

row() { # mode label
    local -n ct=CT_$1 tp=TP_$1 tpc=TP_cl
    local want=WANT_$1 c_med c_min c_max t_med t_cl
    c_med=$(printf '%s\n' "${ct[@]}" | median | ms)
    c_min=$(printf '%s\n' "${ct[@]}" | sort -n | head -1 | ms)
    c_max=$(printf '%s\n' "${ct[@]}" | sort -n | tail -1 | ms)
    t_med=$(printf '%s\n' "${tp[@]}" | median)
    t_cl=$(printf '%s\n' "${tpc[@]}" | median)
    echo "| $2 | \`${!want}\` | $c_med ($c_min–$c_max) | $t_med (${tp[*]}) | $(python3 -c "print('%.2f' % ($t_med / $t_cl))") |"
}

echo "## Post-quantum handshake: hybrid ML-KEM-512 against classical ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD))"
echo
echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(date -u '+%Y-%m-%d %H:%M:%S UTC')."
echo
echo "Two pairs of daemons, each in two namespaces joined by a veth: hybrid (both \`--pq auto\`, the default) and classical (both \`--pq off\`)."
echo "Cold connect: \`metanet connect ADDRESS --endpoint IP:PORT\` timed from start until it returns with the session up, the peer removed on both sides (\`metanet disconnect\`) before each one; median (min–max) of $CONNECTS per mode, interleaved."
echo "TCP: one iperf3 stream over the overlay (IPv6), ${SECS} s, median of $RUNS interleaved runs."
echo
echo "| mode | pq (\`peers --json\`) | cold connect, ms | TCP Gbit/s (runs) | vs classical |"
echo "| --- | --- | ---: | ---: | ---: |"
row hy hybrid
row cl classical
echo
all_ms() { printf '%s\n' "$@" | awk '{printf "%s%.1f", (NR > 1 ? " " : ""), $1/1000}'; }
echo "Connect times in order (ms): hybrid $(all_ms "${CT_hy[@]}"); classical $(all_ms "${CT_cl[@]}")."
