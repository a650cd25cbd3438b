//! Bisecting: the first instruction at which two ways of running the same
//! recording compute different things — the reference engine against the
//! raw engine with its patches, or the configurations of two recordings.
//!
//! 1. Intervals. Both sides start from the recorded state at checkpoint k
//!    and run to checkpoint k+1; the machines are compared directly (state,
//!    every RAM byte, serial output, input consumed). Each interval is
//!    checked on its own, so the intervals are spread over worker threads,
//!    in order, and the first differing one is found with no interval after
//!    it checked in vain. (Binary search over checkpoints would need the
//!    whole run from the start for every probe, and a divergence that later
//!    heals would break its monotony.)
//! 2. The instruction. Inside the interval, binary search on icount: both
//!    sides are kept at the last icount where they agree (clones of the
//!    whole machine, caches included) and run to the midpoint.
//! 3. The culprit. The patched side runs the interval again with subsets of
//!    the patches it had enabled suppressed (delta debugging, ddmin), to the
//!    smallest set that still gives the divergence.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use vm::engine::raw::patm::{Patch, PatchKey, PatchState};
use vm::engine::raw::RawConfig;
use vm::events::{EngineKind, Event, EventLog, EventRecord};
use vm::machine::{CaptureConsole, Engine, Machine, MachineState};

use crate::digest::RamHasher;
use crate::error::{Result, TraceError};
use crate::reader::Trace;
use crate::replay::{FinalStop, ReplayInput, ReplayOptions, Replayer};

/// How one side runs guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideConfig {
    pub engine: Engine,
    pub raw: RawConfig,
}

impl SideConfig {
    pub fn reference() -> Self {
        SideConfig {
            engine: Engine::Emulate,
            raw: RawConfig::default(),
        }
    }

    /// The configuration a trace was recorded with.
    pub fn recorded(trace: &Trace) -> Self {
        SideConfig {
            engine: trace.header.config.engine,
            raw: trace.header.config.raw,
        }
    }

    /// Whether the culprit search applies: the raw engine with patches.
    fn patches(&self) -> bool {
        self.engine == Engine::Raw && self.raw.patching
    }

    pub fn describe(&self) -> String {
        match self.engine {
            Engine::Emulate => "emulate (reference)".into(),
            Engine::Blocks => "blocks".into(),
            Engine::Raw => {
                let mut parts = vec![if self.raw.patching { "patches on" } else { "no patches" }.to_string()];
                if !self.raw.scanner {
                    parts.push("no scanner".into());
                }
                let inject = self.raw.inject;
                let bugs: Vec<&str> = [
                    (inject.pushf_leak, "pushf-leak"),
                    (inject.sti_shadow, "sti-shadow"),
                    (inject.scan_miss, "scan-miss"),
                    (inject.stale_patch, "stale-patch"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                if !bugs.is_empty() {
                    parts.push(format!("injected {}", bugs.join(",")));
                }
                format!("raw ({})", parts.join(", "))
            }
        }
    }

    fn options(&self) -> ReplayOptions {
        ReplayOptions {
            engine: Some(self.engine),
            raw: Some(self.raw),
        }
    }
}

/// One side's whole machine with its input and output: cloning it is a
/// snapshot the run can go on from exactly as if it had not stopped.
#[derive(Clone)]
pub struct Side {
    pub machine: Machine,
    pub input: ReplayInput,
    pub console: CaptureConsole,
    /// The recording's stop, replayed where the side reaches it, as the
    /// replayer does.
    final_stop: FinalStop,
}

impl Side {
    fn run_to(&mut self, target: u64) {
        self.final_stop
            .run(&mut self.machine, &mut self.input, &mut self.console, target, true);
    }

    fn agrees_with(&self, other: &Side) -> bool {
        agree(
            (&self.machine, &self.input, &self.console),
            (&other.machine, &other.input, &other.console),
            None,
        )
    }

    /// Makes this side a copy of `src`, all of its RAM included (copied
    /// into this side's own, nothing allocated).
    fn reset_to(&mut self, src: &mut Side) {
        let all: Vec<usize> = (0..src.machine.platform.mem.ram_size() / vm::mem::PAGE_SIZE).collect();
        self.copy_from(src, &all);
        self.machine.platform.mem.take_dirty();
    }

    /// Makes this side a copy of `src`, which differs from it in RAM only on
    /// `pages`.
    fn copy_from(&mut self, src: &mut Side, pages: &[usize]) {
        self.machine.copy_from(&mut src.machine, pages);
        copy_io(&mut self.input, &mut self.console, &src.input, &src.console);
        self.final_stop.clone_from(&src.final_stop);
    }
}

impl Side {
    /// A new side with the replayer's machine configured as `config`.
    fn from_replayer_with(r: &Replayer, config: SideConfig) -> Side {
        let mut side = Side {
            machine: r.machine.clone(),
            input: r.input.clone(),
            console: r.console.clone(),
            final_stop: r.final_stop.clone(),
        };
        side.machine.engine = config.engine;
        side.machine.raw.config = config.raw;
        side
    }

    /// Makes this side the replayer's machine (all of RAM copied into this
    /// side's own), configured as `config`.
    fn copy_all_from_replayer(&mut self, r: &mut Replayer, config: SideConfig) {
        let all: Vec<usize> = (0..r.machine.platform.mem.ram_size() / vm::mem::PAGE_SIZE).collect();
        self.machine.copy_from(&mut r.machine, &all);
        copy_io(&mut self.input, &mut self.console, &r.input, &r.console);
        self.final_stop.clone_from(&r.final_stop);
        self.machine.engine = config.engine;
        self.machine.raw.config = config.raw;
        self.machine.platform.mem.take_dirty();
    }
}

impl From<Replayer<'_>> for Side {
    fn from(r: Replayer<'_>) -> Side {
        let Replayer {
            machine,
            input,
            console,
            final_stop,
            ..
        } = r;
        Side {
            machine,
            input,
            console,
            final_stop,
        }
    }
}

/// Copies input position and output into existing buffers (the input log
/// itself is shared).
fn copy_io(
    input: &mut ReplayInput,
    console: &mut CaptureConsole,
    src_input: &ReplayInput,
    src_console: &CaptureConsole,
) {
    input.records = src_input.records.clone();
    input.cursor = src_input.cursor;
    input.mismatch.clone_from(&src_input.mismatch);
    console.serial.clone_from(&src_console.serial);
    console.debugcon.clone_from(&src_console.debugcon);
}

type View<'a> = (&'a Machine, &'a ReplayInput, &'a CaptureConsole);

