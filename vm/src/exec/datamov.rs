//! Data movement and conversion: MOV (general and segment registers), MOVZX,
//! MOVSX, XCHG, XADD, CMPXCHG, CMPXCHG8B, BSWAP, LEA, CBW/CWDE/CWD/CDQ, LAHF,
//! SAHF, XLAT, LDS/LES/LFS/LGS/LSS, CMOVcc, SETcc, SALC, NOP, PAUSE (SDM Vol. 1, 7.3.1
//! "Data transfer instructions"; Vol. 2, the page of each instruction), and
//! the fences LFENCE/MFENCE/SFENCE (Vol. 2A/2B; Vol. 3A, 8.2.5).

use iced_x86::{ConditionCode, Instruction, Mnemonic, OpKind, Register};

use super::{flags, op_size, seg_of, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, STATUS, ZF};
use crate::cpu::state::reg::{EAX, EBX, ECX, EDX};
use crate::cpu::state::SegReg;
use crate::cpu::{Cpu, Fault, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    match inst.mnemonic() {
        Mnemonic::Mov => mov(cpu, bus, inst),
        Mnemonic::Movzx | Mnemonic::Movsx => {
            let ssize = op_size(inst, 1);
            let v = cpu.read_op(bus, inst, 1, ssize)?;
            let dsize = op_size(inst, 0);
            let v = extend(v, ssize, inst.mnemonic() == Mnemonic::Movsx, dsize);
            cpu.write_op(bus, inst, 0, dsize, v)?;
            Ok(Flow::Next)
        }
        Mnemonic::Xchg => {
            let size = op_size(inst, 0);
            let a = cpu.read_op(bus, inst, 0, size)?;
            let b = cpu.read_op(bus, inst, 1, size)?;
            // Write the memory side first so a fault leaves registers untouched.
            if inst.op0_kind() == OpKind::Memory {
                cpu.write_op(bus, inst, 0, size, b)?;
                cpu.write_op(bus, inst, 1, size, a)?;
            } else {
                cpu.write_op(bus, inst, 1, size, a)?;
                cpu.write_op(bus, inst, 0, size, b)?;
            }
            Ok(Flow::Next)
        }
        Mnemonic::Xadd => {
            let size = op_size(inst, 0);
            let d = cpu.read_op(bus, inst, 0, size)?;
            let s = cpu.read_op(bus, inst, 1, size)?;
            let (r, f) = flags::add(d, s, 0, size);
            cpu.write_op(bus, inst, 0, size, r)?;
            cpu.write_op(bus, inst, 1, size, d)?;
            cpu.set_status(f);
            Ok(Flow::Next)
        }
        Mnemonic::Cmpxchg => {
            let size = op_size(inst, 0);
            let d = cpu.read_op(bus, inst, 0, size)?;
            let s = cpu.read_op(bus, inst, 1, size)?;
            let (written, eax, f) = cmpxchg(cpu.state.regs[EAX], d, s, size);
            cpu.write_op(bus, inst, 0, size, written)?;
            // Only on a mismatch: a destination in EAX written on a match
            // keeps what was written.
            if let Some(eax) = eax {
                cpu.state.regs[EAX] = eax;
            }
            cpu.set_status(f);
            Ok(Flow::Next)
        }
        Mnemonic::Cmpxchg8b => {
            if inst.op0_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let (seg, ea) = cpu.mem_operand(inst);
            let lo = cpu.read_mem(bus, seg, ea, 4)?;
            let hi = cpu.read_mem(bus, seg, ea.wrapping_add(4), 4)?;
            let r = &cpu.state.regs;
            if lo == r[EAX] && hi == r[EDX] {
                let (nl, nh) = (r[EBX], r[ECX]);
                cpu.write_mem(bus, seg, ea, 4, nl)?;
                cpu.write_mem(bus, seg, ea.wrapping_add(4), 4, nh)?;
                cpu.state.eflags |= ZF;
            } else {
                cpu.write_mem(bus, seg, ea, 4, lo)?;
                cpu.write_mem(bus, seg, ea.wrapping_add(4), 4, hi)?;
                cpu.state.regs[EAX] = lo;
                cpu.state.regs[EDX] = hi;
                cpu.state.eflags &= !ZF;
            }
            Ok(Flow::Next)
        }
        Mnemonic::Bswap => {
            let size = op_size(inst, 0);
            let v = cpu.read_op(bus, inst, 0, size)?;
            // With a 16-bit operand the result is undefined; real processors give 0.
            let r = if size == 4 { bswap32(v) } else { 0 };
            cpu.write_op(bus, inst, 0, size, r)?;
            Ok(Flow::Next)
        }
        Mnemonic::Lea => {
            if inst.op1_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let ea = cpu.effective_address(inst);
            let size = op_size(inst, 0);
            cpu.write_op(bus, inst, 0, size, lea(ea, size))?;
            Ok(Flow::Next)
        }
        Mnemonic::Cbw => {
            let eax = cpu.state.regs[EAX];
            cpu.state.regs[EAX] = (eax & !0xFFFF) | (flags::sext(eax, 1) & 0xFFFF);
            Ok(Flow::Next)
        }
        Mnemonic::Cwde => {
            cpu.state.regs[EAX] = flags::sext(cpu.state.regs[EAX], 2);
            Ok(Flow::Next)
        }
        Mnemonic::Cwd => {
            let hi = if cpu.state.regs[EAX] & 0x8000 != 0 { 0xFFFF } else { 0 };
            cpu.state.regs[EDX] = (cpu.state.regs[EDX] & !0xFFFF) | hi;
            Ok(Flow::Next)
        }
        Mnemonic::Cdq => {
            cpu.state.regs[EDX] = if cpu.state.regs[EAX] & 0x8000_0000 != 0 {
                0xFFFF_FFFF
            } else {
                0
            };
            Ok(Flow::Next)
        }
        Mnemonic::Lahf => {
            let ah = (cpu.state.eflags & 0xD5) | 0x02;
            cpu.state.regs[EAX] = (cpu.state.regs[EAX] & !0xFF00) | (ah << 8);
            Ok(Flow::Next)
        }
        Mnemonic::Sahf => {
            let ah = (cpu.state.regs[EAX] >> 8) & 0xD5;
            cpu.state.eflags = (cpu.state.eflags & !(STATUS & 0xFF)) | ah;
            Ok(Flow::Next)
        }
        Mnemonic::Xlatb => {
            let v = cpu.read_op(bus, inst, 0, 1)?;
            cpu.write_reg(Register::AL, v);
            Ok(Flow::Next)
        }
        Mnemonic::Lds | Mnemonic::Les | Mnemonic::Lfs | Mnemonic::Lgs | Mnemonic::Lss => {
            if inst.op1_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let size = op_size(inst, 0);
            let (seg, ea) = cpu.mem_operand(inst);
            let off = cpu.read_mem(bus, seg, ea, size)?;
            let sel = cpu.read_mem(bus, seg, ea.wrapping_add(u32::from(size)), 2)? as u16;
            let target = match inst.mnemonic() {
                Mnemonic::Lds => SegReg::Ds,
                Mnemonic::Les => SegReg::Es,
                Mnemonic::Lfs => SegReg::Fs,
                Mnemonic::Lgs => SegReg::Gs,
                _ => SegReg::Ss,
            };
            cpu.load_segment(bus, target, sel)?;
            cpu.write_op(bus, inst, 0, size, off)?;
            Ok(Flow::Next)
        }
        Mnemonic::Salc => {
            let al = if cpu.flag(CF) { 0xFF } else { 0 };
            cpu.write_reg(Register::AL, al);
            Ok(Flow::Next)
        }
        // PAUSE is a REP-prefixed NOP, valid on every processor (SDM Vol. 2B
        // "PAUSE": "executes as a NOP on processors that do not support it").
        Mnemonic::Nop | Mnemonic::Pause => {
            // Multi-byte NOPs still compute their memory operand but never access it.
            Ok(Flow::Next)
        }
        // The fences are SSE/SSE2 instructions, which CPUID does not
        // announce; they run anyway, because kernels take the TSC-deadline
        // timer to imply them (Linux fences after arming it, SDM Vol. 3A
        // 10.5.4.1), and every CPU that has the one has the others. One
        // CPU retiring in order has no accesses to order.
        Mnemonic::Lfence | Mnemonic::Mfence | Mnemonic::Sfence => Ok(Flow::Next),
        _ => Err(Fault::ud()),
    }
}

