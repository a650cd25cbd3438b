//! The compact form of a decoded instruction, for engines that execute cached
//! code: the hottest shapes of the general-purpose instructions with their
//! operation, operand sizes, registers, immediates and memory operand taken
//! out of the `Instruction` once (SDM Vol. 2A, 2.1 "Instruction format", for
//! what an operand can be). Semantics are not repeated here: each shape calls
//! the same functions its family's `exec` calls (`alu::compute`,
//! `shift::compute`, `control::near_call`, ...) and reaches memory through the
//! same `Cpu::read_mem`/`write_mem`, `push` and `pop`.
//!
//! Every shape does all its accesses that can fault before it writes a
//! register or EFLAGS, so a fault leaves the state as it was before the
//! instruction with nothing to roll back but EIP (fault semantics, SDM Vol.
//! 3A, 6.5). Anything else is `Op::Generic`: the family handler runs it.

use iced_x86::{Code, Instruction, MemorySize, Mnemonic, OpKind};

use super::alu::{self, AluOp};
use super::shift::{self, ShiftOp};
use super::string::{self, StrOp};
use super::{
    control, datamov, flags, immediate, is_string_op, muldiv, op_size, seg_of, stack, stack_op_size, system, Gpr,
    MemRef,
};
use crate::bus::Bus;
use crate::cpu::state::flags::CF;
use crate::cpu::state::reg::{EAX, ECX};
use crate::cpu::state::SegReg;
use crate::cpu::{Cpu, Result, StepOutcome};

/// Calls `self.f::<SIZE>(args)` for an operand size known only at run time,
/// so that each size's code is compiled with the size as a constant.
macro_rules! by_size {
    ($size:expr, $this:ident . $f:ident ( $($arg:expr),* )) => {
        match $size {
            4 => $this.$f::<4>($($arg),*),
            2 => $this.$f::<2>($($arg),*),
            _ => $this.$f::<1>($($arg),*),
        }
    };
}

/// One instruction's compact form. `R` is a general register, `M` the memory
/// operand and `I` an immediate, destination first; `size` is the operand
/// size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Executed by the family handler from the `Instruction`.
    Generic,
    /// NOP, including the multi-byte forms (which never access their operand).
    Nop,
    /// ADD, OR, ADC, SBB, AND, SUB, XOR, CMP, TEST.
    AluRR {
        op: AluOp,
        size: u8,
        dst: Gpr,
        src: Gpr,
    },
    AluRI {
        op: AluOp,
        size: u8,
        dst: Gpr,
        imm: u32,
    },
    AluRM {
        op: AluOp,
        size: u8,
        dst: Gpr,
        mem: MemRef,
    },
    AluMR {
        op: AluOp,
        size: u8,
        mem: MemRef,
        src: Gpr,
    },
    AluMI {
        op: AluOp,
        size: u8,
        mem: MemRef,
        imm: u32,
    },
    /// INC, DEC, NEG, NOT.
    AluR {
        op: AluOp,
        size: u8,
        dst: Gpr,
    },
    AluM {
        op: AluOp,
        size: u8,
        mem: MemRef,
    },
    MovRR {
        size: u8,
        dst: Gpr,
        src: Gpr,
    },
    MovRI {
        size: u8,
        dst: Gpr,
        imm: u32,
    },
    MovRM {
        size: u8,
        dst: Gpr,
        mem: MemRef,
    },
    MovMR {
        size: u8,
        mem: MemRef,
        src: Gpr,
    },
    MovMI {
        size: u8,
        mem: MemRef,
        imm: u32,
    },
    /// MOVZX / MOVSX.
    MovxRR {
        signed: bool,
        dsize: u8,
        ssize: u8,
        dst: Gpr,
        src: Gpr,
    },
    MovxRM {
        signed: bool,
        dsize: u8,
        ssize: u8,
        dst: Gpr,
        mem: MemRef,
    },
    Lea {
        size: u8,
        dst: Gpr,
        mem: MemRef,
    },
    /// PUSH r; `size` is the stack operand size.
    PushR {
        size: u8,
        src: Gpr,
    },
    PushI {
        size: u8,
        imm: u32,
    },
    /// PUSH m: the operand read at the stack operand size, then pushed.
    PushM {
        size: u8,
        mem: MemRef,
    },
    /// LEAVE with a `size`-byte frame pointer.
    Leave {
        size: u8,
    },
    /// DIV r: EDX:EAX (DX:AX, AX) divided by the register.
    DivR {
        size: u8,
        src: Gpr,
    },
    /// MUL r: EDX:EAX (DX:AX, AX) = EAX (AX, AL) times the register.
    MulR {
        size: u8,
        src: Gpr,
    },
    /// DIV m.
    DivM {
        size: u8,
        mem: MemRef,
    },
    /// RDTSC.
    Rdtsc,
    /// POP r: `size` bytes popped into a `dsize`-byte register.
    PopR {
        size: u8,
        dsize: u8,
        dst: Gpr,
    },
    CallRel {
        size: u8,
        target: u32,
    },
    /// Near CALL and JMP through a register or memory (`size`: the target's).
    CallR {
        size: u8,
        src: Gpr,
    },
    CallM {
        size: u8,
        mem: MemRef,
    },
    JmpR {
        size: u8,
        src: Gpr,
    },
    JmpM {
        size: u8,
        mem: MemRef,
    },
    /// Near RET, popping `imm` more bytes.
    Ret {
        size: u8,
        imm: u32,
    },
    JmpRel {
        target: u32,
    },
    Jcc {
        cc: u8,
        target: u32,
    },
    /// SETcc of a byte register (`cc` as for Jcc).
    Setcc {
        cc: u8,
        dst: Gpr,
    },
    /// SETcc of a byte in memory.
    SetccM {
        cc: u8,
        mem: MemRef,
    },
    /// BSWAP of a 32-bit register.
    Bswap {
        dst: Gpr,
    },
    /// XCHG between two registers (with memory it is a locked
    /// read-modify-write, left to the family handler).
    XchgRR {
        size: u8,
        a: Gpr,
        b: Gpr,
    },
    /// CMOVcc between registers.
    CmovRR {
        cc: u8,
        size: u8,
        dst: Gpr,
        src: Gpr,
    },
    /// CMOVcc from memory: the operand is read whether or not the
    /// condition holds (a fault is raised either way).
    CmovRM {
        cc: u8,
        size: u8,
        dst: Gpr,
        mem: MemRef,
    },
    /// Shifts and rotates of a register by an immediate count (1 included).
    ShiftRI {
        op: ShiftOp,
        size: u8,
        dst: Gpr,
        count: u8,
    },
    ShiftRCl {
        op: ShiftOp,
        size: u8,
        dst: Gpr,
    },
    /// CMPXCHG of memory with a register (EAX the accumulator).
    CmpxchgMR {
        size: u8,
        mem: MemRef,
        src: Gpr,
    },
    /// SHLD (`left`) and SHRD of a register with bits from another, by an
    /// immediate count or (`None`) by CL.
    DshiftRR {
        left: bool,
        size: u8,
        dst: Gpr,
        src: Gpr,
        count: Option<u8>,
    },
    /// MOVS, CMPS, SCAS, LODS, STOS without a repeat prefix: `a32` for
    /// ESI/EDI addressing, `src` the source segment.
    Str {
        op: StrOp,
        size: u8,
        a32: bool,
        src: SegReg,
    },
    /// IMUL r, r/m and IMUL r, r/m, imm.
    ImulRR {
        size: u8,
        dst: Gpr,
        src: Gpr,
    },
    ImulRM {
        size: u8,
        dst: Gpr,
        mem: MemRef,
    },
    ImulRRI {
        size: u8,
        dst: Gpr,
        src: Gpr,
        imm: u32,
    },
    ImulRMI {
        size: u8,
        dst: Gpr,
        mem: MemRef,
        imm: u32,
    },
}

