#!/usr/bin/env bash
# bench/containers.sh: namespaces attached to metanetd (`metanet attach`), in one run:
# single-stream TCP host to host through metanet, container to container on two hosts,
# and container to container on one host (local delivery); the time one attach takes
# (median of N); and 100 attachments on one daemon: they all answer a ping, and what
# they cost idle (daemon RSS and CPU over 20 s, against the daemon without them).
#
#   bench/containers.sh [--runs N] [--seconds S] [--no-build]
#
# Release binaries (built unless --no-build). Needs root and iperf3. Prints Markdown for
# docs/benchmarks.md. Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=3 SECS=8 BUILD=1 ATTACHES=20 MANY=100
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=${2:?}; shift 2 ;;
        --seconds) SECS=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/containers.sh needs root (network namespaces)" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "bench/containers.sh needs iperf3" >&2; exit 2; }
if [ "$BUILD" = 1 ]; then
    cargo build --release --locked -p metanet-daemon -p metanet-cli >&2
fi
BIN=$PWD/target/release
T=mnb$$
W=$(mktemp -d /tmp/metanet-bench-containers.XXXXXX)
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
ns() { ip netns add "$1"; ip -n "$1" link set lo up; NSS+=("$1"); }

ns $T-h1; ns $T-h2
ip link add $T-a netns $T-h1 type veth peer name $T-b netns $T-h2
ip -n $T-h1 addr add 198.18.251.1/24 dev $T-a; ip -n $T-h1 link set $T-a up
ip -n $T-h2 addr add 198.18.251.2/24 dev $T-b; ip -n $T-h2 link set $T-b up
daemon() { # host dir
    mkdir -p "$W/$2"
    ip netns exec "$1" "$BIN/metanetd" --state-dir "$W/$2/state" --socket "$W/$2/s.sock" \
        --tun mnb0 --config /dev/null >"$W/$2/log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$W/$2/s.sock" ] && return; sleep 0.1; done
    echo "metanetd in $1 did not start" >&2; cat "$W/$2/log" >&2; exit 1
}
daemon $T-h1 h1; daemon $T-h2 h2
PID1=${PIDS[0]}
m1() { "$BIN/metanet" --socket "$W/h1/s.sock" "$@"; }
m2() { "$BIN/metanet" --socket "$W/h2/s.sock" "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

ns $T-c1; ns $T-c2; ns $T-c3
m1 attach --netns $T-c1 --identity c1 >/dev/null
m1 attach --netns $T-c2 --identity c2 >/dev/null
m2 attach --netns $T-c3 --identity c3 >/dev/null
ip_of() { "$@" --json attachments | python3 -c "import json,sys; print({a['identity']: a['ipv6'] for a in json.load(sys.stdin)}[sys.argv[1]])" "$IDN"; }
IDN=c1 IP_C1=$(ip_of m1); IDN=c2 IP_C2=$(ip_of m1); IDN=c3 IP_C3=$(ip_of m2)
ADDR_C3=$(m2 --json id show c3 | field "['address']")
ADDR_H2=$(m2 --json id show | field "['address']")
IP_H2=$(m2 --json id show | field "['ipv6']")
m1 connect "$ADDR_H2" --endpoint 198.18.251.2:51820 >/dev/null
m1 connect "$ADDR_C3" --endpoint 198.18.251.2:51820 --identity c1 >/dev/null
for dst in $IP_H2; do ip netns exec $T-h1 ping -6 -c 2 -W 2 -q "$dst" >/dev/null; done
ip netns exec $T-c1 ping -6 -c 2 -W 2 -q "$IP_C3" >/dev/null
ip netns exec $T-c1 ping -6 -c 2 -W 2 -q "$IP_C2" >/dev/null

# One iperf3 stream from namespace $1 to $2's address $3: Gbit/s received.
iperf() {
    ip netns exec "$2" timeout $((SECS + 15)) iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
    local srv=$!
    sleep 0.5
    ip netns exec "$1" timeout $((SECS + 10)) iperf3 -6 -c "$3" -t "$SECS" -J 2>/dev/null \
        | python3 -c "import json,sys; print('%.2f' % (json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9))"
    wait $srv 2>/dev/null || true
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
HH=() CC=() LL=()
for _ in $(seq "$RUNS"); do
    HH+=("$(iperf $T-h1 $T-h2 "$IP_H2")")
    CC+=("$(iperf $T-c1 $T-c3 "$IP_C3")")
    LL+=("$(iperf $T-c1 $T-c2 "$IP_C2")")
done
hh=$(printf '%s\n' "${HH[@]}" | median)
cc=$(printf '%s\n' "${CC[@]}" | median)
ll=$(printf '%s\n' "${LL[@]}" | median)
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }

# Attach time: N fresh namespaces, each `metanet attach` timed (identity created).
TIMES=()
for i in $(seq "$ATTACHES"); do
    ns $T-t$i
    s=$(date +%s%N)
    m1 attach --netns $T-t$i --identity t$i >/dev/null
    e=$(date +%s%N)
    TIMES+=("$(( (e - s) / 1000 ))")
done
attach_ms=$(printf '%s\n' "${TIMES[@]}" | median | awk '{printf "%.1f", $1/1000}')
for i in $(seq "$ATTACHES"); do m1 detach --identity t$i --remove-identity >/dev/null; done

# Idle cost: RSS and CPU over 20 s, before and with 100 more attachments.
rss() { awk '/VmRSS/ {print $2}' /proc/$PID1/status; }
cpu() { awk '{print $14 + $15}' /proc/$PID1/stat; }
idle() { local a; a=$(cpu); sleep 20; echo $(( $(cpu) - a )); }
rss0=$(rss); cpu0=$(idle)
for i in $(seq "$MANY"); do
    ns $T-m$i
    m1 attach --netns $T-m$i --identity m$i >/dev/null
done
H1_IP=$(m1 --json id show | field "['ipv6']")
answered=0
for i in $(seq "$MANY"); do
    ip netns exec $T-m$i ping -6 -c 1 -W 2 -q "$H1_IP" >/dev/null 2>&1 && answered=$((answered + 1))
done
rss1=$(rss); cpu1=$(idle)
tick=$(getconf CLK_TCK)

echo "## Containers: attached namespaces ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD))"
echo
echo "One TCP stream (iperf3, ${SECS} s, median of $RUNS interleaved runs), two daemons in namespaces joined by a veth:"
echo
echo "| path | Gbit/s | vs host to host |"
echo "| --- | ---: | ---: |"
echo "| host to host (default identities) | $hh | 1.00 |"
echo "| container to container, two hosts | $cc | $(ratio "$cc" "$hh") |"
echo "| container to container, one host (local delivery) | $ll | $(ratio "$ll" "$hh") |"
echo
echo "Runs (Gbit/s): host ${HH[*]}; two hosts ${CC[*]}; one host ${LL[*]}."
echo
echo "Attach time (\`metanet attach\`, identity created, median of $ATTACHES): ${attach_ms} ms."
echo
echo "$MANY attachments on one daemon: $answered of $MANY answered a ping to the host; idle over 20 s:"
echo "RSS $((rss0 / 1024)) MiB -> $((rss1 / 1024)) MiB ($(( (rss1 - rss0) / MANY )) KiB per attachment),"
echo "CPU $(python3 -c "print('%.2f' % ($cpu0 / $tick))") s -> $(python3 -c "print('%.2f' % ($cpu1 / $tick))") s."
