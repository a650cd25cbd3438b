//! x86-64 code for a block (dynasm-rs templates; docs/raw-engine.md).
//!
//! The guest's registers, EIP, EFLAGS and the icount live in `Cpu`,
//! addressed from r15; every translation keeps a copy of the icount in R13,
//! carried across the edges between translations. Six guest registers
//! live in host registers (RBP, R12, RSI, RDI, R10, R11; see
//! [`CANONICAL`]) across those edges too: written back before every step
//! and on the way back to the block engine, loaded again after a step
//! (which may write any), and pushed around the inline memory path's
//! calls where a call may clobber them. Register-only integer instructions run as the
//! same host instruction on the cache or the memory slot; their arithmetic
//! flags are the host's, kept in the host EFLAGS from one
//! instruction to the next and written to the guest's only before a call
//! or an exit. The checks of a memory access park them in EBX (LAHF/SETO)
//! and the access joins the instructions not yet counted: only its slow
//! way, the step, needs `CpuState` complete. A block that branches back to
//! its own top carries the flags round parked. Where the SDM leaves a flag
//! undefined the reference's choice is made explicit (AF after
//! AND/OR/XOR/TEST is cleared), so no host microarchitecture shows through.
//! Memory operands, the stack and near branches through it take an inline
//! path (segment window unless the segment is flat, then the host slot
//! beside the TLB entry) to guest
//! RAM. Everything else, and every access the inline
//! path refuses, is a call to the block engine's step for that one
//! instruction, which runs it as the interpreter does, with every check
//! between instructions. Those slow ways and the slot misses are emitted
//! after the block's last instruction, so the hot path runs straight
//! through. Exits to the same page are jumps that chaining
//! links to the next translation; exits to another page, and dynamic ones,
//! look their target up in the jump table.
//!
//! Translation ABI: `extern "sysv64" fn(cpu: *mut Cpu, env: *mut Env) -> u32`,
//! returning `END` (the block ran to its end; EIP is the next one's) or
//! `LEAVE` (a step asked to leave).

// dynasm expands a dynamic register `Rd(h)` to `h.into()`, a conversion to
// the same type when `h` is already a register number.
#![allow(clippy::useless_conversion)]

use std::mem::offset_of;

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::{Env, Insn, JumpSlot, MemEnv, Shape, SystemOp, SystemSite, END, JUMP_SLOTS, LEAVE};
use crate::cpu::mmu::tlb_layout;
use crate::cpu::state::{cr0, cr4, flags, offsets, SegReg};
use crate::cpu::{Cpu, RingView};
use crate::events::sites::{self, SiteAccess, MAX_ACCESSES};
use crate::events::{io_stage_layout as stage, site_word, ENTRY_WRITE};
use crate::exec::alu::AluOp;
use crate::exec::compact::Op;
use crate::exec::shift::ShiftOp;
use crate::exec::string::StrOp;
use crate::exec::{Gpr, MemRef};
use crate::irq::InterruptRouter;
use crate::platform::{InlinePort, Platform};

/// The arithmetic flags the host computes for the guest.
const STATUS: u32 = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF | flags::OF;

pub(super) const STATE: usize = offset_of!(Cpu, state);
const EFLAGS: i32 = (STATE + offsets::EFLAGS) as i32;
const EIP: i32 = (STATE + offsets::EIP) as i32;
const CS_LIMIT: i32 = (STATE + offsets::seg(SegReg::Cs as usize) + offsets::SEGMENT_LIMIT) as i32;
const ICOUNT: i32 = offset_of!(Cpu, icount) as i32;
const CR0: i32 = (STATE + offsets::CR0) as i32;
const CR4: i32 = (STATE + offsets::CR4) as i32;
const IDLE_TICKS: i32 = offset_of!(Cpu, idle_ticks) as i32;
const TSC_OFFSET: i32 = (STATE + offsets::MSRS + offset_of!(crate::cpu::state::Msrs, tsc_offset)) as i32;
const CS_SELECTOR: i32 = (STATE + offsets::seg(SegReg::Cs as usize) + offsets::SEGMENT_SELECTOR) as i32;
/// The guest's IF and IOPL in the compressed view.
const VIRTUAL_FLAGS: i32 = (offset_of!(Cpu, ring_view) + RingView::VIRTUAL_FLAGS) as i32;
pub(super) const ENV_PLATFORM: i32 = offset_of!(Env, platform) as i32;
const PLATFORM_INTR: i32 = (offset_of!(Platform, irq) + InterruptRouter::INTR) as i32;
const PLATFORM_NMI: i32 = (offset_of!(Platform, irq) + InterruptRouter::NMI) as i32;
const ENV_PATCH_HITS: i32 = offset_of!(Env, patch_hits) as i32;
/// What POPF writes at CPL 0 outside V86 mode, less IF and IOPL, which a
/// compiled POPF never changes (nor, in the compressed view, are they the
/// guest's in `CpuState`).
const POPF_MERGES: u32 = flags::POPF_WRITABLE & !(flags::IF | flags::IOPL);
/// The system flags a POPF may change: a POPF that would change one is
/// left to the step (but IF, in the compressed view).
const POPF_MODES: u32 = flags::SYSTEM & flags::POPF_WRITABLE;
const _: () = assert!(POPF_MODES == flags::IF | flags::TF | flags::IOPL | flags::NT | flags::AC);
/// Patch indexes a translation's counter addressing reaches.
pub(super) const MAX_COMPILED_PATCH: u32 = 1 << 24;
const ENV_STEP: i32 = offset_of!(Env, step) as i32;
const ENV_PORT: i32 = offset_of!(Env, port) as i32;
const ENV_IO_STAGE: i32 = offset_of!(Env, io_stage) as i32;
const ENV_GROUP: i32 = offset_of!(Env, group) as i32;
const ENV_REFUSE_GROUPS: i32 = offset_of!(Env, refuse_groups) as i32;
const STAGE_NEXT: i32 = stage::NEXT as i32;
const STAGE_END: i32 = stage::END as i32;
const P_STALE_LINES: i32 = Platform::STALE_LINES as i32;
const ENV_STOP: i32 = offset_of!(Env, stop_icount) as i32;
const ENV_CHAINED: i32 = offset_of!(Env, chained) as i32;
const ENV_STORE: i32 = offset_of!(Env, store) as i32;
const ENV_JUMPS: i32 = offset_of!(Env, jumps) as i32;
const CS_BASE: i32 = (STATE + offsets::seg(SegReg::Cs as usize) + offsets::SEGMENT_BASE) as i32;
const JUMP_SLOT_SHIFT: i8 = 5;
const _: () = assert!(std::mem::size_of::<JumpSlot>() == 1 << JUMP_SLOT_SHIFT);
const JS_EIP: i32 = offset_of!(JumpSlot, eip) as i32;
const JS_PHYS: i32 = offset_of!(JumpSlot, phys) as i32;
const JS_MODE: i32 = offset_of!(JumpSlot, mode) as i32;
const JS_ENTRY: i32 = offset_of!(JumpSlot, entry) as i32;
const M_FLAT: i32 = (MEM + offset_of!(MemEnv, flat)) as i32;
pub(super) const MEM: usize = offset_of!(Env, mem);
const M_SEG_BASE: i32 = (MEM + offset_of!(MemEnv, seg_base)) as i32;
const M_SEG_READ_END: i32 = (MEM + offset_of!(MemEnv, seg_read_end)) as i32;
const M_SEG_WRITE_END: i32 = (MEM + offset_of!(MemEnv, seg_write_end)) as i32;
pub(super) const M_PAGING: i32 = (MEM + offset_of!(MemEnv, paging)) as i32;
const M_A20: i32 = (MEM + offset_of!(MemEnv, a20_mask)) as i32;
pub(super) const M_READ_PERMISSIONS: i32 = (MEM + offset_of!(MemEnv, read_permissions)) as i32;
pub(super) const M_RAM: i32 = (MEM + offset_of!(MemEnv, ram)) as i32;
pub(super) const M_HOST: i32 = (MEM + offset_of!(MemEnv, host)) as i32;
const ENV_FILL: i32 = offset_of!(Env, fill) as i32;
pub(super) const HOST_SLOT_SHIFT: i8 = 5;
const _: () = assert!(tlb_layout::HOST_SLOT_SIZE == 1 << HOST_SLOT_SHIFT);
pub(super) const HOST_READ_TAG: i32 = tlb_layout::HOST_READ_TAG as i32;
pub(super) const HOST_WRITE_TAG: i32 = tlb_layout::HOST_WRITE_TAG as i32;
pub(super) const HOST_CAREFUL_TAG: i32 = tlb_layout::HOST_CAREFUL_TAG as i32;
pub(super) const HOST_ADDEND: i32 = tlb_layout::HOST_ADDEND as i32;
pub(super) const M_TLB: i32 = (MEM + offset_of!(MemEnv, tlb)) as i32;
pub(super) const TLB_SLOTS: i32 = tlb_layout::ENTRIES as i32;
const TLB_ENTRY: i32 = tlb_layout::ENTRY_SIZE as i32;
pub(super) const TLB_TAG: i32 = tlb_layout::TAG as i32;
pub(super) const TLB_PHYS: i32 = tlb_layout::PHYS_PAGE as i32;
pub(super) const TLB_PERMISSIONS: i32 = tlb_layout::PERMISSIONS as i32;

fn reg(g: Gpr, size: u8) -> i32 {
    (STATE + offsets::REGS + g.byte_offset(size)) as i32
}

/// Whether the compiler runs `op` as host code.
pub fn is_native(op: &Op) -> bool {
    match *op {
        Op::Nop | Op::MovRR { .. } | Op::MovRI { .. } | Op::AluRR { .. } | Op::AluRI { .. } | Op::AluR { .. } => true,
        Op::MovxRR { .. } => true,
        Op::Lea { mem, .. } => mem.parts32().is_some(),
        Op::Jcc { .. } | Op::JmpRel { .. } => true,
        Op::PushR { size, .. } | Op::PushI { size, .. } | Op::PopR { size, .. } => size == 4,
        Op::PushM { size, mem } => size == 4 && mem.parts32().is_some(),
        Op::Leave { size } => size == 4,
        Op::DivR { size, .. } => size == 4,
        Op::Rdtsc => true,
        Op::DivM { size, mem } => size == 4 && mem.parts32().is_some(),
        // SHL/SHR/SAR by a constant below the operand's width, ROL/ROR of
        // 32 bits, and 32-bit SHL/SHR/SAR by CL: every flag is defined or
        // fixed up (a narrower operand shifted by its width or more leaves
        // the host's CF undefined).
        Op::ShiftRI { op, size, count, .. } => match op {
            ShiftOp::Shl | ShiftOp::Shr | ShiftOp::Sar => u32::from(count & 0x1F) < u32::from(size) * 8,
            ShiftOp::Rol | ShiftOp::Ror => size == 4,
            _ => false,
        },
        Op::ShiftRCl { op, size, .. } => size == 4 && matches!(op, ShiftOp::Shl | ShiftOp::Shr | ShiftOp::Sar),
        // SHLD and SHRD of 32 bits: OF fixed up past one bit, AF cleared.
        Op::DshiftRR { size, .. } => size == 4,
        Op::CallRel { size, .. } | Op::Ret { size, .. } => size == 4,
        Op::JmpR { size, .. } | Op::CallR { size, .. } => size == 4,
        Op::ImulRR { size, .. } | Op::ImulRRI { size, .. } => size != 1,
        Op::Setcc { .. } | Op::Bswap { .. } | Op::XchgRR { .. } => true,
        Op::MulR { size, .. } => size == 4,
        Op::CmovRR { size, .. } => size != 1,
        Op::Str { a32, .. } => a32,
        _ => memory_access(op).is_some(),
    }
}

/// An instruction with one memory operand that the inline path handles:
/// the operand, its size, and whether it is written (read-modify-write
/// included) rather than only read.
fn memory_access(op: &Op) -> Option<(MemRef, u8, bool)> {
    let (mem, size, write) = match *op {
        Op::MovRM { size, mem, .. } => (mem, size, false),
        Op::MovxRM { ssize, mem, .. } => (mem, ssize, false),
        Op::MovMR { size, mem, .. } | Op::MovMI { size, mem, .. } => (mem, size, true),
        Op::AluRM { size, mem, .. } | Op::CmovRM { size, mem, .. } => (mem, size, false),
        Op::AluMR { op, size, mem, .. } | Op::AluMI { op, size, mem, .. } => {
            (mem, size, !matches!(op, AluOp::Cmp | AluOp::Test))
        }
        Op::AluM { size, mem, .. } => (mem, size, true),
        Op::SetccM { mem, .. } => (mem, 1, true),
        // Written whether or not it matched, as the reference does.
        Op::CmpxchgMR { size: 4, mem, .. } => (mem, 4, true),
        _ => return None,
    };
    mem.parts32()?;
    Some((mem, size, write))
}

/// Where the guest's arithmetic flags are, at a point of the code being
/// emitted.
#[derive(Clone, Copy)]
struct Flags {
    /// The host EFLAGS hold them.
    in_host: bool,
    /// EBX holds them, parked by a memory access's checks: AH as LAHF
    /// makes it, AL = OF. A copy that stays good until a flag is written
    /// (EBX is callee-saved, so a step's call keeps it).
    parked: bool,
    /// ... and the newest of them differs from `CpuState::eflags`.
    dirty: bool,
    /// The last instruction to write them was a logical one, a shift or
    /// SHLD/SHRD: AF is the host's undefined value and the guest's is
    /// clear (masked when the flags are stored or parked).
    clear_af: bool,
}

impl Flags {
    /// Where the flags are at the top of every translation, however it got
    /// there (from the block engine, from another translation, round a
    /// loop): parked in EBX, and taken as changed (so that any way back to
    /// the block engine stores them).
    const AT_TOP: Flags = Flags {
        in_host: false,
        parked: true,
        dirty: true,
        clear_af: false,
    };
}

/// Where an inline access's host slot check failed (see
/// [`Emitter::translate`]).
struct SlotMiss {
    at: DynamicLabel,
    /// A store's check of the careful tag, after the write tag's.
    careful: Option<DynamicLabel>,
    size: u8,
    write: bool,
}

/// The labels of an instruction whose inline way may refuse: its step
/// (`slow`), where both ways meet (`done`), and its start (`retry`).
#[derive(Clone, Copy)]
struct Ways {
    slow: DynamicLabel,
    done: DynamicLabel,
    retry: DynamicLabel,
}

/// What the emitter tracks of the guest state at a point of the code: the
/// code paths that join there must agree on it.
#[derive(Clone, Copy)]
struct At {
    flags: Flags,
    pending: u64,
    dirty: u8,
}

/// Host registers that cache guest registers within a translation: all
/// that the code around them leaves free (R13 holds the icount).
const CACHE_REGS: [u8; 6] = [5 /* rbp */, 12, 6 /* rsi */, 7 /* rdi */, 10, 11];

/// Where six guest registers live across the edges between translations,
/// by guest index: EAX in RBP, EDX in RSI, EBX in RDI, ESP in R12, EBP in
/// R10, ESI in R11 (the most used in a Linux boot's code; the two used
/// most, EAX and ESP, in the callee-saved ones). At every edge these host
/// registers hold those guest registers, and `CpuState` may not: a chained
/// entry neither writes them back nor loads them again. ECX and EDI stay
/// in `CpuState` at the edges.
const CANONICAL: [Option<u8>; 8] = [Some(5), None, Some(6), Some(7), Some(12), Some(10), Some(11), None];

/// The guest registers in [`CANONICAL`] (a bit per index).
const CANONICAL_SET: u8 = {
    let mut set = 0;
    let mut i = 0;
    while i < 8 {
        if CANONICAL[i].is_some() {
            set |= 1 << i;
        }
        i += 1;
    }
    set
};

/// Those of [`CACHE_REGS`] that a call may clobber: pushed around the calls
/// of the inline memory path (a step writes back and loads again anyway).
const CALLER_SAVED: [u8; 4] = [6, 7, 10, 11];

struct Emitter {
    ops: VecAssembler<X64Relocation>,
    flags: Flags,
    /// A sink listens to device accesses ([`Jit::logs_io`]): inline port
    /// accesses log themselves, and need the room to.
    logs_io: bool,
    /// Instructions retired since the icount was last brought up to date.
    pending: u64,
    /// The host register caching each guest register (by index), for the
    /// whole translation: its [`CANONICAL`] one, or one that another guest
    /// register lends it; written back before every step, loaded again
    /// after a step.
    cached: [Option<u8>; 8],
    /// Guest registers of [`CANONICAL`] kept in `CpuState` here (one whose
    /// AH..BH is an operand, or one that lends its host register): stored
    /// at the top, loaded into their host registers again at each edge.
    parted: u8,
    /// Guest registers outside [`CANONICAL`] cached here in a lent host
    /// register: loaded at the top, written back at each edge.
    borrowed: u8,
    /// The cached guest registers (bit per index) written since they were
    /// last written back.
    dirty: u8,
    leave: DynamicLabel,
    /// The block's slot, passed to the step.
    slot: u32,
    /// EIP and physical page offset of the block's first instruction: an
    /// exit to an EIP on the same page may be chained.
    first_ip: u32,
    page_offset: u32,
    /// Chainable exits: the offset of each `jmp rel32`'s displacement and
    /// the EIP it leaves for.
    exits: Vec<(usize, u32)>,
    /// The block's jump mode, and the label of its jump table lookup once
    /// a dynamic exit needs it.
    mode: u32,
    lookup: Option<DynamicLabel>,
    /// The label of the way back to the block engine from an edge's state,
    /// once an exit needs it.
    edge_end: Option<DynamicLabel>,
    /// Code to emit after the block (see [`Emitter::cold`]).
    cold: Vec<ColdCode>,
    /// See `Shape::needs_virtual_if`.
    needs_virtual_if: bool,
    /// The block holds a CLI, STI or POPFD compiled as host code.
    changes_if: bool,
    /// The segments the inline memory path takes as flat here
    /// ([`super::flat_segments`]): those of the shape up to the first step
    /// that may change a segment.
    flat: u32,
    /// The instruction being emitted writes every arithmetic flag and
    /// nothing reads them, or can see them, before the next instruction
    /// that writes them all (see [`dead_flags`]): its flags need not be
    /// exact, and a CMP or TEST need not run at all.
    flags_dead: bool,
    /// Groups of memory operands may be made ([`Shape::groups`]).
    groups: bool,
    /// The group being emitted, from its check to its last member, and
    /// until its first member is emitted, where the step of that member
    /// goes on.
    group: Option<MemGroup>,
    group_after_first: Option<DynamicLabel>,
    /// Each instruction's place in a run of inline port accesses that log
    /// as one grouped entry ([`port_runs`]).
    port_runs: Vec<Option<PortRun>>,
    /// The grouped entry the run being emitted logs in: at [RSP] once its
    /// first access stored it, the site words of its prefixes by length.
    open_entry: Option<[u32; MAX_ACCESSES + 1]>,
    /// See [`Assembled::grouped_entries`].
    grouped_entries: [u32; MAX_ACCESSES],
}

/// An inline port access's place in a run of them ([`port_runs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PortRun {
    /// Its index in the run, and the run's length.
    position: usize,
    len: usize,
    /// The run's accesses, each `past` the instructions from the first.
    accesses: [SiteAccess; MAX_ACCESSES],
}

/// An IN or OUT the translation runs inline ([`Emitter::inline_port`]).
fn inline_port_of(insn: &Insn) -> Option<(bool, u8)> {
    match system_op_of(insn) {
        Some((
            SystemOp::Port {
                input,
                port: Some(port),
                inline: Some(_),
                size: 1,
            },
            _,
        )) => Some((input, port)),
        _ => None,
    }
}

