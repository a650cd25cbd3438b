//! The block cache: guest code decoded once per block and reused until the
//! guest writes to its page. The `blocks` engine runs cached blocks at the
//! guest's true privilege; the raw engine runs them in a ring view (guest
//! ring 0 compressed into ring 1) with the annotations its scanner and patch
//! manager give each instruction (`crate::engine::raw`, docs/raw-engine.md).
//!
//! Equivalence with the reference engine is by construction: a cached
//! instruction is executed by the same `Cpu::execute`, or in its compact form
//! (`exec::compact`) by the same operation functions the family handlers
//! call, after `Cpu::refetch` has repeated every check and side effect of its
//! fetch (CS limit, translation, accessed bits, TLB fill), or after a check
//! that shows `refetch` would find exactly what it found before. A block holds only
//! instructions wholly inside one physical page; an instruction that crosses
//! a page is left to the reference step. Blocks are keyed by physical
//! address, EIP (the decoder's IP, which relative branches depend on) and
//! operand size, and dropped when the guest changes one of their bytes
//! (self-modifying code), which `PhysMem`'s code watch reports; stores to
//! other bytes of the page (data beside code) leave them alone.

use iced_x86::{FlowControl, Instruction};

use super::jit::{self, Code, Env, Exit, Insn, Jit, Shape, SystemSite};
use super::outer_loop_would_act;
use crate::bus::Bus;
use crate::cpu::state::{flags, SegReg};
use crate::cpu::{Cpu, RingView, StepOutcome};
use crate::events::{ExitReason, IoAccess, SinkSlot};
use crate::exec::compact::Op;
use crate::exec::{handler_for, Handler, MAX_INSN_LEN};
use crate::hash::FastMap;
use crate::mem::{CodeWrite, PhysMem, PAGE_SIZE};
use crate::platform::Platform;

/// Instructions per block at most. Every edge between translations
/// stores and reloads the registers they cache: at 32, the hottest loop of
/// Linux's boot (a multiply in 16-bit halves, 13% of its time) crossed
/// two a round, and the boot ran 8% slower (9.77 s against 9.03, medians
/// of four).
const MAX_BLOCK: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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

/// What a cached instruction becomes in a raw block (the raw engine's
/// annotation, asked for when the block is built).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    Plain,
    /// Exit to the monitor before running it (scanner-marked, unpatched).
    Trap,
    /// A software interrupt: goes through the monitor's IDT to the monitor.
    SoftInt(u8),
    /// Run the patch with this index instead. `leaks_view_flags`: an
    /// injected bug (a PUSHF patch that pushes the ring-1 flags), which the
    /// compiled form of the patch must carry too. `current`: the patch runs
    /// the instruction at the site now, which its compiled form is made
    /// from (with the injected stale-patch bug it may run an older one).
    Patch {
        index: u32,
        leaks_view_flags: bool,
        current: bool,
    },
}

impl SiteKind {
    /// Whether a translation made for a block with this site serves one
    /// with `other` there: plain sites and patches may be host code, the
    /// rest always steps.
    fn compiled_alike(self, other: SiteKind) -> bool {
        let steps = |s: SiteKind| matches!(s, SiteKind::Trap | SiteKind::SoftInt(_));
        self == other || (steps(self) && steps(other))
    }
}

/// What the raw engine supplies to blocks that run in a ring view: the
/// block engine executes, the raw engine (scanner, patch manager, monitor)
/// decides, and this is all the one asks of the other.
pub trait RawHooks {
    /// The guest changed watched code bytes: forget what was decided about
    /// the code written, naming in `forgotten` each page whose blocks must
    /// all go (their annotations came from what was forgotten), and watch
    /// again in `mem` the code bytes still relied on (the written pages'
    /// watches were cleared).
    fn code_written(
        &mut self,
        writes: &[CodeWrite],
        cpu: &Cpu,
        mem: &mut PhysMem,
        events: &mut SinkSlot,
        forgotten: &mut Vec<u32>,
    );
    /// How the instruction at `phys` runs in a block built for the view
    /// (`compressed`: guest ring 0 in ring 1).
    fn annotate(
        &mut self,
        cpu: &Cpu,
        platform: &mut Platform,
        phys: u32,
        inst: &Instruction,
        compressed: bool,
        events: &mut SinkSlot,
    ) -> SiteKind;
    /// Runs patch `index` inline. `None` when it no longer applies (the
    /// site traps instead); an `Err` is a fault of the patched instruction,
    /// rolled back for the monitor.
    fn run_patch(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        index: u32,
    ) -> Option<crate::cpu::Result<StepOutcome>>;
    /// Whether the guest is still where the same view applies, so the next
    /// block may run without asking the monitor.
    fn stays_in(&self, cpu: &Cpu, view: RingView) -> bool;
    /// Whether a translation entered in `view` may go on into others:
    /// where `stays_in`, and in the compressed view with the guest's IF
    /// clear too (the monitor chose it for a patch region), where every
    /// translation it reaches checks that the monitor would choose the
    /// compressed view for its own block ([`RawHooks::in_patch_region`]).
    fn chains_in(&self, cpu: &Cpu, view: RingView) -> bool;
    /// Whether the monitor runs the guest's ring 0 with IF clear in the
    /// compressed view at `phys`: a patch region holds it.
    fn in_patch_region(&self, phys: u32, code32: bool) -> bool;
}

/// Blocks at the guest's true privilege ask nothing of a raw engine.
enum NoHooks {}

impl RawHooks for NoHooks {
    fn code_written(&mut self, _: &[CodeWrite], _: &Cpu, _: &mut PhysMem, _: &mut SinkSlot, _: &mut Vec<u32>) {
        match *self {}
    }
    fn annotate(&mut self, _: &Cpu, _: &mut Platform, _: u32, _: &Instruction, _: bool, _: &mut SinkSlot) -> SiteKind {
        match *self {}
    }
    fn run_patch(&mut self, _: &mut Cpu, _: &mut Platform, _: u32) -> Option<crate::cpu::Result<StepOutcome>> {
        match *self {}
    }
    fn stays_in(&self, _: &Cpu, _: RingView) -> bool {
        match *self {}
    }
    fn chains_in(&self, _: &Cpu, _: RingView) -> bool {
        match *self {}
    }
    fn in_patch_region(&self, _: u32, _: bool) -> bool {
        match *self {}
    }
}

/// A cached instruction: its compact form, and the decoded instruction with
/// its family handler for the generic path (and for display).
#[derive(Clone, Debug)]
struct CachedInst {
    op: Op,
    /// The family handler, looked up once.
    handler: Handler<Platform>,
    /// EIP at the instruction, and after it (masked to the code size).
    ip: u32,
    next_ip: u32,
    /// Offset from the block's first byte.
    offset: u32,
    len: u32,
    inst: Instruction,
    /// What the raw engine does with it (always plain in the true view).
    site: SiteKind,
    /// The instruction may change what the block engine and the inline
    /// memory path hold (`exec::leaves_modes_alone` does not list it).
    changes_modes: bool,
    /// Of the modes it changes at most EFLAGS' system flags (CLI, STI,
    /// POPF): whether it did is seen by comparing them.
    flags_only: bool,
}

impl CachedInst {
    /// Whether running it here may change the modes: as a generic step or
    /// as a patch (which runs the instruction on the guest's true state and
    /// puts the view back). A compact form changes none by construction.
    /// Runs it with its family handler: in a `RAW` block a fault comes
    /// back undelivered, as the monitor's exit.
    #[inline(always)]
    fn execute_generic<const RAW: bool>(
        &self,
        cpu: &mut Cpu,
        platform: &mut Platform,
    ) -> Result<StepOutcome, RawOutcome> {
        if RAW {
            cpu.execute_or_fault_with(platform, &self.inst, self.handler)
                .map_err(|f| RawOutcome::Exit(ExitReason::Fault(f.vector)))
        } else {
            Ok(cpu.execute_with(platform, &self.inst, self.handler))
        }
    }

    #[inline(always)]
    fn may_change_modes<const RAW: bool>(&self) -> bool {
        self.changes_modes && (matches!(self.op, Op::Generic) || (RAW && matches!(self.site, SiteKind::Patch { .. })))
    }
}

#[derive(Clone, Debug, Default)]
struct Block {
    insts: Vec<CachedInst>,
    /// The instructions lie back to back from the block's EIP without
    /// wrapping around the code size, ending before EIP `end`.
    contiguous: bool,
    end: u32,
    /// The bytes from the block's physical address that its decoding read
    /// (the instructions, and the bytes that ended it if they did not
    /// decode): what is watched, and what must still be there for the
    /// block to be taken back after [`BlockCache::forget_all`].
    read: Box<[u8]>,
    /// Entries from the dispatcher, until it is compiled.
    runs: u32,
    /// Its translation, if it has one.
    code: Option<Code>,
    /// The compiler declined it: nothing in it would run as host code.
    not_worth: bool,
    /// Its translation (compressed view) was made while a patch region
    /// held its start, so it takes chained entries with the guest's IF
    /// clear.
    region_chained: bool,
    /// Segments ([`jit::flat_segments`]) a translation of it was refused
    /// for taking as flat: the next is compiled without them; with
    /// [`jit::GROUPS_REFUSED`], without groups of memory operands either.
    flat_refused: u32,
    /// Its physical address (its key's).
    phys: u32,
    /// Its key.
    key: BlockKey,
    /// Its translation's chainable exits, and the block each is linked to.
    exits: Vec<(Exit, Option<BlockKey>)>,
    /// Translations linked to this one: their block and exit.
    incoming: Vec<(BlockKey, usize)>,
}

impl Block {
    /// Bytes from its physical address that its decoding read.
    fn extent(&self) -> u32 {
        self.read.len() as u32
    }
}

/// What makes [`Cpu::refetch`] of an instruction in a block a foregone
/// conclusion, so it can be skipped: CS admits every byte of the block, and
/// the code page is either untranslated (at the block's physical address)
/// or still held by the TLB with the block's physical page (a hit leaves no
/// trace; a miss takes the full `refetch`, which walks and sets accessed
/// bits as the reference does). Valid while CS, CR0 and the CPL stay as they
/// were, which only a generic instruction can change: it is computed again
/// after one.
#[derive(Clone, Copy)]
struct FetchCheck {
    cs_ok: bool,
    paging: bool,
    user: bool,
    /// Linear address of the block's first byte.
    lin0: u32,
}

impl FetchCheck {
    /// For `block` (its first byte at physical address `block.phys`).
    fn new(cpu: &Cpu, block: &Block) -> FetchCheck {
        let phys0 = block.phys;
        let first = block.insts.first().map_or(0, |ci| ci.ip);
        let lin0 = cpu.state.segs[SegReg::Cs as usize].base.wrapping_add(first);
        let paging = cpu.state.paging();
        // Without paging the fetch finds the linear address itself, which is
        // the block's only if the block was not entered through a mapping
        // that paging has since dropped.
        let cs_ok = block.contiguous && cpu.cs_admits(first, block.end) && (paging || lin0 == phys0);
        FetchCheck {
            cs_ok,
            paging,
            user: cpu.state.cpl() == 3,
            lin0,
        }
    }

