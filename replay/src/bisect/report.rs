//! What a bisect reports: the divergence, the engine's state at the
//! instruction, the site's history, the culprit.

use std::collections::HashSet;

use serde::Serialize;
use vm::engine::raw::patm::{Patch, PatchState};
use vm::events::EngineKind;
use vm::exec::decode::decode_one;
use vm::machine::Machine;

use super::differences::Differences;
use super::side::Side;

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
    pub(super) fn of(p: &Patch, machine: &mut Machine) -> PatchReport {
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

/// Physical addresses of the patches that bear on a site: its own, its
/// entry patch and the owners of regions holding it.
pub(super) fn patch_sites_at(side: &Side, phys: Option<u32>) -> HashSet<u32> {
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
pub(super) fn engine_report(before: &mut Machine, after: &mut Machine, pc: u32) -> EngineReport {
    let engine = match before.raw.describe_site(&before.cpu, &mut before.platform, pc).engine {
        EngineKind::RawRing0 => "raw: guest ring 0 compressed into ring 1",
        EngineKind::RawRing3 => "raw: guest ring 3 as ring 3",
        EngineKind::Reference => "reference (emulated at the guest's true privilege)",
        EngineKind::TrueBlocks => "cached blocks at the guest's true privilege (ring 0, IF clear)",
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

pub(super) fn format_instruction(i: &iced_x86::Instruction) -> String {
    use iced_x86::Formatter;
    let mut out = String::new();
    let mut f = iced_x86::IntelFormatter::new();
    f.format(i, &mut out);
    out
}
