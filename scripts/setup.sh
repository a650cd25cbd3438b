#!/usr/bin/env bash
# Installs what ringback's build, tests and benchmarks need beyond the Rust
# toolchain: gcc/binutils that can build 32-bit freestanding guests (build.rs),
# Debian's qemu-system-i386, the peer the end-to-end tests compare against,
# gdb, which the gdb server's tests drive, tmux, which the inspector's
# end-to-end test drives, and Debian's i386 Linux kernel with a busybox
# initramfs (scripts/linux.sh) for the Linux boot test.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v gcc >/dev/null || need+=(gcc)
command -v ld >/dev/null || need+=(binutils)
command -v objcopy >/dev/null || need+=(binutils)
command -v qemu-system-i386 >/dev/null || need+=(qemu-system-x86)
command -v gdb >/dev/null || need+=(gdb)
command -v tmux >/dev/null || need+=(tmux)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${need[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# gcc must be able to emit 32-bit code for the guest kernels.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int f(void) { return 1; }' > "$probe/t.c"
if ! gcc -m32 -ffreestanding -nostdinc -c "$probe/t.c" -o "$probe/t.o" 2>/dev/null; then
    echo "setup: gcc cannot compile with -m32; install gcc-multilib" >&2
    exit 1
fi

# Debian's i386 kernel and a busybox initramfs, for the Linux boot test and
# `ringback run target/linux/bzImage --initrd target/linux/initrd.cpio`.
bash "$(dirname "$0")/linux.sh" >/dev/null