    /// Whether `refetch` at the instruction `offset` bytes into the block
    /// would return `expected` with no side effect.
    #[inline(always)]
    fn passes(&self, cpu: &Cpu, offset: u32, expected: u32) -> bool {
        self.cs_ok
            && (!self.paging
                || cpu.tlb.lookup(self.lin0.wrapping_add(offset), false, self.user, false) == Some(expected))
    }
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
    /// Blocks taken back after `forget_all` (their bytes unchanged) instead
    /// of being built again.
    pub revived: u64,
    /// Block runs: interpreted, entered from the dispatcher or chained to
    /// (a compiled block looping on itself counts once per entry).
    pub executed: u64,
    pub invalidated: u64,
}

/// Slots in the direct-mapped table in front of the block index.
const RECENT: usize = 4096;

/// A slot of the direct-mapped table: a key and its block, or `EMPTY`.
#[derive(Clone, Copy, Debug)]
struct Recent {
    key: BlockKey,
    slot: u32,
}

const EMPTY: u32 = u32::MAX;

impl Recent {
    const NONE: Recent = Recent {
        key: BlockKey {
            phys: 0,
            eip: 0,
            code32: false,
            view: 0,
        },
        slot: EMPTY,
    };
}

#[derive(Clone, Debug)]
pub struct BlockCache {
    /// Blocks by slot; a dropped block's slot is emptied and reused.
    blocks: Vec<Block>,
    free: Vec<u32>,
    index: FastMap<BlockKey, u32>,
    /// Most blocks are found here with one comparison, before `index`.
    recent: Box<[Recent]>,
    /// Block keys by physical page, for invalidation.
    by_page: FastMap<u32, Vec<BlockKey>>,
    writes: Vec<CodeWrite>,
    forgotten: Vec<u32>,
    pub stats: BlockStats,
    /// The compiler tier.
    pub jit: Jit,
    /// Exits of translations waiting for the block they leave for to be
    /// compiled: that block's key, and theirs with the exit's index.
    unlinked: FastMap<BlockKey, Vec<(BlockKey, usize)>>,
    /// Blocks set aside by `forget_all`, with the epoch they were set aside
    /// in: not found, not watched, never run, until `find` takes one back.
    dormant: FastMap<BlockKey, (u32, u32)>,
    /// `forget_all`s so far.
    epoch: u32,
}

/// Epochs a dormant block waits to be taken back before its slot is freed.
const DORMANT_EPOCHS: u32 = 8;

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            blocks: Vec::new(),
            free: Vec::new(),
            index: FastMap::default(),
            recent: vec![Recent::NONE; RECENT].into_boxed_slice(),
            by_page: FastMap::default(),
            writes: Vec::new(),
            forgotten: Vec::new(),
            stats: BlockStats::default(),
            jit: Jit::default(),
            unlinked: FastMap::default(),
            dormant: FastMap::default(),
            epoch: 0,
        }
    }
}

fn recent_slot(key: &BlockKey) -> usize {
    (key.phys ^ (key.phys >> 12)) as usize % RECENT
}

impl BlockCache {
    /// Forgets every block as far as anything the guest or the raw engine
    /// could tell: none is found, watched or run any more, and the next
    /// entry at any address builds and annotates its block anew. A
    /// restore (a seek, bisect's intervals) does this, so the work is
    /// kept out of sight: each block is set aside with its decoding and its
    /// translation, and building it again takes it back instead, when its
    /// bytes are still what it decoded (memory may have been replaced
    /// since) and its new annotations leave the same instructions to host
    /// code. The counters and the compiler's configuration stay.
    pub fn forget_all(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        let epoch = self.epoch;
        let (blocks, free) = (&mut self.blocks, &mut self.free);
        self.dormant.retain(|_, &mut (slot, since)| {
            let keep = epoch.wrapping_sub(since) <= DORMANT_EPOCHS;
            if !keep {
                blocks[slot as usize] = Block::default();
                free.push(slot);
            }
            keep
        });
        for (key, slot) in self.index.drain() {
            self.dormant.insert(key, (slot, epoch));
        }
        // Emptied in place: the tables keep their memory for what follows.
        self.recent.fill(Recent::NONE);
        self.by_page.clear();
        self.writes.clear();
        self.forgotten.clear();
        self.unlinked.clear();
        // Links and jump table entries between translations are made again
        // as their blocks come back.
        self.jit.forget_jumps();
    }

    /// Drops the blocks whose bytes the guest changed, and tells `raw` (the
    /// raw engine, whose scan results and patches describe code too); then
    /// the written pages' watches are rebuilt from what is still cached.
    fn invalidate_written<H: RawHooks>(
        &mut self,
        cpu: &Cpu,
        platform: &mut Platform,
        raw: &mut H,
        events: &mut SinkSlot,
    ) {
        debug_assert!(platform.mem.code_written());
        let mut writes = std::mem::take(&mut self.writes);
        writes.clear();
        platform.mem.take_code_writes(&mut writes);
        for w in &writes {
            self.drop_written(w);
            platform.mem.unwatch_code_page(w.page);
        }
        let mut forgotten = std::mem::take(&mut self.forgotten);
        forgotten.clear();
        raw.code_written(&writes, cpu, &mut platform.mem, events, &mut forgotten);
        for &page in &forgotten {
            self.drop_page(page);
        }
        self.forgotten = forgotten;
        for w in &writes {
            self.rewatch_page(w.page, &mut platform.mem);
        }
        self.writes = writes;
    }

    /// Drops the blocks of `w`'s page that its span meets.
    fn drop_written(&mut self, w: &CodeWrite) {
        let Some(mut keys) = self.by_page.remove(&w.page) else {
            return;
        };
        let (index, blocks) = (&self.index, &self.blocks);
        let (written, kept): (Vec<BlockKey>, Vec<BlockKey>) = keys.drain(..).partition(|k| {
            index
                .get(k)
                .is_none_or(|&slot| w.overlaps(k.phys & 0xFFF, blocks[slot as usize].extent()))
        });
        for k in &written {
            self.drop_block(k);
        }
        keys = kept;
        if !keys.is_empty() {
            self.by_page.insert(w.page, keys);
        }
    }

    /// Watches again the bytes of the blocks still cached on `page`.
    fn rewatch_page(&self, page: u32, mem: &mut PhysMem) {
        for k in self.by_page.get(&page).into_iter().flatten() {
            if let Some(&slot) = self.index.get(k) {
                mem.watch_code(k.phys, self.blocks[slot as usize].extent());
            }
        }
    }

    /// Drops every block on a physical page (its code changed, or a patch
    /// was installed or switched there).
    pub fn drop_page(&mut self, page: u32) {
        if let Some(keys) = self.by_page.remove(&page) {
            for k in keys {
                self.drop_block(&k);
            }
        }
    }

    fn drop_block(&mut self, k: &BlockKey) {
        if let Some(slot) = self.index.remove(k) {
            // Translations jumping here go back to returning, and wait for
            // the block to be compiled again.
            for (from, exit) in std::mem::take(&mut self.blocks[slot as usize].incoming) {
                self.unlink(from, exit, *k);
            }
            self.blocks[slot as usize] = Block::default();
            self.free.push(slot);
            self.jit.forget(k.eip, k.phys, jit::jump_mode(k.code32, k.view));
            let r = &mut self.recent[recent_slot(k)];
            if r.slot == slot {
                r.slot = EMPTY;
            }
        }
        self.stats.invalidated += 1;
    }

    /// The slot of the block for `key`, built (and annotated) if need be.
    #[inline]
    fn find(
        &mut self,
        platform: &mut Platform,
        key: BlockKey,
        annotate: impl FnMut(&mut Platform, u32, &Instruction) -> SiteKind,
    ) -> usize {
        let r = &mut self.recent[recent_slot(&key)];
        if r.slot != EMPTY && r.key == key {
            return r.slot as usize;
        }
        let slot = match self.index.get(&key) {
            Some(&s) => s,
            None => match self.dormant.remove(&key) {
                Some((slot, _)) => self.revive(platform, key, slot, annotate),
                None => self.build(platform, key, annotate),
            },
        };
        self.recent[recent_slot(&key)] = Recent { key, slot };
        slot as usize
    }

    /// Decodes a block from physical memory, without touching the guest's
    /// view of anything (no translation, no accessed bits).
    /// Takes back the dormant block in `slot` for `key` if its bytes are
    /// unchanged, doing what [`BlockCache::build`] would do with what the
    /// guest and the raw engine see (the watch, the annotations in order);
    /// otherwise builds the block anew.
    fn revive(
        &mut self,
        platform: &mut Platform,
        key: BlockKey,
        slot: u32,
        mut annotate: impl FnMut(&mut Platform, u32, &Instruction) -> SiteKind,
    ) -> u32 {
        let block = &mut self.blocks[slot as usize];
        let mut now = [0u8; MAX_BLOCK * MAX_INSN_LEN];
        let now = &mut now[..block.read.len()];
        platform.fetch_phys(key.phys, now);
        if *now != *block.read {
            *block = Block::default();
            self.free.push(slot);
            return self.build(platform, key, annotate);
        }
        self.stats.revived += 1;
        platform.mem.watch_code(key.phys, block.extent());
        self.by_page.entry(key.phys >> 12).or_default().push(key);
        // What the translation depends on is which instructions are plain
        // sites and which patches it runs (in a raw view; a true-view
        // block's are all plain).
        let mut same_host_code = true;
        for ci in &mut block.insts {
            let site = annotate(platform, key.phys.wrapping_add(ci.offset), &ci.inst);
            same_host_code &= site.compiled_alike(ci.site);
            ci.site = site;
        }
        // Links from before may point at translations of blocks that are
        // still dormant.
        block.incoming.clear();
        // A translation that took a patch region for granted goes: the
        // regions were forgotten with the patches.
        let code = block
            .code
            .filter(|&c| same_host_code && !block.region_chained && self.jit.is_current(c));
        match code {
            Some(code) => {
                for (exit, linked) in &mut block.exits {
                    if linked.take().is_some() {
                        self.jit.link(code, *exit, None);
                    }
                }
            }
            None => {
                block.code = None;
                block.exits.clear();
                block.runs = 0;
                block.not_worth &= same_host_code;
            }
        }
        self.index.insert(key, slot);
        if code.is_some() {
            self.link_compiled(key, slot as usize);
        }
        slot
    }

