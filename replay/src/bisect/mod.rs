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

//!
//! Parts: `side` (how each side runs, the machines compared), `differences`
//! (what differs, field by field), `report` (what a report says),
//! `ddmin` (the culprit search), `compare` (two recordings without
//! replaying).

mod compare;
mod ddmin;
mod differences;
mod report;
mod side;

pub use compare::{compare_recordings, interval_range, EventDifference, RecordingComparison};
pub use differences::{Differences, FieldDiff, MemDiff};
pub use report::{Culprit, DivergenceReport, EngineReport, Found, HistoryEntry, PatchReport, Report};
pub use side::{Side, SideConfig};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use vm::engine::raw::patm::{Patch, PatchKey, PatchState};
use vm::events::{Event, EventLog, EventRecord};
use vm::exec::decode::decode_one;
use vm::machine::{Engine, Machine};

use crate::digest::RamHasher;
use crate::error::{Result, TraceError};
use crate::reader::Trace;
use crate::replay::Replayer;
use ddmin::ddmin;
use report::{engine_report, format_instruction, patch_sites_at};
use side::{agree, first_by_stepping, union};

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
                            b.copy_all_from_replayer(&mut ra, self.b, k)?;
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
                                b.copy_all_from_replayer(&mut ra, self.b, k)?;
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
                b.machine.events.attach(Box::new(log.clone()));
                b.run_to(n.hi);
                b.machine.events.detach();
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
            work.machine
                .suppress_patches(all.iter().filter(|k| !enabled.contains(k)).copied().collect());
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
