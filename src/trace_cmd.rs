//! `ringback record`, `replay` and `info`: the command-line side of the
//! trace crate.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use replay::format::FrameKind;
use replay::model::TraceHeader;
use replay::{ReplayOptions, Replayer, Trace};
use vm::engine::jit::JitConfig;
use vm::engine::raw::RawConfig;
use vm::events::Event;
use vm::host::{HostInput, NoInput};
use vm::machine::{Engine, Kernel, Machine};

use crate::cli::{exit_code, RunArgs};
use crate::{console, summary};

/// A progress bar on stderr when it is a terminal, hidden otherwise.
fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    // With no known end (a run without --max-insns), a counter instead of a bar.
    let (bar, template) = if len == 0 {
        (
            ProgressBar::no_length(),
            "{spinner} {msg}: {pos} instructions ({per_sec})",
        )
    } else {
        (
            ProgressBar::new(len),
            "{msg} [{bar:40}] {pos}/{len} instructions ({eta})",
        )
    };
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// The console, host input, booted machine and trace header for recording
/// `kernel` as `args` say. The RTC start is asked once; the trace keeps it.
fn prepare(
    kernel: &Kernel,
    ram: u64,
    args: &RunArgs,
    checkpoint_interval: u64,
    adaptive_checkpoints: bool,
) -> Result<(console::HostConsole, console::StdinInput, Machine, TraceHeader)> {
    let (mut console, mut input) = console::open(&args.serial, args.rtc_base)?;
    console.set_debugcon(&args.debugcon)?;
    let rtc_start = input.rtc_start();
    let mut machine = Machine::boot(ram, kernel, &mut NoInput { rtc_start })?;
    args.engine.apply(&mut machine);
    let header = TraceHeader::for_machine(
        concat!("ringback ", env!("CARGO_PKG_VERSION")),
        kernel,
        &machine,
        rtc_start,
        checkpoint_interval,
        adaptive_checkpoints,
    );
    Ok((console, input, machine, header))
}

pub fn record(
    output: &Path,
    kernel: &Kernel,
    ram: u64,
    args: &RunArgs,
    checkpoint_interval: u64,
    adaptive_checkpoints: bool,
) -> Result<ExitCode> {
    let (mut console, mut input, mut machine, header) =
        prepare(kernel, ram, args, checkpoint_interval, adaptive_checkpoints)?;
    let max = args.max_insns.unwrap_or(u64::MAX);
    // The terminal belongs to the guest's console when it is interactive.
    let bar = if console.is_interactive() {
        ProgressBar::hidden()
    } else {
        progress_bar(args.max_insns.unwrap_or(0), "recording")
    };
    let result = replay::record(
        output,
        &header,
        &mut machine,
        &mut input,
        &mut console,
        max,
        &mut |icount| bar.set_position(icount),
    );
    bar.finish_and_clear();
    console.finish()?;
    let rec = result.with_context(|| format!("recording {}", output.display()))?;
    eprint!("{}", summary::render(&machine, &rec.stop, rec.wall_seconds));
    eprintln!(
        "ringback: trace {}: {} checkpoints, {} events, {} bytes ({} uncompressed)",
        output.display(),
        rec.checkpoints,
        rec.events,
        rec.write.compressed_bytes,
        rec.write.raw_bytes
    );
    Ok(exit_code(&rec.stop))
}

/// Opens a trace for a command, warning on stderr when it is incomplete.
pub(crate) fn open(path: &Path) -> Result<Trace> {
    let trace = Trace::open(path).with_context(|| format!("cannot use trace {}", path.display()))?;
    match (&trace.damage, &trace.end) {
        (Some(damage), _) => eprintln!(
            "ringback: warning: {} is incomplete (the recorder stopped early); readable up to its last complete frame: {damage}",
            path.display()
        ),
        (None, None) => eprintln!(
            "ringback: warning: {} is incomplete (the recorder stopped early); all its frames are readable",
            path.display()
        ),
        _ => {}
    }
    Ok(trace)
}

