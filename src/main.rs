//! The `ringback` command line.

/// `println!` for reports on standard output: a failed write (a full disk)
/// is an error for the caller to report, not a panic; a reader that went
/// away (`| head`) is not an error at all (see [`write_stdout`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())?
    };
}

mod bench;
mod bisect_cmd;
mod cli;
mod console;
mod qemu;
mod summary;
mod trace_cmd;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use cli::{exit_code, EngineArgs, RunArgs};
use vm::boot::Module;
use vm::engine::raw::Injection;
use vm::machine::{Engine, Kernel, Machine, StopReason};

/// The demo kernel (guests/demo.c), built from source by build.rs.
const DEMO_KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo.elf"));

const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "ringback",
    version,
    about = "Record/replay, debugger-oriented x86 full-system virtual machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a kernel and connect its serial console to the terminal.
    Run(RunArgs),
    /// Boot the built-in demo kernel: protected mode, paging, PIT interrupts
    /// and a ring 3 task making system calls.
    Demo {
        /// Stop after this many instructions.
        #[arg(long)]
        max_insns: Option<u64>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Measure guest MIPS of the reference engine on the CPU-bound benchmark
    /// kernel, and the same kernel under qemu-system-i386 when it is installed.
    Bench {
        /// One workload (int, mem, paging, trap, intoff, trapoff, datacode)
        /// instead of all.
        #[arg(long)]
        workload: Option<String>,
        /// Rounds per workload (default: a few seconds' worth each); with
        /// --linux, boots per configuration (default 3).
        #[arg(long)]
        rounds: Option<u32>,
        /// Skip the QEMU comparison.
        #[arg(long)]
        no_qemu: bool,
        /// Measure the debugger instead: record the integer workload (about
        /// 100 million instructions by default) and time reverse-stepi and
        /// a reverse-continue to a watchpoint over the whole trace.
        #[arg(long)]
        reverse: bool,
        /// With --reverse: time reverse-stepi at positions across this
        /// trace instead (cold, right after a seek there, then repeated).
        #[arg(long, value_name = "FILE.rbt", requires = "reverse")]
        trace: Option<PathBuf>,
        /// Measure bisect instead: record the patch-bug guest (about 100
        /// million instructions by default) once per injected bug class and
        /// once clean, and time `ringback bisect` on each trace.
        #[arg(long)]
        bisect: bool,
        /// Measure the inspector instead: record the integer workload (about
        /// a billion instructions by default) and time opening it and
        /// stepping backwards.
        #[arg(long)]
        tui: bool,
        /// Measure Debian's Linux boot instead (scripts/linux.sh's kernel
        /// and initramfs, or those in $RINGBACK_LINUX): seconds to /init's
        /// first line and to the end, running and recording, beside
        /// qemu-system-i386 (--rounds rounds taking turns, three by
        /// default; the fastest of each).
        #[arg(long)]
        linux: bool,
    },
    /// Run a qemu-system-i386 command line: `ringback qemu -kernel K
    /// -serial stdio ...` as `qemu-system-i386 -kernel K -serial stdio ...`
    /// (docs/qemu.md lists the options it takes), with QEMU's exit status.
    #[command(disable_help_flag = true)]
    Qemu {
        /// QEMU's options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "QEMU ARGS")]
        args: Vec<String>,
    },
    /// Boot a kernel like `run` and record the run into a trace file.
    Record {
        /// The trace file to write.
        #[arg(short, long, value_name = "FILE.rbt")]
        output: PathBuf,
        /// Instructions between checkpoints, fixed unless
        /// --adaptive-checkpoints (smaller: faster seeks, bigger file).
        /// Without it: 5000000, adapting to the guest.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        checkpoint_interval: Option<u64>,
        /// Adapt the interval to the guest: longer while it writes little
        /// memory, shorter while it writes much (within 8x either way). The
        /// default when no --checkpoint-interval is given: each checkpoint
        /// costs the recording a cold start of the raw engine's caches.
        #[arg(long)]
        adaptive_checkpoints: bool,
        #[command(flatten)]
        run: RunArgs,
        /// Take the run's options as a qemu-system-i386 command line: the
        /// rest of the arguments (as `ringback qemu` takes them).
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "QEMU ARGS")]
        qemu: Option<Vec<String>>,
    },
    /// Re-run a recorded guest from its trace, feeding the recorded inputs.
    /// Exit status with --verify: 0 an intact, finished trace replayed to
    /// identical digests; 1 a divergence (the file itself checked out); 2
    /// anything wrong with the file, or a recording that never finished
    /// (unless --allow-incomplete).
    Replay {
        trace: PathBuf,
        /// Verify a trace whose recorder was killed, up to its last
        /// complete checkpoint, and exit 0 if that part matches.
        #[arg(long)]
        allow_incomplete: bool,
        /// Run guest code with this engine instead of the recorded one.
        #[arg(long)]
        engine: Option<Engine>,
        /// Replay without patches.
        #[arg(long)]
        no_patch: bool,
        /// Interpret every block, never compile one to host code.
        #[arg(long)]
        no_jit: bool,
        /// Compare machine digests at every checkpoint; stop at the first
        /// mismatch with a report.
        #[arg(long)]
        verify: bool,
        /// Replay (and verify) only up to the first checkpoint at or after
        /// this icount: a prefix of a long trace, e.g. on the reference.
        #[arg(long, value_name = "ICOUNT")]
        until: Option<u64>,
    },
    /// Find the first instruction where the raw engine with its patches
    /// computes something else than the reference engine, and the patch
    /// that causes it. Exit status (for `git bisect run`): 0 no
    /// divergence, 1 divergence, 125 unusable input, 130 interrupted.
    Bisect {
        trace: PathBuf,
        /// Compare with a second recording of the same guest and input
        /// instead: digests, events, then each one's configuration replayed.
        #[arg(long, value_name = "B.rbt")]
        against: Option<PathBuf>,
        /// Patch bugs to inject on the patched side (default: as recorded).
        #[arg(long, value_name = "LIST")]
        inject: Option<Injection>,
        /// Threads comparing checkpoint intervals (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Replays the culprit search may run at most.
        #[arg(long, default_value_t = 200)]
        culprit_budget: u32,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Bisect a trace whose recorder was killed, up to its last
        /// complete checkpoint (otherwise it is unusable: 125).
        #[arg(long)]
        allow_incomplete: bool,
        /// Compare only the checkpoint intervals before this icount (up to
        /// the first checkpoint at or after it): a prefix of a long trace.
        #[arg(long, value_name = "ICOUNT")]
        until: Option<u64>,
    },
    /// Browse a trace in the terminal: events, disassembly, registers,
    /// memory, serial output, patches; step forwards and backwards.
    Tui {
        trace: PathBuf,
        /// Open at this icount (for example the divergence `ringback
        /// bisect --json` reports as report.divergence.found.icount).
        #[arg(long, value_name = "ICOUNT")]
        at: Option<u64>,
    },
    /// Serve a trace to gdb (`target remote :1234`), forwards and backwards.
    Gdb {
        trace: PathBuf,
        /// Address to listen on (loopback unless told otherwise).
        #[arg(long, default_value = "127.0.0.1:1234")]
        listen: String,
        /// Replay guest code with this engine instead of the recorded one.
        #[arg(long)]
        engine: Option<Engine>,
    },
    /// Describe a trace: instructions, speed, events, patches, sizes.
    Info {
        trace: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Run a folder of single-instruction test vectors and print pass rates.
    Conformance {
        /// Folder in the SingleStepTests JSON-lines format.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Print every form, not only the ones with failures.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringback: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_command(&args),
        Command::Demo { max_insns, engine } => {
            let kernel = Kernel::Multiboot {
                image: DEMO_KERNEL.to_vec(),
                cmdline: "demo".into(),
                modules: vec![],
            };
            if std::io::stdout().is_terminal() {
                return demo_then_inspect(&kernel, max_insns, engine);
            }
            // The demo kernel reports success as QEMU's isa-debug-exit status 1;
            // for the README's first command that is a plain success.
            Ok(match run_kernel(&kernel, 32 << 20, &demo_args(max_insns, engine))? {
                StopReason::ExitDevice(1) => ExitCode::SUCCESS,
                stop => exit_code(&stop),
            })
        }
        Command::Conformance { dir, json, verbose } => conformance(&dir, json, verbose),
        Command::Qemu { args } => qemu_command(&args),
        Command::Record {
            output,
            checkpoint_interval,
            adaptive_checkpoints,
            run,
            qemu: qemu_args,
        } => {
            let run = match qemu_args {
                None => run,
                Some(args) => {
                    if run.kernel.is_some() || run.bios.is_some() {
                        bail!("--qemu takes the kernel from its own arguments (-kernel FILE); give no other");
                    }
                    let (run, _, notes) = qemu::parse(&args)?.into_run_args()?;
                    for note in notes {
                        eprintln!("ringback: note: {note}");
                    }
                    run
                }
            };
            let (kernel, ram) = load_kernel(&run)?;
            let adaptive = adaptive_checkpoints || checkpoint_interval.is_none();
            let checkpoint_interval = checkpoint_interval.unwrap_or(replay::DEFAULT_CHECKPOINT_INTERVAL);
            if let Some(addr) = &run.gdb {
                return trace_cmd::live_gdb(&output, &kernel, ram, &run, checkpoint_interval, addr);
            }
            trace_cmd::record(&output, &kernel, ram, &run, checkpoint_interval, adaptive)
        }
        Command::Replay {
            trace,
            allow_incomplete,
            engine,
            no_patch,
            no_jit,
            verify,
            until,
        } => trace_cmd::replay(&trace, engine, no_patch, no_jit, verify, allow_incomplete, until),
        Command::Info { trace, json } => trace_cmd::info(&trace, json),
        Command::Tui { trace, at } => {
            tui::run(&trace, at).map_err(anyhow::Error::new)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bisect {
            trace,
            against,
            inject,
            jobs,
            culprit_budget,
            json,
            allow_incomplete,
            until,
        } => bisect_cmd::bisect(&bisect_cmd::Options {
            trace: &trace,
            against: against.as_deref(),
            inject,
            jobs,
            json,
            budget: culprit_budget,
            allow_incomplete,
            until,
        }),
        Command::Gdb { trace, listen, engine } => trace_cmd::gdb(&trace, &listen, engine),
        Command::Bench {
            reverse: true,
            trace: Some(trace),
            ..
        } => bench::reverse_on(&trace),
        Command::Bench {
            rounds, reverse: true, ..
        } => bench::reverse(rounds.unwrap_or(40)),
        Command::Bench {
            rounds, bisect: true, ..
        } => bench::bisect(rounds.unwrap_or(100)),
        Command::Bench { rounds, tui: true, .. } => bench::tui(rounds.unwrap_or(360)),
        Command::Bench {
            linux: true,
            no_qemu,
            rounds,
            ..
        } => {
            let dir = std::env::var_os("RINGBACK_LINUX")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target/linux"));
            bench::linux(&dir, !no_qemu, rounds.unwrap_or(3))
        }
        Command::Bench {
            workload,
            rounds,
            no_qemu,
            ..
        } => bench::run(workload.as_deref(), rounds, !no_qemu),
    }
}

/// The demo's run: 32 MiB, the console on stdio.
fn demo_args(max_insns: Option<u64>, engine: EngineArgs) -> RunArgs {
    RunArgs {
        kernel: Some("demo.elf".into()),
        mem: "32M".into(),
        max_insns,
        engine,
        ..RunArgs::defaults()
    }
}

/// On a terminal the demo is recorded, then opened in the inspector.
fn demo_then_inspect(kernel: &Kernel, max_insns: Option<u64>, engine: EngineArgs) -> Result<ExitCode> {
    let path = std::env::temp_dir().join(format!("ringback-demo-{}.rbt", std::process::id()));
    remove_on_signal(&path);
    let args = RunArgs {
        serial: "stdout".into(),
        ..demo_args(max_insns, engine)
    };
    let recorded = trace_cmd::record(
        &path,
        kernel,
        32 << 20,
        &args,
        replay::DEFAULT_CHECKPOINT_INTERVAL,
        false,
    );
    let inspected = recorded.and_then(|_| {
        eprintln!("ringback: opening the recording in the inspector (? lists the keys, q quits)");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        tui::run(&path, None).map_err(anyhow::Error::new)
    });
    let _ = std::fs::remove_file(&path);
    inspected?;
    Ok(ExitCode::SUCCESS)
}

/// A kernel or module file: nothing larger than guest RAM can load, so
/// nothing larger is read (a path like /dev/zero is refused, not read until
/// memory runs out).
fn read_file(path: &Path, what: &str, ram: u64) -> Result<Vec<u8>> {
    Ok(vm::boot::read_image(path, what, ram)?)
}

/// The kernel and RAM size a `run` or `record` command line describes.
fn load_kernel(args: &RunArgs) -> Result<(Kernel, u64)> {
    let ram = vm::boot::parse_mem_size(&args.mem)?;
    let Some(kernel_path) = &args.kernel else {
        let path = args.bios.as_deref().context("a kernel or --bios FILE is needed")?;
        // QEMU's limit for a BIOS image: 16 MiB.
        let image = read_file(path, "BIOS image", 16 << 20)?;
        return Ok((Kernel::Bios { image }, ram));
    };
    let image = read_file(kernel_path, "kernel", ram)?;
    let flat = args.flat.is_some() || (!vm::boot::is_multiboot(&image) && vm::boot::is_boot_sector(&image));
    if flat && (!args.modules.is_empty() || args.initrd.is_some()) {
        bail!("--module and --initrd need a multiboot or Linux kernel, not a flat binary");
    }
    let kernel = if flat {
        Kernel::Flat {
            image,
            addr: args.flat.unwrap_or(0x7C00),
        }
    } else if !vm::boot::is_multiboot(&image) && vm::boot::is_linux(&image) {
        if !args.modules.is_empty() {
            bail!("--module is for multiboot kernels; a Linux kernel takes its initramfs with --initrd");
        }
        let initrd = match &args.initrd {
            Some(path) => Some(read_file(path, "initrd", ram)?),
            None => None,
        };
        Kernel::Linux {
            image,
            initrd,
            cmdline: args.append.clone(),
        }
    } else {
        let mut modules = Vec::new();
        for spec in &args.modules {
            let file = spec.split_whitespace().next().context("--module needs a file name")?;
            modules.push(Module {
                data: read_file(Path::new(file), "module", ram)?,
                cmdline: spec.clone(),
            });
        }
        if let Some(path) = &args.initrd {
            modules.push(Module {
                data: read_file(path, "initrd", ram)?,
                cmdline: path.display().to_string(),
            });
        }
        let cmdline = format!("{} {}", kernel_path.display(), args.append);
        Kernel::Multiboot {
            image,
            cmdline,
            modules,
        }
    };
    Ok((kernel, ram))
}

/// `ringback qemu`: the command line mapped, the run, QEMU's exit status.
fn qemu_command(args: &[String]) -> Result<ExitCode> {
    if args.iter().any(|a| matches!(a.as_str(), "-h" | "-help" | "--help")) {
        outln!("{}", qemu::USAGE.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let (run, no_reboot, notes) = qemu::parse(args)?.into_run_args()?;
    for note in notes {
        eprintln!("ringback: note: {note}");
    }
    if run.gdb.is_some() {
        return run_command(&run);
    }
    let (kernel, ram) = load_kernel(&run)?;
    let stop = run_kernel(&kernel, ram, &run)?;
    Ok(match stop {
        StopReason::ExitDevice(status) => ExitCode::from(status as u8),
        // A reset, or a triple fault (which resets a PC): QEMU with
        // -no-reboot exits with 0; without it QEMU would boot again.
        StopReason::Reset | StopReason::TripleFault { .. } => {
            if !no_reboot {
                eprintln!(
                    "ringback: note: the guest reset; QEMU without -no-reboot would boot it again, ringback stops"
                );
            }
            ExitCode::SUCCESS
        }
        stop => exit_code(&stop),
    })
}

fn run_command(args: &RunArgs) -> Result<ExitCode> {
    let (kernel, ram) = load_kernel(args)?;
    if let Some(addr) = &args.gdb {
        // Recorded into a scratch trace, removed when the session ends,
        // however it ends.
        let path = std::env::temp_dir().join(format!("ringback-live-{}.rbt", std::process::id()));
        remove_on_signal(&path);
        let result = trace_cmd::live_gdb(&path, &kernel, ram, args, replay::DEFAULT_CHECKPOINT_INTERVAL, addr);
        let _ = std::fs::remove_file(&path);
        return result;
    }
    Ok(exit_code(&run_kernel(&kernel, ram, args)?))
}

/// A scratch file that must not outlive the process: removed on SIGINT,
/// SIGTERM or SIGHUP, after which the process exits with 130 (interrupted).
fn remove_on_signal(path: &Path) {
    let path = path.to_path_buf();
    let handler = ctrlc::set_handler(move || {
        let _ = std::fs::remove_file(&path);
        std::process::exit(130);
    });
    if let Err(e) = handler {
        eprintln!("ringback: warning: cannot catch signals ({e}); a scratch trace may be left behind");
    }
}

/// Boots and runs a kernel, then reports on stderr how the run went.
fn run_kernel(kernel: &Kernel, ram: u64, args: &RunArgs) -> Result<StopReason> {
    let (mut console, mut input) = console::open(&args.serial, args.rtc_base)?;
    console.set_debugcon(&args.debugcon)?;
    let mut machine = Machine::boot(ram, kernel, &mut input)?;
    args.engine.apply(&mut machine);
    let started = Instant::now();
    let stop = machine.run(args.max_insns.unwrap_or(u64::MAX), &mut input, &mut console);
    let wall = started.elapsed().as_secs_f64();
    console.finish()?;
    eprint!("{}", summary::render(&machine, &stop, wall));
    match &stop {
        StopReason::TripleFault { state, .. } => {
            eprintln!(
                "ringback: the guest shut the processor down; CPU state:\n{}",
                state.dump()
            )
        }
        StopReason::FaultLoop { state, .. } => {
            eprintln!("ringback: the guest is stuck faulting; CPU state:\n{}", state.dump())
        }
        _ => {}
    }
    Ok(stop)
}

fn conformance(dir: &Path, json: bool, verbose: bool) -> Result<ExitCode> {
    let report = vm::conformance::run_dir(dir, |_| {})?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.forms {
            let total = f.passed + f.failed;
            if f.failed == 0 && f.known.is_empty() && !verbose {
                continue;
            }
            let rate = if total == 0 {
                100.0
            } else {
                100.0 * f.passed as f64 / total as f64
            };
            let known: u64 = f.known.values().sum();
            let tag = if known > 0 {
                format!(" ({known} known differences)")
            } else {
                String::new()
            };
            outln!(
                "{:<8} {:>6} passed {:>6} failed {:>6.2}%{tag}",
                f.form,
                f.passed,
                f.failed,
                rate
            );
            for fail in &f.failures {
                outln!("    {fail}");
            }
        }
        if report.known > 0 {
            let mut by_key = std::collections::BTreeMap::<&str, u64>::new();
            for f in &report.forms {
                for (k, n) in &f.known {
                    *by_key.entry(k.as_str()).or_default() += n;
                }
            }
            outln!(
                "known 286-versus-i686 differences ({} vectors, not counted as passes):",
                report.known
            );
            for (key, reason) in vm::conformance::KNOWN_DIFFERENCES {
                if let Some(n) = by_key.get(key) {
                    outln!("  {key}: {n} vectors: {reason}");
                }
            }
        }
        outln!(
            "{} passed, {} failed, {} known differences ({:.3}% of the vectors without a known difference, \
             {:.3}% of all {}; {} revoked skipped)",
            report.passed,
            report.failed,
            report.known,
            100.0 * report.passed as f64 / (report.passed + report.failed).max(1) as f64,
            100.0 * report.pass_rate(),
            report.passed + report.failed + report.known,
            report.skipped
        );
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
