#!/usr/bin/env bash
# bench/nat.sh: metanet across NAT routers (nftables masquerade in namespaces, a public
# relay), in one run: per NAT pair the median over N connects of the time to the first
# reply (through the relay) and to the direct path; one TCP stream relayed against
# direct; the relay's CPU per forwarded Gbit; and, from the simulator, the direct-path
# success over a weighted mix of NAT types.
#
#   bench/nat.sh [--runs N] [--no-build]
#
# Release binaries (built unless --no-build). Needs root, nft, iperf3. Prints Markdown
# for docs/benchmarks.md. Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=20 BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/nat.sh needs root (network namespaces)" >&2; exit 2; }
if [ "$BUILD" = 1 ]; then
    cargo build --release --workspace --locked
fi
echo "## NAT traversal ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD))"
echo
NAT_BENCH_RUNS=$RUNS cargo test --release --locked -p metanet-tests --test nat -- \
    --ignored bench_nat --nocapture --test-threads 1 2>/dev/null | grep -E '^\||^single|^$' || true
echo
cargo test --release --locked -p metanet-proto --test nat -- direct_path_success --nocapture 2>&1 \
    | grep -E 'direct-path success' || true