/// A general register operand `i` whose size is `size`, if it is one.
fn gpr(inst: &Instruction, i: u32, size: u8) -> Option<Gpr> {
    if inst.op_kind(i) != OpKind::Register {
        return None;
    }
    match Gpr::of(inst.op_register(i)) {
        Some((g, s)) if s == size => Some(g),
        _ => None,
    }
}

fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
    )
}

/// Operand `i` as an immediate masked to `size`, as `Cpu::read_op` reads it.
fn imm(inst: &Instruction, i: u32, size: u8) -> Option<u32> {
    Some(immediate(inst, i)? & flags::mask(size))
}

impl Op {
    /// The compact form of `inst`, `Op::Generic` for anything not covered.
    pub fn build(inst: &Instruction) -> Op {
        // LOCK is #UD on most of these and changes nothing on the rest: leave
        // it to the family handlers, which check it.
        if inst.has_lock_prefix() {
            return Op::Generic;
        }
        Self::shape(inst).unwrap_or(Op::Generic)
    }

    fn shape(inst: &Instruction) -> Option<Op> {
        use Mnemonic as M;
        let m = inst.mnemonic();
        let n = inst.op_count();
        let k0 = if n > 0 { inst.op0_kind() } else { OpKind::Register };
        let k1 = if n > 1 { inst.op1_kind() } else { OpKind::Register };
        let mem = || MemRef::of(inst);
        Some(match m {
            M::Nop | M::Pause | M::Lfence | M::Mfence | M::Sfence => Op::Nop,
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                let op = AluOp::of(m)?;
                if n != 2 {
                    return None;
                }
                let size = op_size(inst, 0);
                match (k0, k1) {
                    (OpKind::Register, OpKind::Register) => Op::AluRR {
                        op,
                        size,
                        dst: gpr(inst, 0, size)?,
                        src: gpr(inst, 1, size)?,
                    },
                    (OpKind::Register, OpKind::Memory) => Op::AluRM {
                        op,
                        size,
                        dst: gpr(inst, 0, size)?,
                        mem: mem(),
                    },
                    (OpKind::Memory, OpKind::Register) => Op::AluMR {
                        op,
                        size,
                        mem: mem(),
                        src: gpr(inst, 1, size)?,
                    },
                    (OpKind::Register, k) if is_imm(k) => Op::AluRI {
                        op,
                        size,
                        dst: gpr(inst, 0, size)?,
                        imm: imm(inst, 1, size)?,
                    },
                    (OpKind::Memory, k) if is_imm(k) => Op::AluMI {
                        op,
                        size,
                        mem: mem(),
                        imm: imm(inst, 1, size)?,
                    },
                    _ => return None,
                }
            }
            M::Inc | M::Dec | M::Neg | M::Not => {
                let op = AluOp::of(m)?;
                if n != 1 {
                    return None;
                }
                let size = op_size(inst, 0);
                match k0 {
                    OpKind::Register => Op::AluR {
                        op,
                        size,
                        dst: gpr(inst, 0, size)?,
                    },
                    OpKind::Memory => Op::AluM { op, size, mem: mem() },
                    _ => return None,
                }
            }
            M::Mov => {
                if n != 2 {
                    return None;
                }
                let size = op_size(inst, 0);
                match (k0, k1) {
                    // Segment, control and debug registers are not `Gpr`s.
                    (OpKind::Register, OpKind::Register) => Op::MovRR {
                        size,
                        dst: gpr(inst, 0, size)?,
                        src: gpr(inst, 1, size)?,
                    },
                    (OpKind::Register, OpKind::Memory) => Op::MovRM {
                        size,
                        dst: gpr(inst, 0, size)?,
                        mem: mem(),
                    },
                    (OpKind::Memory, OpKind::Register) => Op::MovMR {
                        size,
                        mem: mem(),
                        src: gpr(inst, 1, size)?,
                    },
                    (OpKind::Register, k) if is_imm(k) => Op::MovRI {
                        size,
                        dst: gpr(inst, 0, size)?,
                        imm: imm(inst, 1, size)?,
                    },
                    (OpKind::Memory, k) if is_imm(k) => Op::MovMI {
                        size,
                        mem: mem(),
                        imm: imm(inst, 1, size)?,
                    },
                    _ => return None,
                }
            }
            M::Movzx | M::Movsx => {
                if n != 2 {
                    return None;
                }
                let signed = m == M::Movsx;
                let (dsize, ssize) = (op_size(inst, 0), op_size(inst, 1));
                let dst = gpr(inst, 0, dsize)?;
                match k1 {
                    OpKind::Register => Op::MovxRR {
                        signed,
                        dsize,
                        ssize,
                        dst,
                        src: gpr(inst, 1, ssize)?,
                    },
                    OpKind::Memory => Op::MovxRM {
                        signed,
                        dsize,
                        ssize,
                        dst,
                        mem: mem(),
                    },
                    _ => return None,
                }
            }
            M::Div if n == 1 => {
                let size = op_size(inst, 0);
                match k0 {
                    OpKind::Register => Op::DivR {
                        size,
                        src: gpr(inst, 0, size)?,
                    },
                    OpKind::Memory => Op::DivM { size, mem: mem() },
                    _ => return None,
                }
            }
            M::Mul if n == 1 && k0 == OpKind::Register => {
                let size = op_size(inst, 0);
                Op::MulR {
                    size,
                    src: gpr(inst, 0, size)?,
                }
            }
            M::Rdtsc => Op::Rdtsc,
            M::Leave => Op::Leave {
                size: if inst.code() == Code::Leavew { 2 } else { 4 },
            },
            M::Lea if n == 2 && k1 == OpKind::Memory => {
                let size = op_size(inst, 0);
                Op::Lea {
                    size,
                    dst: gpr(inst, 0, size)?,
                    mem: mem(),
                }
            }
            M::Push if n == 1 => {
                let size = stack_op_size(inst);
                match k0 {
                    // The register is read at the stack operand size, as
                    // `read_op` does (it is the register's own size).
                    OpKind::Register => {
                        let (src, _) = Gpr::of(inst.op0_register())?;
                        Op::PushR { size, src }
                    }
                    k if is_imm(k) => Op::PushI {
                        size,
                        imm: imm(inst, 0, size)?,
                    },
                    OpKind::Memory => Op::PushM { size, mem: mem() },
                    _ => return None,
                }
            }
            M::Pop if n == 1 && k0 == OpKind::Register => {
                let (dst, dsize) = Gpr::of(inst.op0_register())?;
                Op::PopR {
                    size: stack_op_size(inst),
                    dsize,
                    dst,
                }
            }
            M::Call if n == 1 && matches!(k0, OpKind::NearBranch16 | OpKind::NearBranch32) => Op::CallRel {
                size: stack_op_size(inst),
                target: inst.near_branch_target() as u32,
            },
            M::Jmp if n == 1 && matches!(k0, OpKind::NearBranch16 | OpKind::NearBranch32) => Op::JmpRel {
                target: inst.near_branch_target() as u32,
            },
            M::Call | M::Jmp if n == 1 => {
                let call = m == M::Call;
                let size = op_size(inst, 0);
                match k0 {
                    OpKind::Register => {
                        let src = gpr(inst, 0, size)?;
                        if call {
                            Op::CallR { size, src }
                        } else {
                            Op::JmpR { size, src }
                        }
                    }
                    // Far pointers in memory are far transfers.
                    OpKind::Memory if !matches!(inst.memory_size(), MemorySize::SegPtr16 | MemorySize::SegPtr32) => {
                        if call {
                            Op::CallM { size, mem: mem() }
                        } else {
                            Op::JmpM { size, mem: mem() }
                        }
                    }
                    _ => return None,
                }
            }
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
                if is_string_op(inst) && !inst.has_rep_prefix() && !inst.has_repne_prefix() =>
            {
                let (op, size) = string::op_of(m);
                Op::Str {
                    op,
                    size,
                    a32: string::addr32(inst),
                    src: seg_of(inst.memory_segment()),
                }
            }
            M::Ret => Op::Ret {
                size: if matches!(inst.code(), Code::Retnw | Code::Retnw_imm16) {
                    2
                } else {
                    4
                },
                imm: if n > 0 { u32::from(inst.immediate16()) } else { 0 },
            },
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
            | M::Jg => Op::Jcc {
                cc: datamov::condition_of(inst),
                target: inst.near_branch_target() as u32,
            },
            m if datamov::is_setcc(m) => {
                let cc = datamov::condition_of(inst);
                match k0 {
                    OpKind::Register => Op::Setcc {
                        cc,
                        dst: gpr(inst, 0, 1)?,
                    },
                    OpKind::Memory => Op::SetccM { cc, mem: mem() },
                    _ => return None,
                }
            }
            M::Bswap if n == 1 && k0 == OpKind::Register && op_size(inst, 0) == 4 => {
                Op::Bswap { dst: gpr(inst, 0, 4)? }
            }
            M::Xchg if n == 2 && k0 == OpKind::Register && k1 == OpKind::Register => {
                let size = op_size(inst, 0);
                Op::XchgRR {
                    size,
                    a: gpr(inst, 0, size)?,
                    b: gpr(inst, 1, size)?,
                }
            }
            m if datamov::is_cmov(m) => {
                if n != 2 || k0 != OpKind::Register {
                    return None;
                }
                let size = op_size(inst, 0);
                let (cc, dst) = (datamov::condition_of(inst), gpr(inst, 0, size)?);
                match k1 {
                    OpKind::Register => Op::CmovRR {
                        cc,
                        size,
                        dst,
                        src: gpr(inst, 1, size)?,
                    },
                    OpKind::Memory => Op::CmovRM {
                        cc,
                        size,
                        dst,
                        mem: mem(),
                    },
                    _ => return None,
                }
            }
            M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar => {
                let op = ShiftOp::of(m)?;
                if n != 2 || k0 != OpKind::Register {
                    return None;
                }
                let size = op_size(inst, 0);
                let dst = gpr(inst, 0, size)?;
                match k1 {
                    OpKind::Immediate8 => Op::ShiftRI {
                        op,
                        size,
                        dst,
                        count: inst.immediate8(),
                    },
                    OpKind::Register if inst.op1_register() == iced_x86::Register::CL => Op::ShiftRCl { op, size, dst },
                    _ => return None,
                }
            }
            M::Cmpxchg if n == 2 && k0 == OpKind::Memory && k1 == OpKind::Register => {
                let size = op_size(inst, 0);
                Op::CmpxchgMR {
                    size,
                    mem: mem(),
                    src: gpr(inst, 1, size)?,
                }
            }
            M::Shld | M::Shrd => {
                if n != 3 || k0 != OpKind::Register || k1 != OpKind::Register {
                    return None;
                }
                let size = op_size(inst, 0);
                let count = match inst.op2_kind() {
                    OpKind::Immediate8 => Some(inst.immediate8()),
                    OpKind::Register if inst.op2_register() == iced_x86::Register::CL => None,
                    _ => return None,
                };
                Op::DshiftRR {
                    left: m == M::Shld,
                    size,
                    dst: gpr(inst, 0, size)?,
                    src: gpr(inst, 1, size)?,
                    count,
                }
            }
            M::Imul if n == 2 || n == 3 => {
                let size = op_size(inst, 0);
                let dst = gpr(inst, 0, size)?;
                match (n, k1) {
                    (2, OpKind::Register) => Op::ImulRR {
                        size,
                        dst,
                        src: gpr(inst, 1, size)?,
                    },
                    (2, OpKind::Memory) => Op::ImulRM { size, dst, mem: mem() },
                    (3, OpKind::Register) => Op::ImulRRI {
                        size,
                        dst,
                        src: gpr(inst, 1, size)?,
                        imm: imm(inst, 2, size)?,
                    },
                    (3, OpKind::Memory) => Op::ImulRMI {
                        size,
                        dst,
                        mem: mem(),
                        imm: imm(inst, 2, size)?,
                    },
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// Whether the shape accesses memory (and so may reach a device or write
    /// to watched code).
    #[inline]
    pub fn touches_memory(&self) -> bool {
        !matches!(
            self,
            Op::Nop
                | Op::AluRR { .. }
                | Op::AluRI { .. }
                | Op::AluR { .. }
                | Op::MovRR { .. }
                | Op::MovRI { .. }
                | Op::MovxRR { .. }
                | Op::Lea { .. }
                | Op::JmpRel { .. }
                | Op::JmpR { .. }
                | Op::Jcc { .. }
                | Op::ShiftRI { .. }
                | Op::ShiftRCl { .. }
                | Op::DshiftRR { .. }
                | Op::ImulRR { .. }
                | Op::ImulRRI { .. }
                | Op::Setcc { .. }
                | Op::Bswap { .. }
                | Op::XchgRR { .. }
                | Op::MulR { .. }
                | Op::CmovRR { .. }
        )
    }
}

impl Cpu {
    /// Executes one instruction in compact form as [`Cpu::execute`] would: EIP
    /// moves to `next_eip` (the fall-through, which CALL pushes) before the
    /// operation, a fault puts it back and is delivered. `op` must not be
    /// `Op::Generic`, and EFLAGS.TF must be clear (the single-step trap is
    /// `Cpu::execute`'s business).
    #[inline(always)]
    pub fn execute_compact<B: Bus>(&mut self, bus: &mut B, op: &Op, next_eip: u32) -> StepOutcome {
        match self.execute_compact_or_fault(bus, op, next_eip) {
            Ok(outcome) => outcome,
            Err(f) => self.raise(bus, f),
        }
    }

    /// [`Cpu::execute_compact`] with a fault returned undelivered, the
    /// state as before the instruction (the raw engine's monitor takes it).
    #[inline(always)]
    pub fn execute_compact_or_fault<B: Bus>(&mut self, bus: &mut B, op: &Op, next_eip: u32) -> Result<StepOutcome> {
        let start = self.state.eip;
        self.start_eip = start;
        self.state.interrupt_shadow = false;
        self.state.eip = next_eip;
        match self.run_compact(bus, op) {
            Ok(()) => {
                self.icount += 1;
                Ok(StepOutcome::Retired)
            }
            Err(f) => {
                // Nothing but EIP was written before the fault.
                self.state.eip = start;
                Err(f)
            }
        }
    }

    #[inline(always)]
    fn run_compact<B: Bus>(&mut self, bus: &mut B, op: &Op) -> Result<()> {
        let cf = self.state.eflags & CF;
        match *op {
            Op::Generic | Op::Nop => {}
            // The size is resolved once, so each operation is compiled for it.
            Op::AluRR { op, size, dst, src } => by_size!(size, self.alu_rr(op, dst, src, cf)),
            Op::AluRI { op, size, dst, imm } => by_size!(size, self.alu_ri(op, dst, imm, cf)),
            Op::AluRM { op, size, dst, mem } => by_size!(size, self.alu_rm(bus, op, dst, mem, cf))?,
            Op::AluMR { op, size, mem, src } => {
                let b = src.read(&self.state.regs, size);
                by_size!(size, self.alu_mem(bus, op, mem, b, cf))?;
            }
            Op::AluMI { op, size, mem, imm } => by_size!(size, self.alu_mem(bus, op, mem, imm, cf))?,
            Op::AluR { op, size, dst } => by_size!(size, self.alu_ri(op, dst, 0, cf)),
            Op::AluM { op, size, mem } => by_size!(size, self.alu_mem(bus, op, mem, 0, cf))?,
            Op::MovRR { size, dst, src } => by_size!(size, self.mov_rr(dst, src)),
            Op::MovRI { size, dst, imm } => dst.write(&mut self.state.regs, size, imm),
            Op::MovRM { size, dst, mem } => by_size!(size, self.mov_rm(bus, dst, mem))?,
            Op::MovMR { size, mem, src } => {
                let v = src.read(&self.state.regs, size);
                self.write_mem(bus, mem.seg, mem.offset(&self.state.regs), size, v)?;
            }
            Op::MovMI { size, mem, imm } => {
                self.write_mem(bus, mem.seg, mem.offset(&self.state.regs), size, imm)?;
            }
            Op::MovxRR {
                signed,
                dsize,
                ssize,
                dst,
                src,
            } => {
                let v = src.read(&self.state.regs, ssize);
                dst.write(&mut self.state.regs, dsize, datamov::extend(v, ssize, signed, dsize));
            }
            Op::MovxRM {
                signed,
                dsize,
                ssize,
                dst,
                mem,
            } => {
                let v = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), ssize)?;
                dst.write(&mut self.state.regs, dsize, datamov::extend(v, ssize, signed, dsize));
            }
            Op::Lea { size, dst, mem } => {
                let ea = mem.offset(&self.state.regs);
                dst.write(&mut self.state.regs, size, datamov::lea(ea, size));
            }
            Op::PushR { size, src } => {
                // PUSH ESP pushes the value before the push (80286 and later).
                let v = src.read(&self.state.regs, size);
                self.push(bus, size, v)?;
            }
            Op::PushI { size, imm } => self.push(bus, size, imm)?,
            Op::PushM { size, mem } => {
                // The operand is read before ESP moves (PUSH [ESP] pushes
                // what was at the top).
                let v = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                self.push(bus, size, v)?;
            }
            Op::Leave { size } => stack::leave(self, bus, size)?,
            Op::Rdtsc => system::rdtsc(self)?,
            Op::DivR { size, src } => {
                let v = src.read(&self.state.regs, size);
                muldiv::one_operand(self, Mnemonic::Div, size, v)?;
            }
            Op::DivM { size, mem } => {
                let v = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                muldiv::one_operand(self, Mnemonic::Div, size, v)?;
            }
            Op::MulR { size, src } => {
                let v = src.read(&self.state.regs, size);
                muldiv::one_operand(self, Mnemonic::Mul, size, v)?;
            }
            Op::PopR { size, dsize, dst } => {
                let v = self.pop(bus, size)?;
                dst.write(&mut self.state.regs, dsize, v);
            }
            Op::CallRel { size, target } => control::near_call(self, bus, target, size)?,
            Op::Ret { size, imm } => control::near_ret(self, bus, size, imm)?,
            Op::JmpRel { target } => self.near_jump(target)?,
            Op::CallR { size, src } => {
                let target = src.read(&self.state.regs, size);
                control::near_call(self, bus, target, size)?;
            }
            Op::CallM { size, mem } => {
                let target = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                control::near_call(self, bus, target, size)?;
            }
            Op::JmpR { size, src } => self.near_jump(src.read(&self.state.regs, size))?,
            Op::JmpM { size, mem } => {
                let target = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                self.near_jump(target)?;
            }
            Op::Str { op, size, a32, src } => {
                string::once(self, bus, op, size, a32, src)?;
            }
            Op::Jcc { cc, target } => control::jcc_to(self, cc, target)?,
            Op::Setcc { cc, dst } => {
                let v = u32::from(flags::condition(self.state.eflags, cc));
                dst.write(&mut self.state.regs, 1, v);
            }
            Op::SetccM { cc, mem } => {
                let v = u32::from(flags::condition(self.state.eflags, cc));
                self.write_mem(bus, mem.seg, mem.offset(&self.state.regs), 1, v)?;
            }
            Op::Bswap { dst } => {
                let v = dst.read(&self.state.regs, 4);
                dst.write(&mut self.state.regs, 4, datamov::bswap32(v));
            }
            Op::XchgRR { size, a, b } => {
                let (va, vb) = (a.read(&self.state.regs, size), b.read(&self.state.regs, size));
                a.write(&mut self.state.regs, size, vb);
                b.write(&mut self.state.regs, size, va);
            }
            Op::CmovRR { cc, size, dst, src } => {
                if flags::condition(self.state.eflags, cc) {
                    let v = src.read(&self.state.regs, size);
                    dst.write(&mut self.state.regs, size, v);
                }
            }
            Op::CmovRM { cc, size, dst, mem } => {
                let v = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                if flags::condition(self.state.eflags, cc) {
                    dst.write(&mut self.state.regs, size, v);
                }
            }
            Op::ShiftRI { op, size, dst, count } => self.shift_reg(op, size, dst, u32::from(count)),
            Op::ShiftRCl { op, size, dst } => {
                let count = self.state.regs[ECX] & 0xFF;
                self.shift_reg(op, size, dst, count);
            }
            Op::CmpxchgMR { size, mem, src } => {
                let off = mem.offset(&self.state.regs);
                let d = self.read_mem(bus, mem.seg, off, size)?;
                let s = src.read(&self.state.regs, size);
                let (written, eax, f) = datamov::cmpxchg(self.state.regs[EAX], d, s, size);
                self.write_mem(bus, mem.seg, off, size, written)?;
                if let Some(eax) = eax {
                    self.state.regs[EAX] = eax;
                }
                self.set_status(f);
            }
            Op::DshiftRR {
                left,
                size,
                dst,
                src,
                count,
            } => {
                let count = count.map_or(self.state.regs[ECX] & 0xFF, u32::from);
                let (a, b) = (dst.read(&self.state.regs, size), src.read(&self.state.regs, size));
                if let Some((r, f)) = shift::double(left, a, b, count, size) {
                    dst.write(&mut self.state.regs, size, r);
                    self.set_status(f);
                }
            }
            Op::ImulRR { size, dst, src } => {
                let a = dst.read(&self.state.regs, size);
                let b = src.read(&self.state.regs, size);
                self.imul_reg(size, dst, a, b);
            }
            Op::ImulRM { size, dst, mem } => {
                let b = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                let a = dst.read(&self.state.regs, size);
                self.imul_reg(size, dst, a, b);
            }
            Op::ImulRRI { size, dst, src, imm } => {
                let a = src.read(&self.state.regs, size);
                self.imul_reg(size, dst, a, imm);
            }
            Op::ImulRMI { size, dst, mem, imm } => {
                let a = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                self.imul_reg(size, dst, a, imm);
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn alu_rr<const SIZE: u8>(&mut self, op: AluOp, dst: Gpr, src: Gpr, cf: u32) {
        let b = src.read(&self.state.regs, SIZE);
        self.alu_ri::<SIZE>(op, dst, b, cf);
    }

    /// The operation on a register and `b` (ignored by the unary ones).
    #[inline(always)]
    fn alu_ri<const SIZE: u8>(&mut self, op: AluOp, dst: Gpr, b: u32, cf: u32) {
        let a = dst.read(&self.state.regs, SIZE);
        let out = alu::compute(op, a, b, cf, SIZE);
        if out.write {
            dst.write(&mut self.state.regs, SIZE, out.result);
        }
        self.apply_status(out.flags, out.flag_mask);
    }

    #[inline(always)]
    fn alu_rm<const SIZE: u8>(&mut self, bus: &mut impl Bus, op: AluOp, dst: Gpr, mem: MemRef, cf: u32) -> Result<()> {
        let b = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), SIZE)?;
        self.alu_ri::<SIZE>(op, dst, b, cf);
        Ok(())
    }

    /// A read-modify-write (or, for CMP and TEST, read) of the memory operand;
    /// the flags change only once the write has succeeded.
    #[inline(always)]
    fn alu_mem<const SIZE: u8>(&mut self, bus: &mut impl Bus, op: AluOp, mem: MemRef, b: u32, cf: u32) -> Result<()> {
        let off = mem.offset(&self.state.regs);
        let a = self.read_mem(bus, mem.seg, off, SIZE)?;
        let out = alu::compute(op, a, b, cf, SIZE);
        if out.write {
            self.write_mem(bus, mem.seg, off, SIZE, out.result)?;
        }
        self.apply_status(out.flags, out.flag_mask);
        Ok(())
    }

    #[inline(always)]
    fn mov_rr<const SIZE: u8>(&mut self, dst: Gpr, src: Gpr) {
        let v = src.read(&self.state.regs, SIZE);
        dst.write(&mut self.state.regs, SIZE, v);
    }

    #[inline(always)]
    fn mov_rm<const SIZE: u8>(&mut self, bus: &mut impl Bus, dst: Gpr, mem: MemRef) -> Result<()> {
        let v = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), SIZE)?;
        dst.write(&mut self.state.regs, SIZE, v);
        Ok(())
    }

    #[inline(always)]
    fn shift_reg(&mut self, op: ShiftOp, size: u8, dst: Gpr, count: u32) {
        let a = dst.read(&self.state.regs, size);
        let (r, f) = shift::compute(op, a, count, self.state.eflags, size);
        dst.write(&mut self.state.regs, size, r);
        self.set_status(f);
    }

    #[inline(always)]
    fn imul_reg(&mut self, size: u8, dst: Gpr, a: u32, b: u32) {
        let (lo, f) = muldiv::imul_trunc(a, b, size);
        self.set_status(f);
        dst.write(&mut self.state.regs, size, lo);
    }
}

#[cfg(test)]
mod tests {
    //! Each shape against the reference on the same bytes and the same
    //! machine: the reference steps (decode, `Cpu::execute`); the compact
    //! side decodes likewise and runs `Cpu::execute_compact`. Outcome, CPU
    //! state, instruction count and memory must agree, faults included.