    fn build(
        &mut self,
        platform: &mut Platform,
        key: BlockKey,
        mut annotate: impl FnMut(&mut Platform, u32, &Instruction) -> SiteKind,
    ) -> u32 {
        let mut bytes = [0u8; MAX_BLOCK * MAX_INSN_LEN];
        let avail = (PAGE_SIZE - (key.phys as usize & (PAGE_SIZE - 1))).min(bytes.len());
        platform.fetch_phys(key.phys, &mut bytes[..avail]);
        let mut decoder = crate::exec::decode::decoder(&bytes[..avail], u64::from(key.eip), key.code32);
        let mut insts = Vec::with_capacity(8);
        let mut read = 0usize;
        while insts.len() < MAX_BLOCK && decoder.can_decode() {
            let inst = decoder.decode();
            // Invalid bytes, or an instruction cut by the page end (the decoder
            // ran out of bytes): the reference step handles those. The block
            // depends on them not decoding, so they are watched too.
            if inst.is_invalid() {
                read = (read + MAX_INSN_LEN).min(avail);
                break;
            }
            read += inst.len();
            let ends = inst.flow_control() != FlowControl::Next;
            insts.push(inst);
            if ends {
                break;
            }
        }
        self.stats.built += 1;
        platform.mem.watch_code(key.phys, read as u32);
        self.by_page.entry(key.phys >> 12).or_default().push(key);
        let mask = if key.code32 { 0xFFFF_FFFF } else { 0xFFFF };
        let mut contiguous = true;
        let mut end = key.eip;
        let insts = insts
            .into_iter()
            .map(|inst| {
                let ip = inst.ip32();
                let len = inst.len() as u32;
                contiguous &= ip == end && u64::from(ip) + u64::from(len) <= u64::from(mask);
                end = ip.wrapping_add(len);
                let offset = ip.wrapping_sub(key.eip);
                let op = Op::build(&inst);
                CachedInst {
                    changes_modes: !crate::exec::leaves_modes_alone(&inst),
                    flags_only: crate::exec::changes_only_system_flags(&inst),
                    op,
                    handler: handler_for::<Platform>(&inst),
                    ip,
                    next_ip: ip.wrapping_add(len) & mask,
                    offset,
                    len,
                    site: annotate(platform, key.phys.wrapping_add(offset), &inst),
                    inst,
                }
            })
            .collect();
        let block = Block {
            insts,
            contiguous,
            end,
            read: bytes[..read].into(),
            phys: key.phys,
            key,
            ..Block::default()
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.blocks[s as usize] = block;
                s
            }
            None => {
                self.blocks.push(block);
                (self.blocks.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        slot
    }

    /// Points exit `exit` of the translation of block `from` back at its
    /// return, if it is linked to `to`; it then waits for `to` again.
    fn unlink(&mut self, from: BlockKey, exit: usize, to: BlockKey) {
        let Some(&slot) = self.index.get(&from) else {
            return;
        };
        let block = &mut self.blocks[slot as usize];
        let (Some(code), Some((e, linked))) = (block.code, block.exits.get_mut(exit)) else {
            return;
        };
        if *linked == Some(to) && self.jit.link(code, *e, None) {
            *linked = None;
            self.wait_for(to, from, exit);
        }
    }

    /// Notes that exit `exit` of `from`'s translation waits for `to` to be
    /// compiled. Once per exit: a block compiled again and again (code that
    /// keeps being rewritten) must not grow the list.
    fn wait_for(&mut self, to: BlockKey, from: BlockKey, exit: usize) {
        let waiting = self.unlinked.entry(to).or_default();
        if !waiting.contains(&(from, exit)) {
            waiting.push((from, exit));
        }
    }

    /// Links exit `exit` of the translation of block `from` to the
    /// translation of block `to`, when both are current.
    fn link(&mut self, from: BlockKey, exit: usize, to: BlockKey) -> bool {
        let (Some(&from_slot), Some(&to_slot)) = (self.index.get(&from), self.index.get(&to)) else {
            return false;
        };
        let target = self.blocks[to_slot as usize].code;
        let block = &mut self.blocks[from_slot as usize];
        let (Some(code), Some((e, linked))) = (block.code, block.exits.get_mut(exit)) else {
            return false;
        };
        // An exit that waited may belong to a block since rewritten and
        // built again under the same key, whose exit of that number leaves
        // for somewhere else.
        if linked.is_some() || e.eip != to.eip || target.is_none() || !self.jit.link(code, *e, target) {
            return false;
        }
        *linked = Some(to);
        let incoming = &mut self.blocks[to_slot as usize].incoming;
        if !incoming.contains(&(from, exit)) {
            incoming.push((from, exit));
        }
        true
    }

    /// After the block `key` was compiled: links its exits to the blocks
    /// they leave for that have translations, and the exits that waited for
    /// it.
    fn link_compiled(&mut self, key: BlockKey, slot: usize) {
        let block = &self.blocks[slot];
        let first = block.insts.first().map_or(key.eip, |ci| ci.ip);
        let targets: Vec<BlockKey> = block
            .exits
            .iter()
            .map(|(e, _)| BlockKey {
                phys: key.phys.wrapping_add(e.eip.wrapping_sub(first)),
                eip: e.eip,
                ..key
            })
            .collect();
        for (exit, to) in targets.into_iter().enumerate() {
            if !self.link(key, exit, to) {
                self.wait_for(to, key, exit);
            }
        }
        for (from, exit) in self.unlinked.remove(&key).unwrap_or_default() {
            self.link(from, exit, key);
        }
    }

    /// Counts an entry of the block in `slot` from the dispatcher, and
    /// compiles it once it has had enough. `raw`: the block runs in a ring
    /// view, where only plain sites may run as host code. `in_region`:
    /// whether a patch region holds the block's start (asked only when it
    /// is compiled, and only in the compressed view).
    #[inline]
    fn consider_compiling(
        &mut self,
        slot: usize,
        raw: bool,
        key: BlockKey,
        cpu: &Cpu,
        platform: &Platform,
        in_region: impl FnOnce() -> bool,
    ) {
        if !self.jit.refused.is_empty() {
            self.drop_refused_translations();
        }
        let block = &mut self.blocks[slot];
        if !self.jit.config.enabled || block.not_worth || block.code.is_some_and(|c| self.jit.is_current(c)) {
            return;
        }
        block.runs += 1;
        if block.runs <= self.jit.config.threshold || block.insts.is_empty() {
            return;
        }
        let insns: Vec<Insn> = block
            .insts
            .iter()
            .map(|ci| Insn {
                op: ci.op,
                plain: !raw || ci.site == SiteKind::Plain,
                ip: ci.ip,
                next_ip: ci.next_ip,
                changes_modes: ci.changes_modes,
                system_op: jit::SystemOp::of(&ci.inst)
                    .map(|op| with_inline_port(op, platform))
                    .and_then(|op| match ci.site {
                        SiteKind::Plain if key.view == view_code(RingView::True) => Some((op, SystemSite::True)),
                        SiteKind::Patch {
                            index,
                            leaks_view_flags,
                            current: true,
                        } => Some((
                            op,
                            SystemSite::Patch {
                                index,
                                leaks_view_flags,
                            },
                        )),
                        _ => None,
                    }),
            })
            .collect();
        let first = block.insts[0].ip;
        let compressed = key.view == view_code(RingView::Compressed { virtual_flags: 0 });
        let region = compressed && in_region();
        let shape = Shape {
            insns: &insns,
            extent: if block.contiguous {
                block.end.wrapping_sub(first)
            } else {
                0
            },
            slot: slot as u32,
            phys: key.phys,
            chain_last: block.contiguous.then(|| block.end.wrapping_sub(1)),
            mode: jit::jump_mode(key.code32, key.view),
            needs_virtual_if: compressed && !region,
            flat: jit::flat_segments(cpu) & !block.flat_refused,
            groups: block.flat_refused & jit::GROUPS_REFUSED == 0,
        };
        let compiled = self.jit.compile(&shape);
        let block = &mut self.blocks[slot];
        block.not_worth = compiled.is_none();
        let Some((code, exits)) = compiled else {
            block.code = None;
            return;
        };
        block.code = Some(code);
        block.region_chained = region;
        block.exits = exits.into_iter().map(|e| (e, None)).collect();
        self.link_compiled(key, slot);
    }

    /// Drops the translations [`Jit::fits_segments`] refused (a segment
    /// they took as flat is not): their exits go back to returning, and the
    /// block is compiled again, without taking those segments as flat.
    #[cold]
    fn drop_refused_translations(&mut self) {
        for (slot, not_flat) in std::mem::take(&mut self.jit.refused) {
            let block = &mut self.blocks[slot as usize];
            // Those that were not flat then: by now the guest may have made
            // them flat again.
            block.flat_refused |= not_flat;
            let Some(code) = block.code.take() else {
                continue;
            };
            block.runs = 0;
            for (exit, linked) in &mut block.exits {
                if linked.take().is_some() {
                    self.jit.link(code, *exit, None);
                }
            }
            block.exits.clear();
            // Translations linked to the old one (and the jump table) go
            // back to returning until it is compiled again: else they would
            // go on entering the refused code (a review found a group
            // refused once a round this way).
            let key = block.key;
            for (from, exit) in std::mem::take(&mut block.incoming) {
                self.unlink(from, exit, key);
            }
            self.jit.forget(key.eip, key.phys, jit::jump_mode(key.code32, key.view));
        }
    }

    /// Runs cached blocks from CS:EIP until `stop_icount` is reached or
    /// something needs the outer loop (an exception, a halt, port I/O or any
    /// device attention, an interrupt the CPU can take). Between blocks it
    /// checks exactly what the outer loop would before calling again, so
    /// going on here is the same as returning. Writes to code are told to
    /// `raw`, whose scan results and patches stay true whichever engine runs.
    pub fn run(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        stop_icount: u64,
        raw: &mut impl RawHooks,
        events: &mut SinkSlot,
    ) -> StepOutcome {
        // Anything may have run since the last call.
        self.jit.modes_may_have_changed();
        loop {
            if platform.mem.code_written() {
                self.invalidate_written(cpu, platform, raw, events);
            }
            let outcome = self.run_one(cpu, platform, stop_icount, events);
            if outcome != StepOutcome::Retired || outer_loop_would_act(cpu, platform, stop_icount) {
                return outcome;
            }
        }
    }

    /// The raw engine's path for guest ring 0 with IF clear: cached blocks
    /// at the true privilege, as [`BlockCache::run`], going on while the
    /// raw engine would choose this path again.
    pub fn run_true(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        stop_icount: u64,
        raw: &mut impl RawHooks,
        events: &mut SinkSlot,
    ) -> StepOutcome {
        // Anything may have run since the last call.
        self.jit.modes_may_have_changed();
        loop {
            if platform.mem.code_written() {
                self.invalidate_written(cpu, platform, raw, events);
            }
            let outcome = self.run_one(cpu, platform, stop_icount, events);
            if outcome != StepOutcome::Retired
                || outer_loop_would_act(cpu, platform, stop_icount)
                || !raw.stays_in(cpu, RingView::True)
            {
                return outcome;
            }
        }
    }

    /// One reference step outside any block: it may change anything.
    fn step_outside(&mut self, cpu: &mut Cpu, platform: &mut Platform) -> StepOutcome {
        self.jit.modes_may_have_changed();
        cpu.step(platform)
    }

    /// Runs instructions from the block at CS:EIP until the block ends,
    /// `stop_icount` is reached, or something needs the outer loop (an
    /// exception, a halt, port I/O, a change of IF, a write to cached code).
    /// The caller has dropped what earlier writes to code made stale.
    fn run_one(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        stop_icount: u64,
        events: &mut SinkSlot,
    ) -> StepOutcome {
        if cpu.state.halted {
            return StepOutcome::Halted;
        }
        // The first byte's fetch, exactly as the reference does it (CS checks,
        // translation); its physical address selects the block.
        let phys = match cpu.refetch(platform, 1) {
            Ok(p) => p,
            Err(_) => return self.step_outside(cpu, platform),
        };
        if phys as usize >= platform.mem.ram_size() {
            // Code outside RAM (ROM, MMIO, nothing): reading ahead to build a
            // block could touch device registers; run it instruction by instruction.
            return self.step_outside(cpu, platform);
        }
        let key = BlockKey {
            phys,
            eip: cpu.state.eip,
            code32: cpu.state.code32(),
            view: 0,
        };
        let slot = self.find(platform, key, |_, _, _| SiteKind::Plain);
        // Compiled as the sink asks (a change empties the cache first).
        self.jit.logs_io(events.io_stage());
        self.consider_compiling(slot, false, key, cpu, platform, || false);
        let block = &self.blocks[slot];
        if block.insts.is_empty() {
            return self.step_outside(cpu, platform);
        }
        let executed = &mut self.stats.executed;
        match run_block::<false, NoHooks>(
            &self.blocks,
            slot,
            jit::jump_mode(key.code32, key.view),
            cpu,
            platform,
            stop_icount,
            executed,
            &mut self.jit,
            true,
            None,
            events,
        ) {
            RawOutcome::Step(outcome) => outcome,
            // Only raw blocks exit to the monitor.
            RawOutcome::Exit(_) => self.step_outside(cpu, platform),
        }
    }

    /// The raw engine: runs cached blocks from CS:EIP in `view` (ring
    /// compression for guest ring 0) with their scanner marks and patches,
    /// going on from block to block while the guest stays where the same
    /// view applies. The CPU is in the true view before and after. Code the
    /// cache cannot hold runs one reference step.
    pub fn run_raw(
        &mut self,
        cpu: &mut Cpu,
        platform: &mut Platform,
        stop_icount: u64,
        view: RingView,
        raw: &mut impl RawHooks,
        events: &mut SinkSlot,
    ) -> RawOutcome {
        // Anything may have run since the last call.
        self.jit.modes_may_have_changed();
        let compressed = matches!(view, RingView::Compressed { .. });
        // Set when the guest's ring 0 cleared IF in the compressed view: the
        // monitor keeps that view only for a block in a patch region, which
        // the next block's fetch tells (the fetch `RawEngine::choose` would
        // make first); anywhere else the monitor chooses again.
        let mut only_in_region = false;
        loop {
            if cpu.state.halted {
                return RawOutcome::Step(StepOutcome::Halted);
            }
            if platform.mem.code_written() {
                self.invalidate_written(cpu, platform, raw, events);
            }
            // The first byte's fetch, exactly as the reference does it.
            let phys = match cpu.refetch(platform, 1) {
                Ok(p) if (p as usize) < platform.mem.ram_size() => p,
                _ if only_in_region => return RawOutcome::Step(StepOutcome::Retired),
                _ => return RawOutcome::Step(cpu.step(platform)),
            };
            if only_in_region && !raw.in_patch_region(phys, cpu.state.code32()) {
                return RawOutcome::Step(StepOutcome::Retired);
            }
            let key = BlockKey {
                phys,
                eip: cpu.state.eip,
                code32: cpu.state.code32(),
                view: view_code(view),
            };
            let slot = self.find(platform, key, |platform, phys, inst| {
                raw.annotate(cpu, platform, phys, inst, compressed, events)
            });
            self.jit.logs_io(events.io_stage());
            self.consider_compiling(slot, true, key, cpu, platform, || raw.in_patch_region(phys, key.code32));
            let block = &self.blocks[slot];
            if block.insts.is_empty() {
                return RawOutcome::Step(cpu.step(platform));
            }
            // The view was chosen for this block's start, but the raw
            // engine may have chosen it for the start alone (guest ring 0
            // with IF clear inside a patch region): then the translations
            // it chains to check that they lie in a region too.
            let stays = raw.chains_in(cpu, view);
            cpu.enter_view(view);
            let out = run_block::<true, _>(
                &self.blocks,
                slot,
                jit::jump_mode(key.code32, key.view),
                cpu,
                platform,
                stop_icount,
                &mut self.stats.executed,
                &mut self.jit,
                stays,
                Some(&mut *raw),
                events,
            );
            cpu.leave_view();
            if out != RawOutcome::Step(StepOutcome::Retired) || outer_loop_would_act(cpu, platform, stop_icount) {
                return out;
            }
            if !raw.stays_in(cpu, view) {
                if !raw.chains_in(cpu, view) {
                    return out;
                }
                only_in_region = true;
            } else {
                only_in_region = false;
            }
        }
    }
}

/// One run of a block's instructions by the interpreter or by its
/// translation's steps: what stays true from one instruction to the next.
struct BlockRun<'a, const RAW: bool, H: RawHooks> {
    block: &'a Block,
    stop_icount: u64,
    if_before: bool,
    /// Entered in an interrupt shadow (after STI or MOV SS): an interrupt may
    /// be taken right after the first instruction, so the block ends there.
    shadowed: bool,
    code32: bool,
    cpl: u8,
    /// Made when first needed: one-instruction blocks may never need it.
    fetch: Option<FetchCheck>,
    hooks: Option<&'a mut H>,
    /// Where the device accesses an instruction logged go as events, named
    /// after it, so that the block goes on (it moves with the hooks).
    events: Option<&'a mut SinkSlot>,
}

impl<const RAW: bool, H: RawHooks> BlockRun<'_, RAW, H> {
    /// The checks before instruction `i`: `Some` to leave the block there.
    #[inline(always)]
    fn boundary(&mut self, i: usize, cpu: &mut Cpu, platform: &mut Platform) -> Option<RawOutcome> {
        use RawOutcome::{Exit, Step};
        let ci = &self.block.insts[i];
        if i > 0 {
            // The previous instruction fell through to this one. Nothing at
            // this boundary can differ from the block's start (the checks
            // after each instruction leave on any change), except the deadline.
            if cpu.state.eip != ci.ip || cpu.icount >= self.stop_icount || self.shadowed {
                return Some(Step(StepOutcome::Retired));
            }
            let expected = self.block.phys.wrapping_add(ci.offset);
            if !self.fetch_check(cpu).passes(cpu, ci.offset, expected) {
                match cpu.refetch(platform, ci.len) {
                    Ok(p) if p == expected => {}
                    // A fault (repeated and delivered by the reference step next
                    // time round) or a changed mapping: leave the block.
                    _ => return Some(Step(StepOutcome::Retired)),
                }
            }
        } else if !cpu.fits_cs_limit(ci.len) {
            // The reference raises #GP for an instruction cut by the CS limit.
            return Some(if RAW {
                Exit(ExitReason::Fault(crate::cpu::vector::GP))
            } else {
                Step(cpu.step(platform))
            });
        }
        None
    }

