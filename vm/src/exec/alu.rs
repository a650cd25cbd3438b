//! Binary arithmetic and logic: ADD, ADC, SUB, SBB, CMP, AND, OR, XOR, TEST, INC,
//! DEC, NEG, NOT (SDM Vol. 2A/2B, the instruction pages of each; Vol. 1, 7.3.2
//! "Binary arithmetic instructions" and 7.3.4 "Logical instructions").

use iced_x86::{Instruction, Mnemonic};

use super::{flags, op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, STATUS};
use crate::cpu::{Cpu, Fault, Result};

/// The operation of an instruction of this family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
    Inc,
    Dec,
    Neg,
    Not,
}

impl AluOp {
    pub fn of(m: Mnemonic) -> Option<AluOp> {
        Some(match m {
            Mnemonic::Add => AluOp::Add,
            Mnemonic::Or => AluOp::Or,
            Mnemonic::Adc => AluOp::Adc,
            Mnemonic::Sbb => AluOp::Sbb,
            Mnemonic::And => AluOp::And,
            Mnemonic::Sub => AluOp::Sub,
            Mnemonic::Xor => AluOp::Xor,
            Mnemonic::Cmp => AluOp::Cmp,
            Mnemonic::Test => AluOp::Test,
            Mnemonic::Inc => AluOp::Inc,
            Mnemonic::Dec => AluOp::Dec,
            Mnemonic::Neg => AluOp::Neg,
            Mnemonic::Not => AluOp::Not,
            _ => return None,
        })
    }

    /// AND, OR, XOR and TEST: CF and OF cleared, AF undefined in the SDM
    /// (cleared here, `flags::logic`).
    #[inline]
    pub fn is_logical(self) -> bool {
        matches!(self, AluOp::And | AluOp::Or | AluOp::Xor | AluOp::Test)
    }

    /// Whether the operation has a source operand besides the destination.
    #[inline]
    pub fn binary(self) -> bool {
        !matches!(self, AluOp::Inc | AluOp::Dec | AluOp::Neg | AluOp::Not)
    }
}

/// What an operation produces: the result, whether it is written back to the
/// destination, and the new status flags with the mask of those it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AluOut {
    pub result: u32,
    pub write: bool,
    pub flags: u32,
    pub flag_mask: u32,
}

/// The operation on destination `a` and source `b` (ignored by the unary
/// operations), with the carry flag `cf` (0 or 1) as input, at `size` bytes.
#[inline(always)]
pub fn compute(op: AluOp, a: u32, b: u32, cf: u32, size: u8) -> AluOut {
    let arith = |(result, flags): (u32, u32), write: bool| AluOut {
        result,
        write,
        flags,
        flag_mask: STATUS,
    };
    let logic = |r: u32, write: bool| AluOut {
        result: r,
        write,
        flags: flags::logic(r, size),
        flag_mask: STATUS,
    };
    match op {
        AluOp::Add => arith(flags::add(a, b, 0, size), true),
        AluOp::Adc => arith(flags::add(a, b, cf, size), true),
        AluOp::Sub => arith(flags::sub(a, b, 0, size), true),
        AluOp::Sbb => arith(flags::sub(a, b, cf, size), true),
        AluOp::Cmp => arith(flags::sub(a, b, 0, size), false),
        AluOp::And => logic(a & b, true),
        AluOp::Or => logic(a | b, true),
        AluOp::Xor => logic(a ^ b, true),
        AluOp::Test => logic(a & b, false),
        // INC/DEC leave CF alone.
        AluOp::Inc | AluOp::Dec => {
            let (result, flags) = if op == AluOp::Inc {
                flags::add(a, 1, 0, size)
            } else {
                flags::sub(a, 1, 0, size)
            };
            AluOut {
                result,
                write: true,
                flags,
                flag_mask: STATUS & !CF,
            }
        }
        AluOp::Neg => arith(flags::sub(0, a, 0, size), true),
        // NOT changes no flags.
        AluOp::Not => AluOut {
            result: !a & flags::mask(size),
            write: true,
            flags: 0,
            flag_mask: 0,
        },
    }
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    // One dispatch on the mnemonic, each arm compiled for its operation.
    use Mnemonic as M;
    match inst.mnemonic() {
        M::Add => exec_op(cpu, bus, inst, AluOp::Add),
        M::Or => exec_op(cpu, bus, inst, AluOp::Or),
        M::Adc => exec_op(cpu, bus, inst, AluOp::Adc),
        M::Sbb => exec_op(cpu, bus, inst, AluOp::Sbb),
        M::And => exec_op(cpu, bus, inst, AluOp::And),
        M::Sub => exec_op(cpu, bus, inst, AluOp::Sub),
        M::Xor => exec_op(cpu, bus, inst, AluOp::Xor),
        M::Cmp => exec_op(cpu, bus, inst, AluOp::Cmp),
        M::Test => exec_op(cpu, bus, inst, AluOp::Test),
        M::Inc => exec_op(cpu, bus, inst, AluOp::Inc),
        M::Dec => exec_op(cpu, bus, inst, AluOp::Dec),
        M::Neg => exec_op(cpu, bus, inst, AluOp::Neg),
        M::Not => exec_op(cpu, bus, inst, AluOp::Not),
        _ => Err(Fault::ud()),
    }
}

