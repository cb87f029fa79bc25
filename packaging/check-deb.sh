#!/usr/bin/env bash
# Install a metanet .deb on this machine with dpkg -i, check what it installed, remove
# and purge it, and check that nothing is left. As root, on a machine without metanet
# (it refuses to run where metanet is already installed, so it never removes an
# operator's identities). The machine is left as it was, also when a check fails.
#
#   packaging/check-deb.sh target/debian/metanet_VERSION_ARCH.deb
set -euo pipefail
deb=$(realpath "${1:?usage: packaging/check-deb.sh DEB}")
say() { printf 'check-deb: %s\n' "$*"; }
fail() { printf 'check-deb: FAILED: %s\n' "$*" >&2; exit 1; }

[ -f "$deb" ] || fail "$deb is not a file"
[ "$(id -u)" = 0 ] || fail "needs root (it installs the package with dpkg -i)"

files=(
    /usr/bin/metanetd /usr/bin/metanet /usr/lib/cni/metanet-cni
    /usr/share/doc/metanet/examples/metanet-cni.conflist
    /usr/lib/systemd/system/metanetd.service
    /usr/lib/sysusers.d/metanet.conf /usr/lib/tmpfiles.d/metanet.conf
    /etc/metanet/metanetd.toml
    /usr/share/man/man1/metanet.1.gz /usr/share/man/man1/metanet-connect.1.gz
    /usr/share/man/man8/metanetd.8.gz
    /usr/share/bash-completion/completions/metanet
    /usr/share/zsh/vendor-completions/_metanet
    /usr/share/fish/vendor_completions.d/metanet.fish
    /usr/share/doc/metanet/copyright /usr/share/doc/metanet/changelog.gz
)
# What must not exist before the install and after the purge.
leftovers=(/usr/bin/metanetd /usr/bin/metanet /usr/lib/cni/metanet-cni /etc/metanet /var/lib/metanet /run/metanet
    /usr/lib/systemd/system/metanetd.service /usr/lib/sysusers.d/metanet.conf
    /usr/lib/tmpfiles.d/metanet.conf /usr/share/doc/metanet)

# Refuse to touch a machine that has metanet: the purge would delete its identities.
if dpkg-query -W -f='${db:Status-Status}' metanet 2>/dev/null | grep -qv '^not-installed$'; then
    fail "the package metanet is already on this machine (dpkg -s metanet): run this on a machine without it"
fi
for p in "${leftovers[@]}"; do
    [ ! -e "$p" ] || fail "$p exists: metanet is already on this machine; run this on a machine without it"
done
! getent passwd metanet >/dev/null || fail "user metanet exists: run this on a machine without metanet"
! getent group metanet >/dev/null || fail "group metanet exists: run this on a machine without metanet"

# From here on, whatever happens, the package, its files and its user go again.
cleanup() {
    local rc=$?
    trap - EXIT
    if dpkg-query -W -f='${db:Status-Status}' metanet 2>/dev/null | grep -qv '^not-installed$'; then
        dpkg --purge metanet >/dev/null 2>&1 || say "cleanup: dpkg --purge metanet failed"
    fi
    rm -rf /etc/metanet /var/lib/metanet /run/metanet
    if getent passwd metanet >/dev/null; then userdel metanet || true; fi
    if getent group metanet >/dev/null; then groupdel metanet || true; fi
    [ "$rc" = 0 ] || say "cleaned up after the failure"
    exit "$rc"
}
trap cleanup EXIT

# The package's own listing first: what a minimal image's dpkg path-excludes (man pages,
# docs) would hide from the installed tree must still be in the package.
listing=$(dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's|^\.||')
for f in "${files[@]}"; do
    grep -qx "$f" <<<"$listing" || fail "the package has no $f"
done
say "the package lists all ${#files[@]} expected files"

# Install; path includes override a minimal image's path-excludes, so that the man
# pages and docs land and their presence can be checked.
dpkg --path-include='/usr/share/man/*' --path-include='/usr/share/doc/metanet/*' -i "$deb" >/dev/null
[ "$(dpkg-query -W -f='${db:Status-Status}' metanet)" = installed ] || fail "dpkg -i did not leave metanet installed"
for f in "${files[@]}"; do
    [ -e "$f" ] || fail "installed, but $f is missing"
done
say "installed: every expected file is in place"

