//! x87 arithmetic (SDM Vol. 1, 8.3.5 "Basic arithmetic instructions", 8.3.9
//! "Logarithmic, exponential, and scale"; Vol. 2: FADD/FADDP/FIADD,
//! FSUB/FSUBP/FISUB, FSUBR/FSUBRP/FISUBR, FMUL/FMULP/FIMUL,
//! FDIV/FDIVP/FIDIV, FDIVR/FDIVRP/FIDIVR, FSQRT, FABS, FCHS, FRNDINT,
//! FSCALE, FXTRACT, FPREM, FPREM1; 8.3.8 and 8.3.9 "Trigonometric",
//! "Logarithmic, exponential, and scale": FSIN, FCOS, FSINCOS, FPTAN, FPATAN,
//! F2XM1, FYL2X, FYL2XP1, computed in `transcendental`).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::float::{self, Result80, F80};
use super::stack::sw;
use super::transcendental;
use super::{
    control_word, has_memory_operand, masked, operand_de, raise, read_operand, real_operand, st_index, stack_fault,
};
use crate::bus::Bus;
use crate::cpu::{Cpu, Fault, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    use Mnemonic as M;
    match inst.mnemonic() {
        M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr => binary(cpu, bus, inst),
        M::Fsqrt | M::Frndint | M::Fabs | M::Fchs => unary(cpu, inst.mnemonic()),
        M::Fscale => {
            if let Some((a, b)) = two_operands(cpu) {
                let r = float::scale(a, b, control_word(cpu));
                write_result(cpu, 0, r, false);
            }
            Ok(())
        }
        M::Fprem | M::Fprem1 => {
            if let Some((a, b)) = two_operands(cpu) {
                let r = float::remainder(a, b, control_word(cpu), inst.mnemonic() == M::Fprem1);
                raise(cpu, r.flags);
                if let Some(v) = r.value {
                    cpu.state.fpu.set_st(0, v);
                    // The quotient's low bits: Q2 in C0, Q1 in C3, Q0 in C1;
                    // C2 says the reduction is incomplete.
                    let q = u16::from(r.quotient);
                    let mut cc = 0;
                    if r.partial {
                        cc |= sw::C2;
                    } else {
                        if q & 4 != 0 {
                            cc |= sw::C0;
                        }
                        if q & 2 != 0 {
                            cc |= sw::C3;
                        }
                        if q & 1 != 0 {
                            cc |= sw::C1;
                        }
                    }
                    cpu.state.fpu.set_cc(cc);
                }
            }
            Ok(())
        }
        M::Fxtract => {
            let Some(x) = operand_for_two_results(cpu) else {
                return Ok(());
            };
            let (parts, flags) = float::extract(x, control_word(cpu));
            raise(cpu, flags);
            if let Some(p) = parts {
                cpu.state.fpu.set_st(0, p.exponent);
                cpu.state.fpu.push(p.significand);
                cpu.state.fpu.set_c1(false);
            }
            Ok(())
        }
        M::Fsin | M::Fcos => {
            if let Some(x) = one_operand(cpu) {
                let cw = control_word(cpu);
                let r = if inst.mnemonic() == M::Fsin {
                    transcendental::sin(x, cw)
                } else {
                    transcendental::cos(x, cw)
                };
                trig_result(cpu, r.flags, r.c1, r.out_of_range);
                if let Some(v) = r.value {
                    cpu.state.fpu.set_st(0, v);
                }
            }
            Ok(())
        }
        M::Fptan | M::Fsincos => {
            let Some(x) = operand_for_two_results(cpu) else {
                return Ok(());
            };
            let cw = control_word(cpu);
            if inst.mnemonic() == M::Fptan {
                let r = transcendental::tan(x, cw);
                trig_result(cpu, r.flags, r.c1, r.out_of_range);
                if let (Some(v), Some(push)) = (r.value, r.fptan_push()) {
                    cpu.state.fpu.set_st(0, v);
                    cpu.state.fpu.push(push);
                }
            } else {
                let r = transcendental::sincos(x, cw);
                trig_result(cpu, r.flags, r.c1, r.out_of_range);
                if r.valid {
                    cpu.state.fpu.set_st(0, r.sin);
                    cpu.state.fpu.push(r.cos);
                }
            }
            Ok(())
        }
        M::F2xm1 => {
            if let Some(x) = one_operand(cpu) {
                let r = transcendental::f2xm1(x, control_word(cpu));
                write_result(cpu, 0, r, false);
            }
            Ok(())
        }
        // ST(1) op ST(0) into ST(1), then a pop.
        M::Fyl2x | M::Fyl2xp1 | M::Fpatan => {
            if cpu.state.fpu.is_empty(0) || cpu.state.fpu.is_empty(1) {
                if stack_fault(cpu, false) {
                    cpu.state.fpu.set_st(1, F80::INDEFINITE);
                    cpu.state.fpu.pop();
                }
                return Ok(());
            }
            let (x, y) = (cpu.state.fpu.st(0), cpu.state.fpu.st(1));
            let cw = control_word(cpu);
            let r = match inst.mnemonic() {
                M::Fyl2x => transcendental::fyl2x(x, y, cw),
                M::Fyl2xp1 => transcendental::fyl2xp1(x, y, cw),
                _ => transcendental::fpatan(x, y, cw),
            };
            write_result(cpu, 1, r, true);
            Ok(())
        }
        _ => Err(Fault::ud()),
    }
}

