//! Data movement and conversion: MOV (general and segment registers), MOVZX,
//! MOVSX, XCHG, XADD, CMPXCHG, CMPXCHG8B, BSWAP, LEA, CBW/CWDE/CWD/CDQ, LAHF,
//! SAHF, XLAT, LDS/LES/LFS/LGS/LSS, CMOVcc, SETcc, SALC, NOP (SDM Vol. 1, 7.3.1
//! "Data transfer instructions"; Vol. 2, the page of each instruction).

use iced_x86::{ConditionCode, Instruction, Mnemonic, OpKind, Register};

use super::{flags, op_size, seg_of, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, STATUS, ZF};
use crate::cpu::state::reg::{EAX, EBX, ECX, EDX};
use crate::cpu::state::SegReg;
use crate::cpu::{Cpu, Fault, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    match inst.mnemonic() {
        Mnemonic::Mov => mov(cpu, bus, inst),
        Mnemonic::Movzx | Mnemonic::Movsx => {
            let ssize = op_size(inst, 1);
            let v = cpu.read_op(bus, inst, 1, ssize)?;
            let v = if inst.mnemonic() == Mnemonic::Movsx {
                flags::sext(v, ssize)
            } else {
                v
            };
            let dsize = op_size(inst, 0);
            cpu.write_op(bus, inst, 0, dsize, v & flags::mask(dsize))?;
            Ok(Flow::Next)
        }
        Mnemonic::Xchg => {
            let size = op_size(inst, 0);
            let a = cpu.read_op(bus, inst, 0, size)?;
            let b = cpu.read_op(bus, inst, 1, size)?;
            // Write the memory side first so a fault leaves registers untouched.
            if inst.op0_kind() == OpKind::Memory {
                cpu.write_op(bus, inst, 0, size, b)?;
                cpu.write_op(bus, inst, 1, size, a)?;
            } else {
                cpu.write_op(bus, inst, 1, size, a)?;
                cpu.write_op(bus, inst, 0, size, b)?;
            }
            Ok(Flow::Next)
        }
        Mnemonic::Xadd => {
            let size = op_size(inst, 0);
            let d = cpu.read_op(bus, inst, 0, size)?;
            let s = cpu.read_op(bus, inst, 1, size)?;
            let (r, f) = flags::add(d, s, 0, size);
            cpu.write_op(bus, inst, 0, size, r)?;
            cpu.write_op(bus, inst, 1, size, d)?;
            cpu.set_status(f);
            Ok(Flow::Next)
        }
        Mnemonic::Cmpxchg => {
            let size = op_size(inst, 0);
            let d = cpu.read_op(bus, inst, 0, size)?;
            let acc = cpu.state.regs[EAX] & flags::mask(size);
            let (_, f) = flags::sub(acc, d, 0, size);
            if acc == d {
                let s = cpu.read_op(bus, inst, 1, size)?;
                cpu.write_op(bus, inst, 0, size, s)?;
            } else {
                // The destination is always written (SDM: "to simplify the interface
                // to the processor's bus").
                cpu.write_op(bus, inst, 0, size, d)?;
                let eax = cpu.state.regs[EAX];
                cpu.state.regs[EAX] = (eax & !flags::mask(size)) | d;
            }
            cpu.set_status(f);
            Ok(Flow::Next)
        }
        Mnemonic::Cmpxchg8b => {
            if inst.op0_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let (seg, ea) = cpu.mem_operand(inst);
            let lo = cpu.read_mem(bus, seg, ea, 4)?;
            let hi = cpu.read_mem(bus, seg, ea.wrapping_add(4), 4)?;
            let r = &cpu.state.regs;
            if lo == r[EAX] && hi == r[EDX] {
                let (nl, nh) = (r[EBX], r[ECX]);
                cpu.write_mem(bus, seg, ea, 4, nl)?;
                cpu.write_mem(bus, seg, ea.wrapping_add(4), 4, nh)?;
                cpu.state.eflags |= ZF;
            } else {
                cpu.write_mem(bus, seg, ea, 4, lo)?;
                cpu.write_mem(bus, seg, ea.wrapping_add(4), 4, hi)?;
                cpu.state.regs[EAX] = lo;
                cpu.state.regs[EDX] = hi;
                cpu.state.eflags &= !ZF;
            }
            Ok(Flow::Next)
        }
        Mnemonic::Bswap => {
            let size = op_size(inst, 0);
            let v = cpu.read_op(bus, inst, 0, size)?;
            // With a 16-bit operand the result is undefined; real processors give 0.
            let r = if size == 4 { v.swap_bytes() } else { 0 };
            cpu.write_op(bus, inst, 0, size, r)?;
            Ok(Flow::Next)
        }
        Mnemonic::Lea => {
            if inst.op1_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let ea = cpu.effective_address(inst);
            let size = op_size(inst, 0);
            cpu.write_op(bus, inst, 0, size, ea & flags::mask(size))?;
            Ok(Flow::Next)
        }
        Mnemonic::Cbw => {
            let eax = cpu.state.regs[EAX];
            cpu.state.regs[EAX] = (eax & !0xFFFF) | (flags::sext(eax, 1) & 0xFFFF);
            Ok(Flow::Next)
        }
        Mnemonic::Cwde => {
            cpu.state.regs[EAX] = flags::sext(cpu.state.regs[EAX], 2);
            Ok(Flow::Next)
        }
        Mnemonic::Cwd => {
            let hi = if cpu.state.regs[EAX] & 0x8000 != 0 { 0xFFFF } else { 0 };
            cpu.state.regs[EDX] = (cpu.state.regs[EDX] & !0xFFFF) | hi;
            Ok(Flow::Next)
        }
        Mnemonic::Cdq => {
            cpu.state.regs[EDX] = if cpu.state.regs[EAX] & 0x8000_0000 != 0 {
                0xFFFF_FFFF
            } else {
                0
            };
            Ok(Flow::Next)
        }
        Mnemonic::Lahf => {
            let ah = (cpu.state.eflags & 0xD5) | 0x02;
            cpu.state.regs[EAX] = (cpu.state.regs[EAX] & !0xFF00) | (ah << 8);
            Ok(Flow::Next)
        }
        Mnemonic::Sahf => {
            let ah = (cpu.state.regs[EAX] >> 8) & 0xD5;
            cpu.state.eflags = (cpu.state.eflags & !(STATUS & 0xFF)) | ah;
            Ok(Flow::Next)
        }
        Mnemonic::Xlatb => {
            let v = cpu.read_op(bus, inst, 0, 1)?;
            cpu.write_reg(Register::AL, v);
            Ok(Flow::Next)
        }
        Mnemonic::Lds | Mnemonic::Les | Mnemonic::Lfs | Mnemonic::Lgs | Mnemonic::Lss => {
            if inst.op1_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let size = op_size(inst, 0);
            let (seg, ea) = cpu.mem_operand(inst);
            let off = cpu.read_mem(bus, seg, ea, size)?;
            let sel = cpu.read_mem(bus, seg, ea.wrapping_add(u32::from(size)), 2)? as u16;
            let target = match inst.mnemonic() {
                Mnemonic::Lds => SegReg::Ds,
                Mnemonic::Les => SegReg::Es,
                Mnemonic::Lfs => SegReg::Fs,
                Mnemonic::Lgs => SegReg::Gs,
                _ => SegReg::Ss,
            };
            cpu.load_segment(bus, target, sel)?;
            cpu.write_op(bus, inst, 0, size, off)?;
            Ok(Flow::Next)
        }
        Mnemonic::Salc => {
            let al = if cpu.flag(CF) { 0xFF } else { 0 };
            cpu.write_reg(Register::AL, al);
            Ok(Flow::Next)
        }
        Mnemonic::Nop => {
            // Multi-byte NOPs still compute their memory operand but never access it.
            Ok(Flow::Next)
        }
        _ => Err(Fault::ud()),
    }
}