/// An instruction that only computes in registers: compiled as host code
/// with no way out of the translation (no step, fault or exit), so that
/// nothing can log between the port accesses around it.
fn register_only(insn: &Insn) -> bool {
    insn.plain
        && is_native(&insn.op)
        && matches!(
            insn.op,
            Op::Nop
                | Op::MovRR { .. }
                | Op::MovRI { .. }
                | Op::AluRR { .. }
                | Op::AluRI { .. }
                | Op::AluR { .. }
                | Op::MovxRR { .. }
                | Op::Lea { .. }
                | Op::ShiftRI { .. }
                | Op::ShiftRCl { .. }
                | Op::DshiftRR { .. }
                | Op::ImulRR { .. }
                | Op::ImulRRI { .. }
                | Op::Setcc { .. }
                | Op::Bswap { .. }
                | Op::XchgRR { .. }
                | Op::CmovRR { .. }
                | Op::MulR { .. }
        )
}

/// The runs of inline port accesses that log as one grouped entry each:
/// up to [`MAX_ACCESSES`] of them with only [`register_only`] instructions
/// between. The translation stores the entry at the first and each access
/// after adds its value, so the others find it as the first left it.
fn port_runs(insns: &[Insn]) -> Vec<Option<PortRun>> {
    let mut runs = vec![None; insns.len()];
    let mut i = 0;
    while i < insns.len() {
        if inline_port_of(&insns[i]).is_none() {
            i += 1;
            continue;
        }
        let mut members = vec![i];
        let mut j = i + 1;
        while j < insns.len() && members.len() < MAX_ACCESSES {
            if inline_port_of(&insns[j]).is_some() {
                members.push(j);
            } else if !register_only(&insns[j]) {
                break;
            }
            j += 1;
        }
        let len = members.len();
        let mut accesses = [SiteAccess::default(); MAX_ACCESSES];
        for (a, &m) in accesses.iter_mut().zip(&members) {
            if let Some((input, port)) = inline_port_of(&insns[m]) {
                *a = SiteAccess {
                    pc: insns[m].ip,
                    addr: u32::from(port),
                    size: 1,
                    write: !input,
                    past: (m - i) as u16,
                };
            }
        }
        for (position, &m) in members.iter().enumerate() {
            runs[m] = Some(PortRun {
                position,
                len,
                accesses,
            });
        }
        i = members[len - 1] + 1;
    }
    runs
}

/// Memory operands through one base register and no index, on segments
/// taken as flat, that one check finds on one page (docs/raw-engine.md,
/// "Groups"). The check, before the first, puts the host address of the
/// lowest byte they reach in `Env::group` and in R8; each member is then
/// its access at its displacement from that (the first from R8, the
/// others after a load of `Env::group`), with no check and no flag
/// parked. Between the
/// first and the last only register instructions that leave the base
/// alone and other memory operands run; a step on another operand's slow
/// way (which may replace TLB entries) checks the group again.
#[derive(Clone, Copy, Debug)]
struct MemGroup {
    /// Its first and last members (instruction indexes), and every
    /// member (a bit per index).
    first: usize,
    last: usize,
    members: u64,
    /// The base register (its index).
    base: u8,
    /// The lowest displacement, and the highest of a member's last byte.
    lo: i32,
    hi: i32,
    /// A member writes: the check needs the page's write tag.
    write: bool,
    /// What the first member's own fill asks on a miss: its displacement,
    /// size and whether it writes.
    first_disp: i32,
    first_size: u8,
    first_write: bool,
}

/// The group whose first member is instruction `i` ([`MemGroup`]), with
/// `flat` the segments taken as flat there: two or more members within
/// 4 KiB of each other.
fn find_group(insns: &[Insn], i: usize, flat: u32) -> Option<MemGroup> {
    let member = |insn: &Insn| -> Option<(u8, i32, u8, bool)> {
        if !insn.plain || system_op_of(insn).is_some() || !is_native(&insn.op) {
            return None;
        }
        let (mem, size, write) = memory_access(&insn.op)?;
        let (base, index, _, disp) = mem.parts32()?;
        if index.is_some() || flat & super::flat_bit(mem.seg as usize, write) == 0 {
            return None;
        }
        Some((base?, disp as i32, size, write))
    };
    let (base, disp, size, write) = member(insns.get(i)?)?;
    let end = |disp: i32, size: u8| i64::from(disp) + i64::from(size) - 1;
    let (mut lo, mut hi) = (i64::from(disp), end(disp, size));
    let mut g = MemGroup {
        first: i,
        last: i,
        members: 1 << i,
        base,
        lo: disp,
        hi: disp,
        write,
        first_disp: disp,
        first_size: size,
        first_write: write,
    };
    for (j, insn) in insns.iter().enumerate().skip(i) {
        if j >= 64 {
            break;
        }
        if j > i {
            match member(insn) {
                // A group led by a load is one of loads: the write tag is
                // for a store's own fill to ask (its walk may set the dirty
                // bit), so a store starts a group of its own.
                Some((b, d, size, write))
                    if b == base
                        && (g.first_write || !write)
                        && hi.max(end(d, size)) - lo.min(i64::from(d)) < 0x1000 =>
                {
                    lo = lo.min(i64::from(d));
                    hi = hi.max(end(d, size));
                    g.members |= 1 << j;
                    g.last = j;
                    g.write |= write;
                }
                Some((b, ..)) if b == base => break,
                _ if !between_group_members(insn) => break,
                _ => {}
            }
        }
        // Accesses after an instruction that writes the base are not the
        // group's.
        if writes_register(&insn.op, base) {
            break;
        }
    }
    if g.members.count_ones() < 2 {
        return None;
    }
    // Within 4 KiB of each other, so both fit an i32.
    (g.lo, g.hi) = (lo as i32, hi as i32);
    Some(g)
}

/// Whether `insn` may run between members of a group: host code with no
/// step on its hot way, touching no memory (`Op::touches_memory`; the
/// branches in that list end their block, so none comes between), or a
/// memory operand through the inline path (whose slow way checks the
/// group again).
fn between_group_members(insn: &Insn) -> bool {
    insn.plain
        && system_op_of(insn).is_none()
        && is_native(&insn.op)
        && (!insn.op.touches_memory() || memory_access(&insn.op).is_some())
}

/// Whether `on_memory` leaves the arithmetic flags `op` wrote in the host.
fn memory_op_writes_flags(op: &Op) -> bool {
    match *op {
        Op::AluRM { .. } | Op::AluMR { .. } | Op::AluMI { .. } | Op::CmpxchgMR { .. } => true,
        Op::AluM { op, .. } => op != AluOp::Not,
        _ => false,
    }
}

/// Whether `op` may write the guest register with index `r` (anything not
/// listed is taken to).
fn writes_register(op: &Op, r: u8) -> bool {
    match *op {
        Op::Nop
        | Op::MovMR { .. }
        | Op::MovMI { .. }
        | Op::AluMR { .. }
        | Op::AluMI { .. }
        | Op::AluM { .. }
        | Op::SetccM { .. } => false,
        Op::MovRR { dst, .. }
        | Op::MovRI { dst, .. }
        | Op::MovxRR { dst, .. }
        | Op::Lea { dst, .. }
        | Op::AluRR { dst, .. }
        | Op::AluRI { dst, .. }
        | Op::AluR { dst, .. }
        | Op::ShiftRI { dst, .. }
        | Op::ShiftRCl { dst, .. }
        | Op::DshiftRR { dst, .. }
        | Op::ImulRR { dst, .. }
        | Op::ImulRRI { dst, .. }
        | Op::Setcc { dst, .. }
        | Op::Bswap { dst }
        | Op::CmovRR { dst, .. }
        | Op::MovRM { dst, .. }
        | Op::MovxRM { dst, .. }
        | Op::AluRM { dst, .. }
        | Op::CmovRM { dst, .. } => dst.index() == r,
        Op::XchgRR { a, b, .. } => a.index() == r || b.index() == r,
        Op::MulR { .. } => r == 0 || r == 2,
        Op::CmpxchgMR { .. } => r == 0,
        _ => true,
    }
}

/// How an instruction uses the arithmetic flags, for [`dead_flags`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagUse {
    /// Writes all six from its operands alone, and cannot fault or leave.
    Overwrites,
    /// Neither reads nor writes them, and cannot fault or leave.
    Keeps,
    /// Reads them, writes only some, or may fault, step or leave (where
    /// the guest's EFLAGS must be exact).
    Observes,
}

fn flag_use(insn: &Insn) -> FlagUse {
    if !(insn.plain && is_native(&insn.op)) || system_op_of(insn).is_some() {
        return FlagUse::Observes;
    }
    match insn.op {
        Op::Nop | Op::MovRR { .. } | Op::MovRI { .. } | Op::MovxRR { .. } | Op::Lea { .. } => FlagUse::Keeps,
        Op::Bswap { .. } | Op::XchgRR { .. } => FlagUse::Keeps,
        Op::AluR { op: AluOp::Not, .. } => FlagUse::Keeps,
        Op::AluRR { op, .. } | Op::AluRI { op, .. }
            if matches!(
                op,
                AluOp::Add | AluOp::Or | AluOp::And | AluOp::Sub | AluOp::Xor | AluOp::Cmp | AluOp::Test
            ) =>
        {
            FlagUse::Overwrites
        }
        Op::AluR { op: AluOp::Neg, .. } | Op::ImulRR { .. } | Op::ImulRRI { .. } | Op::MulR { .. } => {
            FlagUse::Overwrites
        }
        Op::ShiftRI {
            op: ShiftOp::Shl | ShiftOp::Shr | ShiftOp::Sar,
            count,
            ..
        } if count & 0x1F != 0 => FlagUse::Overwrites,
        Op::DshiftRR { count: Some(count), .. } if count & 0x1F != 0 => FlagUse::Overwrites,
        _ => FlagUse::Observes,
    }
}

/// For each instruction, whether the flags it writes are dead: another
/// instruction writes them all before anything reads them or could see
/// them (a fault, a step, an exit: the end of the block counts as one).
/// Such an instruction's host flags are left as the host makes them; no
/// guest state ever holds them.
fn dead_flags(insns: &[Insn]) -> Vec<bool> {
    let mut dead = vec![false; insns.len()];
    let mut live = true;
    for (i, insn) in insns.iter().enumerate().rev() {
        match flag_use(insn) {
            FlagUse::Overwrites => {
                dead[i] = !live;
                live = false;
            }
            FlagUse::Keeps => {}
            FlagUse::Observes => live = true,
        }
    }
    dead
}

type ColdCode = Box<dyn FnOnce(&mut Emitter)>;

macro_rules! asm {
    ($ops:expr; $($t:tt)*) => {
        dynasm!($ops ; .arch x64 ; $($t)*)
    };
}

/// Where a guest register is while a translation runs: its slot in
/// `CpuState` (an offset from r15), or a host register that caches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Slot(i32),
    Host(u8),
}

/// `op loc, eax/ax/al`: a guest register with EAX as the source.
macro_rules! alu_loc_eax {
    ($mn:ident, $ops:expr, $size:expr, $loc:expr) => {
        match ($loc, $size) {
            (Loc::Slot(at), 4) => asm!($ops; $mn DWORD [r15 + at], eax),
            (Loc::Slot(at), 2) => asm!($ops; $mn WORD [r15 + at], ax),
            (Loc::Slot(at), _) => asm!($ops; $mn BYTE [r15 + at], al),
            (Loc::Host(h), 4) => asm!($ops; $mn Rd(h), eax),
            (Loc::Host(h), 2) => asm!($ops; $mn Rw(h), ax),
            (Loc::Host(h), _) => asm!($ops; $mn Rb(h), al),
        }
    };
}

/// `op loc, imm`.
macro_rules! alu_loc_imm {
    ($mn:ident, $ops:expr, $size:expr, $loc:expr, $imm:expr) => {
        match ($loc, $size) {
            (Loc::Slot(at), 4) => asm!($ops; $mn DWORD [r15 + at], $imm as i32),
            (Loc::Slot(at), 2) => asm!($ops; $mn WORD [r15 + at], $imm as i16),
            (Loc::Slot(at), _) => asm!($ops; $mn BYTE [r15 + at], $imm as i8),
            (Loc::Host(h), 4) => asm!($ops; $mn Rd(h), $imm as i32),
            (Loc::Host(h), 2) => asm!($ops; $mn Rw(h), $imm as i16),
            (Loc::Host(h), _) => asm!($ops; $mn Rb(h), $imm as i8),
        }
    };
}

/// `op loc, r9d/r9w/r9b`.
macro_rules! alu_loc_r9 {
    ($mn:ident, $ops:expr, $size:expr, $loc:expr) => {
        match ($loc, $size) {
            (Loc::Slot(at), 4) => asm!($ops; $mn DWORD [r15 + at], r9d),
            (Loc::Slot(at), 2) => asm!($ops; $mn WORD [r15 + at], r9w),
            (Loc::Slot(at), _) => asm!($ops; $mn BYTE [r15 + at], r9b),
            (Loc::Host(h), 4) => asm!($ops; $mn Rd(h), r9d),
            (Loc::Host(h), 2) => asm!($ops; $mn Rw(h), r9w),
            (Loc::Host(h), _) => asm!($ops; $mn Rb(h), r9b),
        }
    };
}

/// `op [r8], r9d/r9w/r9b`: guest memory at its host address.
macro_rules! alu_host_r9 {
    ($mn:ident, $ops:expr, $size:expr) => {
        match $size {
            4 => asm!($ops; $mn DWORD [r8], r9d),
            2 => asm!($ops; $mn WORD [r8], r9w),
            _ => asm!($ops; $mn BYTE [r8], r9b),
        }
    };
}

/// `op [r8], imm`.
macro_rules! alu_host_imm {
    ($mn:ident, $ops:expr, $size:expr, $imm:expr) => {
        match $size {
            4 => asm!($ops; $mn DWORD [r8], $imm as i32),
            2 => asm!($ops; $mn WORD [r8], $imm as i16),
            _ => asm!($ops; $mn BYTE [r8], $imm as i8),
        }
    };
}

/// A one-operand `op loc` or `op [r8]`.
macro_rules! unary_loc {
    ($mn:ident, $ops:expr, $size:expr, $loc:expr) => {
        match ($loc, $size) {
            (Loc::Slot(at), 4) => asm!($ops; $mn DWORD [r15 + at]),
            (Loc::Slot(at), 2) => asm!($ops; $mn WORD [r15 + at]),
            (Loc::Slot(at), _) => asm!($ops; $mn BYTE [r15 + at]),
            (Loc::Host(h), 4) => asm!($ops; $mn Rd(h)),
            (Loc::Host(h), 2) => asm!($ops; $mn Rw(h)),
            (Loc::Host(h), _) => asm!($ops; $mn Rb(h)),
        }
    };
}

macro_rules! unary_host {
    ($mn:ident, $ops:expr, $size:expr) => {
        match $size {
            4 => asm!($ops; $mn DWORD [r8]),
            2 => asm!($ops; $mn WORD [r8]),
            _ => asm!($ops; $mn BYTE [r8]),
        }
    };
}

/// Emits `$form!(mnemonic, args...)` for a two-operand ALU operation.
/// `op dst, src` between two host registers caching guest registers.
macro_rules! alu_host_host {
    ($mn:ident, $ops:expr, $size:expr, $d:expr, $s:expr) => {
        match $size {
            4 => asm!($ops; $mn Rd($d), Rd($s)),
            2 => asm!($ops; $mn Rw($d), Rw($s)),
            _ => asm!($ops; $mn Rb($d), Rb($s)),
        }
    };
}

macro_rules! binary_alu {
    ($op:expr, $form:ident, $($args:tt)*) => {
        match $op {
            AluOp::Add => $form!(add, $($args)*),
            AluOp::Or => $form!(or, $($args)*),
            AluOp::Adc => $form!(adc, $($args)*),
            AluOp::Sbb => $form!(sbb, $($args)*),
            AluOp::And => $form!(and, $($args)*),
            AluOp::Sub => $form!(sub, $($args)*),
            AluOp::Xor => $form!(xor, $($args)*),
            AluOp::Cmp => $form!(cmp, $($args)*),
            AluOp::Test => $form!(test, $($args)*),
            _ => unreachable!("a two-operand ALU operation"),
        }
    };
}

/// Emits `$form!(mnemonic, args...)` with the SETcc (`set`) or CMOVcc
/// (`cmov`) mnemonic of condition `$cc` (the Jcc numbering).
macro_rules! by_condition {
    (set, $cc:expr, $form:ident, $($args:tt)*) => {
        match $cc & 15 {
            0 => $form!(seto, $($args)*),
            1 => $form!(setno, $($args)*),
            2 => $form!(setb, $($args)*),
            3 => $form!(setae, $($args)*),
            4 => $form!(sete, $($args)*),
            5 => $form!(setne, $($args)*),
            6 => $form!(setbe, $($args)*),
            7 => $form!(seta, $($args)*),
            8 => $form!(sets, $($args)*),
            9 => $form!(setns, $($args)*),
            10 => $form!(setp, $($args)*),
            11 => $form!(setnp, $($args)*),
            12 => $form!(setl, $($args)*),
            13 => $form!(setge, $($args)*),
            14 => $form!(setle, $($args)*),
            _ => $form!(setg, $($args)*),
        }
    };
    (cmov, $cc:expr, $form:ident, $($args:tt)*) => {
        match $cc & 15 {
            0 => $form!(cmovo, $($args)*),
            1 => $form!(cmovno, $($args)*),
            2 => $form!(cmovb, $($args)*),
            3 => $form!(cmovae, $($args)*),
            4 => $form!(cmove, $($args)*),
            5 => $form!(cmovne, $($args)*),
            6 => $form!(cmovbe, $($args)*),
            7 => $form!(cmova, $($args)*),
            8 => $form!(cmovs, $($args)*),
            9 => $form!(cmovns, $($args)*),
            10 => $form!(cmovp, $($args)*),
            11 => $form!(cmovnp, $($args)*),
            12 => $form!(cmovl, $($args)*),
            13 => $form!(cmovge, $($args)*),
            14 => $form!(cmovle, $($args)*),
            _ => $form!(cmovg, $($args)*),
        }
    };
}

macro_rules! set_al {
    ($m:ident, $ops:expr) => {
        asm!($ops; $m al)
    };
}

macro_rules! cmov_from_loc {
    ($m:ident, $ops:expr, $size:expr, $loc:expr) => {
        match ($loc, $size) {
            (Loc::Slot(at), 4) => asm!($ops; $m eax, DWORD [r15 + at]),
            (Loc::Slot(at), _) => asm!($ops; $m ax, WORD [r15 + at]),
            (Loc::Host(h), 4) => asm!($ops; $m eax, Rd(h)),
            (Loc::Host(h), _) => asm!($ops; $m ax, Rw(h)),
        }
    };
}

macro_rules! cmov_from_r9 {
    ($m:ident, $ops:expr, $size:expr) => {
        match $size {
            4 => asm!($ops; $m eax, r9d),
            _ => asm!($ops; $m ax, r9w),
        }
    };
}

/// Emits `$form!(mnemonic, args...)` for INC, DEC, NEG or NOT; whether it
/// writes the flags and reads CF.
macro_rules! unary_alu {
    ($op:expr, $form:ident, $($args:tt)*) => {
        match $op {
            AluOp::Inc => $form!(inc, $($args)*),
            AluOp::Dec => $form!(dec, $($args)*),
            AluOp::Neg => $form!(neg, $($args)*),
            AluOp::Not => $form!(not, $($args)*),
            _ => unreachable!("a one-operand ALU operation"),
        }
    };
}

impl Emitter {
    fn here(&self) -> At {
        At {
            flags: self.flags,
            pending: self.pending,
            dirty: self.dirty,
        }
    }

    fn resume(&mut self, at: At) {
        self.flags = at.flags;
        self.pending = at.pending;
        self.dirty = at.dirty;
    }

