//! Instruction execution: decoding, operand access and the dispatch to one file
//! per instruction family. Every engine executes instructions through
//! [`Cpu::execute`], so semantics exist exactly once.

pub mod alu;
pub mod bcd;
pub mod bit;
pub mod compact;
pub mod control;
pub mod datamov;
pub mod decode;
pub mod flags;
pub mod muldiv;
pub mod shift;
pub mod stack;
pub mod string;
pub mod system;
#[cfg(test)]
pub(crate) mod testutil;
pub mod x87;

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::bus::Bus;
use crate::cpu::interrupt::IntSource;
use crate::cpu::mmu::Access;
use crate::cpu::state::{attr, cr0, flags as fl, SegReg};
use crate::cpu::{vector, Cpu, Fault, Result, StepOutcome};

/// Maximum length of an x86 instruction (SDM Vol. 2, 2.1).
pub const MAX_INSN_LEN: usize = 15;

/// What an instruction asks of the engine beyond updating the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Retired normally.
    Next,
    /// A REP string instruction retired one iteration and must run again.
    Repeat,
}

pub fn seg_of(r: Register) -> SegReg {
    match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        _ => SegReg::Ds,
    }
}

impl Cpu {
    /// Decodes the instruction at CS:EIP.
    pub fn decode<B: Bus>(&mut self, bus: &mut B) -> Result<Instruction> {
        let mut inst = Instruction::default();
        self.decode_into(bus, &mut inst)?;
        Ok(inst)
    }

    /// Decodes the instruction at CS:EIP into `inst`. Decoding in place spares
    /// the hot loop a 40-byte copy that stalls on store forwarding.
    pub fn decode_into<B: Bus>(&mut self, bus: &mut B, inst: &mut Instruction) -> Result<()> {
        let eip = self.state.eip;
        let code32 = self.state.code32();
        let mut buf = [0u8; MAX_INSN_LEN];
        // Fetch no further than the CS limit allows; beyond it the decoder runs
        // out of bytes and we raise #GP (SDM Vol. 3A, 5.3).
        let cs = self.state.segs[SegReg::Cs as usize];
        let room = if cs.limit >= eip {
            (cs.limit - eip).saturating_add(1)
        } else {
            0
        };
        let want = (room as usize).min(MAX_INSN_LEN);
        if want == 0 {
            return Err(Fault::gp(0));
        }
        let lin = self.seg_linear(SegReg::Cs, eip, 1, Access::Execute)?;
        // Fetch from the instruction's first page only; the next page is
        // translated (its accessed bit set, or its #PF raised) only when the
        // instruction really continues there. So an engine that runs cached
        // instructions touches exactly the pages this one does.
        let in_page = (0x1000 - (lin & 0xFFF)) as usize;
        let mut n = self.fetch_linear(bus, lin, &mut buf[..want.min(in_page)])?;
        loop {
            let mut decoder = decode::decoder(&buf[..n], u64::from(eip), code32);
            decoder.decode_out(inst);
            if !inst.is_invalid() {
                return Ok(());
            }
            if decoder.last_error() != iced_x86::DecoderError::NoMoreBytes {
                break;
            }
            if n == want {
                // Longer than 15 bytes, or running past the CS limit (SDM Vol. 2A, 2.1; Vol. 3A, 5.3).
                return Err(Fault::gp(0));
            }
            n += self.fetch_linear(bus, lin.wrapping_add(n as u32), &mut buf[n..want])?;
        }
        // A reserved x87 encoding is still an escape: with CR0.EM or TS set
        // it raises #NM like every other, so a guest's FPU emulator sees it.
        if x87::is_escape_opcode(&buf[..n]) && self.state.cr0 & (cr0::EM | cr0::TS) != 0 {
            return Err(Fault::new(vector::NM));
        }
        Err(Fault::ud())
    }

    /// The fetch of an instruction already decoded, `len` bytes at CS:EIP and
    /// within one page, with every check and side effect `decode_into`'s fetch
    /// has (CS limit, page translation, accessed bits, TLB fill), so an engine
    /// that reuses decoded instructions stays indistinguishable from decoding
    /// each one. Returns the instruction's physical address. A fault is
    /// returned undelivered; [`Cpu::step`] reproduces it exactly.
    #[inline(always)]
    pub fn refetch<B: Bus>(&mut self, bus: &mut B, len: u32) -> Result<u32> {
        let eip = self.state.eip;
        let cs = &self.state.segs[SegReg::Cs as usize];
        let room = if cs.limit >= eip {
            (cs.limit - eip).saturating_add(1)
        } else {
            0
        };
        if room == 0 {
            return Err(Fault::gp(0));
        }
        let lin = self.seg_linear(SegReg::Cs, eip, 1, Access::Execute)?;
        let user = self.state.cpl() == 3;
        let phys = self.translate(bus, lin, Access::Execute, user)?;
        if len > room {
            return Err(Fault::gp(0));
        }
        Ok(phys)
    }