    /// Executes instruction `i` (at CS:EIP) and makes the checks after it:
    /// `Some` to leave the block.
    #[inline(always)]
    fn execute(&mut self, i: usize, cpu: &mut Cpu, platform: &mut Platform) -> Option<RawOutcome> {
        use RawOutcome::{Exit, Step};
        let ci = &self.block.insts[i];
        let result = match ci.site {
            _ if !RAW => None,
            SiteKind::Plain => None,
            SiteKind::Trap => return Some(Exit(ExitReason::Marked)),
            SiteKind::SoftInt(v) => return Some(Exit(ExitReason::SoftwareInterrupt(v))),
            SiteKind::Patch { index, .. } => match self
                .hooks
                .as_deref_mut()
                .and_then(|h| h.run_patch(cpu, platform, index))
            {
                None => return Some(Exit(ExitReason::Marked)),
                Some(Err(_)) => return Some(Exit(ExitReason::PatchFault)),
                Some(Ok(outcome)) => Some(outcome),
            },
        };
        // Iterations of REP MOVS/STOS but the last at once, while nothing
        // can be due between them (the instruction then finishes or repeats
        // as always; the block ends unless the rest of it still fits before
        // the deadline, which a translation checked on entry counting one
        // instruction per step).
        let repeated = result.is_none()
            && matches!(ci.op, Op::Generic)
            && (ci.inst.has_rep_prefix() || ci.inst.has_repne_prefix());
        let mut batched = repeated && cpu.state.eflags & flags::TF == 0 && !cpu.state.interrupt_shadow && {
            let room = self.stop_icount.saturating_sub(cpu.icount + 1);
            crate::exec::string::rep_batch(cpu, platform, &ci.inst, room) > 0
        };
        let outcome = match result {
            Some(outcome) => outcome,
            None if !matches!(ci.op, Op::Generic) && cpu.state.eflags & flags::TF == 0 => {
                // The compact form changes nothing the checks below watch except
                // through memory (a device, or a write to cached code).
                let outcome = if RAW {
                    match cpu.execute_compact_or_fault(platform, &ci.op, ci.next_ip) {
                        Ok(o) => o,
                        Err(f) => return Some(Exit(ExitReason::Fault(f.vector))),
                    }
                } else {
                    cpu.execute_compact(platform, &ci.op, ci.next_ip)
                };
                if outcome != StepOutcome::Retired {
                    return Some(Step(outcome));
                }
                if platform.attention.logged {
                    self.emit_logged(cpu, platform);
                }
                if ci.op.touches_memory() && (platform.attention != Default::default() || platform.mem.code_written()) {
                    return Some(Step(StepOutcome::Retired));
                }
                return None;
            }
            None => match ci.execute_generic::<RAW>(cpu, platform) {
                Ok(o) => o,
                Err(exit) => return Some(exit),
            },
        };
        if outcome != StepOutcome::Retired {
            return Some(Step(outcome));
        }
        // A repeated string instruction that has not finished (EIP still at
        // it: a batch stopped at a page's end, or SCAS, CMPS and LODS, which
        // are not batched) goes on here, a batch and an iteration at a time,
        // while nothing that the checks below leave for is due between its
        // iterations, rather than leaving the block after each. Each
        // iteration starts with the fetch the reference makes.
        let expected = self.block.phys.wrapping_add(ci.offset);
        while repeated
            && cpu.state.eip == ci.ip
            && cpu.icount < self.stop_icount
            && platform.attention == Default::default()
            && !platform.mem.code_written()
            && platform.watch_hit.is_none()
            && !platform.intr()
            && !platform.irq.nmi()
            && cpu.state.eflags & flags::TF == 0
        {
            // With no side effect while the TLB still holds the code page;
            // else made, and a fault or another mapping stops here, as
            // between two instructions.
            if !self.fetch_check(cpu).passes(cpu, ci.offset, expected) {
                match cpu.refetch(platform, ci.len) {
                    Ok(p) if p == expected => {}
                    _ => break,
                }
            }
            // Iterations ran here: the block goes on only if the rest of it
            // still fits before the deadline (below).
            batched = true;
            let room = self.stop_icount.saturating_sub(cpu.icount + 1);
            crate::exec::string::rep_batch(cpu, platform, &ci.inst, room);
            match ci.execute_generic::<RAW>(cpu, platform) {
                Ok(StepOutcome::Retired) => {}
                Ok(outcome) => return Some(Step(outcome)),
                Err(exit) => return Some(exit),
            }
        }
        if platform.attention.logged {
            self.emit_logged(cpu, platform);
        }
        // No interrupt is pending, and none can come before the next
        // instruction retires without ending the block after it (a device
        // access raises attention, a timer is a deadline).
        let none_pending = !platform.intr() && !platform.irq.nmi();
        if cpu.state.interrupt_shadow
            && none_pending
            && i + 1 < self.block.insts.len()
            && cpu.icount < self.stop_icount
            && cpu.state.eflags & flags::TF == 0
        {
            // An interrupt shadow (after STI, MOV SS, POP SS) holds
            // interrupts off at the next boundary only; with none pending,
            // and the next instruction sure to run in this block, it has
            // done all it would.
            cpu.state.interrupt_shadow = false;
        }
        // Leave when the guest's IF comes on: a pending interrupt is taken
        // at this boundary. (It going off needs nothing: none can be taken.)
        // In the compressed view, where the raw engine would choose the same
        // view again, the block goes on when none is pending.
        let vif = cpu.virtual_if();
        let compressed = matches!(cpu.ring_view, RingView::Compressed { .. });
        if (batched && cpu.icount + (self.block.insts.len() - i - 1) as u64 > self.stop_icount)
            || platform.attention != Default::default()
            || platform.mem.code_written()
            || cpu.state.halted
            || cpu.state.interrupt_shadow
            || (vif && !self.if_before && !(compressed && none_pending))
            || cpu.state.code32() != self.code32
            || (RAW && (cpu.state.cpl() != self.cpl || cpu.state.eflags & flags::TF != 0))
        {
            return Some(Step(StepOutcome::Retired));
        }
        self.if_before = vif;
        if ci.may_change_modes::<RAW>() && !ci.flags_only {
            // CR0, CS or the CPL may be new (not after CLI, STI or POPF).
            self.fetch = None;
        }
        None
    }