    /// Where the guest's register operand `g` of `size` bytes is now.
    fn loc(&self, g: Gpr, size: u8) -> Loc {
        match self.cached[usize::from(g.index())] {
            Some(h) => {
                debug_assert!(!g.is_high_byte(size), "high bytes are never cached");
                Loc::Host(h)
            }
            None => Loc::Slot(reg(g, size)),
        }
    }

    /// Where the guest's 32-bit register with `index` is now.
    fn reg32(&self, index: u8) -> Loc {
        match self.cached[usize::from(index & 7)] {
            Some(h) => Loc::Host(h),
            None => Loc::Slot((STATE + offsets::reg(usize::from(index & 7))) as i32),
        }
    }

    /// Notes that the code just emitted wrote guest register `g`.
    fn wrote(&mut self, g: Gpr) {
        self.wrote_index(g.index());
    }

    /// Notes that the code just emitted wrote the guest register with
    /// `index` (ModRM order).
    fn wrote_index(&mut self, index: u8) {
        if self.cached[usize::from(index & 7)].is_some() {
            self.dirty |= 1 << (index & 7);
        }
    }

    /// Moves the guest registers in `which` (a bit per index) that `homes`
    /// puts in host registers: to `CpuState` when `to_memory`, else from it
    /// (without touching the host flags).
    fn move_registers(&mut self, homes: [Option<u8>; 8], which: u8, to_memory: bool) {
        for (i, h) in homes.into_iter().enumerate() {
            if let Some(h) = h.filter(|_| which & (1 << i) != 0) {
                let at = (STATE + offsets::reg(i)) as i32;
                if to_memory {
                    asm!(self.ops; mov DWORD [r15 + at], Rd(h));
                } else {
                    asm!(self.ops; mov Rd(h), DWORD [r15 + at]);
                }
            }
        }
    }

    /// Writes the cached guest registers changed since the last write-back
    /// to `CpuState` (without touching the host flags). They stay cached.
    fn write_back(&mut self) {
        self.move_registers(self.cached, self.dirty, true);
        self.dirty = 0;
    }

    /// Loads every cached guest register from `CpuState`.
    fn reload(&mut self) {
        debug_assert_eq!(self.dirty, 0, "dirty registers are written back first");
        self.move_registers(self.cached, 0xFF, false);
    }

    /// At the top of the translation, from an edge's registers (see
    /// [`CANONICAL`]) to this translation's: the parted registers stored,
    /// the borrowed ones loaded. The canonical ones it keeps are taken as
    /// changed: `CpuState` may not hold them.
    fn enter_body(&mut self) {
        self.move_registers(CANONICAL, self.parted, true);
        self.move_registers(self.cached, self.borrowed, false);
        self.dirty = CANONICAL_SET & !self.parted;
    }

    /// Before an edge: from this translation's registers to the edge's,
    /// the borrowed ones written back (if changed) and the parted ones
    /// loaded into their canonical host registers. Clobbers no flag.
    fn registers_for_edge(&mut self) {
        self.move_registers(self.cached, self.borrowed & self.dirty, true);
        self.dirty &= !self.borrowed;
        self.move_registers(CANONICAL, self.parted, false);
    }

    /// From an edge's registers back to `CpuState`, for the block engine:
    /// every canonical one stored. Clobbers no flag.
    fn store_edge_registers(&mut self) {
        self.move_registers(CANONICAL, 0xFF, true);
    }

    /// Every canonical register loaded from `CpuState` (the entry from the
    /// block engine: the state an edge carries).
    fn load_edge_registers(&mut self) {
        self.move_registers(CANONICAL, 0xFF, false);
    }

    /// `mov r, loc` for host register number `r` (EAX, ECX, EDX, R9...).
    fn load(&mut self, r: u8, loc: Loc, size: u8) {
        match (loc, size) {
            (Loc::Slot(at), 4) => asm!(self.ops; mov Rd(r), DWORD [r15 + at]),
            (Loc::Slot(at), 2) => asm!(self.ops; mov Rw(r), WORD [r15 + at]),
            (Loc::Slot(at), _) => asm!(self.ops; mov Rb(r), BYTE [r15 + at]),
            (Loc::Host(h), 4) => asm!(self.ops; mov Rd(r), Rd(h)),
            (Loc::Host(h), 2) => asm!(self.ops; mov Rw(r), Rw(h)),
            (Loc::Host(h), _) => asm!(self.ops; mov Rb(r), Rb(h)),
        }
    }

    /// `mov loc, r`; the caller notes the write ([`Emitter::wrote`]).
    fn store(&mut self, loc: Loc, r: u8, size: u8) {
        match (loc, size) {
            (Loc::Slot(at), 4) => asm!(self.ops; mov DWORD [r15 + at], Rd(r)),
            (Loc::Slot(at), 2) => asm!(self.ops; mov WORD [r15 + at], Rw(r)),
            (Loc::Slot(at), _) => asm!(self.ops; mov BYTE [r15 + at], Rb(r)),
            (Loc::Host(h), 4) => asm!(self.ops; mov Rd(h), Rd(r)),
            (Loc::Host(h), 2) => asm!(self.ops; mov Rw(h), Rw(r)),
            (Loc::Host(h), _) => asm!(self.ops; mov Rb(h), Rb(r)),
        }
    }

    /// Makes the host EFLAGS hold the guest's arithmetic flags. Loaded with
    /// SAHF and an overflowing add, not POPF: faster, and no other host flag
    /// (TF, DF, AC) can be touched.
    fn load_flags(&mut self) {
        if self.flags.in_host {
            return;
        }
        if self.flags.parked {
            asm!(self.ops
                ; mov eax, ebx
                ; add al, 0x7F
                ; sahf
            );
            self.flags.in_host = true;
            return;
        }
        asm!(self.ops
            ; mov eax, DWORD [r15 + EFLAGS]
            ; mov ecx, eax
            ; shr ecx, 11
            ; and cl, 1
            ; add cl, 0x7F
            ; mov ah, al
            ; sahf
        );
        self.flags = Flags {
            in_host: true,
            parked: false,
            dirty: false,
            clear_af: false,
        };
    }

    /// Moves the guest's arithmetic flags out of the way of checks that
    /// clobber the host's: into EBX when only the host has them (LAHF and
    /// SETO, where storing them to `CpuState` takes a PUSHF and a
    /// read-modify-write of EFLAGS). Clobbers EAX.
    fn park_flags(&mut self) {
        if self.flags.in_host && self.flags.dirty && !self.flags.parked {
            self.park_host_flags();
            self.flags.parked = true;
        }
        self.flags.in_host = false;
    }

    /// EBX = the host's flags in the parked form: AH as LAHF makes it, AL =
    /// OF. Clobbers EAX.
    fn park_host_flags(&mut self) {
        asm!(self.ops
            ; lahf
            ; seto al
            ; mov ebx, eax
        );
    }

    /// EBX = the guest's arithmetic flags as parking leaves them, from
    /// `CpuState` (on entry from the block engine, or after a step).
    fn park_from_memory(&mut self) {
        asm!(self.ops
            ; mov eax, DWORD [r15 + EFLAGS]
            ; mov ecx, eax
            ; shr ecx, 11
            ; and ecx, 1
            ; mov ah, al
            ; mov al, cl
            ; mov ebx, eax
        );
        self.flags = Flags::AT_TOP;
    }

    /// Before an edge to the top of a translation (this one's, a chained
    /// one's, or through the jump table): the flags parked as every top
    /// takes them, with the guest's AF in the copy. Clobbers EAX.
    fn park_for_edge(&mut self) {
        if self.flags.in_host && !self.flags.parked {
            self.park_host_flags();
        } else if !self.flags.parked {
            // Only `CpuState` has them (after a step).
            self.park_from_memory();
            return;
        }
        if self.flags.clear_af {
            asm!(self.ops; and ebx, !0x1000);
        }
        self.flags = Flags::AT_TOP;
    }

    /// Writes the guest's arithmetic flags to `CpuState::eflags` if they
    /// changed there, from the host's or from EBX. The merge clobbers the
    /// host flags, so afterwards they are the guest's only in `CpuState`
    /// (and still in EBX if they were parked).
    fn store_flags(&mut self) {
        if !self.flags.dirty {
            return;
        }
        let keep = if self.flags.clear_af {
            STATUS & !flags::AF
        } else {
            STATUS
        };
        if self.flags.in_host {
            asm!(self.ops
                ; pushfq
                ; pop rax
            );
        } else {
            debug_assert!(self.flags.parked, "dirty flags are in the host or in EBX");
            // From EBX: AH is EFLAGS' low byte, AL is OF.
            asm!(self.ops
                ; movzx eax, bh
                ; movzx ecx, bl
                ; shl ecx, 11
                ; or eax, ecx
            );
        }
        asm!(self.ops
            ; and eax, keep as i32
            ; mov ecx, DWORD [r15 + EFLAGS]
            ; and ecx, !STATUS as i32
            ; or ecx, eax
            ; mov DWORD [r15 + EFLAGS], ecx
        );
        self.flags.dirty = false;
        self.flags.in_host = false;
    }

    /// Adds the instructions retired since the last update to the icount
    /// and its copy in R13 (without touching the host flags).
    fn store_icount(&mut self) {
        if self.pending == 0 {
            return;
        }
        let n = self.pending as i32;
        asm!(self.ops
            ; lea r13, [r13 + n]
            ; mov QWORD [r15 + ICOUNT], r13
        );
        self.pending = 0;
    }

    /// The icount's copy in R13 taken again from `Cpu` (a step counted
    /// itself there).
    fn reload_icount(&mut self) {
        asm!(self.ops; mov r13, QWORD [r15 + ICOUNT]);
    }

    /// The guest state complete in memory: flags, icount and registers.
    fn sync(&mut self) {
        self.store_flags();
        self.store_icount();
        self.write_back();
    }

    /// An instruction wrote every arithmetic flag.
    fn wrote_flags(&mut self, logical: bool) {
        self.flags = Flags {
            in_host: true,
            parked: false,
            dirty: true,
            clear_af: logical,
        };
    }

    /// After the step of a memory instruction on its slow way, which
    /// counted the instructions pending before it and itself: takes them
    /// off the icount again, so that the slow way meets the inline one,
    /// which leaves them pending, with the icount as it left it.
    fn uncount_after_step(&mut self, pending_before: u64) {
        let n = (pending_before + 1) as i32;
        asm!(self.ops; sub QWORD [r15 + ICOUNT], n);
        self.reload_icount();
    }

    /// Calls the step for instruction `index`; leaves when it says so.
    /// The cached registers are loaded again after it (it may write any).
    fn step(&mut self, index: usize) {
        self.call_step(index);
        self.reload();
    }

    /// A step after which the translation ends whichever way: no cached
    /// register is loaded again after it (an edge that follows loads the
    /// canonical ones itself).
    fn step_to_end(&mut self, index: usize) {
        self.call_step(index);
    }

    fn call_step(&mut self, index: usize) {
        self.call_helper(index, ENV_STEP, None);
    }

    /// Calls the step at `helper` (an offset in `Env`) for instruction
    /// `index`, with `arg` as its fourth argument; leaves when it says so.
    fn call_helper(&mut self, index: usize, helper: i32, arg: Option<u32>) {
        self.sync();
        let leave = self.leave;
        let slot = self.slot as i32;
        if let Some(arg) = arg {
            asm!(self.ops; mov ecx, arg as i32);
        }
        asm!(self.ops
            ; mov rdi, r14
            ; mov esi, index as i32
            ; mov edx, slot
            ; call QWORD [r14 + helper]
            ; test eax, eax
            ; jnz =>leave
        );
        self.reload_icount();
        // The step may have written flags: only `CpuState` has them now.
        self.flags.in_host = false;
        self.flags.parked = false;
        self.flags.dirty = false;
    }

    /// Leaves for `eip` with an edge's state ([`Emitter::make_edge_state`]):
    /// through a jump that a later
    /// link may point at the translation of the block there (same page),
    /// otherwise through the jump table (another page: where it is in
    /// physical memory depends on the paging of the moment, which the
    /// lookup checks).
    fn exit_to(&mut self, eip: u32) {
        self.make_edge_state();
        let from_page = i64::from(self.page_offset) + i64::from(eip.wrapping_sub(self.first_ip) as i32);
        if (0..0x1000).contains(&from_page) {
            // jmp rel32 0: to the return below until linked. A linked exit
            // leaves EIP behind: the translation it enters stores its own
            // when it refuses the entry, and its steps and exits set it.
            let at = self.ops.offset().0 + 1;
            self.ops.extend([0xE9, 0, 0, 0, 0]);
            self.exits.push((at, eip));
            asm!(self.ops; mov DWORD [r15 + EIP], eip as i32);
            self.end_from_edge();
        } else {
            let lookup = self.lookup();
            asm!(self.ops
                ; mov DWORD [r15 + EIP], eip as i32
                ; jmp =>lookup
            );
        }
    }

    /// The state an edge between translations carries: the flags parked
    /// (see [`Flags::AT_TOP`]), the icount in `Cpu` and R13, the registers
    /// of [`CANONICAL`] in their host registers and the rest in `Cpu`.
    fn make_edge_state(&mut self) {
        self.park_for_edge();
        self.store_icount();
        self.registers_for_edge();
    }

    /// Back to the block engine from an edge's state: the flags stored
    /// from EBX first, and the canonical registers.
    fn end_from_edge(&mut self) {
        let at = *self.edge_end.get_or_insert_with(|| self.ops.new_dynamic_label());
        asm!(self.ops; jmp =>at);
    }

    /// The code [`Emitter::end_from_edge`] jumps to, emitted once after the
    /// block.
    fn emit_edge_end(&mut self, at: DynamicLabel) {
        asm!(self.ops; =>at);
        self.flags = Flags::AT_TOP;
        self.store_flags();
        self.store_edge_registers();
        asm!(self.ops
            ; mov eax, END as i32
            ; jmp ->epilogue
        );
    }

    /// EAX = the effective address of `mem` (32-bit addressing).
    fn effective_address(&mut self, mem: MemRef) {
        let Some((base, index, scale, disp)) = mem.parts32() else {
            unreachable!("memory operands and LEA are compiled with 32-bit addressing only")
        };
        let disp = disp as i32;
        // Cached registers go straight into the LEA (its low 32 bits are the
        // guest's sum whatever their upper halves hold).
        let host = |loc: Loc| match loc {
            Loc::Host(h) => Some(h),
            Loc::Slot(_) => None,
        };
        let cached_base = base.map(|b| host(self.reg32(b)));
        let cached_index = index.map(|i| host(self.reg32(i)));
        match (cached_base, cached_index) {
            (Some(Some(b)), None) => {
                asm!(self.ops; lea eax, [Rq(b) + disp]);
                return;
            }
            (Some(Some(b)), Some(Some(i))) => {
                match scale {
                    1 => asm!(self.ops; lea eax, [Rq(b) + Rq(i) + disp]),
                    2 => asm!(self.ops; lea eax, [Rq(b) + Rq(i) * 2 + disp]),
                    4 => asm!(self.ops; lea eax, [Rq(b) + Rq(i) * 4 + disp]),
                    _ => asm!(self.ops; lea eax, [Rq(b) + Rq(i) * 8 + disp]),
                }
                return;
            }
            _ => {}
        }
        match base {
            Some(b) => self.load(0, self.reg32(b), 4),
            None => asm!(self.ops; mov eax, 0),
        }
        match index {
            Some(i) => {
                self.load(1, self.reg32(i), 4);
                match scale {
                    1 => asm!(self.ops; lea eax, [rax + rcx + disp]),
                    2 => asm!(self.ops; lea eax, [rax + rcx * 2 + disp]),
                    4 => asm!(self.ops; lea eax, [rax + rcx * 4 + disp]),
                    _ => asm!(self.ops; lea eax, [rax + rcx * 8 + disp]),
                }
            }
            None => asm!(self.ops; lea eax, [rax + disp]),
        }
    }

    /// An instruction with a memory operand: the segment check, the TLB
    /// probe and the plain-RAM check inline, with the host address of the
    /// operand in r8 for `op`; anything else (a limit, a TLB miss, MMIO,
    /// ROM, a page not yet dirty or holding watched code, a watchpoint) is
    /// the step, which does it all as the interpreter does. Nothing is
    /// written before every check has passed, so the step starts clean.
    ///
    /// The inline way neither stores the flags nor counts: the checks only
    /// park the flags, and the instruction joins those pending. Only the
    /// slow way brings `CpuState` up to date, for the step.
    fn memory(&mut self, index: usize, insn: &Insn) {
        let op = insn.op;
        let next_ip = insn.next_ip;
        let Some((mem, size, write)) = memory_access(&op) else {
            unreachable!("not a memory operation: {op:?}")
        };
        // The checks clobber the host flags.
        self.park_flags();
        let entry = self.here();
        let slow = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        // A plain store to a page not yet dirty, or holding watched code,
        // goes through `PhysMem::write` rather than the whole step.
        let plain_store = matches!(op, Op::MovMR { .. } | Op::MovMI { .. });
        let careful = plain_store.then(|| self.ops.new_dynamic_label());
        let retry = self.ops.new_dynamic_label();
        asm!(self.ops; =>retry);
        self.effective_address(mem);
        let miss = self.translate(mem.seg as i32, size, write, slow);
        let writes_flags = self.on_memory(&op, 0);
        let inline_dirty = self.dirty;
        asm!(self.ops; =>done);
        self.cold(move |e| e.slot_missed(miss, careful, retry, slow));
        if let Some(careful) = careful {
            self.cold(move |e| {
                asm!(e.ops; =>careful);
                match op {
                    Op::MovMR { size, src, .. } => {
                        // EDX: the value, zero-extended.
                        asm!(e.ops; xor edx, edx);
                        e.load(2, e.loc(src, size), size);
                    }
                    Op::MovMI { imm, .. } => asm!(e.ops; mov edx, imm as i32),
                    _ => unreachable!("a plain store"),
                }
                // The store keeps EBX (callee-saved), so parked flags stay.
                e.save_caller_saved();
                asm!(e.ops
                    ; mov rdi, r14
                    ; mov esi, r8d
                    ; mov ecx, i32::from(size)
                    ; call QWORD [r14 + ENV_STORE]
                );
                e.restore_caller_saved();
                asm!(e.ops
                    ; test eax, eax
                    ; jz =>done
                );
                // It changed watched code: the block ends after the store,
                // for the block engine to drop what was written.
                e.resume(entry);
                e.pending += 1;
                e.sync();
                asm!(e.ops
                    ; mov QWORD [r14 + ENV_STOP], 0
                    ; mov DWORD [r15 + EIP], next_ip as i32
                    ; mov eax, END as i32
                    ; jmp ->epilogue
                );
            });
        }
        // The checks that sent the slow way clobbered the host flags; the
        // guest's are in `CpuState` or parked. Both ways end with every
        // cached register in its host register (those the inline way wrote
        // still to be written back) and, when the instruction writes flags,
        // with the flags in the host.
        // Between a group's members, a step may have replaced the TLB
        // entry the group's check found.
        let recheck = self.group.filter(|g| index > g.first && index < g.last);
        self.cold(move |e| {
            asm!(e.ops; =>slow);
            e.resume(entry);
            e.step(index);
            if let Some(g) = recheck {
                e.group_recheck(g);
            }
            e.uncount_after_step(entry.pending);
            if writes_flags.is_some() {
                e.load_flags();
            }
            asm!(e.ops; jmp =>done);
        });
        self.pending = entry.pending + 1;
        self.dirty = inline_dirty;
        match writes_flags {
            Some(logical) => self.wrote_flags(logical),
            // The step wrote no flag: parked ones are still good, and the
            // inline way may have loaded them into the host but changed
            // none.
            None => self.flags = entry.flags,
        }
    }

