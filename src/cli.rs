//! What the commands share: the run options (`RunArgs`, `EngineArgs`),
//! how a run's end becomes the process status, and writing reports to
//! standard output.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use vm::engine::jit::JitConfig;
use vm::engine::raw::{Injection, RawConfig};
use vm::machine::{Engine, Machine, StopReason};

/// Exit status for a guest that crashed the machine (triple fault, fault
/// loop): even, so it never collides with an isa-debug-exit status (always
/// odd) or with 2, our own error status.
const EXIT_GUEST_CRASH: u8 = 4;

#[derive(Args)]
pub struct RunArgs {
    /// A multiboot v1 kernel (ELF or a.out kludge), a Linux bzImage, a
    /// 512-byte boot sector, or, with --flat, any flat binary (or --bios).
    pub kernel: Option<PathBuf>,
    /// Start from the reset vector with this firmware ROM instead of a
    /// kernel (QEMU's -bios): mapped to end at 4 GiB, its last 128 KiB also
    /// at 0xE0000-0xFFFFF; the ROM is the firmware and loads what it boots.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "append", "initrd", "modules", "flat"])]
    pub bios: Option<PathBuf>,
    /// Kernel command line (for a multiboot kernel, appended to its file
    /// name, as QEMU does).
    #[arg(long, default_value = "")]
    pub append: String,
    /// An initial RAM disk: a Linux kernel's initrd (an initramfs cpio), or
    /// for a multiboot kernel one more module, as QEMU's -initrd.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// A multiboot module: "FILE" or "FILE ARGS"; the whole string is the
    /// module's command line, as with QEMU's -initrd. Repeatable.
    #[arg(long = "module", value_name = "FILE[ ARGS]")]
    pub modules: Vec<String>,
    /// RAM size: MiB, or with a K/M/G suffix.
    #[arg(long, default_value = "128M")]
    pub mem: String,
    /// Stop after this many instructions.
    #[arg(long)]
    pub max_insns: Option<u64>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Where COM1 and the port 0xE9 console go: stdio, stdout (output
    /// only, no input), none, or a file.
    #[arg(long, default_value = "stdio")]
    pub serial: String,
    /// Start the RTC at this Unix time instead of the host's clock (QEMU's
    /// -rtc base=): two recordings of the same guest and input then match.
    #[arg(long, value_name = "SECONDS")]
    pub rtc_base: Option<u64>,
    /// Wait for gdb before the first instruction (`target remote ADDR`,
    /// default 127.0.0.1:1234). The run records as it goes, so gdb can step
    /// and continue backwards on a live session too.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:1234")]
    pub gdb: Option<String>,
    /// Load the kernel as a flat binary at this physical address (e.g. 0x7c00)
    /// and enter it in real mode.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub flat: Option<u32>,
    /// Where the port 0xE9 debug console goes: serial (where COM1 goes),
    /// stdout, none, or a file (QEMU's -debugcon).
    #[arg(long, default_value = "serial")]
    pub debugcon: String,
}

impl RunArgs {
    /// The options as the command line's defaults leave them, for commands
    /// that build a run themselves (the demo, `ringback qemu`).
    pub fn defaults() -> Self {
        RunArgs {
            kernel: None,
            bios: None,
            append: String::new(),
            initrd: None,
            modules: Vec::new(),
            mem: "128M".into(),
            max_insns: None,
            engine: EngineArgs::default(),
            serial: "stdio".into(),
            rtc_base: None,
            gdb: None,
            flat: None,
            debugcon: "serial".into(),
        }
    }
}

/// How guest code runs. Every choice computes the same guest results (the
/// injected bugs excepted: they exist to be found).
#[derive(Args, Clone, Copy, Default)]
pub struct EngineArgs {
    /// raw: cached blocks with guest ring 0 compressed into ring 1, the
    /// monitor, code scanner and patch manager; emulate: the reference,
    /// decoding each instruction; blocks: cached blocks at the guest's true
    /// privilege (raw without ring compression).
    #[arg(long, default_value = "raw")]
    pub engine: Engine,
    /// Raw engine: no patches; every sensitive or privileged site traps.
    #[arg(long)]
    pub no_patch: bool,
    /// Raw engine: no code scanner, so sensitive instructions run at ring 1
    /// and show ring-1 values (to see what ring compression leaks).
    #[arg(long)]
    pub no_scan: bool,
    /// Raw engine: inject patch bugs, comma-separated: pushf-leak,
    /// sti-shadow, scan-miss, stale-patch.
    #[arg(long, value_name = "BUGS")]
    pub inject: Option<Injection>,
    /// raw and blocks: interpret every block, never compile one to host code.
    #[arg(long)]
    pub no_jit: bool,
}

impl EngineArgs {
    pub fn apply(&self, machine: &mut Machine) {
        machine.engine = self.engine;
        machine.raw.config = RawConfig {
            patching: !self.no_patch,
            scanner: !self.no_scan,
            inject: self.inject.unwrap_or_default(),
        };
        if self.no_jit {
            machine.blocks.jit.config = JitConfig::OFF;
        }
    }
}

pub(crate) fn parse_addr(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|e| format!("'{s}' is not an address: {e}"))
}

/// Writes a report to standard output. A reader that has gone away
/// (`ringback info T | head`) ends the output quietly: the exit status stays
/// the command's own verdict, as with well-behaved Unix tools that ignore
/// SIGPIPE. Any other failure (a full disk) is an error naming the cause.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to standard output"),
    }
}

/// The process status for how a run ended (see the README).
pub fn exit_code(stop: &StopReason) -> ExitCode {
    match stop {
        StopReason::ExitDevice(status) => ExitCode::from(*status as u8),
        StopReason::TripleFault { .. } | StopReason::FaultLoop { .. } => ExitCode::from(EXIT_GUEST_CRASH),
        StopReason::HaltedForever
        | StopReason::IdleForever
        | StopReason::InsnLimit
        | StopReason::Stopped
        | StopReason::Reset
        | StopReason::Breakpoint(_)
        | StopReason::Watchpoint { .. } => ExitCode::SUCCESS,
    }
}
