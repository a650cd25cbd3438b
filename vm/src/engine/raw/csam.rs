//! The code scanner (CSAM in VirtualBox): before guest ring-0 code first runs
//! raw, walk it from the entry point, following direct jumps and calls to a
//! depth limit, and mark every sensitive instruction so that it traps or is
//! patched before it can run with ring-1 state. Scanned instructions are
//! watched; a write that changes one drops what was learned about its page.
//!
//! The scan reads guest code through the page tables without side effects
//! (no accessed bits, no TLB fill): the guest cannot tell it happened.

use iced_x86::{FlowControl, Instruction};

use super::sensitive::{classify, Class};
use crate::bus::Bus;
use crate::cpu::state::SegReg;
use crate::cpu::Cpu;
use crate::exec::MAX_INSN_LEN;
use std::collections::BTreeMap;

use super::learning::ScannedSite;
use crate::hash::{FastMap, FastSet};
use crate::mem::{CodeWrite, PhysMem};
use crate::platform::Platform;

/// Direct jumps and calls followed from an entry point at most.
pub const SCAN_DEPTH: u32 = 8;
/// Instructions one scan decodes at most.
pub const SCAN_BUDGET: u32 = 4096;

/// A guest instruction by physical address and code size.
pub type Site = (u32, bool);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub scans: u64,
    pub instructions: u64,
    pub marked: u64,
}

/// What one scan found, for its event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanResult {
    pub instructions: u32,
    pub marked: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Scanner {
    marked: FastSet<Site>,
    /// The scanned sites by physical page, to find them and to forget them
    /// when their code changes.
    by_page: FastMap<u32, PageScan>,
    /// Pages whose scan results changed since the learning was last saved.
    changed: FastSet<u32>,
    pub stats: ScanStats,
}

/// The sites scanned on one physical page.
#[derive(Clone, Debug)]
struct PageScan {
    /// With their lengths, in the order they were scanned.
    sites: Vec<(Site, u8)>,
    /// A bit per byte offset and code size: whether a site was scanned
    /// there. A Linux boot scans most of a million instructions, and a set
    /// of them all missed the host's caches on every lookup.
    bits: Box<[u64; 2 * 4096 / 64]>,
}

impl Default for PageScan {
    fn default() -> Self {
        PageScan {
            sites: Vec::new(),
            bits: Box::new([0; 2 * 4096 / 64]),
        }
    }
}

impl PageScan {
    /// The word and bit of `site` (on this page).
    fn bit((phys, code32): Site) -> (usize, u64) {
        let i = (phys & 0xFFF) as usize | usize::from(code32) << 12;
        (i / 64, 1 << (i % 64))
    }

    fn contains(&self, site: Site) -> bool {
        let (word, bit) = PageScan::bit(site);
        self.bits[word] & bit != 0
    }

    fn insert(&mut self, site: Site, len: u8) {
        let (word, bit) = PageScan::bit(site);
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.sites.push((site, len));
        }
    }
}

/// Decodes the instruction at `phys` if it lies wholly inside its page.
pub fn decode_at(platform: &mut Platform, phys: u32, eip: u32, code32: bool) -> Option<Instruction> {
    if phys as usize >= platform.mem.ram_size() {
        return None;
    }
    let mut bytes = [0u8; MAX_INSN_LEN];
    let avail = (0x1000 - (phys as usize & 0xFFF)).min(MAX_INSN_LEN);
    platform.fetch_phys(phys, &mut bytes[..avail]);
    crate::exec::decode::decode_one(&bytes[..avail], u64::from(eip), code32)
}

impl Scanner {
    pub fn is_scanned(&self, site: Site) -> bool {
        self.by_page.get(&(site.0 >> 12)).is_some_and(|p| p.contains(site))
    }

    pub fn is_marked(&self, site: Site) -> bool {
        self.marked.contains(&site)
    }

    /// Whether any code on `page` was scanned (what a scanner that tracks
    /// whole pages would go by).
    pub fn page_scanned(&self, page: u32) -> bool {
        self.by_page.contains_key(&page)
    }

