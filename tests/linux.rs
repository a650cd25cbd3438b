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
    // The raw engine with its patches computes what the reference does
    // (a prefix: the reference replays the whole boot in minutes).
    let bisect = common::ringback(&["bisect", &trace, "--until", "100000000"]);
    let report = String::from_utf8_lossy(&bisect.stdout);
    assert_eq!(
        bisect.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&bisect.stderr)
    );
    assert!(report.contains("No divergence"), "{report}");
    let info = common::ringback(&["info", &trace, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("info --json");
    assert_eq!(info["stop"], "guest requested a reset", "{info}");
    assert!(info["events"].as_u64().is_some_and(|n| n > 10_000), "{info}");
    let end = info["instructions"].as_u64().expect("instructions");

    debug_the_kernel(&trace, &serial, end);
    inspect(&trace);
    let _ = std::fs::remove_file(&trace);

    // The same kernel, initramfs and command line under QEMU's PC: /init
    // must print the same lines, the memory total aside (QEMU's firmware
    // keeps its own).
    let qemu_serial = qemu_linux(&["-M", "pc"], CMDLINE);
    assert_eq!(
        comparable(lines),
        comparable(init_lines(&qemu_serial)),
        "ringback and QEMU disagree; QEMU's serial output:\n{qemu_serial}"
    );
}

fn comparable(lines: Vec<String>) -> Vec<String> {
    lines.into_iter().filter(|l| !l.contains("MemTotal")).collect()
}

/// The kernel and initramfs under qemu-system-i386 on `machine`, with the
/// CPU model and devices nearest ringback's; its serial output.
fn qemu_linux(machine: &[&str], cmdline: &str) -> String {
    let dir = linux_dir();
    let kernel = dir.join("bzImage").to_string_lossy().into_owned();
    let initrd = dir.join("initrd.cpio").to_string_lossy().into_owned();
    let qemu = Command::new("qemu-system-i386")
        .args(machine)
        .args(["-cpu", "qemu32", "-m", "128", "-nic", "none", "-vga", "none"])
        .args(["-kernel", &kernel, "-initrd", &initrd, "-append", cmdline])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .stdin(Stdio::null())
        .output()
        .expect("run qemu-system-i386");
    String::from_utf8_lossy(&qemu.stdout).into_owned()
}

/// The kernel and initramfs under `ringback run` on the default engine.
fn ringback_linux(cmdline: &str) -> String {
    let dir = linux_dir();
    let kernel = dir.join("bzImage").to_string_lossy().into_owned();
    let initrd = dir.join("initrd.cpio").to_string_lossy().into_owned();
    let run = Command::new(RINGBACK)
        .args(["run", &kernel, "--initrd", &initrd, "--append", cmdline])
        .args(["--mem", "128M", "--serial", "stdout", "--rtc-base", "1700000000"])
        .args(["--max-insns", "20000000000"])
        .stdin(Stdio::null())
        .output()
        .expect("run ringback");
    let serial = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        init_lines(&serial).last().is_some_and(|l| l == "ringback-init: done"),
        "the boot with {cmdline:?} did not reach the end of /init ({}); serial output:\n{serial}",
        String::from_utf8_lossy(&run.stderr)
    );
    serial
}

