#!/usr/bin/env bash
# Install metanet on this machine, as root:
#   $PREFIX/bin/metanetd, $PREFIX/bin/metanet     (PREFIX=/usr/local by default)
#   /etc/systemd/system/metanetd.service          (ExecStart points at $PREFIX/bin)
#   /usr/lib/sysusers.d/metanet.conf              (user and group metanet, created now)
#   /etc/metanet/metanetd.toml.example            (and metanetd.toml if there is none)
#   $PREFIX/share/doc/metanet/                    (README.md, docs/*.md)
#
#   scripts/install.sh [--no-build] [--prefix DIR] [--destdir DIR] [--enable]
#
# --no-build uses the binaries already in target/release. --destdir installs into a
# staging root (for packaging; nothing outside it is touched, no group is created).
# --enable also runs `systemctl enable --now metanetd` when systemd is running.
# systemd itself is not needed to install; without it, start `metanetd` yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=/usr/local DESTDIR="" BUILD=1 ENABLE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --destdir) DESTDIR=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --enable) ENABLE=1; shift ;;
        -h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;; esac
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh needs root (or --destdir DIR for a staging install)" >&2
    exit 1
fi

if [ "$BUILD" = 1 ]; then
    cargo build --release --locked --bins
fi
for b in metanetd metanet; do
    [ -x "target/release/$b" ] || { echo "install.sh: target/release/$b is missing (run without --no-build)" >&2; exit 1; }
done

say() { printf 'install: %s\n' "$*"; }
D=$DESTDIR
install -d -m 0755 "$D$PREFIX/bin" "$D/etc/systemd/system" "$D/usr/lib/sysusers.d" \
    "$D/etc/metanet" "$D$PREFIX/share/doc/metanet"
install -m 0755 target/release/metanetd target/release/metanet "$D$PREFIX/bin/"
say "binaries in $D$PREFIX/bin"

sed -e "s|/usr/local/bin/metanetd|$PREFIX/bin/metanetd|" \
    -e "s|/usr/local/share/doc/metanet|$PREFIX/share/doc/metanet|" \
    packaging/metanetd.service >"$D/etc/systemd/system/metanetd.service"
chmod 0644 "$D/etc/systemd/system/metanetd.service"
install -m 0644 packaging/sysusers.d/metanet.conf "$D/usr/lib/sysusers.d/metanet.conf"
say "unit $D/etc/systemd/system/metanetd.service, sysusers $D/usr/lib/sysusers.d/metanet.conf"

install -m 0644 packaging/metanetd.toml "$D/etc/metanet/metanetd.toml.example"
if [ -e "$D/etc/metanet/metanetd.toml" ]; then
    say "kept the existing $D/etc/metanet/metanetd.toml"
else
    install -m 0644 packaging/metanetd.toml "$D/etc/metanet/metanetd.toml"
    say "config $D/etc/metanet/metanetd.toml (all defaults)"
fi
install -m 0644 README.md docs/*.md "$D$PREFIX/share/doc/metanet/"

[ -n "$DESTDIR" ] && { say "staged under $DESTDIR"; exit 0; }

if getent passwd metanet >/dev/null && getent group metanet >/dev/null; then
    :
elif command -v systemd-sysusers >/dev/null; then
    systemd-sysusers /usr/lib/sysusers.d/metanet.conf
else
    getent group metanet >/dev/null || groupadd --system metanet
    getent passwd metanet >/dev/null || useradd --system --gid metanet --no-create-home \
        --home-dir /var/lib/metanet --shell /usr/sbin/nologin metanet
fi
say "user and group metanet: add users with 'usermod -aG metanet USER' to use metanet without sudo"

if [ -d /run/systemd/system ]; then
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