    /// The device accesses the instruction that just retired logged, as
    /// its events. Nothing else emits events while a block runs (what
    /// would ends it first), so they keep their order.
    fn emit_logged(&mut self, cpu: &Cpu, platform: &mut Platform) {
        if let Some(events) = self.events.as_deref_mut() {
            platform.emit_logged(events, cpu.icount.saturating_sub(1), cpu.start_pc());
        }
    }

    /// The fetch check for the block's first byte, made if need be.
    fn fetch_check(&mut self, cpu: &Cpu) -> FetchCheck {
        let block = self.block;
        *self.fetch.get_or_insert_with(|| FetchCheck::new(cpu, block))
    }
}

/// What a translation's steps reach through `Env::ctx`.
struct StepContext<'r, 'a, const RAW: bool, H: RawHooks> {
    /// The run of the block the block engine entered, in `slot`.
    run: &'r mut BlockRun<'a, RAW, H>,
    slot: u32,
    /// The run of a block reached by chaining, once one of its steps is
    /// called (the raw hooks move to it).
    chained: Option<(u32, BlockRun<'a, RAW, H>)>,
    /// The block cache's blocks, for the chained ones.
    blocks: *const Block,
    cpu: *mut Cpu,
    platform: *mut Platform,
    /// Why a step left the block.
    outcome: RawOutcome,
    /// Instructions the steps retired.
    steps: u64,
}

impl<'a, const RAW: bool, H: RawHooks> StepContext<'_, 'a, RAW, H> {
    /// The run of the block in `slot`: started afresh the first time one of
    /// its steps is called after a chained entry (no step had run since the
    /// block engine last looked, so the block starts as the engine would
    /// start it).
    ///
    /// # Safety
    /// `slot` is the slot of a block in `blocks`, which outlive `'a`.
    unsafe fn run_of(&mut self, slot: u32, cpu: &Cpu) -> &mut BlockRun<'a, RAW, H> {
        if slot == self.slot {
            if let Some((_, other)) = self.chained.take() {
                self.run.hooks = other.hooks;
                self.run.events = other.events;
            }
            return self.run;
        }
        if self.chained.as_ref().is_none_or(|(s, _)| *s != slot) {
            let (hooks, events) = match self.chained.take() {
                Some((_, other)) => (other.hooks, other.events),
                None => (self.run.hooks.take(), self.run.events.take()),
            };
            // SAFETY: as the caller promises.
            let block: &'a Block = unsafe { &*self.blocks.add(slot as usize) };
            let run = BlockRun {
                block,
                stop_icount: self.run.stop_icount,
                if_before: cpu.virtual_if(),
                shadowed: false,
                code32: cpu.state.code32(),
                cpl: cpu.state.cpl(),
                fetch: None,
                hooks,
                events,
            };
            self.chained = Some((slot, run));
        }
        match &mut self.chained {
            Some((_, run)) => run,
            None => unreachable!("made above"),
        }
    }
}

/// The step a translation calls for an instruction it does not run as host
/// code: the interpreter's, with the checks at the boundary after it.
extern "sysv64" fn translated_step<const RAW: bool, H: RawHooks>(env: *mut Env, index: u32, slot: u32) -> u32 {
    // SAFETY: `run_block` made `env` and its context for this call of the
    // translation, which it does not touch until the translation returns;
    // the CPU and platform pointers come from its exclusive borrows, and the
    // translation writes back every guest register it caches and the flags
    // before this call and reads them again from memory after it.
    let (ctx, cpu, platform) = unsafe {
        let ctx = &mut *((*env).ctx as *mut StepContext<'_, '_, RAW, H>);
        let (cpu, platform) = (&mut *ctx.cpu, &mut *ctx.platform);
        (ctx, cpu, platform)
    };
    let i = index as usize;
    let before = cpu.icount;
    let tlb_fills = cpu.tlb.fills();
    // SAFETY: as above; `env` outlives the call.
    let env = unsafe { &mut *env };
    // SAFETY: translations pass their own block's slot, and a translation
    // runs only while its block is cached.
    let run = unsafe { ctx.run_of(slot, cpu) };
    let ci = &run.block.insts[i];
    // Host code before this instruction left EIP where the block began, and
    // may have changed IF (compiled CLI, STI or POPFD).
    cpu.state.eip = ci.ip;
    run.if_before = cpu.virtual_if();
    let system_flags = |cpu: &Cpu| (cpu.state.eflags & flags::SYSTEM, cpu.ring_view);
    let flags_before = system_flags(cpu);
    let mut may_change_modes = ci.may_change_modes::<RAW>();
    let leave = run.execute(i, cpu, platform).or_else(|| {
        // CLI, STI and POPF that left the flags as they were (the guest's
        // own, or the view's virtual ones) changed nothing.
        may_change_modes &= !(ci.flags_only && system_flags(cpu) == flags_before);
        // Nor do they touch what the inline memory path holds, when they did
        // change one (IF, IOPL, TF, AC: none is part of it).
        if may_change_modes && !ci.flags_only {
            // Segments, paging, privilege or the A20 gate may be new.
            env.mem.modes_may_have_changed();
            env.mem.refresh(cpu, platform);
        }
        if cpu.state.eflags & flags::TF != 0 {
            // Single-stepping from here on: the interpreter does it.
            Some(RawOutcome::Step(StepOutcome::Retired))
        } else if i + 1 < run.block.insts.len() {
            run.boundary(i + 1, cpu, platform)
        } else {
            None
        }
    });
    if leave.is_some() {
        // It left before the checks after it: whatever it changed (an IRET
        // to ring 3 that set IF, a far jump to 16-bit code) the next entry
        // must see, so the modes are compared again then.
        env.mem.modes_may_have_changed();
    }
    ctx.steps += cpu.icount - before;
    // What a chained entry cannot vouch for: a step that may have changed
    // modes (segments, paging, privilege, the interrupt flag: only generic
    // instructions and patches of those `exec::leaves_modes_alone` does not
    // list do), filled the TLB (the
    // entry of a code page may be gone) or touched a debugger's watch.
    // Anything else that matters between blocks made the step leave.
    if may_change_modes || cpu.tlb.fills() != tlb_fills || platform.watch_hit.is_some() {
        env.stop_icount = 0;
    }
    match leave {
        None => jit::END,
        Some(outcome) => {
            ctx.outcome = outcome;
            jit::LEAVE
        }
    }
}

/// A byte IN or OUT through an immediate port as the platform lets a
/// translation make it itself, if it does.
fn with_inline_port(op: jit::SystemOp, platform: &Platform) -> jit::SystemOp {
    match op {
        jit::SystemOp::Port {
            input,
            size: 1,
            port: Some(port),
            ..
        } => jit::SystemOp::Port {
            input,
            size: 1,
            port: Some(port),
            inline: platform.inline_port(port, input),
        },
        other => other,
    }
}