/// The kernel's log reads as under QEMU, line for line (in any order:
/// timers move some lines), but for the differences listed: in APIC mode
/// (the local APIC, the I/O APIC from the MP table, the TSC-deadline timer)
/// against QEMU's `pc` machine, and in PIC mode (`nolapic`: the 8259s
/// alone) against its ISA PC. ACPI is off on both sides of the APIC-mode
/// comparison: ringback builds no ACPI tables, QEMU's firmware does, and
/// a kernel with them describes a different machine.
#[test]
fn the_kernel_log_reads_as_under_qemu_in_apic_and_pic_mode() {
    for (mode, cmdline, machine, differences, expected) in [
        (
            "APIC mode",
            format!("{CMDLINE} acpi=off"),
            "pc",
            APIC_MODE_DIFFERENCES,
            "Enabling APIC mode:  Flat.  Using 1 I/O APICs",
        ),
        (
            "PIC mode",
            format!("{CMDLINE} nolapic"),
            "isapc",
            PIC_MODE_DIFFERENCES,
            "APIC: Keep in PIC mode(8259)",
        ),
    ] {
        let serial = ringback_linux(&cmdline);
        assert!(serial.contains(expected), "{mode}: no {expected:?} in:\n{serial}");
        let qemu_serial = qemu_linux(&["-M", machine], &cmdline);
        assert_eq!(
            comparable(init_lines(&serial)),
            comparable(init_lines(&qemu_serial)),
            "{mode}: /init's lines differ; QEMU's serial output:\n{qemu_serial}"
        );
        let known = |text: &str| {
            COMMON_DIFFERENCES
                .iter()
                .chain(differences)
                .any(|(_, patterns)| patterns.iter().any(|p| text.contains(p)))
        };
        let (ours, theirs) = (kernel_log(&serial, known), kernel_log(&qemu_serial, known));
        let only_ours: Vec<&String> = ours.iter().filter(|l| !theirs.contains(l)).collect();
        let only_theirs: Vec<&String> = theirs.iter().filter(|l| !ours.contains(l)).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty() && ours.len() == theirs.len(),
            "{mode}: the kernel logs differ beyond the known differences:\nonly under ringback: \
             {only_ours:#?}\nonly under QEMU: {only_theirs:#?}\n({} lines against {})",
            ours.len(),
            theirs.len()
        );
    }
}

/// Kernel log lines that differ between ringback and QEMU in both modes,
/// by what in each machine makes them differ (docs/linux.md lists them).
const COMMON_DIFFERENCES: &[(&str, &[&str])] = &[
    (
        // QEMU's PIT and TSC both follow the host clock, so its TSC
        // calibration races the host: on a loaded host it fails, marks the
        // TSC unstable and moves tracing to another clock, or the
        // clocksource watchdog later finds the TSC skewed against the PIT.
        // ringback's run on virtual time: they always calibrate and agree.
        // The local APIC timer's check against the PIT races the host the
        // same way: when it fails, QEMU's kernel disables that timer and
        // keeps the PIT as a clocksource.
        "TSC calibration under a loaded host",
        &[
            "APIC timer disabled due to verification failure",
            "clocksource: pit:",
            "tsc: Fast TSC calibration",
            "tsc: Unable to calibrate against PIT",
            "tsc: No reference (HPET/PMTIMER) available",
            "tsc: Marking TSC unstable",
            "clocksource: Switched to clocksource",
            "Unstable clock detected, switching default tracing clock",
            "\"trace_clock=local\"",
            "If you want to keep using the local clock, then add:",
            "on the kernel command line",
            "timekeeping watchdog",
            "Marking clocksource",
            "wd_nsec:",
            "cs_nsec:",
            "is current clocksource",
            "TSC found unstable after boot",
            // The watchdog's per-CPU check of a clocksource it found skewed.
            "Not enough CPUs to check clocksource",
        ],
    ),
    (
        // QEMU boots SeaBIOS first; ringback loads the kernel itself and
        // builds only the MP table, under its own name and address.
        "firmware tables",
        &[
            "SMBIOS",
            "DMI",
            "MP-table at",
            "MPTABLE: OEM ID",
            "MPTABLE: Product ID",
            "PCI BIOS",
            "PnPBIOS",
        ],
    ),
    (
        // ringback's clocks run on virtual time (1 GHz TSC); QEMU's on the host's.
        "clock rates and dates",
        &[
            "MHz processor",
            "BogoMIPS",
            "tsc-early",
            "clocksource: tsc:",
            "sched_clock",
            "audit(",
            "setting system clock",
        ],
    ),
    (
        // qemu32 has FXSR and SSE, and TCG no TSC-deadline timer; ringback's
        // P6 model has the timer and neither of the others.
        "the CPU model",
        &["x87 FPU will use", "sigframe", "TSC deadline timer", "smpboot: CPU0: "],
    ),
    // No VGA adapter (QEMU's `-vga none` still leaves the CGA text console).
    ("the display", &["Console: colour"]),
    // What the kernel keeps for itself depends on where firmware data sits.
    ("reserved memory", &["Memory: "]),
];

/// APIC mode against QEMU's `pc`.
const APIC_MODE_DIFFERENCES: &[(&str, &[&str])] = &[
    // The PIIX3's ISA bridge, IDE and ACPI functions, which ringback lacks.
    ("QEMU pc's chipset", &["pci 0000:00:01."]),
];

