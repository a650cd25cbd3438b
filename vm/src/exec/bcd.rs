//! Decimal arithmetic: DAA, DAS, AAA, AAS, AAM, AAD (SDM Vol. 2A, the pages of
//! each; Vol. 1, 7.3.2.5 "Decimal arithmetic instructions").

use iced_x86::{Instruction, Mnemonic};

use super::{flags, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{AF, CF, OF};
use crate::cpu::state::reg::EAX;
use crate::cpu::{vector, Cpu, Fault, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, _bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let eax = cpu.state.regs[EAX];
    let al = eax & 0xFF;
    let ah = (eax >> 8) & 0xFF;
    let cf = cpu.flag(CF);
    let af = cpu.flag(AF);
    let set_ax = |cpu: &mut Cpu, ax: u32| cpu.state.regs[EAX] = (eax & !0xFFFF) | (ax & 0xFFFF);
    match inst.mnemonic() {
        Mnemonic::Daa | Mnemonic::Das => {
            let das = inst.mnemonic() == Mnemonic::Das;
            let mut new_al = al;
            let mut new_cf = false;
            let mut new_af = false;
            if al & 0xF > 9 || af {
                new_al = if das { new_al.wrapping_sub(6) } else { new_al + 6 } & 0xFF;
                new_cf = cf || if das { al < 6 } else { al + 6 > 0xFF };
                new_af = true;
            }
            if al > 0x99 || cf {
                new_al = if das { new_al.wrapping_sub(0x60) } else { new_al + 0x60 } & 0xFF;
                new_cf = true;
            }
            cpu.state.regs[EAX] = (eax & !0xFF) | new_al;
            // OF is undefined; report the signed overflow of the adjustment as
            // the processors we compare against do.
            let mut f = flags::szp(new_al, 1);
            if new_cf {
                f |= CF;
            }
            if new_af {
                f |= AF;
            }
            let of = if das {
                al & !new_al & 0x80 != 0
            } else {
                !al & new_al & 0x80 != 0
            };
            if of {
                f |= OF;
            }
            cpu.set_status(f);
        }
        Mnemonic::Aaa | Mnemonic::Aas => {
            let aas = inst.mnemonic() == Mnemonic::Aas;
            let adjust = al & 0xF > 9 || af;
            let mut ax = (ah << 8) | al;
            if adjust {
                if aas {
                    // AX <- AX - 6; AH <- AH - 1: the borrow out of AL reaches AH too.
                    ax = ax.wrapping_sub(6) & 0xFFFF;
                    ax = ax.wrapping_sub(0x100) & 0xFFFF;
                } else {
                    ax = ax.wrapping_add(0x106);
                }
            }
            ax &= 0xFF0F;
            set_ax(cpu, ax);
            // SF, ZF, PF and OF are undefined: computed from AL as the 80286 does.
            let mut f = flags::szp(ax & 0xFF, 1);
            if adjust {
                f |= CF | AF;
            }
            cpu.set_status(f);
        }
        Mnemonic::Aam => {
            let base = u32::from(inst.immediate8());
            if base == 0 {
                return Err(Fault::new(vector::DE));
            }
            let new_al = al % base;
            set_ax(cpu, ((al / base) << 8) | new_al);
            cpu.set_status(flags::szp(new_al, 1));
        }
        _ => {
            // AAD
            let base = u32::from(inst.immediate8());
            let (r, f) = flags::add(al, (ah * base) & 0xFF, 0, 1);
            set_ax(cpu, r);
            cpu.set_status(f);
        }
    }
    Ok(Flow::Next)
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{AF, CF, OF, PF, SF, ZF};
    use crate::cpu::state::reg::{EAX, ESP};
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    /// Flags DAA/DAS define (OF is undefined).
    const DEFINED: u32 = CF | AF | SF | ZF | PF;

    // SDM Vol. 2A, DAA: 79h + 35h = AEh adjusts to 14h with CF (BCD 79 + 35 = 114).
    #[test]
    fn daa_after_add() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234_00AE);
        assert_retired(m.exec(&[0x27])); // daa
        assert_eq!(m.reg(EAX), 0x1234_0014);
        assert_eq!(m.status() & DEFINED, CF | AF | PF);
    }

    // SDM Vol. 2A, DAS: 35h - 47h = EEh (CF, AF) adjusts to 88h with CF (BCD 35 - 47 = -12).
    #[test]
    fn das_after_sub() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xEE).set_flags(CF | AF);
        assert_retired(m.exec(&[0x2F])); // das
        assert_eq!(m.reg(EAX), 0x88);
        assert_eq!(m.status() & DEFINED, CF | AF | SF | PF);
    }

    // SDM Vol. 2A, AAA: AX <- AX + 106h, AF = CF = 1, AL <- AL AND 0Fh.
    #[test]
    fn aaa_adjusts_and_carries_into_ah() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x000B); // 6 + 5 unpacked
        assert_retired(m.exec(&[0x37]));
        assert_eq!(m.reg(EAX), 0x0101);
        assert_eq!(m.status() & (AF | CF), AF | CF);
        // AL = FAh: the +106h on AX carries out of AL into AH as a whole.
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x00FA);
        assert_retired(m.exec(&[0x37]));
        assert_eq!(m.reg(EAX), 0x0200);
        // No adjustment (low nibble <= 9, AF = 0): AF = CF = 0, AL's high nibble cleared.
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x0135).set_flags(CF);
        assert_retired(m.exec(&[0x37]));
        assert_eq!(m.reg(EAX), 0x0105);
        assert_eq!(m.status() & (AF | CF), 0);
        // AF = 1 alone forces the adjustment.
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x0135).set_flags(AF);
        assert_retired(m.exec(&[0x37]));
        assert_eq!(m.reg(EAX), 0x020B);
    }

    // SDM Vol. 2A, AAS: AX <- AX - 6; AH <- AH - 1; AF = CF = 1; AL <- AL AND 0Fh.
    #[test]
    fn aas_borrows_from_ah() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x02FF).set_flags(AF);
        assert_retired(m.exec(&[0x3F]));
        assert_eq!(m.reg(EAX), 0x0109);
        assert_eq!(m.status() & (AF | CF), AF | CF);
    }

    // SDM Vol. 2A, AAM: AH <- AL / imm8, AL <- AL mod imm8; SF, ZF, PF from AL.
    #[test]
    fn aam_divides_al() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xFFFF_003F);
        assert_retired(m.exec(&[0xD4, 0x0A])); // aam
        assert_eq!(m.reg(EAX), 0xFFFF_0603);
        assert_eq!(m.status() & (SF | ZF | PF), PF);
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x00FF);
        assert_retired(m.exec(&[0xD4, 0x10])); // aam 16
        assert_eq!(m.reg(EAX), 0x0F0F);
    }

    // SDM Vol. 2A, AAM: #DE if imm8 = 0. A fault: EAX, flags unchanged, the saved
    // EIP is that of the AAM (Vol. 3A, 6.5 and 6.15 "Interrupt 0").
    #[test]
    fn aam_zero_is_divide_error() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234).set_flags(CF | OF);
        assert_fault(m.exec(&[0xD4, 0x00]), vector::DE, None);
        assert_eq!(m.reg(EAX), 0x1234);
        assert_eq!(m.eip(), HANDLERS);
        let esp = m.reg(ESP);
        assert_eq!(m.r32(esp), CODE, "saved EIP points at the AAM");
        assert_eq!(m.r32(esp + 8) & (CF | OF), CF | OF, "saved EFLAGS unchanged");
    }

    // SDM Vol. 2A, AAD: AL <- (AL + AH * imm8) AND FFh, AH <- 0; SF, ZF, PF from AL.
    #[test]
    fn aad_combines_digits() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x0603);
        assert_retired(m.exec(&[0xD5, 0x0A]));
        assert_eq!(m.reg(EAX), 0x003F);
        assert_eq!(m.status() & (SF | ZF | PF), PF);
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x0A05);
        assert_retired(m.exec(&[0xD5, 0x10])); // base 16
        assert_eq!(m.reg(EAX), 0x00A5);
        assert_eq!(m.status() & (SF | ZF | PF), SF | PF);
    }

    #[test]
    fn real_mode_daa() {
        let mut m = Machine::real16();
        m.set_reg(EAX, 0x0009).set_flags(AF);
        assert_retired(m.exec(&[0x27])); // 9 with AF: low nibble overflowed, +6
        assert_eq!(m.reg(EAX), 0x000F);
        assert_eq!(m.status() & (AF | CF), AF);
    }
}