    /// Whether [`Cpu::refetch`]'s CS checks pass for every instruction within
    /// `[first, end)` (offsets in CS, `end` past the last byte, no wrap):
    /// then an engine may skip them there, as long as CS does not change.
    #[inline]
    pub fn cs_admits(&self, first: u32, end: u32) -> bool {
        let cs = &self.state.segs[SegReg::Cs as usize];
        // For an ordinary (not expand-down) segment the valid offsets are
        // 0..=limit, so a range that passes holds only ranges that pass.
        let expand_down = cs.attr & (attr::CODE | attr::DC) == attr::DC && cs.attr & attr::S != 0;
        !expand_down
            && end > first
            && end - 1 <= cs.limit
            && self.seg_linear(SegReg::Cs, first, end - first, Access::Execute).is_ok()
    }

    /// Whether an instruction of `len` bytes at CS:EIP ends within the CS limit.
    #[inline]
    pub fn fits_cs_limit(&self, len: u32) -> bool {
        let eip = self.state.eip;
        let cs = &self.state.segs[SegReg::Cs as usize];
        cs.limit >= eip && cs.limit - eip >= len - 1
    }

    /// Decodes and executes one instruction (or one iteration of a REP string
    /// instruction). This is the reference engine's whole inner loop.
    pub fn step<B: Bus>(&mut self, bus: &mut B) -> StepOutcome {
        if self.state.halted {
            return StepOutcome::Halted;
        }
        self.start_eip = self.state.eip;
        let mut inst = Instruction::default();
        if let Err(f) = self.decode_into(bus, &mut inst) {
            return self.raise(bus, f);
        }
        self.execute(bus, &inst)
    }

    /// Executes one decoded instruction whose first byte is at the current EIP,
    /// delivering any fault it raises.
    pub fn execute<B: Bus>(&mut self, bus: &mut B, inst: &Instruction) -> StepOutcome {
        self.execute_with(bus, inst, handler_for::<B>(inst))
    }

    /// [`Cpu::execute`] with the instruction's handler already looked up
    /// (engines that cache decoded code keep it).
    #[inline]
    pub fn execute_with<B: Bus>(&mut self, bus: &mut B, inst: &Instruction, handler: Handler<B>) -> StepOutcome {
        match self.execute_or_fault_with(bus, inst, handler) {
            Ok(outcome) => outcome,
            Err(f) => self.raise(bus, f),
        }
    }

    /// Executes one decoded instruction like [`Cpu::execute`], but a fault the
    /// instruction raises is not delivered: the general registers, EFLAGS and EIP
    /// are rolled back to their values before the instruction (fault semantics,
    /// SDM Vol. 3A, 6.5) and the fault is returned for the caller to deliver with
    /// [`Cpu::raise`]. Faults while delivering the single-step trap are delivered.
    pub fn execute_or_fault<B: Bus>(&mut self, bus: &mut B, inst: &Instruction) -> Result<StepOutcome> {
        self.execute_or_fault_with(bus, inst, handler_for::<B>(inst))
    }

    #[inline]
    pub fn execute_or_fault_with<B: Bus>(
        &mut self,
        bus: &mut B,
        inst: &Instruction,
        handler: Handler<B>,
    ) -> Result<StepOutcome> {
        let start = self.state.eip;
        self.start_eip = start;
        self.start_regs = self.state.regs;
        self.start_eflags = self.state.eflags;
        let eflags_before = self.state.eflags;
        let tf = self.state.eflags & fl::TF != 0;
        self.state.interrupt_shadow = false;
        let mask = if self.state.code32() { 0xFFFF_FFFF } else { 0xFFFF };
        self.state.eip = start.wrapping_add(inst.len() as u32) & mask;
        match handler(self, bus, inst) {
            Ok(flow) => {
                self.icount += 1;
                if flow == Flow::Repeat {
                    self.state.eip = start;
                }
                // A task switch to a TSS with its T flag: #DB in the new
                // task before its first instruction.
                if self.take_task_trap() {
                    if let Err(f) = self.deliver_interrupt(bus, vector::DB, IntSource::Exception(None)) {
                        return Ok(self.raise(bus, f));
                    }
                    return Ok(StepOutcome::Retired);
                }
                if tf && !self.state.halted && !software_interrupt(inst, eflags_before) {
                    // Single-step trap after the instruction (SDM Vol. 3A, 17.3.1.4).
                    self.state.dr[6] |= 1 << 14;
                    if let Err(f) = self.deliver_interrupt(bus, vector::DB, IntSource::Exception(None)) {
                        return Ok(self.raise(bus, f));
                    }
                }
                Ok(StepOutcome::Retired)
            }
            Err(f) => {
                self.state.regs = self.start_regs;
                self.state.eflags = self.start_eflags;
                self.state.eip = self.start_eip;
                self.state.interrupt_shadow = false;
                Err(f)
            }
        }
    }