/// PIC mode against QEMU's ISA PC.
const PIC_MODE_DIFFERENCES: &[(&str, &[&str])] = &[
    (
        // ringback's e820 map keeps the top 128 KiB for firmware, as
        // SeaBIOS's does on QEMU's pc machine; isapc's does not.
        "the top of RAM",
        &[
            "e820",
            "last_pfn",
            "RAMDISK",
            "LOWMEM",
            "low ram",
            "Normal   [mem",
            "node   0: [mem",
            "Initmem setup",
            "Total pages",
        ],
    ),
    (
        // isapc has no I/O APIC; its firmware's MP table names one with no
        // pins, ringback's the one it has.
        "the I/O APIC",
        &["IOAPIC[", "nr_irqs"],
    ),
    (
        // ringback answers PCI configuration cycles with a host bridge;
        // isapc has no PCI device at all.
        "the PCI host bridge",
        &["pci 0000:00:00.0", "configuration type 1"],
    ),
];

/// The kernel's log lines (timestamped), without their timestamps and
/// without the `known` differences, sorted.
fn kernel_log(serial: &str, known: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines: Vec<String> = serial
        .lines()
        .filter_map(|l| {
            l.strip_prefix('[')
                .and_then(|l| l.split_once("] "))
                .map(|(_, text)| text.trim_end())
        })
        .filter(|text| !known(text))
        .map(without_input_number)
        .collect();
    lines.sort();
    lines
}

/// The line with an input device's number (`.../input/input1`) dropped:
/// each probe of the i8042's two ports takes the next number, keyboard or
/// mouse first by the probe threads' timing, which under QEMU follows the
/// host's.
fn without_input_number(text: &str) -> String {
    match text.rsplit_once("/input/input") {
        Some((path, number)) if number.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{path}/input/input#")
        }
        _ => text.to_string(),
    }
}

/// Where /init found a kernel function (`ringback-sym: ADDR t NAME` lines
/// from /proc/kallsyms: KASLR moves the kernel each boot).
fn kernel_symbol(serial: &str, name: &str) -> u32 {
    serial
        .lines()
        .filter_map(|l| l.strip_prefix("ringback-sym: "))
        .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [addr, _, symbol] if symbol == name => u32::from_str_radix(addr, 16).ok(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("/init did not print where {name} is:\n{serial}"))
}