/// ST(0) for an instruction that replaces it and pushes a second result
/// (FXTRACT, FPTAN, FSINCOS), or `None` after a stack fault: ST(0) empty
/// (underflow) or no room for the push (overflow). The masked response
/// leaves the indefinite in both places.
fn operand_for_two_results(cpu: &mut Cpu) -> Option<F80> {
    let underflow = cpu.state.fpu.is_empty(0);
    if underflow || !cpu.state.fpu.is_empty(7) {
        if stack_fault(cpu, !underflow) {
            cpu.state.fpu.set_st(0, F80::INDEFINITE);
            cpu.state.fpu.push(F80::INDEFINITE);
        }
        return None;
    }
    Some(cpu.state.fpu.st(0))
}

/// ST(0), or `None` after a stack underflow (whose masked response writes
/// the indefinite to it).
fn one_operand(cpu: &mut Cpu) -> Option<F80> {
    if cpu.state.fpu.is_empty(0) {
        if stack_fault(cpu, false) {
            cpu.state.fpu.set_st(0, F80::INDEFINITE);
        }
        return None;
    }
    Some(cpu.state.fpu.st(0))
}

/// The condition codes of FSIN, FCOS, FSINCOS and FPTAN: C2 says the
/// operand was out of range (and left as it was), C1 that the result was
/// rounded up.
fn trig_result(cpu: &mut Cpu, flags: u16, c1: bool, out_of_range: bool) {
    raise(cpu, flags);
    let fpu = &mut cpu.state.fpu;
    fpu.status = (fpu.status & !sw::C2) | if out_of_range { sw::C2 } else { 0 };
    fpu.set_c1(c1 && !out_of_range);
}

/// ST(0) and ST(1), or `None` after a stack underflow (whose masked
/// response writes the indefinite to ST(0)).
fn two_operands(cpu: &mut Cpu) -> Option<(F80, F80)> {
    if cpu.state.fpu.is_empty(0) || cpu.state.fpu.is_empty(1) {
        if stack_fault(cpu, false) {
            cpu.state.fpu.set_st(0, F80::INDEFINITE);
        }
        return None;
    }
    Some((cpu.state.fpu.st(0), cpu.state.fpu.st(1)))
}

/// Writes a result to ST(dest) and pops if asked; an unmasked exception
/// that suppressed the result leaves the stack as it was.
fn write_result(cpu: &mut Cpu, dest: u8, r: Result80, pop: bool) {
    raise(cpu, r.flags);
    cpu.state.fpu.set_c1(r.c1);
    if let Some(v) = r.value {
        cpu.state.fpu.set_st(dest, v);
        if pop {
            cpu.state.fpu.pop();
        }
    }
}