    /// The instruction has passed the point after which a fault belongs to
    /// the state it has made (a task switch that loaded the new task): a
    /// fault rolls back to here, not to the instruction's start.
    pub fn commit_instruction(&mut self) {
        self.start_regs = self.state.regs;
        self.start_eflags = self.state.eflags;
        self.start_eip = self.state.eip;
    }
}

/// How an instruction family executes a decoded instruction.
pub type Handler<B> = fn(&mut Cpu, &mut B, &Instruction) -> Result<Flow>;

fn invalid_lock<B: Bus>(_: &mut Cpu, _: &mut B, _: &Instruction) -> Result<Flow> {
    // LOCK is valid only on read-modify-write memory forms (SDM Vol. 2A, LOCK).
    Err(Fault::ud())
}

fn jcc<B: Bus>(cpu: &mut Cpu, _: &mut B, inst: &Instruction) -> Result<Flow> {
    control::jcc(cpu, inst)
}

/// The instruction families, one file (and one handler) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Alu,
    MulDiv,
    Shift,
    Bit,
    Bcd,
    Stack,
    Str,
    Control,
    Jcc,
    DataMov,
    Cmov,
    Setcc,
    X87,
    System,
    /// A LOCK prefix the instruction may not have (#UD).
    InvalidLock,
}

/// The family of a decoded instruction.
pub(crate) fn family(inst: &Instruction) -> Family {
    use Mnemonic as M;
    let m = inst.mnemonic();
    if lock_is_invalid(inst) {
        return Family::InvalidLock;
    }
    match m {
        M::Add
        | M::Or
        | M::Adc
        | M::Sbb
        | M::And
        | M::Sub
        | M::Xor
        | M::Cmp
        | M::Test
        | M::Inc
        | M::Dec
        | M::Neg
        | M::Not => Family::Alu,
        M::Mul | M::Imul | M::Div | M::Idiv => Family::MulDiv,
        M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar | M::Shld | M::Shrd => Family::Shift,
        M::Bt | M::Bts | M::Btr | M::Btc | M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt => Family::Bit,
        M::Daa | M::Das | M::Aaa | M::Aas | M::Aam | M::Aad => Family::Bcd,
        M::Push
        | M::Pop
        | M::Pusha
        | M::Pushad
        | M::Popa
        | M::Popad
        | M::Pushf
        | M::Pushfd
        | M::Popf
        | M::Popfd
        | M::Enter
        | M::Leave => Family::Stack,
        M::Movsb
        | M::Movsw
        | M::Movsd
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsd
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Insb
        | M::Insw
        | M::Insd
        | M::Outsb
        | M::Outsw
        | M::Outsd
            if is_string_op(inst) =>
        {
            Family::Str
        }
        M::Jmp
        | M::Call
        | M::Ret
        | M::Retf
        | M::Loop
        | M::Loope
        | M::Loopne
        | M::Jcxz
        | M::Jecxz
        | M::Int
        | M::Int3
        | M::Into
        | M::Int1
        | M::Iret
        | M::Iretd
        | M::Bound => Family::Control,
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => Family::Jcc,
        M::Mov if is_control_or_debug(inst) => Family::System,
        M::Mov
        | M::Movzx
        | M::Movsx
        | M::Xchg
        | M::Lea
        | M::Cbw
        | M::Cwde
        | M::Cwd
        | M::Cdq
        | M::Bswap
        | M::Xadd
        | M::Cmpxchg
        | M::Cmpxchg8b
        | M::Lahf
        | M::Sahf
        | M::Xlatb
        | M::Lds
        | M::Les
        | M::Lfs
        | M::Lgs
        | M::Lss
        | M::Salc
        | M::Nop
        | M::Pause
        | M::Lfence
        | M::Mfence
        | M::Sfence => Family::DataMov,
        m if datamov::is_cmov(m) => Family::Cmov,
        m if datamov::is_setcc(m) => Family::Setcc,
        _ if x87::is_esc(inst) => Family::X87,
        _ => Family::System,
    }
}

