//! The raw engine's control side: ring compression policy, the monitor that
//! handles every exit, the code scanner (`csam`) and the patch manager
//! (`patm`). The block cache (`crate::engine::blocks`) executes; this module decides
//! what each cached instruction becomes (plain, an exit, a patch) and what
//! happens at each exit. docs/raw-engine.md explains the design.

pub mod csam;
pub mod learning;
pub mod patm;
pub mod sensitive;

use std::collections::{HashMap, HashSet};

use iced_x86::Instruction;

use crate::cpu::state::{flags, SegReg};
use crate::cpu::{Cpu, RingView, StepOutcome};
use crate::engine::blocks::{RawHooks, RawOutcome, SiteKind};
use crate::events::{EngineKind, Event, ExitReason, PatchCause, RefuseReason, SinkSlot};
use crate::mem::{CodeWrite, PhysMem};
use crate::platform::Platform;
use csam::{decode_at, Scanner};
use learning::{LearningError, RawLearning};
use patm::{PatchKey, PatchKind, PatchState, PatchTable};
use sensitive::{inlinable, software_interrupt};

/// Traps at one site before the patch manager patches it.
pub const PATCH_THRESHOLD: u32 = 8;

/// Deliberate patch bugs, for proving that differential tests and bisect
/// find each class (DESIGN.md, "Patch bugs are real").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Injection {
    /// PUSHF patches push the ring-1 flags (IF = 1, IOPL = 0) instead of the
    /// guest's: wrong inline semantics.
    pub pushf_leak: bool,
    /// STI patches drop the one-instruction interrupt shadow.
    pub sti_shadow: bool,
    /// The scanner tracks whole pages: an entry reached through a jump table
    /// on a page already scanned from elsewhere is not scanned.
    pub scan_miss: bool,
    /// Patches survive writes to their page: the old semantics run on.
    pub stale_patch: bool,
}

impl RawConfig {
    /// Whether what the engine learned can change what the guest computes
    /// (as it can under any patch bug): without the scanner, ring
    /// compression leaks until patches cover the sites; injected bugs.
    pub fn learning_guest_visible(&self) -> bool {
        !self.scanner || self.inject.any()
    }
}

impl Injection {
    pub const NAMES: &'static [&'static str] = &["pushf-leak", "sti-shadow", "scan-miss", "stale-patch"];

    pub fn any(&self) -> bool {
        *self != Injection::default()
    }
}

