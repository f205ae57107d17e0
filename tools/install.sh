#!/usr/bin/env bash
# Installs grid on this machine the way grid-config/'s systemd units expect it:
#   /usr/local/bin/grid, a system user and group `grid` owning /var/lib/grid (0750), and,
#   with --systemd, the units in /etc/systemd/system (not enabled: that is your choice).
#
#   sudo tools/install.sh                      # build (release) and install
#   sudo tools/install.sh --systemd            # also copy the systemd units
#   tools/install.sh --root /tmp/stage         # everything under a staging root (no user made)
#   tools/install.sh --binary PATH             # install this binary instead of building
#
# Then, for example:
#   sudo -u grid grid introducer create /var/lib/grid/introducer --listen 0.0.0.0 --location intro.example:4000
#   sudo systemctl enable --now grid-introducer
set -euo pipefail
cd "$(dirname "$0")/.."
root="" prefix=/usr/local systemd=0 binary="" user=grid
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2;;
    --prefix) prefix=$2; shift 2;;
    --systemd) systemd=1; shift;;
    --binary) binary=$2; shift 2;;
    --user) user=$2; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64;;
  esac
done
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo), or give --root DIR to stage the files elsewhere" >&2; exit 77
fi
if [ -z "$binary" ]; then
  tools/deps.sh
  swift build -c release --product grid --static-swift-stdlib >&2
  binary=.build/release/grid
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 66; }
install -d -m 0755 "$root$prefix/bin"
install -m 0755 "$binary" "$root$prefix/bin/grid"
echo "installed $root$prefix/bin/grid ($("$root$prefix/bin/grid" --version))"
if [ -z "$root" ]; then
  if ! getent group "$user" >/dev/null; then groupadd --system "$user"; fi
  if ! getent passwd "$user" >/dev/null; then
    useradd --system --gid "$user" --home-dir /var/lib/grid --shell /usr/sbin/nologin "$user"
    echo "created system user $user"
  fi
fi
install -d -m 0750 "$root/var/lib/grid"
[ -z "$root" ] && chown "$user:$user" /var/lib/grid
if [ "$systemd" = 1 ]; then
  install -d -m 0755 "$root/etc/systemd/system"
  for u in grid-config/*.service grid-config/*.timer; do
    sed "s#/usr/local/bin/grid#$prefix/bin/grid#g; s#^User=grid#User=$user#; s#^Group=grid#Group=$user#" "$u" > "$root/etc/systemd/system/$(basename "$u")"
    chmod 0644 "$root/etc/systemd/system/$(basename "$u")"
  done
  [ -z "$root" ] && command -v systemctl >/dev/null && systemctl daemon-reload || true
  echo "systemd units in $root/etc/systemd/system (enable the ones you need)"
fi