/// The family handler for a decoded instruction. The reference engine looks
/// it up per instruction; engines that cache decoded code keep it with the
/// instruction, so both run exactly the same semantics.
pub fn handler_for<B: Bus>(inst: &Instruction) -> Handler<B> {
    match family(inst) {
        Family::Alu => alu::exec::<B>,
        Family::MulDiv => muldiv::exec::<B>,
        Family::Shift => shift::exec::<B>,
        Family::Bit => bit::exec::<B>,
        Family::Bcd => bcd::exec::<B>,
        Family::Stack => stack::exec::<B>,
        Family::Str => string::exec::<B>,
        Family::Control => control::exec::<B>,
        Family::Jcc => jcc::<B>,
        Family::DataMov => datamov::exec::<B>,
        Family::Cmov => datamov::cmov::<B>,
        Family::Setcc => datamov::setcc::<B>,
        Family::X87 => x87::exec::<B>,
        Family::System => system::exec::<B>,
        Family::InvalidLock => invalid_lock::<B>,
    }
}

impl Cpu {
    // ---- operand access -------------------------------------------------------

    /// Reads a general, segment or (for MOV) control register operand.
    #[inline]
    pub fn read_reg(&self, r: Register) -> u32 {
        // One test per width, each with its size as a constant.
        let regs = &self.state.regs;
        if let Some(g) = Gpr::byte(r) {
            g.read(regs, 1)
        } else if let Some(g) = Gpr::word(r) {
            g.read(regs, 2)
        } else if let Some(g) = Gpr::dword(r) {
            g.read(regs, 4)
        } else if r.is_segment_register() {
            u32::from(self.state.segs[seg_of(r) as usize].selector)
        } else {
            0
        }
    }

    /// Writes a general register operand (8-, 16- or 32-bit).
    #[inline]
    pub fn write_reg(&mut self, r: Register, v: u32) {
        let regs = &mut self.state.regs;
        if let Some(g) = Gpr::byte(r) {
            g.write(regs, 1, v);
        } else if let Some(g) = Gpr::word(r) {
            g.write(regs, 2, v);
        } else if let Some(g) = Gpr::dword(r) {
            g.write(regs, 4, v);
        }
    }

    /// The effective address (offset within the segment) of the memory operand.
    #[inline]
    pub fn effective_address(&self, inst: &Instruction) -> u32 {
        let base = inst.memory_base();
        let index = inst.memory_index();
        let b = if base != Register::None { self.read_reg(base) } else { 0 };
        let i = if index != Register::None {
            self.read_reg(index)
        } else {
            0
        };
        address(
            inst.memory_displacement32(),
            b,
            i,
            inst.memory_index_scale(),
            addr16(inst),
        )
    }

    /// Segment and offset of the memory operand.
    #[inline]
    pub fn mem_operand(&self, inst: &Instruction) -> (SegReg, u32) {
        (seg_of(inst.memory_segment()), self.effective_address(inst))
    }

    /// Reads operand `i` with the given size in bytes.
    #[inline]
    pub fn read_op<B: Bus>(&mut self, bus: &mut B, inst: &Instruction, i: u32, size: u8) -> Result<u32> {
        Ok(match inst.op_kind(i) {
            OpKind::Register => self.read_reg(inst.op_register(i)),
            OpKind::Memory => {
                let (s, off) = self.mem_operand(inst);
                self.read_mem(bus, s, off, size)?
            }
            _ => immediate(inst, i).ok_or(Fault::ud())?,
        } & flags::mask(size))
    }

    /// Writes operand `i` (register or memory) with the given size in bytes.
    #[inline]
    pub fn write_op<B: Bus>(&mut self, bus: &mut B, inst: &Instruction, i: u32, size: u8, v: u32) -> Result<()> {
        match inst.op_kind(i) {
            OpKind::Register => {
                self.write_reg(inst.op_register(i), v);
                Ok(())
            }
            OpKind::Memory => {
                let (s, off) = self.mem_operand(inst);
                self.write_mem(bus, s, off, size, v)
            }
            _ => Err(Fault::ud()),
        }
    }

    /// Replaces the six arithmetic status flags.
    #[inline]
    pub fn set_status(&mut self, f: u32) {
        self.state.eflags = (self.state.eflags & !fl::STATUS) | (f & fl::STATUS);
    }

    /// Replaces the status flags in `mask` by those of `f`.
    #[inline]
    pub fn apply_status(&mut self, f: u32, mask: u32) {
        self.state.eflags = (self.state.eflags & !mask) | (f & mask);
    }

    #[inline]
    pub fn flag(&self, f: u32) -> bool {
        self.state.eflags & f != 0
    }
}

