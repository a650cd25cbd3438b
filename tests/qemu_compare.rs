//! `ringback run` against Debian's `qemu-system-i386 -kernel` on the same
//! kernels: the serial output and the exit status must be the same. The
//! README's set-up command installs QEMU.

mod common;

use common::{qemu_available, run_qemu};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const OUT_DIR: &str = env!("OUT_DIR");
const RINGBACK: &str = env!("CARGO_BIN_EXE_ringback");

fn guest(name: &str) -> PathBuf {
    PathBuf::from(OUT_DIR).join(name)
}

fn run_ringback(args: &[&str]) -> Output {
    Command::new(RINGBACK)
        .args(["run", "--mem", "32"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringback")
}

/// `ringback run` beside QEMU, for what `ringback qemu` cannot take (a disk
/// image for SeaBIOS to boot).
fn compare_run(name: &str, qemu_args: &[&str], ringback_args: &[&str]) -> (String, i32) {
    qemu_available();
    let q = run_qemu(qemu_args);
    let r = run_ringback(ringback_args);
    let q_out = String::from_utf8_lossy(&q.stdout).into_owned();
    let r_out = String::from_utf8_lossy(&r.stdout).into_owned();
    assert_eq!(
        r_out,
        q_out,
        "{name}: serial output differs from QEMU's\nringback stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        r.status.code(),
        q.status.code(),
        "{name}: exit status differs from QEMU's"
    );
    (r_out, r.status.code().unwrap_or(-1))
}

/// The comparisons' QEMU options and `args`, through qemu-system-i386 and
/// through `ringback qemu`: one argument list, the same output and status.
fn compare(name: &str, args: &[&str]) -> (String, i32) {
    same_command_line(name, &[common::QEMU_ARGS, args].concat())
}

fn compare_kernel(name: &str) -> (String, i32) {
    let path = guest(&format!("{name}.elf"));
    let p = path.to_str().expect("utf-8 path");
    compare(name, &["-kernel", p])
}

// The APIC test kernel under QEMU's PC (SeaBIOS leaves the local APIC as
// ringback's firmware state does). QEMU's TCG has no TSC-deadline timer, so
// its CPUID does not announce one and the kernel skips that check: the one
// line ringback prints and QEMU cannot.
#[test]
fn apic_matches_qemu() {
    let path = guest("apic.elf");
    let p = path.to_str().expect("utf-8 path");
    let (q, r) = run_both(&[common::QEMU_ARGS, &["-kernel", p]].concat());
    let q_out = String::from_utf8_lossy(&q.stdout).into_owned();
    let r_out = String::from_utf8_lossy(&r.stdout).into_owned();
    let tsc_deadline = "TSC deadline: fired and disarmed: ok\n";
    assert!(
        r_out.contains(tsc_deadline),
        "ringback announces and runs TSC-deadline mode:\n{r_out}"
    );
    assert!(
        !q_out.contains("TSC deadline"),
        "QEMU's TCG gained a TSC-deadline timer: compare it too"
    );
    assert_eq!(
        r_out.replacen(tsc_deadline, "", 1),
        q_out,
        "apic: serial output differs from QEMU's"
    );
    assert_eq!(r.status.code(), q.status.code());
    assert_eq!(r.status.code(), Some(1), "exit 0: every check passed");
}

// Task switches, task gates and their faults (guests/tasks.c). QEMU's TCG
// ignores a TSS's debug trap flag (T), which the SDM says raises #DB before
// the new task's first instruction (Vol. 3A, 7.2.1): that line is held to
// the SDM, the rest to QEMU.
#[test]
fn task_switching_matches_qemu() {
    let path = guest("tasks.elf");
    let p = path.to_str().expect("utf-8 path");
    let (q, r) = run_both(&[common::QEMU_ARGS, &["-kernel", p]].concat());
    let (q_out, r_out) = (String::from_utf8_lossy(&q.stdout), String::from_utf8_lossy(&r.stdout));
    let t_flag = |out: &str| out.lines().find(|l| l.starts_with("T flag:")).map(str::to_string);
    assert_eq!(
        t_flag(&r_out).as_deref(),
        Some("T flag: #DB at E's first instruction yes, DR6.BT 1, in task 60; E ran 1")
    );
    assert_eq!(
        t_flag(&q_out).as_deref(),
        Some("T flag: #DB at E's first instruction no, DR6.BT 0, in task 00; E ran 1"),
        "QEMU now raises #DB for the T flag: compare that line too"
    );
    let others = |out: &str| {
        out.lines()
            .filter(|l| !l.starts_with("T flag:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        others(&r_out),
        others(&q_out),
        "tasks: serial output differs from QEMU's"
    );
    assert_eq!(
        (r.status.code(), q.status.code()),
        (Some(1), Some(1)),
        "exit 0: every check passed"
    );
}

// A firmware ROM from the reset vector (guests/resetrom.S): `--bios` as
// QEMU's `-bios`.
#[test]
fn reset_vector_rom_matches_qemu() {
    let path = guest("resetrom.bin");
    let p = path.to_str().expect("utf-8 path");
    let (out, status) = compare("resetrom", &["-bios", p]);
    assert_eq!(status, 1, "exit 0: every check passed\n{out}");
    assert!(out.contains("the ROM also ends at 4 GiB: ok"), "{out}");
}

// QEMU's pc-testdev, which ringback always has and QEMU on request.
#[test]
fn test_device_matches_qemu() {
    let path = guest("testdev.elf");
    let p = path.to_str().expect("utf-8 path");
    let (out, status) = compare("testdev", &["-device", "pc-testdev", "-kernel", p]);
    assert_eq!(status, 1, "exit 0: every check passed\n{out}");
}

/// One argument list through qemu-system-i386 and through `ringback qemu`:
/// their outputs, QEMU's first.
fn run_both(args: &[&str]) -> (Output, Output) {
    qemu_available();
    let q = Command::new(common::QEMU)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run qemu");
    (q, common::ringback(&[&["qemu"], args].concat()))
}

/// The same argument list through qemu-system-i386 and `ringback qemu`:
/// the serial output and the exit status must be QEMU's.
fn same_command_line(name: &str, args: &[&str]) -> (String, i32) {
    let (q, r) = run_both(args);
    let (q_out, r_out) = (String::from_utf8_lossy(&q.stdout), String::from_utf8_lossy(&r.stdout));
    // Under -nographic QEMU's firmware (SeaBIOS, iPXE) writes its banner to
    // COM1 before the kernel runs; ringback has no firmware to print one.
    // SeaBIOS mirrors its screen to the port lazily, so the banner's last
    // line ends in "..", or in "...\r\n" when its flush came first: how
    // far it got before the kernel ran varies from host to host.
    let q_out = match q_out.split_once("Booting from ROM..") {
        Some((_, kernel)) => kernel.strip_prefix(".\r\n").unwrap_or(kernel).to_string(),
        None => q_out.into_owned(),
    };
    assert_eq!(
        r_out.as_ref(),
        q_out,
        "{name}: `ringback qemu` printed otherwise\nringback stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(r.status.code(), q.status.code(), "{name}: exit status");
    (r_out.into_owned(), r.status.code().unwrap_or(-1))
}

// The command lines of kernel projects' Makefiles, one word changed.
#[test]
fn ringback_qemu_takes_qemu_command_lines() {
    let k = |name: &str| guest(name).to_string_lossy().into_owned();
    let (hello, syscall, triple) = (k("hello.elf"), k("syscall.elf"), k("triplefault.elf"));
    let exit = "isa-debug-exit,iobase=0xf4,iosize=0x04";
    let (out, status) = same_command_line(
        "hello",
        &[
            "-kernel",
            &hello,
            "-serial",
            "stdio",
            "-display",
            "none",
            "-no-reboot",
            "-device",
            exit,
            "-m",
            "32",
        ],
    );
    assert!(out.contains("mmap[5]") && status == 1, "{out}");
    same_command_line(
        "nographic",
        &[
            "-kernel",
            &hello,
            "-nographic",
            "-monitor",
            "none",
            "-device",
            exit,
            "-m",
            "64",
            "-append",
            "x y",
        ],
    );
    same_command_line(
        "syscall",
        &[
            "-kernel", &syscall, "-serial", "stdio", "-display", "none", "-device", exit, "-smp", "1", "-M", "pc",
        ],
    );
    // A triple fault with -no-reboot: QEMU exits 0, and so does ringback.
    let (_, status) = same_command_line(
        "triple fault",
        &[
            "-kernel",
            &triple,
            "-serial",
            "stdio",
            "-display",
            "none",
            "-no-reboot",
            "-device",
            exit,
        ],
    );
    assert_eq!(status, 0);
    // Without -serial, COM1 goes nowhere under -display none.
    let (out, _) = same_command_line("no serial", &["-kernel", &hello, "-display", "none", "-device", exit]);
    assert_eq!(out, "");
}

#[test]
fn hello_matches_qemu() {
    let (out, status) = compare_kernel("hello");
    assert_eq!(status, 1);
    assert!(out.contains("mmap[5]"));
}

#[test]
fn hello_with_modules_and_append_matches_qemu() {
    let dir = std::env::temp_dir().join(format!("ringback-qemu-mods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let m1 = dir.join("mod1.txt");
    let m2 = dir.join("mod2.txt");
    std::fs::write(&m1, "This is module one, some text\n").expect("write module");
    std::fs::write(&m2, "second module data 0123456789\n").expect("write module");
    let kernel = guest("hello.elf");
    let k = kernel.to_str().expect("utf-8 path");
    let (m1, m2) = (m1.to_str().expect("utf-8"), m2.to_str().expect("utf-8"));
    // QEMU's -initrd for a multiboot kernel: modules with arguments,
    // separated by commas; `ringback qemu` splits them the same way.
    let initrd = format!("{m1} modarg,{m2}");
    let (out, _) = compare(
        "hello+modules",
        &["-kernel", k, "-append", "hello arg1 arg2", "-initrd", &initrd],
    );
    assert!(out.contains("modules: 2"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn paging_matches_qemu() {
    assert_eq!(compare_kernel("paging").1, 1);
}

#[test]
fn pagefault_matches_qemu() {
    assert_eq!(compare_kernel("pagefault").1, 1);
}

#[test]
fn pit_matches_qemu() {
    assert_eq!(compare_kernel("pit").1, 1);
}

#[test]
fn syscall_matches_qemu() {
    assert_eq!(compare_kernel("syscall").1, 1);
}

#[test]
fn cpu_self_test_matches_qemu() {
    let (out, status) = compare_kernel("cpu");
    assert_eq!(status, 1);
    assert!(out.lines().count() > 400);
}

#[test]
fn boot_sector_matches_qemu_with_seabios() {
    let path = guest("realmode.bin");
    let p = path.to_str().expect("utf-8 path");
    let drive = format!("format=raw,file={p}");
    let (out, status) = compare_run("realmode", &["-drive", &drive], &[p]);
    assert_eq!(status, 1);
    assert!(out.ends_with("are distinct\n"));
}

#[test]
fn demo_matches_qemu_except_the_timing_line() {
    qemu_available();
    let path = guest("demo.elf");
    let p = path.to_str().expect("utf-8 path");
    let q = run_qemu(&["-kernel", p]);
    let r = run_ringback(&[p]);
    // The tick count after the task depends on how fast the host ran it under
    // QEMU; under ringback it is a function of the instruction count.
    let strip = |o: &Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("tick count"))
            .map(String::from)
            .collect()
    };
    assert_eq!(strip(&r), strip(&q));
    assert_eq!(r.status.code(), q.status.code());
}

#[test]
fn triple_fault_output_matches_qemu_status_is_ours() {
    qemu_available();
    let path = guest("triplefault.elf");
    let p = path.to_str().expect("utf-8 path");
    let q = run_qemu(&["-kernel", p]);
    let r = run_ringback(&[p]);
    assert_eq!(r.stdout, q.stdout);
    // QEMU with -no-reboot turns the shutdown into a silent exit 0; ringback
    // reports it and exits 4 so scripts can tell a crash from a clean halt.
    assert_eq!(q.status.code(), Some(0));
    assert_eq!(r.status.code(), Some(4));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("triple fault") && err.contains("eip="), "{err}");
}

#[test]
fn aout_kludge_kernel_matches_qemu() {
    let path = guest("aout.bin");
    let p = path.to_str().expect("utf-8 path");
    let (out, status) = compare("aout", &["-kernel", p]);
    assert_eq!(status, 1);
    assert!(out.contains("bss zeroed"));
}

#[test]
fn platform_registers_match_qemu() {
    // fw_cfg, CMOS memory sizes, RTC format, i8042 self test, unmapped ports.
    let (out, status) = compare_kernel("platform");
    assert_eq!(status, 1);
    assert!(out.contains("fw_cfg signature: QEMU"), "{out}");
}

#[test]
fn benchmark_workloads_compute_the_same_checksums_as_qemu() {
    let path = guest("bench.elf");
    let p = path.to_str().expect("utf-8 path");
    for workload in common::BENCH_WORKLOADS {
        let (out, status) = compare(workload, &["-kernel", p, "-append", workload]);
        assert_eq!(status, 1, "{workload}");
        assert!(out.contains("checksum"), "{workload}: {out}");
    }
}

#[test]
fn ring_0_sees_its_true_flags_selectors_and_gdt_on_the_raw_engine() {
    // PUSHF, MOV r/m,CS and SGDT in ring 0: on the raw engine (the default)
    // the code scanner patches them, so the guest sees what QEMU shows it.
    let (out, status) = compare_kernel("ringleak");
    assert_eq!(status, 1);
    assert!(out.contains("IOPL 3, IF 1, CS 0008"), "{out}");
}
