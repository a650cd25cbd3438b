//! The patch manager (PATM in VirtualBox): a site that traps often, or that
//! the scanner marked, gets a patch — the block runs the instruction's
//! correct semantics inline, on the guest's true state (virtual IF and IOPL,
//! RPL 0), instead of exiting to the monitor. Patches live in the block
//! cache's annotations, never in guest-visible memory.
//!
//! A CLI or POPF patch also owns the code after it up to the next
//! instruction that may set IF again: that code runs raw with the virtual IF
//! clear, as PATM's patch blocks did; elsewhere such code runs on the
//! reference engine.

use iced_x86::{FlowControl, Instruction};

use std::collections::BTreeMap;

use super::csam::{decode_at, Site};
use super::learning::{LearningError, RawLearning, SavedPatch};
pub use super::learning::{PatchKind, PatchState};
use super::sensitive::{may_clear_if, may_set_if};
use crate::bus::Bus;
use crate::cpu::state::SegReg;
use crate::cpu::Cpu;
use crate::events::PatchCause;
use crate::exec::MAX_INSN_LEN;
use crate::exec::{handler_for, Handler};
use crate::hash::{FastMap, FastSet};
use crate::mem::{CodeWrite, PhysMem};
use crate::platform::Platform;

/// Instructions a patch region covers at most.
const REGION_LIMIT: u32 = 512;

/// A patch as the same site and kind in any run: another run (another
/// configuration, some patches suppressed) numbers its patches otherwise,
/// sites stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PatchKey {
    pub phys: u32,
    pub code32: bool,
    pub kind: PatchKind,
}

#[derive(Clone, Debug)]
pub struct Patch {
    /// Linear address of the site when the patch was made.
    pub site: u32,
    pub phys: u32,
    pub code32: bool,
    /// The instruction the patch runs (as it was when patched).
    pub inst: Instruction,
    pub handler: Handler<Platform>,
    pub kind: PatchKind,
    pub state: PatchState,
    pub cause: Option<PatchCause>,
    pub installed_at: u64,
    pub hits: u64,
    /// Hits that did not fall back to an exit.
    pub traps_avoided: u64,
    /// Sites after a CLI/POPF patch that run raw with the virtual IF clear.
    pub region: Vec<Site>,
    /// The bytes `inst` was decoded from (its length), for saving.
    bytes: [u8; MAX_INSN_LEN],
    /// Still found by its site and page: not dropped for a write.
    indexed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct PatchTable {
    pub patches: Vec<Patch>,
    /// Inline patches (and refusals) by site.
    by_site: FastMap<Site, u32>,
    /// Entry patches by site.
    entries: FastMap<Site, u32>,
    /// Sites inside some patch's region, with how many regions hold them.
    in_region: FastMap<Site, u32>,
    /// Patch indices by physical page, for invalidation.
    by_page: FastMap<u32, Vec<u32>>,
    /// Patches added or changed since the learning was last saved, and
    /// those whose counters alone changed.
    changed: FastSet<u32>,
    counted: FastSet<u32>,
}

impl Patch {
    pub fn key(&self) -> PatchKey {
        PatchKey {
            phys: self.phys,
            code32: self.code32,
            kind: self.kind,
        }
    }
}

impl PatchTable {
    /// The inline patch (or refusal) at a site, enabled or not.
    pub fn at(&self, site: Site) -> Option<u32> {
        self.by_site.get(&site).copied()
    }

    /// Whether an entry patch exists for a site.
    pub fn has_entry(&self, site: Site) -> bool {
        self.entries.contains_key(&site)
    }

    pub fn get(&self, index: u32) -> Option<&Patch> {
        self.patches.get(index as usize)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut Patch> {
        self.changed.insert(index);
        self.patches.get_mut(index as usize)
    }

    /// A patch whose counters (hits, traps avoided) are about to change,
    /// and nothing else.
    pub fn counted(&mut self, index: u32) -> Option<&mut Patch> {
        self.counted.insert(index);
        self.patches.get_mut(index as usize)
    }

    /// The entry patch at a site.
    pub fn entry_at(&self, site: Site) -> Option<u32> {
        self.entries.get(&site).copied()
    }

    /// The enabled patches whose region holds a site.
    pub fn regions_holding(&self, site: Site) -> Vec<u32> {
        if !self.in_region(site) {
            return Vec::new();
        }
        (0..self.patches.len() as u32)
            .filter(|&i| self.patches[i as usize].region.contains(&site))
            .collect()
    }

    /// Whether a site lies in an enabled patch's region.
    #[inline]
    pub fn in_region(&self, site: Site) -> bool {
        self.in_region.contains_key(&site)
    }

    /// Records a patch (or a refusal) for a site; returns its index.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        cpu: &Cpu,
        platform: &mut Platform,
        icount: u64,
        site: u32,
        phys: u32,
        inst: Instruction,
        kind: PatchKind,
        code32: bool,
        state: PatchState,
        cause: Option<PatchCause>,
    ) -> u32 {
        let index = self.patches.len() as u32;
        let region = match kind {
            _ if state != PatchState::Enabled => Vec::new(),
            PatchKind::Entry => region_from(cpu, platform, inst.ip32(), code32),
            PatchKind::Inline if may_clear_if(&inst) => region_from(cpu, platform, inst.next_ip32(), code32),
            PatchKind::Inline => Vec::new(),
        };
        for s in &region {
            *self.in_region.entry(*s).or_default() += 1;
        }
        match kind {
            PatchKind::Inline => self.by_site.insert((phys, code32), index),
            PatchKind::Entry => self.entries.insert((phys, code32), index),
        };
        self.by_page.entry(phys >> 12).or_default().push(index);
        platform.mem.watch_code(phys, inst.len() as u32);
        let bytes = instruction_bytes(cpu, platform, &inst, phys);
        self.changed.insert(index);
        self.patches.push(Patch {
            site,
            phys,
            code32,
            handler: handler_for::<Platform>(&inst),
            inst,
            kind,
            state,
            cause,
            installed_at: icount,
            hits: 0,
            traps_avoided: 0,
            region,
            bytes,
            indexed: true,
        });
        index
    }