fn unary(cpu: &mut Cpu, m: Mnemonic) -> Result<()> {
    if cpu.state.fpu.is_empty(0) {
        if stack_fault(cpu, false) {
            cpu.state.fpu.set_st(0, F80::INDEFINITE);
        }
        return Ok(());
    }
    let a = cpu.state.fpu.st(0);
    let cw = control_word(cpu);
    let r = match m {
        Mnemonic::Fsqrt => float::sqrt(a, cw),
        Mnemonic::Frndint => float::round_to_integer(a, cw),
        // Sign changes only: no exception, not even for a signaling NaN.
        Mnemonic::Fabs => Result80 {
            value: Some(a.abs()),
            flags: 0,
            c1: false,
        },
        _ => Result80 {
            value: Some(a.neg()),
            flags: 0,
            c1: false,
        },
    };
    write_result(cpu, 0, r, false);
    Ok(())
}

/// The two-operand arithmetic: a memory operand (real or integer) with
/// ST(0), or ST(0) with ST(i) in either direction, popping for the P forms.
fn binary<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    use Mnemonic as M;
    let m = inst.mnemonic();
    let pop = matches!(m, M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp);
    let integer = matches!(m, M::Fiadd | M::Fisub | M::Fisubr | M::Fimul | M::Fidiv | M::Fidivr);
    // The destination register, and the source: a register or a value
    // loaded from memory with the exceptions its conversion raised.
    let (dest, source, load_flags) = if has_memory_operand(inst) {
        let size = inst.memory_size().size();
        let (v, flags) = match (integer, size) {
            (true, 2) => (
                float::from_int(i64::from(i16::from_le_bytes(read_operand(cpu, bus, inst)?))),
                0,
            ),
            (true, _) => (
                float::from_int(i64::from(i32::from_le_bytes(read_operand(cpu, bus, inst)?))),
                0,
            ),
            (false, 4) => real_operand(float::from_f32(u32::from_le_bytes(read_operand(cpu, bus, inst)?))),
            (false, _) => real_operand(float::from_f64(u64::from_le_bytes(read_operand(cpu, bus, inst)?))),
        };
        (0u8, Source::Value(v), flags)
    } else {
        let (d, s) = match inst.op_count() {
            0 => (1, 0),
            1 => (0, st_index(inst, 0)),
            _ => (st_index(inst, 0), st_index(inst, 1)),
        };
        debug_assert!(inst.op_count() < 2 || inst.op_kind(1) == OpKind::Register);
        (d, Source::Register(s), 0)
    };
    let source_empty = matches!(source, Source::Register(s) if cpu.state.fpu.is_empty(s));
    if cpu.state.fpu.is_empty(dest) || source_empty {
        if stack_fault(cpu, false) {
            cpu.state.fpu.set_st(dest, F80::INDEFINITE);
            if pop {
                cpu.state.fpu.pop();
            }
        }
        return Ok(());
    }
    let d = cpu.state.fpu.st(dest);
    let s = match source {
        Source::Register(i) => cpu.state.fpu.st(i),
        Source::Value(v) => v,
    };
    let cw = control_word(cpu);
    let mut r = match m {
        M::Fadd | M::Faddp | M::Fiadd => float::add(d, s, cw),
        M::Fsub | M::Fsubp | M::Fisub => float::sub(d, s, cw),
        M::Fsubr | M::Fsubrp | M::Fisubr => float::sub(s, d, cw),
        M::Fmul | M::Fmulp | M::Fimul => float::mul(d, s, cw),
        M::Fdiv | M::Fdivp | M::Fidiv => float::div(d, s, cw),
        _ => float::div(s, d, cw),
    };
    let de = operand_de(load_flags, d, r.flags);
    if de != 0 {
        r.flags |= de;
        // An unmasked denormal operand stops the operation before it
        // computes: no result, and none of its other exceptions (SDM Vol. 1
        // 4.9.2, 8.5.2), as for a denormal register operand.
        if !masked(cpu, de) {
            r = float::Result80 {
                value: None,
                flags: de,
                c1: false,
            };
        }
    }
    write_result(cpu, dest, r, pop);
    Ok(())
}

enum Source {
    Register(u8),
    Value(F80),
}
