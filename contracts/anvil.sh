#!/usr/bin/env bash
# A local EVM node (foundry's anvil, from the npm registry) for the chain registry's
# tests and demos. Only ever listens on 127.0.0.1.
#
#   contracts/anvil.sh install           npm ci here: pinned solc and the anvil binary
#   contracts/anvil.sh path              print the anvil binary's path (exit 1 if absent)
#   contracts/anvil.sh start [PORT] [ANVIL ARGS…]
#                                        start anvil on 127.0.0.1:PORT (default 8545) in
#                                        the background, wait until it answers, print the
#                                        RPC URL; pid and log under contracts/.anvil/
#   contracts/anvil.sh stop [PORT]       stop the anvil started for PORT
#
# Extra ARGS go to anvil, e.g. `--block-time 1` for a block every second instead of
# one block per transaction. The Rust tests (chain/tests/) start their own anvil from
# the same binary; set METANET_ANVIL to use another one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin="$here/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
state="$here/.anvil"

anvil_path() {
    if [ -n "${METANET_ANVIL:-}" ]; then
        echo "$METANET_ANVIL"
    elif [ -x "$bin" ]; then
        echo "$bin"
    elif command -v anvil >/dev/null 2>&1; then
        command -v anvil
    else
        return 1
    fi
}

rpc_answers() {
    # eth_chainId over plain HTTP with bash only (no curl needed).
    local port=$1 body='{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf 'POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "${#body}" "$body" >&3
    local reply
    reply=$(timeout 2 cat <&3 || true)
    exec 3<&-
    [[ $reply == *'"result"'* ]]
}

cmd=${1:-}
shift || true
case "$cmd" in
install)
    cd "$here"
    timeout 600 npm ci --no-audit --no-fund --loglevel=error
    [ -x "$bin" ] || { echo "anvil.sh: npm did not install $bin (not linux x64?)" >&2; exit 1; }
    "$bin" --version | head -1
    ;;
path)
    anvil_path || { echo "anvil.sh: anvil is not installed: run contracts/anvil.sh install" >&2; exit 1; }
    ;;
start)
    port=${1:-8545}
    shift || true
    exe=$(anvil_path) || { echo "anvil.sh: anvil is not installed: run contracts/anvil.sh install" >&2; exit 1; }
    mkdir -p "$state"
    if [ -f "$state/$port.pid" ] && kill -0 "$(cat "$state/$port.pid")" 2>/dev/null; then
        echo "anvil.sh: anvil already running on port $port (pid $(cat "$state/$port.pid"))" >&2
        exit 1
    fi
    "$exe" --host 127.0.0.1 --port "$port" "$@" >"$state/$port.log" 2>&1 &
    echo $! >"$state/$port.pid"
    for _ in $(seq 100); do
        if rpc_answers "$port"; then
            echo "http://127.0.0.1:$port"
            exit 0
        fi
        kill -0 "$(cat "$state/$port.pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "anvil.sh: anvil did not answer on 127.0.0.1:$port; log: $state/$port.log" >&2
    kill "$(cat "$state/$port.pid")" 2>/dev/null || true
    rm -f "$state/$port.pid"
    exit 1
    ;;
stop)
    port=${1:-8545}
    if [ -f "$state/$port.pid" ]; then
        pid=$(cat "$state/$port.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$state/$port.pid"
    fi
    ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