/// MOVZX/MOVSX: the `ssize`-byte source zero- or sign-extended to `dsize` bytes.
#[inline(always)]
pub fn extend(v: u32, ssize: u8, signed: bool, dsize: u8) -> u32 {
    let v = if signed { flags::sext(v, ssize) } else { v };
    v & flags::mask(dsize)
}

/// LEA: the effective address truncated to the operand size (SDM Vol. 2A,
/// LEA, table 3-53; the address size was applied computing it).
#[inline(always)]
pub fn lea(ea: u32, size: u8) -> u32 {
    ea & flags::mask(size)
}

fn mov<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let dst_reg = if inst.op0_kind() == OpKind::Register {
        inst.op0_register()
    } else {
        Register::None
    };
    if dst_reg.is_segment_register() {
        let sreg = seg_of(dst_reg);
        if sreg == SegReg::Cs {
            return Err(Fault::ud());
        }
        let sel = cpu.read_op(bus, inst, 1, 2)? as u16;
        cpu.load_segment(bus, sreg, sel)?;
        if sreg == SegReg::Ss {
            // MOV SS blocks interrupts for one instruction (SDM Vol. 3A, 6.8.3).
            cpu.state.interrupt_shadow = true;
        }
        return Ok(Flow::Next);
    }
    if inst.op1_kind() == OpKind::Register && inst.op1_register().is_segment_register() {
        let sel = cpu.read_reg(inst.op1_register());
        // To memory: always 16 bits. To a 32-bit register: zero-extended (P6 and later).
        let size = if inst.op0_kind() == OpKind::Memory {
            2
        } else {
            op_size(inst, 0)
        };
        cpu.write_op(bus, inst, 0, size, sel)?;
        return Ok(Flow::Next);
    }
    let size = op_size(inst, 0);
    let v = cpu.read_op(bus, inst, 1, size)?;
    cpu.write_op(bus, inst, 0, size, v)?;
    Ok(Flow::Next)
}

