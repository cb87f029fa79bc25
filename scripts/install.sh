#!/usr/bin/env bash
# Install metanet on this machine from the source tree, as root:
#   $PREFIX/bin/metanetd, $PREFIX/bin/metanet     (PREFIX=/usr/local by default)
#   $PREFIX/lib/cni/metanet-cni                   (the CNI plugin; podman looks there)
#   /etc/systemd/system/metanetd.service          (ExecStart points at $PREFIX/bin)
#   /etc/sysusers.d/metanet.conf                  (user and group metanet, created now)
#   /etc/tmpfiles.d/metanet.conf                  (/var/lib/metanet 0700 metanet, /etc/metanet)
#   /etc/metanet/metanetd.toml.example            (and metanetd.toml if there is none)
#   $PREFIX/share/man/man1/metanet*.1, man8/metanetd.8
#   bash, zsh and fish completions under $PREFIX/share
#   $PREFIX/share/doc/metanet/                    (README.md, docs/*.md)
#
#   scripts/install.sh [--no-build] [--prefix DIR] [--destdir DIR] [--enable]
#   scripts/install.sh --uninstall [--purge] [--prefix DIR] [--destdir DIR]
#
# --no-build uses the binaries already in target/release ($CARGO_TARGET_DIR/release).
# --destdir installs into (or uninstalls from) a staging root: nothing outside it is
# touched, no user is created. --enable also runs `systemctl enable --now metanetd`
# when systemd is running. systemd itself is not needed; without it, start `metanetd`.
# --uninstall stops the service and removes every file listed above; it keeps
# /etc/metanet/metanetd.toml when it was changed, the identities in /var/lib/metanet and
# the user and group metanet. --purge also removes those (the identities are the
# addresses: back them up first).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=/usr/local DESTDIR="" BUILD=1 ENABLE=0 UNINSTALL=0 PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --destdir) DESTDIR=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --enable) ENABLE=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h | --help) sed -n '2,23s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;; esac
if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
    echo "install.sh: --purge goes with --uninstall" >&2
    exit 2
fi
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh needs root (or --destdir DIR for a staging install)" >&2
    exit 1
fi

say() { printf 'install: %s\n' "$*"; }
D=$DESTDIR
UNIT=/etc/systemd/system/metanetd.service
SYSUSERS=/etc/sysusers.d/metanet.conf
TMPFILES=/etc/tmpfiles.d/metanet.conf
MAN1=$PREFIX/share/man/man1
MAN8=$PREFIX/share/man/man8
BASH_COMPLETION=$PREFIX/share/bash-completion/completions/metanet
ZSH_COMPLETION=$PREFIX/share/zsh/site-functions/_metanet
FISH_COMPLETION=$PREFIX/share/fish/vendor_completions.d/metanet.fish
DOC=$PREFIX/share/doc/metanet
systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

# Whether the Debian package owns PATH (then it is not ours to remove).
packaged() { [ -z "$DESTDIR" ] && command -v dpkg >/dev/null && dpkg -S "$1" >/dev/null 2>&1; }

uninstall() {
    if systemd_running && [ -e "$UNIT" ]; then
        systemctl disable --now metanetd.service || say "could not stop metanetd (continuing)"
    fi
    rm -f "$D$PREFIX/bin/metanetd" "$D$PREFIX/bin/metanet" "$D$PREFIX/lib/cni/metanet-cni" "$D$UNIT" "$D$SYSUSERS" "$D$TMPFILES" \
        "$D$MAN1/metanet.1" "$D$MAN1"/metanet-*.1 "$D$MAN8/metanetd.8" \
        "$D$BASH_COMPLETION" "$D$ZSH_COMPLETION" "$D$FISH_COMPLETION" \
        "$D/etc/metanet/metanetd.toml.example"
    rm -rf "$D$DOC"
    # Earlier versions of this script put the sysusers entry where the package does.
    if [ -e "$D/usr/lib/sysusers.d/metanet.conf" ] && ! packaged /usr/lib/sysusers.d/metanet.conf; then
        rm -f "$D/usr/lib/sysusers.d/metanet.conf"
    fi
    # Directories this script may have created, where now empty and no package's.
    local dir
    for dir in "$(dirname "$BASH_COMPLETION")" "$PREFIX/share/bash-completion" \
        "$(dirname "$ZSH_COMPLETION")" "$PREFIX/share/zsh" "$(dirname "$FISH_COMPLETION")" \
        "$PREFIX/share/fish" "$MAN1" "$MAN8" "$PREFIX/share/doc" /etc/sysusers.d /etc/tmpfiles.d; do
        if [ -d "$D$dir" ] && ! packaged "$dir"; then rmdir "$D$dir" 2>/dev/null || true; fi
    done
    say "removed the binaries, unit, sysusers and tmpfiles entries, man pages, completions and docs"

    local config=$D/etc/metanet/metanetd.toml
    if [ "$PURGE" = 1 ]; then
        packaged /etc/metanet/metanetd.toml && {
            say "the Debian package metanet is installed: use 'dpkg --purge metanet' for the rest"
            return 0
        }
        rm -rf "$D/etc/metanet" "$D/var/lib/metanet" "$D/run/metanet"
        say "purged /etc/metanet, /var/lib/metanet (identities) and /run/metanet"
        if [ -z "$DESTDIR" ]; then
            if getent passwd metanet >/dev/null; then userdel metanet; fi
            if getent group metanet >/dev/null; then groupdel metanet; fi
            say "removed the user and group metanet"
        fi
    else
        if [ -f "$config" ] && cmp -s "$config" packaging/metanetd.toml && ! packaged /etc/metanet/metanetd.toml; then
            rm -f "$config"
        elif [ -e "$config" ]; then
            say "kept $config (changed); --purge removes it"
        fi
        rmdir "$D/etc/metanet" 2>/dev/null || true
        [ -d "$D/var/lib/metanet" ] && say "kept the identities in $D/var/lib/metanet and the user metanet; --purge removes them"
    fi
    if systemd_running; then systemctl daemon-reload; fi
    say "metanet uninstalled"
}