/// Operand `i` when it is an immediate, as the instruction encodes it
/// (sign-extended where the encoding says so), before masking to a size.
#[inline]
pub fn immediate(inst: &Instruction, i: u32) -> Option<u32> {
    Some(match inst.op_kind(i) {
        OpKind::Immediate8 => u32::from(inst.immediate8()),
        OpKind::Immediate8_2nd => u32::from(inst.immediate8_2nd()),
        OpKind::Immediate16 => u32::from(inst.immediate16()),
        OpKind::Immediate32 => inst.immediate32(),
        OpKind::Immediate8to16 => inst.immediate8to16() as u16 as u32,
        OpKind::Immediate8to32 => inst.immediate8to32() as u32,
        _ => return None,
    })
}

/// A general register as an operand: its slot in `CpuState::regs` and, for
/// AH..BH, the shift to the byte (SDM Vol. 1, 3.4.1). Sizes travel with the
/// instruction, so one value names AL, AX and EAX alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpr {
    idx: u8,
    shift: u8,
}

impl Gpr {
    /// The general register `r` names and its size in bytes; None for any
    /// other register.
    #[inline]
    pub fn of(r: Register) -> Option<(Gpr, u8)> {
        if let Some(g) = Gpr::byte(r) {
            Some((g, 1))
        } else if let Some(g) = Gpr::word(r) {
            Some((g, 2))
        } else {
            Gpr::dword(r).map(|g| (g, 4))
        }
    }

    /// AL..BH (ModRM order: AL, CL, DL, BL, AH, CH, DH, BH).
    #[inline(always)]
    pub fn byte(r: Register) -> Option<Gpr> {
        let i = (r as u32).wrapping_sub(Register::AL as u32);
        if i <= Register::BH as u32 - Register::AL as u32 {
            Some(Gpr {
                idx: (i & 3) as u8,
                shift: ((i >> 2) * 8) as u8,
            })
        } else {
            None
        }
    }

    /// AX..DI.
    #[inline(always)]
    pub fn word(r: Register) -> Option<Gpr> {
        let i = (r as u32).wrapping_sub(Register::AX as u32);
        if i <= Register::DI as u32 - Register::AX as u32 {
            Some(Gpr { idx: i as u8, shift: 0 })
        } else {
            None
        }
    }

    /// EAX..EDI.
    #[inline(always)]
    pub fn dword(r: Register) -> Option<Gpr> {
        let i = (r as u32).wrapping_sub(Register::EAX as u32);
        if i <= Register::EDI as u32 - Register::EAX as u32 {
            Some(Gpr { idx: i as u8, shift: 0 })
        } else {
            None
        }
    }

    /// Which of the eight registers it is (EAX = 0, in ModRM order).
    pub fn index(self) -> u8 {
        self.idx & 7
    }

    /// Whether an operand of `size` bytes is AH, CH, DH or BH.
    pub fn is_high_byte(self, size: u8) -> bool {
        size == 1 && self.shift != 0
    }

    /// Byte offset of the operand within `CpuState::regs`, for code that
    /// addresses the registers in memory (the compiler tier).
    pub fn byte_offset(self, size: u8) -> usize {
        4 * usize::from(self.idx & 7) + if size == 1 { usize::from(self.shift / 8) } else { 0 }
    }

    #[inline(always)]
    pub fn read(self, regs: &[u32; 8], size: u8) -> u32 {
        let v = regs[usize::from(self.idx & 7)];
        match size {
            4 => v,
            2 => v & 0xFFFF,
            _ => (v >> self.shift) & 0xFF,
        }
    }

    /// Writes the low `size` bytes of `v`; the rest of the register is kept.
    #[inline(always)]
    pub fn write(self, regs: &mut [u32; 8], size: u8, v: u32) {
        let r = &mut regs[usize::from(self.idx & 7)];
        match size {
            4 => *r = v,
            2 => *r = (*r & !0xFFFF) | (v & 0xFFFF),
            _ => *r = (*r & !(0xFF << self.shift)) | ((v & 0xFF) << self.shift),
        }
    }
}

/// A memory operand's addressing, taken from the instruction once: segment,
/// base, index, scale, displacement and address size (SDM Vol. 1, 3.7.5;
/// Vol. 2A, 2.1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRef {
    pub seg: SegReg,
    base: AddrReg,
    index: AddrReg,
    scale: u8,
    addr16: bool,
    disp: u32,
}

/// A register in an address: its value is `(regs[slot] >> shift) & mask`; an
/// absent register has mask 0. XLAT's index is AL, so widths matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AddrReg {
    slot: u8,
    shift: u8,
    mask: u32,
}

impl AddrReg {
    fn of(r: Register) -> AddrReg {
        match Gpr::of(r) {
            Some((g, size)) => AddrReg {
                slot: g.idx,
                shift: g.shift,
                mask: flags::mask(size),
            },
            None => AddrReg {
                slot: 0,
                shift: 0,
                mask: 0,
            },
        }
    }