/// gdb on the recorded boot, as docs/linux.md walks through it: find
/// jiffies_64 from the instruction in do_timer that adds to it, watch it
/// and reverse-continue to the instruction that last wrote it; break on
/// the function that wrote it, continue, step back and forth.
fn debug_the_kernel(trace: &str, serial: &str, end: u64) {
    let do_timer = kernel_symbol(serial, "do_timer");
    let updater = kernel_symbol(serial, "tick_do_update_jiffies64");
    let (mut server, port) = common::serve(&["gdb", trace, "--listen", "127.0.0.1:0"]);
    let at = end - 50_000_000;
    let connect = format!("set architecture i386\ntarget remote 127.0.0.1:{port}\nmonitor seek {at}\nstepi 0\n");
    let out = common::gdb_batch("linux-find", &format!("{connect}x/8i {do_timer:#x}\n"));
    // do_timer: jiffies_64 += ticks, the low half first.
    let jiffies = out
        .lines()
        .find_map(|l| l.split("add    %eax,0x").nth(1))
        .and_then(|a| u32::from_str_radix(a.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no add to jiffies_64 in do_timer:\n{out}"));
    let out = common::gdb_batch(
        "linux-watch",
        &format!("{connect}watch *(int*){jiffies:#x}\nreverse-continue\nx/i $pc\nprintf \"pc=%x\\n\", $pc\n"),
    );
    let pc = out
        .lines()
        .find_map(|l| l.strip_prefix("pc="))
        .and_then(|p| u32::from_str_radix(p.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no stop:\n{out}"));
    let writer = out.lines().find(|l| l.starts_with("=> ")).unwrap_or("");
    assert!(
        writer.contains(&format!("{jiffies:#x}")),
        "the reverse-continue stopped on an instruction that does not write jiffies_64 ({jiffies:#x}):\n{out}"
    );
    assert!(
        (updater..updater + 0x400).contains(&pc) || (do_timer..do_timer + 0x40).contains(&pc),
        "jiffies_64 written at {pc:#x}, outside do_timer ({do_timer:#x}) and tick_do_update_jiffies64 ({updater:#x}):\n{out}"
    );
    let out = common::gdb_batch(
        "linux-break",
        &format!(
            "{connect}break *{updater:#x}\ncontinue\nprintf \"at=%x\\n\", $pc\nreverse-stepi\nprintf \"back=%x\\n\", $pc\nstepi\nprintf \"again=%x\\n\", $pc\nmonitor quit\n"
        ),
    );
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|p| u32::from_str_radix(p.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {key} in gdb output:\n{out}"))
    };
    assert_eq!(value("at="), updater, "{out}");
    assert_ne!(value("back="), updater, "{out}");
    assert_eq!(value("again="), updater, "{out}");
    let _ = server.wait();
}

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux (scripts/setup.sh installs it)")
}

/// A tmux pane, killed when dropped.
struct Pane(String);

impl Pane {
    fn capture(&self) -> String {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-S", "-200", "-t", &self.0]).stdout).into_owned()
    }

    /// Waits until the pane shows `text`; the pane's contents.
    fn wait_for(&self, text: &str, seconds: u64) -> String {
        let start = std::time::Instant::now();
        loop {
            let screen = self.capture();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed().as_secs() < seconds,
                "no {text:?} after {seconds} s; the pane shows:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.0]);
    }
}

/// The console on a terminal: boot to busybox's prompt under tmux, type a
/// command, read the answer, leave with Ctrl-A x as from QEMU; the session
/// was recorded, and replays with no terminal to the same output.
#[test]
fn an_interactive_shell_session_records_and_replays() {
    let dir = linux_dir();
    let kernel = dir.join("bzImage").to_string_lossy().into_owned();
    let initrd = dir.join("initrd.cpio").to_string_lossy().into_owned();
    let trace = std::env::temp_dir().join(format!("ringback-linux-shell-{}.rbt", std::process::id()));
    let trace = trace.to_string_lossy().into_owned();
    let name = format!("ringback-linux-{}", std::process::id());
    let _ = tmux(&["kill-session", "-t", &name]);
    let command = format!(
        "{RINGBACK} record -o {trace} {kernel} --initrd {initrd} --append 'console=ttyS0 shell quiet cryptomgr.notests' \
         --rtc-base 1700000000; echo EXIT=$?; sleep 600"
    );
    let out = tmux(&["new-session", "-d", "-s", &name, "-x", "160", "-y", "48", &command]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pane = Pane(name);
    pane.wait_for("Ctrl-A x quits", 30);
    pane.wait_for("/ #", 600);
    assert!(tmux(&["send-keys", "-t", &pane.0, "echo hello $((6*7))", "Enter"])
        .status
        .success());
    pane.wait_for("hello 42", 120);
    assert!(tmux(&["send-keys", "-t", &pane.0, "C-a", "x"]).status.success());
    let screen = pane.wait_for("EXIT=", 120);
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("stopped by the user"), "{screen}");

    let replayed = common::ringback(&["replay", "--verify", &trace]);
    let _ = std::fs::remove_file(&trace);
    let stdout = String::from_utf8_lossy(&replayed.stdout);
    assert_eq!(
        replayed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(stdout.contains("hello 42"), "the replay shows the session:\n{stdout}");
}

/// The inspector opens the recorded boot in a terminal: the event timeline,
/// the registers at the kernel's entry, its first instructions; q quits.
fn inspect(trace: &str) {
    let name = format!("ringback-linux-tui-{}", std::process::id());
    let _ = tmux(&["kill-session", "-t", &name]);
    let command = format!("{RINGBACK} tui {trace}; echo EXIT=$?; sleep 600");
    let out = tmux(&["new-session", "-d", "-s", &name, "-x", "160", "-y", "48", &command]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pane = Pane(name);
    let screen = pane.wait_for("icount 0 of", 120);
    assert!(screen.contains("Timeline"), "{screen}");
    assert!(
        screen.contains("esi 00007000"),
        "the zero page's address, as the boot protocol hands it over:\n{screen}"
    );
    assert!(screen.contains("cld"), "the kernel's first instruction:\n{screen}");
    assert!(tmux(&["send-keys", "-t", &pane.0, "q"]).status.success());
    let screen = pane.wait_for("EXIT=", 60);
    assert!(screen.contains("EXIT=0"), "{screen}");
}