/// Whether two machines are in the same state: CPU, devices, time, serial
/// output, input consumed, and RAM (only `pages` of it when the two are
/// known to agree elsewhere).
fn agree(a: View, b: View, pages: Option<&[usize]>) -> bool {
    let (ra, rb) = (a.0.platform.mem.ram(), b.0.platform.mem.ram());
    let ps = vm::mem::PAGE_SIZE;
    let ram_equal = match pages {
        None => ra == rb,
        Some(pages) => pages
            .iter()
            .all(|&p| ra.get(p * ps..(p + 1) * ps) == rb.get(p * ps..(p + 1) * ps)),
    };
    a.0.icount() == b.0.icount()
        && a.0.cpu.state == b.0.cpu.state
        && ram_equal
        && a.0.state() == b.0.state()
        && a.2.serial == b.2.serial
        && a.1.cursor == b.1.cursor
        && a.1.mismatch == b.1.mismatch
}

/// Steps both sides (agreeing, their dirty pages taken) one instruction at
/// a time up to `until`: the icount before the first step after which they
/// differ.
fn first_by_stepping(a: &mut Side, b: &mut Side, until: u64, ctl: &Control) -> Option<u64> {
    let mut steps = 0u64;
    while a.machine.icount() < until {
        let before = a.machine.icount();
        steps += 1;
        if steps % (1 << 16) == 1 {
            if ctl.cancelled() {
                return None;
            }
            (ctl.progress)(Stage::Stepping { at: before, until });
        }
        a.run_to(before + 1);
        b.run_to(before + 1);
        let da = a.machine.platform.mem.take_dirty();
        let db = b.machine.platform.mem.take_dirty();
        let pages = if db.is_empty() { da } else { union(&da, &db) };
        if !agree(
            (&a.machine, &a.input, &a.console),
            (&b.machine, &b.input, &b.console),
            Some(&pages),
        ) {
            return Some(before);
        }
        if a.machine.icount() == before {
            // The guest stopped (it exited, or can never run again).
            return None;
        }
    }
    None
}

fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut u: Vec<usize> = a.iter().chain(b).copied().collect();
    u.sort_unstable();
    u.dedup();
    u
}

/// What a bisect is doing, for a progress display.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    /// Checkpoint intervals compared so far, of `total`.
    Intervals { done: usize, total: usize },
    /// The first differing instruction lies in `(lo, hi]`.
    Narrowing { lo: u64, hi: u64 },
    /// Stepping both sides one instruction at a time from the interval's
    /// start, for a difference the probes did not stop at.
    Stepping { at: u64, until: u64 },
    /// Culprit search: replays run, candidate patches left.
    Culprit { tests: u32, candidates: usize },
}

/// Controls for a long bisect.
pub struct Control<'a> {
    /// Set from elsewhere (a signal handler) to stop with a partial result.
    pub cancel: &'a AtomicBool,
    pub progress: &'a (dyn Fn(Stage) + Sync),
    /// Threads for the interval scan.
    pub jobs: usize,
    /// Replays the culprit search may run at most.
    pub culprit_budget: u32,
}

impl Control<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A field that differs between the sides.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub a: String,
    pub b: String,
}

/// A run of RAM bytes that differ (physical address).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MemDiff {
    pub phys: u32,
    pub a: Vec<u8>,
    pub b: Vec<u8>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Differences {
    pub registers: Vec<FieldDiff>,
    /// EFLAGS bits by name ("IF", "ZF", ...).
    pub flags: Vec<FieldDiff>,
    /// Every other field of the machine state (segments, system registers,
    /// interrupt shadow, devices, time), by path.
    pub other: Vec<FieldDiff>,
    pub memory: Vec<MemDiff>,
    /// Differing RAM bytes in all (only the first runs are listed).
    pub memory_bytes: u64,
}