    /// Code off the hot path (slow ways, slot misses), emitted after the
    /// block's last instruction so that the hot path runs straight through.
    /// It sets the emitter state it needs and ends in a jump.
    fn cold(&mut self, f: impl FnOnce(&mut Emitter) + 'static) {
        self.cold.push(Box::new(f));
    }

    /// The inline path from an offset in EAX within segment `seg` to the
    /// host address of an access of `size` bytes, in r8: the segment
    /// window (none for a flat segment, whose offset is the linear address),
    /// then the host slot of the linear page (one compare, which
    /// also fails an access that crosses into the next page). Jumps to
    /// `slow` when the window refuses it, and to the returned labels when
    /// the slot does, for [`Emitter::slot_missed`] to handle. Clobbers the
    /// host flags, RAX, RDX, R8 and R9.
    fn translate(&mut self, seg: i32, size: u8, write: bool, slow: DynamicLabel) -> SlotMiss {
        let seg_end = if write {
            M_SEG_WRITE_END + 4 * seg
        } else {
            M_SEG_READ_END + 4 * seg
        };
        let miss = SlotMiss {
            at: self.ops.new_dynamic_label(),
            careful: write.then(|| self.ops.new_dynamic_label()),
            size,
            write,
        };
        let tag = if write { HOST_WRITE_TAG } else { HOST_READ_TAG };
        let last = i32::from(size) - 1;
        let first_miss = miss.careful.unwrap_or(miss.at);
        if self.flat & super::flat_bit(seg as usize, write) == 0 {
            asm!(self.ops
                ; cmp eax, DWORD [r14 + seg_end]
                ; jae =>slow
                ; add eax, DWORD [r14 + M_SEG_BASE + 4 * seg]
            );
        }
        asm!(self.ops
            ; mov r8d, eax
            ; mov edx, eax
            ; shr edx, 12 - HOST_SLOT_SHIFT
            ; and edx, (TLB_SLOTS - 1) << HOST_SLOT_SHIFT
            ; add rdx, QWORD [r14 + M_HOST]
            ; lea r9d, [rax + last]
            ; and r9d, -0x1000
            ; cmp r9d, DWORD [rdx + tag]
            ; jne =>first_miss
            ; add r8, QWORD [rdx + HOST_ADDEND]
        );
        miss
    }

    /// The cold side of [`Emitter::translate`]. A store whose page holds
    /// watched code (the careful tag) goes to `careful` with the physical
    /// address in R8 when it is a plain store, else to `slow`. Any other
    /// miss asks `Env::fill` for the slot and goes back to `retry` (where
    /// the access's address is computed) when it was made, else to `slow`.
    fn slot_missed(&mut self, miss: SlotMiss, careful: Option<DynamicLabel>, retry: DynamicLabel, slow: DynamicLabel) {
        let at = miss.at;
        if let Some(check) = miss.careful {
            asm!(self.ops
                ;=>check
                ; cmp r9d, DWORD [rdx + HOST_CAREFUL_TAG]
                ; jne =>at
            );
            match careful {
                Some(careful) => asm!(self.ops
                    ; add r8, QWORD [rdx + HOST_ADDEND]
                    ; sub r8, QWORD [r14 + M_RAM]
                    ; jmp =>careful
                ),
                None => asm!(self.ops; jmp =>slow),
            }
        }
        asm!(self.ops
            ;=>at
            ; mov edx, r8d
        );
        self.call_fill(miss.size, miss.write);
        asm!(self.ops
            ; test eax, eax
            ; jnz =>retry
            ; jmp =>slow
        );
    }

    /// Calls `Env::fill` for an access of `size` bytes at the linear
    /// address in EDX, keeping the cached registers; EAX says whether the
    /// slot was made.
    fn call_fill(&mut self, size: u8, write: bool) {
        self.save_caller_saved();
        asm!(self.ops
            ; mov rdi, r15
            ; mov rsi, r14
            ; mov ecx, i32::from(size)
            ; mov r8d, i32::from(write)
            ; call QWORD [r14 + ENV_FILL]
        );
        self.restore_caller_saved();
    }

    /// The caching host registers a call may clobber, in use here.
    fn caller_saved_in_use(&self) -> impl Iterator<Item = u8> + use<> {
        let cached = self.cached;
        CACHE_REGS
            .into_iter()
            .filter(move |&h| CALLER_SAVED.contains(&h) && cached.contains(&Some(h)))
    }

    /// Before a call that must not lose the cached guest registers (those
    /// that are not callee-saved go on the host stack, which stays aligned).
    fn save_caller_saved(&mut self) {
        let n = self.caller_saved_in_use().count();
        for h in self.caller_saved_in_use() {
            asm!(self.ops; push Rq(h));
        }
        if n % 2 == 1 {
            asm!(self.ops; sub rsp, 8);
        }
    }

    /// After the call: [`Emitter::save_caller_saved`] undone (no flag is
    /// touched).
    fn restore_caller_saved(&mut self) {
        let saved: Vec<u8> = self.caller_saved_in_use().collect();
        if saved.len() % 2 == 1 {
            asm!(self.ops; lea rsp, [rsp + 8]);
        }
        for &h in saved.iter().rev() {
            asm!(self.ops; pop Rq(h));
        }
    }

    /// The TLB probe of the jump table lookup, as `Tlb::lookup` finds an entry:
    /// R8D holds a linear address; when the TLB holds its page with the
    /// permission bits at `permissions` (an offset in `MemEnv`), R8D becomes
    /// the physical address (A20 not applied yet), else it jumps to `miss`.
    /// Clobbers the host flags, RDX and R9.
    fn tlb_probe(&mut self, permissions: i32, miss: DynamicLabel) {
        asm!(self.ops
            ; mov edx, r8d
            ; shr edx, 12
            ; lea r9d, [rdx + 1]
            ; and edx, TLB_SLOTS - 1
            ; imul edx, edx, TLB_ENTRY
            ; add rdx, QWORD [r14 + M_TLB]
            ; cmp DWORD [rdx + TLB_TAG], r9d
            ; jne =>miss
            ; mov r9d, DWORD [rdx + TLB_PERMISSIONS]
            ; and r9d, DWORD [r14 + permissions]
            ; cmp r9d, DWORD [r14 + permissions]
            ; jne =>miss
            ; and r8d, 0xFFF
            ; or r8d, DWORD [rdx + TLB_PHYS]
        );
    }

    /// The start of a stack access of 4 bytes at ESP (ESP - 4 for a
    /// push; a 32-bit stack only): ECX = that offset, R8 = the host
    /// address. The flags are parked first, as for any memory access. The
    /// caller places the label a filled host slot retries from, and the
    /// cold side.
    fn stack_access(&mut self, write: bool, slow: DynamicLabel) -> SlotMiss {
        self.park_flags();
        if self.flat & super::STACK32 == 0 {
            asm!(self.ops
                ; test DWORD [r14 + M_FLAT], super::STACK32 as i32
                ; jz =>slow
            );
        }
        self.load(0, self.reg32(4), 4);
        if write {
            asm!(self.ops; sub eax, 4);
        }
        asm!(self.ops; mov ecx, eax);
        self.translate(SegReg::Ss as i32, 4, write, slow)
    }

    /// ESP = ECX, the new stack pointer of a push or pop.
    fn set_esp_from_ecx(&mut self) {
        self.store(self.reg32(4), 1, 4);
        self.wrote_index(4);
    }

    /// PUSH r32 / PUSH imm32 and POP r32, with a 32-bit stack.
    fn stack(&mut self, index: usize, op: &Op) {
        let slow = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        // As for other memory accesses: the flags parked, the instruction
        // left pending on the inline way.
        self.park_flags();
        let entry = self.here();
        let retry = self.ops.new_dynamic_label();
        asm!(self.ops; =>retry);
        let miss = match *op {
            Op::PushR { src, .. } => {
                let miss = self.stack_access(true, slow);
                // PUSH ESP pushes the value before the push.
                self.load(0, self.loc(src, 4), 4);
                asm!(self.ops; mov DWORD [r8], eax);
                self.set_esp_from_ecx();
                miss
            }
            Op::PushI { imm, .. } => {
                let miss = self.stack_access(true, slow);
                asm!(self.ops; mov DWORD [r8], imm as i32);
                self.set_esp_from_ecx();
                miss
            }
            Op::PopR { dsize, dst, .. } => {
                let miss = self.stack_access(false, slow);
                // ESP moves first: POP ESP loads the popped value.
                asm!(self.ops
                    ; mov r9d, DWORD [r8]
                    ; lea ecx, [rcx + 4]
                );
                self.set_esp_from_ecx();
                self.store(self.loc(dst, dsize), 9, dsize);
                self.wrote(dst);
                miss
            }
            _ => unreachable!("not a stack operation: {op:?}"),
        };
        // PUSH and POP write no flag.
        self.end_with_cold_step(index, entry, [miss], Ways { slow, done, retry });
    }

    /// MOVS, STOS, LODS, CMPS and SCAS without a repeat prefix (32-bit
    /// addressing), as the reference runs them (SDM Vol. 2B, MOVS/STOS/
    /// LODS/CMPS/SCAS): the source read at ESI in its segment, then the
    /// destination written (or the operand compared) at ES:EDI, then ESI
    /// and EDI moved on by the operand size; CMPS and SCAS set the flags
    /// last, as CMP of the source (or the accumulator) with the operand at
    /// ES:EDI. A loop of SCASB (strlen) was Linux's commonest step from a
    /// translation. With DF set (they count down), or any access the
    /// inline path refuses, the step runs the whole instruction: nothing is
    /// written before every check has passed. A slot miss fills and tries
    /// the instruction again from its start (the call clobbers the value
    /// held in ECX).
    fn string(&mut self, index: usize, op: StrOp, size: u8, src: SegReg) {
        // AL, AX and EAX share EAX's slot's first bytes.
        const EAX: u8 = 0;
        const ESI: u8 = 6;
        const EDI: u8 = 7;
        let (entry, ways) = self.begin_inline();
        let slow = ways.slow;
        asm!(self.ops
            ; test DWORD [r15 + EFLAGS], flags::DF as i32
            ; jnz =>slow
        );
        let mut misses = Vec::new();
        let reads_source = matches!(op, StrOp::Movs | StrOp::Lods | StrOp::Cmps);
        if reads_source {
            // ECX: the source, which `translate` keeps.
            self.load(0, self.reg32(ESI), 4);
            misses.push(self.translate(src as i32, size, false, slow));
            match size {
                1 => asm!(self.ops; movzx ecx, BYTE [r8]),
                2 => asm!(self.ops; movzx ecx, WORD [r8]),
                _ => asm!(self.ops; mov ecx, DWORD [r8]),
            }
        }
        match op {
            StrOp::Lods => {
                self.store(self.reg32(EAX), 1, size);
                self.wrote_index(EAX);
            }
            StrOp::Movs | StrOp::Stos => {
                if op == StrOp::Stos {
                    self.load(1, self.reg32(EAX), size);
                }
                self.load(0, self.reg32(EDI), 4);
                misses.push(self.translate(SegReg::Es as i32, size, true, slow));
                match size {
                    1 => asm!(self.ops; mov BYTE [r8], cl),
                    2 => asm!(self.ops; mov WORD [r8], cx),
                    _ => asm!(self.ops; mov DWORD [r8], ecx),
                }
            }
            // EAX: the operand at ES:EDI; ECX: the one compared with it
            // (the source, or the accumulator).
            _ => {
                self.load(0, self.reg32(EDI), 4);
                misses.push(self.translate(SegReg::Es as i32, size, false, slow));
                match size {
                    1 => asm!(self.ops; movzx eax, BYTE [r8]),
                    2 => asm!(self.ops; movzx eax, WORD [r8]),
                    _ => asm!(self.ops; mov eax, DWORD [r8]),
                }
                if op == StrOp::Scas {
                    self.load(1, self.reg32(EAX), size);
                }
            }
        }
        // The host flags are not the guest's here: ADD may clobber them.
        let step = i32::from(size);
        for (moves, index) in [(reads_source, ESI), (op != StrOp::Lods, EDI)] {
            if moves {
                match self.reg32(index) {
                    Loc::Host(h) => asm!(self.ops; lea Rd(h), [Rq(h) + step]),
                    Loc::Slot(at) => asm!(self.ops; add DWORD [r15 + at], step),
                }
                self.wrote_index(index);
            }
        }
        // CMPS and SCAS: the flags of the compare (the source or the
        // accumulator minus the operand at ES:EDI), as CMP makes them. The
        // others write no flag.
        let compares = matches!(op, StrOp::Cmps | StrOp::Scas);
        if compares {
            match size {
                1 => asm!(self.ops; cmp cl, al),
                2 => asm!(self.ops; cmp cx, ax),
                _ => asm!(self.ops; cmp ecx, eax),
            }
        }
        self.end_inline(index, entry, misses, ways, compares);
    }

    /// PUSH m32 with 32-bit addressing, on a 32-bit stack (`Op::PushM`), as
    /// the reference runs it: the operand read through its segment's inline
    /// path (before ESP moves: PUSH [ESP] pushes the top), kept in the
    /// frame's spare slot at [RSP] while the push's own access is checked,
    /// then written as PUSH r32 writes. A slot miss of either access fills
    /// and tries the instruction again from its start; anything else the
    /// inline path refuses is the step, with nothing written.
    fn push_memory(&mut self, index: usize, mem: MemRef) {
        let (entry, ways) = self.begin_inline();
        let slow = ways.slow;
        self.effective_address(mem);
        let read = self.translate(mem.seg as i32, 4, false, slow);
        asm!(self.ops
            ; mov eax, DWORD [r8]
            ; mov DWORD [rsp], eax
        );
        let push = self.stack_access(true, slow);
        asm!(self.ops
            ; mov eax, DWORD [rsp]
            ; mov DWORD [r8], eax
        );
        self.set_esp_from_ecx();
        // PUSH writes no flag.
        self.end_with_cold_step(index, entry, [read, push], ways);
    }

    /// LEAVE on a 32-bit stack (`Op::Leave`), as `exec::stack::leave`: the
    /// dword at SS:EBP read, then ESP = EBP + 4 and EBP = that dword.
    fn leave(&mut self, index: usize) {
        const EBP: u8 = 5;
        let (entry, ways) = self.begin_inline();
        let slow = ways.slow;
        if self.flat & super::STACK32 == 0 {
            asm!(self.ops
                ; test DWORD [r14 + M_FLAT], super::STACK32 as i32
                ; jz =>slow
            );
        }
        self.load(0, self.reg32(EBP), 4);
        asm!(self.ops; mov ecx, eax);
        let miss = self.translate(SegReg::Ss as i32, 4, false, slow);
        asm!(self.ops
            ; mov r9d, DWORD [r8]
            ; lea ecx, [rcx + 4]
        );
        self.set_esp_from_ecx();
        self.store(self.reg32(EBP), 9, 4);
        self.wrote_index(EBP);
        // LEAVE writes no flag.
        self.end_with_cold_step(index, entry, [miss], ways);
    }

    /// DIV r/m32 (`Op::DivR`, `Op::DivM` with 32-bit addressing) as the
    /// host's DIV, which the reference's division equals where it does not
    /// fault: EDX:EAX by the source, quotient to EAX, remainder to EDX. A
    /// source of 0 or EDX at or above it (the quotient would not fit) is
    /// the step, which raises #DE with nothing changed. The SDM leaves
    /// every flag undefined and the reference keeps them: they are parked
    /// in EBX first, which the host's DIV leaves alone.
    fn divide(&mut self, index: usize, op: &Op) {
        const EAX: u8 = 0;
        const EDX: u8 = 2;
        let (entry, ways) = self.begin_inline();
        let slow = ways.slow;
        // ECX: the divisor.
        let miss = match *op {
            Op::DivM { mem, .. } => {
                self.effective_address(mem);
                let miss = self.translate(mem.seg as i32, 4, false, slow);
                asm!(self.ops; mov ecx, DWORD [r8]);
                Some(miss)
            }
            Op::DivR { src, .. } => {
                self.load(1, self.loc(src, 4), 4);
                None
            }
            _ => unreachable!("not a division: {op:?}"),
        };
        self.load(2, self.reg32(EDX), 4);
        asm!(self.ops
            ; test ecx, ecx
            ; jz =>slow
            ; cmp edx, ecx
            ; jae =>slow
        );
        self.load(0, self.reg32(EAX), 4);
        asm!(self.ops; div ecx);
        self.store(self.reg32(EAX), 0, 4);
        self.store(self.reg32(EDX), 2, 4);
        self.wrote_index(EAX);
        self.wrote_index(EDX);
        // The guest's flags are where they were parked.
        self.end_with_cold_step(index, entry, miss, ways);
    }

    /// RDTSC (`Op::Rdtsc`) as `exec::system::rdtsc` computes it: EDX:EAX =
    /// (icount at this instruction + idle ticks) * `TSC_PER_INSN` + the
    /// offset, the icount being R13 plus the instructions still pending.
    /// With CR4.TSD set the step decides (#GP outside ring 0).
    fn rdtsc(&mut self, index: usize) {
        const EAX: u8 = 0;
        const EDX: u8 = 2;
        // The arithmetic clobbers the host flags.
        let (entry, ways) = self.begin_inline();
        let slow = ways.slow;
        let before = self.pending as i32;
        asm!(self.ops
            ; test DWORD [r15 + CR4], cr4::TSD as i32
            ; jnz =>slow
            ; mov rax, QWORD [r15 + IDLE_TICKS]
            ; lea rax, [rax + r13 + before]
            ; imul rax, rax, crate::time::TSC_PER_INSN as i32
            ; add rax, QWORD [r15 + TSC_OFFSET]
            ; mov rdx, rax
            ; shr rdx, 32
        );
        self.store(self.reg32(EAX), 0, 4);
        self.store(self.reg32(EDX), 2, 4);
        self.wrote_index(EAX);
        self.wrote_index(EDX);
        // RDTSC writes no flag.
        self.end_with_cold_step(index, entry, None, ways);
    }

    /// The start of the inline way of an instruction that may refuse it:
    /// the flags parked (its checks clobber the host's), the state both of
    /// its ways start from, and where a filled host slot tries it again.
    fn begin_inline(&mut self) -> (At, Ways) {
        let ways = Ways {
            slow: self.ops.new_dynamic_label(),
            done: self.ops.new_dynamic_label(),
            retry: self.ops.new_dynamic_label(),
        };
        self.park_flags();
        let entry = self.here();
        asm!(self.ops; =>ways.retry);
        (entry, ways)
    }

    /// The end of instruction `index`'s inline way, for an instruction that
    /// writes no flag: `done` placed, its cold side ([`Emitter::cold_step`])
    /// queued, and the emitter's state as both ways leave it: the flags as
    /// at `entry`, the instruction pending, the registers the inline way
    /// wrote changed.
    fn end_with_cold_step(
        &mut self,
        index: usize,
        entry: At,
        misses: impl IntoIterator<Item = SlotMiss> + 'static,
        ways: Ways,
    ) {
        self.end_inline(index, entry, misses, ways, false);
    }

    /// [`Emitter::end_with_cold_step`] for an instruction after which the
    /// translation ends where the inline way refuses: the step, and back
    /// to the block engine. `complete`: the site word that completes the
    /// grouped entry at [RSP] first, with the accesses before this one.
    fn end_with_cold_leave(&mut self, index: usize, entry: At, ways: Ways, complete: Option<u32>) {
        let inline_dirty = self.dirty;
        asm!(self.ops; =>ways.done);
        self.cold(move |e| {
            asm!(e.ops; =>ways.slow);
            e.resume(entry);
            if let Some(word) = complete {
                asm!(e.ops
                    ; mov r9, QWORD [rsp]
                    ; mov DWORD [r9 + stage::SIZE_FLAGS_AND_PAST as i32], word as i32
                );
            }
            e.step_to_end(index);
            asm!(e.ops; mov eax, END as i32; jmp ->epilogue);
        });
        self.resume(entry);
        self.pending += 1;
        self.dirty = inline_dirty;
    }

