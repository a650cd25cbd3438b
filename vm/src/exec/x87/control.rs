//! x87 control (SDM Vol. 1, 8.3.10 "x87 FPU control instructions", 8.1.10
//! "Saving the x87 FPU's state with FSTENV/FNSTENV and FSAVE/FNSAVE" and
//! figures 8-9 to 8-12 (the environment in its four layouts); Vol. 2:
//! FINIT/FNINIT, FCLEX/FNCLEX, FSTSW/FNSTSW, FSTCW/FNSTCW, FLDCW,
//! FSTENV/FNSTENV, FLDENV, FSAVE/FNSAVE, FRSTOR).

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::float::{exc, F80};
use super::stack::sw;
use super::{read_bytes, read_operand, write_bytes, write_operand};
use crate::bus::Bus;
use crate::cpu::state::{FpuState, SegReg};
use crate::cpu::{Cpu, Result};

/// FNINIT (and FNSAVE after it saves): control 0x037F, status and
/// pointers 0, every register tagged empty; the data registers themselves
/// are left unchanged (SDM Vol. 2, FINIT/FNINIT).
fn initialize(fpu: &mut FpuState) {
    *fpu = FpuState {
        regs: fpu.regs,
        ..FpuState::default()
    };
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    use Mnemonic as M;
    match inst.mnemonic() {
        M::Fninit | M::Finit => initialize(&mut cpu.state.fpu),
        M::Fnclex | M::Fclex => cpu.state.fpu.status &= !(exc::ALL | sw::SF | sw::ES | sw::B),
        M::Fnstsw | M::Fstsw => {
            let status = cpu.state.fpu.status;
            if inst.op_count() > 0 && inst.op_kind(0) == OpKind::Register {
                cpu.write_reg(Register::AX, u32::from(status));
            } else {
                write_operand(cpu, bus, inst, &status.to_le_bytes())?;
            }
        }
        M::Fnstcw | M::Fstcw => {
            let control = cpu.state.fpu.control;
            write_operand(cpu, bus, inst, &control.to_le_bytes())?;
        }
        M::Fldcw => {
            let cw: [u8; 2] = read_operand(cpu, bus, inst)?;
            set_control(&mut cpu.state.fpu, u16::from_le_bytes(cw));
        }
        M::Fnstenv | M::Fstenv => {
            let (seg, ea) = cpu.mem_operand(inst);
            let env = environment(cpu, wide(inst));
            write_bytes(cpu, bus, seg, ea, &env)?;
            // After saving, every exception is masked (so a handler can run
            // x87 code without faulting again).
            cpu.state.fpu.control |= exc::ALL;
        }
        M::Fldenv => {
            let (seg, ea) = cpu.mem_operand(inst);
            load_environment(cpu, bus, seg, ea, wide(inst))?;
        }
        M::Fnsave | M::Fsave => {
            let (seg, ea) = cpu.mem_operand(inst);
            let mut image = environment(cpu, wide(inst));
            for i in 0..8 {
                image.extend_from_slice(&cpu.state.fpu.st(i).to_bytes());
            }
            write_bytes(cpu, bus, seg, ea, &image)?;
            initialize(&mut cpu.state.fpu);
        }
        M::Frstor => {
            let (seg, ea) = cpu.mem_operand(inst);
            let env_len: u32 = if wide(inst) { 28 } else { 14 };
            // Read everything before changing anything: a fault restarts.
            let mut regs = [F80::default(); 8];
            for (i, r) in regs.iter_mut().enumerate() {
                *r = F80::from_bytes(read_bytes(cpu, bus, seg, ea.wrapping_add(env_len + 10 * i as u32))?);
            }
            load_environment(cpu, bus, seg, ea, wide(inst))?;
            let top = cpu.state.fpu.top();
            for (i, r) in regs.iter().enumerate() {
                let phys = usize::from((top + i as u8) & 7);
                cpu.state.fpu.regs[phys][..10].copy_from_slice(&r.to_bytes());
            }
            // The tags were loaded before the registers they describe.
            let tags = cpu.state.fpu.tag;
            cpu.state.fpu.load_tag_word(tags);
        }
        _ => return Err(crate::cpu::Fault::ud()),
    }
    Ok(())
}