for b in /usr/bin/metanetd /usr/bin/metanet; do
    if readelf -S "$b" | grep -q -e '\.debug_info' -e '\.symtab'; then
        fail "$b is not stripped"
    fi
done
dpkg-query -W -f='${Conffiles}\n' metanet | grep -q '^ /etc/metanet/metanetd.toml ' ||
    fail "/etc/metanet/metanetd.toml is not a conffile"
grep -q '^ExecStart=/usr/bin/metanetd$' /usr/lib/systemd/system/metanetd.service ||
    fail "the packaged unit does not start /usr/bin/metanetd"
getent passwd metanet >/dev/null || fail "postinst created no user metanet"
getent group metanet >/dev/null || fail "postinst created no group metanet"
[ "$(stat -c '%U:%G %a' /var/lib/metanet)" = "metanet:metanet 700" ] ||
    fail "/var/lib/metanet is $(stat -c '%U:%G %a' /var/lib/metanet), not metanet:metanet 700"
say "binaries stripped, conffile registered, unit on /usr/bin, user and group metanet, /var/lib/metanet 0700"

out=$(/usr/bin/metanetd --check-config /etc/metanet/metanetd.toml) ||
    fail "/usr/bin/metanetd --check-config /etc/metanet/metanetd.toml exited non-zero"
say "metanetd --check-config: $out"
if command -v man >/dev/null; then
    for page in metanet metanet-connect; do
        [ "$(man -w "$page")" = "/usr/share/man/man1/$page.1.gz" ] || fail "man -w $page: $(man -w "$page" 2>&1)"
    done
    [ "$(man -w 8 metanetd)" = /usr/share/man/man8/metanetd.8.gz ] || fail "man -w 8 metanetd"
    say "man -w finds metanet(1), metanet-connect(1), metanetd(8)"
fi
for page in /usr/share/man/man1/metanet*.1.gz /usr/share/man/man8/metanetd.8.gz; do
    zgrep -q '^\.TH ' "$page" || fail "$page has no .TH header"
    if command -v groff >/dev/null; then
        warn=$(zcat "$page" | LC_ALL=C groff -man -Tutf8 -ww -z 2>&1) || fail "groff cannot render $page"
        [ -z "$warn" ] || fail "groff warns about $page: $warn"
    fi
done
say "man pages have .TH headers$(command -v groff >/dev/null && echo ' and render without warnings')"
completion=$(/usr/bin/metanet completion bash) && grep -q connect <<<"$completion" || fail "metanet completion bash does not mention connect"
bash -n /usr/share/bash-completion/completions/metanet || fail "the bash completion does not parse"
if command -v zsh >/dev/null; then zsh -n /usr/share/zsh/vendor-completions/_metanet || fail "zsh completion"; fi
if command -v fish >/dev/null; then fish -n /usr/share/fish/vendor_completions.d/metanet.fish || fail "fish completion"; fi
say "metanet completion bash works; the installed bash completion parses"

# Remove: files go, config and identities stay.
dpkg -r metanet >/dev/null
[ ! -e /usr/bin/metanetd ] && [ ! -e /usr/bin/metanet ] || fail "dpkg -r left the binaries"
[ -f /etc/metanet/metanetd.toml ] || fail "dpkg -r removed the conffile /etc/metanet/metanetd.toml"
[ -d /var/lib/metanet ] || fail "dpkg -r removed /var/lib/metanet"
say "dpkg -r: binaries gone, conffile and /var/lib/metanet kept"

# Purge: nothing left.
dpkg --purge metanet >/dev/null
for p in "${leftovers[@]}" /usr/share/man/man1/metanet.1.gz /usr/share/man/man8/metanetd.8.gz; do
    [ ! -e "$p" ] || fail "dpkg --purge left $p"
done
for f in "${files[@]}"; do
    [ ! -e "$f" ] || fail "dpkg --purge left $f"
done
if compgen -G '/usr/bin/metanet*' >/dev/null; then fail "dpkg --purge left $(echo /usr/bin/metanet*)"; fi
! getent passwd metanet >/dev/null || fail "dpkg --purge left the user metanet"
! getent group metanet >/dev/null || fail "dpkg --purge left the group metanet"
! dpkg -L metanet >/dev/null 2>&1 || fail "dpkg -L metanet still knows the package"
say "dpkg --purge: no file, directory, user, group or dpkg record of metanet left"
say "ok: $deb ($(stat -c %s "$deb") bytes)"
