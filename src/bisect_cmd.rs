//! `ringback bisect`: the command-line side of `replay::bisect`, with exit
//! statuses for `git bisect run`, a progress display, Ctrl-C that keeps the
//! partial result, and the report for people or (`--json`) for scripts.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use replay::bisect::{
    self, Bisector, Control, DivergenceReport, PatchReport, RecordingComparison, Report, SideConfig, Stage,
};
use replay::Trace;
use vm::engine::raw::Injection;
use vm::machine::Engine;

/// `git bisect run`: this commit is good / bad / cannot be tested.
const EXIT_SAME: u8 = 0;
const EXIT_DIVERGED: u8 = 1;
const EXIT_UNUSABLE: u8 = 125;
/// Interrupted before any verdict (128 + SIGINT, which also stops `git
/// bisect run`).
const EXIT_INTERRUPTED: u8 = 130;

pub static CANCEL: AtomicBool = AtomicBool::new(false);

pub struct Options<'a> {
    pub trace: &'a Path,
    pub against: Option<&'a Path>,
    pub inject: Option<Injection>,
    pub jobs: Option<usize>,
    pub json: bool,
    pub budget: u32,
    pub allow_incomplete: bool,
    /// Only the intervals before the first checkpoint at or after this.
    pub until: Option<u64>,
}

pub fn bisect(o: &Options) -> Result<ExitCode> {
    // A second Ctrl-C gives up on the partial result too.
    let _ = ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });
    let unusable = |e: &dyn std::fmt::Display| {
        eprintln!("ringback: bisect: {e}");
        Ok(ExitCode::from(EXIT_UNUSABLE))
    };
    if o.until.is_some() && o.against.is_some() {
        return unusable(&"--until bisects a prefix against the reference; with --against the two recordings' digests choose where to look");
    }
    let a = match crate::trace_cmd::open(o.trace) {
        Ok(t) => t,
        Err(e) => return unusable(&e),
    };
    let b = match o.against.map(crate::trace_cmd::open).transpose() {
        Ok(t) => t,
        Err(e) => return unusable(&e),
    };
    // Every frame checked before any verdict: a damaged file is untestable
    // (125), never "no divergence"; so is a partial one unless allowed.
    for (trace, path) in std::iter::once((&a, o.trace)).chain(b.as_ref().zip(o.against)) {
        if let Err(e) = trace.check_contents(&mut |_| {}) {
            return unusable(&format!("{}: {e}", path.display()));
        }
        if !trace.complete() && !o.allow_incomplete {
            return unusable(&format!(
                "{} is incomplete (the recording never finished); pass --allow-incomplete to bisect what is there",
                path.display()
            ));
        }
    }
    let started = std::time::Instant::now();
    let bar = Progress::new();
    let ctl = Control {
        cancel: &CANCEL,
        progress: &|s| bar.show(s),
        jobs: o
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        culprit_budget: o.budget,
    };
    let result = match &b {
        None => whole_trace(&a, o, &ctl).map(|r| (None, Some(r))),
        Some(b) => against(&a, b, &ctl),
    };
    bar.clear();
    let (comparison, report) = match result {
        Ok(r) => r,
        Err(e) => return unusable(&format!("{e:#}")),
    };
    let seconds = started.elapsed().as_secs_f64();
    let state_diverged = report.as_ref().is_some_and(|r| r.divergence.is_some())
        || comparison.as_ref().is_some_and(|c| c.first_differing.is_some());
    let interrupted = report.as_ref().is_some_and(|r| r.interrupted);
    let text = if o.json {
        let out = serde_json::json!({
            "trace": o.trace.display().to_string(),
            "against": o.against.map(|p| p.display().to_string()),
            "diverged": state_diverged,
            "interrupted": interrupted,
            "seconds": seconds,
            "recordings": comparison,
            "report": report,
        });
        format!("{}\n", serde_json::to_string_pretty(&out)?)
    } else {
        render(o, comparison.as_ref(), report.as_ref(), seconds)
    };
    // A report that cannot be written (a full disk) leaves no verdict for
    // `git bisect run`: untestable, never good or bad.
    if let Err(e) = crate::cli::write_stdout(text.as_bytes()) {
        return unusable(&format!("{e:#}"));
    }
    Ok(ExitCode::from(if state_diverged {
        EXIT_DIVERGED
    } else if interrupted {
        EXIT_INTERRUPTED
    } else {
        EXIT_SAME
    }))
}

