//! The block cache: guest code decoded once per block and reused until the
//! guest writes to its page. It is the first piece of the raw engine (see the
//! issue on ring compression); this engine, `blocks`, runs cached blocks with
//! the reference semantics at the guest's true privilege.
//!
//! Equivalence with the reference engine is by construction: a cached
//! instruction is executed by the same `Cpu::execute`, after
//! `Cpu::refetch` has repeated every check and side effect of its fetch (CS
//! limit, translation, accessed bits, TLB fill). A block holds only
//! instructions wholly inside one physical page; an instruction that crosses
//! a page is left to the reference step. Blocks are keyed by physical
//! address, EIP (the decoder's IP, which relative branches depend on) and
//! operand size, and dropped when their page is written (self-modifying
//! code), which `PhysMem`'s page watch reports.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic};

use crate::bus::Bus;
use crate::cpu::state::flags;
use crate::cpu::{Cpu, RingView, StepOutcome};
use crate::events::{ExitReason, SinkSlot};
use crate::exec::{handler_for, Handler, MAX_INSN_LEN};
use crate::mem::PAGE_SIZE;
use crate::platform::Platform;
use crate::raw::patm::{PatchState, PatchTable};
use crate::raw::{Injection, RawEngine, SiteKind};

/// Instructions per block at most.
const MAX_BLOCK: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct BlockKey {
    phys: u32,
    eip: u32,
    code32: bool,
    /// The ring view the block was annotated for (0 true, 1 ring 3, 2
    /// compressed): the same code is plain in one and patched in another.
    view: u8,
}

fn view_code(view: RingView) -> u8 {
    match view {
        RingView::True => 0,
        RingView::Ring3 => 1,
        RingView::Compressed { .. } => 2,
    }
}

/// A multiplicative hash for the cache's small integer keys: the lookup is on
/// the hot path, where SipHash cost a seventh of the time, and keys come from
/// the guest's own addresses, not from an adversary.
#[derive(Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

#[derive(Clone, Debug)]
struct Block {
    insts: Vec<Instruction>,
    /// Each instruction's family handler, looked up once.
    handlers: Vec<Handler<Platform>>,
    /// What the raw engine does with each instruction.
    sites: Vec<SiteKind>,
}

/// How a raw block run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawOutcome {
    Step(StepOutcome),
    /// The monitor must handle the instruction at CS:EIP (the view undone).
    Exit(ExitReason),
}

/// Counters for the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub built: u64,
    pub executed: u64,
    pub invalidated: u64,
}

#[derive(Clone, Debug, Default)]
pub struct BlockCache {
    blocks: FastMap<BlockKey, Block>,
    /// Block keys by physical page, for invalidation.
    by_page: FastMap<u32, Vec<BlockKey>>,
    hits: Vec<u32>,
    pub stats: BlockStats,
}

impl BlockCache {
    /// Drops the blocks on pages the guest wrote; `self.hits` keeps the
    /// pages until the next call.
    fn invalidate_written(&mut self, platform: &mut Platform) {
        self.hits.clear();
        platform.mem.take_watch_hits(&mut self.hits);
        for i in 0..self.hits.len() {
            self.drop_page(self.hits[i]);
        }
    }

    /// Drops every block on a physical page (its code changed, or a patch
    /// was installed there).
    pub fn drop_page(&mut self, page: u32) {
        if let Some(keys) = self.by_page.remove(&page) {
            for k in keys {
                self.blocks.remove(&k);
                self.stats.invalidated += 1;
            }
        }
    }

    /// Decodes a block from physical memory, without touching the guest's
    /// view of anything (no translation, no accessed bits).
    fn build(
        &mut self,
        platform: &mut Platform,
        key: BlockKey,
        mut annotate: impl FnMut(&mut Platform, u32, &Instruction) -> SiteKind,
    ) {
        let mut bytes = [0u8; MAX_BLOCK * MAX_INSN_LEN];
        let avail = (PAGE_SIZE - (key.phys as usize & (PAGE_SIZE - 1))).min(bytes.len());
        platform.fetch_phys(key.phys, &mut bytes[..avail]);
        let bitness = if key.code32 { 32 } else { 16 };
        let mut decoder = Decoder::with_ip(
            bitness,
            &bytes[..avail],
            u64::from(key.eip),
            DecoderOptions::NO_INVALID_CHECK,
        );
        let mut insts = Vec::with_capacity(8);
        while insts.len() < MAX_BLOCK && decoder.can_decode() {
            let inst = decoder.decode();
            // Invalid bytes, or an instruction cut by the page end (the decoder
            // ran out of bytes): the reference step handles those.
            if inst.is_invalid() {
                break;
            }
            let ends = inst.flow_control() != FlowControl::Next;
            insts.push(inst);
            if ends {
                break;
            }
        }
        self.stats.built += 1;
        platform.mem.watch_page(key.phys >> 12);
        self.by_page.entry(key.phys >> 12).or_default().push(key);
        let handlers = insts.iter().map(handler_for::<Platform>).collect();
        let ip0 = key.eip;
        let sites = insts
            .iter()
            .map(|inst| annotate(platform, key.phys.wrapping_add(inst.ip32().wrapping_sub(ip0)), inst))
            .collect();
        self.blocks.insert(key, Block { insts, handlers, sites });
    }