impl Differences {
    fn between(a: &Side, b: &Side) -> Differences {
        let (sa, sb) = (a.machine.state(), b.machine.state());
        let mut d = Differences::default();
        for (i, name) in vm::cpu::state::reg::NAMES.iter().enumerate() {
            if sa.cpu.regs[i] != sb.cpu.regs[i] {
                d.registers.push(FieldDiff {
                    field: (*name).into(),
                    a: format!("{:#010x}", sa.cpu.regs[i]),
                    b: format!("{:#010x}", sb.cpu.regs[i]),
                });
            }
        }
        if sa.cpu.eip != sb.cpu.eip {
            d.registers.push(FieldDiff {
                field: "eip".into(),
                a: format!("{:#010x}", sa.cpu.eip),
                b: format!("{:#010x}", sb.cpu.eip),
            });
        }
        for (name, mask) in FLAG_NAMES {
            let (fa, fb) = (sa.cpu.eflags & mask, sb.cpu.eflags & mask);
            if fa != fb {
                let show = |v: u32| (v / (mask & mask.wrapping_neg())).to_string();
                d.flags.push(FieldDiff {
                    field: (*name).into(),
                    a: show(fa),
                    b: show(fb),
                });
            }
        }
        d.other = other_fields(&sa, &sb);
        if a.console.serial != b.console.serial {
            d.other.push(FieldDiff {
                field: "serial output".into(),
                a: format!("{} bytes", a.console.serial.len()),
                b: format!("{} bytes", b.console.serial.len()),
            });
        }
        if a.input.cursor != b.input.cursor || a.input.mismatch != b.input.mismatch {
            let show = |s: &Side| match &s.input.mismatch {
                Some((now, what)) => format!("{} records; at {now}: {what}", s.input.cursor),
                None => format!("{} records", s.input.cursor),
            };
            d.other.push(FieldDiff {
                field: "host input consumed".into(),
                a: show(a),
                b: show(b),
            });
        }
        let (ra, rb) = (a.machine.platform.mem.ram(), b.machine.platform.mem.ram());
        let ps = vm::mem::PAGE_SIZE;
        for (p, (pa, pb)) in ra.chunks(ps).zip(rb.chunks(ps)).enumerate() {
            if pa == pb {
                continue;
            }
            for (i, (x, y)) in pa.iter().zip(pb).enumerate() {
                if x == y {
                    continue;
                }
                d.memory_bytes += 1;
                let addr = (p * ps + i) as u32;
                let runs = d.memory.len();
                match d.memory.last_mut() {
                    // Runs closer than 4 bytes are one run, gap included.
                    Some(run) if addr - (run.phys + run.a.len() as u32) < 4 && run.a.len() < 16 => {
                        let from = (run.phys + run.a.len() as u32) as usize;
                        run.a.extend_from_slice(&ra[from..=addr as usize]);
                        run.b.extend_from_slice(&rb[from..=addr as usize]);
                    }
                    _ if runs < 8 => d.memory.push(MemDiff {
                        phys: addr,
                        a: vec![*x],
                        b: vec![*y],
                    }),
                    _ => {}
                }
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.registers.is_empty() && self.flags.is_empty() && self.other.is_empty() && self.memory_bytes == 0
    }
}

const FLAG_NAMES: &[(&str, u32)] = {
    use vm::cpu::state::flags::*;
    &[
        ("CF", CF),
        ("PF", PF),
        ("AF", AF),
        ("ZF", ZF),
        ("SF", SF),
        ("TF", TF),
        ("IF", IF),
        ("DF", DF),
        ("OF", OF),
        ("IOPL", IOPL),
        ("NT", NT),
        ("RF", RF),
        ("VM", VM),
        ("AC", AC),
        ("VIF", VIF),
        ("VIP", VIP),
        ("ID", ID),
    ]
};

/// Every field of the two states other than the general registers, EIP
/// and EFLAGS (listed on their own), by path, e.g. `cpu.interrupt_shadow`.
fn other_fields(a: &MachineState, b: &MachineState) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let (Ok(va), Ok(vb)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        if a != b {
            out.push(FieldDiff {
                field: "machine state".into(),
                a: "differs".into(),
                b: "differs".into(),
            });
        }
        return out;
    };
    diff_values("", &va, &vb, &mut out);
    out
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<FieldDiff>) {
    use serde_json::Value;
    // Listed on their own, with names.
    if a == b || out.len() >= 32 || path.starts_with("cpu.regs") || path == "cpu.eip" || path == "cpu.eflags" {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for (k, x) in ma {
                if let Some(y) = mb.get(k) {
                    diff_values(&join(k), x, y, out);
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) if xa.len() == xb.len() => {
            for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                diff_values(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ => {
            let show = |v: &Value| match v.as_u64() {
                Some(n) if n > 9 => format!("{n:#x}"),
                _ => v.to_string(),
            };
            out.push(FieldDiff {
                field: path.to_string(),
                a: show(a),
                b: show(b),
            });
        }
    }
}

/// A patch as a report shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PatchReport {
    pub site: u32,
    pub phys: u32,
    pub kind: String,
    /// The instruction the patch runs.
    pub instruction: String,
    pub state: String,
    /// Why it was made: "scanned" or "hot (N traps)".
    pub cause: String,
    pub installed_at: u64,
    pub hits: u64,
    /// The code at the site now is not the instruction the patch runs.
    pub stale: bool,
}

impl PatchReport {
    fn of(p: &Patch, machine: &mut Machine) -> PatchReport {
        let now = (1..=15)
            .rev()
            .find_map(|len| machine.read_linear(p.site, len))
            .and_then(|bytes| decode_one(&bytes, p.inst.ip(), p.code32));
        PatchReport {
            site: p.site,
            phys: p.phys,
            kind: format!("{:?}", p.kind).to_lowercase(),
            instruction: format_instruction(&p.inst),
            state: match p.state {
                PatchState::Refused(r) => format!("refused: {r}"),
                s => format!("{s:?}").to_lowercase(),
            },
            cause: match p.cause {
                Some(vm::events::PatchCause::Scanned) => "marked by the scanner".into(),
                Some(vm::events::PatchCause::Hot(n)) => format!("hot: trapped {n} times"),
                None => "none".into(),
            },
            installed_at: p.installed_at,
            hits: p.hits,
            stale: now
                .is_some_and(|i| i.len() != p.inst.len() || format_instruction(&i) != format_instruction(&p.inst)),
        }
    }
}

/// The raw engine's state at the differing instruction, on the patched side.
#[derive(Clone, Debug, Serialize)]
pub struct EngineReport {
    /// "raw, guest ring 0 compressed into ring 1", "reference", ...
    pub engine: String,
    pub cpl: u8,
    /// The guest's own IF (virtual while compressed).
    pub guest_if: bool,
    pub scanned: bool,
    pub marked: bool,
    pub page_scanned: bool,
    /// The inline patch (or refusal) at the site.
    pub patch: Option<PatchReport>,
    pub entry_patch: Option<PatchReport>,
    /// Patches whose IF-clear region holds the site.
    pub regions: Vec<PatchReport>,
}

/// One trace or replay event about the site.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    pub icount: u64,
    pub pc: u32,
    pub event: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Culprit {
    /// The smallest set of patches found that still gives the divergence;
    /// empty when it persists with every patch suppressed.
    pub patches: Vec<PatchReport>,
    /// Patches enabled at the divergence (the candidates).
    pub candidates: usize,
    /// Replays the search ran.
    pub tests: u32,
    /// False when the budget ran out or the search was interrupted: the set
    /// still gives the divergence but may not be the smallest.
    pub minimal: bool,
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// Icount before the instruction: both sides agree here (`monitor seek`
    /// to it in gdb puts the replay right before the instruction).
    pub icount: u64,
    pub pc: u32,
    pub phys: Option<u32>,
    pub bytes: Vec<u8>,
    pub instruction: String,
    /// What differs after it.
    pub differences: Differences,
    pub engine: Option<EngineReport>,
    /// Where the history comes from: "trace" or "replay".
    pub history_source: String,
    pub history: Vec<HistoryEntry>,
    pub culprit: Option<Culprit>,
    /// Set when stopping before the instruction does not reproduce the
    /// divergence (the engine's result depends on where a run stops).
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DivergenceReport {
    /// The checkpoint interval it lies in.
    pub interval: (u64, u64),
    /// Which side the recording agrees with at the interval's end.
    pub recording_agrees_with: String,
    /// The first differing instruction lies in `(bounds.0, bounds.1]`; equal
    /// to `(found.icount, found.icount + 1)` once found.
    pub bounds: (u64, u64),
    pub found: Option<Found>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub a: String,
    pub b: String,
    pub instructions: u64,
    pub intervals: usize,
    /// The icounts the compared intervals span.
    pub compared: (u64, u64),
    /// Both sides agree at every checkpoint up to this icount.
    pub agreed_through: u64,
    pub divergence: Option<DivergenceReport>,
    pub interrupted: bool,
}

/// Compares two ways of running one trace.
pub struct Bisector<'t> {
    trace: &'t Trace,
    a: SideConfig,
    b: SideConfig,
    /// The trace whose events are side B's own (its history source).
    b_history: Option<&'t Trace>,
    checkpoints: Vec<u64>,
}

impl<'t> Bisector<'t> {
    pub fn new(trace: &'t Trace, a: SideConfig, b: SideConfig) -> Result<Self> {
        let checkpoints = trace.checkpoint_frames().iter().map(|f| f.icount).collect::<Vec<_>>();
        if checkpoints.is_empty() {
            return Err(TraceError::Missing("checkpoint"));
        }
        let b_history = (SideConfig::recorded(trace) == b).then_some(trace);
        Ok(Bisector {
            trace,
            a,
            b,
            b_history,
            checkpoints,
        })
    }

    /// Side B's events come from another recording (`--against`).
    pub fn with_history(mut self, trace: &'t Trace) -> Self {
        self.b_history = Some(trace);
        self
    }

    /// The whole bisect over the intervals starting at checkpoints `from..to`
    /// (indices), all of them by default.
    pub fn run(&self, range: Option<(usize, usize)>, ctl: &Control) -> Result<Report> {
        let (from, to) = range.unwrap_or((0, self.checkpoints.len().saturating_sub(1)));
        let intervals: Vec<usize> = (from..to.min(self.checkpoints.len().saturating_sub(1))).collect();
        let mut report = Report {
            a: self.a.describe(),
            b: self.b.describe(),
            instructions: self.checkpoints.last().copied().unwrap_or(0),
            intervals: intervals.len(),
            compared: (
                intervals.first().map_or(0, |&k| self.checkpoints[k]),
                intervals.last().map_or(0, |&k| self.checkpoints[k + 1]),
            ),
            agreed_through: self.checkpoints.get(from).copied().unwrap_or(0),
            divergence: None,
            interrupted: false,
        };
        let scan = self.scan(&intervals, ctl)?;
        report.agreed_through = scan.agreed_through;
        report.interrupted = scan.interrupted;
        let Some(k) = scan.first else {
            return Ok(report);
        };
        let (lo, hi) = (self.checkpoints[k], self.checkpoints[k + 1]);
        let mut div = DivergenceReport {
            interval: (lo, hi),
            recording_agrees_with: scan.recording_agrees_with.clone(),
            bounds: (lo, hi),
            found: None,
        };
        if !scan.complete_before {
            // Interrupted with earlier intervals unchecked: this one differs,
            // but it may not be the first.
            report.divergence = Some(div);
            return Ok(report);
        }
        let Some((mut start_a, mut start_b)) = scan.start else {
            return Err(TraceError::Missing("state at the differing interval"));
        };
        let mut n = self.narrow(&start_a, &start_b, lo, hi, ctl);
        div.bounds = (n.lo, n.hi);
        let mut stepping_note = None;
        if n.hi - n.lo == 1 && !ctl.cancelled() {
            // The probes see states only where they stop: an earlier
            // difference that healed in between (a dropped interrupt shadow
            // with no interrupt pending) is found by stepping.
            n.work_a.reset_to(&mut start_a);
            n.work_b.reset_to(&mut start_b);
            let first = first_by_stepping(&mut n.work_a, &mut n.work_b, n.lo, ctl);
            if ctl.cancelled() {
                // Stopped while stepping: an earlier instruction may differ.
                div.bounds = (lo, n.hi);
            }
            match first {
                Some(f) if f < n.lo => {
                    n.a.reset_to(&mut start_a);
                    n.b.reset_to(&mut start_b);
                    n.a.run_to(f);
                    n.b.run_to(f);
                    (n.lo, n.hi) = (f, f + 1);
                    div.bounds = (n.lo, n.hi);
                    if !n.a.agrees_with(&n.b) {
                        stepping_note = Some(format!(
                            "stepped one instruction at a time the sides agree up to {f}, but run straight \
                             there they already differ: the result depends on where a run stops"
                        ));
                    }
                }
                _ => {}
            }
            n.work_a.reset_to(&mut n.a);
            n.work_b.reset_to(&mut n.b);
        }
        if n.hi - n.lo == 1 && !ctl.cancelled() {
            let mut found = self.describe(&mut n, &start_b, &div.recording_agrees_with)?;
            if found.note.is_none() {
                found.note = stepping_note;
            }
            if self.b.patches() && found.note.is_none() {
                found.culprit = Some(self.culprit(&mut start_b, &mut n, ctl));
            }
            div.found = Some(found);
        }
        report.interrupted |= ctl.cancelled();
        report.divergence = Some(div);
        Ok(report)
    }

    /// Which side's machine has the digest the recording has at its
    /// position (a checkpoint).
    fn recording_agrees_with(&self, k: usize, a: &Machine, b: &Machine) -> Result<String> {
        let f = self.trace.checkpoint_frames()[k].clone();
        let cp = self.trace.checkpoint(&f)?;
        let digest = |m: &Machine| RamHasher::new(&m.platform.mem).digest(&m.state());
        Ok(match (digest(a) == cp.digest, digest(b) == cp.digest) {
            // Equal digests, yet the sides differ: in output or input only.
            (true, true) => "both".into(),
            (true, false) => "a".into(),
            (false, true) => "b".into(),
            (false, false) => "neither".into(),
        })
    }

    fn scan(&self, intervals: &[usize], ctl: &Control) -> Result<ScanOutcome> {
        let next = AtomicUsize::new(0);
        let first_bad = AtomicUsize::new(usize::MAX);
        let done = Mutex::new(vec![false; intervals.len()]);
        let error: Mutex<Option<TraceError>> = Mutex::new(None);
        // The first differing interval's sides at its start, and which side
        // the recording agrees with at its end.
        let found: Mutex<Option<(usize, Side, Side, String)>> = Mutex::new(None);
        let finished = AtomicUsize::new(0);
        let jobs = ctl.jobs.clamp(1, intervals.len().max(1));
        (ctl.progress)(Stage::Intervals {
            done: 0,
            total: intervals.len(),
        });
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| {
                    let work = || -> Result<()> {
                        // One replayer restores (its RAM image cached);
                        // side b is copied from it into its own machine.
                        // Nothing is allocated per interval.
                        let mut ra = Replayer::new(self.trace, self.a.options())?;
                        ra.restore(0)?;
                        let mut b = Side::from_replayer_with(&ra, self.b);
                        loop {
                            let pos = next.fetch_add(1, Ordering::SeqCst);
                            if pos >= intervals.len() || pos > first_bad.load(Ordering::SeqCst) || ctl.cancelled() {
                                return Ok(());
                            }
                            let k = intervals[pos];
                            ra.restore(k)?;
                            b.copy_all_from_replayer(&mut ra, self.b);
                            let end = self.checkpoints[k + 1];
                            ra.run_to(end, false)?;
                            b.run_to(end);
                            if !agree(
                                (&ra.machine, &ra.input, &ra.console),
                                (&b.machine, &b.input, &b.console),
                                None,
                            ) {
                                first_bad.fetch_min(pos, Ordering::SeqCst);
                                let who = self.recording_agrees_with(k + 1, &ra.machine, &b.machine)?;
                                // Back to the start (from the RAM image the
                                // replayer keeps): narrowing starts there.
                                ra.restore(k)?;
                                b.copy_all_from_replayer(&mut ra, self.b);
                                if let Ok(mut slot) = found.lock() {
                                    if slot.as_ref().map_or(true, |f| pos < f.0) {
                                        *slot = Some((pos, Side::from(ra), b, who));
                                    }
                                }
                                if let Ok(mut d) = done.lock() {
                                    d[pos] = true;
                                }
                                // Every later interval is moot.
                                return Ok(());
                            }
                            if let Ok(mut d) = done.lock() {
                                d[pos] = true;
                            }
                            let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
                            (ctl.progress)(Stage::Intervals {
                                done: n,
                                total: intervals.len(),
                            });
                        }
                    };
                    if let Err(e) = work() {
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                        // Stop the others: the result cannot be trusted.
                        first_bad.fetch_min(0, Ordering::SeqCst);
                    }
                });
            }
        });
        if let Some(e) = error.into_inner().ok().flatten() {
            return Err(e);
        }
        let done = done.into_inner().unwrap_or_default();
        let bad = first_bad.load(Ordering::SeqCst);
        let prefix = done.iter().take_while(|&&d| d).count().min(bad);
        let agreed_through = match prefix {
            0 => intervals.first().map_or(0, |&k| self.checkpoints[k]),
            n => self.checkpoints[intervals[n - 1] + 1],
        };
        let (start, recording_agrees_with) = match found.into_inner().ok().flatten() {
            Some((_, a, b, who)) => (Some((a, b)), who),
            None => (None, String::new()),
        };
        Ok(ScanOutcome {
            start,
            recording_agrees_with,
            first: (bad != usize::MAX).then(|| intervals[bad]),
            complete_before: prefix >= bad,
            agreed_through,
            interrupted: ctl.cancelled() && (bad == usize::MAX || prefix < bad) && prefix < intervals.len(),
        })
    }

    /// Binary search inside an interval: the sides agree at `lo` and differ
    /// at `hi`.
    fn narrow(&self, start_a: &Side, start_b: &Side, lo: u64, hi: u64, ctl: &Control) -> Narrowed {
        // Snapshots at `lo` and working copies run ahead; after each probe
        // one is made equal to the other by copying the pages the run
        // dirtied, never the whole RAM.
        let (mut sa, mut sb) = (start_a.clone(), start_b.clone());
        let (mut wa, mut wb) = (sa.clone(), sb.clone());
        for s in [&mut sa, &mut sb, &mut wa, &mut wb] {
            s.machine.platform.mem.take_dirty();
        }
        let (mut lo, mut hi) = (lo, hi);
        while hi - lo > 1 && !ctl.cancelled() {
            (ctl.progress)(Stage::Narrowing { lo, hi });
            let mid = lo + (hi - lo) / 2;
            wa.run_to(mid);
            wb.run_to(mid);
            let da = wa.machine.platform.mem.take_dirty();
            let db = wb.machine.platform.mem.take_dirty();
            let same = agree(
                (&wa.machine, &wa.input, &wa.console),
                (&wb.machine, &wb.input, &wb.console),
                Some(&union(&da, &db)),
            );
            if same {
                sa.copy_from(&mut wa, &da);
                sb.copy_from(&mut wb, &db);
                lo = mid;
            } else {
                wa.copy_from(&mut sa, &da);
                wb.copy_from(&mut sb, &db);
                hi = mid;
            }
        }
        Narrowed {
            lo,
            hi,
            a: sa,
            b: sb,
            work_a: wa,
            work_b: wb,
        }
    }

    /// The instruction at `n.lo` and what it does differently; leaves the
    /// working copies at `n.hi`.
    fn describe(&self, n: &mut Narrowed, start_b: &Side, recording_agrees_with: &str) -> Result<Found> {
        let a = &mut n.a.machine;
        let pc = vm::engine::raw::pc(&a.cpu);
        let code32 = a.cpu.state.code32();
        let phys = a.cpu.probe_translate(&mut a.platform, pc);
        let bytes = (1..=15)
            .rev()
            .find_map(|len| a.read_linear(pc, len))
            .unwrap_or_default();
        let decoded = decode_one(&bytes, u64::from(a.cpu.state.eip), code32);
        let bytes = match &decoded {
            Some(i) => bytes[..i.len().min(bytes.len())].to_vec(),
            None => bytes,
        };
        n.work_a.run_to(n.hi);
        n.work_b.run_to(n.hi);
        let differences = Differences::between(&n.work_a, &n.work_b);
        let note = differences.is_empty().then(|| {
            format!(
                "run from {} the sides agree at {}, but run through from earlier they differ there: \
                 the result depends on where a run stops",
                n.lo, n.hi
            )
        });
        let engine = (self.b.engine == Engine::Raw).then(|| engine_report(&mut n.b.machine, &mut n.work_b.machine, pc));
        // The trace's events are side b's only if the recording computed
        // what side b computes (the same configuration, and a build that
        // behaves alike).
        let trace_is_b = matches!(recording_agrees_with, "b" | "both");
        let (history_source, history) = self.history(start_b, n, phys, trace_is_b)?;
        Ok(Found {
            icount: n.lo,
            pc,
            phys,
            bytes,
            instruction: decoded.map_or_else(|| "(does not decode)".into(), |i| format_instruction(&i)),
            differences,
            engine,
            history_source,
            history,
            culprit: None,
            note,
        })
    }

    /// Events about the site from the interval's start to the instruction:
    /// from side B's recording when there is one, else from a replay.
    fn history(
        &self,
        start_b: &Side,
        n: &Narrowed,
        phys: Option<u32>,
        trace_is_b: bool,
    ) -> Result<(String, Vec<HistoryEntry>)> {
        let pc = vm::engine::raw::pc(&n.a.machine.cpu);
        let from = start_b.machine.icount();
        let (source, events) = match self.b_history {
            Some(t) if trace_is_b => ("trace", t.events(from, n.hi)?),
            _ => {
                let log = std::sync::Arc::new(std::sync::Mutex::new(EventLog::default()));
                let mut b = start_b.clone();
                b.machine.events.0 = Some(Box::new(log.clone()));
                b.run_to(n.hi);
                b.machine.events.0 = None;
                let records = log.lock().map(|l| l.records.clone()).unwrap_or_default();
                ("replay", records)
            }
        };
        let sites: HashSet<u32> = patch_sites_at(&n.b, phys);
        let concerns = |e: &EventRecord| match &e.event {
            Event::PatchInstalled { phys: p, .. }
            | Event::PatchRefused { phys: p, .. }
            | Event::PatchRemoved { phys: p, .. }
            | Event::PatchToggled { phys: p, .. } => sites.contains(p),
            Event::Scan { entry, .. } => entry >> 12 == pc >> 12,
            Event::SelfModifyingWrite { page } => phys.is_some_and(|p| p >> 12 == *page),
            Event::Trap { .. } | Event::Emulated { .. } => e.pc == pc,
            _ => false,
        };
        let mut out: Vec<HistoryEntry> = events
            .iter()
            .filter(|e| concerns(e))
            .map(|e| HistoryEntry {
                icount: e.icount,
                pc: e.pc,
                event: e.event.to_string(),
            })
            .collect();
        // The first few (installs) and the most recent tell the story.
        if out.len() > 16 {
            let omitted = out.len() - 16;
            let tail = out.split_off(out.len() - 12);
            out.truncate(4);
            out.push(HistoryEntry {
                icount: tail[0].icount,
                pc,
                event: format!("({omitted} more events about the site)"),
            });
            out.extend(tail);
        }
        Ok((source.into(), out))
    }

    /// Delta debugging over the patches side B had enabled at the
    /// divergence: the smallest subset that, alone enabled, still diverges.
    /// Each trial replays side B from the interval's start; the reference
    /// result is `n.work_a` (at `n.hi`, from `describe`).
    fn culprit(&self, start_b: &mut Side, n: &mut Narrowed, ctl: &Control) -> Culprit {
        // Candidates: every patch enabled before the instruction, or made
        // while its block was built (`work_b` is past it, from `describe`).
        let enabled = |m: &Machine| -> Vec<Patch> {
            m.raw
                .patches
                .patches
                .iter()
                .filter(|p| p.state == PatchState::Enabled)
                .cloned()
                .collect()
        };
        let mut known = enabled(&n.work_b.machine);
        known.extend(enabled(&n.b.machine));
        let mut all: Vec<PatchKey> = known.iter().map(Patch::key).collect();
        all.sort();
        all.dedup();
        let mut reports: Vec<(PatchKey, PatchReport)> = Vec::new();
        for k in &all {
            if let Some(p) = known.iter().find(|p| p.key() == *k) {
                reports.push((*k, PatchReport::of(p, &mut n.work_b.machine)));
            }
        }
        let mut tests = 0u32;
        start_b.machine.platform.mem.take_dirty();
        // The working copy becomes the interval's start: one full copy, then
        // only the pages each trial dirtied.
        let work = &mut n.work_b;
        work.reset_to(start_b);
        let (reference_before, reference_after) = (&n.a, &n.work_a);
        let lo = n.lo;
        // Does the run with only `enabled` patches give this divergence: the
        // same as the reference up to the instruction, different after it?
        let mut test = |enabled: &[PatchKey]| -> bool {
            tests += 1;
            (ctl.progress)(Stage::Culprit {
                tests,
                candidates: enabled.len(),
            });
            work.machine.raw.suppressed = all.iter().filter(|k| !enabled.contains(k)).copied().collect();
            work.run_to(lo);
            let same_before = work.agrees_with(reference_before);
            work.run_to(n.hi);
            let differs = same_before && !work.agrees_with(reference_after);
            let dirty = work.machine.platform.mem.take_dirty();
            work.copy_from(start_b, &dirty);
            differs
        };
        let reproduces = test(&all);
        let persists = reproduces && test(&[]);
        let (set, minimal) = if !reproduces || persists {
            (Vec::new(), true)
        } else {
            ddmin(all.clone(), &mut test, ctl.culprit_budget, ctl.cancel)
        };
        let patches: Vec<PatchReport> = set
            .iter()
            .filter_map(|k| reports.iter().find(|(key, _)| key == k).map(|(_, r)| r.clone()))
            .collect();
        let verdict = if !reproduces {
            "replayed again from the interval's start with every patch enabled, side b does not \
             give this divergence: the culprit search cannot run"
                .to_string()
        } else if persists {
            "the divergence persists with every patch suppressed: no patch causes it; \
             look at the scanner's decision for the site (engine section)"
                .to_string()
        } else if patches.is_empty() {
            "no subset of the patches reproduces the divergence alone".to_string()
        } else {
            let names: Vec<String> = patches
                .iter()
                .map(|p| format!("{} at {:#010x}", p.instruction, p.site))
                .collect();
            format!(
                "the divergence needs {} {}: {}",
                if patches.len() == 1 {
                    "this patch"
                } else {
                    "these patches"
                },
                if minimal {
                    "enabled"
                } else {
                    "enabled (search cut short)"
                },
                names.join("; ")
            )
        };
        Culprit {
            patches,
            candidates: all.len(),
            tests,
            minimal,
            verdict,
        }
    }
}