/// The side bisect holds against the reference: the raw engine with
/// patches, configured as recorded (scanner, injected bugs) unless told
/// which bugs to inject.
pub fn patched_side(trace: &Trace, inject: Option<Injection>) -> SideConfig {
    let mut raw = SideConfig::recorded(trace).raw;
    if let Some(inject) = inject {
        raw.inject = inject;
    }
    raw.patching = true;
    SideConfig {
        engine: Engine::Raw,
        raw,
    }
}

/// Reference against the raw engine with patches, over the whole trace
/// or the prefix `--until` names.
fn whole_trace(trace: &Trace, o: &Options, ctl: &Control) -> Result<Report> {
    let patched = patched_side(trace, o.inject);
    let range = o.until.map(|until| {
        let marks = trace.checkpoint_frames();
        let last = marks
            .iter()
            .position(|c| c.icount >= until)
            .unwrap_or(marks.len().saturating_sub(1));
        (0, last)
    });
    Ok(Bisector::new(trace, SideConfig::reference(), patched)?.run(range, ctl)?)
}

/// Two recordings: digests and events first, then each recording's own
/// configuration replayed where the digests first differ.
fn against(a: &Trace, b: &Trace, ctl: &Control) -> Result<(Option<RecordingComparison>, Option<Report>)> {
    let cmp = bisect::compare_recordings(a, b)?;
    // From the last common checkpoint where the digests agree to the first
    // where they differ, or else to the end of `a` (the recordings may end
    // at different icounts, with no common checkpoint after the agreeing
    // ones).
    let a_last = a.checkpoint_frames().last().map_or(0, |f| f.icount);
    let range = match (cmp.last_agreeing, cmp.first_differing) {
        (Some(from), Some(to)) => bisect::interval_range(a, from, to),
        (Some(from), None) if from < a_last => bisect::interval_range(a, from, a_last),
        _ => None,
    };
    let report = match range {
        Some(range) => Some(
            Bisector::new(a, SideConfig::recorded(a), SideConfig::recorded(b))?
                .with_history(b)
                .run(Some(range), ctl)?,
        ),
        None => None,
    };
    Ok((Some(cmp), report))
}

/// A bar over the intervals, then a line for each later stage; nothing
/// when stderr is not a terminal.
struct Progress {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: Mutex::new(std::io::stderr().is_terminal().then(ProgressBar::hidden)),
        }
    }

    fn show(&self, stage: Stage) {
        let Ok(mut guard) = self.bar.lock() else {
            return;
        };
        let Some(bar) = guard.as_mut() else {
            return;
        };
        match stage {
            Stage::Intervals { done, total } => {
                if bar.is_hidden() {
                    *bar = ProgressBar::new(total as u64);
                    let style = ProgressStyle::with_template("comparing checkpoint intervals [{bar:40}] {pos}/{len} ({eta}; Ctrl-C stops with the partial result)")
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                }
                bar.set_position(done as u64);
            }
            Stage::Narrowing { lo, hi } => {
                bar.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
                bar.set_message(format!(
                    "narrowing to one instruction: between icount {lo} and {hi} ({} left)",
                    hi - lo
                ));
            }
            Stage::Stepping { at, until } => {
                bar.set_message(format!(
                    "stepping both sides one instruction at a time: icount {at} of {until}"
                ));
            }
            Stage::Culprit { tests, candidates } => {
                bar.set_message(format!(
                    "finding the culprit patch: replay {tests}, {candidates} patch(es) enabled"
                ));
            }
        }
    }

    fn clear(&self) {
        if let Ok(Some(bar)) = self.bar.lock().as_deref() {
            bar.finish_and_clear();
        }
    }
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn patch_line(p: &PatchReport) -> String {
    format!(
        "{} patch for `{}` at {:#010x} (phys {:#010x}): {}, {}, installed at icount {}, {} hit(s){}",
        p.kind,
        p.instruction,
        p.site,
        p.phys,
        p.state,
        p.cause,
        p.installed_at,
        p.hits,
        if p.stale {
            "; STALE: the code at the site is no longer this instruction"
        } else {
            ""
        }
    )
}