/// The step of an IN or OUT ([`jit::SystemOp::Port`]) that a translation
/// calls: where the guest may use the port (a patch runs at the guest's
/// ring 0; in the true view CPL <= IOPL or real mode) the access goes
/// straight to the device, with the checks the block engine makes after a
/// port access; anything else is `translated_step`'s.
extern "sysv64" fn port_step<const RAW: bool, H: RawHooks>(env: *mut Env, index: u32, slot: u32, packed: u32) -> u32 {
    use crate::cpu::state::reg::EDX;
    // SAFETY: as for `translated_step`, whose contract this call has.
    let (ctx, cpu, platform) = unsafe {
        let ctx = &mut *((*env).ctx as *mut StepContext<'_, '_, RAW, H>);
        let (cpu, platform) = (&mut *ctx.cpu, &mut *ctx.platform);
        (ctx, cpu, platform)
    };
    // SAFETY: as for `translated_step`.
    let run = unsafe { ctx.run_of(slot, cpu) };
    let ci = &run.block.insts[index as usize];
    let patch = match ci.site {
        SiteKind::Patch { index, .. } if RAW => Some(index),
        _ => None,
    };
    let st = &cpu.state;
    let allowed = match patch {
        Some(_) => true,
        None => cpu.ring_view == RingView::True && (!st.protected_mode() || (!st.v86_mode() && st.cpl() <= st.iopl())),
    };
    if !allowed || st.eflags & flags::TF != 0 {
        return translated_step::<RAW, H>(env, index, slot);
    }
    let (input, size, port) = jit::unpack_port(packed);
    let port = port.map_or((st.regs[EDX] & 0xFFFF) as u16, u16::from);
    let data = match size {
        1 => iced_x86::Register::AL,
        2 => iced_x86::Register::AX,
        _ => iced_x86::Register::EAX,
    };
    // What the interpreter sets before an instruction, which events name.
    cpu.state.eip = ci.ip;
    cpu.start_eip = ci.ip;
    cpu.state.interrupt_shadow = false;
    let now = cpu.now();
    let value = if input {
        let v = platform.port_in(port, size, now);
        cpu.write_reg(data, v);
        v
    } else {
        let v = cpu.read_reg(data);
        platform.port_out(port, size, v, now);
        v
    };
    // Logged straight into the batch, not through the platform's log: a
    // trap loop's recording costs this store per access.
    if let Some(events) = run.events.as_deref_mut() {
        let access = IoAccess {
            addr: u32::from(port),
            mmio: false,
            size,
            value,
            write: !input,
        };
        events.io(cpu.icount, cpu.start_pc(), access);
    }
    cpu.state.eip = ci.next_ip;
    cpu.icount += 1;
    if let Some(p) = patch {
        // SAFETY: as above; the compiler sized the counters for every patch
        // its translations run.
        unsafe {
            *(*env).patch_hits.add(p as usize) += 1;
        }
    }
    ctx.steps += 1;
    // A port access changes no mode; what it asks of the machine loop (an
    // interrupt line, output, the A20 gate, a reset) ends the block.
    if platform.attention != Default::default() || platform.mem.code_written() {
        ctx.outcome = RawOutcome::Step(StepOutcome::Retired);
        // SAFETY: as above.
        unsafe { (*env).mem.modes_may_have_changed() };
        return jit::LEAVE;
    }
    jit::END
}

