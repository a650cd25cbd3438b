//! Multiplication and division: MUL, IMUL (one-, two- and three-operand forms),
//! DIV, IDIV (SDM Vol. 2A "IMUL", "IDIV", "DIV"; Vol. 2B "MUL").
//!
//! Flags the SDM leaves undefined (SF, ZF, AF, PF after MUL/IMUL; all six after
//! DIV/IDIV) are given deterministic values: SF/ZF/PF of the low result, AF clear
//! after multiplication; unchanged after division.

use iced_x86::{Instruction, Mnemonic};

use super::{flags, op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, OF};
use crate::cpu::state::reg::{EAX, EDX};
use crate::cpu::{vector, Cpu, Fault, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let m = inst.mnemonic();
    if m == Mnemonic::Imul && inst.op_count() > 1 {
        return imul_multi(cpu, bus, inst);
    }
    let size = op_size(inst, 0);
    let src = cpu.read_op(bus, inst, 0, size)?;
    one_operand(cpu, m, size, src)?;
    Ok(Flow::Next)
}

/// MUL, IMUL, DIV or IDIV (`m`) of the accumulator by `src`, `size` bytes.
pub fn one_operand(cpu: &mut Cpu, m: Mnemonic, size: u8, src: u32) -> Result<()> {
    let bits = u32::from(size) * 8;
    let eax = cpu.state.regs[EAX];
    let edx = cpu.state.regs[EDX];
    // The implicit dividend / multiplicand: AL, AX or EAX (with AH, DX, EDX above).
    let acc = eax & flags::mask(size);
    let hi = match size {
        1 => (eax >> 8) & 0xFF,
        2 => edx & 0xFFFF,
        _ => edx,
    };
    let (lo_out, hi_out) = match m {
        Mnemonic::Mul => {
            let p = u64::from(acc) * u64::from(src);
            let lo = (p as u32) & flags::mask(size);
            let high = (p >> bits) as u32 & flags::mask(size);
            let f = flags::szp(lo, size) | if high != 0 { CF | OF } else { 0 };
            cpu.set_status(f);
            (lo, high)
        }
        Mnemonic::Imul => {
            let p = i64::from(flags::sext(acc, size) as i32) * i64::from(flags::sext(src, size) as i32);
            let lo = (p as u32) & flags::mask(size);
            let high = (p >> bits) as u32 & flags::mask(size);
            let fits = i64::from(flags::sext(lo, size) as i32) == p;
            let f = flags::szp(lo, size) | if fits { 0 } else { CF | OF };
            cpu.set_status(f);
            (lo, high)
        }
        Mnemonic::Div => {
            if src == 0 {
                return Err(Fault::new(vector::DE));
            }
            let dividend = (u64::from(hi) << bits) | u64::from(acc);
            let q = dividend / u64::from(src);
            let r = dividend % u64::from(src);
            if q > u64::from(flags::mask(size)) {
                return Err(Fault::new(vector::DE));
            }
            (q as u32, r as u32)
        }
        _ => {
            // IDIV
            if src == 0 {
                return Err(Fault::new(vector::DE));
            }
            let dividend = ((u64::from(hi) << bits) | u64::from(acc)) as i64;
            let dividend = (dividend << (64 - 2 * bits)) >> (64 - 2 * bits);
            let divisor = i64::from(flags::sext(src, size) as i32);
            let q = dividend.wrapping_div(divisor);
            let r = dividend.wrapping_rem(divisor);
            let min = -(1i64 << (bits - 1));
            let max = (1i64 << (bits - 1)) - 1;
            if q < min || q > max || (dividend == i64::MIN && divisor == -1) {
                return Err(Fault::new(vector::DE));
            }
            (q as u32 & flags::mask(size), r as u32 & flags::mask(size))
        }
    };
    match size {
        1 => cpu.state.regs[EAX] = (eax & !0xFFFF) | (hi_out << 8) | lo_out,
        2 => {
            cpu.state.regs[EAX] = (eax & !0xFFFF) | lo_out;
            cpu.state.regs[EDX] = (edx & !0xFFFF) | hi_out;
        }
        _ => {
            cpu.state.regs[EAX] = lo_out;
            cpu.state.regs[EDX] = hi_out;
        }
    }
    Ok(())
}

