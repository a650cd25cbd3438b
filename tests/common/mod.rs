//! Helpers the end-to-end tests share. Each test file is a crate of its
//! own and uses a part of this, so what one does not use is not dead.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

pub const RINGBACK: &str = env!("CARGO_BIN_EXE_ringback");
pub const QEMU: &str = "qemu-system-i386";

/// Fails with the set-up command to run when QEMU is missing (CI installs it).
pub fn qemu_available() {
    let ok = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{QEMU} is not installed; run the README's set-up command (bash scripts/setup.sh)"
    );
}

/// The options every comparison gives QEMU (and `ringback qemu`).
pub const QEMU_ARGS: &[&str] = &[
    "-display",
    "none",
    "-serial",
    "stdio",
    "-monitor",
    "none",
    "-no-reboot",
    "-m",
    "32",
    "-device",
    "isa-debug-exit,iobase=0xf4,iosize=0x04",
];

/// Every workload of the benchmark kernel (guests/bench.c) with a few rounds,
/// as its command line takes them.
pub const BENCH_WORKLOADS: [&str; 7] = [
    "int 2",
    "mem 1",
    "paging 20",
    "trap 2",
    "intoff 2",
    "trapoff 2",
    "datacode 2",
];

/// Runs qemu-system-i386 as the comparisons do: no display, COM1 on
/// stdout, no monitor, no reboot, 32 MiB, isa-debug-exit at 0xF4; `args`
/// name the kernel and anything else.
pub fn run_qemu(args: &[&str]) -> Output {
    Command::new(QEMU)
        .args(QEMU_ARGS)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run qemu-system-i386")
}

/// Runs the ringback binary with no input.
pub fn ringback(args: &[&str]) -> Output {
    Command::new(RINGBACK)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringback")
}

/// Writes `bytes` to a scratch file in a folder of this test process's
/// own (`tag` keeps test files apart); returns its path.
pub fn scratch(tag: &str, name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("ringback-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path.to_string_lossy().into_owned()
}

/// xorshift64*: small, seedable, the same on every host.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

use vm::engine::jit::JitConfig;
use vm::engine::raw::RawConfig;
use vm::machine::{Engine, Machine, StopReason};

/// Every engine configuration the agreement tests hold to the reference:
/// each engine of [`Engine::ALL`] as configured by default with every block
/// compiled at its first run, the same without the compiler, and the raw
/// engine without patches. A new engine is in `Engine::ALL`, and so it is
/// tested by every test that uses this.
pub fn engine_configurations() -> Vec<(String, Engine, RawConfig, JitConfig)> {
    let mut out = Vec::new();
    for e in Engine::ALL.into_iter().filter(|&e| e != Engine::Emulate) {
        out.push((e.name().to_string(), e, RawConfig::default(), JitConfig::EAGER));
        out.push((
            format!("{} --no-jit", e.name()),
            e,
            RawConfig::default(),
            JitConfig::OFF,
        ));
    }
    let no_patch = RawConfig {
        patching: false,
        ..RawConfig::default()
    };
    out.push(("raw --no-patch".into(), Engine::Raw, no_patch, JitConfig::EAGER));
    out
}

/// How a run ended.
pub struct Run {
    pub stop: StopReason,
    pub serial: Vec<u8>,
    pub machine: Machine,
}

/// Runs the same guest on the reference and on every other engine
/// configuration (`run` builds and runs it on the one given): each must end
/// with the reference's stop, output, machine state and RAM. Returns the
/// reference's run and the others', labelled.
pub fn assert_engines_agree(
    name: &str,
    run: impl Fn(Engine, RawConfig, JitConfig) -> Run,
) -> (Run, Vec<(String, Run)>) {
    let reference = run(Engine::Emulate, RawConfig::default(), JitConfig::OFF);
    let mut others = Vec::new();
    for (label, engine, config, jit) in engine_configurations() {
        let other = run(engine, config, jit);
        assert_eq!(reference.stop, other.stop, "{name} on {label}: stop reasons differ");
        assert_eq!(
            String::from_utf8_lossy(&reference.serial),
            String::from_utf8_lossy(&other.serial),
            "{name} on {label}: output differs"
        );
        assert_eq!(
            reference.machine.state(),
            other.machine.state(),
            "{name} on {label}: machine states differ"
        );
        let (a, b) = (reference.machine.platform.mem.ram(), other.machine.platform.mem.ram());
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!(
                "{name} on {label}: RAM differs first at {i:#x}: {:#x} vs {:#x}",
                a[i], b[i]
            );
        }
        others.push((label, other));
    }
    (reference, others)
}

/// Starts a server such as `ringback gdb TRACE --listen 127.0.0.1:0` (or
/// `run --gdb 127.0.0.1:0`) and reads the port it listens on.
pub fn serve(args: &[&str]) -> (Child, u16) {
    let mut child = Command::new(RINGBACK)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("ringback");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines.next().expect("server output").expect("line");
        if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

/// Runs Debian's gdb in batch mode on `script`; its stdout and stderr.
pub fn gdb_batch(tag: &str, script: &str) -> String {
    let path = scratch("gdb", &format!("{tag}.gdb"), script.as_bytes());
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-x", &path])
        .output()
        .expect("run gdb (bash scripts/setup.sh installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Raw-engine configurations under which what the engine learned matters
/// to the guest or not: the default, no scanner (ring compression leaks
/// until patches cover the sites), and two injected patch bugs.
pub fn learning_configurations() -> [RawConfig; 3] {
    [
        RawConfig::default(),
        RawConfig {
            scanner: false,
            ..RawConfig::default()
        },
        RawConfig {
            inject: "pushf-leak,stale-patch".parse().expect("bug names"),
            ..RawConfig::default()
        },
    ]
}