fn mov<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let dst_reg = if inst.op0_kind() == OpKind::Register {
        inst.op0_register()
    } else {
        Register::None
    };
    if dst_reg.is_segment_register() {
        let sreg = seg_of(dst_reg);
        if sreg == SegReg::Cs {
            return Err(Fault::ud());
        }
        let sel = cpu.read_op(bus, inst, 1, 2)? as u16;
        cpu.load_segment(bus, sreg, sel)?;
        if sreg == SegReg::Ss {
            // MOV SS blocks interrupts for one instruction (SDM Vol. 3A, 6.8.3).
            cpu.state.interrupt_shadow = true;
        }
        return Ok(Flow::Next);
    }
    if inst.op1_kind() == OpKind::Register && inst.op1_register().is_segment_register() {
        let sel = cpu.read_reg(inst.op1_register());
        // To memory: always 16 bits. To a 32-bit register: zero-extended (P6 and later).
        let size = if inst.op0_kind() == OpKind::Memory {
            2
        } else {
            op_size(inst, 0)
        };
        cpu.write_op(bus, inst, 0, size, sel)?;
        return Ok(Flow::Next);
    }
    let size = op_size(inst, 0);
    let v = cpu.read_op(bus, inst, 1, size)?;
    cpu.write_op(bus, inst, 0, size, v)?;
    Ok(Flow::Next)
}

fn cc(inst: &Instruction) -> u8 {
    (inst.condition_code() as u8).wrapping_sub(ConditionCode::o as u8)
}

pub fn cmov<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size = op_size(inst, 0);
    let v = cpu.read_op(bus, inst, 1, size)?;
    if flags::condition(cpu.state.eflags, cc(inst)) {
        cpu.write_op(bus, inst, 0, size, v)?;
    }
    Ok(Flow::Next)
}

pub fn setcc<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let v = u32::from(flags::condition(cpu.state.eflags, cc(inst)));
    cpu.write_op(bus, inst, 0, 1, v)?;
    Ok(Flow::Next)
}

pub(crate) fn condition_of(inst: &Instruction) -> u8 {
    cc(inst)
}