    /// Runs instructions from the block at CS:EIP until the block ends,
    /// `stop_icount` is reached, or something needs the outer loop (an
    /// exception, a halt, port I/O, a change of IF, a write to cached code).
    /// The `blocks` engine: cached code at the guest's true privilege.
    pub fn run(&mut self, cpu: &mut Cpu, platform: &mut Platform, stop_icount: u64) -> StepOutcome {
        let Some((key, phys)) = self.lookup(cpu, platform, RingView::True) else {
            return cpu.step(platform);
        };
        if !self.blocks.contains_key(&key) {
            self.build(platform, key, |_, _, _| SiteKind::Plain);
        }
        match self.blocks.get(&key) {
            Some(block) if !block.insts.is_empty() => {
                self.stats.executed += 1;
                match run_block::<false>(block, cpu, platform, stop_icount, phys, None) {
                    RawOutcome::Step(o) => o,
                    // Only raw blocks exit to the monitor.
                    RawOutcome::Exit(_) => cpu.step(platform),
                }
            }
            _ => cpu.step(platform),
        }
    }

    /// The raw engine: runs the block at CS:EIP in `view` (ring compression
    /// for guest ring 0), with its scanner marks and patches. The CPU is in
    /// the true view before and after. Code the block cache cannot hold runs
    /// one reference step.
    pub fn run_raw(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        stop_icount: u64,
        view: RingView,
        raw: &mut RawEngine,
        events: &mut SinkSlot,
    ) -> RawOutcome {
        let lookup = self.lookup(cpu, platform, view);
        if !self.hits.is_empty() {
            raw.invalidate_pages(&self.hits, cpu, events);
            self.hits.clear();
        }
        let Some((key, phys)) = lookup else {
            return RawOutcome::Step(cpu.step(platform));
        };
        if !self.blocks.contains_key(&key) {
            let compressed = key.view == 2;
            self.build(platform, key, |platform, phys, inst| {
                raw.annotate(cpu, platform, phys, inst, compressed, events)
            });
            // Scanning and patching watch pages too; a write since then
            // cannot have happened, but a watch set now must not be lost.
        }
        match self.blocks.get(&key) {
            Some(block) if !block.insts.is_empty() => {
                self.stats.executed += 1;
                cpu.enter_view(view);
                let out = run_block::<true>(
                    block,
                    cpu,
                    platform,
                    stop_icount,
                    phys,
                    Some((&mut raw.patches, raw.config.inject)),
                );
                cpu.leave_view();
                out
            }
            _ => RawOutcome::Step(cpu.step(platform)),
        }
    }

    /// The key and physical address of the block at CS:EIP, after the first
    /// byte's fetch exactly as the reference does it (CS checks,
    /// translation). `None` when the reference must step: a fetch fault (it
    /// repeats and delivers it) or code outside RAM (reading ahead to build
    /// a block could touch device registers).
    fn lookup(&mut self, cpu: &mut Cpu, platform: &mut Platform, view: RingView) -> Option<(BlockKey, u32)> {
        if platform.mem.watch_hit() {
            self.invalidate_written(platform);
        }
        if cpu.state.halted {
            return None;
        }
        let phys = cpu.refetch(platform, 1).ok()?;
        if phys as usize >= platform.mem.ram_size() {
            return None;
        }
        let key = BlockKey {
            phys,
            eip: cpu.state.eip,
            code32: cpu.state.code32(),
            view: view_code(view),
        };
        Some((key, phys))
    }
}