    /// Switches an enabled patch off as if it had been installed switched
    /// off (suppressed): its site traps again, and the region it owned (a
    /// CLI or POPF patch's, an entry patch's) goes. Returns the pages whose
    /// blocks were made for it.
    pub fn switch_off(&mut self, index: u32) -> Vec<u32> {
        let Some(p) = self.patches.get_mut(index as usize) else {
            return Vec::new();
        };
        if p.state != PatchState::Enabled {
            return Vec::new();
        }
        self.changed.insert(index);
        p.state = PatchState::Disabled;
        let mut pages = vec![p.phys >> 12];
        release_region(&mut self.in_region, &mut p.region, &mut pages);
        pages
    }

    /// Whether the guest changed the bytes of a patched instruction.
    pub fn code_changed(&self, w: &CodeWrite) -> bool {
        self.by_page.get(&w.page).is_some_and(|indices| {
            indices
                .iter()
                .filter_map(|&i| self.patches.get(i as usize))
                .any(|p| w.overlaps(p.phys & 0xFFF, p.inst.len() as u32))
        })
    }

    /// Watches again the patched instructions on `page`.
    pub fn rewatch_page(&self, page: u32, mem: &mut PhysMem) {
        for p in self
            .by_page
            .get(&page)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.patches.get(i as usize))
        {
            mem.watch_code(p.phys, p.inst.len() as u32);
        }
    }

    /// Marks the patches on a written page dirty and takes them out of use;
    /// returns the (site, phys) of each patch that was enabled.
    /// Pages that held sites of the regions dropped go into `region_pages`
    /// (translations there may have been made for a region).
    pub fn invalidate_page(&mut self, page: u32, region_pages: &mut Vec<u32>) -> Vec<(u32, u32)> {
        let mut removed = Vec::new();
        for index in self.by_page.remove(&page).unwrap_or_default() {
            let Some(p) = self.patches.get_mut(index as usize) else {
                continue;
            };
            self.changed.insert(index);
            p.indexed = false;
            match p.kind {
                PatchKind::Inline => self.by_site.remove(&(p.phys, p.code32)),
                PatchKind::Entry => self.entries.remove(&(p.phys, p.code32)),
            };
            if p.state == PatchState::Enabled {
                removed.push((p.site, p.phys));
            }
            release_region(&mut self.in_region, &mut p.region, region_pages);
            if !matches!(p.state, PatchState::Refused(_)) {
                p.state = PatchState::Dirty;
            }
        }
        removed
    }
}

/// Gives up a patch's region: each site leaves `in_region` once no other
/// region holds it, and its page joins `pages` (translations there may
/// have been made for the region).
fn release_region(in_region: &mut FastMap<Site, u32>, region: &mut Vec<Site>, pages: &mut Vec<u32>) {
    for s in region.drain(..) {
        if let Some(n) = in_region.get_mut(&s) {
            *n -= 1;
            if *n == 0 {
                in_region.remove(&s);
                if !pages.contains(&(s.0 >> 12)) {
                    pages.push(s.0 >> 12);
                }
            }
        }
    }
}

/// The bytes `inst` (at `phys`) was decoded from. Within its page they are
/// at `phys` (a patch made after its instruction ran, which may have
/// changed CS or the paging, was decoded there); an instruction that runs
/// into the next page was decoded by a block just now, through the page
/// tables as they are, which are read without side effects (a byte that no
/// longer translates is read on from `phys`).
fn instruction_bytes(cpu: &Cpu, platform: &mut Platform, inst: &Instruction, phys: u32) -> [u8; MAX_INSN_LEN] {
    let mut bytes = [0u8; MAX_INSN_LEN];
    if (phys & 0xFFF) as usize + inst.len() <= 0x1000 {
        platform.fetch_phys(phys, &mut bytes[..inst.len()]);
        return bytes;
    }
    let cs_base = cpu.state.segs[SegReg::Cs as usize].base;
    for (i, b) in bytes.iter_mut().enumerate().take(inst.len()) {
        let lin = cs_base.wrapping_add(inst.ip32()).wrapping_add(i as u32);
        let at = cpu
            .probe_translate(platform, lin)
            .unwrap_or_else(|| phys.wrapping_add(i as u32));
        platform.fetch_phys(at, std::slice::from_mut(b));
    }
    bytes
}