    /// [`Emitter::end_with_cold_step`], for an instruction that writes
    /// every arithmetic flag when `writes_flags`: both ways then leave
    /// them in the host (the cold side loads those the step wrote).
    fn end_inline(
        &mut self,
        index: usize,
        entry: At,
        misses: impl IntoIterator<Item = SlotMiss> + 'static,
        ways: Ways,
        writes_flags: bool,
    ) {
        let inline_dirty = self.dirty;
        asm!(self.ops; =>ways.done);
        self.cold_step(index, entry, misses, ways, writes_flags);
        self.resume(entry);
        self.pending += 1;
        self.dirty = inline_dirty;
        if writes_flags {
            self.wrote_flags(false);
        }
    }

    /// The cold side of instruction `index`, whose inline way may refuse:
    /// host slot misses (filled, then tried again from `retry`), and at
    /// `slow` the step, from the state at `entry`, joining the inline way
    /// at `done` with the instruction left pending as it leaves it (and
    /// the flags it wrote loaded into the host, with `load_flags`).
    fn cold_step(
        &mut self,
        index: usize,
        entry: At,
        misses: impl IntoIterator<Item = SlotMiss> + 'static,
        Ways { slow, done, retry }: Ways,
        load_flags: bool,
    ) {
        self.cold(move |e| {
            for miss in misses {
                e.slot_missed(miss, None, retry, slow);
            }
            asm!(e.ops; =>slow);
            e.resume(entry);
            e.step(index);
            e.uncount_after_step(entry.pending);
            if load_flags {
                e.load_flags();
            }
            asm!(e.ops; jmp =>done);
        });
    }

    /// CLI, STI, PUSHFD or POPFD at instruction `index` (see [`SystemOp`]):
    /// inline where it changes no mode, else (and for any fault, any stack
    /// the inline path refuses) the step. A patch's inline way counts a hit.
    fn system_op(&mut self, index: usize, op: SystemOp, site: SystemSite, last: bool) {
        let slow = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        // The host flags are free for the checks; PUSHFD and POPFD need the
        // status flags in `CpuState` with the rest.
        self.park_flags();
        if matches!(op, SystemOp::Pushfd | SystemOp::Popfd) {
            self.store_flags();
        }
        let entry = self.here();
        let retry = self.ops.new_dynamic_label();
        asm!(self.ops; =>retry);
        let virtual_if = matches!(site, SystemSite::Patch { .. });
        if matches!(op, SystemOp::Pushfd | SystemOp::Popfd) && !virtual_if {
            // In V86 mode they may fault.
            asm!(self.ops
                ; test DWORD [r15 + EFLAGS], flags::VM as i32
                ; jnz =>slow
            );
        }
        let mut miss = None;
        match (op, virtual_if) {
            // The guest is ring 0: nothing faults.
            (SystemOp::Cli, true) => {
                let unchanged = self.ops.new_dynamic_label();
                asm!(self.ops
                    ; test DWORD [r15 + VIRTUAL_FLAGS], flags::IF as i32
                    ; jz =>unchanged
                    // IF going off needs nothing here; a translation the
                    // monitor would not run with IF clear refuses to be
                    // chained to (`Shape::needs_virtual_if`).
                    ; and DWORD [r15 + VIRTUAL_FLAGS], !flags::IF as i32
                    ;=>unchanged
                );
            }
            (SystemOp::Sti, true) => {
                // Setting IF starts a shadow over the next instruction. With
                // no interrupt waiting, and the next instruction in this
                // block (which fits before the deadline), nothing can arrive
                // before the shadow ends: as the block engine, it is dropped.
                // The view stays compressed.
                let set = self.ops.new_dynamic_label();
                asm!(self.ops
                    ; test DWORD [r15 + VIRTUAL_FLAGS], flags::IF as i32
                    ; jnz =>set
                );
                if last {
                    asm!(self.ops; jmp =>slow);
                } else {
                    self.jump_if_interrupt_waits(slow);
                    asm!(self.ops; or DWORD [r15 + VIRTUAL_FLAGS], flags::IF as i32);
                }
                asm!(self.ops; =>set);
            }
            (SystemOp::Cli | SystemOp::Sti, false) => {
                // #GP unless CPL <= IOPL; real and V86 modes to the step.
                asm!(self.ops
                    ; mov eax, DWORD [r15 + EFLAGS]
                    ; test eax, flags::VM as i32
                    ; jnz =>slow
                    ; test DWORD [r15 + CR0], cr0::PE as i32
                    ; jz =>slow
                    ; movzx ecx, WORD [r15 + CS_SELECTOR]
                    ; and ecx, 3
                    ; mov edx, eax
                    ; shr edx, 12
                    ; and edx, 3
                    ; cmp ecx, edx
                    ; ja =>slow
                    ; test eax, flags::IF as i32
                );
                if op == SystemOp::Sti {
                    // Setting IF starts a shadow: the step.
                    asm!(self.ops; jz =>slow);
                } else {
                    asm!(self.ops
                        ; jz =>done
                        ; and eax, !flags::IF as i32
                        ; mov DWORD [r15 + EFLAGS], eax
                        ; mov QWORD [r14 + ENV_STOP], 0
                    );
                }
            }
            (SystemOp::Pushfd, _) => {
                miss = Some(self.stack_access(true, slow));
                asm!(self.ops; mov eax, DWORD [r15 + EFLAGS]);
                if let SystemSite::Patch {
                    leaks_view_flags: false,
                    ..
                } = site
                {
                    asm!(self.ops
                        ; and eax, !(flags::IF | flags::IOPL) as i32
                        ; or eax, DWORD [r15 + VIRTUAL_FLAGS]
                    );
                }
                // The image has VM and RF clear.
                asm!(self.ops
                    ; and eax, !(flags::VM | flags::RF) as i32
                    ; mov DWORD [r8], eax
                );
                self.set_esp_from_ecx();
            }
            (SystemOp::Port { .. }, _) => unreachable!("IN and OUT call their step"),
            (SystemOp::Popfd, _) => {
                miss = Some(self.stack_access(false, slow));
                asm!(self.ops
                    ; mov r9d, DWORD [r8]
                    ; mov eax, DWORD [r15 + EFLAGS]
                    ; mov edx, eax
                );
                if virtual_if {
                    asm!(self.ops
                        ; and edx, !(flags::IF | flags::IOPL) as i32
                        ; or edx, DWORD [r15 + VIRTUAL_FLAGS]
                    );
                }
                if virtual_if {
                    // IF may change: going off needs nothing (as after
                    // CLI), coming on needs no interrupt waiting, which
                    // would be taken right after.
                    let same_if = self.ops.new_dynamic_label();
                    let going_off = self.ops.new_dynamic_label();
                    asm!(self.ops
                        ; xor edx, r9d
                        ; test edx, (POPF_MODES & !flags::IF) as i32
                        ; jnz =>slow
                        ; test edx, flags::IF as i32
                        ; jz =>same_if
                        ; test r9d, flags::IF as i32
                        ; jz =>going_off
                    );
                    self.jump_if_interrupt_waits(slow);
                    asm!(self.ops
                        ;=>going_off
                        ; xor DWORD [r15 + VIRTUAL_FLAGS], flags::IF as i32
                        ;=>same_if
                    );
                } else {
                    asm!(self.ops
                        ; xor edx, r9d
                        ; test edx, POPF_MODES as i32
                        ; jnz =>slow
                    );
                }
                asm!(self.ops
                    ; and r9d, POPF_MERGES as i32
                    ; and eax, !POPF_MERGES as i32
                    ; or eax, r9d
                    ; or eax, flags::FIXED1 as i32
                    ; mov DWORD [r15 + EFLAGS], eax
                    ; lea ecx, [rcx + 4]
                );
                self.set_esp_from_ecx();
            }
        }
        if let SystemSite::Patch { index, .. } = site {
            asm!(self.ops
                ; mov rax, QWORD [r14 + ENV_PATCH_HITS]
                ; add QWORD [rax + (index * 8) as i32], 1
            );
        }
        let inline_dirty = self.dirty;
        asm!(self.ops; =>done);
        // After POPFD only `CpuState` has the arithmetic flags, whichever
        // way ran; the others leave them where they were.
        let flags_after = if op == SystemOp::Popfd {
            Flags {
                in_host: false,
                parked: false,
                dirty: false,
                clear_af: false,
            }
        } else {
            entry.flags
        };
        self.cold_step(index, entry, miss, Ways { slow, done, retry }, false);
        self.resume(entry);
        self.flags = flags_after;
        self.pending += 1;
        self.dirty = inline_dirty;
    }

    /// The check of group `g` ([`MemGroup`]) before its first member
    /// `insn`: both ends on one page whose host slot allows every member's
    /// access. On a miss, the fill the first member's own access would ask
    /// for, and the check again. Where the fill is refused (a walk that
    /// would replace another TLB entry, a fault, MMIO), the first member
    /// is the step's, after which its fill and the check are tried once
    /// more and the code goes on after the first member. Where the check
    /// still fails (the ends on two pages, no RAM) the translation leaves,
    /// before the first member or after its step, and asks to be made
    /// again without groups.
    fn group_check(&mut self, g: MemGroup, insn: &Insn) {
        self.park_flags();
        let entry = self.here();
        let miss = self.ops.new_dynamic_label();
        let refuse = self.ops.new_dynamic_label();
        let refused_fill = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        let after_first = self.ops.new_dynamic_label();
        self.group_after_first = Some(after_first);
        self.group_probe(g, miss, refuse);
        asm!(self.ops; =>done);
        let (ip, first) = (insn.ip, g.first);
        let writes_flags = memory_op_writes_flags(&insn.op);
        self.cold(move |e| {
            asm!(e.ops; =>miss);
            e.resume(entry);
            e.group_fill(g, refused_fill);
            e.group_probe(g, refuse, refuse);
            asm!(e.ops
                ; jmp =>done
                ;=>refuse
            );
            e.resume(entry);
            e.sync();
            asm!(e.ops
                ; mov DWORD [r15 + EIP], ip as i32
                ; mov QWORD [r14 + ENV_REFUSE_GROUPS], (e.slot + 1) as i32
                ; mov eax, END as i32
                ; jmp ->epilogue
            );
            // The first member by the step, which may walk and replace TLB
            // entries (or fault, leaving), then its fill again: the code
            // after it finds the state as its inline way leaves it (but
            // registers and flags already in `CpuState`, which writing them
            // back again keeps).
            let refuse_after = e.ops.new_dynamic_label();
            asm!(e.ops; =>refused_fill);
            e.resume(entry);
            e.step(first);
            e.group_fill(g, refuse_after);
            e.group_probe(g, refuse_after, refuse_after);
            e.uncount_after_step(entry.pending);
            if writes_flags {
                e.load_flags();
            }
            asm!(e.ops
                ; jmp =>after_first
                ;=>refuse_after
                ; mov QWORD [r14 + ENV_REFUSE_GROUPS], (e.slot + 1) as i32
                ; mov eax, END as i32
                ; jmp ->epilogue
            );
        });
    }

    /// `Env::group` set for group `g` where its ends lie on one page whose
    /// host slot allows every member's access, with R8 holding the same
    /// (the first member takes it from there); else a jump to `fail` (two
    /// pages) or `miss` (the slot). Clobbers the host flags, RAX, RCX, RDX,
    /// R8 and R9.
    fn group_probe(&mut self, g: MemGroup, miss: DynamicLabel, fail: DynamicLabel) {
        match self.reg32(g.base) {
            Loc::Host(h) => asm!(self.ops
                ; lea eax, [Rq(h) + g.lo]
                ; lea ecx, [Rq(h) + g.hi]
            ),
            Loc::Slot(at) => asm!(self.ops
                ; mov ecx, DWORD [r15 + at]
                ; lea eax, [rcx + g.lo]
                ; lea ecx, [rcx + g.hi]
            ),
        }
        let tag = if g.write { HOST_WRITE_TAG } else { HOST_READ_TAG };
        // The lowest byte's linear address, zero-extended in RAX, is where
        // the host address counts from.
        asm!(self.ops
            ; xor ecx, eax
            ; test ecx, -0x1000
            ; jnz =>fail
            ; mov edx, eax
            ; shr edx, 12 - HOST_SLOT_SHIFT
            ; and edx, (TLB_SLOTS - 1) << HOST_SLOT_SHIFT
            ; add rdx, QWORD [r14 + M_HOST]
            ; mov r9d, eax
            ; and r9d, -0x1000
            ; cmp r9d, DWORD [rdx + tag]
            ; jne =>miss
            ; mov r8, QWORD [rdx + HOST_ADDEND]
            ; add r8, rax
            ; mov QWORD [r14 + ENV_GROUP], r8
        );
    }

    /// A group's miss: the fill the first member's own access would ask
    /// for (a group led by a load reads only); refused, to `fail`.
    fn group_fill(&mut self, g: MemGroup, fail: DynamicLabel) {
        match self.reg32(g.base) {
            Loc::Host(h) => asm!(self.ops; lea edx, [Rq(h) + g.first_disp]),
            Loc::Slot(at) => asm!(self.ops
                ; mov edx, DWORD [r15 + at]
                ; add edx, g.first_disp
            ),
        }
        self.call_fill(g.first_size, g.first_write);
        asm!(self.ops
            ; test eax, eax
            ; jz =>fail
        );
    }

    /// After a step between a group's members (on another operand's slow
    /// way, which may have replaced TLB entries): the group checked again,
    /// or, where that fails, the translation leaves after the step, which
    /// left `CpuState` complete, and asks to be made again without groups.
    fn group_recheck(&mut self, g: MemGroup) {
        let refuse = self.ops.new_dynamic_label();
        let good = self.ops.new_dynamic_label();
        self.group_probe(g, refuse, refuse);
        asm!(self.ops
            ; jmp =>good
            ;=>refuse
            ; mov QWORD [r14 + ENV_REFUSE_GROUPS], (self.slot + 1) as i32
            ; mov eax, END as i32
            ; jmp ->epilogue
            ;=>good
        );
    }

    /// A member of the group being run: its access at the host address the
    /// group's check found, with no check of its own and the flags left
    /// where they are.
    fn group_member(&mut self, index: usize, insn: &Insn, g: MemGroup) {
        let Some((mem, ..)) = memory_access(&insn.op) else {
            unreachable!("a group's member is a memory operation")
        };
        let Some((.., disp)) = mem.parts32() else {
            unreachable!("a group's member has 32-bit addressing")
        };
        // The group's check left its host address in R8 for the first
        // member; the others find it where the check stored it.
        if !(index == g.first && self.group_after_first.is_some()) {
            asm!(self.ops; mov r8, QWORD [r14 + ENV_GROUP]);
        }
        let writes_flags = self.on_memory(&insn.op, disp as i32 - g.lo);
        debug_assert_eq!(writes_flags.is_some(), memory_op_writes_flags(&insn.op));
        self.pending += 1;
        match writes_flags {
            Some(logical) => self.wrote_flags(logical),
            // A first member that read the flags (CMOVcc, SETcc) loaded
            // them into the host, which the way through its step does not:
            // after it they are only where they were before (parked, or in
            // `CpuState`), as the step leaves them (a review found the
            // next reader taking the host's).
            None if self.group_after_first.is_some() => self.flags.in_host = false,
            None => {}
        }
        if let Some(after_first) = self.group_after_first.take() {
            asm!(self.ops; =>after_first);
        }
    }

    /// A byte IN or OUT through an immediate port that the platform lets
    /// compiled code make itself ([`InlinePort`]), at instruction `index`:
    /// inline where the guest may use the port (a patch runs at the guest's
    /// ring 0; in the true view, real mode or CPL <= IOPL outside V86
    /// mode), no device waits to be routed, the register's flag is clear
    /// and, while a sink listens, the stage has room. Else the step. As
    /// `port_step`, it counts the access in the platform's statistics and
    /// logs it at this instruction's icount and linear EIP; a patch counts
    /// a hit.
    fn inline_port(&mut self, index: usize, insn: &Insn, input: bool, port: u8, how: InlinePort, site: SystemSite) {
        const EAX: u8 = 0;
        let run = self.port_runs.get(index).copied().flatten();
        let grouped = match run {
            Some(r) if r.position == 0 => self.open_grouped_entry(r),
            Some(_) => self.open_entry.is_some(),
            None => false,
        };
        let (entry, ways) = self.begin_inline();
        let slow = ways.slow;
        if site == SystemSite::True {
            let allowed = self.ops.new_dynamic_label();
            asm!(self.ops
                ; test DWORD [r15 + CR0], cr0::PE as i32
                ; jz =>allowed
                ; mov eax, DWORD [r15 + EFLAGS]
                ; test eax, flags::VM as i32
                ; jnz =>slow
                ; movzx ecx, WORD [r15 + CS_SELECTOR]
                ; and ecx, 3
                ; shr eax, 12
                ; and eax, 3
                ; cmp ecx, eax
                ; ja =>slow
                ;=>allowed
            );
        }
        // Every check before any effect: the step starts afresh.
        asm!(self.ops
            ; mov rdx, QWORD [r14 + ENV_PLATFORM]
            ; cmp DWORD [rdx + P_STALE_LINES], 0
            ; jne =>slow
        );
        if let InlinePort::Register { unless, .. } = how {
            asm!(self.ops
                ; cmp BYTE [rdx + unless as i32], 0
                ; jne =>slow
            );
        }
        // Room for an entry, unless the run's first access made it.
        let entry_open = grouped && run.is_some_and(|r| r.position > 0);
        if self.logs_io && !entry_open {
            asm!(self.ops
                ; mov r8, QWORD [r14 + ENV_IO_STAGE]
                ; mov r9, QWORD [r8 + STAGE_NEXT]
                ; cmp r9, QWORD [r8 + STAGE_END]
                ; jae =>slow
            );
        }
        // ECX: the byte read or written.
        let (count, unmapped) = if input {
            (Platform::PORT_READS, Platform::UNMAPPED_PORT_READS)
        } else {
            (Platform::PORT_WRITES, Platform::UNMAPPED_PORT_WRITES)
        };
        match (how, input) {
            (InlinePort::Register { value, .. }, true) => {
                asm!(self.ops; movzx ecx, BYTE [rdx + value as i32]);
            }
            (InlinePort::Unmapped, true) => asm!(self.ops; mov ecx, 0xFF),
            (_, false) => {
                self.load(1, self.reg32(EAX), 1);
                asm!(self.ops; movzx ecx, cl);
            }
        }
        asm!(self.ops; add QWORD [rdx + count as i32], 1);
        if how == InlinePort::Unmapped {
            asm!(self.ops; add QWORD [rdx + unmapped as i32], 1);
        }
        if input {
            self.store(self.reg32(EAX), 1, 1);
            self.wrote_index(EAX);
        }
        match (grouped, run) {
            (true, Some(r)) => self.log_in_grouped_entry(r),
            _ if self.logs_io => self.log_port_access(insn, input, port),
            _ => {}
        }
        if let SystemSite::Patch { index, .. } = site {
            asm!(self.ops
                ; mov rax, QWORD [r14 + ENV_PATCH_HITS]
                ; add QWORD [rax + (index * 8) as i32], 1
            );
        }
        // IN and OUT write no flag.
        match (grouped, run) {
            // Where an access of a run refuses, the step logs it after the
            // entry the run's accesses before it completed, and the
            // translation leaves: the accesses after would find no entry
            // to add to.
            (true, Some(r)) if r.len > 1 => {
                let complete = self
                    .open_entry
                    .filter(|_| r.position > 0)
                    .map(|words| words[r.position]);
                if r.position + 1 == r.len {
                    self.open_entry = None;
                }
                self.end_with_cold_leave(index, entry, ways, complete);
            }
            _ => {
                // A lone access's entry is complete.
                self.open_entry = None;
                self.end_with_cold_step(index, entry, None, ways);
            }
        }
    }

