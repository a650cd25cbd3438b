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
