//! x87 data transfer (SDM Vol. 1, 8.3.3 "Data transfer instructions", 8.3.4
//! "Load constant instructions"; Vol. 2: FLD, FILD, FBLD, FST/FSTP,
//! FIST/FISTP, FBSTP, FXCH, FCMOVcc, FLD1/FLDZ/FLDPI/..., FFREE, FINCSTP,
//! FDECSTP).

use iced_x86::{Instruction, Mnemonic};

use super::float::{self, Constant, F80};
use super::{control_word, has_memory_operand, raise, read_operand, st_index, stack_fault, write_operand};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, PF, ZF};
use crate::cpu::{Cpu, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    use Mnemonic as M;
    let m = inst.mnemonic();
    match m {
        M::Fld | M::Fild | M::Fbld => load(cpu, bus, inst),
        M::Fld1 | M::Fldl2t | M::Fldl2e | M::Fldpi | M::Fldlg2 | M::Fldln2 | M::Fldz => {
            let c = match m {
                M::Fld1 => Constant::One,
                M::Fldl2t => Constant::Log2Ten,
                M::Fldl2e => Constant::Log2E,
                M::Fldpi => Constant::Pi,
                M::Fldlg2 => Constant::Log10Two,
                M::Fldln2 => Constant::LnTwo,
                _ => Constant::Zero,
            };
            push(cpu, float::constant(c, control_word(cpu)), 0);
            Ok(())
        }
        // FSTPNCE (D9 D8+i) is the undocumented alias of FSTP ST(i).
        M::Fst | M::Fstp | M::Fstpnce => store_float(cpu, bus, inst, m != M::Fst),
        M::Fist | M::Fistp | M::Fbstp => store_integer(cpu, bus, inst),
        M::Fxch => {
            let i = if inst.op_count() > 1 { st_index(inst, 1) } else { 1 };
            let (e0, ei) = (cpu.state.fpu.is_empty(0), cpu.state.fpu.is_empty(i));
            if (e0 || ei) && !stack_fault(cpu, false) {
                return Ok(());
            }
            // An empty register takes part as the indefinite (masked response).
            let value = |empty: bool, v: F80| if empty { F80::INDEFINITE } else { v };
            let a = value(e0, cpu.state.fpu.st(0));
            let b = value(ei, cpu.state.fpu.st(i));
            cpu.state.fpu.set_st(0, b);
            cpu.state.fpu.set_st(i, a);
            if !(e0 || ei) {
                cpu.state.fpu.set_c1(false);
            }
            Ok(())
        }
        M::Fcmovb | M::Fcmove | M::Fcmovbe | M::Fcmovu | M::Fcmovnb | M::Fcmovne | M::Fcmovnbe | M::Fcmovnu => {
            let i = st_index(inst, 1);
            if cpu.state.fpu.is_empty(0) || cpu.state.fpu.is_empty(i) {
                if stack_fault(cpu, false) {
                    cpu.state.fpu.set_st(0, F80::INDEFINITE);
                }
                return Ok(());
            }
            let f = cpu.state.eflags;
            let taken = match m {
                M::Fcmovb => f & CF != 0,
                M::Fcmove => f & ZF != 0,
                M::Fcmovbe => f & (CF | ZF) != 0,
                M::Fcmovu => f & PF != 0,
                M::Fcmovnb => f & CF == 0,
                M::Fcmovne => f & ZF == 0,
                M::Fcmovnbe => f & (CF | ZF) == 0,
                _ => f & PF == 0,
            };
            if taken {
                let v = cpu.state.fpu.st(i);
                cpu.state.fpu.set_st(0, v);
            }
            cpu.state.fpu.set_c1(false);
            Ok(())
        }
        M::Ffree | M::Ffreep => {
            // FFREEP (DF C0+i) is undocumented but on every x87 since the
            // 287: FFREE, then a pop.
            cpu.state.fpu.free(st_index(inst, 0));
            if m == M::Ffreep {
                cpu.state.fpu.pop();
            }
            Ok(())
        }
        M::Fincstp | M::Fdecstp => {
            cpu.state.fpu.rotate(m == M::Fincstp);
            cpu.state.fpu.set_c1(false);
            Ok(())
        }
        _ => Err(crate::cpu::Fault::ud()),
    }
}

/// Pushes a value loaded with `flags` detected: a full stack is a stack
/// overflow (the masked response pushes the indefinite); an unmasked
/// invalid or denormal operand leaves the stack as it was.
fn push(cpu: &mut Cpu, v: F80, flags: u16) {
    if !cpu.state.fpu.is_empty(7) {
        if stack_fault(cpu, true) {
            cpu.state.fpu.push(F80::INDEFINITE);
        }
        return;
    }
    raise(cpu, flags);
    if super::masked(cpu, flags) {
        cpu.state.fpu.push(v);
        cpu.state.fpu.set_c1(false);
    }
}

