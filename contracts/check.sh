#!/usr/bin/env bash
# Recompile MetanetRegistry.sol with the pinned solc-js and fail if the committed
# artifact (artifacts/MetanetRegistry.json) differs. Installs the pinned npm packages
# first if they are missing. Called from .ci/run.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -e node_modules/solc/package.json ] \
    || [ "$(node -p 'require("solc/package.json").version')" != "$(node -p 'require("./package.json").devDependencies.solc')" ]; then
    timeout 600 npm ci --no-audit --no-fund --loglevel=error
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node compile.js "$tmp/MetanetRegistry.json"
if ! diff -u artifacts/MetanetRegistry.json "$tmp/MetanetRegistry.json"; then
    echo "contracts/artifacts/MetanetRegistry.json does not match MetanetRegistry.sol:" >&2
    echo "run 'node contracts/compile.js' and commit the artifact" >&2
    exit 1
fi
echo "ok: contracts/artifacts/MetanetRegistry.json matches MetanetRegistry.sol"