#[inline(always)]
fn exec_op<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction, op: AluOp) -> Result<Flow> {
    let size = op_size(inst, 0);
    let a = cpu.read_op(bus, inst, 0, size)?;
    let b = if op.binary() {
        cpu.read_op(bus, inst, 1, size)?
    } else {
        0
    };
    let out = compute(op, a, b, u32::from(cpu.flag(CF)), size);
    if out.write {
        cpu.write_op(bus, inst, 0, size, out.result)?;
    }
    cpu.apply_status(out.flags, out.flag_mask);
    Ok(Flow::Next)
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{AF, CF, OF, PF, SF, ZF};
    use crate::cpu::state::reg::{EAX, EBX, ECX};
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    fn flat() -> Machine {
        Machine::flat32()
    }

    // SDM Vol. 2A, ADD: OF, SF, ZF, AF, CF and PF are set according to the result.
    #[test]
    fn add_signed_overflow() {
        let mut m = flat();
        m.set_reg(EAX, 0x7FFF_FFFF).set_reg(EBX, 1);
        assert_retired(m.exec(&[0x01, 0xD8])); // add eax, ebx
        assert_eq!(m.reg(EAX), 0x8000_0000);
        assert_eq!(m.status(), OF | SF | AF | PF);
        assert_eq!(m.eip(), CODE + 2);
    }

    #[test]
    fn add_carry_out_of_byte() {
        let mut m = flat();
        m.set_reg(EAX, 0x1234_56FF).set_reg(EBX, 0x01);
        assert_retired(m.exec(&[0x00, 0xD8])); // add al, bl
        assert_eq!(m.reg(EAX), 0x1234_5600, "only AL is written");
        assert_eq!(m.status(), CF | ZF | AF | PF);
    }

    #[test]
    fn add_word_with_operand_size_prefix() {
        let mut m = flat();
        m.set_reg(EAX, 0xAAAA_8000).set_reg(EBX, 0x8000);
        assert_retired(m.exec(&[0x66, 0x01, 0xD8])); // add ax, bx
        assert_eq!(m.reg(EAX), 0xAAAA_0000);
        assert_eq!(m.status(), CF | ZF | OF | PF);
    }

    // SDM Vol. 2A, ADC: DEST <- DEST + SRC + CF.
    #[test]
    fn adc_adds_carry() {
        let mut m = flat();
        m.set_reg(EAX, 0xFFFF_FFFF).set_reg(EBX, 0).set_flags(CF);
        assert_retired(m.exec(&[0x11, 0xD8])); // adc eax, ebx
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.status(), CF | ZF | AF | PF);
    }

    // SDM Vol. 2B, SUB / SBB: CF is the borrow, OF the signed overflow.
    #[test]
    fn sub_borrow_and_overflow() {
        let mut m = flat();
        m.set_reg(EAX, 0x8000_0000).set_reg(EBX, 1);
        assert_retired(m.exec(&[0x29, 0xD8])); // sub eax, ebx
        assert_eq!(m.reg(EAX), 0x7FFF_FFFF);
        assert_eq!(m.status(), OF | AF | PF);

        let mut m = flat();
        m.set_reg(EAX, 0).set_reg(EBX, 0).set_flags(CF);
        assert_retired(m.exec(&[0x19, 0xD8])); // sbb eax, ebx
        assert_eq!(m.reg(EAX), 0xFFFF_FFFF);
        assert_eq!(m.status(), CF | SF | AF | PF);
    }

    // SDM Vol. 2A, CMP: flags as SUB, the destination is not written.
    #[test]
    fn cmp_sets_flags_only() {
        let mut m = flat();
        m.set_reg(EAX, 5).set_reg(EBX, 7);
        assert_retired(m.exec(&[0x39, 0xD8])); // cmp eax, ebx
        assert_eq!(m.reg(EAX), 5);
        assert_eq!(m.status(), CF | SF | AF);
    }

    // SDM Vol. 2B, NEG: CF = 0 if the source is 0, else 1; OF for the most negative value.
    #[test]
    fn neg_zero_and_most_negative() {
        let mut m = flat();
        m.set_reg(EAX, 0).set_flags(CF);
        assert_retired(m.exec(&[0xF7, 0xD8])); // neg eax
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.status(), ZF | PF);

        let mut m = flat();
        m.set_reg(EAX, 0x8000_0000);
        assert_retired(m.exec(&[0xF7, 0xD8]));
        assert_eq!(m.reg(EAX), 0x8000_0000);
        assert_eq!(m.status(), CF | OF | SF | PF);
    }

    // SDM Vol. 2A, INC/DEC: CF is not affected; the other five flags are.
    #[test]
    fn inc_dec_keep_cf() {
        let mut m = flat();
        m.set_reg(EAX, 0x7FFF_FFFF).set_flags(CF);
        assert_retired(m.exec(&[0x40])); // inc eax
        assert_eq!(m.reg(EAX), 0x8000_0000);
        assert_eq!(m.status(), CF | OF | SF | AF | PF);
        assert_retired(m.exec(&[0x48])); // dec eax
        assert_eq!(m.reg(EAX), 0x7FFF_FFFF);
        assert_eq!(m.status(), CF | OF | AF | PF);
    }

    // SDM Vol. 2A, AND/OR/XOR/TEST: OF and CF cleared; SF, ZF, PF per result.
    #[test]
    fn logic_clears_cf_of() {
        let mut m = flat();
        m.set_reg(EAX, 0xF0F0_0000).set_reg(EBX, 0x0F0F_0000).set_flags(CF | OF);
        assert_retired(m.exec(&[0x21, 0xD8])); // and eax, ebx
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.status(), ZF | PF);

        let mut m = flat();
        m.set_reg(EAX, 0x8000_0000).set_reg(EBX, 1).set_flags(CF | OF);
        assert_retired(m.exec(&[0x09, 0xD8])); // or eax, ebx
        assert_eq!(m.reg(EAX), 0x8000_0001);
        assert_eq!(m.status(), SF);

        let mut m = flat();
        m.set_reg(EAX, 0xFF).set_reg(EBX, 0xFF);
        assert_retired(m.exec(&[0x85, 0xD8])); // test eax, ebx
        assert_eq!(m.reg(EAX), 0xFF, "TEST does not write");
        assert_eq!(m.status(), PF);
    }

    // SDM Vol. 2B, NOT: flags are not affected.
    #[test]
    fn not_leaves_flags() {
        let mut m = flat();
        m.set_reg(ECX, 0x0000_FFFF).set_flags(CF | ZF);
        assert_retired(m.exec(&[0xF7, 0xD1])); // not ecx
        assert_eq!(m.reg(ECX), 0xFFFF_0000);
        assert_eq!(m.status(), CF | ZF);
    }

    #[test]
    fn add_to_memory_and_immediate_forms() {
        let mut m = flat();
        m.w32(DATA, 0x0000_0010);
        m.set_reg(EAX, 0x20);
        // add [DATA], eax
        let d = DATA.to_le_bytes();
        assert_retired(m.exec(&[0x01, 0x05, d[0], d[1], d[2], d[3]]));
        assert_eq!(m.r32(DATA), 0x30);
        // add dword [DATA], -1 (83 /0 ib, sign-extended)
        assert_retired(m.exec(&[0x83, 0x05, d[0], d[1], d[2], d[3], 0xFF]));
        assert_eq!(m.r32(DATA), 0x2F);
        assert_eq!(m.status() & CF, CF);
        // sub eax, imm32
        assert_retired(m.exec(&[0x2D, 0x21, 0, 0, 0]));
        assert_eq!(m.reg(EAX), 0xFFFF_FFFF);
    }

    // SDM Vol. 2A, LOCK: valid only with a memory destination; #UD otherwise.
    #[test]
    fn lock_needs_memory_destination() {
        let mut m = flat();
        m.w32(DATA, 1);
        m.set_reg(EBX, DATA);
        assert_retired(m.exec(&[0xF0, 0x01, 0x03])); // lock add [ebx], eax
        let mut m = flat();
        m.set_reg(EAX, 1);
        assert_fault(m.exec(&[0xF0, 0x01, 0xD8]), vector::UD, None); // lock add eax, ebx
        assert_eq!(m.reg(EAX), 1);
        let mut m = flat();
        m.set_reg(EBX, DATA);
        assert_fault(m.exec(&[0xF0, 0x39, 0x03]), vector::UD, None); // lock cmp [ebx], eax
    }

    // SDM Vol. 3A, 5.3: a write beyond the data segment's limit raises #GP(0);
    // nothing is modified (fault semantics, 6.5).
    #[test]
    fn memory_operand_beyond_limit_faults() {
        let mut m = flat();
        m.set_gdt(FREE_SLOT, seg_desc(DATA, 0xFF, ACC_DATA0, 0x4));
        m.load_seg(crate::cpu::state::SegReg::Ds, (FREE_SLOT * 8) as u16);
        m.set_reg(EBX, 0xFE).set_reg(EAX, 7);
        assert_fault(m.exec(&[0x01, 0x03]), vector::GP, Some(0)); // add [ebx], eax: bytes FE..101
        assert_eq!(m.eip(), HANDLERS + 4 * 13);
        assert_eq!(m.r32(DATA + 0xFE), 0);
    }

    // Real-address mode: 16-bit operands and addressing by default (SDM Vol. 3A, 20.1).
    #[test]
    fn real_mode_add_is_16_bit() {
        let mut m = Machine::real16();
        m.set_reg(EAX, 0x0001_FFFF).set_reg(EBX, 0x0000_0001);
        assert_retired(m.exec(&[0x01, 0xD8])); // add ax, bx
        assert_eq!(m.reg(EAX), 0x0001_0000);
        assert_eq!(m.status(), CF | ZF | AF | PF);
        assert_eq!(m.eip(), 2);
    }
}
