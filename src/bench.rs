//! `ringback bench`: guest MIPS on the CPU-bound benchmark kernel
//! (guests/bench.c), for ringback's engines and for Debian's qemu-system-i386
//! on the same kernel in the same run.
//!
//! Both are timed for one round and for N rounds; the difference removes
//! boot and start-up costs, so the figures are per executed guest instruction.

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use vm::host::NoInput;
use vm::machine::{CaptureConsole, Engine, Kernel, Machine, StopReason};

const QEMU_ROUNDS_FACTOR: u32 = 10;

const BENCH_KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench.elf"));

struct Sample {
    icount: u64,
    seconds: f64,
    output: String,
}

fn run_engine(engine: Engine, rounds: u32) -> Result<Sample> {
    let kernel = Kernel::Multiboot {
        image: BENCH_KERNEL.to_vec(),
        cmdline: format!("bench.elf {rounds}"),
        modules: vec![],
    };
    let mut host = NoInput::default();
    let mut m = Machine::boot(32 << 20, &kernel, &mut host)?;
    m.engine = engine;
    let mut console = CaptureConsole::default();
    let start = Instant::now();
    let stop = m.run(u64::MAX, &mut host, &mut console);
    let seconds = start.elapsed().as_secs_f64();
    let output = String::from_utf8_lossy(&console.serial).into_owned();
    if stop != StopReason::ExitDevice(1) {
        bail!("the benchmark kernel stopped unexpectedly: {stop}\n{output}");
    }
    Ok(Sample {
        icount: m.icount(),
        seconds,
        output,
    })
}

fn run_qemu(kernel: &std::path::Path, rounds: u32) -> Result<(f64, String)> {
    let start = Instant::now();
    let out = Command::new("qemu-system-i386")
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-m",
            "32",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel"])
        .arg(kernel)
        .args(["-append", &rounds.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running qemu-system-i386")?;
    let seconds = start.elapsed().as_secs_f64();
    if out.status.code() != Some(1) {
        bail!(
            "qemu-system-i386 did not finish the benchmark (status {:?})",
            out.status.code()
        );
    }
    Ok((seconds, String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub fn run(rounds: u32, with_qemu: bool) -> Result<ExitCode> {
    if rounds < 2 {
        bail!("--rounds must be at least 2");
    }
    let one = run_engine(Engine::Emulate, 1)?;
    let many = run_engine(Engine::Emulate, rounds)?;
    let insns = many.icount - one.icount;
    let secs = many.seconds - one.seconds;
    println!(
        "benchmark kernel: {} rounds, {} instructions; {}",
        rounds,
        many.icount,
        many.output.trim()
    );
    println!(
        "reference engine (emulate): {:.1} MIPS ({insns} instructions in {secs:.3} s)",
        insns as f64 / secs / 1e6
    );
    let b_one = run_engine(Engine::Blocks, 1)?;
    let b_many = run_engine(Engine::Blocks, rounds)?;
    if b_many.icount != many.icount || b_many.output != many.output {
        bail!(
            "the blocks engine disagrees with the reference: {} vs {} instructions",
            b_many.icount,
            many.icount
        );
    }
    let b_secs = b_many.seconds - b_one.seconds;
    println!(
        "block cache (blocks): {:.1} MIPS ({:.2}x the reference, same instructions and output)",
        insns as f64 / b_secs / 1e6,
        secs / b_secs
    );

    let qemu_ok = with_qemu
        && Command::new("qemu-system-i386")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if qemu_ok {
        let dir = std::env::temp_dir().join(format!("ringback-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("bench.elf");
        std::fs::write(&path, BENCH_KERNEL)?;
        // QEMU is so much faster that its start-up noise would swamp a
        // difference over the same rounds: give it ten times as many, and
        // count the guest instructions those rounds take under ringback.
        let (q1, _) = run_qemu(&path, 1)?;
        let (_, qout) = run_qemu(&path, rounds)?;
        let q_rounds = rounds * QEMU_ROUNDS_FACTOR;
        let (qbig, _) = run_qemu(&path, q_rounds)?;
        let _ = std::fs::remove_dir_all(&dir);
        let same = if qout.trim() == many.output.trim() {
            "same checksum"
        } else {
            "DIFFERENT OUTPUT"
        };
        let per_round = insns as f64 / f64::from(rounds - 1);
        let q_insns = per_round * f64::from(q_rounds - 1);
        println!(
            "qemu-system-i386 (TCG): {:.1} MIPS-equivalent ({q_rounds} rounds, about {:.0} million instructions, \
             in {:.3} s; at {rounds} rounds: {same})",
            q_insns / (qbig - q1) / 1e6,
            q_insns / 1e6,
            qbig - q1
        );
    } else if with_qemu {
        println!("qemu-system-i386 not found: no comparison (bash scripts/setup.sh installs it)");
    }
    Ok(ExitCode::SUCCESS)
}