    /// Scans from `eip` in the current code segment.
    pub fn scan(&mut self, cpu: &Cpu, platform: &mut Platform, eip: u32) -> ScanResult {
        let code32 = cpu.state.code32();
        let cs_base = cpu.state.segs[SegReg::Cs as usize].base;
        let cs_limit = cpu.state.segs[SegReg::Cs as usize].limit;
        let mask = if code32 { u32::MAX } else { 0xFFFF };
        let mut result = ScanResult::default();
        let mut work = vec![(eip, 0u32)];
        // The page tables do not change during a scan: the last page's
        // translation serves the instructions after it on that page.
        let mut mapped: Option<(u32, u32)> = None;
        // The page whose sites the scan last added to (noted as changed).
        let mut adding_to = None;
        while let Some((mut ip, depth)) = work.pop() {
            loop {
                if result.instructions >= SCAN_BUDGET || ip > cs_limit {
                    break;
                }
                let linear = cs_base.wrapping_add(ip);
                let phys = match mapped {
                    Some((page, frame)) if page == linear >> 12 => frame | (linear & 0xFFF),
                    _ => {
                        let Some(phys) = cpu.probe_translate(platform, linear) else {
                            break;
                        };
                        mapped = Some((linear >> 12, phys & !0xFFF));
                        phys
                    }
                };
                let site = (phys, code32);
                let page = phys >> 12;
                if self.is_scanned(site) {
                    break;
                }
                let Some(inst) = decode_at(platform, phys, ip, code32) else {
                    break;
                };
                self.by_page.entry(page).or_default().insert(site, inst.len() as u8);
                if adding_to != Some(page) {
                    self.changed.insert(page);
                    adding_to = Some(page);
                }
                platform.mem.watch_code(phys, inst.len() as u32);
                result.instructions += 1;
                if classify(&inst) == Class::Sensitive {
                    self.marked.insert(site);
                    result.marked += 1;
                }
                let next = ip.wrapping_add(inst.len() as u32) & mask;
                let target = inst.near_branch_target() as u32;
                match inst.flow_control() {
                    FlowControl::Next | FlowControl::Interrupt => ip = next,
                    FlowControl::ConditionalBranch => {
                        if depth < SCAN_DEPTH {
                            work.push((target, depth + 1));
                        }
                        ip = next;
                    }
                    FlowControl::Call => {
                        if depth < SCAN_DEPTH && !inst.is_call_far() {
                            work.push((target, depth + 1));
                        }
                        ip = next;
                    }
                    FlowControl::IndirectCall => ip = next,
                    FlowControl::UnconditionalBranch if !inst.is_jmp_far() && depth < SCAN_DEPTH => {
                        work.push((target, depth + 1));
                        break;
                    }
                    _ => break,
                }
            }
        }
        self.stats.scans += 1;
        self.stats.instructions += u64::from(result.instructions);
        self.stats.marked += u64::from(result.marked);
        result
    }

    /// Whether the guest changed the bytes of a scanned instruction.
    pub fn code_changed(&self, w: &CodeWrite) -> bool {
        self.by_page.get(&w.page).is_some_and(|p| {
            p.sites
                .iter()
                .any(|&((phys, _), len)| w.overlaps(phys & 0xFFF, u32::from(len)))
        })
    }

    /// Watches again the scanned instructions on `page`.
    pub fn rewatch_page(&self, page: u32, mem: &mut PhysMem) {
        for &((phys, _), len) in self.by_page.get(&page).into_iter().flat_map(|p| &p.sites) {
            mem.watch_code(phys, u32::from(len));
        }
    }

    /// Forgets what was scanned on a page the guest changed.
    pub fn forget_page(&mut self, page: u32) {
        if let Some(p) = self.by_page.remove(&page) {
            self.changed.insert(page);
            for (s, _) in p.sites {
                self.marked.remove(&s);
            }
        }
    }
}

impl Scanner {
    /// The scan results of every page (`full`) or of the pages whose
    /// results changed since the last save, for [`RawLearning`].
    pub fn save(&mut self, full: bool) -> BTreeMap<u32, Vec<ScannedSite>> {
        let pages: Vec<u32> = if full {
            self.by_page.keys().copied().collect()
        } else {
            self.changed.iter().copied().collect()
        };
        self.changed.clear();
        pages
            .into_iter()
            .map(|page| {
                let sites = self.by_page.get(&page).map_or_else(Vec::new, |p| {
                    p.sites
                        .iter()
                        .map(|&(site, len)| ScannedSite {
                            offset: (site.0 & 0xFFF) as u16,
                            code32: site.1,
                            len,
                            marked: self.marked.contains(&site),
                        })
                        .collect()
                });
                (page, sites)
            })
            .collect()
    }

    /// Puts saved scan results (checked whole) into a scanner that has
    /// forgotten everything, watching each instruction as its scan did.
    pub fn restore(&mut self, scanned: &BTreeMap<u32, Vec<ScannedSite>>, mem: &mut PhysMem) {
        self.by_page.reserve(scanned.len());
        for (&page, sites) in scanned {
            let list = self.by_page.entry(page).or_default();
            list.sites.reserve(sites.len());
            for s in sites {
                let site = (page << 12 | u32::from(s.offset), s.code32);
                if s.marked {
                    self.marked.insert(site);
                }
                list.insert(site, s.len);
                mem.watch_code(site.0, u32::from(s.len));
            }
        }
        self.changed.clear();
    }
}