/// The report for a person who has not read the code.
fn render(o: &Options, cmp: Option<&RecordingComparison>, report: Option<&Report>, seconds: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "ringback bisect {}", o.trace.display());
    if let (Some(c), Some(b)) = (cmp, o.against) {
        let _ = writeln!(s, "  against {}", b.display());
        let _ = writeln!(s, "  builds: a {}, b {}", c.a_build, c.b_build);
        let _ = writeln!(
            s,
            "  a ends at icount {}, b at {}; {} checkpoint(s) at the same icount in both",
            c.a_instructions, c.b_instructions, c.common_checkpoints
        );
        match (c.first_differing, c.last_agreeing) {
            (Some(d), Some(l)) => {
                let _ = writeln!(s, "  machine digests agree up to icount {l} and differ at icount {d}");
            }
            (Some(d), None) => {
                let _ = writeln!(
                    s,
                    "  machine digests differ from the first common checkpoint (icount {d})"
                );
            }
            (None, _) => {
                let _ = writeln!(s, "  machine digests agree at every common checkpoint");
            }
        }
        match &c.first_event_difference {
            Some(e) => {
                let _ = writeln!(s, "  first differing event (number {} in both streams):", e.index);
                let _ = writeln!(s, "    a: {}", e.a.as_deref().unwrap_or("(no more events)"));
                let _ = writeln!(s, "    b: {}", e.b.as_deref().unwrap_or("(no more events)"));
            }
            None => {
                let _ = writeln!(s, "  the event streams are identical");
            }
        }
        if c.first_differing.is_some() && report.is_none() {
            let _ = writeln!(
                s,
                "  no agreeing checkpoint before the difference to start a replay from"
            );
        }
    }
    let Some(r) = report else {
        let _ = writeln!(s, "({seconds:.1} s)");
        return s;
    };
    let _ = writeln!(s, "  a: {}", r.a);
    let _ = writeln!(s, "  b: {}", r.b);
    let Some(d) = &r.divergence else {
        if r.interrupted {
            let _ = writeln!(
                s,
                "\nINTERRUPTED: a and b agree at every checkpoint up to icount {}; the rest was not compared ({seconds:.1} s)",
                r.agreed_through
            );
        } else {
            let _ = writeln!(
                s,
                "\nNo divergence: a and b agree at all {} checkpoint intervals from icount {} to {} ({seconds:.1} s)",
                r.intervals, r.compared.0, r.compared.1
            );
            if cmp.is_some_and(|c| c.first_differing.is_some()) {
                let _ = writeln!(
                    s,
                    "This build runs both recordings' configurations alike there: the recordings differ because of the builds that made them."
                );
            }
        }
        return s;
    };
    render_divergence(&mut s, r, d, o, seconds);
    s
}