impl std::str::FromStr for Injection {
    type Err = String;
    /// A comma-separated list of bug names.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut inj = Injection::default();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "pushf-leak" => inj.pushf_leak = true,
                "sti-shadow" => inj.sti_shadow = true,
                "scan-miss" => inj.scan_miss = true,
                "stale-patch" => inj.stale_patch = true,
                _ => {
                    return Err(format!(
                        "unknown patch bug '{name}' (one of {})",
                        Injection::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(inj)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RawConfig {
    pub patching: bool,
    /// Off only to show what ring compression leaks without it.
    pub scanner: bool,
    pub inject: Injection,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            patching: true,
            scanner: true,
            inject: Injection::default(),
        }
    }
}

/// The monitor's counters.
#[derive(Clone, Debug, Default)]
pub struct MonitorStats {
    pub exits_by_reason: HashMap<ExitReason, u64>,
    /// Exits by guest site (linear address).
    pub exits_by_site: HashMap<u32, u64>,
    pub exits: u64,
    pub emulated: u64,
    pub delivered: u64,
    pub engine_switches: u64,
    /// Instructions run on the reference under the raw engine's control.
    pub reference_steps: u64,
    /// Runs of cached blocks at the true privilege (ring 0 with IF clear).
    pub true_block_runs: u64,
}

impl MonitorStats {
    /// The `n` sites with the most exits, most first.
    pub fn top_sites(&self, n: usize) -> Vec<(u32, u64)> {
        let mut v: Vec<_> = self.exits_by_site.iter().map(|(s, c)| (*s, *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[derive(Clone, Debug, Default)]
pub struct RawEngine {
    pub config: RawConfig,
    pub scanner: Scanner,
    pub patches: PatchTable,
    pub monitor: MonitorStats,
    /// Emulated traps per site (linear address), towards the threshold.
    hot: HashMap<(u32, u32), u32>,
    /// Switches to the reference with IF clear, per site.
    hot_entries: HashMap<(u32, u32), u32>,
    /// The engine that ran the guest last, for switch events.
    current: Option<EngineKind>,
    /// Patches of tables dropped by `reset_caches`, for the run's totals.
    pub retired: PatchTotals,
    /// Patches installed switched off (their sites trap instead): bisect's
    /// delta debugging runs with subsets of the patches suppressed.
    pub suppressed: HashSet<PatchKey>,
}

/// Patch counts over a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchTotals {
    pub installed: u64,
    pub refused: u64,
    pub dirty: u64,
    pub hits: u64,
    pub traps_avoided: u64,
}

impl PatchTotals {
    fn add(&mut self, t: &PatchTable) {
        for p in &t.patches {
            match p.state {
                PatchState::Enabled | PatchState::Disabled => self.installed += 1,
                PatchState::Refused(_) => self.refused += 1,
                PatchState::Dirty => self.dirty += 1,
            }
            self.hits += p.hits;
            self.traps_avoided += p.traps_avoided;
        }
    }
}

/// Linear address of CS:EIP.
#[inline]
pub fn pc(cpu: &Cpu) -> u32 {
    cpu.state.segs[SegReg::Cs as usize].base.wrapping_add(cpu.state.eip)
}

impl RawEngine {
    pub fn new(config: RawConfig) -> Self {
        RawEngine {
            config,
            ..Default::default()
        }
    }

    /// Forgets scan results, patches and trap counts (a restore: memory
    /// may be replaced), keeping the configuration and the run's counters.
    /// Which engine ran last goes too: it decides whether an entry with IF
    /// clear counts towards an entry patch (so the first choice after a
    /// restore is no switch event, and counts one).
    pub fn reset_caches(&mut self) {
        let scan_stats = self.scanner.stats;
        self.retired.add(&self.patches);
        *self = RawEngine {
            config: self.config,
            monitor: std::mem::take(&mut self.monitor),
            retired: self.retired,
            suppressed: std::mem::take(&mut self.suppressed),
            ..Default::default()
        };
        self.scanner.stats = scan_stats;
    }

    /// What the engine learned (`full`), or what changed since the last
    /// save, as plain data ([`learning`]).
    pub fn save_learning(&mut self, full: bool) -> RawLearning {
        let sorted = |m: &HashMap<(u32, u32), u32>| {
            let mut v: Vec<((u32, u32), u32)> = m.iter().map(|(k, n)| (*k, *n)).collect();
            v.sort_unstable();
            v
        };
        let mut learning = RawLearning {
            full,
            scanned: self.scanner.save(full),
            hot: sorted(&self.hot),
            hot_entries: sorted(&self.hot_entries),
            current: self.current,
            ..RawLearning::default()
        };
        self.patches.save(full, &mut learning);
        learning
    }

    /// Puts whole saved learning into the engine, which must have
    /// forgotten everything (`reset_caches`): from here it decides as the
    /// engine it was saved from. Checked first, so a damaged save leaves
    /// the engine as it was.
    pub fn restore_learning(&mut self, learning: &RawLearning, mem: &mut PhysMem) -> Result<(), LearningError> {
        learning.check()?;
        let mut patches = PatchTable::default();
        patches.restore(learning.patch_count, &learning.patches, mem)?;
        self.patches = patches;
        self.scanner.restore(&learning.scanned, mem);
        self.hot = learning.hot.iter().copied().collect();
        self.hot_entries = learning.hot_entries.iter().copied().collect();
        self.current = learning.current;
        Ok(())
    }

    /// Patch counts over the whole run, dropped tables included.
    pub fn patch_totals(&self) -> PatchTotals {
        let mut t = self.retired;
        t.add(&self.patches);
        t
    }

    /// Which engine runs the next instruction, and in which view. Guest ring
    /// 0 runs compressed while its IF is set, or inside a patch region; ring
    /// 3 runs raw with IF set and IOPL below 3; everything else (real mode,
    /// V86, rings 1 and 2, single-stepping) runs on the reference.
    pub fn choose(&mut self, cpu: &mut Cpu, platform: &mut Platform, events: &mut SinkSlot) -> (EngineKind, RingView) {
        match placement(&cpu.state) {
            Placement::Reference => (EngineKind::Reference, RingView::True),
            Placement::Ring0 => (EngineKind::RawRing0, RingView::Compressed { virtual_flags: 0 }),
            Placement::Ring0InterruptsOff => {
                // The fetch the reference would start with anyway, so asking
                // where CS:EIP is changes nothing the guest can see.
                let code32 = cpu.state.code32();
                let compressed = (EngineKind::RawRing0, RingView::Compressed { virtual_flags: 0 });
                match cpu.refetch(platform, 1) {
                    Ok(phys) if self.patches.in_region((phys, code32)) => compressed,
                    Ok(phys)
                        if self.current != Some(EngineKind::TrueBlocks)
                            && self.hot_entry(cpu, platform, phys, events) =>
                    {
                        compressed
                    }
                    // Everything else with IF clear: cached blocks at the
                    // true privilege.
                    _ => (EngineKind::TrueBlocks, RingView::True),
                }
            }
            Placement::Ring3 => (EngineKind::RawRing3, RingView::Ring3),
        }
    }

    /// Counts a switch to the true-privilege blocks with IF clear at a site (a handler
    /// behind an interrupt gate, typically); at the threshold the site gets
    /// an entry patch and runs raw from then on. Returns whether it did.
    fn hot_entry(&mut self, cpu: &Cpu, platform: &mut Platform, phys: u32, events: &mut SinkSlot) -> bool {
        let code32 = cpu.state.code32();
        if !self.config.patching || self.patches.has_entry((phys, code32)) {
            return false;
        }
        let lin = pc(cpu);
        let n = self.hot_entries.entry((lin, phys)).or_default();
        *n += 1;
        if *n < PATCH_THRESHOLD {
            return false;
        }
        let count = *n;
        self.hot_entries.remove(&(lin, phys));
        let Some(inst) = decode_at(platform, phys, cpu.state.eip, code32) else {
            return false;
        };
        let index = self.install(
            cpu,
            platform,
            cpu.icount,
            lin,
            phys,
            inst,
            PatchKind::Entry,
            code32,
            PatchState::Enabled,
            Some(PatchCause::Hot(count)),
            events,
        );
        self.patches.in_region((phys, code32)) && self.enabled(index)
    }

    /// Notes which engine runs now; a change is an event.
    pub fn switch_to(&mut self, kind: EngineKind, cpu: &Cpu, events: &mut SinkSlot) {
        // Ring 0 to ring 3 and back is no switch: both run raw.
        let class = |k: EngineKind| match k {
            EngineKind::RawRing0 | EngineKind::RawRing3 => 0,
            EngineKind::Reference => 1,
            EngineKind::TrueBlocks => 2,
        };
        if let Some(from) = self.current {
            if class(from) != class(kind) {
                self.monitor.engine_switches += 1;
                events.emit(cpu.icount, pc(cpu), || Event::EngineSwitch { from, to: kind });
            }
        }
        self.current = Some(kind);
    }

    /// Whether a site gets an inline patch, and why not if it does not.
    fn decide(&self, inst: &Instruction, cause: PatchCause) -> (PatchState, Option<PatchCause>) {
        if !self.config.patching {
            (PatchState::Refused(RefuseReason::PatchingOff), None)
        } else if inlinable(inst) {
            (PatchState::Enabled, Some(cause))
        } else {
            (PatchState::Refused(RefuseReason::NotInlinable), None)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        cpu: &Cpu,
        platform: &mut Platform,
        icount: u64,
        lin: u32,
        phys: u32,
        inst: Instruction,
        kind: PatchKind,
        code32: bool,
        state: PatchState,
        cause: Option<PatchCause>,
        events: &mut SinkSlot,
    ) -> u32 {
        let mnemonic = format!("{inst}");
        let key = PatchKey { phys, code32, kind };
        let suppressed = state == PatchState::Enabled && self.suppressed.contains(&key);
        match (state, cause) {
            (PatchState::Refused(reason), _) => events.emit(icount, lin, || Event::PatchRefused {
                site: lin,
                phys,
                mnemonic,
                reason,
            }),
            (_, Some(cause)) => events.emit(icount, lin, || Event::PatchInstalled {
                site: lin,
                phys,
                mnemonic,
                cause,
            }),
            _ => {}
        }
        if suppressed {
            events.emit(icount, lin, || Event::PatchToggled {
                site: lin,
                phys,
                enabled: false,
            });
        }
        let state = if suppressed { PatchState::Disabled } else { state };
        self.patches
            .add(cpu, platform, icount, lin, phys, inst, kind, code32, state, cause)
    }

    /// What the raw engine knows about the instruction at `lin` (in the
    /// guest's current code segment), and which engine would run the guest
    /// as it is now, without any side effect (no scan, no counting).
    pub fn describe_site(&self, cpu: &Cpu, platform: &mut Platform, lin: u32) -> SiteView {
        let code32 = cpu.state.code32();
        let phys = cpu.probe_translate(platform, lin);
        let site = phys.map(|p| (p, code32));
        let in_region = site.is_some_and(|s| self.patches.in_region(s));
        let engine = match placement(&cpu.state) {
            Placement::Ring0 => EngineKind::RawRing0,
            Placement::Ring0InterruptsOff if in_region => EngineKind::RawRing0,
            Placement::Ring3 => EngineKind::RawRing3,
            Placement::Ring0InterruptsOff => EngineKind::TrueBlocks,
            Placement::Reference => EngineKind::Reference,
        };
        SiteView {
            linear: lin,
            phys,
            engine,
            scanned: site.is_some_and(|s| self.scanner.is_scanned(s)),
            marked: site.is_some_and(|s| self.scanner.is_marked(s)),
            page_scanned: phys.is_some_and(|p| self.scanner.page_scanned(p >> 12)),
            patch: site.and_then(|s| self.patches.at(s)),
            entry: site.and_then(|s| self.patches.entry_at(s)),
            regions: site.map(|s| self.patches.regions_holding(s)).unwrap_or_default(),
        }
    }
}

/// Where the guest runs as it is now, by its mode, privilege and flags
/// alone: the ring-view table, written once for `choose`, `stays_in` and
/// `describe_site`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Real mode, V86, rings 1 and 2, single-stepping: the reference.
    Reference,
    /// Guest ring 0 with IF set: compressed into ring 1.
    Ring0,
    /// Guest ring 0 with IF clear: compressed only inside a patch region or
    /// from a hot entry (which `choose` decides by looking at the code).
    Ring0InterruptsOff,
    /// Guest ring 3 with IF set and IOPL below 3: raw, as itself.
    Ring3,
}

#[inline]
fn placement(st: &crate::cpu::state::CpuState) -> Placement {
    if !st.protected_mode() || st.v86_mode() || st.eflags & flags::TF != 0 {
        return Placement::Reference;
    }
    let if_set = st.eflags & flags::IF != 0;
    match st.cpl() {
        0 if if_set => Placement::Ring0,
        0 => Placement::Ring0InterruptsOff,
        3 if if_set && st.iopl() < 3 => Placement::Ring3,
        _ => Placement::Reference,
    }
}

/// The raw engine's view of one guest instruction (`describe_site`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteView {
    pub linear: u32,
    /// None when the address does not translate.
    pub phys: Option<u32>,
    /// The engine that runs it, in its view (compressed ring 0, ring 3 or
    /// the reference).
    pub engine: EngineKind,
    pub scanned: bool,
    /// The scanner marked it sensitive.
    pub marked: bool,
    /// Some instruction on its page was scanned.
    pub page_scanned: bool,
    /// Its inline patch (or refusal) in the patch table.
    pub patch: Option<u32>,
    pub entry: Option<u32>,
    /// Patches whose IF-clear region holds it.
    pub regions: Vec<u32>,
}

impl RawEngine {
    /// The monitor: the raw engine exited at CS:EIP (the view already
    /// undone). The instruction is run once by the reference engine at the
    /// guest's true privilege: if it retires, the exit was the
    /// virtualizer's and it is now emulated; if it faults, the fault was the
    /// guest's and the reference has delivered it through the guest IDT. A
    /// site that keeps needing emulation gets a patch; the page of a new
    /// patch is returned, for the block cache to rebuild its blocks.
    pub fn exit(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        reason: ExitReason,
        events: &mut SinkSlot,
    ) -> (StepOutcome, Option<u32>) {
        let lin = pc(cpu);
        self.monitor.exits += 1;
        *self.monitor.exits_by_reason.entry(reason).or_default() += 1;
        *self.monitor.exits_by_site.entry(lin).or_default() += 1;
        events.emit(cpu.icount, lin, || Event::Trap { reason });
        let phys = cpu.probe_translate(platform, lin);
        let code32 = cpu.state.code32();
        let eip = cpu.state.eip;
        let icount = cpu.icount;
        let outcome = cpu.step(platform);
        let emulated = matches!(outcome, StepOutcome::Retired | StepOutcome::Halted);
        if emulated {
            self.monitor.emulated += 1;
            events.emit(icount, lin, || Event::Emulated { reason });
        } else {
            self.monitor.delivered += 1;
        }
        let mut patched = None;
        if emulated && matches!(reason, ExitReason::Fault(_) | ExitReason::Marked) {
            if let Some(phys) = phys {
                if self.count_trap(cpu, platform, icount, lin, phys, eip, code32, events) {
                    patched = Some(phys >> 12);
                }
            }
        }
        (outcome, patched)
    }

    /// Counts an emulated trap at a site; at the threshold, patches it (or
    /// records why not). Returns whether a patch was installed.
    #[allow(clippy::too_many_arguments)]
    fn count_trap(
        &mut self,
        cpu: &Cpu,
        platform: &mut Platform,
        icount: u64,
        lin: u32,
        phys: u32,
        eip: u32,
        code32: bool,
        events: &mut SinkSlot,
    ) -> bool {
        if self.patches.at((phys, code32)).is_some() {
            return false;
        }
        let n = self.hot.entry((lin, phys)).or_default();
        *n += 1;
        if *n < PATCH_THRESHOLD {
            return false;
        }
        let count = *n;
        self.hot.remove(&(lin, phys));
        let Some(inst) = decode_at(platform, phys, eip, code32) else {
            return false;
        };
        let (state, cause) = self.decide(&inst, PatchCause::Hot(count));
        // Only inlinable patches read CS (for their region), and those do
        // not change it: the state after the emulated instruction serves.
        let index = self.install(
            cpu,
            platform,
            icount,
            lin,
            phys,
            inst,
            PatchKind::Inline,
            code32,
            state,
            cause,
            events,
        );
        self.enabled(index)
    }

    /// The site of enabled patch `index`, where `inst` is now, with the
    /// injected bug its compiled form must carry.
    fn patch_site(&self, index: u32, inst: &Instruction) -> SiteKind {
        let patch = self.patches.get(index);
        let pushf = patch.is_some_and(|p| {
            matches!(
                p.inst.mnemonic(),
                iced_x86::Mnemonic::Pushf | iced_x86::Mnemonic::Pushfd
            )
        });
        SiteKind::Patch {
            index,
            leaks_view_flags: pushf && self.config.inject.pushf_leak,
            current: patch.is_some_and(|p| p.inst == *inst),
        }
    }

    fn enabled(&self, index: u32) -> bool {
        self.patches.get(index).is_some_and(|p| p.state == PatchState::Enabled)
    }
}

impl RawHooks for RawEngine {
    /// Drops what the scanner and patch manager knew about a page whose
    /// scanned or patched instructions the guest changed (and the page's
    /// raw blocks, annotated from that); writes to other bytes change
    /// nothing here.
    fn code_written(
        &mut self,
        writes: &[CodeWrite],
        cpu: &Cpu,
        mem: &mut PhysMem,
        events: &mut SinkSlot,
        forgotten: &mut Vec<u32>,
    ) {
        for w in writes {
            let page = w.page;
            if self.scanner.code_changed(w) || self.patches.code_changed(w) {
                events.emit(cpu.icount, pc(cpu), || Event::SelfModifyingWrite { page });
                self.scanner.forget_page(page);
                if !self.config.inject.stale_patch {
                    // Translations on the pages of the regions dropped may
                    // have been made for a region: they go too.
                    for (site, phys) in self.patches.invalidate_page(page, forgotten) {
                        events.emit(cpu.icount, site, || Event::PatchRemoved { site, phys });
                    }
                }
                if !forgotten.contains(&page) {
                    forgotten.push(page);
                }
            }
            self.scanner.rewatch_page(page, mem);
            self.patches.rewatch_page(page, mem);
        }
    }

    /// What the instruction at `phys` becomes in a block run compressed:
    /// scans unscanned code first, patches marked sites when patching is on.
    fn annotate(
        &mut self,
        cpu: &Cpu,
        platform: &mut Platform,
        phys: u32,
        inst: &Instruction,
        compressed: bool,
        events: &mut SinkSlot,
    ) -> SiteKind {
        if let Some(v) = software_interrupt(inst) {
            return SiteKind::SoftInt(v);
        }
        if !compressed {
            return SiteKind::Plain;
        }
        let code32 = cpu.state.code32();
        let site = (phys, code32);
        let lin = cpu.state.segs[SegReg::Cs as usize].base.wrapping_add(inst.ip32());
        if self.config.scanner {
            let covered = if self.config.inject.scan_miss {
                self.scanner.page_scanned(phys >> 12)
            } else {
                self.scanner.is_scanned(site)
            };
            if !covered {
                let r = self.scanner.scan(cpu, platform, inst.ip32());
                events.emit(cpu.icount, lin, || Event::Scan {
                    entry: lin,
                    instructions: r.instructions,
                    marked: r.marked,
                });
            }
        }
        if let Some(index) = self.patches.at(site) {
            return match self.patches.get(index).map(|p| p.state) {
                Some(PatchState::Enabled) => self.patch_site(index, inst),
                _ if self.scanner.is_marked(site) => SiteKind::Trap,
                _ => SiteKind::Plain,
            };
        }
        if !self.scanner.is_marked(site) {
            return SiteKind::Plain;
        }
        let (state, cause) = self.decide(inst, PatchCause::Scanned);
        let index = self.install(
            cpu,
            platform,
            cpu.icount,
            lin,
            phys,
            *inst,
            PatchKind::Inline,
            code32,
            state,
            cause,
            events,
        );
        if self.enabled(index) {
            self.patch_site(index, inst)
        } else {
            SiteKind::Trap
        }
    }

    /// The patch runs the instruction's reference semantics on the guest's
    /// true state (virtual IF and IOPL, RPL 0), inline.
    fn run_patch(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        index: u32,
    ) -> Option<crate::cpu::Result<StepOutcome>> {
        let inject = self.config.inject;
        if self.patches.get(index)?.state != PatchState::Enabled {
            return None;
        }
        let patch = self.patches.counted(index)?;
        patch.hits += 1;
        let view = cpu.ring_view;
        let m = patch.inst.mnemonic();
        // Injected bug: the PUSHF patch forgets to put the virtual flags back.
        let leak = inject.pushf_leak && matches!(m, iced_x86::Mnemonic::Pushf | iced_x86::Mnemonic::Pushfd);
        if !leak {
            cpu.leave_view();
        }
        let result = cpu.execute_or_fault_with(platform, &patch.inst, patch.handler);
        if inject.sti_shadow && m == iced_x86::Mnemonic::Sti {
            cpu.state.interrupt_shadow = false;
        }
        if !leak {
            cpu.enter_view(view);
        }
        if result.is_ok() {
            patch.traps_avoided += 1;
        }
        Some(result)
    }

    /// Whether `choose` would pick `view` again for the guest as it is now,
    /// without looking at code (so no side effect): the raw engine may go
    /// on to the next block without returning to the machine loop.
    #[inline]
    fn stays_in(&self, cpu: &Cpu, view: RingView) -> bool {
        matches!(
            (placement(&cpu.state), view),
            (Placement::Ring0, RingView::Compressed { .. })
                | (Placement::Ring3, RingView::Ring3)
                | (Placement::Ring0InterruptsOff, RingView::True)
        )
    }

    #[inline]
    fn chains_in(&self, cpu: &Cpu, view: RingView) -> bool {
        self.stays_in(cpu, view)
            || matches!(
                (placement(&cpu.state), view),
                (Placement::Ring0InterruptsOff, RingView::Compressed { .. })
            )
    }

    fn in_patch_region(&self, phys: u32, code32: bool) -> bool {
        self.patches.in_region((phys, code32))
    }
}

/// The raw engine's step: the monitor picks the engine for CS:EIP (a switch
/// is an event), a raw block runs, and an exit is handled.
impl super::Executor for RawEngine {
    fn step(&mut self, parts: super::Parts<'_>, stop_icount: u64) -> StepOutcome {
        let super::Parts {
            cpu,
            platform,
            blocks,
            events,
        } = parts;
        let (kind, view) = self.choose(cpu, platform, events);
        self.switch_to(kind, cpu, events);
        if kind == EngineKind::Reference {
            self.monitor.reference_steps += 1;
            return cpu.step(platform);
        }
        if kind == EngineKind::TrueBlocks {
            self.monitor.true_block_runs += 1;
            return blocks.run_true(cpu, platform, stop_icount, self, events);
        }
        match blocks.run_raw(cpu, platform, stop_icount, view, self, events) {
            RawOutcome::Step(outcome) => outcome,
            RawOutcome::Exit(reason) => {
                let (outcome, patched) = self.exit(cpu, platform, reason, events);
                if let Some(page) = patched {
                    blocks.drop_page(page);
                }
                outcome
            }
        }
    }
}
