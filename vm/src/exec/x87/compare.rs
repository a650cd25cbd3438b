//! x87 comparison and classification (SDM Vol. 1, 8.3.6 "Comparison and
//! classification instructions", 8.1.3.5; Vol. 2: FCOM/FCOMP/FCOMPP,
//! FUCOM/FUCOMP/FUCOMPP, FICOM/FICOMP, FCOMI/FCOMIP/FUCOMI/FUCOMIP, FTST,
//! FXAM).
//!
//! FCOM and FICOM signal invalid on any NaN, FUCOM only on a signaling one.
//! The result goes to C3/C2/C0 (greater 000, less 001, equal 100,
//! unordered 111), or for FCOMI to ZF/PF/CF in the same pattern with OF, SF
//! and AF cleared. An unmasked invalid operand leaves the condition codes
//! and the stack alone.

use iced_x86::{Instruction, Mnemonic};

use super::float::{self, Class, Order, F80};
use super::stack::sw;
use super::{has_memory_operand, masked, operand_de, raise, read_operand, real_operand, st_index, stack_fault};
use crate::bus::Bus;
use crate::cpu::state::flags::{AF, CF, OF, PF, SF, ZF};
use crate::cpu::{Cpu, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    use Mnemonic as M;
    let m = inst.mnemonic();
    if m == M::Fxam {
        // C1 is the sign; C3/C2/C0 the class, "empty" included. No exception.
        let fpu = &mut cpu.state.fpu;
        let v = fpu.st(0);
        let class = if fpu.is_empty(0) {
            sw::C3 | sw::C0
        } else {
            match v.class() {
                Class::Unsupported => 0,
                Class::Nan => sw::C0,
                Class::Normal => sw::C2,
                Class::Infinity => sw::C2 | sw::C0,
                Class::Zero => sw::C3,
                Class::Denormal => sw::C3 | sw::C2,
            }
        };
        fpu.set_cc(class | if v.sign() { sw::C1 } else { 0 });
        return Ok(());
    }
    let quiet = matches!(m, M::Fucom | M::Fucomp | M::Fucompp | M::Fucomi | M::Fucomip);
    let pops = match m {
        M::Fcomp | M::Fucomp | M::Ficomp | M::Fcomip | M::Fucomip => 1,
        M::Fcompp | M::Fucompp => 2,
        _ => 0,
    };
    let eflags = matches!(m, M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip);
    // The second operand: memory (real or integer), a register, zero for
    // FTST, ST(1) when none is named.
    let (other, other_empty, load_flags) = if has_memory_operand(inst) {
        let size = inst.memory_size().size();
        let (v, flags) = match (m, size) {
            (M::Ficom | M::Ficomp, 2) => (
                float::from_int(i64::from(i16::from_le_bytes(read_operand(cpu, bus, inst)?))),
                0,
            ),
            (M::Ficom | M::Ficomp, _) => (
                float::from_int(i64::from(i32::from_le_bytes(read_operand(cpu, bus, inst)?))),
                0,
            ),
            (_, 4) => real_operand(float::from_f32(u32::from_le_bytes(read_operand(cpu, bus, inst)?))),
            _ => real_operand(float::from_f64(u64::from_le_bytes(read_operand(cpu, bus, inst)?))),
        };
        (v, false, flags)
    } else if m == M::Ftst {
        (F80::default(), false, 0)
    } else {
        let i = match inst.op_count() {
            0 => 1,
            1 => st_index(inst, 0),
            _ => st_index(inst, 1),
        };
        (cpu.state.fpu.st(i), cpu.state.fpu.is_empty(i), 0)
    };
    let unordered = if eflags {
        ZF | PF | CF
    } else {
        u32::from(sw::C3 | sw::C2 | sw::C0)
    };
    // FCOMI & co. clear OF, SF and AF whether or not an invalid operation
    // is detected (SDM Vol. 2A, FCOMI): also when it stops the compare.
    if eflags {
        cpu.state.eflags &= !(OF | SF | AF);
    }
    if cpu.state.fpu.is_empty(0) || other_empty {
        if stack_fault(cpu, false) {
            set_result(cpu, eflags, unordered);
            pop(cpu, pops);
        }
        return Ok(());
    }
    let st0 = cpu.state.fpu.st(0);
    let (order, mut flags) = float::compare(st0, other, quiet);
    flags |= operand_de(load_flags, st0, flags);
    raise(cpu, flags);
    if !masked(cpu, flags & (float::exc::IE | float::exc::DE)) {
        return Ok(());
    }
    let bits = match (order, eflags) {
        (Order::Greater, _) => 0,
        (Order::Less, false) => u32::from(sw::C0),
        (Order::Less, true) => CF,
        (Order::Equal, false) => u32::from(sw::C3),
        (Order::Equal, true) => ZF,
        (Order::Unordered, _) => unordered,
    };
    set_result(cpu, eflags, bits);
    pop(cpu, pops);
    Ok(())
}

fn set_result(cpu: &mut Cpu, eflags: bool, bits: u32) {
    if eflags {
        cpu.state.eflags = (cpu.state.eflags & !(ZF | PF | CF | OF | SF | AF)) | bits;
        cpu.state.fpu.set_c1(false);
    } else {
        cpu.state.fpu.set_cc(bits as u16);
    }
}

fn pop(cpu: &mut Cpu, n: u8) {
    for _ in 0..n {
        cpu.state.fpu.pop();
    }
}