fn render_divergence(s: &mut String, r: &Report, d: &DivergenceReport, o: &Options, seconds: f64) {
    let side = |x: &str| match x {
        "a" | "b" => format!("side {x}"),
        _ => "neither side".to_string(),
    };
    let Some(f) = &d.found else {
        let _ = writeln!(
            s,
            "\nDIVERGENCE between icount {} and {} (checkpoint interval {}..{}){}",
            d.bounds.0,
            d.bounds.1,
            d.interval.0,
            d.interval.1,
            if r.interrupted {
                "; interrupted before the instruction was found"
            } else {
                ""
            }
        );
        if r.agreed_through < d.interval.0 {
            let _ = writeln!(
                s,
                "Earlier intervals from icount {} on were not all compared: an earlier divergence is possible.",
                r.agreed_through
            );
        }
        return;
    };
    let _ = writeln!(
        s,
        "\nDIVERGENCE at icount {} (checkpoint interval {}..{}; found in {seconds:.1} s)",
        f.icount, d.interval.0, d.interval.1
    );
    let _ = writeln!(
        s,
        "  Both sides agree up to icount {}. The next instruction gives different results:",
        f.icount
    );
    let _ = writeln!(
        s,
        "    {:#010x}{}  {:<24} {}",
        f.pc,
        f.phys.map_or(String::new(), |p| format!(" (phys {p:#010x})")),
        hex_bytes(&f.bytes),
        f.instruction
    );
    if let Some(note) = &f.note {
        let _ = writeln!(s, "  Note: {note}");
    }
    let diffs = &f.differences;
    let _ = writeln!(s, "  What differs after it (a | b):");
    for x in diffs.registers.iter().chain(&diffs.other) {
        let _ = writeln!(s, "    {:<28} {} | {}", x.field, x.a, x.b);
    }
    for x in &diffs.flags {
        let _ = writeln!(s, "    {:<28} {} | {}", format!("EFLAGS.{}", x.field), x.a, x.b);
    }
    for m in &diffs.memory {
        let _ = writeln!(
            s,
            "    {:<28} {} | {}",
            format!("RAM at phys {:#010x}", m.phys),
            hex_bytes(&m.a),
            hex_bytes(&m.b)
        );
    }
    if diffs.memory_bytes > 0 {
        let _ = writeln!(s, "    ({} RAM byte(s) differ in all)", diffs.memory_bytes);
    }
    let _ = writeln!(s, "  The recording agrees with {}.", side(&d.recording_agrees_with));
    if let Some(e) = &f.engine {
        let _ = writeln!(
            s,
            "\n  Side b at the instruction (scanner and patches as its block ran):"
        );
        let _ = writeln!(
            s,
            "    engine: {}; guest CPL {}, guest IF {}",
            e.engine,
            e.cpl,
            u8::from(e.guest_if)
        );
        let _ = writeln!(
            s,
            "    scanner: {}{}",
            if e.scanned { "site scanned" } else { "site NOT scanned" },
            match (e.marked, e.scanned, e.page_scanned) {
                (true, _, _) => ", marked sensitive",
                (false, false, true) => ", although other code on its page was",
                _ => "",
            }
        );
        match &e.patch {
            Some(p) => {
                let _ = writeln!(s, "    {}", patch_line(p));
            }
            None => {
                let _ = writeln!(s, "    no inline patch at the site");
            }
        }
        if let Some(p) = &e.entry_patch {
            let _ = writeln!(s, "    {}", patch_line(p));
        }
        for p in &e.regions {
            let _ = writeln!(s, "    in the IF-clear region of the {}", patch_line(p));
        }
    }
    if !f.history.is_empty() {
        let _ = writeln!(
            s,
            "\n  History of the site since the checkpoint at {} (from the {}):",
            d.interval.0, f.history_source
        );
        for h in &f.history {
            let _ = writeln!(s, "    icount {:>12}  {:#010x}  {}", h.icount, h.pc, h.event);
        }
    }
    if let Some(c) = &f.culprit {
        let _ = writeln!(
            s,
            "\n  Culprit (delta debugging: {} replay(s) with subsets of the {} enabled patch(es) suppressed):",
            c.tests, c.candidates
        );
        let _ = writeln!(s, "    {}", c.verdict);
        for p in &c.patches {
            let _ = writeln!(s, "    - {}", patch_line(p));
        }
    }
    let _ = writeln!(
        s,
        "\n  To look at it: `ringback tui {} --at {}`, or `ringback gdb {}` and in gdb `monitor seek {}`.",
        o.trace.display(),
        f.icount,
        o.trace.display(),
        f.icount
    );
}