/// The sites a patch region covers from `start` in the current code
/// segment: straight code, direct jumps and calls, up to an instruction that
/// may set IF again, a return or an indirect jump.
fn region_from(cpu: &Cpu, platform: &mut Platform, start: u32, code32: bool) -> Vec<Site> {
    let cs = cpu.state.segs[SegReg::Cs as usize];
    let mask = if code32 { u32::MAX } else { 0xFFFF };
    let mut sites = Vec::new();
    let mut work = vec![start & mask];
    while let Some(mut ip) = work.pop() {
        while (sites.len() as u32) < REGION_LIMIT && ip <= cs.limit {
            let Some(phys) = cpu.probe_translate(platform, cs.base.wrapping_add(ip)) else {
                break;
            };
            if sites.contains(&(phys, code32)) {
                break;
            }
            let Some(next) = decode_at(platform, phys, ip, code32) else {
                break;
            };
            sites.push((phys, code32));
            if may_set_if(&next) {
                break;
            }
            match next.flow_control() {
                FlowControl::Next | FlowControl::IndirectCall => ip = next.next_ip32() & mask,
                FlowControl::ConditionalBranch | FlowControl::Call if !next.is_call_far() => {
                    work.push(next.near_branch32());
                    ip = next.next_ip32() & mask;
                }
                FlowControl::UnconditionalBranch if !next.is_jmp_far() => ip = next.near_branch32(),
                _ => break,
            }
        }
    }
    sites
}

impl PatchTable {
    /// Saves every patch (`full`) or those added or changed since the last
    /// save (and the counters of those that only ran) into `into`, with
    /// how many the table holds.
    pub fn save(&mut self, full: bool, into: &mut RawLearning) {
        let indices: Vec<u32> = if full {
            (0..self.patches.len() as u32).collect()
        } else {
            self.changed.iter().copied().collect()
        };
        let mut counts: Vec<(u32, u64, u64)> = self
            .counted
            .iter()
            .filter(|i| !full && !self.changed.contains(i))
            .filter_map(|&i| self.patches.get(i as usize).map(|p| (i, p.hits, p.traps_avoided)))
            .collect();
        counts.sort_unstable();
        self.changed.clear();
        self.counted.clear();
        let saved = indices
            .into_iter()
            .filter_map(|i| {
                let p = self.patches.get(i as usize)?;
                Some((
                    i,
                    SavedPatch {
                        site: p.site,
                        phys: p.phys,
                        code32: p.code32,
                        bytes: p.bytes[..p.inst.len()].to_vec(),
                        kind: p.kind,
                        state: p.state,
                        cause: p.cause,
                        installed_at: p.installed_at,
                        hits: p.hits,
                        traps_avoided: p.traps_avoided,
                        region: p.region.clone(),
                        indexed: p.indexed,
                    },
                ))
            })
            .collect();
        into.patch_count = self.patches.len() as u32;
        into.patches = saved;
        into.counts = counts;
    }

    /// Puts saved patches (checked whole: every index below `count`) into a
    /// table that has forgotten everything, watching each one still
    /// indexed as its install did.
    pub fn restore(
        &mut self,
        count: u32,
        saved: &BTreeMap<u32, SavedPatch>,
        mem: &mut PhysMem,
    ) -> Result<(), LearningError> {
        *self = PatchTable::default();
        for index in 0..count {
            let s = saved.get(&index).ok_or(LearningError::MissingPatch { index, count })?;
            let bad = LearningError::BadInstruction {
                index,
                len: s.bytes.len(),
            };
            let inst = crate::exec::decode::decode_one(&s.bytes, u64::from(s.site), s.code32).ok_or(bad.clone())?;
            if inst.len() != s.bytes.len() {
                return Err(bad);
            }
            let mut bytes = [0u8; MAX_INSN_LEN];
            bytes[..s.bytes.len()].copy_from_slice(&s.bytes);
            for site in &s.region {
                *self.in_region.entry(*site).or_default() += 1;
            }
            if s.indexed {
                let site = (s.phys, s.code32);
                match s.kind {
                    PatchKind::Inline => self.by_site.insert(site, index),
                    PatchKind::Entry => self.entries.insert(site, index),
                };
                self.by_page.entry(s.phys >> 12).or_default().push(index);
                mem.watch_code(s.phys, inst.len() as u32);
            }
            self.patches.push(Patch {
                site: s.site,
                phys: s.phys,
                code32: s.code32,
                handler: handler_for::<Platform>(&inst),
                inst,
                kind: s.kind,
                state: s.state,
                cause: s.cause,
                installed_at: s.installed_at,
                hits: s.hits,
                traps_avoided: s.traps_avoided,
                region: s.region.clone(),
                bytes,
                indexed: s.indexed,
            });
        }
        Ok(())
    }
}
