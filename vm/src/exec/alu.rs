//! Binary arithmetic and logic: ADD, ADC, SUB, SBB, CMP, AND, OR, XOR, TEST, INC,
//! DEC, NEG, NOT (SDM Vol. 2A/2B, the instruction pages of each; Vol. 1, 7.3.2
//! "Binary arithmetic instructions" and 7.3.4 "Logical instructions").

use iced_x86::{Instruction, Mnemonic};

use super::{flags, op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, STATUS};
use crate::cpu::{Cpu, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size = op_size(inst, 0);
    let m = inst.mnemonic();
    let a = cpu.read_op(bus, inst, 0, size)?;
    let cf = u32::from(cpu.flag(CF));
    let (result, f, write) = match m {
        Mnemonic::Inc | Mnemonic::Dec => {
            // INC/DEC leave CF alone.
            let (r, f) = if m == Mnemonic::Inc {
                flags::add(a, 1, 0, size)
            } else {
                flags::sub(a, 1, 0, size)
            };
            cpu.state.eflags = (cpu.state.eflags & !(STATUS & !CF)) | (f & !CF);
            cpu.write_op(bus, inst, 0, size, r)?;
            return Ok(Flow::Next);
        }
        Mnemonic::Not => {
            cpu.write_op(bus, inst, 0, size, !a)?;
            return Ok(Flow::Next);
        }
        Mnemonic::Neg => {
            let (r, f) = flags::sub(0, a, 0, size);
            (r, f, true)
        }
        _ => {
            let b = cpu.read_op(bus, inst, 1, size)?;
            match m {
                Mnemonic::Add => {
                    let (r, f) = flags::add(a, b, 0, size);
                    (r, f, true)
                }
                Mnemonic::Adc => {
                    let (r, f) = flags::add(a, b, cf, size);
                    (r, f, true)
                }
                Mnemonic::Sub => {
                    let (r, f) = flags::sub(a, b, 0, size);
                    (r, f, true)
                }
                Mnemonic::Sbb => {
                    let (r, f) = flags::sub(a, b, cf, size);
                    (r, f, true)
                }
                Mnemonic::Cmp => {
                    let (r, f) = flags::sub(a, b, 0, size);
                    (r, f, false)
                }
                Mnemonic::And => (a & b, flags::logic(a & b, size), true),
                Mnemonic::Or => (a | b, flags::logic(a | b, size), true),
                Mnemonic::Xor => (a ^ b, flags::logic(a ^ b, size), true),
                _ => (a & b, flags::logic(a & b, size), false), // TEST
            }
        }
    };
    if write {
        cpu.write_op(bus, inst, 0, size, result)?;
    }
    cpu.set_status(f);
    Ok(Flow::Next)
}
