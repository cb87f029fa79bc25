#!/usr/bin/env bash
# Check the shipped unit as systemd would load it: `systemd-analyze verify` (syntax,
# executables) and `systemd-analyze security --offline` (exposure score, which must stay
# at or below MAX_EXPOSURE, default 2.0). Works without systemd as PID 1.
#
#   packaging/check-unit.sh [METANETD_BINARY]     (default target/debug/metanetd)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/metanetd}")
max=${MAX_EXPOSURE:-2.0}
[ -x "$bin" ] || { echo "check-unit: $bin is missing: build it first" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "check-unit: systemd-analyze is missing (Debian package systemd)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# The unit names /usr/local/bin/metanetd (install.sh) or /usr/bin/metanetd (the
# package); point it at the binary under test, change nothing else.
sed -e "s|/usr/local/bin/metanetd|$bin|g" -e "s|/usr/bin/metanetd|$bin|g" \
    packaging/metanetd.service >"$dir/metanetd.service"
out=$(systemd-analyze verify "$dir/metanetd.service" 2>&1 || true)
# Warnings about the host (no systemd running, missing user) are not the unit's fault.
bad=$(printf '%s\n' "$out" | grep -v -e '^$' -e 'is not executable' -e 'Failed to connect' \
    -e 'System has not been booted' -e 'Unknown user' -e 'Unknown group' || true)
if [ -n "$bad" ]; then
    printf 'check-unit: systemd-analyze verify:\n%s\n' "$out" >&2
    exit 1
fi
echo "ok: systemd-analyze verify packaging/metanetd.service"
score=$(systemd-analyze security --offline=true "$dir/metanetd.service" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for metanetd.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "check-unit: no exposure score from systemd-analyze security" >&2; exit 1; }
echo "systemd-analyze security --offline: exposure $score (must be <= $max)"
awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }' || {
    systemd-analyze security --offline=true "$dir/metanetd.service" | grep '✗' >&2
    echo "check-unit: exposure $score is above $max" >&2
    exit 1
}