    #[inline(always)]
    fn value(self, regs: &[u32; 8]) -> u32 {
        (regs[usize::from(self.slot & 7)] >> self.shift) & self.mask
    }
}

impl MemRef {
    #[inline]
    pub fn of(inst: &Instruction) -> MemRef {
        MemRef {
            seg: seg_of(inst.memory_segment()),
            base: AddrReg::of(inst.memory_base()),
            index: AddrReg::of(inst.memory_index()),
            scale: inst.memory_index_scale() as u8,
            addr16: addr16(inst),
            disp: inst.memory_displacement32(),
        }
    }

    /// With 32-bit addressing: the base and index registers' slots in
    /// `CpuState::regs` (when present), the scale and the displacement.
    pub fn parts32(&self) -> Option<(Option<u8>, Option<u8>, u8, u32)> {
        let slot = |r: AddrReg| match r.mask {
            0 => Some(None),
            0xFFFF_FFFF => Some(Some(r.slot & 7)),
            _ => None,
        };
        if self.addr16 {
            return None;
        }
        Some((slot(self.base)?, slot(self.index)?, self.scale, self.disp))
    }

    /// The offset within the segment.
    #[inline]
    pub fn offset(&self, regs: &[u32; 8]) -> u32 {
        address(
            self.disp,
            self.base.value(regs),
            self.index.value(regs),
            u32::from(self.scale),
            self.addr16,
        )
    }
}

/// An effective address from its parts: displacement, base and index
/// register values and the scale, cut to 16 bits with 16-bit addressing
/// (SDM Vol. 1, 3.7.5).
#[inline(always)]
pub fn address(disp: u32, base: u32, index: u32, scale: u32, addr16: bool) -> u32 {
    let ea = disp.wrapping_add(base).wrapping_add(index.wrapping_mul(scale));
    if addr16 {
        ea & 0xFFFF
    } else {
        ea
    }
}

/// Whether the instruction raised a software interrupt. INT n, INT3 and INTO
/// clear TF on the way to the handler, and no single-step trap is reported after
/// them (SDM Vol. 3A, 17.3.1.4: debuggers must emulate them to step through).
fn software_interrupt(inst: &Instruction, eflags_before: u32) -> bool {
    match inst.mnemonic() {
        Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Int1 => true,
        Mnemonic::Into => eflags_before & fl::OF != 0,
        _ => false,
    }
}

/// Size in bytes of operand `i`.
#[inline]
pub fn op_size(inst: &Instruction, i: u32) -> u8 {
    match inst.op_kind(i) {
        OpKind::Register => inst.op_register(i).size() as u8,
        OpKind::Memory => inst.memory_size().size() as u8,
        OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
        _ => 4,
    }
}

/// Whether the instruction uses 16-bit addressing.
#[inline]
pub fn addr16(inst: &Instruction) -> bool {
    let base = inst.memory_base();
    let index = inst.memory_index();
    if base != Register::None {
        return base.size() == 2;
    }
    if index != Register::None {
        return index.size() == 2;
    }
    inst.memory_displ_size() == 2
}

/// Operand size in bytes of a stack instruction (PUSH/POP and friends), from
/// how far it moves the stack pointer.
#[inline]
pub fn stack_op_size(inst: &Instruction) -> u8 {
    if inst.stack_pointer_increment().unsigned_abs() % 4 == 2 {
        2
    } else {
        4
    }
}

/// Whether the instruction leaves alone everything the block engine and the
/// compiler's inline memory path hold between instructions: segment
/// registers, control and debug registers, the privilege level, EFLAGS'
/// system flags (IF, TF, IOPL, VM, AC, NT), descriptor tables, the TLB and
/// MSRs. Those that do not, or might, are not listed; a fault any of them
/// raises leaves the block anyway. Port I/O is listed: a port access that
/// moves the A20 gate, or anything else the machine loop must see, ends
/// the block through the platform's attention.
pub fn leaves_modes_alone(inst: &Instruction) -> bool {
    use Mnemonic as M;
    let m = inst.mnemonic();
    // A segment, control or debug register written (MOV to one, POP of
    // one); reading one (MOV from it, PUSH of it) changes nothing.
    let system_register = inst.op_count() > 0 && inst.op0_kind() == OpKind::Register && m != M::Push && {
        let r = inst.op0_register();
        r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr()
    };
    !system_register
        && match family(inst) {
            Family::Alu | Family::MulDiv | Family::Shift | Family::Bit | Family::Bcd => true,
            Family::Cmov | Family::Setcc => true,
            Family::Stack => matches!(m, M::Push | M::Pop | M::Leave | M::Pushf | M::Pushfd),
            Family::Str => true,
            // Not the far pointer loads, which load a segment register.
            Family::DataMov => !matches!(m, M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss),
            // MOV from a control or debug register (MOV to one was caught
            // above); WAIT as the x87 instructions below.
            Family::System => matches!(
                m,
                M::Rdtsc | M::Cpuid | M::Clc | M::Stc | M::Cmc | M::Cld | M::Std | M::In | M::Out | M::Mov | M::Wait
            ),
            // The FPU's own state only (its faults end the block; an error
            // reported as IRQ 13 is device attention).
            Family::X87 => true,
            Family::Control | Family::Jcc | Family::InvalidLock => false,
        }
}