    use super::Op;
    use crate::cpu::state::{flags as fl, reg, SegReg};
    use crate::cpu::StepOutcome;
    use crate::exec::testutil::*;
    use iced_x86::Instruction;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as u32
        }
    }

    /// Registers that point into the data area (so memory operands land in
    /// RAM) with random low bits, ESP as the setup left it, random status
    /// flags and DF, random data and random words around the stack top.
    fn randomize(m: &mut Machine, rng: &mut Rng, real: bool) {
        for r in 0..8 {
            if r == reg::ESP {
                continue;
            }
            let v = rng.next();
            let v = if real {
                (v & 0xFFFF_0FFF) | 0x100
            } else {
                DATA + 0x100 + (v & 0x7FF)
            };
            m.set_reg(r, v);
        }
        let f = rng.next() & (fl::STATUS | fl::DF);
        m.set_flags(f);
        for i in 0..0x1000 {
            m.w32(DATA + i * 4, rng.next());
        }
        let ss = &m.cpu.state.segs[SegReg::Ss as usize];
        let top = ss.base.wrapping_add(m.cpu.state.regs[reg::ESP]) & !3;
        for i in 0..32 {
            let a = top.wrapping_sub(64).wrapping_add(i * 4);
            if (a as usize) + 4 <= MEM_SIZE {
                m.w32(a, rng.next());
            }
        }
    }

    fn compact_step(m: &mut Machine) -> (Op, StepOutcome) {
        let mut inst = Instruction::default();
        if let Err(f) = m.cpu.decode_into(&mut m.bus, &mut inst) {
            panic!("decode fault {f}");
        }
        let op = Op::build(&inst);
        let mask = if m.cpu.state.code32() { 0xFFFF_FFFF } else { 0xFFFF };
        let next = m.cpu.state.eip.wrapping_add(inst.len() as u32) & mask;
        if op == Op::Generic {
            return (op, m.cpu.execute(&mut m.bus, &inst));
        }
        (op, m.cpu.execute_compact(&mut m.bus, &op, next))
    }

    /// Runs `bytes` on both paths from machines `setup` builds, over a few
    /// random states; the bytes must have a compact form.
    #[track_caller]
    fn agree(setup: &dyn Fn() -> Machine, bytes: &[u8], real: bool) {
        agree_with(setup, bytes, real, false, &|_| {});
    }

    /// `agree`, and the reference must raise an exception each time.
    #[track_caller]
    fn agree_faulting(setup: &dyn Fn() -> Machine, bytes: &[u8]) {
        agree_with(setup, bytes, false, true, &|_| {});
    }

    #[track_caller]
    fn agree_with(setup: &dyn Fn() -> Machine, bytes: &[u8], real: bool, faults: bool, prepare: &dyn Fn(&mut Machine)) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ bytes.iter().fold(0, |h, &b| h * 31 + u64::from(b)));
        for round in 0..24 {
            let mut a = setup();
            randomize(&mut a, &mut rng, real);
            prepare(&mut a);
            a.code(bytes);
            let mut b = setup();
            b.cpu.state = a.cpu.state.clone();
            b.bus.mem.clone_from(&a.bus.mem);
            let want = a.step();
            let (op, got) = compact_step(&mut b);
            assert_ne!(op, Op::Generic, "{bytes:02x?} has no compact form");
            let what = format!("{bytes:02x?} ({op:?}) round {round}");
            assert_eq!(got, want, "{what}: outcome");
            if faults {
                assert!(matches!(want, StepOutcome::Exception(_)), "{what}: no fault ({want:?})");
            }
            assert_eq!(b.cpu.state, a.cpu.state, "{what}: state");
            assert_eq!(b.cpu.icount, a.cpu.icount, "{what}: icount");
            assert!(b.bus.mem == a.bus.mem, "{what}: memory");
        }
    }

    fn flat() -> Machine {
        Machine::flat32()
    }

    fn real() -> Machine {
        Machine::real16()
    }

    const D: [u8; 4] = DATA.to_le_bytes();

    #[test]
    fn alu_shapes_agree() {
        let forms: &[&[u8]] = &[
            &[0x01, 0xD8],                                     // add eax, ebx
            &[0x00, 0xFC],                                     // add ah, bh
            &[0x28, 0xE1],                                     // sub cl, ah
            &[0x66, 0x11, 0xD8],                               // adc ax, bx
            &[0x19, 0xCA],                                     // sbb edx, ecx
            &[0x21, 0xF7],                                     // and edi, esi
            &[0x08, 0xF4],                                     // or ah, dh
            &[0x31, 0xC0],                                     // xor eax, eax
            &[0x39, 0xD8],                                     // cmp eax, ebx
            &[0x84, 0xE4],                                     // test ah, ah
            &[0x80, 0xC4, 0x7F],                               // add ah, 7Fh
            &[0x83, 0xE8, 0xFF],                               // sub eax, -1
            &[0x66, 0x81, 0xF9, 0x34, 0x12],                   // cmp cx, 1234h
            &[0x25, 0x20, 0x83, 0xB8, 0xED],                   // and eax, EDB88320h
            &[0xA8, 0x80],                                     // test al, 80h
            &[0x03, 0x44, 0xB3, 0x10],                         // add eax, [ebx+esi*4+10h]
            &[0x22, 0x63, 0x01],                               // and ah, [ebx+1]
            &[0x01, 0x43, 0x04],                               // add [ebx+4], eax
            &[0x30, 0x7B, 0xFF],                               // xor [ebx-1], bh
            &[0x66, 0x29, 0x0C, 0x4E],                         // sub [esi+ecx*2], cx
            &[0x85, 0x03],                                     // test [ebx], eax
            &[0x80, 0x3C, 0x1E, 0x00],                         // cmp byte [esi+ebx], 0
            &[0x83, 0x03, 0xFF],                               // add dword [ebx], -1
            &[0x81, 0x35, D[0], D[1], D[2], D[3], 1, 2, 3, 4], // xor [DATA], 04030201h
            &[0x67, 0x01, 0x07],                               // add [bx], eax (16-bit addressing)
            &[0x40],                                           // inc eax
            &[0xFE, 0xCC],                                     // dec ah
            &[0x66, 0x48],                                     // dec ax
            &[0xF7, 0xD9],                                     // neg ecx
            &[0xF6, 0xD7],                                     // not bh
            &[0xFF, 0x03],                                     // inc dword [ebx]
            &[0xF6, 0x5B, 0x02],                               // neg byte [ebx+2]
            &[0x66, 0xF7, 0x13],                               // not word [ebx]
        ];
        for f in forms {
            agree(&flat, f, false);
        }
        // Real mode: 16-bit operands and addressing, operand-size prefix.
        let forms: &[&[u8]] = &[
            &[0x01, 0xD8],       // add ax, bx
            &[0x03, 0x40, 0x02], // add ax, [bx+si+2]
            &[0x01, 0x46, 0xFE], // add [bp-2], ax (SS)
            &[0x66, 0x01, 0x07], // add [bx], eax
            &[0x80, 0x07, 0x80], // add byte [bx], 80h
            &[0x26, 0x31, 0x05], // xor [es:di], ax
            &[0x66, 0x40],       // inc eax
        ];
        for f in forms {
            agree(&real, f, true);
        }
    }

    #[test]
    fn mov_lea_shapes_agree() {
        let forms: &[&[u8]] = &[
            &[0x89, 0xD8],                   // mov eax, ebx
            &[0x88, 0xE0],                   // mov al, ah
            &[0x88, 0xC7],                   // mov bh, al
            &[0x66, 0x89, 0xCA],             // mov dx, cx
            &[0xB4, 0x99],                   // mov ah, 99h
            &[0xBA, 0x78, 0x56, 0x34, 0x12], // mov edx, 12345678h
            &[0x8B, 0x4B, 0x08],             // mov ecx, [ebx+8]
            &[0x8A, 0x24, 0x8E],             // mov ah, [esi+ecx*4]
            &[0x89, 0x44, 0x24, 0x04],       // mov [esp+4], eax
            &[0x88, 0x7E, 0x01],             // mov [esi+1], bh
            &[0xC6, 0x43, 0x01, 0x99],       // mov byte [ebx+1], 99h
            &[0x66, 0xC7, 0x03, 0x34, 0x12], // mov word [ebx], 1234h
            &[0xA1, D[0], D[1], D[2], D[3]], // mov eax, [DATA]
            &[0x0F, 0xB6, 0xC4],             // movzx eax, ah
            &[0x0F, 0xBE, 0xC3],             // movsx eax, bl
            &[0x66, 0x0F, 0xBE, 0xC7],       // movsx ax, bh
            &[0x0F, 0xBF, 0x43, 0x02],       // movsx eax, word [ebx+2]
            &[0x0F, 0xB6, 0x0F],             // movzx ecx, byte [edi]
            &[0x8D, 0x44, 0x98, 0x10],       // lea eax, [eax+ebx*4+10h]
            &[0x8D, 0x0C, 0x09],             // lea ecx, [ecx+ecx]
            &[0x66, 0x8D, 0x43, 0xFF],       // lea ax, [ebx-1]
            &[0x67, 0x8D, 0x40, 0x7F],       // lea eax, [bx+si+7Fh]
            &[0x90],                         // nop
            &[0x0F, 0x1F, 0x44, 0x00, 0x00], // nop dword [eax+eax]
        ];
        for f in forms {
            agree(&flat, f, false);
        }
        let forms: &[&[u8]] = &[
            &[0x8B, 0x00],       // mov ax, [bx+si]
            &[0x8D, 0x41, 0xF0], // lea ax, [bx+di-10h]
            &[0x66, 0x8B, 0x07], // mov eax, [bx]
        ];
        for f in forms {
            agree(&real, f, true);
        }
    }

    #[test]
    fn shift_imul_shapes_agree() {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        // Every rotate/shift operation by 1, by an immediate and by CL, on a
        // high byte register, a word and a dword.
        for ext in [0u8, 1, 2, 3, 4, 5, 7] {
            for count in [0u8, 1, 7, 8, 9, 16, 17, 31, 32] {
                forms.push(vec![0xC0, 0xC4 | (ext << 3), count]); // op ah, count
                forms.push(vec![0x66, 0xC1, 0xC1 | (ext << 3), count]); // op cx, count
                forms.push(vec![0xC1, 0xC3 | (ext << 3), count]); // op ebx, count
            }
            forms.push(vec![0xD1, 0xC0 | (ext << 3)]); // op eax, 1
            forms.push(vec![0xD2, 0xC7 | (ext << 3)]); // op bh, cl
            forms.push(vec![0xD3, 0xC6 | (ext << 3)]); // op esi, cl
        }
        // SHLD and SHRD by an immediate (past the operand's width too) and by
        // CL, at 32 and 16 bits, a register with itself included.
        for op in [0xA4u8, 0xAC] {
            for count in [0u8, 1, 2, 7, 15, 16, 17, 31, 32, 33] {
                forms.push(vec![0x0F, op, 0xD8, count]); // op eax, ebx, count
                forms.push(vec![0x66, 0x0F, op, 0xCA, count]); // op dx, cx, count
                forms.push(vec![0x0F, op, 0xF6, count]); // op esi, esi, count
            }
            forms.push(vec![0x0F, op + 1, 0xC7]); // op edi, eax, cl
            forms.push(vec![0x66, 0x0F, op + 1, 0xD3]); // op bx, dx, cl
        }
        forms.push(vec![0x0F, 0xAF, 0xC3]); // imul eax, ebx
        forms.push(vec![0x66, 0x0F, 0xAF, 0xCA]); // imul cx, dx
        forms.push(vec![0x0F, 0xAF, 0x43, 0x04]); // imul eax, [ebx+4]
        forms.push(vec![0x69, 0xD1, 0xB1, 0x79, 0x37, 0x9E]); // imul edx, ecx, 9E3779B1h
        forms.push(vec![0x6B, 0xC0, 0xF0]); // imul eax, eax, -10h
        forms.push(vec![0x6B, 0x0B, 0x7F]); // imul ecx, [ebx], 7Fh
        for f in &forms {
            agree(&flat, f, false);
        }
    }

    // CMPXCHG with memory at each size: the accumulator unlike the operand
    // (random), and like it (made so), where the source is written.
    #[test]
    fn cmpxchg_shape_agrees() {
        let forms: [&[u8]; 4] = [
            &[0x0F, 0xB1, 0x0B],             // cmpxchg [ebx], ecx
            &[0x66, 0x0F, 0xB1, 0x53, 0x06], // cmpxchg [ebx+6], dx
            &[0x0F, 0xB0, 0x3B],             // cmpxchg [ebx], bh
            &[0x0F, 0xB1, 0x00],             // cmpxchg [eax], eax
        ];
        for f in forms {
            agree(&flat, f, false);
            let disp = if f[0] == 0x66 { 6 } else { 0 };
            agree_with(&flat, f, false, false, &|m: &mut Machine| {
                let at = m.cpu.state.regs[if f[2] == 0x00 { reg::EAX } else { reg::EBX }] + disp;
                let eax = m.cpu.state.regs[reg::EAX];
                m.w32(at, eax);
            });
        }
    }

    #[test]
    fn setcc_cmov_shapes_agree() {
        // Every condition (random flags each round), on byte registers AH..BH
        // included and on words and dwords.
        for cc in 0..16u8 {
            agree(&flat, &[0x0F, 0x90 | cc, 0xC4], false); // setcc ah
            agree(&flat, &[0x0F, 0x90 | cc, 0xC1], false); // setcc cl
            agree(&flat, &[0x0F, 0x40 | cc, 0xC3], false); // cmovcc eax, ebx
            agree(&flat, &[0x66, 0x0F, 0x40 | cc, 0xCA], false); // cmovcc cx, dx
            agree(&flat, &[0x0F, 0x40 | cc, 0x03], false); // cmovcc eax, [ebx]
            agree(&flat, &[0x66, 0x0F, 0x40 | cc, 0x4E, 0x06], false); // cmovcc cx, [esi+6]
            agree(&flat, &[0x0F, 0x90 | cc, 0x03], false); // setcc [ebx]
            agree(&flat, &[0x0F, 0x90 | cc, 0x46, 0x07], false); // setcc [esi+7]
        }
        agree(&real, &[0x0F, 0x43, 0x07], true); // cmovae ax, [bx]
        agree(&real, &[0x0F, 0x94, 0xC7], true); // sete bh
        agree(&real, &[0x0F, 0x42, 0xC1], true); // cmovb ax, cx
        agree(&real, &[0x0F, 0x95, 0x07], true); // setne [bx]
    }

    #[test]
    fn bswap_xchg_shapes_agree() {
        agree(&flat, &[0x0F, 0xCB], false); // bswap ebx
        agree(&real, &[0x66, 0x0F, 0xCB], true); // bswap ebx
        let forms: &[&[u8]] = &[
            &[0x87, 0xCA],       // xchg edx, ecx
            &[0x87, 0xDB],       // xchg ebx, ebx
            &[0x93],             // xchg ebx, eax
            &[0x66, 0x87, 0xF1], // xchg cx, si
            &[0x86, 0xE0],       // xchg al, ah
            &[0x86, 0xFB],       // xchg bl, bh
            &[0x86, 0xE4],       // xchg ah, ah
            &[0xF7, 0xE3],       // mul ebx
            &[0xF7, 0xE0],       // mul eax
            &[0xF7, 0xE2],       // mul edx
            &[0x66, 0xF7, 0xE1], // mul cx
            &[0xF6, 0xE4],       // mul ah
        ];
        for f in forms {
            agree(&flat, f, false);
            agree(&real, f, true);
        }
    }

    #[test]
    fn stack_and_branch_shapes_agree() {
        let forms: &[&[u8]] = &[
            &[0x50],                         // push eax
            &[0x54],                         // push esp
            &[0x66, 0x53],                   // push bx
            &[0x6A, 0xFF],                   // push -1
            &[0x68, 1, 2, 3, 4],             // push 04030201h
            &[0x5B],                         // pop ebx
            &[0x5C],                         // pop esp
            &[0x66, 0x5F],                   // pop di
            &[0xE8, 0x10, 0, 0, 0],          // call $+15h
            &[0xC3],                         // ret
            &[0xC2, 0x08, 0x00],             // ret 8
            &[0xEB, 0xFE],                   // jmp $
            &[0xE9, 0x00, 0x10, 0, 0],       // jmp $+1005h
            &[0x74, 0x10],                   // je
            &[0x7C, 0xF0],                   // jl
            &[0x0F, 0x87, 0, 1, 0, 0],       // ja near
            &[0xFF, 0xD0],                   // call eax
            &[0xFF, 0xE3],                   // jmp ebx
            &[0xFF, 0x13],                   // call [ebx]
            &[0xFF, 0x64, 0x24, 0x04],       // jmp [esp+4]
            &[0xA4],                         // movsb
            &[0x66, 0xA5],                   // movsw
            &[0xAB],                         // stosd
            &[0xAC],                         // lodsb
            &[0xA7],                         // cmpsd
            &[0xAE],                         // scasb
            &[0x26, 0xA4],                   // movsb with ES as the source
            &[0x67, 0xA5],                   // movsd with SI/DI
            &[0xFF, 0x33],                   // push dword [ebx]
            &[0xFF, 0x74, 0x24, 0x04],       // push dword [esp+4]
            &[0xFF, 0x34, 0x24],             // push dword [esp]
            &[0x66, 0xFF, 0x75, 0x08],       // push word [ebp+8]
            &[0x2E, 0xFF, 0x36, 0, 0, 0, 0], // push dword cs:[0] (moffs-like disp32)
            &[0xC9],                         // leave
            &[0x66, 0xC9],                   // leave (BP)
            &[0xF7, 0xF3],                   // div ebx (random EDX: #DE often)
            &[0xF7, 0xF0],                   // div eax
            &[0xF7, 0xF2],                   // div edx (always #DE)
            &[0xF7, 0x33],                   // div dword [ebx]
            &[0x66, 0xF7, 0xF1],             // div cx
            &[0xF6, 0xF3],                   // div bl
            &[0xF6, 0xF4],                   // div ah
            &[0x0F, 0x31],                   // rdtsc
        ];
        for f in forms {
            agree(&flat, f, false);
        }
        let forms: &[&[u8]] = &[
            &[0x50],             // push ax
            &[0x66, 0x50],       // push eax
            &[0x58],             // pop ax
            &[0xE8, 0x10, 0x00], // call near
            &[0xC3],             // ret
            &[0x75, 0x80],       // jne back
            &[0xA5],             // movsw
            &[0xAA],             // stosb
            &[0xFF, 0x37],       // push word [bx]
            &[0xC9],             // leave (BP)
            &[0x66, 0xC9],       // leave (EBP)
        ];
        for f in forms {
            agree(&real, f, true);
        }
    }

    /// A data segment of 0x100 bytes at DATA.
    fn small_ds() -> Machine {
        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(DATA, 0xFF, ACC_DATA0, 0x4));
        m.load_seg(SegReg::Ds, (FREE_SLOT * 8) as u16);
        m
    }

    /// CPL 3 with paging, the data page read-only and the stack's pages
    /// (below and above the stack top) absent.
    fn user_readonly() -> Machine {
        let mut m = Machine::flat32().paging().user();
        m.w32(PAGE_TABLE + 4 * (DATA >> 12), DATA | 5);
        m.w32(PAGE_TABLE + 4 * ((USER_STACK_TOP - 1) >> 12), 0);
        m.w32(PAGE_TABLE + 4 * (USER_STACK_TOP >> 12), 0);
        m.cpu.tlb.flush_all();
        m
    }

    /// A code segment whose limit ends 0x20 bytes after the code.
    fn short_cs() -> Machine {
        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(0, CODE + 0x20, ACC_CODE0, 0x4));
        m.load_seg(SegReg::Cs, (FREE_SLOT * 8) as u16);
        m
    }

    // Faults leave nothing changed but what the reference's delivery changes
    // (SDM Vol. 3A, 6.5), whichever access raises them.
    #[test]
    fn faulting_shapes_agree() {
        // Every register points at DATA+0x100.. here: beyond the limit.
        let forms: &[&[u8]] = &[
            &[0x01, 0x03],       // add [ebx], eax
            &[0x8B, 0x03],       // mov eax, [ebx]
            &[0x89, 0x03],       // mov [ebx], eax
            &[0x0F, 0xB6, 0x03], // movzx eax, byte [ebx]
            &[0x0F, 0xAF, 0x03], // imul eax, [ebx]
            &[0x0F, 0x43, 0x03], // cmovae eax, [ebx] (read even when not taken)
            &[0x0F, 0x42, 0x03], // cmovb eax, [ebx]
            &[0xFF, 0x13],       // call [ebx]
            &[0xA4],             // movsb
            &[0x80, 0x3B, 0x00], // cmp byte [ebx], 0
            &[0xF6, 0x1B],       // neg byte [ebx]
            &[0xFF, 0x33],       // push dword [ebx]
            &[0x0F, 0x94, 0x03], // sete [ebx]
        ];
        for f in forms {
            agree_faulting(&small_ds, f);
        }
        // Reads succeed and writes raise #PF on the read-only page (after
        // the read's walk set the accessed bits); the stack is not present.
        let forms: &[&[u8]] = &[
            &[0x01, 0x03],       // add [ebx], eax
            &[0xC6, 0x03, 0x01], // mov byte [ebx], 1
            &[0xFF, 0x03],       // inc dword [ebx]
            &[0x50],             // push eax
            &[0x58],             // pop eax
            &[0xE8, 0, 0, 0, 0], // call $+5
            &[0xC3],             // ret
            &[0xFF, 0xD0],       // call eax
            &[0xAB],             // stosd
            &[0xFF, 0x33],       // push dword [ebx] (the read succeeds)
            &[0x0F, 0x9F, 0x03], // setg [ebx]
        ];
        for f in forms {
            agree_faulting(&user_readonly, f);
        }
        // Reading the read-only page is fine.
        agree(&user_readonly, &[0x8B, 0x03], false); // mov eax, [ebx]
        agree(&user_readonly, &[0x85, 0x03], false); // test [ebx], eax
        agree(&user_readonly, &[0xC9], false); // leave: EBP on the data page
                                               // Branch targets beyond the CS limit raise #GP(0) with nothing pushed.
        let forms: &[&[u8]] = &[
            &[0xE9, 0x00, 0x01, 0, 0], // jmp $+105h
            &[0xE8, 0x00, 0x01, 0, 0], // call $+105h
            &[0xC3],                   // ret (to a random address)
            &[0xFF, 0xE0],             // jmp eax (DATA+..., beyond the limit)
            &[0xFF, 0x13],             // call [ebx] (a random address)
        ];
        for f in forms {
            agree_faulting(&short_cs, f);
        }
        // Jcc faults only when taken.
        agree(&short_cs, &[0x0F, 0x84, 0, 1, 0, 0], false);
    }

    #[test]
    fn generic_forms_stay_generic() {
        use iced_x86::{Decoder, DecoderOptions};
        let forms: &[&[u8]] = &[
            &[0xF0, 0x01, 0x03],    // lock add [ebx], eax
            &[0xF3, 0xA4],          // rep movsb
            &[0x8E, 0xD8],          // mov ds, ax
            &[0x0F, 0x22, 0xC0],    // mov cr0, eax
            &[0xD1, 0x23],          // shl dword [ebx], 1
            &[0xFA],                // cli
            &[0x9C],                // pushf
            &[0xFF, 0x1B],          // call far [ebx]
            &[0xEC],                // in al, dx
            &[0x6C],                // insb
            &[0x87, 0x03],          // xchg [ebx], eax (locked)
            &[0x66, 0x0F, 0xC8],    // bswap ax (undefined)
            &[0x0F, 0xA4, 0x03, 4], // shld [ebx], eax, 4
            &[0x0F, 0xB1, 0xC8],    // cmpxchg eax, ecx
        ];
        for f in forms {
            let inst = Decoder::with_ip(32, f, 0, DecoderOptions::NONE).decode();
            assert_eq!(Op::build(&inst), Op::Generic, "{f:02x?}");
        }
    }
}