fn cc(inst: &Instruction) -> u8 {
    (inst.condition_code() as u8).wrapping_sub(ConditionCode::o as u8)
}

pub fn cmov<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size = op_size(inst, 0);
    let v = cpu.read_op(bus, inst, 1, size)?;
    if flags::condition(cpu.state.eflags, cc(inst)) {
        cpu.write_op(bus, inst, 0, size, v)?;
    }
    Ok(Flow::Next)
}

pub fn setcc<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let v = u32::from(flags::condition(cpu.state.eflags, cc(inst)));
    cpu.write_op(bus, inst, 0, 1, v)?;
    Ok(Flow::Next)
}

pub(crate) fn condition_of(inst: &Instruction) -> u8 {
    cc(inst)
}

/// SETcc, any condition.
pub(crate) fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
    )
}

/// CMOVcc, any condition.
pub(crate) fn is_cmov(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
    )
}

/// BSWAP of a 32-bit value (SDM Vol. 2A, BSWAP).
#[inline]
pub fn bswap32(v: u32) -> u32 {
    v.swap_bytes()
}

/// CMPXCHG of a destination holding `d` (`size` bytes) with source `s`: what
/// is written to the destination (always written, SDM: "to simplify the
/// interface to the processor's bus": `s` when it matched the accumulator,
/// else `d` again), the new EAX when it did not match (to be set after the
/// destination, which may be part of EAX), and the status flags (CMP's).
#[inline]
pub fn cmpxchg(eax: u32, d: u32, s: u32, size: u8) -> (u32, Option<u32>, u32) {
    let m = flags::mask(size);
    let acc = eax & m;
    let (_, f) = flags::sub(acc, d, 0, size);
    if acc == d {
        (s, None, f)
    } else {
        (d, Some((eax & !m) | d), f)
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{AF, CF, OF, PF, SF, ZF};
    use crate::cpu::state::reg::{EAX, EBX, ECX, EDX, ESI};
    use crate::cpu::state::SegReg;
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    // SDM Vol. 2B, MOV: register, memory and immediate forms; byte registers AH..BH.
    #[test]
    fn mov_forms() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1122_3344).set_reg(EBX, DATA);
        assert_retired(m.exec(&[0x89, 0x03])); // mov [ebx], eax
        assert_eq!(m.r32(DATA), 0x1122_3344);
        assert_retired(m.exec(&[0x8B, 0x0B])); // mov ecx, [ebx]
        assert_eq!(m.reg(ECX), 0x1122_3344);
        assert_retired(m.exec(&[0x88, 0xE0])); // mov al, ah
        assert_eq!(m.reg(EAX), 0x1122_3333);
        assert_retired(m.exec(&[0xC6, 0x43, 0x01, 0x99])); // mov byte [ebx+1], 99h
        assert_eq!(m.r32(DATA), 0x1122_9944);
        assert_retired(m.exec(&[0xBA, 0x78, 0x56, 0x34, 0x12])); // mov edx, 12345678h
        assert_eq!(m.reg(EDX), 0x1234_5678);
        assert_eq!(m.eip(), CODE + 2 + 2 + 2 + 4 + 5);
    }

    // SDM Vol. 2B, PAUSE: F3 90 is a NOP on every processor, in every mode
    // (spin-wait loops in every kernel use it); it was #UD here once.
    #[test]
    fn pause_is_a_nop() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 7);
        assert_retired(m.exec(&[0xF3, 0x90]));
        assert_eq!((m.reg(EAX), m.eip()), (7, CODE + 2));
        let mut m = Machine::real16();
        assert_retired(m.exec(&[0xF3, 0x90]));
    }

    // SDM Vol. 2B, MOVZX/MOVSX.
    #[test]
    fn movzx_movsx() {
        let mut m = Machine::flat32();
        m.set_reg(EBX, 0x0000_8080);
        assert_retired(m.exec(&[0x0F, 0xB6, 0xC3])); // movzx eax, bl
        assert_eq!(m.reg(EAX), 0x80);
        assert_retired(m.exec(&[0x0F, 0xBE, 0xC3])); // movsx eax, bl
        assert_eq!(m.reg(EAX), 0xFFFF_FF80);
        assert_retired(m.exec(&[0x0F, 0xBF, 0xC3])); // movsx eax, bx
        assert_eq!(m.reg(EAX), 0xFFFF_8080);
        m.set_reg(EAX, 0x1234_0000);
        assert_retired(m.exec(&[0x66, 0x0F, 0xBE, 0xC3])); // movsx ax, bl
        assert_eq!(m.reg(EAX), 0x1234_FF80);
    }

    // SDM Vol. 2B, XCHG; Vol. 2B, XADD: TEMP <- SRC + DEST; SRC <- DEST; DEST <- TEMP.
    #[test]
    fn xchg_xadd() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 1).set_reg(EBX, 2);
        assert_retired(m.exec(&[0x93])); // xchg eax, ebx
        assert_eq!((m.reg(EAX), m.reg(EBX)), (2, 1));
        m.w32(DATA, 7);
        m.set_reg(ECX, DATA);
        assert_retired(m.exec(&[0x87, 0x01])); // xchg [ecx], eax
        assert_eq!((m.reg(EAX), m.r32(DATA)), (7, 2));

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xFFFF_FFFF).set_reg(EBX, 1);
        assert_retired(m.exec(&[0x0F, 0xC1, 0xD8])); // xadd eax, ebx
        assert_eq!((m.reg(EAX), m.reg(EBX)), (0, 0xFFFF_FFFF));
        assert_eq!(m.status(), CF | ZF | AF | PF);
    }

    // SDM Vol. 2A, CMPXCHG: equal -> ZF = 1, DEST <- SRC; else ZF = 0 and the
    // accumulator gets DEST (which is written back with its own value).
    #[test]
    fn cmpxchg() {
        let mut m = Machine::flat32();
        m.w32(DATA, 5);
        m.set_reg(EBX, DATA).set_reg(EAX, 5).set_reg(ECX, 9);
        assert_retired(m.exec(&[0x0F, 0xB1, 0x0B])); // cmpxchg [ebx], ecx
        assert_eq!(m.r32(DATA), 9);
        assert_eq!(m.status() & ZF, ZF);
        assert_eq!(m.reg(EAX), 5);
        assert_retired(m.exec(&[0x0F, 0xB1, 0x0B])); // now [ebx] = 9 != 5
        assert_eq!(m.r32(DATA), 9);
        assert_eq!(m.reg(EAX), 9);
        assert_eq!(m.status() & (ZF | CF | SF), CF | SF, "flags of CMP 5, 9");
        // Byte form only touches AL.
        m.w8(DATA, 0x42);
        m.set_reg(EAX, 0xAAAA_AA00);
        assert_retired(m.exec(&[0x0F, 0xB0, 0x0B])); // cmpxchg [ebx], cl
        assert_eq!(m.reg(EAX), 0xAAAA_AA42);
        // A destination in the accumulator: matched, it takes the source.
        m.set_reg(EAX, 5).set_reg(ECX, 9);
        assert_retired(m.exec(&[0x0F, 0xB1, 0xC8])); // cmpxchg eax, ecx
        assert_eq!((m.reg(EAX), m.status() & ZF), (9, ZF));
        m.set_reg(EAX, 0x0505);
        assert_retired(m.exec(&[0x0F, 0xB0, 0xCC])); // cmpxchg ah, cl
        assert_eq!((m.reg(EAX), m.status() & ZF), (0x0905, ZF));
        m.set_reg(EAX, 0x0507);
        assert_retired(m.exec(&[0x0F, 0xB0, 0xCC])); // AL 7 != AH 5: AL <- 5
        assert_eq!((m.reg(EAX), m.status() & ZF), (0x0505, 0));
    }

    // SDM Vol. 2A, CMPXCHG8B: EDX:EAX vs m64; equal -> m64 <- ECX:EBX, ZF = 1;
    // else EDX:EAX <- m64, ZF = 0. A register operand is #UD.
    #[test]
    fn cmpxchg8b() {
        let mut m = Machine::flat32();
        m.w32(DATA, 0x1111_1111);
        m.w32(DATA + 4, 0x2222_2222);
        m.set_reg(ESI, DATA).set_reg(EAX, 0x1111_1111).set_reg(EDX, 0x2222_2222);
        m.set_reg(EBX, 0xB).set_reg(ECX, 0xC);
        assert_retired(m.exec(&[0x0F, 0xC7, 0x0E])); // cmpxchg8b [esi]
        assert_eq!((m.r32(DATA), m.r32(DATA + 4)), (0xB, 0xC));
        assert_eq!(m.status() & ZF, ZF);
        assert_retired(m.exec(&[0x0F, 0xC7, 0x0E]));
        assert_eq!((m.reg(EAX), m.reg(EDX)), (0xB, 0xC));
        assert_eq!(m.status() & ZF, 0);
        let mut m = Machine::flat32();
        assert_fault(m.exec(&[0x0F, 0xC7, 0xC8]), vector::UD, None);
    }

    // SDM Vol. 2A, BSWAP.
    #[test]
    fn bswap() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234_5678);
        assert_retired(m.exec(&[0x0F, 0xC8])); // bswap eax
        assert_eq!(m.reg(EAX), 0x7856_3412);
        m.set_reg(EDX, 0x0102_0304);
        assert_retired(m.exec(&[0x0F, 0xCA])); // bswap edx
        assert_eq!(m.reg(EDX), 0x0403_0201);
    }

    // SDM Vol. 2A, LEA: the offset only, truncated to the address size.
    #[test]
    fn lea() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x100).set_reg(EBX, 0x10);
        assert_retired(m.exec(&[0x8D, 0x44, 0x98, 0x10])); // lea eax, [eax+ebx*4+10h]
        assert_eq!(m.reg(EAX), 0x150);
        m.set_reg(EBX, 0x1_FFFF).set_reg(ESI, 2);
        assert_retired(m.exec(&[0x67, 0x8D, 0x00])); // lea eax, [bx+si] (16-bit addressing)
        assert_eq!(m.reg(EAX), 0x0001);
        assert_fault(m.exec(&[0x8D, 0xC0]), vector::UD, None); // lea eax, eax
    }

    // SDM Vol. 2A, CBW/CWDE and CWD/CDQ.
    #[test]
    fn sign_extensions() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234_0080);
        assert_retired(m.exec(&[0x66, 0x98])); // cbw
        assert_eq!(m.reg(EAX), 0x1234_FF80);
        assert_retired(m.exec(&[0x98])); // cwde
        assert_eq!(m.reg(EAX), 0xFFFF_FF80);
        m.set_reg(EDX, 0x5555_5555);
        assert_retired(m.exec(&[0x66, 0x99])); // cwd
        assert_eq!(m.reg(EDX), 0x5555_FFFF);
        m.set_reg(EAX, 1);
        assert_retired(m.exec(&[0x99])); // cdq
        assert_eq!(m.reg(EDX), 0);
    }

    // SDM Vol. 2A, LAHF: AH <- SF:ZF:0:AF:0:PF:1:CF; Vol. 2B, SAHF loads those five flags.
    #[test]
    fn lahf_sahf() {
        let mut m = Machine::flat32();
        m.set_flags(SF | CF | OF);
        assert_retired(m.exec(&[0x9F]));
        assert_eq!(m.reg(EAX) >> 8 & 0xFF, 0x83);
        m.set_reg(EAX, 0x5500);
        assert_retired(m.exec(&[0x9E]));
        assert_eq!(m.status(), ZF | AF | PF | CF | OF, "OF is not loaded by SAHF");
    }

    // SDM Vol. 2B, XLAT: AL <- [EBX + unsigned AL].
    #[test]
    fn xlat() {
        let mut m = Machine::flat32();
        m.w8(DATA + 0xF0, 0x5A);
        m.set_reg(EBX, DATA).set_reg(EAX, 0xF0);
        assert_retired(m.exec(&[0xD7]));
        assert_eq!(m.reg(EAX), 0x5A);
    }

    // SDM Vol. 2A, LDS/LES/LFS/LGS/LSS: the selector is checked as for MOV Sreg;
    // a null selector is fine for DS but #GP(0) for SS.
    #[test]
    fn load_far_pointer() {
        let mut m = Machine::flat32();
        m.w32(DATA, 0xCAFE);
        m.w16(DATA + 4, KDATA);
        m.set_reg(EBX, DATA);
        m.cpu.state.segs[SegReg::Es as usize].selector = 0;
        assert_retired(m.exec(&[0xC4, 0x03])); // les eax, [ebx]
        assert_eq!(m.reg(EAX), 0xCAFE);
        assert_eq!(m.cpu.state.segs[SegReg::Es as usize].selector, KDATA);
        m.w16(DATA + 4, 0);
        assert_retired(m.exec(&[0xC5, 0x0B])); // lds ecx, [ebx]: null DS
        assert_eq!(m.cpu.state.segs[SegReg::Ds as usize].selector, 0);

        let mut m = Machine::flat32();
        m.w32(DATA, 0x1000);
        m.w16(DATA + 4, 0);
        m.set_reg(EBX, DATA).set_reg(ECX, 0x77);
        assert_fault(m.exec(&[0x0F, 0xB2, 0x0B]), vector::GP, Some(0)); // lss ecx, [ebx]
        assert_eq!(m.reg(ECX), 0x77, "nothing loaded");
    }

    // SDM Vol. 2B, MOV (Sreg): #GP(selector) beyond the GDT limit or for a
    // non-readable code segment; MOV CS is #UD; MOV SS inhibits interrupts for one
    // instruction (Vol. 3A, 6.8.3); a register destination gets the selector
    // zero-extended, a memory destination only 16 bits.
    #[test]
    fn mov_segment_registers() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x0800); // index 256 > GDT limit
        assert_fault(m.exec(&[0x8E, 0xD8]), vector::GP, Some(0x0800)); // mov ds, ax
        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(0, 0xFFFF, 0x98, 0)); // execute-only code
        m.set_reg(EAX, (FREE_SLOT * 8) as u32);
        assert_fault(m.exec(&[0x8E, 0xD8]), vector::GP, Some((FREE_SLOT * 8) as u32));
        let mut m = Machine::flat32();
        assert_fault(m.exec(&[0x8E, 0xC8]), vector::UD, None); // mov cs, ax

        let mut m = Machine::flat32();
        m.set_reg(EAX, u32::from(KDATA));
        assert_retired(m.exec(&[0x8E, 0xD0])); // mov ss, ax
        assert!(m.cpu.state.interrupt_shadow);
        assert_retired(m.exec(&[0x90]));
        assert!(!m.cpu.state.interrupt_shadow);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xFFFF_FFFF).set_reg(EBX, DATA);
        m.w32(DATA, 0xAAAA_AAAA);
        assert_retired(m.exec(&[0x8C, 0xD8])); // mov eax, ds
        assert_eq!(m.reg(EAX), u32::from(KDATA));
        assert_retired(m.exec(&[0x8C, 0x1B])); // mov [ebx], ds
        assert_eq!(m.r32(DATA), 0xAAAA_0000 | u32::from(KDATA));
    }

    // SDM Vol. 2A, CMOVcc: moves only if the condition holds, but a memory source
    // is read (and may fault) either way.
    #[test]
    fn cmov() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 1).set_reg(EBX, 2).set_flags(ZF);
        assert_retired(m.exec(&[0x0F, 0x44, 0xC3])); // cmove eax, ebx
        assert_eq!(m.reg(EAX), 2);
        m.set_reg(EBX, 3);
        assert_retired(m.exec(&[0x0F, 0x45, 0xC3])); // cmovne eax, ebx
        assert_eq!(m.reg(EAX), 2);

        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(DATA, 0xFF, ACC_DATA0, 0x4));
        m.load_seg(SegReg::Ds, (FREE_SLOT * 8) as u16);
        m.set_reg(EBX, 0x1000).set_flags(ZF);
        assert_fault(m.exec(&[0x0F, 0x45, 0x03]), vector::GP, Some(0)); // cmovne eax, [ebx]
    }

    // SDM Vol. 2B, SETcc: 1 if the condition holds, else 0, to a byte.
    #[test]
    fn setcc() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xFFFF_FFFF).set_flags(ZF);
        assert_retired(m.exec(&[0x0F, 0x94, 0xC0])); // sete al
        assert_eq!(m.reg(EAX), 0xFFFF_FF01);
        m.set_reg(EBX, DATA).set_flags(SF);
        m.w32(DATA, 0xFFFF_FFFF);
        assert_retired(m.exec(&[0x0F, 0x9C, 0x03])); // setl byte [ebx]: SF != OF
        assert_eq!(m.r32(DATA), 0xFFFF_FF01);
        m.set_flags(SF | OF);
        assert_retired(m.exec(&[0x0F, 0x9C, 0x03]));
        assert_eq!(m.r32(DATA), 0xFFFF_FF00);
    }

    // SALC (undocumented, D6): AL <- FFh if CF else 00h.
    #[test]
    fn salc() {
        let mut m = Machine::flat32();
        m.set_flags(CF);
        assert_retired(m.exec(&[0xD6]));
        assert_eq!(m.reg(EAX) & 0xFF, 0xFF);
    }

    // Real mode: MOV Sreg loads base = selector * 16 with no descriptor checks (SDM Vol. 3A, 20.1.1).
    #[test]
    fn real_mode_mov_sreg() {
        let mut m = Machine::real16();
        m.set_reg(EAX, 0x1234);
        assert_retired(m.exec(&[0x8E, 0xC0])); // mov es, ax
        let es = m.cpu.state.segs[SegReg::Es as usize];
        assert_eq!((es.selector, es.base), (0x1234, 0x12340));
        m.w16(0x12340 + 0x10, 0xBEEF);
        m.set_reg(EBX, 0x10);
        assert_retired(m.exec(&[0x26, 0x8B, 0x07])); // mov ax, es:[bx]
        assert_eq!(m.reg(EAX), 0xBEEF);
        assert_eq!(m.status() & OF, 0);
    }
}
