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
use super::{control, datamov, flags, immediate, is_string_op, muldiv, op_size, seg_of, stack_op_size, Gpr, MemRef};
use crate::bus::Bus;
use crate::cpu::state::flags::CF;
use crate::cpu::state::reg::ECX;
use crate::cpu::state::SegReg;
use crate::cpu::{Cpu, Result, StepOutcome};

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
            M::Nop => Op::Nop,
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
                | Op::ImulRR { .. }
                | Op::ImulRRI { .. }
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
        let start = self.state.eip;
        self.state.interrupt_shadow = false;
        self.state.eip = next_eip;
        match self.run_compact(bus, op) {
            Ok(()) => {
                self.icount += 1;
                StepOutcome::Retired
            }
            Err(f) => {
                // Nothing but EIP was written before the fault.
                self.start_eip = start;
                self.state.eip = start;
                self.raise(bus, f)
            }
        }
    }

    #[inline(always)]
    fn run_compact<B: Bus>(&mut self, bus: &mut B, op: &Op) -> Result<()> {
        let cf = self.state.eflags & CF;
        match *op {
            Op::Generic | Op::Nop => {}
            Op::AluRR { op, size, dst, src } => {
                let a = dst.read(&self.state.regs, size);
                let b = src.read(&self.state.regs, size);
                self.alu_reg(op, size, dst, a, b, cf);
            }
            Op::AluRI { op, size, dst, imm } => {
                let a = dst.read(&self.state.regs, size);
                self.alu_reg(op, size, dst, a, imm, cf);
            }
            Op::AluRM { op, size, dst, mem } => {
                let b = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                let a = dst.read(&self.state.regs, size);
                self.alu_reg(op, size, dst, a, b, cf);
            }
            Op::AluMR { op, size, mem, src } => {
                let b = src.read(&self.state.regs, size);
                self.alu_mem(bus, op, size, mem, b, cf)?;
            }
            Op::AluMI { op, size, mem, imm } => self.alu_mem(bus, op, size, mem, imm, cf)?,
            Op::AluR { op, size, dst } => {
                let a = dst.read(&self.state.regs, size);
                self.alu_reg(op, size, dst, a, 0, cf);
            }
            Op::AluM { op, size, mem } => self.alu_mem(bus, op, size, mem, 0, cf)?,
            Op::MovRR { size, dst, src } => {
                let v = src.read(&self.state.regs, size);
                dst.write(&mut self.state.regs, size, v);
            }
            Op::MovRI { size, dst, imm } => dst.write(&mut self.state.regs, size, imm),
            Op::MovRM { size, dst, mem } => {
                let v = self.read_mem(bus, mem.seg, mem.offset(&self.state.regs), size)?;
                dst.write(&mut self.state.regs, size, v);
            }
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
            Op::ShiftRI { op, size, dst, count } => self.shift_reg(op, size, dst, u32::from(count)),
            Op::ShiftRCl { op, size, dst } => {
                let count = self.state.regs[ECX] & 0xFF;
                self.shift_reg(op, size, dst, count);
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
    fn alu_reg(&mut self, op: AluOp, size: u8, dst: Gpr, a: u32, b: u32, cf: u32) {
        let out = alu::compute(op, a, b, cf, size);
        if out.write {
            dst.write(&mut self.state.regs, size, out.result);
        }
        self.apply_status(out.flags, out.flag_mask);
    }

    /// A read-modify-write (or, for CMP and TEST, read) of the memory operand;
    /// the flags change only once the write has succeeded.
    #[inline(always)]
    fn alu_mem<B: Bus>(&mut self, bus: &mut B, op: AluOp, size: u8, mem: MemRef, b: u32, cf: u32) -> Result<()> {
        let off = mem.offset(&self.state.regs);
        let a = self.read_mem(bus, mem.seg, off, size)?;
        let out = alu::compute(op, a, b, cf, size);
        if out.write {
            self.write_mem(bus, mem.seg, off, size, out.result)?;
        }
        self.apply_status(out.flags, out.flag_mask);
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