    /// At the first access of `run`: whether the run logs as one grouped
    /// entry, which takes the pc as the EIP (CS flat) and a site number
    /// for every prefix of the run, the accesses `past` the icount in R13
    /// by the instructions pending here and their place in the run. Notes
    /// the prefixes' site words for the run's other accesses.
    fn open_grouped_entry(&mut self, run: PortRun) -> bool {
        self.open_entry = None;
        if !self.logs_io || self.flat & super::flat_bit(SegReg::Cs as usize, false) == 0 {
            return false;
        }
        let mut accesses = run.accesses;
        for a in &mut accesses[..run.len] {
            let Some(past) = u16::try_from(self.pending).ok().and_then(|p| p.checked_add(a.past)) else {
                return false;
            };
            a.past = past;
        }
        let mut words = [0; MAX_ACCESSES + 1];
        for n in 1..=run.len {
            match sites::number(&accesses[..n]) {
                Some(number) => words[n] = site_word(number),
                None => return false,
            }
        }
        self.open_entry = Some(words);
        self.grouped_entries[run.len - 1] += 1;
        true
    }

    /// Logs the access `run` places in its grouped entry, its value in ECX:
    /// the first stores the entry at the room's `next` (R9; the stage in
    /// R8), moves `next` on and keeps the entry's address at [RSP]; each
    /// after adds its value; the last (or a lone access) writes the site
    /// word that says how many the entry holds. Three or four stores for a
    /// lone access, one or two for the others, where an entry each took
    /// five.
    fn log_in_grouped_entry(&mut self, run: PortRun) {
        let Some(words) = self.open_entry else {
            unreachable!("a grouped access follows the first of its run")
        };
        let last = run.position + 1 == run.len;
        if run.position == 0 {
            asm!(self.ops
                ; lea rax, [r9 + stage::ENTRY_SIZE as i32]
                ; mov QWORD [r8 + STAGE_NEXT], rax
                ; mov QWORD [r9 + stage::ICOUNT as i32], r13
                ; mov DWORD [r9 + stage::PC as i32], ecx
            );
            if !last {
                asm!(self.ops; mov QWORD [rsp], r9);
            }
        } else {
            asm!(self.ops
                ; mov r9, QWORD [rsp]
                ; mov DWORD [r9 + (stage::PC + 4 * run.position) as i32], ecx
            );
        }
        if last {
            asm!(self.ops; mov DWORD [r9 + stage::SIZE_FLAGS_AND_PAST as i32], words[run.len] as i32);
        }
    }

    /// Stores the port access `inline_port` made, its value in ECX, as an
    /// entry at the room's `next` (R9; the stage in R8) and moves `next` on.
    /// A port loop logs an access every few instructions, so each store
    /// here costs the recording: the icount goes in as R13 with the
    /// instructions past it beside the size and flags, and with CS flat
    /// (checked on entry, no step that may change modes since) the pc is
    /// the EIP, and the pc and port one constant.
    fn log_port_access(&mut self, insn: &Insn, input: bool, port: u8) {
        let flags = u32::from(if input { 0 } else { ENTRY_WRITE });
        // At most the translation's instructions (`assemble` takes no more
        // than 16 bits count).
        debug_assert!(self.pending <= u64::from(u16::MAX));
        let past = self.pending as u16;
        asm!(self.ops
            ; lea rax, [r9 + stage::ENTRY_SIZE as i32]
            ; mov QWORD [r8 + STAGE_NEXT], rax
            ; mov QWORD [r9 + stage::ICOUNT as i32], r13
        );
        if self.flat & super::flat_bit(SegReg::Cs as usize, false) != 0 {
            let pc_and_port = u64::from(insn.ip) | u64::from(port) << 32;
            asm!(self.ops
                ; mov rax, QWORD pc_and_port as i64
                ; mov QWORD [r9 + stage::PC as i32], rax
            );
        } else {
            asm!(self.ops
                ; mov eax, DWORD [r15 + CS_BASE]
                ; add eax, insn.ip as i32
                ; mov DWORD [r9 + stage::PC as i32], eax
                ; mov DWORD [r9 + stage::ADDR as i32], i32::from(port)
            );
        }
        let size_flags_and_past = 1 | flags << 8 | u32::from(past) << 16;
        asm!(self.ops
            ; mov DWORD [r9 + stage::VALUE as i32], ecx
            ; mov DWORD [r9 + stage::SIZE_FLAGS_AND_PAST as i32], size_flags_and_past as i32
        );
    }

    /// Jumps to `to` when an interrupt or an NMI waits for the CPU (what
    /// the block engine's `none_pending` looks at). Inside a translation
    /// neither can come without a step or a deadline ending it first.
    /// Clobbers the host flags and RDX.
    fn jump_if_interrupt_waits(&mut self, to: DynamicLabel) {
        asm!(self.ops
            ; mov rdx, QWORD [r14 + ENV_PLATFORM]
            ; cmp BYTE [rdx + PLATFORM_INTR], 0
            ; jne =>to
            ; cmp BYTE [rdx + PLATFORM_NMI], 0
            ; jne =>to
        );
    }

    /// CALL rel32 at the end of a block: the target checked against the CS
    /// limit before anything is pushed, as the reference does.
    fn call(&mut self, index: usize, insn: &Insn, target: u32) {
        let slow = self.ops.new_dynamic_label();
        self.park_for_edge();
        let entry = self.here();
        asm!(self.ops
            ; cmp DWORD [r15 + CS_LIMIT], target as i32
            ; jb =>slow
        );
        let retry = self.ops.new_dynamic_label();
        asm!(self.ops; =>retry);
        let miss = self.stack_access(true, slow);
        asm!(self.ops; mov DWORD [r8], insn.next_ip as i32);
        self.set_esp_from_ecx();
        self.pending += 1;
        self.exit_to(target);
        self.cold_branch_end(Some(miss), retry, slow, entry, index);
    }

    /// JMP r32 / CALL r32 at the end of a block: the target checked against
    /// the CS limit before anything is pushed; the block engine finds the
    /// block there.
    fn indirect(&mut self, index: usize, insn: &Insn, src: Gpr, call: bool) {
        let slow = self.ops.new_dynamic_label();
        // The exit is a jump table lookup: an edge.
        self.park_for_edge();
        let entry = self.here();
        // EIP takes the target before the push: a step on the slow way
        // sets EIP to its own instruction first.
        let retry = self.ops.new_dynamic_label();
        asm!(self.ops; =>retry);
        self.load(0, self.loc(src, 4), 4);
        asm!(self.ops
            ; cmp eax, DWORD [r15 + CS_LIMIT]
            ; ja =>slow
            ; mov DWORD [r15 + EIP], eax
        );
        let miss = call.then(|| {
            let miss = self.stack_access(true, slow);
            asm!(self.ops; mov DWORD [r8], insn.next_ip as i32);
            self.set_esp_from_ecx();
            miss
        });
        self.pending += 1;
        self.make_edge_state();
        let lookup = self.lookup();
        asm!(self.ops; jmp =>lookup);
        self.cold_branch_end(miss, retry, slow, entry, index);
    }

    /// The cold side of a branch that ends its block: the host slot miss of
    /// its push or pop, if it has one, then its slow way, which steps the
    /// branch and goes back to the block engine.
    fn cold_branch_end(
        &mut self,
        miss: Option<SlotMiss>,
        retry: DynamicLabel,
        slow: DynamicLabel,
        entry: At,
        index: usize,
    ) {
        self.cold(move |e| {
            if let Some(miss) = miss {
                e.slot_missed(miss, None, retry, slow);
            }
            asm!(e.ops; =>slow);
            e.resume(entry);
            e.step_to_end(index);
            asm!(e.ops; mov eax, END as i32; jmp ->epilogue);
        });
    }

    /// RET / RET imm16 at the end of a block: the return address checked
    /// against the CS limit before ESP moves.
    fn ret(&mut self, index: usize, imm: u32) {
        let slow = self.ops.new_dynamic_label();
        self.park_for_edge();
        let entry = self.here();
        let retry = self.ops.new_dynamic_label();
        asm!(self.ops; =>retry);
        let miss = self.stack_access(false, slow);
        let pop = 4 + imm as i32;
        asm!(self.ops
            ; mov r9d, DWORD [r8]
            ; cmp r9d, DWORD [r15 + CS_LIMIT]
            ; ja =>slow
            ; lea ecx, [rcx + pop]
            ; mov DWORD [r15 + EIP], r9d
        );
        self.set_esp_from_ecx();
        self.pending += 1;
        self.make_edge_state();
        let lookup = self.lookup();
        asm!(self.ops; jmp =>lookup);
        self.cold_branch_end(Some(miss), retry, slow, entry, index);
    }

    /// After a host IMUL into EAX (AX): stores the product to the guest
    /// register `dst` and makes the host flags the reference's
    /// (SDM Vol. 2A, IMUL: CF = OF = the product did not fit; SF, ZF and PF
    /// are undefined, and the reference takes them from the truncated
    /// product, with AF clear). The host's own SF, ZF and PF after IMUL are
    /// not trusted: TEST sets them, LAHF/SAHF carry CF, an overflowing add
    /// sets OF.
    fn imul_result(&mut self, size: u8, dst: Gpr) {
        self.store(self.loc(dst, size), 0, size);
        self.wrote(dst);
        self.imul_flags(size);
    }

    /// The flags of [`Emitter::imul_result`], the product in EAX (AX) and
    /// OF the host IMUL's (or the host MUL's: the same rule, SDM Vol. 2B,
    /// MUL).
    fn imul_flags(&mut self, size: u8) {
        if self.flags_dead {
            self.wrote_flags(false);
            return;
        }
        match size {
            4 => asm!(self.ops; seto cl; test eax, eax),
            _ => asm!(self.ops; seto cl; test ax, ax),
        }
        asm!(self.ops
            ; lahf
            ; or ah, cl
            ; add cl, 0x7F
            ; sahf
        );
        self.wrote_flags(true);
    }

    /// The label of the jump table lookup, emitted at the end.
    fn lookup(&mut self) -> DynamicLabel {
        *self.lookup.get_or_insert_with(|| self.ops.new_dynamic_label())
    }

    /// The jump table lookup a dynamic exit ends in, with an edge's state
    /// ([`Emitter::make_edge_state`]) and EIP the target: the slot for that EIP must hold it, in
    /// this block's mode (a near branch changes neither CS nor the view),
    /// at the physical address where CS and the TLB put it now (a TLB miss
    /// or a fetch the privilege forbids goes back to the block engine, as
    /// does any mismatch); then the target's chain entry makes the checks
    /// of every chained entry. Clobbers RAX, RCX, RDX, R8 and R9.
    fn emit_lookup(&mut self, at: DynamicLabel) {
        let miss = self.ops.new_dynamic_label();
        let linear = self.ops.new_dynamic_label();
        asm!(self.ops
            ;=>at
            ; mov eax, DWORD [r15 + EIP]
            ; mov ecx, eax
            ; shr ecx, 12
            ; xor ecx, eax
            ; xor ecx, ((self.mode & 0xFFFF) << super::JUMP_MODE_SHIFT) as i32
            ; and ecx, (JUMP_SLOTS - 1) as i32
            ; shl rcx, JUMP_SLOT_SHIFT
            ; add rcx, QWORD [r14 + ENV_JUMPS]
            ; cmp eax, DWORD [rcx + JS_EIP]
            ; jne =>miss
            ; cmp DWORD [rcx + JS_MODE], self.mode as i32
            ; jne =>miss
            ; add eax, DWORD [r15 + CS_BASE]
            ; mov r8d, eax
            ; cmp DWORD [r14 + M_PAGING], 0
            ; je =>linear
        );
        self.tlb_probe(M_READ_PERMISSIONS, miss);
        asm!(self.ops
            ;=>linear
            ; and r8d, DWORD [r14 + M_A20]
            ; cmp r8d, DWORD [rcx + JS_PHYS]
            ; jne =>miss
            ; jmp QWORD [rcx + JS_ENTRY]
            ;=>miss
        );
        self.end_from_edge();
    }

    /// The operation of a memory instruction on the host address `disp`
    /// bytes past R8;
    /// `Some(logical)` when it wrote the arithmetic flags.
    fn on_memory(&mut self, op: &Op, disp: i32) -> Option<bool> {
        // The read-modify-write forms address [R8] itself (their macros).
        if disp != 0 && matches!(op, Op::AluMR { .. } | Op::AluMI { .. } | Op::AluM { .. }) {
            asm!(self.ops; lea r8, [r8 + disp]);
            return self.on_memory(op, 0);
        }
        match *op {
            Op::MovRM { size, dst, .. } => {
                match (self.loc(dst, size), size) {
                    (Loc::Host(h), 4) => asm!(self.ops; mov Rd(h), DWORD [r8 + disp]),
                    (Loc::Host(h), 2) => asm!(self.ops; mov Rw(h), WORD [r8 + disp]),
                    (Loc::Host(h), _) => asm!(self.ops; mov Rb(h), BYTE [r8 + disp]),
                    (d, _) => {
                        match size {
                            4 => asm!(self.ops; mov eax, DWORD [r8 + disp]),
                            2 => asm!(self.ops; mov ax, WORD [r8 + disp]),
                            _ => asm!(self.ops; mov al, BYTE [r8 + disp]),
                        }
                        self.store(d, 0, size);
                    }
                }
                self.wrote(dst);
                None
            }
            Op::MovxRM {
                signed,
                dsize,
                ssize,
                dst,
                ..
            } => {
                match (signed, ssize) {
                    (false, 1) => asm!(self.ops; movzx eax, BYTE [r8 + disp]),
                    (false, _) => asm!(self.ops; movzx eax, WORD [r8 + disp]),
                    (true, 1) => asm!(self.ops; movsx eax, BYTE [r8 + disp]),
                    (true, _) => asm!(self.ops; movsx eax, WORD [r8 + disp]),
                }
                self.store(self.loc(dst, dsize), 0, dsize);
                self.wrote(dst);
                None
            }
            Op::MovMR { size, src, .. } => {
                self.load(0, self.loc(src, size), size);
                match size {
                    4 => asm!(self.ops; mov DWORD [r8 + disp], eax),
                    2 => asm!(self.ops; mov WORD [r8 + disp], ax),
                    _ => asm!(self.ops; mov BYTE [r8 + disp], al),
                }
                None
            }
            Op::MovMI { size, imm, .. } => {
                match size {
                    4 => asm!(self.ops; mov DWORD [r8 + disp], imm as i32),
                    2 => asm!(self.ops; mov WORD [r8 + disp], imm as i16),
                    _ => asm!(self.ops; mov BYTE [r8 + disp], imm as i8),
                }
                None
            }
            Op::AluRM { op, size, dst, .. } => {
                // The operand into r9, then as AluRR with it as the source.
                match size {
                    4 => asm!(self.ops; mov r9d, DWORD [r8 + disp]),
                    2 => asm!(self.ops; mov r9w, WORD [r8 + disp]),
                    _ => asm!(self.ops; mov r9b, BYTE [r8 + disp]),
                }
                self.load_flags_for(op);
                let d = self.loc(dst, size);
                binary_alu!(op, alu_loc_r9, self.ops, size, d);
                if !matches!(op, AluOp::Cmp | AluOp::Test) {
                    self.wrote(dst);
                }
                Some(op.is_logical())
            }
            Op::SetccM { cc, .. } => {
                self.load_flags();
                by_condition!(set, cc, set_al, self.ops);
                asm!(self.ops; mov BYTE [r8 + disp], al);
                None
            }
            Op::CmovRM { cc, size, dst, .. } => {
                // The operand is read whichever way; the destination is
                // written back unchanged when the condition fails.
                match size {
                    4 => asm!(self.ops; mov r9d, DWORD [r8 + disp]),
                    _ => asm!(self.ops; mov r9w, WORD [r8 + disp]),
                }
                self.load_flags();
                let d = self.loc(dst, size);
                self.load(0, d, size);
                by_condition!(cmov, cc, cmov_from_r9, self.ops, size);
                self.store(d, 0, size);
                self.wrote(dst);
                None
            }
            Op::AluMR { op, size, src, .. } => {
                self.load(9, self.loc(src, size), size);
                self.load_flags_for(op);
                binary_alu!(op, alu_host_r9, self.ops, size);
                Some(op.is_logical())
            }
            Op::AluMI { op, size, imm, .. } => {
                self.load_flags_for(op);
                binary_alu!(op, alu_host_imm, self.ops, size, imm);
                Some(op.is_logical())
            }
            Op::AluM { op, size, .. } => {
                self.load_flags_for(op);
                unary_alu!(op, unary_host, self.ops, size);
                (op != AluOp::Not).then_some(false)
            }
            Op::CmpxchgMR { src, .. } => {
                // The host's CMPXCHG: its EAX is the accumulator, and its
                // flags are CMP's, as the reference's.
                const EAX: u8 = 0;
                self.load(9, self.loc(src, 4), 4);
                self.load(0, self.reg32(EAX), 4);
                asm!(self.ops; cmpxchg DWORD [r8 + disp], r9d);
                self.store(self.reg32(EAX), 0, 4);
                self.wrote_index(EAX);
                Some(false)
            }
            _ => unreachable!("not a memory operation: {op:?}"),
        }
    }

    /// Loads the guest's flags into the host's when `op` reads some (CF
    /// for ADC and SBB; INC and DEC keep it).
    fn load_flags_for(&mut self, op: AluOp) {
        if matches!(op, AluOp::Adc | AluOp::Sbb | AluOp::Inc | AluOp::Dec) {
            self.load_flags();
        }
    }

