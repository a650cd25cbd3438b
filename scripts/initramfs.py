#!/usr/bin/env python3
"""Writes the initramfs ringback's Linux tests boot: a newc cpio archive
holding a static busybox and an /init script.

usage: initramfs.py BUSYBOX OUT

/init mounts /proc and /sys, prints what the kernel found, runs a few
commands, and reboots (the machine stops: QEMU with -no-reboot exits, and
ringback stops with "guest requested a reset"). With `shell` on the kernel
command line it starts an interactive busybox shell on the console instead.
"""
import sys

INIT = b"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "ringback-init: started"
if grep -qw shell /proc/cmdline; then
    echo "ringback-init: shell (reboot -f ends the run)"
    exec setsid cttyhack sh
fi
echo "ringback-init: $(uname -srm)"
grep -E '^(model name|flags|fpu)' /proc/cpuinfo
echo "ringback-init: $(grep MemTotal /proc/meminfo)"
echo "ringback-init: sum $(echo ringback | md5sum)"
echo "ringback-init: calc $(awk 'BEGIN { x = 0; for (i = 1; i <= 100; i++) x += 1 / i; printf "%.6f", x }')"
echo "ringback-init: float $(awk 'BEGIN { x = 1; for (i = 0; i < 30; i++) x = (x + 2 / x) / 2; e = 1; t = 1; for (i = 1; i < 25; i++) { t /= i; e += t }; p = 1; for (i = 0; i < 40; i++) p *= 2; printf "%.15g %.15g %.6e %.6e %d", x, e, 1 / 3e200, 7e-300 * 1e-20, p }')"
echo "ringback-init: sort $(seq 1 500 | sort -r | head -3 | tr '\n' ' ')"
echo "ringback-init: gzip $(head -c 200000 /bin/busybox | gzip -9 | md5sum)"
echo "ringback-init: primes $(seq 2 200 | awk '{ p = 1; for (d = 2; d * d <= $1; d++) if ($1 % d == 0) p = 0; if (p) n++ } END { print n }')"
# Where some kernel symbols are (KASLR moves them each boot; a debugger
# needs them: Debian's System.map is a placeholder).
grep -w -e jiffies_64 -e do_timer -e tick_do_update_jiffies64 -e tick_periodic /proc/kallsyms | sed 's/^/ringback-sym: /'
echo "ringback-init: done"
reboot -f
"""


def entry(out, ino, name, mode, data=b"", rdev=(0, 0)):
    name_bytes = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_bytes), 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out += header + name_bytes
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)


def main():
    busybox_path, out_path = sys.argv[1], sys.argv[2]
    with open(busybox_path, "rb") as f:
        busybox = f.read()
    out = bytearray()
    ino = 1
    for d in ["bin", "sbin", "dev", "proc", "sys", "etc", "tmp", "root", "usr", "usr/bin", "usr/sbin"]:
        entry(out, ino, d, 0o040755)
        ino += 1
    entry(out, ino, "dev/console", 0o020600, rdev=(5, 1))
    ino += 1
    entry(out, ino, "bin/busybox", 0o100755, busybox)
    ino += 1
    entry(out, ino, "init", 0o100755, INIT)
    ino += 1
    entry(out, 0, "TRAILER!!!", 0)
    out += b"\0" * (-len(out) % 512)
    with open(out_path, "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