/// Whether the only modes the instruction can change (of those
/// [`leaves_modes_alone`] names) are EFLAGS' system flags: CLI, STI, POPF.
/// Whether it did is then seen by comparing the flags.
pub fn changes_only_system_flags(inst: &Instruction) -> bool {
    matches!(
        inst.mnemonic(),
        Mnemonic::Cli | Mnemonic::Sti | Mnemonic::Popf | Mnemonic::Popfd
    )
}

/// Whether the instruction carries a LOCK prefix it may not have, so that it
/// raises #UD (SDM Vol. 2A, "LOCK": only the read-modify-write forms of the
/// listed instructions with a memory destination accept it).
#[inline]
pub fn lock_is_invalid(inst: &Instruction) -> bool {
    inst.has_lock_prefix() && !lockable(inst)
}

fn lockable(inst: &Instruction) -> bool {
    use Mnemonic as M;
    inst.op0_kind() == OpKind::Memory
        && matches!(
            inst.mnemonic(),
            M::Add
                | M::Adc
                | M::And
                | M::Btc
                | M::Btr
                | M::Bts
                | M::Cmpxchg
                | M::Cmpxchg8b
                | M::Dec
                | M::Inc
                | M::Neg
                | M::Not
                | M::Or
                | M::Sbb
                | M::Sub
                | M::Xor
                | M::Xadd
                | M::Xchg
        )
}

fn is_string_op(inst: &Instruction) -> bool {
    matches!(
        inst.op0_kind(),
        OpKind::MemorySegSI | OpKind::MemorySegESI | OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::Register
    ) && !matches!(
        inst.code(),
        Code::Movsd_xmm_xmmm64 | Code::Movsd_xmmm64_xmm | Code::Cmpsd_xmm_xmmm64_imm8
    )
}

fn is_control_or_debug(inst: &Instruction) -> bool {
    let r0 = inst.op0_register();
    let r1 = inst.op1_register();
    r0.is_cr() || r0.is_dr() || r1.is_cr() || r1.is_dr() || r0.is_tr() || r1.is_tr()
}

#[cfg(test)]
mod fetch_tests {
    use super::testutil::{Machine, PAGE_TABLE};
    use crate::cpu::state::reg::EAX;
    use crate::cpu::{vector, StepOutcome};

    const PAGE_END: u32 = 0x1_0FFF;
    const NEXT_PTE: u32 = PAGE_TABLE + 4 * 0x11;

    // SDM Vol. 3A, 4.7 and 4.8: instruction fetches translate the pages the
    // instruction occupies; the page after a short instruction at a page's
    // end is neither faulted on nor marked accessed.
    #[test]
    fn an_instruction_ending_at_a_page_end_does_not_touch_the_next_page() {
        let mut m = Machine::flat32().paging();
        m.w32(NEXT_PTE, 0x11_000 | 7); // present, accessed clear
        m.cpu.state.eip = PAGE_END;
        assert_eq!(m.exec(&[0x40]), StepOutcome::Retired); // inc eax
        assert_eq!(m.reg(EAX), 1);
        assert_eq!(m.r32(NEXT_PTE) & 0x20, 0, "next page's accessed bit untouched");
        m.cpu.state.eip = PAGE_END;
        m.w32(NEXT_PTE, 0); // not present
        m.cpu.tlb.flush_all();
        assert_eq!(m.exec(&[0x40]), StepOutcome::Retired);
    }

    // An instruction that does continue on a not-present page raises #PF for
    // that page, with CR2 at its first byte there.
    #[test]
    fn an_instruction_crossing_into_a_missing_page_faults_there() {
        let mut m = Machine::flat32().paging();
        m.w32(NEXT_PTE, 0);
        m.cpu.tlb.flush_all();
        m.cpu.state.eip = PAGE_END;
        m.code(&[0xB8]); // mov eax, imm32: four more bytes on the next page
        match m.step() {
            StepOutcome::Exception(f) => assert_eq!((f.vector, f.error), (vector::PF, Some(0))),
            other => panic!("expected #PF, got {other:?}"),
        }
        assert_eq!(m.cpu.state.cr2, PAGE_END + 1);
    }
}