struct ScanOutcome {
    /// Both sides at the start of the first differing interval.
    start: Option<(Side, Side)>,
    /// "a", "b" or "neither": which side the recording matches at the end
    /// of the first differing interval.
    recording_agrees_with: String,
    /// The checkpoint index starting the first differing interval.
    first: Option<usize>,
    /// Every interval before `first` was checked.
    complete_before: bool,
    agreed_through: u64,
    interrupted: bool,
}

/// Both sides at `lo` (agreeing) and the icount `hi` where they differ,
/// with a working copy of each (equal to it, until `describe` runs them on).
struct Narrowed {
    lo: u64,
    hi: u64,
    a: Side,
    b: Side,
    work_a: Side,
    work_b: Side,
}

/// Physical addresses of the patches that bear on a site: its own, its
/// entry patch and the owners of regions holding it.
fn patch_sites_at(side: &Side, phys: Option<u32>) -> HashSet<u32> {
    let mut out = HashSet::new();
    let Some(phys) = phys else {
        return out;
    };
    out.insert(phys);
    let t = &side.machine.raw.patches;
    for code32 in [true, false] {
        for i in t.regions_holding((phys, code32)) {
            if let Some(p) = t.get(i) {
                out.insert(p.phys);
            }
        }
    }
    out
}