/// Runs a block. `RAW` blocks run in a ring view with the raw engine's
/// annotations: exceptions come back undelivered as exits for the monitor,
/// marked sites and software interrupts exit before they run, and patches
/// run inline.
fn run_block<const RAW: bool>(
    block: &Block,
    cpu: &mut Cpu,
    platform: &mut Platform,
    stop_icount: u64,
    phys0: u32,
    mut patches: Option<(&mut PatchTable, Injection)>,
) -> RawOutcome {
    let mut if_before = cpu.virtual_if();
    // Entered in an interrupt shadow (after STI or MOV SS): an interrupt may
    // be taken right after this first instruction, so the block ends there.
    let shadowed = cpu.state.interrupt_shadow;
    let code32 = cpu.state.code32();
    let cpl = cpu.state.cpl();
    let insts = &block.insts;
    let ip0 = insts[0].ip32();
    for (i, ((inst, &handler), &site)) in insts.iter().zip(&block.handlers).zip(&block.sites).enumerate() {
        let len = inst.len() as u32;
        if i > 0 {
            // The previous instruction fell through to this one. Nothing at
            // this boundary can differ from the block's start (the checks
            // below leave on any change), except the deadline.
            if cpu.state.eip != inst.ip32() || cpu.icount >= stop_icount {
                return RawOutcome::Step(StepOutcome::Retired);
            }
            let expected = phys0.wrapping_add(inst.ip32().wrapping_sub(ip0));
            match cpu.refetch(platform, len) {
                Ok(p) if p == expected => {}
                // A fault (repeated and delivered by the reference step next
                // time round) or a changed mapping: leave the block.
                _ => return RawOutcome::Step(StepOutcome::Retired),
            }
        } else if !cpu.fits_cs_limit(len) {
            // The reference raises #GP for an instruction cut by the CS limit.
            return if RAW {
                RawOutcome::Exit(ExitReason::Fault(crate::cpu::vector::GP))
            } else {
                RawOutcome::Step(cpu.step(platform))
            };
        }
        let result = if RAW {
            match site {
                SiteKind::Plain => cpu.execute_or_fault_with(platform, inst, handler),
                SiteKind::Trap => return RawOutcome::Exit(ExitReason::Marked),
                SiteKind::SoftInt(v) => return RawOutcome::Exit(ExitReason::SoftwareInterrupt(v)),
                SiteKind::Patch(index) => match run_patch(cpu, platform, &mut patches, index) {
                    Some(r) => r,
                    None => return RawOutcome::Exit(ExitReason::Marked),
                },
            }
        } else {
            Ok(cpu.execute_with(platform, inst, handler))
        };
        match result {
            Ok(StepOutcome::Retired) => {}
            Ok(other) => return RawOutcome::Step(other),
            Err(f) if site == SiteKind::Plain => return RawOutcome::Exit(ExitReason::Fault(f.vector)),
            Err(_) => return RawOutcome::Exit(ExitReason::PatchFault),
        }
        // Leave when the guest's IF comes on: a pending interrupt is taken
        // at this boundary. (It going off needs nothing: none can be taken.)
        let vif = cpu.virtual_if();
        if platform.attention != Default::default()
            || platform.mem.watch_hit()
            || cpu.state.halted
            || cpu.state.interrupt_shadow
            || shadowed
            || (vif && !if_before)
            || cpu.state.code32() != code32
            || (RAW && (cpu.state.cpl() != cpl || cpu.state.eflags & flags::TF != 0))
        {
            return RawOutcome::Step(StepOutcome::Retired);
        }
        if_before = vif;
    }
    RawOutcome::Step(StepOutcome::Retired)
}

/// Runs a patch: the instruction's reference semantics on the guest's true
/// state (virtual IF and IOPL, RPL 0), inline. `None` when the patch is no
/// longer enabled: the site traps instead. An `Err` is a fault of the
/// patched instruction, rolled back for the monitor.
fn run_patch(
    cpu: &mut Cpu,
    platform: &mut Platform,
    patches: &mut Option<(&mut PatchTable, Injection)>,
    index: u32,
) -> Option<crate::cpu::Result<StepOutcome>> {
    let (table, inject) = patches.as_mut()?;
    let patch = table.get_mut(index)?;
    if patch.state != PatchState::Enabled {
        return None;
    }
    patch.hits += 1;
    let view = cpu.ring_view;
    let m = patch.inst.mnemonic();
    // Injected bug: the PUSHF patch forgets to put the virtual flags back.
    let leak = inject.pushf_leak && matches!(m, Mnemonic::Pushf | Mnemonic::Pushfd);
    if !leak {
        cpu.leave_view();
    }
    let result = cpu.execute_or_fault_with(platform, &patch.inst, patch.handler);
    if inject.sti_shadow && m == Mnemonic::Sti {
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