#[cfg(test)]
mod mode_tests {
    use super::decode::decode_one;
    use super::{changes_only_system_flags, leaves_modes_alone};

    // What the block engine lets run without looking at the modes again
    // (segments, control registers, privilege, IF, the TLB) against
    // what must make it look: every form that can change one of them.
    #[test]
    fn only_instructions_that_change_no_mode_are_listed() {
        let alone: &[&[u8]] = &[
            &[0x0F, 0x43, 0x06], // cmovae eax, [esi]
            &[0x0F, 0x94, 0xC0], // sete al
            &[0xF7, 0xF1],       // div ecx
            &[0xC1, 0xC8, 0x05], // ror eax, 5
            &[0xC9],             // leave
            &[0xFF, 0x36],       // push dword [esi]
            &[0x8F, 0x06],       // pop dword [esi]
            &[0x0F, 0xB1, 0x0E], // cmpxchg [esi], ecx
            &[0x0F, 0xC7, 0x0E], // cmpxchg8b [esi]
            &[0x0F, 0xC8],       // bswap eax
            &[0x87, 0x06],       // xchg [esi], eax
            &[0x0F, 0x31],       // rdtsc
            &[0xF3, 0xA5],       // rep movsd
            &[0xF3, 0xAB],       // rep stosd
            &[0x9E],             // sahf
            &[0x89, 0xC8],       // mov eax, ecx
            &[0x9C],             // pushfd
            &[0xE6, 0x92],       // out 92h, al (the A20 gate: attention ends the block)
            &[0xEC],             // in al, dx
            &[0xF3, 0x6C],       // rep insb
            &[0x8C, 0xD8],       // mov ax, ds (reads it)
            &[0x0F, 0xA0],       // push fs
            &[0x06],             // push es
            &[0xD9, 0x06],       // fld dword [esi]
            &[0xDD, 0x1E],       // fstp qword [esi]
            &[0xD9, 0x2E],       // fldcw [esi]
            &[0xDB, 0xE3],       // fninit
            &[0xDD, 0x26],       // frstor [esi]
            &[0xD9, 0x26],       // fldenv [esi]
            &[0xDD, 0x36],       // fnsave [esi]
            &[0x9B],             // wait
            &[0x0F, 0x20, 0xC0], // mov eax, cr0 (reads it)
            &[0x0F, 0x21, 0xF8], // mov eax, dr7
        ];
        let changing: &[&[u8]] = &[
            &[0x8E, 0xD8],             // mov ds, ax
            &[0x07],                   // pop es
            &[0x0F, 0xA1],             // pop fs
            &[0x0F, 0x22, 0xC0],       // mov cr0, eax
            &[0x0F, 0x22, 0xD8],       // mov cr3, eax
            &[0x0F, 0x23, 0xF8],       // mov dr7, eax
            &[0x0F, 0xB2, 0x06],       // lss esi, [esi]
            &[0xC5, 0x06],             // lds eax, [esi]
            &[0x9D],                   // popfd
            &[0xFB],                   // sti
            &[0xFA],                   // cli
            &[0xCF],                   // iretd
            &[0x0F, 0x01, 0x3E],       // invlpg [esi]
            &[0x0F, 0x01, 0x16],       // lgdt [esi]
            &[0x0F, 0x00, 0xD8],       // ltr ax
            &[0x0F, 0x30],             // wrmsr
            &[0x0F, 0x06],             // clts
            &[0x0F, 0x01, 0xF0],       // lmsw ax
            &[0xEA, 0, 0, 0, 0, 8, 0], // jmp far 8:0
            &[0xCD, 0x80],             // int 80h
            &[0xF4],                   // hlt
            &[0x0F, 0x34],             // sysenter
        ];
        for (bytes, want) in alone
            .iter()
            .map(|b| (b, true))
            .chain(changing.iter().map(|b| (b, false)))
        {
            let inst = decode_one(bytes, 0, true).unwrap_or_else(|| panic!("{bytes:02x?} decodes"));
            assert_eq!(leaves_modes_alone(&inst), want, "{inst} ({bytes:02x?})");
            // Of those that change a mode, CLI, STI and POPF change flags only.
            let flags_only = [&[0xFA][..], &[0xFB], &[0x9D], &[0x66, 0x9D]].contains(&&bytes[..]);
            assert_eq!(changes_only_system_flags(&inst), flags_only, "{inst} ({bytes:02x?})");
        }
    }
}