/// The raw engine at the instruction: the engine and view it ran in (from
/// `before`), and what the scanner and patch manager had decided about the
/// site once the instruction's block was built (from `after`).
fn engine_report(before: &mut Machine, after: &mut Machine, pc: u32) -> EngineReport {
    let engine = match before.raw.describe_site(&before.cpu, &mut before.platform, pc).engine {
        EngineKind::RawRing0 => "raw: guest ring 0 compressed into ring 1",
        EngineKind::RawRing3 => "raw: guest ring 3 as ring 3",
        EngineKind::Reference => "reference (emulated at the guest's true privilege)",
    };
    let guest_if = before.cpu.state.eflags & vm::cpu::state::flags::IF != 0;
    let cpl = before.cpu.state.cpl();
    let cpu = before.cpu.clone();
    let view = after.raw.describe_site(&cpu, &mut after.platform, pc);
    let table = after.raw.patches.clone();
    let mut report = |i: Option<u32>| i.and_then(|i| table.get(i)).map(|p| PatchReport::of(p, after));
    EngineReport {
        engine: engine.into(),
        cpl,
        guest_if,
        scanned: view.scanned,
        marked: view.marked,
        page_scanned: view.page_scanned,
        patch: report(view.patch),
        entry_patch: report(view.entry),
        regions: view.regions.iter().filter_map(|&i| report(Some(i))).collect(),
    }
}