/// IMUL r, r/m and IMUL r, r/m, imm: the product truncated to the destination.
fn imul_multi<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size = op_size(inst, 0);
    let (a, b) = if inst.op_count() == 3 {
        (cpu.read_op(bus, inst, 1, size)?, cpu.read_op(bus, inst, 2, size)?)
    } else {
        (cpu.read_op(bus, inst, 0, size)?, cpu.read_op(bus, inst, 1, size)?)
    };
    let (lo, f) = imul_trunc(a, b, size);
    cpu.set_status(f);
    cpu.write_op(bus, inst, 0, size, lo)?;
    Ok(Flow::Next)
}

/// The signed product of `a` and `b` (`size` bytes) truncated to `size`, with
/// the status flags: CF = OF = the product did not fit.
#[inline(always)]
pub fn imul_trunc(a: u32, b: u32, size: u8) -> (u32, u32) {
    let p = i64::from(flags::sext(a, size) as i32) * i64::from(flags::sext(b, size) as i32);
    let lo = (p as u32) & flags::mask(size);
    let fits = i64::from(flags::sext(lo, size) as i32) == p;
    (lo, flags::szp(lo, size) | if fits { 0 } else { CF | OF })
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{CF, OF};
    use crate::cpu::state::reg::{EAX, EBX, EDX, ESP};
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    fn cf_of(m: &Machine) -> u32 {
        m.status() & (CF | OF)
    }

    // SDM Vol. 2B, MUL: CF = OF = 0 if the upper half of the product is 0, else 1.
    #[test]
    fn mul_sizes_and_flags() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xAAAA_0080).set_reg(EBX, 2);
        assert_retired(m.exec(&[0xF6, 0xE3])); // mul bl
        assert_eq!(m.reg(EAX), 0xAAAA_0100, "AX = AL * BL");
        assert_eq!(cf_of(&m), CF | OF);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1111_8000).set_reg(EBX, 2).set_reg(EDX, 0x2222_0000);
        assert_retired(m.exec(&[0x66, 0xF7, 0xE3])); // mul bx
        assert_eq!(m.reg(EAX), 0x1111_0000);
        assert_eq!(m.reg(EDX), 0x2222_0001, "DX:AX; upper halves preserved");
        assert_eq!(cf_of(&m), CF | OF);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xFFFF_FFFF).set_reg(EBX, 2);
        assert_retired(m.exec(&[0xF7, 0xE3])); // mul ebx
        assert_eq!((m.reg(EDX), m.reg(EAX)), (1, 0xFFFF_FFFE));
        assert_eq!(cf_of(&m), CF | OF);

        m.set_reg(EAX, 3).set_reg(EBX, 4);
        assert_retired(m.exec(&[0xF7, 0xE3]));
        assert_eq!((m.reg(EDX), m.reg(EAX)), (0, 12));
        assert_eq!(cf_of(&m), 0);
    }

    // SDM Vol. 2A, IMUL: one operand form keeps the full product; CF = OF = 1 when
    // the product does not fit the sign-extended lower half.
    #[test]
    fn imul_one_operand() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, (-2i32) as u32).set_reg(EBX, 3);
        assert_retired(m.exec(&[0xF7, 0xEB])); // imul ebx
        assert_eq!((m.reg(EDX), m.reg(EAX)), (0xFFFF_FFFF, (-6i32) as u32));
        assert_eq!(cf_of(&m), 0);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x80).set_reg(EBX, 0xFF); // -128 * -1 = 128
        assert_retired(m.exec(&[0xF6, 0xEB])); // imul bl
        assert_eq!(m.reg(EAX), 0x0080);
        assert_eq!(cf_of(&m), CF | OF);
    }

    // SDM Vol. 2A, IMUL: two- and three-operand forms truncate to the destination.
    #[test]
    fn imul_two_and_three_operands() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1_0000).set_reg(EBX, 0x1_0000);
        assert_retired(m.exec(&[0x0F, 0xAF, 0xC3])); // imul eax, ebx
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(cf_of(&m), CF | OF);

        let mut m = Machine::flat32();
        m.set_reg(EBX, 5);
        assert_retired(m.exec(&[0x6B, 0xC3, 0xFD])); // imul eax, ebx, -3
        assert_eq!(m.reg(EAX), (-15i32) as u32);
        assert_eq!(cf_of(&m), 0);

        let mut m = Machine::flat32();
        m.set_reg(EBX, 4);
        assert_retired(m.exec(&[0x69, 0xC3, 0x00, 0x00, 0x00, 0x40])); // imul eax, ebx, 40000000h
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(cf_of(&m), CF | OF);

        let mut m = Machine::flat32();
        m.set_reg(EBX, 0x7FFF).set_reg(EAX, 0xFFFF_0000);
        assert_retired(m.exec(&[0x66, 0x6B, 0xC3, 0x02])); // imul ax, bx, 2
        assert_eq!(m.reg(EAX), 0xFFFF_FFFE, "16-bit destination only");
        assert_eq!(cf_of(&m), CF | OF);
    }

    // SDM Vol. 2A, DIV: quotient in AL/AX/EAX, remainder in AH/DX/EDX.
    #[test]
    fn div_results() {
        let mut m = Machine::flat32();
        m.set_reg(EDX, 1).set_reg(EAX, 5).set_reg(EBX, 0x10);
        assert_retired(m.exec(&[0xF7, 0xF3])); // div ebx
        assert_eq!((m.reg(EAX), m.reg(EDX)), (0x1000_0000, 5));

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x0105).set_reg(EBX, 2);
        assert_retired(m.exec(&[0xF6, 0xF3])); // div bl
        assert_eq!(m.reg(EAX), 0x0182);
    }

    // SDM Vol. 2A, DIV: #DE if the source is 0 or the quotient is too large. A
    // fault: the saved EIP is the DIV's and no register changes (Vol. 3A, 6.15).
    #[test]
    fn div_errors() {
        let mut m = Machine::flat32();
        m.set_reg(EDX, 0).set_reg(EAX, 7).set_reg(EBX, 0);
        assert_fault(m.exec(&[0xF7, 0xF3]), vector::DE, None);
        assert_eq!((m.reg(EAX), m.reg(EDX)), (7, 0));
        assert_eq!(m.r32(m.reg(ESP)), CODE);

        let mut m = Machine::flat32();
        m.set_reg(EDX, 0x10).set_reg(EAX, 0).set_reg(EBX, 0x10); // quotient 2^32
        assert_fault(m.exec(&[0xF7, 0xF3]), vector::DE, None);
        assert_eq!(m.reg(EDX), 0x10);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x0200).set_reg(EBX, 2); // 512 / 2 = 256 does not fit AL
        assert_fault(m.exec(&[0xF6, 0xF3]), vector::DE, None);
    }

    // SDM Vol. 2A, IDIV: truncates toward zero, the remainder has the dividend's
    // sign; #DE when the quotient is outside the signed range.
    #[test]
    fn idiv_signs_and_range() {
        let mut m = Machine::flat32();
        m.set_reg(EDX, 0xFFFF_FFFF).set_reg(EAX, (-7i32) as u32).set_reg(EBX, 2);
        assert_retired(m.exec(&[0xF7, 0xFB])); // idiv ebx
        assert_eq!(m.reg(EAX), (-3i32) as u32);
        assert_eq!(m.reg(EDX), (-1i32) as u32);

        // -256 / 2 = -128 fits a byte.
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xFF00).set_reg(EBX, 2);
        assert_retired(m.exec(&[0xF6, 0xFB])); // idiv bl
        assert_eq!(m.reg(EAX), 0x0080);

        // 81C1h / 7Ch = -260: out of range (the 80286 misses this one).
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x81C1).set_reg(EBX, 0x7C);
        assert_fault(m.exec(&[0xF6, 0xFB]), vector::DE, None);

        // INT_MIN / -1 overflows.
        let mut m = Machine::flat32();
        m.set_reg(EDX, 0xFFFF_FFFF)
            .set_reg(EAX, 0x8000_0000)
            .set_reg(EBX, u32::MAX);
        assert_fault(m.exec(&[0xF7, 0xFB]), vector::DE, None);
        assert_eq!(m.reg(EAX), 0x8000_0000);
    }

    #[test]
    fn real_mode_div_word_from_memory() {
        let mut m = Machine::real16();
        m.w16(0x20000 + 0x10, 7);
        m.set_reg(EDX, 0).set_reg(EAX, 100).set_reg(EBX, 0x10);
        assert_retired(m.exec(&[0xF7, 0x37])); // div word [bx]
        assert_eq!((m.reg(EAX), m.reg(EDX)), (14, 2));
    }
}
