//! Debian's own i386 kernel (linux-image-686) with a busybox initramfs,
//! booted as `qemu-system-i386 -kernel bzImage -initrd FILE -append CMDLINE`
//! boots it: recorded, verified by replay, and compared with QEMU's run of
//! the same files. scripts/linux.sh (run by the README's set-up command)
//! fetches the kernel and busybox and builds the initramfs, whose /init
//! prints what it finds (`ringback-init: ...` lines) and reboots.

use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;

const RINGBACK: &str = env!("CARGO_BIN_EXE_ringback");
/// The command line a user would give: nothing skipped (the kernel's crypto
/// self-tests are half the boot's 6.5e9 instructions).
const CMDLINE: &str = "console=ttyS0 panic=-1";

/// Where scripts/linux.sh put the kernel and the initramfs.
fn linux_dir() -> PathBuf {
    let dir = std::env::var_os("RINGBACK_LINUX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/linux"));
    assert!(
        dir.join("bzImage").is_file() && dir.join("initrd.cpio").is_file(),
        "no Linux kernel and initramfs in {}: run the README's set-up command (bash scripts/setup.sh)",
        dir.display()
    );
    dir
}

/// The lines /init printed.
fn init_lines(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter(|l| l.starts_with("ringback-init:"))
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[test]
fn debian_linux_boots_to_its_init_records_and_replays_as_under_qemu() {
    // /init's lines: uname, hashing, floating point through awk (square
    // root, series, denormals, an integer overflow), sorting, gzip, primes.
    let dir = linux_dir();
    let kernel = dir.join("bzImage").to_string_lossy().into_owned();
    let initrd = dir.join("initrd.cpio").to_string_lossy().into_owned();
    let trace = std::env::temp_dir().join(format!("ringback-linux-{}.rbt", std::process::id()));
    let trace = trace.to_string_lossy().into_owned();

    // On the default engine, as a user would run it.
    let recorded = Command::new(RINGBACK)
        .args([
            "record", "-o", &trace, &kernel, "--initrd", &initrd, "--append", CMDLINE,
        ])
        .args(["--mem", "128M", "--serial", "stdout", "--rtc-base", "1700000000"])
        .args(["--max-insns", "20000000000"])
        .stdin(Stdio::null())
        .output()
        .expect("run ringback record");
    let serial = String::from_utf8_lossy(&recorded.stdout).into_owned();
    let summary = String::from_utf8_lossy(&recorded.stderr).into_owned();
    let lines = init_lines(&serial);
    assert!(
        lines.last().is_some_and(|l| l == "ringback-init: done"),
        "the boot did not reach the end of /init ({summary}); serial output:\n{serial}"
    );
    assert!(summary.contains("guest requested a reset"), "{summary}");
    assert!(serial.contains("Linux version 6."), "{serial}");
    assert!(
        summary.contains(", 0 reference steps,"),
        "ring 0 with IF clear must not fall back to one reference step at a time: {summary}"
    );

    let verified = common::ringback(&["replay", "--verify", &trace]);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&verified.stdout),
        serial,
        "the replay prints what the run printed"
    );
    // The reference engine agrees on a prefix (all of it would take minutes).
    let reference = common::ringback(&[
        "replay",
        "--verify",
        "--engine",
        "emulate",
        "--until",
        "100000000",
        &trace,
    ]);
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let info = common::ringback(&["info", &trace, "--json"]);
    let _ = std::fs::remove_file(&trace);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("info --json");
    assert_eq!(info["stop"], "guest requested a reset", "{info}");
    assert!(info["events"].as_u64().is_some_and(|n| n > 10_000), "{info}");

    // The same kernel, initramfs and command line under QEMU's ISA PC
    // without a local APIC (the PC ringback models): /init must print the
    // same lines, the memory total aside (QEMU's firmware keeps its own).
    let qemu = Command::new("qemu-system-i386")
        .args(["-M", "isapc", "-cpu", "qemu32,-apic", "-m", "128"])
        .args(["-kernel", &kernel, "-initrd", &initrd, "-append", CMDLINE])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .stdin(Stdio::null())
        .output()
        .expect("run qemu-system-i386");
    let qemu_serial = String::from_utf8_lossy(&qemu.stdout).into_owned();
    let comparable =
        |lines: Vec<String>| -> Vec<String> { lines.into_iter().filter(|l| !l.contains("MemTotal")).collect() };
    assert_eq!(
        comparable(lines),
        comparable(init_lines(&qemu_serial)),
        "ringback and QEMU disagree; QEMU's serial output:\n{qemu_serial}"
    );
}