/// Zeller's ddmin: a 1-minimal subset of `items` for which `fails` holds
/// (it holds for all of them). Returns the set and whether the search ran
/// to the end.
fn ddmin<T: Clone + PartialEq>(
    items: Vec<T>,
    fails: &mut dyn FnMut(&[T]) -> bool,
    budget: u32,
    cancel: &AtomicBool,
) -> (Vec<T>, bool) {
    let mut c = items;
    let mut n = 2usize;
    let mut spent = 0u32;
    while c.len() >= 2 {
        let chunk = c.len().div_ceil(n);
        let parts: Vec<Vec<T>> = c.chunks(chunk).map(<[T]>::to_vec).collect();
        let mut reduced = false;
        for part in &parts {
            if spent >= budget || cancel.load(Ordering::Relaxed) {
                return (c, false);
            }
            spent += 1;
            if fails(part) {
                c = part.clone();
                n = 2;
                reduced = true;
                break;
            }
        }
        if !reduced && parts.len() > 2 {
            for i in 0..parts.len() {
                if spent >= budget || cancel.load(Ordering::Relaxed) {
                    return (c, false);
                }
                let complement: Vec<T> = parts
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, p)| p.iter().cloned())
                    .collect();
                spent += 1;
                if fails(&complement) {
                    c = complement;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
        }
        if !reduced {
            if n >= c.len() {
                break;
            }
            n = (2 * n).min(c.len());
        }
    }
    (c, true)
}