/// `replay`, and with `verify` the file check and digest comparison.
/// Exit status: 0 replayed (verified: an intact, finished trace replayed to
/// identical digests); 1 a divergence of a trace whose frames all check
/// out; 2 anything wrong with the file (an error), or, verifying, a trace
/// whose recording never finished unless `allow_incomplete`.
pub fn replay(
    path: &Path,
    engine: Option<Engine>,
    no_patch: bool,
    no_jit: bool,
    verify: bool,
    allow_incomplete: bool,
    until: Option<u64>,
) -> Result<ExitCode> {
    let trace = open(path)?;
    let options = ReplayOptions {
        engine,
        raw: no_patch.then_some(RawConfig {
            patching: false,
            ..trace.header.config.raw
        }),
        jit: no_jit.then_some(JitConfig::OFF),
    };
    let end = trace.checkpoint_frames().last().map_or(0, |c| c.icount);
    // Where the replay stops: the first checkpoint at or after --until.
    let stop_at = until.and_then(|u| trace.checkpoint_frames().iter().map(|c| c.icount).find(|&c| c >= u));
    let prefix = stop_at.filter(|&s| s < end);
    let started = std::time::Instant::now();
    let (insns, serial, divergence, verified) = if verify {
        let checking = progress_bar(end, "checking the file");
        let replaying = progress_bar(end, "verifying");
        let v = replay::verify_until(
            &trace,
            options,
            until,
            &mut |icount| checking.set_position(icount),
            &mut |icount| replaying.set_position(icount),
        );
        checking.finish_and_clear();
        replaying.finish_and_clear();
        let v = v.with_context(|| format!("cannot verify {}: the trace is damaged", path.display()))?;
        (v.icount, v.serial, v.divergence, Some(v.contents.checkpoints))
    } else {
        let mut r = Replayer::new(&trace, options)?;
        let bar = progress_bar(r.end_icount(), "replaying");
        let d = r.run_until(false, until, &mut |icount| bar.set_position(icount))?;
        bar.finish_and_clear();
        (r.icount(), std::mem::take(&mut r.console.serial), d, None)
    };
    let wall = started.elapsed().as_secs_f64();
    crate::cli::write_stdout(&serial)?;
    let mips = if wall > 0.0 { insns as f64 / wall / 1e6 } else { 0.0 };
    if let Some(d) = divergence {
        eprint!(
            "ringback: replay of {} diverged from the recording\n{d}",
            path.display()
        );
        return Ok(ExitCode::from(1));
    }
    let recorded = trace.end.as_ref().map_or("(recording cut short)", |e| e.stop.as_str());
    eprintln!(
        "ringback: replayed {insns} instructions in {wall:.3} s ({mips:.1} MIPS){}; recorded stop: {recorded}",
        match (verified, prefix) {
            (Some(n), Some(at)) => format!(
                ", {} of {n} checkpoints verified",
                trace.checkpoint_frames().iter().filter(|c| c.icount <= at).count()
            ),
            (Some(n), None) => format!(", {n} checkpoints verified"),
            (None, _) => String::new(),
        }
    );
    if let Some(at) = prefix {
        eprintln!(
            "ringback: replayed a prefix, up to the checkpoint at icount {at} of {end}, as --until asks{}",
            if verify { "; the whole file was checked" } else { "" }
        );
    }
    if verify && !trace.complete() {
        if allow_incomplete {
            eprintln!(
                "ringback: {} is incomplete: verified up to its last complete checkpoint (icount {end}), as --allow-incomplete asks",
                path.display()
            );
        } else {
            eprintln!(
                "ringback: {} is incomplete (the recording never finished): verified only up to icount {end}; \
                 not reporting it as verified (exit 2); pass --allow-incomplete to accept a partial trace",
                path.display()
            );
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct Info {
    file: String,
    format_version: u32,
    build: String,
    complete: bool,
    damage: Option<String>,
    instructions: u64,
    stop: Option<String>,
    wall_seconds: Option<f64>,
    mips_when_recorded: Option<f64>,
    engine: String,
    checkpoints: usize,
    checkpoint_interval: u64,
    adaptive_checkpoints: bool,
    events: usize,
    events_by_kind: BTreeMap<String, u64>,
    top_trap_sites: Vec<(String, u64)>,
    patches_installed: u64,
    patches_refused: u64,
    patches_removed: u64,
    compressed_bytes: u64,
    uncompressed_bytes: u64,
    bytes_by_frame_kind: BTreeMap<String, u64>,
    bytes_per_million_instructions: f64,
    bytes_per_million_instructions_without_checkpoints: f64,
}

fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::Trap { .. } => "trap",
        Event::Emulated { .. } => "emulated",
        Event::GuestException { .. } => "guest exception",
        Event::Interrupt { .. } => "interrupt",
        Event::EngineSwitch { .. } => "engine switch",
        Event::Scan { .. } => "scan",
        Event::PatchInstalled { .. } => "patch installed",
        Event::PatchRefused { .. } => "patch refused",
        Event::PatchRemoved { .. } => "patch removed",
        Event::PatchToggled { .. } => "patch toggled",
        Event::SelfModifyingWrite { .. } => "self-modifying write",
        Event::Io { mmio: false, .. } => "port i/o",
        Event::Io { mmio: true, .. } => "mmio",
    }
}

pub fn info(path: &Path, json: bool) -> Result<ExitCode> {
    let trace = open(path)?;
    let events = trace.events(0, u64::MAX)?;
    let mut by_kind = BTreeMap::<String, u64>::new();
    let mut sites = BTreeMap::<u32, u64>::new();
    for e in &events {
        *by_kind.entry(event_kind(&e.event).into()).or_default() += 1;
        if matches!(e.event, Event::Trap { .. }) {
            *sites.entry(e.pc).or_default() += 1;
        }
    }
    let mut top: Vec<(u32, u64)> = sites.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    let mut bytes_by_kind = BTreeMap::<String, u64>::new();
    let mut raw_bytes = 0;
    for f in &trace.frames {
        let name = FrameKind::from_u8(f.kind).map_or("unknown", |k| k.name());
        *bytes_by_kind.entry(name.into()).or_default() += u64::from(f.payload_len) + 28;
        raw_bytes += u64::from(f.raw_len);
    }
    let checkpoints = trace.checkpoint_frames();
    let instructions = trace
        .end
        .as_ref()
        .map_or_else(|| checkpoints.last().map_or(0, |c| c.icount), |e| e.icount);
    let millions = (instructions as f64 / 1e6).max(1e-9);
    let total = trace.file_len();
    let cp_bytes = bytes_by_kind.get("checkpoint").copied().unwrap_or(0);
    let count = |k: &str| by_kind.get(k).copied().unwrap_or(0);
    let info = Info {
        file: path.display().to_string(),
        format_version: replay::format::FORMAT_VERSION,
        build: trace.header.build.clone(),
        complete: trace.complete(),
        damage: trace.damage.clone(),
        instructions,
        stop: trace.end.as_ref().map(|e| e.stop.clone()),
        wall_seconds: trace.end.as_ref().map(|e| e.wall_seconds),
        mips_when_recorded: trace
            .end
            .as_ref()
            .filter(|e| e.wall_seconds > 0.0)
            .map(|e| e.icount as f64 / e.wall_seconds / 1e6),
        engine: format!("{:?}", trace.header.config.engine).to_lowercase(),
        checkpoints: checkpoints.len(),
        checkpoint_interval: trace.header.checkpoint_interval,
        adaptive_checkpoints: trace.header.adaptive_checkpoints,
        events: events.len(),
        top_trap_sites: top.iter().map(|(pc, n)| (format!("{pc:#x}"), *n)).collect(),
        patches_installed: count("patch installed"),
        patches_refused: count("patch refused"),
        patches_removed: count("patch removed"),
        events_by_kind: by_kind,
        compressed_bytes: total,
        uncompressed_bytes: raw_bytes,
        bytes_by_frame_kind: bytes_by_kind,
        bytes_per_million_instructions: total as f64 / millions,
        bytes_per_million_instructions_without_checkpoints: total.saturating_sub(cp_bytes) as f64 / millions,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("trace {} (format {}, {})", info.file, info.format_version, info.build);
    match (&info.stop, info.wall_seconds, info.mips_when_recorded) {
        (Some(stop), Some(w), Some(m)) => outln!(
            "  {} instructions, recorded in {w:.3} s ({m:.1} MIPS, engine {}); stopped: {stop}",
            info.instructions,
            info.engine
        ),
        _ => outln!("  {} instructions (recording incomplete)", info.instructions),
    }
    if info.adaptive_checkpoints {
        outln!(
            "  {} checkpoints, every {} instructions adapting to the guest (within 8x either way)",
            info.checkpoints,
            info.checkpoint_interval
        );
    } else {
        outln!(
            "  {} checkpoints every {} instructions",
            info.checkpoints,
            info.checkpoint_interval
        );
    }
    outln!("  {} events:", info.events);
    for (k, n) in &info.events_by_kind {
        outln!("    {k:22} {n}");
    }
    if !info.top_trap_sites.is_empty() {
        let s: Vec<String> = info
            .top_trap_sites
            .iter()
            .map(|(pc, n)| format!("{pc} ({n})"))
            .collect();
        outln!("  top trap sites: {}", s.join(", "));
    }
    outln!(
        "  patches: {} installed, {} refused, {} removed",
        info.patches_installed,
        info.patches_refused,
        info.patches_removed
    );
    outln!(
        "  size: {} bytes ({} uncompressed); {:.0} bytes per million instructions, {:.0} without checkpoints",
        info.compressed_bytes,
        info.uncompressed_bytes,
        info.bytes_per_million_instructions,
        info.bytes_per_million_instructions_without_checkpoints
    );
    for (k, n) in &info.bytes_by_frame_kind {
        outln!("    {k:12} {n} bytes");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gdb(path: &Path, listen: &str, engine: Option<Engine>) -> Result<ExitCode> {
    let trace = open(path)?;
    let replayer = Replayer::new(
        &trace,
        ReplayOptions {
            engine,
            raw: None,
            jit: None,
        },
    )?;
    let listener = gdb::listen(listen)?;
    let mut target = gdb::DebugTarget::new(replayer);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    gdb::serve(&mut target, listener, stop)?;
    Ok(ExitCode::SUCCESS)
}

/// `run --gdb` / `record --gdb`: the guest waits for gdb before its first
/// instruction and records into `path` as it runs.
pub fn live_gdb(
    path: &Path,
    kernel: &Kernel,
    ram: u64,
    args: &RunArgs,
    checkpoint_interval: u64,
    listen: &str,
) -> Result<ExitCode> {
    let (console, input, machine, header) = prepare(kernel, ram, args, checkpoint_interval, false)?;
    let listener = gdb::listen(listen)?;
    let (live, trace) = gdb::Live::start(path.to_path_buf(), &header, machine, Box::new(input), Box::new(console))?;
    let replayer = Replayer::shared(trace, ReplayOptions::default())?;
    let mut target = gdb::DebugTarget::new(replayer);
    target.live = Some(live);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    gdb::serve(&mut target, listener, stop)?;
    Ok(match target.live.as_ref().and_then(|l| l.stop.as_ref()) {
        Some(stop) => exit_code(stop),
        None => ExitCode::SUCCESS,
    })
}