/// Runs a block. `RAW` blocks run in a ring view with the raw engine's
/// annotations: exceptions come back undelivered as exits for the monitor,
/// marked sites and software interrupts exit before they run, and patches
/// run inline. A block with a translation runs it instead of the
/// interpreter whenever the whole block fits before `stop_icount`;
/// `may_chain`: the engine would choose the same view for the blocks that
/// follow, so the translation may go on into theirs.
#[allow(clippy::too_many_arguments)]
fn run_block<const RAW: bool, H: RawHooks>(
    blocks: &[Block],
    slot: usize,
    mode: u32,
    cpu: &mut Cpu,
    platform: &mut Platform,
    stop_icount: u64,
    executed: &mut u64,
    jit: &mut Jit,
    may_chain: bool,
    hooks: Option<&mut H>,
    events: &mut SinkSlot,
) -> RawOutcome {
    use RawOutcome::Step;
    let block = &blocks[slot];
    let ip0 = block.insts.first().map_or(0, |ci| ci.ip);
    let io_stage = events.io_stage();
    // The dispatcher brought the cache in line before compiling.
    debug_assert!(jit.logs_as(io_stage), "translations log as the sink asks");
    let if_at_entry = cpu.virtual_if();
    let mut run = BlockRun::<RAW, H> {
        block,
        stop_icount,
        if_before: cpu.virtual_if(),
        shadowed: cpu.state.interrupt_shadow,
        code32: cpu.state.code32(),
        cpl: cpu.state.cpl(),
        fetch: None,
        hooks,
        events: Some(events),
    };
    let n = block.insts.len() as u64;
    loop {
        *executed += 1;
        let refused_before = jit.refused.len();
        let code = block.code.filter(|&c| {
            jit.is_current(c)
                && !run.shadowed
                && cpu.state.eflags & flags::TF == 0
                && cpu.icount + n <= stop_icount
                && run.fetch_check(cpu).cs_ok
                && jit.fits_segments(c, slot, cpu, platform)
        });
        // Refused for a segment no longer flat: the block runs once here,
        // then the dispatcher compiles it again.
        let refused = jit.refused.len() != refused_before;
        if let Some(code) = code {
            // Where dynamic exits of other translations find it.
            jit.remember(ip0, block.phys, mode, code);
            let before = cpu.icount;
            let mut ctx = StepContext {
                run: &mut run,
                slot: slot as u32,
                chained: None,
                blocks: blocks.as_ptr(),
                cpu: &mut *cpu,
                platform: &mut *platform,
                outcome: Step(StepOutcome::Retired),
                steps: 0,
            };
            let env = jit.env_as_refreshed();
            env.step = translated_step::<RAW, H>;
            env.port = port_step::<RAW, H>;
            env.stop_icount = if may_chain { stop_icount } else { 0 };
            env.chained = 0;
            env.platform = ctx.platform;
            env.io_stage = io_stage;
            env.ctx = (&mut ctx as *mut StepContext<'_, '_, RAW, H>).cast();
            let cpu_ptr = ctx.cpu;
            // SAFETY: the translation is current; `cpu` and `platform` are
            // reached only through `ctx` and the translation until it returns,
            // and `translated_step` is the step for this `RAW` and `H`.
            let ended = unsafe { jit.run(code, cpu_ptr) };
            let (outcome, steps, chained) = (ctx.outcome, ctx.steps, ctx.chained.is_some());
            *executed += jit.chained();
            jit.stats.retired += cpu.icount - before;
            jit.stats.stepped += steps;
            jit.stats.entries += 1;
            jit.stats.chained_entries += jit.chained();
            if ended == jit::LEAVE {
                return outcome;
            }
            if jit.take_group_refusal() || chained {
                // A translation left before a group it could not check (its
                // block is compiled again without groups), or another
                // block's steps ran: the dispatcher starts afresh.
                return Step(StepOutcome::Retired);
            }
        } else {
            jit.modes_may_have_changed();
            for i in 0..block.insts.len() {
                if let Some(out) = run.boundary(i, cpu, platform) {
                    return out;
                }
                if let Some(out) = run.execute(i, cpu, platform) {
                    return out;
                }
            }
            if refused || (jit.config.enabled && block.code.is_none_or(|c| !jit.is_current(c)) && !block.not_worth) {
                // Not compiled yet, or its translation is gone (the cache
                // was emptied): back to the dispatcher, which counts the
                // entry (a loop is hot) and compiles it.
                return Step(StepOutcome::Retired);
            }
        }
        // A branch back to the block's own start (a loop) runs it again here,
        // after what `BlockCache::run` and the outer loop would check first:
        // their conditions, no write to watched code, and the first byte's
        // fetch (CS and the TLB as before, so the same block).
        // In the compressed view, the guest's IF going off since entry
        // leaves the choice of the view to the monitor again.
        if cpu.state.eip != ip0
            || run.shadowed
            || platform.mem.code_written()
            || outer_loop_would_act(cpu, platform, stop_icount)
            || (if_at_entry && !cpu.virtual_if() && matches!(cpu.ring_view, RingView::Compressed { .. }))
        {
            return Step(StepOutcome::Retired);
        }
        if !run.fetch_check(cpu).passes(cpu, 0, block.phys) {
            return Step(StepOutcome::Retired);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::{cr0, flags};
    use crate::host::NoInput;
    use crate::machine::{CaptureConsole, Engine, Kernel, Machine};

    const CODE: u32 = 0x1_0000;
    const PAGE_DIR: u32 = 0x10_0000;
    const PT0: u32 = 0x10_1000;
    const CODE_PTE: u32 = PT0 + 4 * (CODE >> 12);

    /// Flat 32-bit ring 0 with paging: the first 8 MiB identity-mapped, the
    /// code at CODE.
    fn machine(code: &[u8], engine: Engine) -> Machine {
        let mut image = vec![0u8; 0x1000];
        image[..code.len()].copy_from_slice(code);
        let kernel = Kernel::Flat { image, addr: CODE };
        let mut m = Machine::boot(16 << 20, &kernel, &mut NoInput::default()).expect("boot");
        for t in 0..2u32 {
            m.platform.mem.write(PAGE_DIR + 4 * t, 4, (PT0 + 0x1000 * t) | 3);
            for p in 0..1024u32 {
                let page = (t << 22) | (p << 12);
                m.platform.mem.write(PT0 + 0x1000 * t + 4 * p, 4, page | 3);
            }
        }
        let st = &mut m.cpu.state;
        st.flat_segments();
        st.cr3 = PAGE_DIR;
        st.cr0 = cr0::PE | cr0::ET | cr0::PG;
        st.eflags = flags::FIXED1;
        st.eip = CODE;
        st.regs[4] = 0x8_0000;
        st.regs[2] = 50; // loop count in EDX
        m.cpu.tlb.flush_all();
        m.engine = engine;
        m
    }

    /// Runs `code` on the raw engine with `jit`, the guest's IF set when
    /// `if_set`, ECX = `rounds` and every interrupt line masked (the
    /// machine has no IDT), for up to `limit` instructions: the events it
    /// logged, why it stopped and the machine.
    fn raw_run_logged(
        code: &[u8],
        jit: crate::engine::jit::JitConfig,
        if_set: bool,
        rounds: u32,
        limit: u64,
    ) -> (Vec<crate::events::EventRecord>, crate::machine::StopReason, Machine) {
        use crate::bus::Bus;
        use crate::events::EventLog;
        use std::sync::{Arc, Mutex};
        let mut m = machine(code, Engine::Raw);
        if if_set {
            m.cpu.state.eflags |= flags::IF;
        }
        m.cpu.state.regs[1] = rounds;
        m.platform.io_write(0x21, 1, 0xFF, 0);
        m.platform.io_write(0xA1, 1, 0xFF, 0);
        m.platform.route_all();
        m.platform.attention = Default::default();
        m.blocks.jit.config = jit;
        let log = Arc::new(Mutex::new(EventLog::default()));
        m.events.attach(Box::new(log.clone()));
        let stop = m.run(limit, &mut NoInput::default(), &mut CaptureConsole::default());
        m.events.flush();
        let records = log.lock().expect("log").records.clone();
        (records, stop, m)
    }

    // The fetch check a block skips `refetch` with must see what the
    // reference's fetch sees: a TLB entry for the code page evicted by a data
    // access (the next fetch walks and sets the accessed bit the guest just
    // cleared), one still cached (the bit stays clear), CR3 reloads and
    // paging switched off and on in the middle of a block.
    /// Runs `code` to `first` instructions, forgets everything cached (a
    /// checkpoint), lets `between` change the machine (a seek restoring
    /// other RAM) and runs on in segments of `segment` instructions with
    /// the caches forgotten between them; returns how it stopped and where.
    fn across_checkpoints(
        code: &[u8],
        engine: Engine,
        first: u64,
        between: impl Fn(&mut Machine),
        segment: u64,
    ) -> (crate::machine::StopReason, crate::machine::MachineState, u64) {
        use crate::engine::jit::JitConfig;
        use crate::machine::StopReason;
        let mut m = machine(code, engine);
        m.cpu.state.regs[1] = 50;
        m.blocks.jit.config = JitConfig::EAGER;
        let (mut host, mut console) = (NoInput::default(), CaptureConsole::default());
        assert_eq!(m.run(first, &mut host, &mut console), StopReason::InsnLimit);
        m.forget_cached_code();
        between(&mut m);
        let stop = loop {
            match m.run(m.icount() + segment, &mut host, &mut console) {
                StopReason::InsnLimit if m.icount() < 100_000 => m.forget_cached_code(),
                stop => break stop,
            }
        };
        (stop, m.state(), m.blocks.stats.revived)
    }

    // Code changed while its blocks were set aside (RAM replaced by a
    // seek): the block is built anew, and a taken-back translation that
    // was linked to it no longer jumps into its old translation.
    #[test]
    fn blocks_set_aside_are_taken_back_only_while_their_bytes_are_unchanged() {
        let code = [
            0x83, 0xC0, 0x01, // loop: add eax, 1
            0xEB, 0x00, // jmp b
            0x83, 0xC3, 0x02, // b: add ebx, 2
            0x49, // dec ecx
            0x75, 0xF5, // jnz loop
            0xF4, // hlt
        ];
        let poke = |m: &mut Machine| m.platform.mem.write(CODE + 7, 1, 5);
        for engine in [Engine::Blocks, Engine::Raw] {
            let (stop_e, e, _) = across_checkpoints(&code, Engine::Emulate, 42, poke, 1_000_000);
            let (stop, b, revived) = across_checkpoints(&code, engine, 42, poke, 1_000_000);
            assert_eq!((stop, &b), (stop_e, &e), "{engine:?}");
            // Eight rounds of five instructions ran before the change.
            assert_eq!(e.cpu.regs[3], 2 * 8 + 5 * (50 - 8), "the new immediate counts");
            assert!(revived > 0, "{engine:?}: the unchanged block was taken back");
        }
    }

    // A block taken back is watched again: the guest rewriting its bytes
    // later drops it, whichever segment between checkpoints it falls in.
    #[test]
    fn blocks_taken_back_see_the_guest_rewrite_them() {
        let code = [
            0xB8, 0x00, 0x00, 0x00, 0x00, // loop: mov eax, 0
            0xEB, 0x00, // jmp w
            0x01, 0xC3, // w: add ebx, eax
            0xF6, 0xC1, 0x07, // test cl, 7
            0x75, 0x06, // jnz skip
            0x89, 0x0D, 0x01, 0x00, 0x01, 0x00, // mov [loop + 1], ecx
            0x49, // skip: dec ecx
            0x75, 0xE9, // jnz loop
            0xF4, // hlt
        ];
        for engine in [Engine::Blocks, Engine::Raw] {
            for segment in [7, 23, 64] {
                let (stop_e, e, _) = across_checkpoints(&code, Engine::Emulate, 3, |_| {}, segment);
                let (stop, b, revived) = across_checkpoints(&code, engine, 3, |_| {}, segment);
                assert_eq!((stop, &b), (stop_e, &e), "{engine:?}, segments of {segment}");
                assert!(revived > 0, "{engine:?}: blocks were taken back");
            }
        }
    }

    // REP MOVS and REP STOS run their iterations in bulk where nothing can
    // tell (exec::string::rep_batch): across pages, overlapping, backwards
    // (not in bulk), into the code's own page (not in bulk), stopped by the
    // instruction limit anywhere in between, with interrupts on and off
    // (compressed or true privilege): the same state and RAM as the
    // reference's iteration by iteration, at every stop.
    #[test]
    fn repeated_string_instructions_in_bulk_match_the_reference() {
        use crate::engine::jit::JitConfig;
        #[rustfmt::skip]
        let code = [
            0xBF, 0x00, 0x00, 0x20, 0x00, // mov edi, 200000h
            0xB9, 0xB8, 0x0B, 0x00, 0x00, // mov ecx, 3000
            0xB8, 0x44, 0x33, 0x22, 0x11, // mov eax, 11223344h
            0xFC, // cld
            0xF3, 0xAB, // rep stosd
            0xBE, 0x00, 0x00, 0x20, 0x00, // mov esi, 200000h
            0xBF, 0x01, 0x00, 0x20, 0x00, // mov edi, 200001h
            0xB9, 0x88, 0x13, 0x00, 0x00, // mov ecx, 5000
            0xF3, 0xA4, // rep movsb (each byte copies the one just written)
            0xBE, 0x00, 0x00, 0x20, 0x00, // mov esi, 200000h
            0xBF, 0x00, 0x50, 0x20, 0x00, // mov edi, 205000h
            0xB9, 0xD0, 0x07, 0x00, 0x00, // mov ecx, 2000
            0xF3, 0xA5, // rep movsd
            0xFD, // std
            0xBE, 0xFE, 0x5F, 0x20, 0x00, // mov esi, 205FFEh
            0xBF, 0xFE, 0xAF, 0x20, 0x00, // mov edi, 20AFFEh
            0xB9, 0x64, 0x00, 0x00, 0x00, // mov ecx, 100
            0x66, 0xF3, 0xA5, // rep movsw
            0xFC, // cld
            0xBF, 0x00, 0x01, 0x01, 0x00, // mov edi, CODE + 100h
            0xB9, 0x40, 0x00, 0x00, 0x00, // mov ecx, 64
            0xB8, 0x90, 0x90, 0x90, 0x90, // mov eax, 90909090h
            0xF3, 0xAA, // rep stosb
            0xF4, // hlt
        ];
        let run = |engine, jit: JitConfig, (interrupts, paging): (bool, bool), limit: u64| {
            let mut m = machine(&code, engine);
            m.blocks.jit.config = jit;
            if !paging {
                m.cpu.state.cr0 &= !cr0::PG;
            }
            if interrupts {
                m.cpu.state.eflags |= flags::IF;
            }
            let stop = m.run(limit, &mut NoInput::default(), &mut CaptureConsole::default());
            (stop, m)
        };
        for modes in [(false, true), (true, true), (false, false), (true, false)] {
            for limit in [1, 10, 500, 3001, 3007, 5500, 8050, 10_000, 10_130, 10_200, 1_000_000] {
                let (stop_e, e) = run(Engine::Emulate, JitConfig::OFF, modes, limit);
                for (engine, jit) in [
                    (Engine::Blocks, JitConfig::OFF),
                    (Engine::Blocks, JitConfig::EAGER),
                    (Engine::Raw, JitConfig::EAGER),
                    (Engine::Raw, JitConfig::default()),
                ] {
                    let what = format!("{engine:?} {jit:?}, (IF, paging) {modes:?}, limit {limit}");
                    let (stop, mut b) = run(engine, jit, modes, limit);
                    assert_eq!((stop, b.state()), (stop_e.clone(), e.state()), "{what}");
                    assert!(b.platform.mem.ram() == e.platform.mem.ram(), "{what}: RAM");
                    // What a checkpoint saves: every page written.
                    let dirty = |m: &mut Machine| {
                        let mut pages = m.platform.mem.take_dirty();
                        pages.sort_unstable();
                        pages
                    };
                    assert_eq!(dirty(&mut b), dirty(&mut e.clone()), "{what}: dirty pages");
                }
                if limit == 1_000_000 {
                    assert_eq!(
                        e.platform.mem.read(0x20_5000, 4),
                        0x4444_4444,
                        "movsb replicated a byte"
                    );
                    assert_eq!(e.platform.mem.read(CODE + 0x100, 4), 0x9090_9090);
                }
            }
        }
    }

    // A function that clears IF returns from inside its patch region to a
    // caller whose block was compiled in the compressed view (it ran there
    // while IF was set): the monitor chooses the true-privilege blocks for
    // it, as when it is not compiled, rather than the return chaining into
    // the compressed translation.
    #[test]
    fn a_return_out_of_a_patch_region_goes_back_to_the_monitor() {
        use crate::engine::jit::JitConfig;
        use crate::events::{Event, EventRecord};
        let code = [
            0xE8, 0x07, 0x00, 0x00, 0x00, // loop: call f
            0x01, 0xC3, // add ebx, eax
            0xFB, // sti
            0x49, // dec ecx
            0x75, 0xF5, // jnz loop
            0xF4, // hlt
            0xF6, 0xC1, 0x01, // f: test cl, 1
            0x74, 0x01, // jz skip
            0xFA, // cli
            0xB8, 0x01, 0x00, 0x00, 0x00, // skip: mov eax, 1
            0xEB, 0x00, // jmp l
            0x83, 0xC0, 0x02, // l: add eax, 2
            0xC3, // ret
        ];
        let events = |jit: JitConfig| -> (Vec<EventRecord>, _) {
            let (records, stop, m) = raw_run_logged(&code, jit, true, 40, 5_000);
            (records, (stop, m.state()))
        };
        let (interpreted, end) = events(JitConfig::OFF);
        let switches = |records: &[EventRecord]| {
            records
                .iter()
                .filter(|r| matches!(r.event, Event::EngineSwitch { .. }))
                .count()
        };
        assert!(
            switches(&interpreted) >= 20,
            "{:?}",
            interpreted
                .iter()
                .map(|r| format!("{} {:#x} {}", r.icount, r.pc, r.event))
                .collect::<Vec<_>>()
        );
        for jit in [JitConfig::EAGER, JitConfig::default()] {
            let (compiled, compiled_end) = events(jit);
            assert_eq!(compiled_end, end);
            assert_eq!(switches(&compiled), switches(&interpreted), "{jit:?}");
            assert_eq!(compiled, interpreted, "{jit:?}");
        }
    }

    // A loop of two blocks that turns IF off and on again with patched CLI,
    // STI and POPFD in the compressed view stays in its translations (the
    // edge between them chained with IF clear) once its blocks lie in the
    // patches' regions, with the same events, state and patch hits as when
    // it is interpreted.
    #[test]
    fn a_loop_that_clears_if_in_patch_regions_runs_chained() {
        use crate::engine::jit::JitConfig;
        use crate::events::EventRecord;
        let code = [
            0xFA, // loop: cli
            0x9C, // pushfd
            0x58, // pop eax
            0xFB, // sti
            0x50, // push eax
            0x9D, // popfd (IF off again)
            0xFA, // cli
            0xE6, 0x80, // out 80h, al
            0xEB, 0x00, // jmp next (a second block, chained to)
            0xE4, 0x21, // next: in al, 21h
            0x01, 0xC3, // add ebx, eax
            0x49, // dec ecx
            0x75, 0xEE, // jnz loop
            0xF4, // hlt
        ];
        let events = |jit: JitConfig| -> (Vec<EventRecord>, _, _) {
            let (records, stop, m) = raw_run_logged(&code, jit, true, 2_000, 100_000);
            (records, (stop, m.state(), m.raw.patch_totals()), m.blocks.jit.stats)
        };
        let (interpreted, end, _) = events(JitConfig::OFF);
        assert!(end.2.hits > 12_000, "patched: {:?}", end.2);
        for jit in [JitConfig::EAGER, JitConfig::default()] {
            let (compiled, compiled_end, stats) = events(jit);
            assert_eq!(compiled_end, end, "{jit:?}");
            assert_eq!(compiled, interpreted, "{jit:?}");
            assert!(
                stats.entries < 200 && stats.chained_entries > 3_900,
                "{jit:?}: {stats:?}"
            );
        }
    }

    // IN and OUT that a translation makes itself or sends straight to the
    // device log the same port events, at the same icount and EIP, and
    // count the same accesses, as the interpreter's: patched in the
    // compressed view (IF set) and plain in the true view (IF clear),
    // through an immediate port and through DX, past the room a batch
    // lends translations.
    #[test]
    fn compiled_port_accesses_log_what_interpreted_ones_log() {
        use crate::engine::jit::JitConfig;
        use crate::events::{Event, EventRecord};
        let code = [
            0x88, 0xC8, // loop: mov al, cl
            0xE6, 0x80, // out 80h, al
            0xE4, 0x21, // in al, 21h
            0x01, 0xC3, // add ebx, eax
            0x66, 0xBA, 0x80, 0x00, // mov dx, 80h
            0x66, 0xEF, // out dx, ax
            0xED, // in eax, dx
            0x01, 0xC3, // add ebx, eax
            0x49, // dec ecx
            0x75, 0xEC, // jnz loop
            0xFA, // cli
            0xF4, // hlt
        ];
        for if_set in [true, false] {
            let events = |jit: JitConfig| -> (Vec<EventRecord>, _) {
                // More accesses than a batch holds (`SLOT_BATCH`).
                let (records, stop, m) = raw_run_logged(&code, jit, if_set, 12_000, 500_000);
                let hits = m.raw.patch_totals();
                (
                    records,
                    (stop, (m.state(), m.platform.stats), hits, m.blocks.jit.stats.retired),
                )
            };
            let (interpreted, (stop, state, hits, _)) = events(JitConfig::OFF);
            let ports = |records: &[EventRecord]| {
                records
                    .iter()
                    .filter(|r| matches!(r.event, Event::Io { mmio: false, .. }))
                    .count()
            };
            assert!(
                ports(&interpreted) >= 40_000,
                "IF {if_set}: {} {stop:?}",
                ports(&interpreted)
            );
            assert_eq!(hits.hits > 0, if_set, "patches only in the compressed view: {hits:?}");
            for jit in [JitConfig::EAGER, JitConfig::default()] {
                let (compiled, (c_stop, c_state, c_hits, retired)) = events(jit);
                assert_eq!(
                    (c_stop, c_state, c_hits),
                    (stop.clone(), state.clone(), hits),
                    "IF {if_set}, {jit:?}"
                );
                assert_eq!(compiled, interpreted, "IF {if_set}, {jit:?}");
                assert!(retired > 1_000, "translations ran: {retired}");
            }
        }
    }

    // A sink attached while translations run unlogged, then detached: the
    // accesses in between are logged as the interpreter logs them, and
    // none after (translations log exactly while a sink listens).
    #[test]
    fn a_sink_attached_and_detached_between_runs_gets_what_happened_in_between() {
        use crate::bus::Bus;
        use crate::engine::jit::JitConfig;
        use crate::events::EventLog;
        use std::sync::{Arc, Mutex};
        let code = [
            0x88, 0xC8, // loop: mov al, cl
            0xE6, 0x80, // out 80h, al
            0xE4, 0x21, // in al, 21h
            0x01, 0xC3, // add ebx, eax
            0x49, // dec ecx
            0x75, 0xF5, // jnz loop
            0xFA, // cli
            0xF4, // hlt
        ];
        let run = |jit: JitConfig| {
            let mut m = machine(&code, Engine::Raw);
            m.cpu.state.regs[1] = 100_000;
            m.platform.io_write(0x21, 1, 0xFF, 0);
            m.platform.route_all();
            m.platform.attention = Default::default();
            m.blocks.jit.config = jit;
            let (mut host, mut console) = (NoInput::default(), CaptureConsole::default());
            // Instructions run in translations in each of the three runs.
            let mut translated = Vec::new();
            let mut retired_before = 0;
            let mut count = |m: &Machine| {
                translated.push(m.blocks.jit.stats.retired - retired_before);
                retired_before = m.blocks.jit.stats.retired;
            };
            m.run(20_000, &mut host, &mut console);
            count(&m);
            let log = Arc::new(Mutex::new(EventLog::default()));
            m.events.attach(Box::new(log.clone()));
            m.run(60_000, &mut host, &mut console);
            count(&m);
            m.events.detach();
            let stop = m.run(100_000, &mut host, &mut console);
            count(&m);
            let records = log.lock().expect("log").records.clone();
            (records, stop, m.state(), translated)
        };
        let (want, want_stop, want_state, _) = run(JitConfig::OFF);
        assert!(want.len() > 10_000, "{} events", want.len());
        assert!(want.iter().all(|r| (20_000..60_000).contains(&r.icount)));
        let (got, stop, state, translated) = run(JitConfig::EAGER);
        // Each run mostly in translations, compiled again after each change.
        for (run, (&n, whole)) in translated.iter().zip([20_000, 40_000, 40_000]).enumerate() {
            assert!(n > whole * 9 / 10, "run {run}: {n} of {whole} instructions translated");
        }
        assert_eq!((stop, state), (want_stop, want_state));
        assert_eq!(got, want);
    }

    // Paging turned off in the middle of a block entered through a mapping
    // that is not the identity: the next fetch reads the linear address as
    // a physical one, other bytes than the block's.
    #[test]
    fn paging_off_in_a_block_fetches_from_the_linear_address() {
        const LIN: u32 = 0x40_0000;
        const PHYS: u32 = 0x2_0000;
        let code = [
            0x0F, 0x20, 0xC0, // mov eax, cr0
            0x25, 0xFF, 0xFF, 0xFF, 0x7F, // and eax, 7FFFFFFFh
            0x0F, 0x22, 0xC0, // mov cr0, eax
            0x41, // inc ecx (at PHYS + 11)
            0xF4, // hlt
        ];
        let run = |engine| {
            let mut m = machine(&[], engine);
            m.platform.mem.write(PT0 + 0x1000, 4, PHYS | 3); // LIN -> PHYS
            m.platform.mem.load(PHYS, &code).expect("fits");
            m.platform.mem.load(LIN + 11, &[0x42, 0xF4]).expect("fits"); // inc edx; hlt
            m.cpu.state.eip = LIN;
            let stop = m.run(1_000, &mut NoInput::default(), &mut CaptureConsole::default());
            (stop, m)
        };
        let (stop_e, e) = run(Engine::Emulate);
        let (stop_b, b) = run(Engine::Blocks);
        assert_eq!(stop_e, stop_b);
        assert_eq!(e.state(), b.state());
        assert_eq!(
            (e.cpu.state.regs[1], e.cpu.state.regs[2]),
            (0, 51),
            "the reference ran inc edx"
        );
    }

    #[test]
    fn fetches_within_a_block_touch_what_the_reference_touches() {
        let pte = CODE_PTE.to_le_bytes();
        let mut code = vec![];
        // loop: mov dword [CODE_PTE], CODE|3 (accessed clear)
        code.extend([0xC7, 0x05, pte[0], pte[1], pte[2], pte[3], 0x03, 0x00, 0x01, 0x00]);
        // mov eax, [0x410000]: the same TLB slot as the code page
        code.extend([0xA1, 0x00, 0x00, 0x41, 0x00]);
        code.extend([0x41]); // inc ecx: fetched after a walk
        code.extend([0xC7, 0x05, pte[0], pte[1], pte[2], pte[3], 0x03, 0x00, 0x01, 0x00]);
        code.extend([0x41]); // inc ecx: fetched from the TLB
        code.extend([0x8B, 0x1D, pte[0], pte[1], pte[2], pte[3]]); // mov ebx, [CODE_PTE]
        code.extend([0x01, 0xDE]); // add esi, ebx
        code.extend([0x0F, 0x20, 0xD8, 0x0F, 0x22, 0xD8]); // mov eax, cr3; mov cr3, eax
        code.extend([0x41]); // inc ecx
        code.extend([0x0F, 0x20, 0xC0]); // mov eax, cr0
        code.extend([0x25, 0xFF, 0xFF, 0xFF, 0x7F]); // and eax, 7FFFFFFFh
        code.extend([0x0F, 0x22, 0xC0]); // mov cr0, eax (paging off)
        code.extend([0x41]); // inc ecx
        code.extend([0x0D, 0x00, 0x00, 0x00, 0x80]); // or eax, 80000000h
        code.extend([0x0F, 0x22, 0xC0]); // mov cr0, eax (paging on)
        code.extend([0x8B, 0x1D, pte[0], pte[1], pte[2], pte[3]]); // mov ebx, [CODE_PTE]
        code.extend([0x01, 0xDF]); // add edi, ebx
        code.extend([0x4A]); // dec edx
        let back = -(code.len() as i32 + 2);
        code.extend([0x75, back as u8]); // jnz loop
        code.extend([0xF4]); // hlt
        let run = |engine| {
            let mut m = machine(&code, engine);
            let stop = m.run(2_000, &mut NoInput::default(), &mut CaptureConsole::default());
            (stop, m)
        };
        let (stop_e, e) = run(Engine::Emulate);
        let (stop_b, b) = run(Engine::Blocks);
        assert_eq!(stop_e, stop_b);
        assert_eq!(e.state(), b.state());
        assert!(e.platform.mem.ram() == b.platform.mem.ram());
        assert!(b.blocks.stats.executed > 0);
        // The loop saw both: the accessed bit left clear while the entry
        // was cached (ESI), set again by the walk after the CR3 reload (EDI).
        assert_eq!(e.cpu.state.regs[1], 50 * 4, "every instruction ran");
        assert_eq!(e.cpu.state.regs[6], 50 * (CODE | 3));
        assert_eq!(e.cpu.state.regs[7], 50 * (CODE | 0x23));
    }
}
