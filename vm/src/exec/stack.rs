//! Stack instructions: PUSH, POP, PUSHA/PUSHAD, POPA/POPAD, PUSHF/PUSHFD,
//! POPF/POPFD, ENTER, LEAVE (SDM Vol. 1, 6.2 "Stacks", 7.3.1.5; Vol. 2, the page
//! of each instruction; Vol. 3A, 20.2.7 for IOPL-sensitive PUSHF/POPF in
//! virtual-8086 mode).

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::{op_size, seg_of, stack_op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags as fl;
use crate::cpu::state::reg::{EBP, ESP};
use crate::cpu::state::SegReg;
use crate::cpu::{Cpu, Fault, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    match inst.mnemonic() {
        Mnemonic::Push => {
            let size = stack_op_size(inst);
            let v = match inst.op0_kind() {
                OpKind::Register if inst.op0_register().is_segment_register() => {
                    let sel = cpu.read_reg(inst.op0_register());
                    if size == 4 {
                        // Recent processors write only the selector's 16 bits.
                        let mask = cpu.sp_mask();
                        let sp = cpu.state.regs[ESP].wrapping_sub(4) & mask;
                        cpu.write_mem(bus, SegReg::Ss, sp, 2, sel)?;
                        cpu.set_sp(sp);
                        return Ok(Flow::Next);
                    }
                    sel
                }
                // PUSH ESP pushes the value before the push (80286 and later).
                _ => cpu.read_op(bus, inst, 0, size)?,
            };
            cpu.push(bus, size, v)?;
            Ok(Flow::Next)
        }
        Mnemonic::Pop => {
            let size = stack_op_size(inst);
            if inst.op0_kind() == OpKind::Register && inst.op0_register().is_segment_register() {
                let sreg = seg_of(inst.op0_register());
                let v = cpu.peek_stack(bus, 0, size)? as u16;
                cpu.load_segment(bus, sreg, v)?;
                cpu.set_sp(cpu.state.regs[ESP].wrapping_add(u32::from(size)));
                if sreg == SegReg::Ss {
                    cpu.state.interrupt_shadow = true;
                }
                return Ok(Flow::Next);
            }
            // The destination address is computed after ESP is incremented.
            let v = cpu.pop(bus, size)?;
            cpu.write_op(bus, inst, 0, op_size(inst, 0), v)?;
            Ok(Flow::Next)
        }
        Mnemonic::Pusha | Mnemonic::Pushad => {
            let size = if inst.mnemonic() == Mnemonic::Pushad { 4 } else { 2 };
            let regs = cpu.state.regs;
            for (i, r) in regs.iter().enumerate() {
                let v = if i == ESP { regs[ESP] } else { *r };
                cpu.push(bus, size, v)?;
            }
            Ok(Flow::Next)
        }
        Mnemonic::Popa | Mnemonic::Popad => {
            let size: u8 = if inst.mnemonic() == Mnemonic::Popad { 4 } else { 2 };
            let mask = if size == 4 { 0xFFFF_FFFF } else { 0xFFFF };
            for i in (0..8).rev() {
                let v = cpu.pop(bus, size)?;
                if i != ESP {
                    cpu.state.regs[i] = (cpu.state.regs[i] & !mask) | v;
                }
            }
            Ok(Flow::Next)
        }
        Mnemonic::Pushf | Mnemonic::Pushfd => {
            if cpu.state.v86_mode() && cpu.state.iopl() < 3 {
                return Err(Fault::gp(0));
            }
            let size = if inst.mnemonic() == Mnemonic::Pushfd { 4 } else { 2 };
            // The image has VM and RF clear (SDM Vol. 2B, PUSHF).
            let v = cpu.state.eflags & !(fl::VM | fl::RF);
            cpu.push(bus, size, v)?;
            Ok(Flow::Next)
        }
        Mnemonic::Popf | Mnemonic::Popfd => {
            if cpu.state.v86_mode() && cpu.state.iopl() < 3 {
                return Err(Fault::gp(0));
            }
            let size = if inst.mnemonic() == Mnemonic::Popfd { 4 } else { 2 };
            let v = cpu.pop(bus, size)?;
            cpu.write_eflags(v, size);
            Ok(Flow::Next)
        }
        Mnemonic::Enter => enter(cpu, bus, inst),
        _ => {
            // LEAVE
            let size = if inst.code() == Code::Leavew { 2 } else { 4 };
            let mask = cpu.sp_mask();
            let bp = cpu.state.regs[EBP] & mask;
            let v = cpu.read_mem(bus, SegReg::Ss, bp, size)?;
            cpu.set_sp(bp.wrapping_add(u32::from(size)));
            let m = if size == 4 { 0xFFFF_FFFF } else { 0xFFFF };
            cpu.state.regs[EBP] = (cpu.state.regs[EBP] & !m) | v;
            Ok(Flow::Next)
        }
    }
}

fn enter<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size: u8 = if inst.code() == Code::Enterw_imm16_imm8 { 2 } else { 4 };
    let alloc = u32::from(inst.immediate16());
    let level = inst.immediate8_2nd() & 31;
    let mask = cpu.sp_mask();
    let bp = cpu.state.regs[EBP];
    cpu.push(bus, size, bp)?;
    let frame = cpu.state.regs[ESP] & mask;
    let mut bp_walk = bp;
    if level > 0 {
        for _ in 1..level {
            bp_walk = (bp_walk.wrapping_sub(u32::from(size))) & mask;
            let v = cpu.read_mem(bus, SegReg::Ss, bp_walk, size)?;
            cpu.push(bus, size, v)?;
        }
        cpu.push(bus, size, frame)?;
    }
    let new_sp = (cpu.state.regs[ESP] & mask).wrapping_sub(alloc) & mask;
    // The final stack pointer must be writable (SDM: #SS if it is outside the segment).
    if alloc > 0 {
        cpu.seg_linear(SegReg::Ss, new_sp, 1, crate::cpu::mmu::Access::Write)?;
    }
    let m = if size == 4 { 0xFFFF_FFFF } else { 0xFFFF };
    cpu.state.regs[EBP] = (cpu.state.regs[EBP] & !m) | (frame & m);
    cpu.set_sp(new_sp);
    Ok(Flow::Next)
}

impl Cpu {
    /// Loads EFLAGS from a POPF/IRET image, honouring which bits the current
    /// privilege may change (SDM Vol. 2B, POPF, table 4-14).
    pub fn write_eflags(&mut self, v: u32, size: u8) {
        let cpl = self.state.cpl();
        let iopl = self.state.iopl();
        let mut changeable = fl::WRITABLE & !(fl::VM | fl::VIF | fl::VIP | fl::RF);
        if self.state.protected_mode() && cpl > 0 {
            changeable &= !fl::IOPL;
            if cpl > iopl {
                changeable &= !fl::IF;
            }
        }
        if self.state.v86_mode() {
            changeable &= !fl::IOPL;
        }
        if size == 2 {
            changeable &= 0xFFFF;
        }
        self.state.eflags = (self.state.eflags & !changeable) | (v & changeable) | fl::FIXED1;
    }
}