    fn native(&mut self, op: &Op) {
        match *op {
            Op::Nop => {}
            Op::MovRR { size, dst, src } => {
                match (self.loc(dst, size), self.loc(src, size)) {
                    (Loc::Host(d), Loc::Host(s)) => alu_host_host!(mov, self.ops, size, d, s),
                    (d, s) => {
                        self.load(0, s, size);
                        self.store(d, 0, size);
                    }
                }
                self.wrote(dst);
            }
            Op::MovRI { size, dst, imm } => {
                let d = self.loc(dst, size);
                match (d, size) {
                    (Loc::Slot(at), 4) => asm!(self.ops; mov DWORD [r15 + at], imm as i32),
                    (Loc::Slot(at), 2) => asm!(self.ops; mov WORD [r15 + at], imm as i16),
                    (Loc::Slot(at), _) => asm!(self.ops; mov BYTE [r15 + at], imm as i8),
                    (Loc::Host(h), 4) => asm!(self.ops; mov Rd(h), imm as i32),
                    (Loc::Host(h), 2) => asm!(self.ops; mov Rw(h), imm as i16),
                    (Loc::Host(h), _) => asm!(self.ops; mov Rb(h), imm as i8),
                }
                self.wrote(dst);
            }
            Op::MovxRR {
                signed,
                dsize,
                ssize,
                dst,
                src,
            } => {
                match (self.loc(src, ssize), signed, ssize) {
                    (Loc::Slot(s), false, 1) => asm!(self.ops; movzx eax, BYTE [r15 + s]),
                    (Loc::Slot(s), false, _) => asm!(self.ops; movzx eax, WORD [r15 + s]),
                    (Loc::Slot(s), true, 1) => asm!(self.ops; movsx eax, BYTE [r15 + s]),
                    (Loc::Slot(s), true, _) => asm!(self.ops; movsx eax, WORD [r15 + s]),
                    (Loc::Host(h), false, 1) => asm!(self.ops; movzx eax, Rb(h)),
                    (Loc::Host(h), false, _) => asm!(self.ops; movzx eax, Rw(h)),
                    (Loc::Host(h), true, 1) => asm!(self.ops; movsx eax, Rb(h)),
                    (Loc::Host(h), true, _) => asm!(self.ops; movsx eax, Rw(h)),
                }
                self.store(self.loc(dst, dsize), 0, dsize);
                self.wrote(dst);
            }
            Op::Lea { size, dst, mem } => {
                // LEA computes the address and writes no flag, as the lea in
                // `effective_address` does.
                self.effective_address(mem);
                self.store(self.loc(dst, size), 0, size);
                self.wrote(dst);
            }
            Op::Setcc { cc, dst } => {
                self.load_flags();
                by_condition!(set, cc, set_al, self.ops);
                self.store(self.loc(dst, 1), 0, 1);
                self.wrote(dst);
            }
            Op::MulR { src, .. } => {
                // EDX:EAX = EAX * src, as `muldiv::one_operand`: CF = OF =
                // EDX is not 0 (the host MUL's), SF, ZF and PF from EAX and
                // AF clear (the reference's choice), as after IMUL.
                const EAX: u8 = 0;
                const EDX: u8 = 2;
                self.load(0, self.reg32(EAX), 4);
                match self.loc(src, 4) {
                    Loc::Host(h) => asm!(self.ops; mul Rd(h)),
                    Loc::Slot(at) => asm!(self.ops; mul DWORD [r15 + at]),
                }
                self.store(self.reg32(EAX), 0, 4);
                self.store(self.reg32(EDX), 2, 4);
                self.wrote_index(EAX);
                self.wrote_index(EDX);
                self.imul_flags(4);
            }
            Op::Bswap { dst } => {
                match self.loc(dst, 4) {
                    Loc::Host(h) => asm!(self.ops; bswap Rd(h)),
                    Loc::Slot(at) => asm!(self.ops
                        ; mov eax, DWORD [r15 + at]
                        ; bswap eax
                        ; mov DWORD [r15 + at], eax
                    ),
                }
                self.wrote(dst);
            }
            Op::XchgRR { size, a, b } => {
                match (self.loc(a, size), self.loc(b, size), size) {
                    (Loc::Host(x), Loc::Host(y), 4) => asm!(self.ops; xchg Rd(x), Rd(y)),
                    (la, lb, _) => {
                        // Both read before either is written: AH..BH and
                        // their 16- and 32-bit registers may share a slot.
                        self.load(0, la, size);
                        self.load(1, lb, size);
                        self.store(la, 1, size);
                        self.store(lb, 0, size);
                    }
                }
                self.wrote(a);
                self.wrote(b);
            }
            Op::CmovRR { cc, size, dst, src } => {
                // The destination is written back whichever way: unchanged
                // when the condition fails, as the reference leaves it.
                self.load_flags();
                let (d, s) = (self.loc(dst, size), self.loc(src, size));
                self.load(0, d, size);
                by_condition!(cmov, cc, cmov_from_loc, self.ops, size, s);
                self.store(d, 0, size);
                self.wrote(dst);
            }
            Op::ImulRR { size, dst, src } => match (self.loc(dst, size), self.loc(src, size), size) {
                (Loc::Host(d), Loc::Host(s), 4) => {
                    asm!(self.ops; imul Rd(d), Rd(s));
                    self.wrote(dst);
                    if !self.flags_dead {
                        asm!(self.ops; mov eax, Rd(d));
                    }
                    self.imul_flags(4);
                }
                (d, s, _) => {
                    self.load(0, d, size);
                    match (s, size) {
                        (Loc::Slot(s), 4) => asm!(self.ops; imul eax, DWORD [r15 + s]),
                        (Loc::Slot(s), _) => asm!(self.ops; imul ax, WORD [r15 + s]),
                        (Loc::Host(h), 4) => asm!(self.ops; imul eax, Rd(h)),
                        (Loc::Host(h), _) => asm!(self.ops; imul ax, Rw(h)),
                    }
                    self.imul_result(size, dst);
                }
            },
            Op::ImulRRI { size, dst, src, imm } => {
                match (self.loc(src, size), size) {
                    (Loc::Slot(s), 4) => asm!(self.ops; imul eax, DWORD [r15 + s], imm as i32),
                    (Loc::Slot(s), _) => asm!(self.ops; imul ax, WORD [r15 + s], imm as i16),
                    (Loc::Host(h), 4) => asm!(self.ops; imul eax, Rd(h), imm as i32),
                    (Loc::Host(h), _) => asm!(self.ops; imul ax, Rw(h), imm as i16),
                }
                self.imul_result(size, dst);
            }
            Op::AluRR { op, size, dst, src } => {
                if self.flags_dead && matches!(op, AluOp::Cmp | AluOp::Test) {
                    return;
                }
                self.load_flags_for(op);
                match (self.loc(dst, size), self.loc(src, size)) {
                    (Loc::Host(d), Loc::Host(s)) => binary_alu!(op, alu_host_host, self.ops, size, d, s),
                    (d, s) => {
                        self.load(0, s, size);
                        binary_alu!(op, alu_loc_eax, self.ops, size, d);
                    }
                }
                if !matches!(op, AluOp::Cmp | AluOp::Test) {
                    self.wrote(dst);
                }
                self.wrote_flags(op.is_logical());
            }
            Op::AluRI { op, size, dst, imm } => {
                if self.flags_dead && matches!(op, AluOp::Cmp | AluOp::Test) {
                    return;
                }
                let d = self.loc(dst, size);
                self.load_flags_for(op);
                binary_alu!(op, alu_loc_imm, self.ops, size, d, imm);
                if !matches!(op, AluOp::Cmp | AluOp::Test) {
                    self.wrote(dst);
                }
                self.wrote_flags(op.is_logical());
            }
            Op::AluR { op, size, dst } => {
                let d = self.loc(dst, size);
                self.load_flags_for(op);
                unary_alu!(op, unary_loc, self.ops, size, d);
                self.wrote(dst);
                if op != AluOp::Not {
                    self.wrote_flags(false);
                }
            }
            Op::ShiftRI { op, size, dst, count } => {
                // A masked count of 0 changes nothing, flags included.
                let count = count & 0x1F;
                if count == 0 {
                    return;
                }
                let d = self.loc(dst, size);
                let rotate = matches!(op, ShiftOp::Rol | ShiftOp::Ror);
                if rotate {
                    // Only CF and OF change: the others come from the guest.
                    self.load_flags();
                }
                // A rotate keeps AF, which may be the host's undefined one
                // after a logical operation (the guest's is clear then).
                let clear_af = !rotate || self.flags.clear_af;
                let c = count as i8;
                match (op, d, size) {
                    (ShiftOp::Shl, Loc::Slot(at), 4) => asm!(self.ops; shl DWORD [r15 + at], c),
                    (ShiftOp::Shr, Loc::Slot(at), 4) => asm!(self.ops; shr DWORD [r15 + at], c),
                    (ShiftOp::Sar, Loc::Slot(at), 4) => asm!(self.ops; sar DWORD [r15 + at], c),
                    (ShiftOp::Rol, Loc::Slot(at), _) => asm!(self.ops; rol DWORD [r15 + at], c),
                    (ShiftOp::Ror, Loc::Slot(at), _) => asm!(self.ops; ror DWORD [r15 + at], c),
                    (ShiftOp::Shl, Loc::Slot(at), 2) => asm!(self.ops; shl WORD [r15 + at], c),
                    (ShiftOp::Shr, Loc::Slot(at), 2) => asm!(self.ops; shr WORD [r15 + at], c),
                    (ShiftOp::Sar, Loc::Slot(at), 2) => asm!(self.ops; sar WORD [r15 + at], c),
                    (ShiftOp::Shl, Loc::Slot(at), _) => asm!(self.ops; shl BYTE [r15 + at], c),
                    (ShiftOp::Shr, Loc::Slot(at), _) => asm!(self.ops; shr BYTE [r15 + at], c),
                    (_, Loc::Slot(at), _) => asm!(self.ops; sar BYTE [r15 + at], c),
                    (ShiftOp::Shl, Loc::Host(h), 4) => asm!(self.ops; shl Rd(h), c),
                    (ShiftOp::Shr, Loc::Host(h), 4) => asm!(self.ops; shr Rd(h), c),
                    (ShiftOp::Sar, Loc::Host(h), 4) => asm!(self.ops; sar Rd(h), c),
                    (ShiftOp::Rol, Loc::Host(h), _) => asm!(self.ops; rol Rd(h), c),
                    (ShiftOp::Ror, Loc::Host(h), _) => asm!(self.ops; ror Rd(h), c),
                    (ShiftOp::Shl, Loc::Host(h), 2) => asm!(self.ops; shl Rw(h), c),
                    (ShiftOp::Shr, Loc::Host(h), 2) => asm!(self.ops; shr Rw(h), c),
                    (ShiftOp::Sar, Loc::Host(h), 2) => asm!(self.ops; sar Rw(h), c),
                    (ShiftOp::Shl, Loc::Host(h), _) => asm!(self.ops; shl Rb(h), c),
                    (ShiftOp::Shr, Loc::Host(h), _) => asm!(self.ops; shr Rb(h), c),
                    (_, Loc::Host(h), _) => asm!(self.ops; sar Rb(h), c),
                }
                self.wrote(dst);
                if count > 1 && !self.flags_dead {
                    self.fix_overflow_after_shift(op, d);
                }
                // SHL, SHR, SAR: SF, ZF and PF from the result, AF cleared
                // (undefined); ROL, ROR: AF as it was.
                self.wrote_flags(clear_af);
            }
            Op::ShiftRCl { op, dst, .. } => {
                // The shift is as by a constant, OF as the reference has
                // it for the count.
                let d = self.loc(dst, 4);
                let done = self.count_from_cl();
                match (op, d) {
                    (ShiftOp::Shl, Loc::Slot(at)) => asm!(self.ops; shl DWORD [r15 + at], cl),
                    (ShiftOp::Shr, Loc::Slot(at)) => asm!(self.ops; shr DWORD [r15 + at], cl),
                    (_, Loc::Slot(at)) => asm!(self.ops; sar DWORD [r15 + at], cl),
                    (ShiftOp::Shl, Loc::Host(h)) => asm!(self.ops; shl Rd(h), cl),
                    (ShiftOp::Shr, Loc::Host(h)) => asm!(self.ops; shr Rd(h), cl),
                    (_, Loc::Host(h)) => asm!(self.ops; sar Rd(h), cl),
                }
                self.wrote(dst);
                match op {
                    ShiftOp::Shr => {
                        // The host's OF (MSB of the operand) is the
                        // reference's for a count of 1; past it, clear.
                        asm!(self.ops
                            ; seto r9b
                            ; lahf
                            ; cmp ecx, 1
                            ; sete dl
                            ; and dl, r9b
                            ; add dl, 0x7F
                            ; sahf
                        );
                    }
                    // For SHL and SAR the reference's OF past one bit is what
                    // it is at one bit.
                    _ => self.fix_overflow_after_shift(op, d),
                }
                self.wrote_flags(true);
                self.store_flags();
                self.flags.in_host = false;
                asm!(self.ops; =>done);
            }
            Op::DshiftRR {
                left,
                size,
                dst,
                src,
                count: Some(count),
            } => {
                debug_assert_eq!(size, 4, "only 32-bit SHLD/SHRD are native");
                // A masked count of 0 changes nothing, flags included.
                let count = count & 0x1F;
                if count == 0 {
                    return;
                }
                let d = self.loc(dst, 4);
                let s = self.in_host_register(src);
                let fix = count > 1 && !self.flags_dead;
                if fix {
                    self.load(2, d, 4);
                }
                self.double_shift(left, d, s, Some(count as i8));
                self.wrote(dst);
                if fix {
                    self.fix_overflow_after_double_shift(d);
                }
                self.wrote_flags(true);
            }
            Op::DshiftRR {
                left,
                size,
                dst,
                src,
                count: None,
            } => {
                debug_assert_eq!(size, 4, "only 32-bit SHLD/SHRD are native");
                let d = self.loc(dst, 4);
                let s = self.in_host_register(src);
                let done = self.count_from_cl();
                self.load(2, d, 4);
                self.double_shift(left, d, s, None);
                self.wrote(dst);
                // By one bit the host's OF is the reference's; the fix-up
                // makes it again.
                self.fix_overflow_after_double_shift(d);
                self.wrote_flags(true);
                self.store_flags();
                self.flags.in_host = false;
                asm!(self.ops; =>done);
            }
            _ => unreachable!("not a native operation: {op:?}"),
        }
    }

    /// The start of a shift by CL, whose count is known only at run time:
    /// the guest's flags stored (both ways end with them in memory), ECX =
    /// CL masked to 5 bits, and a jump to the returned label, for the
    /// caller to place after the shift, when that is 0 (which changes
    /// nothing, flags included).
    fn count_from_cl(&mut self) -> DynamicLabel {
        self.store_flags();
        self.flags.in_host = false;
        match self.reg32(1) {
            Loc::Slot(at) => asm!(self.ops; movzx ecx, BYTE [r15 + at]),
            Loc::Host(h) => asm!(self.ops; movzx ecx, Rb(h)),
        }
        let done = self.ops.new_dynamic_label();
        asm!(self.ops
            ; and ecx, 0x1F
            ; jz =>done
        );
        done
    }

    /// The host register holding guest register `g` (32 bits): its cache,
    /// or R9 loaded from `CpuState`.
    fn in_host_register(&mut self, g: Gpr) -> u8 {
        match self.loc(g, 4) {
            Loc::Host(h) => h,
            Loc::Slot(at) => {
                asm!(self.ops; mov r9d, DWORD [r15 + at]);
                9
            }
        }
    }

    /// SHLD (`left`) or SHRD of `d` with bits from host register `s`, by
    /// `count` or by CL.
    fn double_shift(&mut self, left: bool, d: Loc, s: u8, count: Option<i8>) {
        match (left, d, count) {
            (true, Loc::Slot(at), Some(c)) => asm!(self.ops; shld DWORD [r15 + at], Rd(s), c),
            (true, Loc::Host(h), Some(c)) => asm!(self.ops; shld Rd(h), Rd(s), c),
            (false, Loc::Slot(at), Some(c)) => asm!(self.ops; shrd DWORD [r15 + at], Rd(s), c),
            (false, Loc::Host(h), Some(c)) => asm!(self.ops; shrd Rd(h), Rd(s), c),
            (true, Loc::Slot(at), None) => asm!(self.ops; shld DWORD [r15 + at], Rd(s), cl),
            (true, Loc::Host(h), None) => asm!(self.ops; shld Rd(h), Rd(s), cl),
            (false, Loc::Slot(at), None) => asm!(self.ops; shrd DWORD [r15 + at], Rd(s), cl),
            (false, Loc::Host(h), None) => asm!(self.ops; shrd Rd(h), Rd(s), cl),
        }
    }

    /// OF after SHLD or SHRD of the register at `d` by more than one bit,
    /// where the host's is undefined, as the reference makes it: whether the
    /// sign changed, from the value before in EDX. SAHF puts back all the
    /// other flags; RAX and RDX are clobbered.
    fn fix_overflow_after_double_shift(&mut self, d: Loc) {
        asm!(self.ops; lahf);
        match d {
            Loc::Slot(at) => asm!(self.ops; xor edx, DWORD [r15 + at]),
            Loc::Host(h) => asm!(self.ops; xor edx, Rd(h)),
        }
        asm!(self.ops
            ; shr edx, 31
            ; add dl, 0x7F
            ; sahf
        );
    }

    /// OF after a shift or rotate of the register at `d` by more than one
    /// bit, where the host's is undefined, as the reference makes it: for
    /// SHL MSB(result) XOR CF, for SHR and SAR clear, for ROL MSB(result)
    /// XOR CF, for ROR the XOR of the result's two top bits (32-bit). SAHF
    /// puts back all the other flags; RAX, RCX and RDX are clobbered.
    fn fix_overflow_after_shift(&mut self, op: ShiftOp, d: Loc) {
        match op {
            ShiftOp::Shl => asm!(self.ops
                ; lahf
                ; mov al, ah
                ; shr al, 7
                ; xor al, ah
                ; and al, 1
                ; add al, 0x7F
                ; sahf
            ),
            ShiftOp::Rol => {
                asm!(self.ops; lahf);
                self.load(2, d, 4);
                asm!(self.ops
                ; shr edx, 31
                ; xor dl, ah
                ; and dl, 1
                ; add dl, 0x7F
                ; sahf
                )
            }
            ShiftOp::Ror => {
                asm!(self.ops; lahf);
                self.load(2, d, 4);
                asm!(self.ops
                ; mov ecx, edx
                ; shr ecx, 1
                ; xor edx, ecx
                ; shr edx, 30
                ; and dl, 1
                ; add dl, 0x7F
                ; sahf
                )
            }
            _ => asm!(self.ops
                ; lahf
                ; cmp al, al
                ; sahf
            ),
        }
    }

    /// `jcc =>label` for condition `cc` (the low nibble of the opcode).
    fn jump_if(&mut self, cc: u8, label: DynamicLabel) {
        match cc & 15 {
            0 => asm!(self.ops; jo =>label),
            1 => asm!(self.ops; jno =>label),
            2 => asm!(self.ops; jb =>label),
            3 => asm!(self.ops; jae =>label),
            4 => asm!(self.ops; je =>label),
            5 => asm!(self.ops; jne =>label),
            6 => asm!(self.ops; jbe =>label),
            7 => asm!(self.ops; ja =>label),
            8 => asm!(self.ops; js =>label),
            9 => asm!(self.ops; jns =>label),
            10 => asm!(self.ops; jp =>label),
            11 => asm!(self.ops; jnp =>label),
            12 => asm!(self.ops; jl =>label),
            13 => asm!(self.ops; jge =>label),
            14 => asm!(self.ops; jle =>label),
            _ => asm!(self.ops; jg =>label),
        }
    }
}

/// A block's translation as assembled.
pub struct Assembled {
    pub bytes: Vec<u8>,
    /// Where another translation may jump in (see [`Shape::chain_entry`]).
    pub chain_entry: Option<usize>,
    /// Chainable exits: offset of the jump's displacement, and its EIP.
    pub exits: Vec<(usize, u32)>,
    /// Groups of memory operands checked once ([`MemGroup`]).
    pub groups: u32,
    /// Runs of port accesses logged as grouped entries, by their length
    /// less one ([`port_runs`]).
    pub grouped_entries: [u32; MAX_ACCESSES],
}

/// The sensitive instruction `insn` is compiled as, if any.
fn system_op_of(insn: &Insn) -> Option<(SystemOp, SystemSite)> {
    insn.system_op.filter(|(_, site)| match *site {
        SystemSite::True => true,
        SystemSite::Patch { index, .. } => index < MAX_COMPILED_PATCH,
    })
}

/// Whether `insn` runs as host code (when its inline way is taken).
fn runs_as_host(insn: &Insn) -> bool {
    (insn.plain && is_native(&insn.op)) || system_op_of(insn).is_some()
}