fn load<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    let m = inst.mnemonic();
    let (value, flags) = if has_memory_operand(inst) {
        match (m, inst.memory_size().size()) {
            (Mnemonic::Fld, 4) => float::from_f32(u32::from_le_bytes(read_operand(cpu, bus, inst)?)),
            (Mnemonic::Fld, 8) => float::from_f64(u64::from_le_bytes(read_operand(cpu, bus, inst)?)),
            // The register format itself: loaded as it is, no exception.
            (Mnemonic::Fld, _) => (F80::from_bytes(read_operand(cpu, bus, inst)?), 0),
            (Mnemonic::Fild, 2) => (
                float::from_int(i64::from(i16::from_le_bytes(read_operand(cpu, bus, inst)?))),
                0,
            ),
            (Mnemonic::Fild, 4) => (
                float::from_int(i64::from(i32::from_le_bytes(read_operand(cpu, bus, inst)?))),
                0,
            ),
            (Mnemonic::Fild, _) => (float::from_int(i64::from_le_bytes(read_operand(cpu, bus, inst)?)), 0),
            _ => (float::from_bcd(read_operand(cpu, bus, inst)?), 0),
        }
    } else {
        let i = st_index(inst, 0);
        if cpu.state.fpu.is_empty(i) {
            if stack_fault(cpu, false) {
                cpu.state.fpu.push(F80::INDEFINITE);
            }
            return Ok(());
        }
        (cpu.state.fpu.st(i), 0)
    };
    push(cpu, value, flags);
    Ok(())
}

/// FST/FSTP to memory or a register.
fn store_float<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction, pop: bool) -> Result<()> {
    let cw = control_word(cpu);
    if !has_memory_operand(inst) {
        let i = st_index(inst, 0);
        if cpu.state.fpu.is_empty(0) {
            if stack_fault(cpu, false) {
                cpu.state.fpu.set_st(i, F80::INDEFINITE);
                if pop {
                    cpu.state.fpu.pop();
                }
            }
            return Ok(());
        }
        let v = cpu.state.fpu.st(0);
        cpu.state.fpu.set_st(i, v);
        cpu.state.fpu.set_c1(false);
        if pop {
            cpu.state.fpu.pop();
        }
        return Ok(());
    }
    let empty = cpu.state.fpu.is_empty(0);
    let st0 = cpu.state.fpu.st(0);
    let size = inst.memory_size().size();
    // What goes to memory, and what the store detected.
    let (bytes, flags, c1): (Option<Vec<u8>>, u16, bool) = if empty {
        // Stack underflow: the masked response stores the indefinite.
        let masked = cpu.state.fpu.control & float::exc::IE != 0;
        let indefinite = match size {
            4 => 0xFFC0_0000u32.to_le_bytes().to_vec(),
            8 => 0xFFF8_0000_0000_0000u64.to_le_bytes().to_vec(),
            _ => F80::INDEFINITE.to_bytes().to_vec(),
        };
        (masked.then_some(indefinite), float::exc::IE, false)
    } else {
        match size {
            4 => {
                let r = float::to_f32(st0, cw);
                (r.value.map(|v| v.to_le_bytes().to_vec()), r.flags, r.c1)
            }
            8 => {
                let r = float::to_f64(st0, cw);
                (r.value.map(|v| v.to_le_bytes().to_vec()), r.flags, r.c1)
            }
            _ => (Some(st0.to_bytes().to_vec()), 0, false),
        }
    };
    finish_store(cpu, bus, inst, bytes, flags, c1, empty, pop)
}

/// FIST/FISTP to a 16-, 32- or 64-bit integer, FBSTP to packed BCD.
fn store_integer<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    let m = inst.mnemonic();
    let cw = control_word(cpu);
    let empty = cpu.state.fpu.is_empty(0);
    let st0 = cpu.state.fpu.st(0);
    let size = inst.memory_size().size();
    let masked_ie = cpu.state.fpu.control & float::exc::IE != 0;
    let (bytes, flags, c1): (Option<Vec<u8>>, u16, bool) = if m == Mnemonic::Fbstp {
        if empty {
            let mut indefinite = [0u8; 10];
            indefinite[7] = 0xC0;
            indefinite[8] = 0xFF;
            indefinite[9] = 0xFF;
            (masked_ie.then(|| indefinite.to_vec()), float::exc::IE, false)
        } else {
            let r = float::to_bcd(st0, cw);
            (r.value.map(|v| v.to_vec()), r.flags, r.c1)
        }
    } else {
        let bits = (size * 8) as u32;
        if empty {
            // The integer indefinite: only the sign bit set.
            let indefinite = (1u64 << (bits - 1)).to_le_bytes()[..size].to_vec();
            (masked_ie.then_some(indefinite), float::exc::IE, false)
        } else {
            let r = float::to_int(st0, cw, bits);
            (r.value.map(|v| v.to_le_bytes()[..size].to_vec()), r.flags, r.c1)
        }
    };
    let pop = m != Mnemonic::Fist;
    finish_store(cpu, bus, inst, bytes, flags, c1, empty, pop)
}

/// Writes a store's bytes (memory first: a fault leaves the FPU as it was),
/// then records its exceptions and pops.
#[allow(clippy::too_many_arguments)]
fn finish_store<B: Bus>(
    cpu: &mut Cpu,
    bus: &mut B,
    inst: &Instruction,
    bytes: Option<Vec<u8>>,
    flags: u16,
    c1: bool,
    underflow: bool,
    pop: bool,
) -> Result<()> {
    if let Some(b) = &bytes {
        write_operand(cpu, bus, inst, b)?;
    }
    if underflow {
        stack_fault(cpu, false);
    } else {
        raise(cpu, flags);
        cpu.state.fpu.set_c1(c1);
    }
    // An unmasked exception that suppressed the store leaves the stack too.
    if pop && bytes.is_some() {
        cpu.state.fpu.pop();
    }
    Ok(())
}
