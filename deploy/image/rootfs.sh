#!/bin/sh
# Makes the xdplb image's root filesystem in ROOTFS, for `cargo xtask image` (run as an
# mmdebstrap hook, whose apt configuration pins the Debian release) and deploy/Dockerfile
# (run in a Debian 12 stage) alike:
# - the packages of deploy/image/packages, downloaded and unpacked, no maintainer
#   scripts run;
# - no package manager state, documentation, locales or iconv modules (the agent and
#   lbctl use none of them), no host files the runtime provides (resolv.conf, hostname);
# - busybox as sh, sed and awk only: the init container's script needs nothing more,
#   and nothing else in the image is a shell;
# - the CA bundle made from ca-certificates' certificates, as update-ca-certificates
#   would, without the openssl and perl that tool needs;
# - the mount points the DaemonSet uses, so a read-only root needs no directories made.
set -eu
root=${1:?usage: rootfs.sh ROOTFS}
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${MMDEBSTRAP_APT_CONFIG:-}" ]; then
    export APT_CONFIG="$MMDEBSTRAP_APT_CONFIG"
fi

debs=$(mktemp -d)
(cd "$debs" && apt-get download -o APT::Sandbox::User=root $(sed 's/#.*//' "$here/packages"))
for deb in "$debs"/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
rm -rf "$debs"

mkdir -p "$root/etc/ssl/certs"
cat "$root"/usr/share/ca-certificates/*/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root/usr/share" "$root/usr/sbin" "$root/usr/lib/x86_64-linux-gnu/gconv" \
    "$root/var" "$root/etc/apt" "$root/etc/dpkg" "$root/etc/ld.so.conf.d" \
    "$root/etc/ca-certificates" "$root/dev" "$root/tmp"
rm -f "$root/etc/resolv.conf" "$root/etc/hostname" "$root/etc/fstab"
for tool in sh sed awk; do
    ln -sf busybox "$root/bin/$tool"
done
mkdir -p "$root/usr/local/bin" "$root/etc/xdplb" "$root/run/xdplb" "$root/sys/fs/bpf" \
    "$root/proc" "$root/dev" "$root/tmp"
chmod 1777 "$root/tmp"