/// Calls `use_reg(index, high_byte)` for each guest register operand of
/// `op`, compiled as host code, addresses and the stack pointer included.
fn registers_of(op: &Op, use_reg: &mut impl FnMut(u8, bool)) {
    let mut gpr = |g: Gpr, size: u8| use_reg(g.index(), g.is_high_byte(size));
    match *op {
        Op::MovRR { size, dst, src }
        | Op::AluRR { size, dst, src, .. }
        | Op::CmovRR { size, dst, src, .. }
        | Op::ImulRR { size, dst, src }
        | Op::ImulRRI { size, dst, src, .. } => {
            gpr(dst, size);
            gpr(src, size);
        }
        Op::MovxRR {
            dsize, ssize, dst, src, ..
        } => {
            gpr(dst, dsize);
            gpr(src, ssize);
        }
        Op::MovRI { size, dst, .. } | Op::AluRI { size, dst, .. } | Op::AluR { size, dst, .. } => gpr(dst, size),
        Op::ShiftRI { size, dst, .. } => gpr(dst, size),
        Op::ShiftRCl { size, dst, .. } => {
            gpr(dst, size);
            use_reg(1, false);
        }
        Op::DshiftRR {
            size, dst, src, count, ..
        } => {
            gpr(dst, size);
            gpr(src, size);
            if count.is_none() {
                use_reg(1, false);
            }
        }
        Op::Setcc { dst, .. } => gpr(dst, 1),
        Op::Bswap { dst } => gpr(dst, 4),
        Op::MulR { size, src } => {
            gpr(src, size);
            use_reg(0, false);
            use_reg(2, false);
        }
        Op::XchgRR { size, a, b } => {
            gpr(a, size);
            gpr(b, size);
        }
        Op::Lea { size, dst, mem } => {
            gpr(dst, size);
            address_registers(mem, use_reg);
        }
        Op::PushR { src, .. } => {
            gpr(src, 4);
            use_reg(4, false);
        }
        Op::PopR { dsize, dst, .. } => {
            gpr(dst, dsize);
            use_reg(4, false);
        }
        Op::PushI { .. } | Op::CallRel { .. } | Op::Ret { .. } => use_reg(4, false),
        Op::PushM { mem, .. } => {
            address_registers(mem, use_reg);
            use_reg(4, false);
        }
        Op::Leave { .. } => {
            use_reg(4, false);
            use_reg(5, false);
        }
        Op::DivR { size, src } => {
            gpr(src, size);
            use_reg(0, false);
            use_reg(2, false);
        }
        Op::DivM { mem, .. } => {
            address_registers(mem, use_reg);
            use_reg(0, false);
            use_reg(2, false);
        }
        Op::Rdtsc => {
            use_reg(0, false);
            use_reg(2, false);
        }
        Op::Str { op, .. } => {
            if matches!(op, StrOp::Movs | StrOp::Lods | StrOp::Cmps) {
                use_reg(6, false);
            }
            if op != StrOp::Lods {
                use_reg(7, false);
            }
            if matches!(op, StrOp::Stos | StrOp::Lods | StrOp::Scas) {
                use_reg(0, false);
            }
        }
        Op::JmpR { src, .. } => gpr(src, 4),
        Op::CallR { src, .. } => {
            gpr(src, 4);
            use_reg(4, false);
        }
        Op::MovRM { size, dst, mem } | Op::AluRM { size, dst, mem, .. } | Op::CmovRM { size, dst, mem, .. } => {
            gpr(dst, size);
            address_registers(mem, use_reg);
        }
        Op::MovxRM { dsize, dst, mem, .. } => {
            gpr(dst, dsize);
            address_registers(mem, use_reg);
        }
        Op::MovMR { size, src, mem } | Op::AluMR { size, src, mem, .. } => {
            gpr(src, size);
            address_registers(mem, use_reg);
        }
        Op::CmpxchgMR { size, src, mem } => {
            gpr(src, size);
            use_reg(0, false);
            address_registers(mem, use_reg);
        }
        Op::MovMI { mem, .. } | Op::AluMI { mem, .. } | Op::AluM { mem, .. } | Op::SetccM { mem, .. } => {
            address_registers(mem, use_reg)
        }
        _ => {}
    }
}

fn address_registers(mem: MemRef, use_reg: &mut impl FnMut(u8, bool)) {
    if let Some((base, index, ..)) = mem.parts32() {
        base.into_iter().chain(index).for_each(|r| use_reg(r, false));
    }
}

/// Where the translation of `insns` keeps the guest registers: the
/// [`CANONICAL`] ones in their host registers, but for those whose AH..BH
/// is an operand (no encoding beside the host registers that cache); a
/// host register that holds such a register, or one the block never
/// uses, lent to ECX or EDI where its host code uses it more than twice
/// and more often than its steps (which write it back and load it again),
/// once being enough in a block that loops on itself. Returns the plan,
/// the parted canonical registers and the borrowers.
fn cache_plan(insns: &[Insn], self_loop: bool) -> ([Option<u8>; 8], u8, u8) {
    let mut uses = [0u32; 8];
    let mut high = [false; 8];
    let mut steps = 0;
    for insn in insns {
        match system_op_of(insn) {
            Some((SystemOp::Pushfd | SystemOp::Popfd, _)) => uses[4] += 1,
            Some((
                SystemOp::Port {
                    port: Some(_),
                    inline: Some(_),
                    size: 1,
                    ..
                },
                _,
            )) => uses[0] += 1,
            Some((SystemOp::Port { .. }, _)) => steps += 1,
            Some(_) => {}
            None if runs_as_host(insn) => registers_of(&insn.op, &mut |r, is_high| {
                uses[usize::from(r & 7)] += 1;
                high[usize::from(r & 7)] |= is_high;
            }),
            None => steps += 1,
        }
    }
    let mut plan = [None; 8];
    let mut parted = 0u8;
    let mut lendable = Vec::new();
    for (r, h) in CANONICAL.into_iter().enumerate() {
        let Some(h) = h else { continue };
        if high[r] {
            parted |= 1 << r;
            lendable.push((r, h));
        } else {
            plan[r] = Some(h);
            if uses[r] == 0 {
                lendable.push((r, h));
            }
        }
    }
    let least = if self_loop { 1 } else { 3 };
    let mut borrowers: Vec<usize> = (0..8)
        .filter(|&r| CANONICAL[r].is_none() && !high[r] && uses[r] >= least && uses[r] > steps)
        .collect();
    borrowers.sort_by_key(|&r| std::cmp::Reverse(uses[r]));
    let mut borrowed = 0u8;
    for (r, (lender, h)) in borrowers.into_iter().zip(lendable) {
        plan[lender] = None;
        parted |= 1 << lender;
        plan[r] = Some(h);
        borrowed |= 1 << r;
    }
    (plan, parted, borrowed)
}

/// Assembles the translation of `shape` for address `base`. `None` when no
/// instruction would run as host code: the interpreter does as well.
pub fn assemble(shape: &Shape<'_>, base: usize, logs_io: bool) -> Option<Assembled> {
    let insns = shape.insns;
    // A logged port access stores the instructions past R13 in 16 bits
    // (blocks are far shorter).
    if insns.len() > usize::from(u16::MAX) {
        return None;
    }
    // Worth it only when host code outweighs the steps: a step from a
    // translation costs more than the interpreter's own.
    let host = insns.iter().filter(|i| runs_as_host(i)).count();
    let useful = insns
        .iter()
        .filter(|i| runs_as_host(i) && !matches!(i.op, Op::Nop))
        .count();
    if useful == 0 || insns.len() - host > host {
        return None;
    }
    let first_ip = insns.first()?.ip;
    let within = |target: u32| target.wrapping_sub(first_ip) < shape.extent;
    // A block with no step that branches to its own start loops here while
    // the icount budget lasts and no slow memory access stepped: nothing
    // but the icount changes what the block engine checks between runs.
    let pure = insns.iter().all(runs_as_host);
    let loops_on_itself = pure
        && insns
            .last()
            .is_some_and(|i| matches!(i.op, Op::Jcc { target, .. } | Op::JmpRel { target } if target == first_ip));
    let plan = cache_plan(insns, loops_on_itself);
    // Room for a typical translation, so that it is not grown piece by
    // piece (allocation was a tenth of compiling).
    let mut ops = VecAssembler::<X64Relocation>::new_with_capacity(base, 1024 + 160 * insns.len(), 0, 8, 64, 8, 128);
    let leave = ops.new_dynamic_label();
    let top = ops.new_dynamic_label();
    let mut e = Emitter {
        ops,
        logs_io,
        flags: Flags {
            in_host: false,
            parked: false,
            dirty: false,
            clear_af: false,
        },
        pending: 0,
        cached: plan.0,
        parted: plan.1,
        borrowed: plan.2,
        dirty: 0,
        leave,
        slot: shape.slot,
        first_ip,
        page_offset: shape.phys & 0xFFF,
        exits: Vec::new(),
        mode: shape.mode | shape.flat << 16,
        lookup: None,
        edge_end: None,
        cold: Vec::new(),
        needs_virtual_if: shape.needs_virtual_if,
        changes_if: insns.iter().any(|i| {
            matches!(
                system_op_of(i),
                Some((SystemOp::Cli | SystemOp::Sti | SystemOp::Popfd, _))
            )
        }),
        flat: shape.flat,
        flags_dead: false,
        groups: shape.groups,
        group: None,
        group_after_first: None,
        port_runs: port_runs(insns),
        open_entry: None,
        grouped_entries: [0; MAX_ACCESSES],
    };
    let dead = dead_flags(insns);
    // Six registers saved and eight bytes more keep the stack aligned for
    // the calls.
    asm!(e.ops
        ; push r15
        ; push r14
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; sub rsp, 8
        ; mov r15, rdi
        ; mov r14, rsi
    );
    // Every top takes the flags parked, the icount in R13 and the canonical
    // registers in their host registers: edges between translations carry
    // them.
    e.park_from_memory();
    e.reload_icount();
    e.load_edge_registers();
    asm!(e.ops; jmp =>top);
    // Entered from another translation's exit, in its frame, with an edge's
    // state at this block's start: it goes on only if no step ran since
    // the block engine last looked (so nothing it checks between blocks can
    // have changed but the icount), the whole block fits before the
    // deadline and CS admits all of it, as on entry from the block engine.
    // Such a step sets the stop to 0: one compare checks both.
    let chain_entry = shape.chain_last.map(|last| {
        let at = e.ops.offset().0;
        let n = insns.len() as i32;
        let refuse = e.ops.new_dynamic_label();
        let at_edge = e.here();
        e.cold(move |e| {
            asm!(e.ops; =>refuse);
            e.resume(at_edge);
            // Back to the block engine with the state the edge carried, and
            // this block's EIP (a linked exit leaves it behind).
            asm!(e.ops; mov DWORD [r15 + EIP], first_ip as i32);
            e.end_from_edge();
        });
        asm!(e.ops
            ; lea rax, [r13 + n]
            ; cmp rax, QWORD [r14 + ENV_STOP]
            ; ja =>refuse
        );
        // A translation that takes CS as flat is entered only from one
        // that took it so too, with no step that may change modes since:
        // its limit is 4 GiB.
        if shape.flat & super::flat_bit(SegReg::Cs as usize, false) == 0 {
            asm!(e.ops
                ; cmp DWORD [r15 + CS_LIMIT], last as i32
                ; jb =>refuse
            );
        }
        if shape.needs_virtual_if {
            asm!(e.ops
                ; test DWORD [r15 + VIRTUAL_FLAGS], flags::IF as i32
                ; jz =>refuse
            );
        }
        asm!(e.ops; add QWORD [r14 + ENV_CHAINED], 1);
        at
    });
    asm!(e.ops; =>top);
    e.flags = Flags::AT_TOP;
    e.enter_body();
    let body = e.ops.new_dynamic_label();
    asm!(e.ops; =>body);
    if loops_on_itself {
        // Its branch back leaves the registers it changed in their host
        // registers; taken as changed from here on, every way out writes
        // them back.
        e.dirty = e
            .cached
            .iter()
            .enumerate()
            .filter(|(_, h)| h.is_some())
            .fold(0, |m, (i, _)| m | 1 << i);
    }
    let n = insns.len();
    let mut groups = 0;
    for (i, insn) in insns.iter().enumerate() {
        let last = i + 1 == n;
        debug_assert!(
            e.open_entry.is_none() || e.port_runs[i].is_some() || register_only(insn),
            "a grouped entry stays open only across register instructions"
        );
        if e.group.is_some_and(|g| i > g.last) {
            e.group = None;
        }
        if e.groups && e.group.is_none() {
            if let Some(g) = find_group(insns, i, e.flat) {
                e.group_check(g, insn);
                e.group = Some(g);
                groups += 1;
            }
        }
        if let Some((
            SystemOp::Port {
                input,
                port: Some(port),
                inline: Some(how),
                size: 1,
            },
            site,
        )) = system_op_of(insn)
        {
            e.inline_port(i, insn, input, port, how, site);
            if last {
                e.exit_to(insn.next_ip);
            }
            continue;
        }
        if let Some((SystemOp::Port { input, size, port, .. }, _)) = system_op_of(insn) {
            e.call_helper(i, ENV_PORT, Some(super::pack_port(input, size, port)));
            if last {
                asm!(e.ops; mov eax, END as i32; jmp ->epilogue);
            } else {
                e.reload();
            }
            continue;
        }
        if let Some((op, site)) = system_op_of(insn) {
            e.system_op(i, op, site, last);
            if last {
                e.exit_to(insn.next_ip);
            }
            continue;
        }
        if !(insn.plain && is_native(&insn.op)) {
            if last {
                e.step_to_end(i);
                // The step moved EIP on and counted the instruction; after
                // a near branch the target may be found in the jump table.
                let near = matches!(
                    insn.op,
                    Op::Ret { .. }
                        | Op::JmpM { .. }
                        | Op::CallM { .. }
                        | Op::JmpR { .. }
                        | Op::CallR { .. }
                        | Op::JmpRel { .. }
                        | Op::CallRel { .. }
                        | Op::Jcc { .. }
                );
                if insn.plain && near {
                    e.park_for_edge();
                    // The step wrote `CpuState`: the edge takes the
                    // canonical registers from there.
                    e.load_edge_registers();
                    let lookup = e.lookup();
                    asm!(e.ops; jmp =>lookup);
                } else {
                    asm!(e.ops; mov eax, END as i32; jmp ->epilogue);
                }
            } else {
                e.step(i);
                if insn.changes_modes {
                    // The segments may be others now.
                    e.flat = 0;
                }
            }
            continue;
        }
        match insn.op {
            Op::Jcc { cc, target } => {
                debug_assert!(last, "a branch ends its block");
                e.load_flags();
                let self_loop = (loops_on_itself && target == first_ip).then_some(n);
                if self_loop.is_some() {
                    // The loop goes round straight through: its way out is
                    // the jump (cc ^ 1 is the opposite condition).
                    let not_taken = e.ops.new_dynamic_label();
                    e.jump_if(cc ^ 1, not_taken);
                    let at_not_taken = e.here();
                    branch_taken(&mut e, i, target, within(target), self_loop, body);
                    asm!(e.ops; =>not_taken);
                    e.resume(at_not_taken);
                    e.pending += 1;
                    e.exit_to(insn.next_ip);
                } else {
                    let taken = e.ops.new_dynamic_label();
                    e.jump_if(cc, taken);
                    let at_taken = e.here();
                    e.pending += 1;
                    e.exit_to(insn.next_ip);
                    asm!(e.ops; =>taken);
                    e.resume(at_taken);
                    branch_taken(&mut e, i, target, within(target), None, body);
                }
            }
            Op::JmpRel { target } => {
                branch_taken(
                    &mut e,
                    i,
                    target,
                    within(target),
                    (loops_on_itself && target == first_ip).then_some(n),
                    body,
                );
            }
            Op::CallRel { target, .. } => e.call(i, insn, target),
            Op::Ret { imm, .. } => e.ret(i, imm),
            Op::JmpR { src, .. } => e.indirect(i, insn, src, false),
            Op::CallR { src, .. } => e.indirect(i, insn, src, true),
            Op::Str { op, size, src, .. } => {
                e.string(i, op, size, src);
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
            Op::PushM { mem, .. } => {
                e.push_memory(i, mem);
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
            Op::Leave { .. } => {
                e.leave(i);
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
            Op::Rdtsc => {
                e.rdtsc(i);
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
            Op::DivR { .. } | Op::DivM { .. } => {
                e.divide(i, &insn.op);
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
            Op::PushR { .. } | Op::PushI { .. } | Op::PopR { .. } => {
                e.stack(i, &insn.op);
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
            _ if memory_access(&insn.op).is_some() => {
                match e.group.filter(|g| i < 64 && g.members & (1 << i) != 0) {
                    Some(g) => e.group_member(i, insn, g),
                    None => e.memory(i, insn),
                }
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
            _ => {
                e.flags_dead = dead[i];
                e.native(&insn.op);
                e.flags_dead = false;
                e.pending += 1;
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
        }
    }
    // Cold code may add more (none does today).
    while !e.cold.is_empty() {
        for f in std::mem::take(&mut e.cold) {
            f(&mut e);
        }
    }
    if let Some(at) = e.lookup {
        e.emit_lookup(at);
    }
    if let Some(at) = e.edge_end {
        e.emit_edge_end(at);
    }
    asm!(e.ops
        ;=>leave
        ; mov eax, LEAVE as i32
        ;->epilogue:
        ; add rsp, 8
        ; pop r13
        ; pop r12
        ; pop rbp
        ; pop rbx
        ; pop r14
        ; pop r15
        ; ret
    );
    let exits = std::mem::take(&mut e.exits);
    let grouped_entries = e.grouped_entries;
    Some(Assembled {
        bytes: e.ops.finalize().ok()?,
        chain_entry,
        exits,
        groups,
        grouped_entries,
    })
}

/// The taken side of a branch at instruction `index`: the CS limit check
/// the reference makes (a target outside it faults at the branch, so the
/// step runs the branch), then the next run of a self-loop or the exit.
/// `self_loop`: the block's length, when it may run again here.
fn branch_taken(
    e: &mut Emitter,
    index: usize,
    target: u32,
    within: bool,
    self_loop: Option<usize>,
    body: DynamicLabel,
) {
    // The CS limit check and the loop's checks clobber the host flags.
    e.park_for_edge();
    if !within {
        let outside = e.ops.new_dynamic_label();
        asm!(e.ops
            ; cmp DWORD [r15 + CS_LIMIT], target as i32
            ; jb =>outside
        );
        e.flags.in_host = false;
        let saved = e.here();
        e.cold(move |e| {
            asm!(e.ops; =>outside);
            e.resume(saved);
            e.step_to_end(index);
            asm!(e.ops; mov eax, END as i32; jmp ->epilogue);
        });
    }
    e.pending += 1;
    if let Some(n) = self_loop {
        // Another run fits the budget when icount + n <= stop. It starts
        // after the top's moves of parted and borrowed registers: the host
        // registers hold the guest's.
        // The flags go round parked in EBX, as the top leaves them.
        let n = n as i32;
        e.park_for_edge();
        // R13: the icount, kept by `store_icount`; the registers stay in
        // their host registers (the body takes them as changed).
        e.store_icount();
        let out = e.ops.new_dynamic_label();
        asm!(e.ops
            ; lea rax, [r13 + n]
            ; cmp rax, QWORD [r14 + ENV_STOP]
            ; ja =>out
        );
        // The virtual IF was set when the loop was entered; only a compiled
        // CLI, STI or POPFD of its own could have changed it since.
        if e.needs_virtual_if && e.changes_if {
            asm!(e.ops
                ; test DWORD [r15 + VIRTUAL_FLAGS], flags::IF as i32
                ; jz =>out
            );
        }
        asm!(e.ops
            ; jmp =>body
            ;=>out
        );
    }
    e.exit_to(target);
}

#[cfg(test)]
mod encoding {
    use super::*;

    /// The low byte of a caching host register is BPL (with a REX prefix),
    /// never CH, which the same register number means without one.
    #[test]
    fn byte_operands_of_caching_registers_take_a_rex_prefix() {
        for &h in &CACHE_REGS {
            let mut ops = VecAssembler::<X64Relocation>::new(0);
            asm!(ops; mov Rb(h), al);
            let bytes = ops.finalize().unwrap();
            assert_eq!(bytes[0] & 0xF0, 0x40, "REX for register {h}: {bytes:02x?}");
        }
    }
}
