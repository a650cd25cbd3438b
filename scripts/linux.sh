#!/usr/bin/env bash
# Fetches what the Linux boot tests and benchmarks boot: Debian's i386
# kernel (linux-image-686, a bzImage) and a busybox initramfs built around
# busybox-static, into $RINGBACK_LINUX (default: target/linux in the repo).
# Idempotent: does nothing when both files are there. Prints the directory.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${RINGBACK_LINUX:-$repo/target/linux}
if [ -s "$dir/bzImage" ] && [ -s "$dir/initrd.cpio" ]; then
    echo "$dir"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "linux.sh: need root to add the i386 architecture and download packages" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx i386; then
    dpkg --add-architecture i386
    apt-get update -qq
fi
# The versioned package the metapackage points at today.
image_pkg=$(apt-cache depends linux-image-686:i386 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$image_pkg" ]; then
    apt-get update -qq
    image_pkg=$(apt-cache depends linux-image-686:i386 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 777 "$work"
(cd "$work" && apt-get download -qq "$image_pkg" busybox-static:i386 2>/dev/null)
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done
mkdir -p "$dir"
cp "$work"/root/boot/vmlinuz-* "$dir/bzImage"
cp "$work"/root/boot/System.map-* "$dir/System.map"
cp "$work"/root/boot/config-* "$dir/config"
python3 "$repo/scripts/initramfs.py" "$work/root/bin/busybox" "$dir/initrd.cpio"
echo "$image_pkg" > "$dir/package"
echo "$dir"