fn decode_one(bytes: &[u8], ip: u64, code32: bool) -> Option<iced_x86::Instruction> {
    let mut d = iced_x86::Decoder::with_ip(if code32 { 32 } else { 16 }, bytes, ip, iced_x86::DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

fn format_instruction(i: &iced_x86::Instruction) -> String {
    use iced_x86::Formatter;
    let mut out = String::new();
    let mut f = iced_x86::IntelFormatter::new();
    f.format(i, &mut out);
    out
}

/// Two recordings compared without replaying: are they of the same guest
/// and input, where do their checkpoint digests first differ, which event
/// differs first.
#[derive(Clone, Debug, Serialize)]
pub struct RecordingComparison {
    /// Icounts where both have a checkpoint.
    pub common_checkpoints: usize,
    /// The last common checkpoint with equal digests before the first
    /// differing one.
    pub last_agreeing: Option<u64>,
    pub first_differing: Option<u64>,
    pub first_event_difference: Option<EventDifference>,
    /// Where each recording ends (its last checkpoint).
    pub a_instructions: u64,
    pub b_instructions: u64,
    pub a_build: String,
    pub b_build: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct EventDifference {
    /// Position in each event stream.
    pub index: u64,
    pub a: Option<String>,
    pub b: Option<String>,
    pub icount: u64,
}

fn show_event(e: &EventRecord) -> String {
    format!("icount {} pc {:#010x}: {}", e.icount, e.pc, e.event)
}

/// Fails with [`TraceError::NotComparable`] unless both traces record the
/// same guest images, RAM and input.
pub fn compare_recordings(a: &Trace, b: &Trace) -> Result<RecordingComparison> {
    let (ha, hb) = (&a.header, &b.header);
    let mut why = Vec::new();
    if ha.image_hashes != hb.image_hashes {
        why.push("the guest images differ".to_string());
    }
    if ha.config.ram_bytes != hb.config.ram_bytes {
        why.push(format!(
            "RAM sizes differ ({} and {} bytes)",
            ha.config.ram_bytes, hb.config.ram_bytes
        ));
    }
    if ha.rtc_start != hb.rtc_start {
        why.push("the RTC start times differ".into());
    }
    let (ia, ib) = (a.inputs()?, b.inputs()?);
    let common = ia.len().min(ib.len());
    if ia[..common] != ib[..common] {
        why.push("the input logs differ".into());
    }
    if !why.is_empty() {
        return Err(TraceError::NotComparable(why.join("; ")));
    }
    let digests = |t: &Trace| -> Result<Vec<(u64, [u8; 32])>> {
        t.checkpoint_frames()
            .iter()
            .map(|f| Ok((f.icount, t.checkpoint(f)?.digest)))
            .collect()
    };
    let (da, db) = (digests(a)?, digests(b)?);
    let db: std::collections::HashMap<u64, [u8; 32]> = db.into_iter().collect();
    let mut common_checkpoints = 0;
    let mut last_agreeing = None;
    let mut first_differing = None;
    for (icount, d) in &da {
        let Some(other) = db.get(icount) else {
            continue;
        };
        common_checkpoints += 1;
        if other == d {
            last_agreeing = Some(*icount);
        } else {
            first_differing = Some(*icount);
            break;
        }
    }
    Ok(RecordingComparison {
        common_checkpoints,
        last_agreeing,
        first_differing,
        first_event_difference: first_event_difference(a, b)?,
        a_instructions: da.last().map_or(0, |c| c.0),
        b_instructions: b.checkpoint_frames().last().map_or(0, |f| f.icount),
        a_build: ha.build.clone(),
        b_build: hb.build.clone(),
    })
}

/// The first position where the two event streams differ.
fn first_event_difference(a: &Trace, b: &Trace) -> Result<Option<EventDifference>> {
    let (mut ea, mut eb) = (EventStream::new(a), EventStream::new(b));
    let mut index = 0u64;
    loop {
        match (ea.next()?, eb.next()?) {
            (None, None) => return Ok(None),
            (x, y) if x == y => index += 1,
            (x, y) => {
                return Ok(Some(EventDifference {
                    index,
                    icount: x.as_ref().or(y.as_ref()).map_or(0, |e| e.icount),
                    a: x.as_ref().map(show_event),
                    b: y.as_ref().map(show_event),
                }))
            }
        }
    }
}

/// A trace's events in order, one batch decoded at a time.
struct EventStream<'t> {
    trace: &'t Trace,
    frames: Vec<crate::model::FrameEntry>,
    next_frame: usize,
    batch: std::vec::IntoIter<EventRecord>,
}

impl<'t> EventStream<'t> {
    fn new(trace: &'t Trace) -> Self {
        EventStream {
            trace,
            frames: trace.frames_of(crate::format::FrameKind::Events).cloned().collect(),
            next_frame: 0,
            batch: Vec::new().into_iter(),
        }
    }

    fn next(&mut self) -> Result<Option<EventRecord>> {
        loop {
            if let Some(e) = self.batch.next() {
                return Ok(Some(e));
            }
            let Some(f) = self.frames.get(self.next_frame) else {
                return Ok(None);
            };
            self.next_frame += 1;
            self.batch = self.trace.event_batch(f)?.into_iter();
        }
    }
}

/// The checkpoint indices of `trace` covering `(from, to]` in icount, for
/// bisecting between two common checkpoints of two recordings.
pub fn interval_range(trace: &Trace, from: u64, to: u64) -> Option<(usize, usize)> {
    let icounts: Vec<u64> = trace.checkpoint_frames().iter().map(|f| f.icount).collect();
    let start = icounts.iter().position(|&c| c == from)?;
    let end = icounts.iter().position(|&c| c == to)?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_a_pair_that_fails_only_together() {
        let items: Vec<u32> = (0..40).collect();
        let mut calls = 0;
        let (set, minimal) = ddmin(
            items,
            &mut |s: &[u32]| {
                calls += 1;
                s.contains(&7) && s.contains(&31)
            },
            1000,
            &AtomicBool::new(false),
        );
        assert_eq!(set, vec![7, 31]);
        assert!(minimal);
        assert!(calls < 100, "{calls} tests");
    }

    #[test]
    fn ddmin_single_culprit_and_budget() {
        let items: Vec<u32> = (0..64).collect();
        let (set, minimal) = ddmin(
            items.clone(),
            &mut |s: &[u32]| s.contains(&42),
            1000,
            &AtomicBool::new(false),
        );
        assert_eq!((set, minimal), (vec![42], true));
        // Cut short, the set still fails but is not the smallest.
        let (set, minimal) = ddmin(items, &mut |s: &[u32]| s.contains(&42), 1, &AtomicBool::new(false));
        assert!(!minimal);
        assert!(set.contains(&42));
    }

    #[test]
    fn state_fields_are_named_by_path() {
        let a = Machine::new(1 << 20, &mut vm::host::NoInput::default()).state();
        let mut b = a.clone();
        b.cpu.interrupt_shadow = true;
        b.cpu.segs[1].selector = 0x2b;
        b.cpu.regs[0] = 1;
        let d = other_fields(&a, &b);
        let names: Vec<&str> = d.iter().map(|f| f.field.as_str()).collect();
        assert!(names.contains(&"cpu.interrupt_shadow"), "{names:?}");
        assert!(names.contains(&"cpu.segs[1].selector"), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("cpu.regs")), "{names:?}");
    }
}