if [ "$UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi

bin=${CARGO_TARGET_DIR:-target}/release
if [ "$BUILD" = 1 ]; then
    cargo build --release --locked --bins -p metanet-cli -p metanet-daemon -p metanet-cni
fi
for b in metanetd metanet metanet-cni; do
    [ -x "$bin/$b" ] || { echo "install.sh: $bin/$b is missing (run without --no-build)" >&2; exit 1; }
done

install -d -m 0755 "$D$PREFIX/bin" "$D/etc/systemd/system" "$D/etc/sysusers.d" "$D/etc/tmpfiles.d" \
    "$D/etc/metanet" "$D$DOC" "$D$MAN1" "$D$MAN8" "$D$(dirname "$BASH_COMPLETION")" \
    "$D$(dirname "$ZSH_COMPLETION")" "$D$(dirname "$FISH_COMPLETION")"
# Stripped: the release profile keeps line tables for backtraces, 5x the size.
for b in metanetd metanet; do
    install -m 0755 "$bin/$b" "$D$PREFIX/bin/$b"
    if command -v strip >/dev/null; then strip --strip-unneeded "$D$PREFIX/bin/$b"; fi
done
install -d -m 0755 "$D$PREFIX/lib/cni"
install -m 0755 "$bin/metanet-cni" "$D$PREFIX/lib/cni/metanet-cni"
if command -v strip >/dev/null; then strip --strip-unneeded "$D$PREFIX/lib/cni/metanet-cni"; fi
say "binaries in $D$PREFIX/bin, the CNI plugin in $D$PREFIX/lib/cni"

sed -e "s|/usr/local/bin/metanetd|$PREFIX/bin/metanetd|" \
    -e "s|/usr/local/share/doc/metanet|$PREFIX/share/doc/metanet|" \
    packaging/metanetd.service >"$D$UNIT"
chmod 0644 "$D$UNIT"
install -m 0644 packaging/sysusers.d/metanet.conf "$D$SYSUSERS"
install -m 0644 packaging/tmpfiles.d/metanet.conf "$D$TMPFILES"
say "unit $D$UNIT, sysusers $D$SYSUSERS, tmpfiles $D$TMPFILES"

install -m 0644 packaging/metanetd.toml "$D/etc/metanet/metanetd.toml.example"
if [ -e "$D/etc/metanet/metanetd.toml" ]; then
    say "kept the existing $D/etc/metanet/metanetd.toml"
else
    install -m 0644 packaging/metanetd.toml "$D/etc/metanet/metanetd.toml"
    say "config $D/etc/metanet/metanetd.toml (all defaults)"
fi
install -m 0644 README.md docs/*.md "$D$DOC/"

"$bin/metanet" generate-man "$D$MAN1" >/dev/null
"$bin/metanetd" --generate-man "$D$MAN8" >/dev/null
chmod 0644 "$D$MAN1"/metanet*.1 "$D$MAN8/metanetd.8"
"$bin/metanet" completion bash >"$D$BASH_COMPLETION"
"$bin/metanet" completion zsh >"$D$ZSH_COMPLETION"
"$bin/metanet" completion fish >"$D$FISH_COMPLETION"
chmod 0644 "$D$BASH_COMPLETION" "$D$ZSH_COMPLETION" "$D$FISH_COMPLETION"
say "man pages in $D$MAN1 and $D$MAN8, bash/zsh/fish completions under $D$PREFIX/share"

[ -n "$DESTDIR" ] && { say "staged under $DESTDIR"; exit 0; }

if getent passwd metanet >/dev/null && getent group metanet >/dev/null; then
    :
elif command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$SYSUSERS"
else
    getent group metanet >/dev/null || groupadd --system metanet
    getent passwd metanet >/dev/null || useradd --system --gid metanet --no-create-home \
        --home-dir /var/lib/metanet --shell /usr/sbin/nologin metanet
fi
if command -v systemd-tmpfiles >/dev/null; then
    systemd-tmpfiles --create "$TMPFILES"
else
    install -d -m 0700 -o metanet -g metanet /var/lib/metanet
fi
say "user and group metanet: add users with 'usermod -aG metanet USER' to use metanet without sudo"

if systemd_running; then
    systemctl daemon-reload
    if [ "$ENABLE" = 1 ]; then
        systemctl enable --now metanetd
        say "metanetd enabled and started"
    else
        say "start it with: systemctl enable --now metanetd"
    fi
else
    say "systemd is not running here: start the daemon with '$PREFIX/bin/metanetd' (as root)"
fi