/// Loads the control word; the error summary follows the exceptions that
/// are now unmasked (SDM Vol. 1, 8.1.5: loading a control word that
/// unmasks a pending exception makes it pending).
fn set_control(fpu: &mut FpuState, control: u16) {
    // Bits 6, 7 and 13-15 are reserved; bit 6 reads as 1 on the 387 on.
    fpu.control = (control & 0x1F3F) | 0x0040;
    update_summary(fpu);
}

fn update_summary(fpu: &mut FpuState) {
    if fpu.status & !fpu.control & exc::ALL != 0 {
        fpu.status |= sw::ES | sw::B;
    } else {
        fpu.status &= !(sw::ES | sw::B);
    }
}

/// 32-bit (28-byte) or 16-bit (14-byte) layout: the operand size.
fn wide(inst: &Instruction) -> bool {
    inst.memory_size().size() >= 28
}

/// The environment as FNSTENV and FNSAVE store it, in the layout of the
/// mode and operand size (SDM Vol. 1, figures 8-9 to 8-12).
fn environment(cpu: &Cpu, wide: bool) -> Vec<u8> {
    let fpu = &cpu.state.fpu;
    let tags = fpu.full_tag_word();
    let protected = cpu.state.protected_mode() && !cpu.state.v86_mode();
    let mut out = Vec::with_capacity(28);
    let mut put = |v: u32| {
        if wide {
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
    };
    put(u32::from(fpu.control));
    put(u32::from(fpu.status));
    put(u32::from(tags));
    let opcode = u32::from(fpu.opcode & 0x7FF);
    if protected {
        put(fpu.ip);
        put(u32::from(fpu.cs) | if wide { opcode << 16 } else { 0 });
        put(fpu.dp);
        put(u32::from(fpu.ds));
    } else {
        // Real and virtual-8086 mode keep 20- or 32-bit linear pointers.
        let ip = (u32::from(fpu.cs) << 4).wrapping_add(fpu.ip);
        let dp = (u32::from(fpu.ds) << 4).wrapping_add(fpu.dp);
        let high = if wide { 0xFFFF } else { 0xF };
        put(ip & 0xFFFF);
        put((((ip >> 16) & high) << 12) | opcode);
        put(dp & 0xFFFF);
        put(((dp >> 16) & high) << 12);
    }
    out
}

/// Loads an environment stored by [`environment`]'s layouts.
fn load_environment<B: Bus>(cpu: &mut Cpu, bus: &mut B, seg: SegReg, ea: u32, wide: bool) -> Result<()> {
    let fields: [u32; 7] = if wide {
        let b: [u8; 28] = read_bytes(cpu, bus, seg, ea)?;
        std::array::from_fn(|i| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
    } else {
        let b: [u8; 14] = read_bytes(cpu, bus, seg, ea)?;
        std::array::from_fn(|i| u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])))
    };
    let protected = cpu.state.protected_mode() && !cpu.state.v86_mode();
    let fpu = &mut cpu.state.fpu;
    fpu.control = (fields[0] as u16 & 0x1F3F) | 0x0040;
    fpu.status = fields[1] as u16;
    fpu.tag = fields[2] as u16;
    if protected {
        fpu.ip = fields[3];
        fpu.cs = fields[4] as u16;
        fpu.opcode = ((fields[4] >> 16) & 0x7FF) as u16;
        fpu.dp = fields[5];
        fpu.ds = fields[6] as u16;
    } else {
        fpu.ip = (fields[3] & 0xFFFF) | ((fields[4] >> 12) << 16);
        fpu.cs = 0;
        fpu.opcode = (fields[4] & 0x7FF) as u16;
        fpu.dp = (fields[5] & 0xFFFF) | ((fields[6] >> 12) << 16);
        fpu.ds = 0;
    }
    let tags = fpu.tag;
    fpu.load_tag_word(tags);
    update_summary(fpu);
    Ok(())
}
