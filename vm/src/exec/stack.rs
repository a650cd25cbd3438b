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
                // The pop is from the old stack, so its width (SS.B before
                // the load) sizes the stack pointer's update, also for POP SS.
                let old_mask = cpu.sp_mask();
                let sp = cpu.state.regs[ESP].wrapping_add(u32::from(size));
                cpu.load_segment(bus, sreg, v)?;
                cpu.state.regs[ESP] = (cpu.state.regs[ESP] & !old_mask) | (sp & old_mask);
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
            leave(cpu, bus, if inst.code() == Code::Leavew { 2 } else { 4 })?;
            Ok(Flow::Next)
        }
    }
}

/// LEAVE with a `size`-byte frame pointer: the stack pointer takes the
/// frame pointer, which is popped.
pub fn leave<B: Bus>(cpu: &mut Cpu, bus: &mut B, size: u8) -> Result<()> {
    let mask = cpu.sp_mask();
    let bp = cpu.state.regs[EBP] & mask;
    let v = cpu.read_mem(bus, SegReg::Ss, bp, size)?;
    cpu.set_sp(bp.wrapping_add(u32::from(size)));
    let m = if size == 4 { 0xFFFF_FFFF } else { 0xFFFF };
    cpu.state.regs[EBP] = (cpu.state.regs[EBP] & !m) | v;
    Ok(())
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
        let mut changeable = fl::POPF_WRITABLE;
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

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{AF, CF, DF, IF, IOPL, OF, RF, TF, VM, ZF};
    use crate::cpu::state::reg::{EAX, EBP, EBX, ECX, EDI, EDX, ESI, ESP};
    use crate::cpu::state::SegReg;
    use crate::cpu::{vector, StepOutcome};
    use crate::exec::testutil::*;

    // SDM Vol. 2B, PUSH/POP: ESP moves by the operand size; PUSH imm8 is sign-extended.
    #[test]
    fn push_pop_basic() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xDEAD_BEEF);
        assert_retired(m.exec(&[0x50])); // push eax
        assert_eq!(m.reg(ESP), STACK_TOP - 4);
        assert_eq!(m.r32(STACK_TOP - 4), 0xDEAD_BEEF);
        assert_retired(m.exec(&[0x5B])); // pop ebx
        assert_eq!((m.reg(EBX), m.reg(ESP)), (0xDEAD_BEEF, STACK_TOP));
        assert_retired(m.exec(&[0x6A, 0xFF])); // push -1
        assert_eq!(m.r32(STACK_TOP - 4), 0xFFFF_FFFF);
        assert_retired(m.exec(&[0x66, 0x50])); // push ax
        assert_eq!(m.reg(ESP), STACK_TOP - 6);
        assert_eq!(m.r16(STACK_TOP - 6), 0xBEEF);
    }

    // SDM Vol. 2B, POP: a 32-bit POP SS from a 16-bit stack moves SP within
    // 16 bits (the old stack's width), even when the new SS is 32-bit:
    // SP FFFC wraps to 0000 and ESP's upper half stays.
    #[test]
    fn pop_ss_sizes_the_pop_by_the_old_stack() {
        let mut m = Machine::flat32();
        let stack16 = (FREE_SLOT as u16) << 3;
        m.set_gdt(FREE_SLOT, seg_desc(0, 0xFFFF, ACC_DATA0, 0));
        m.load_seg(SegReg::Ss, stack16);
        m.set_reg(ESP, 0x0002_FFFC);
        m.w32(0xFFFC, u32::from(KDATA));
        assert_retired(m.exec(&[0x17])); // pop ss (32-bit operand)
        assert_eq!(m.cpu.state.segs[SegReg::Ss as usize].selector, KDATA);
        assert_eq!(m.reg(ESP), 0x0002_0000);
        // And back: a 16-bit pop from the 32-bit stack moves all of ESP.
        m.set_reg(ESP, 0x0001_FFFE);
        m.w16(0x1_FFFE, stack16);
        assert_retired(m.exec(&[0x66, 0x17])); // pop ss (16-bit operand)
        assert_eq!(m.reg(ESP), 0x0002_0000);
    }

    // SDM Vol. 2B, PUSH: "pushes the value of ESP as it existed before the instruction".
    #[test]
    fn push_esp_pushes_old_value() {
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0x54])); // push esp
        assert_eq!(m.r32(STACK_TOP - 4), STACK_TOP);
        // push dword [esp+4]: the address is computed before ESP moves.
        m.w32(STACK_TOP, 0x1234_5678);
        assert_retired(m.exec(&[0xFF, 0x74, 0x24, 0x04]));
        assert_eq!(m.r32(STACK_TOP - 8), 0x1234_5678);
    }

    // SDM Vol. 2B, POP: POP ESP loads the popped value; with ESP as the base of a
    // memory destination the address is computed after the increment.
    #[test]
    fn pop_esp_cases() {
        let mut m = Machine::flat32();
        m.set_reg(ESP, STACK_TOP - 4);
        m.w32(STACK_TOP - 4, 0x5_0000);
        assert_retired(m.exec(&[0x5C])); // pop esp
        assert_eq!(m.reg(ESP), 0x5_0000);

        let mut m = Machine::flat32();
        m.set_reg(ESP, STACK_TOP - 8);
        m.w32(STACK_TOP - 8, 0xAAAA_AAAA);
        m.w32(STACK_TOP - 4, 0);
        assert_retired(m.exec(&[0x8F, 0x04, 0x24])); // pop dword [esp]
        assert_eq!(m.reg(ESP), STACK_TOP - 4);
        assert_eq!(m.r32(STACK_TOP - 4), 0xAAAA_AAAA, "stored at the new ESP");
    }

    // SDM Vol. 2B, PUSH Sreg with a 32-bit operand: ESP moves by 4, only the low
    // 16 bits are written (P6 and later); POP Sreg checks the selector.
    #[test]
    fn push_pop_segment() {
        let mut m = Machine::flat32();
        m.w32(STACK_TOP - 4, 0xAAAA_AAAA);
        assert_retired(m.exec(&[0x1E])); // push ds
        assert_eq!(m.reg(ESP), STACK_TOP - 4);
        assert_eq!(m.r32(STACK_TOP - 4), 0xAAAA_0000 | u32::from(KDATA));
        m.w32(STACK_TOP - 4, 0x0800);
        assert_fault(m.exec(&[0x07]), vector::GP, Some(0x0800)); // pop es: beyond the GDT
                                                                 // ESP was restored before the frame (error code, EIP, CS, EFLAGS) went on.
        assert_eq!(m.reg(ESP), STACK_TOP - 4 - 16);
        assert_eq!(m.r32(m.reg(ESP) + 4), CODE + 1, "saved EIP: the POP ES");

        let mut m = Machine::flat32();
        m.set_reg(ESP, STACK_TOP - 4);
        m.w32(STACK_TOP - 4, u32::from(KDATA));
        assert_retired(m.exec(&[0x17])); // pop ss
        assert!(
            m.cpu.state.interrupt_shadow,
            "POP SS inhibits interrupts (SDM Vol. 3A, 6.8.3)"
        );
        assert_eq!(m.reg(ESP), STACK_TOP);
    }

    // SDM Vol. 2B, PUSHA/PUSHAD and POPA/POPAD: the original ESP is pushed, and
    // skipped on the way back.
    #[test]
    fn pushad_popad() {
        let mut m = Machine::flat32();
        for (r, v) in [(EAX, 1), (ECX, 2), (EDX, 3), (EBX, 4), (EBP, 6), (ESI, 7), (EDI, 8)] {
            m.set_reg(r, v);
        }
        assert_retired(m.exec(&[0x60]));
        assert_eq!(m.reg(ESP), STACK_TOP - 32);
        let want = [8, 7, 6, STACK_TOP, 4, 3, 2, 1];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(m.r32(STACK_TOP - 32 + 4 * i as u32), *w, "slot {i}");
        }
        m.w32(STACK_TOP - 20, 0x1234); // the saved ESP slot
        for r in [EAX, ECX, EDX, EBX, EBP, ESI, EDI] {
            m.set_reg(r, 0);
        }
        assert_retired(m.exec(&[0x61]));
        assert_eq!(m.reg(ESP), STACK_TOP);
        assert_eq!((m.reg(EAX), m.reg(EBX), m.reg(EDI)), (1, 4, 8));
    }

    // SDM Vol. 2B, PUSHF/PUSHFD: the image has VM and RF clear.
    #[test]
    fn pushfd_image() {
        let mut m = Machine::flat32();
        m.cpu.state.eflags |= RF | CF | ZF;
        assert_retired(m.exec(&[0x9C]));
        assert_eq!(m.r32(STACK_TOP - 4), 0x2 | CF | ZF);
        assert_retired(m.exec(&[0x66, 0x9C])); // pushf (16-bit)
        assert_eq!(m.reg(ESP), STACK_TOP - 6);
    }

    // SDM Vol. 2B, POPF/POPFD (table "Effect of POPF"): at CPL 0 IOPL and IF
    // change; at CPL 3 IOPL never changes and IF only if CPL <= IOPL; VM is never
    // loaded; no fault in protected mode.
    #[test]
    fn popfd_privilege_rules() {
        let image = CF | OF | DF | IF | IOPL | TF | VM;
        let mut m = Machine::flat32();
        m.set_reg(ESP, STACK_TOP - 4);
        m.w32(STACK_TOP - 4, image);
        assert_retired(m.exec(&[0x9D]));
        assert_eq!(m.eflags(), 0x2 | CF | OF | DF | IF | IOPL | TF);

        let mut m = Machine::flat32().user();
        m.set_reg(ESP, USER_STACK_TOP - 4);
        m.w32(USER_STACK_TOP - 4, image);
        assert_retired(m.exec(&[0x9D]));
        assert_eq!(m.eflags(), 0x2 | CF | OF | DF | TF, "IF and IOPL kept at CPL 3, IOPL 0");

        let mut m = Machine::flat32().user();
        m.cpu.state.eflags |= IOPL;
        m.set_reg(ESP, USER_STACK_TOP - 4);
        m.w32(USER_STACK_TOP - 4, IF);
        assert_retired(m.exec(&[0x9D]));
        assert_eq!(
            m.eflags(),
            0x2 | IF | IOPL,
            "IF loads when CPL <= IOPL; IOPL still kept"
        );
    }

    // SDM Vol. 2B, POPF: a 16-bit POPF changes only the low 16 bits.
    #[test]
    fn popf_16_bit() {
        let mut m = Machine::flat32();
        m.cpu.state.eflags |= crate::cpu::state::flags::AC;
        m.set_reg(ESP, STACK_TOP - 2);
        m.w16(STACK_TOP - 2, (AF | ZF) as u16);
        assert_retired(m.exec(&[0x66, 0x9D]));
        assert_eq!(m.eflags(), 0x2 | AF | ZF | crate::cpu::state::flags::AC);
        assert_eq!(m.reg(ESP), STACK_TOP);
    }

    // SDM Vol. 2A, ENTER: push EBP, copy level-1 frame pointers from the old
    // frame, push the new frame pointer, EBP <- frame, ESP -= size.
    #[test]
    fn enter_levels() {
        let mut m = Machine::flat32();
        m.set_reg(EBP, 0x7_F000);
        assert_retired(m.exec(&[0xC8, 0x10, 0x00, 0x00])); // enter 16, 0
        assert_eq!(m.r32(STACK_TOP - 4), 0x7_F000);
        assert_eq!((m.reg(EBP), m.reg(ESP)), (STACK_TOP - 4, STACK_TOP - 4 - 16));

        let mut m = Machine::flat32();
        m.set_reg(EBP, 0x7_F000);
        m.w32(0x7_F000 - 4, 0x1111_1111);
        assert_retired(m.exec(&[0xC8, 0x08, 0x00, 0x02])); // enter 8, 2
        assert_eq!(m.r32(STACK_TOP - 4), 0x7_F000);
        assert_eq!(m.r32(STACK_TOP - 8), 0x1111_1111, "outer frame pointer copied");
        assert_eq!(m.r32(STACK_TOP - 12), STACK_TOP - 4, "new frame pointer");
        assert_eq!(m.reg(EBP), STACK_TOP - 4);
        assert_eq!(m.reg(ESP), STACK_TOP - 12 - 8);

        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xC8, 0x00, 0x00, 0x01])); // enter 0, 1
        assert_eq!(m.r32(STACK_TOP - 8), STACK_TOP - 4);
        assert_eq!(m.reg(ESP), STACK_TOP - 8);
    }

    // SDM Vol. 2A, LEAVE: ESP <- EBP; EBP <- Pop().
    #[test]
    fn leave() {
        let mut m = Machine::flat32();
        m.set_reg(EBP, STACK_TOP - 16).set_reg(ESP, STACK_TOP - 64);
        m.w32(STACK_TOP - 16, 0x7_F000);
        assert_retired(m.exec(&[0xC9]));
        assert_eq!((m.reg(EBP), m.reg(ESP)), (0x7_F000, STACK_TOP - 12));
    }

    // Real mode: SP wraps within the 64 KiB segment; PUSH SP pushes the old SP.
    #[test]
    fn real_mode_push_wraps() {
        let mut m = Machine::real16();
        m.set_reg(ESP, 0);
        m.set_reg(EAX, 0xABCD);
        assert_retired(m.exec(&[0x50])); // push ax
        assert_eq!(m.reg(ESP), 0xFFFE);
        assert_eq!(m.r16(0x20000 + 0xFFFE), 0xABCD);
        assert_retired(m.exec(&[0x54])); // push sp
        assert_eq!(m.r16(0x20000 + 0xFFFC), 0xFFFE);
    }

    // SDM Vol. 3A, 22.33.1: a real-mode stack access across offset FFFFh raises
    // #SS; pushing the exception frame wraps again, which shuts the processor down.
    #[test]
    fn real_mode_push_at_sp_1_shuts_down() {
        let mut m = Machine::real16();
        m.set_reg(ESP, 1);
        assert!(matches!(m.exec(&[0x50]), StepOutcome::TripleFault(_)));
        let mut m = Machine::real16();
        m.set_reg(ESP, 0xFFFF);
        m.cpu.state.segs[SegReg::Ss as usize] = crate::cpu::state::Segment::real_mode(0x3000);
        // pop ax at SP = FFFFh: #SS; the frame (at FFFDh..) fits, so it is delivered.
        assert_fault(m.exec(&[0x58]), vector::SS, Some(0));
        assert_eq!(m.reg(ESP), 0xFFFF - 6);
    }
}
