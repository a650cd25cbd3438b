//! Builds the guest kernels in guests/ (see guests/README.md) with the host's
//! gcc and GNU ld into OUT_DIR: the demo kernel that `ringback demo` embeds,
//! and the test kernels the end-to-end tests boot. They are freestanding
//! 32-bit code, so a stock x86-64 gcc with `-m32` and no 32-bit libc suffices.

use std::path::{Path, PathBuf};
use std::process::Command;

const CFLAGS: &[&str] = &[
    "-m32",
    "-march=i686",
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-mgeneral-regs-only",
    "-nostdlib",
    "-nostdinc",
    "-O2",
    "-g",
    "-Wall",
    "-Wextra",
];

const MULTIBOOT_KERNELS: &[&str] = &[
    "hello",
    "paging",
    "pagefault",
    "pit",
    "syscall",
    "triplefault",
    "demo",
    "cpu",
    "echo",
    "bench",
    "platform",
    "ringleak",
    "patchbugs",
    "gdbdemo",
    "apic",
    "tasks",
    "testdev",
];

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("building the guest kernels failed ({s}): {shown}"),
        Err(e) => panic!(
            "building the guest kernels needs gcc (with -m32 support) and GNU ld on PATH: {e}\n  command: {shown}"
        ),
    }
}

fn compile(src: &Path, obj: &Path) {
    run(Command::new("gcc").args(CFLAGS).arg("-c").arg(src).arg("-o").arg(obj));
}

fn main() {
    let guests =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=guests");

    let common: Vec<PathBuf> = ["common/rt.c", "common/isr.S", "common/multiboot.S"]
        .iter()
        .map(|f| guests.join(f))
        .collect();
    for name in MULTIBOOT_KERNELS {
        let dir = out.join("guest-objs").join(name);
        std::fs::create_dir_all(&dir).expect("create guest object directory");
        let mut objs = Vec::new();
        for src in common.iter().chain(std::iter::once(&guests.join(format!("{name}.c")))) {
            let file = src
                .file_name()
                .expect("source file name")
                .to_string_lossy()
                .into_owned();
            let obj = dir.join(format!("{file}.o"));
            compile(src, &obj);
            objs.push(obj);
        }
        run(Command::new("ld")
            .args(["-m", "elf_i386", "-z", "max-page-size=0x1000", "--build-id=none", "-T"])
            .arg(guests.join("common/link.ld"))
            .arg("-o")
            .arg(out.join(format!("{name}.elf")))
            .args(&objs));
    }

    flat_image(&guests, &out, "aout", "aout.S", "aout.ld");
    flat_image(&guests, &out, "realmode", "realmode.S", "realmode.ld");
    flat_image(&guests, &out, "resetrom", "resetrom.S", "resetrom.ld");
}

/// An assembly guest linked by its own script and stripped to a flat binary.
fn flat_image(guests: &Path, out: &Path, name: &str, source: &str, script: &str) {
    let obj = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    run(Command::new("gcc")
        .args(["-m32", "-c"])
        .arg(guests.join(source))
        .arg("-o")
        .arg(&obj));
    run(Command::new("ld")
        .args(["-m", "elf_i386", "-T"])
        .arg(guests.join(script))
        .arg("-o")
        .arg(&elf)
        .arg(&obj));
    run(Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(out.join(format!("{name}.bin"))));
}
