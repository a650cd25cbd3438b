//! Control transfer: JMP, Jcc, CALL, RET, LOOP/LOOPE/LOOPNE, JCXZ/JECXZ, far JMP,
//! CALL and RET with call gates and privilege changes, INT n, INT3, INTO, INT1,
//! IRET, BOUND (SDM Vol. 1, 6.3 "Calling procedures using CALL and RET", 7.3.8;
//! Vol. 2, "CALL", "JMP", "RET", "IRET/IRETD", "INT n/INTO/INT3/INT1", "BOUND";
//! Vol. 3A, 5.8 "Privilege level checking when transferring program control").

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::{flags, op_size, stack_op_size, Flow};
use crate::bus::Bus;
use crate::cpu::interrupt::IntSource;
use crate::cpu::seg::{sel_error, Descriptor};
use crate::cpu::state::flags as fl;
use crate::cpu::state::reg::{ECX, ESP};
use crate::cpu::state::{attr, SegReg, Segment};
use crate::cpu::task::TaskSwitch;
use crate::cpu::{vector, Cpu, Fault, Result};

pub fn jcc(cpu: &mut Cpu, inst: &Instruction) -> Result<Flow> {
    jcc_to(
        cpu,
        super::datamov::condition_of(inst),
        inst.near_branch_target() as u32,
    )?;
    Ok(Flow::Next)
}

/// Jcc: to `target` when condition `cc` holds.
#[inline(always)]
pub fn jcc_to(cpu: &mut Cpu, cc: u8, target: u32) -> Result<()> {
    if flags::condition(cpu.state.eflags, cc) {
        cpu.near_jump(target)?;
    }
    Ok(())
}

/// Near CALL to `target`, pushing the return address (the EIP after the
/// CALL) with `size` bytes; the target is checked before anything is pushed.
#[inline(always)]
pub fn near_call<B: Bus>(cpu: &mut Cpu, bus: &mut B, target: u32, size: u8) -> Result<()> {
    let ret = cpu.state.eip;
    cpu.check_code_target(target)?;
    cpu.push(bus, size, ret)?;
    cpu.near_jump(target)
}

/// Near RET popping `size` bytes of return address, then `imm` bytes more;
/// nothing changes unless the return address is within the CS limit.
#[inline(always)]
pub fn near_ret<B: Bus>(cpu: &mut Cpu, bus: &mut B, size: u8, imm: u32) -> Result<()> {
    let target = cpu.peek_stack(bus, 0, size)?;
    cpu.check_code_target(target)?;
    cpu.set_sp(cpu.state.regs[ESP].wrapping_add(u32::from(size)).wrapping_add(imm));
    cpu.state.eip = target;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FarKind {
    Jmp,
    Call,
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    use Mnemonic as M;
    match inst.mnemonic() {
        M::Jmp | M::Call => {
            let call = inst.mnemonic() == M::Call;
            match inst.op0_kind() {
                OpKind::NearBranch16 | OpKind::NearBranch32 => {
                    let target = inst.near_branch_target() as u32;
                    if call {
                        near_call(cpu, bus, target, stack_op_size(inst))?;
                    } else {
                        cpu.near_jump(target)?;
                    }
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let size = if inst.op0_kind() == OpKind::FarBranch16 { 2 } else { 4 };
                    let kind = if call { FarKind::Call } else { FarKind::Jmp };
                    let off = if size == 2 {
                        u32::from(inst.far_branch16())
                    } else {
                        inst.far_branch32()
                    };
                    cpu.far_transfer(bus, inst.far_branch_selector(), off, size, kind)?;
                }
                OpKind::Memory
                    if matches!(
                        inst.memory_size(),
                        iced_x86::MemorySize::SegPtr16 | iced_x86::MemorySize::SegPtr32
                    ) =>
                {
                    let size = if inst.memory_size() == iced_x86::MemorySize::SegPtr16 {
                        2
                    } else {
                        4
                    };
                    let (seg, ea) = cpu.mem_operand(inst);
                    let off = cpu.read_mem(bus, seg, ea, size)?;
                    let sel = cpu.read_mem(bus, seg, ea.wrapping_add(u32::from(size)), 2)? as u16;
                    let kind = if call { FarKind::Call } else { FarKind::Jmp };
                    cpu.far_transfer(bus, sel, off, size, kind)?;
                }
                _ => {
                    let size = op_size(inst, 0);
                    let target = cpu.read_op(bus, inst, 0, size)?;
                    if call {
                        near_call(cpu, bus, target, size)?;
                    } else {
                        cpu.near_jump(target)?;
                    }
                }
            }
            Ok(Flow::Next)
        }
        M::Ret => {
            let size: u8 = if matches!(inst.code(), Code::Retnw | Code::Retnw_imm16) {
                2
            } else {
                4
            };
            let imm = if inst.op_count() > 0 {
                u32::from(inst.immediate16())
            } else {
                0
            };
            near_ret(cpu, bus, size, imm)?;
            Ok(Flow::Next)
        }
        M::Retf => {
            let size: u8 = if matches!(inst.code(), Code::Retfw | Code::Retfw_imm16) {
                2
            } else {
                4
            };
            let imm = if inst.op_count() > 0 {
                u32::from(inst.immediate16())
            } else {
                0
            };
            cpu.far_return(bus, size, imm)?;
            Ok(Flow::Next)
        }
        M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz => {
            let ecx_sized = matches!(
                inst.code(),
                Code::Loop_rel8_16_ECX
                    | Code::Loop_rel8_32_ECX
                    | Code::Loope_rel8_16_ECX
                    | Code::Loope_rel8_32_ECX
                    | Code::Loopne_rel8_16_ECX
                    | Code::Loopne_rel8_32_ECX
                    | Code::Jecxz_rel8_16
                    | Code::Jecxz_rel8_32
            );
            let mask: u32 = if ecx_sized { 0xFFFF_FFFF } else { 0xFFFF };
            let ecx = cpu.state.regs[ECX];
            let take = if matches!(inst.mnemonic(), M::Jcxz | M::Jecxz) {
                ecx & mask == 0
            } else {
                let count = ecx.wrapping_sub(1) & mask;
                cpu.state.regs[ECX] = (ecx & !mask) | count;
                let zf = cpu.flag(fl::ZF);
                count != 0
                    && match inst.mnemonic() {
                        M::Loope => zf,
                        M::Loopne => !zf,
                        _ => true,
                    }
            };
            if take {
                cpu.near_jump(inst.near_branch_target() as u32)?;
            }
            Ok(Flow::Next)
        }
        M::Int | M::Int3 | M::Into | M::Int1 => {
            let vec = match inst.mnemonic() {
                M::Int => inst.immediate8(),
                M::Int3 => vector::BP,
                M::Int1 => vector::DB,
                _ => {
                    if !cpu.flag(fl::OF) {
                        return Ok(Flow::Next);
                    }
                    vector::OF
                }
            };
            if inst.mnemonic() == M::Int && cpu.state.v86_mode() && cpu.state.iopl() < 3 {
                return Err(Fault::gp(0));
            }
            let source = if inst.mnemonic() == M::Int1 {
                IntSource::Exception(None)
            } else {
                IntSource::Software
            };
            cpu.deliver_interrupt(bus, vec, source)?;
            Ok(Flow::Next)
        }
        M::Iret | M::Iretd => {
            let size = if inst.mnemonic() == M::Iretd { 4 } else { 2 };
            cpu.iret(bus, size)?;
            // An IRET, whatever it returns from, ends NMI blocking.
            cpu.state.nmi_blocked = false;
            Ok(Flow::Next)
        }
        M::Bound => {
            if inst.op1_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let size = op_size(inst, 0);
            let idx = flags::sext(cpu.read_op(bus, inst, 0, size)?, size) as i32;
            let (seg, ea) = cpu.mem_operand(inst);
            let lo = flags::sext(cpu.read_mem(bus, seg, ea, size)?, size) as i32;
            let hi = flags::sext(cpu.read_mem(bus, seg, ea.wrapping_add(u32::from(size)), size)?, size) as i32;
            if idx < lo || idx > hi {
                return Err(Fault::new(vector::BR));
            }
            Ok(Flow::Next)
        }
        _ => Err(Fault::ud()),
    }
}

impl Cpu {
    /// #GP(0) unless `target` lies within the CS limit.
    #[inline]
    pub fn check_code_target(&self, target: u32) -> Result<()> {
        if target > self.state.segs[SegReg::Cs as usize].limit {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    #[inline]
    pub fn near_jump(&mut self, target: u32) -> Result<()> {
        self.check_code_target(target)?;
        self.state.eip = target;
        Ok(())
    }

    fn load_cs_real(&mut self, sel: u16, off: u32) {
        let cs = &mut self.state.segs[SegReg::Cs as usize];
        cs.selector = sel;
        cs.base = u32::from(sel) << 4;
        if self.state.eflags & fl::VM != 0 {
            cs.limit = 0xFFFF;
            cs.attr = attr::P | attr::S | attr::CODE | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT);
        }
        self.state.eip = off;
    }

    /// Far JMP and far CALL (SDM Vol. 2A "CALL" and "JMP", protected-mode operation).
    fn far_transfer<B: Bus>(&mut self, bus: &mut B, sel: u16, off: u32, size: u8, kind: FarKind) -> Result<()> {
        let off = if size == 2 { off & 0xFFFF } else { off };
        if !self.state.protected_mode() || self.state.v86_mode() {
            if off > self.state.segs[SegReg::Cs as usize].limit {
                return Err(Fault::gp(0));
            }
            if kind == FarKind::Call {
                let cs = u32::from(self.state.segs[SegReg::Cs as usize].selector);
                let eip = self.state.eip;
                self.push(bus, size, cs)?;
                self.push(bus, size, eip)?;
            }
            self.load_cs_real(sel, off);
            return Ok(());
        }
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let cpl = self.state.cpl();
        let desc = self.read_descriptor(bus, sel, vector::GP)?;
        let err = sel_error(sel);
        if desc.is_code_data() {
            if !desc.is_code() {
                return Err(Fault::gp(err));
            }
            let conforming = desc.typ() & 4 != 0;
            if conforming {
                if desc.dpl() > cpl {
                    return Err(Fault::gp(err));
                }
            } else if (sel & 3) as u8 > cpl || desc.dpl() != cpl {
                return Err(Fault::gp(err));
            }
            if !desc.present() {
                return Err(Fault::with_error(vector::NP, err));
            }
            let seg = desc.to_segment((sel & !3) | u16::from(cpl));
            if off > seg.limit {
                return Err(Fault::gp(0));
            }
            if kind == FarKind::Call {
                let cs = u32::from(self.state.segs[SegReg::Cs as usize].selector);
                let eip = self.state.eip;
                self.push(bus, size, cs)?;
                self.push(bus, size, eip)?;
            }
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(seg);
            self.state.eip = off;
            return Ok(());
        }
        match desc.typ() {
            0x4 | 0xC => self.through_call_gate(bus, sel, desc, kind),
            // An available TSS or a task gate: a task switch (SDM Vol. 3A, 7.3).
            0x1 | 0x9 | 0x5 => {
                let switch = if kind == FarKind::Call {
                    TaskSwitch::Call
                } else {
                    TaskSwitch::Jmp
                };
                self.far_to_task(bus, sel, desc, switch)
            }
            _ => Err(Fault::gp(err)),
        }
    }

    fn set_cs(&mut self, mut seg: Segment) {
        seg.attr |= attr::ACCESSED;
        self.state.segs[SegReg::Cs as usize] = seg;
    }

    fn through_call_gate<B: Bus>(&mut self, bus: &mut B, gate_sel: u16, gate: Descriptor, kind: FarKind) -> Result<()> {
        let cpl = self.state.cpl();
        let gerr = sel_error(gate_sel);
        if gate.dpl() < cpl || gate.dpl() < (gate_sel & 3) as u8 {
            return Err(Fault::gp(gerr));
        }
        if !gate.present() {
            return Err(Fault::with_error(vector::NP, gerr));
        }
        let gate32 = gate.typ() == 0xC;
        let size: u8 = if gate32 { 4 } else { 2 };
        let sel = gate.gate_selector();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let desc = self.read_descriptor(bus, sel, vector::GP)?;
        let err = sel_error(sel);
        if !desc.is_code() || desc.dpl() > cpl {
            return Err(Fault::gp(err));
        }
        if !desc.present() {
            return Err(Fault::with_error(vector::NP, err));
        }
        let off = if gate32 {
            gate.gate_offset()
        } else {
            gate.gate_offset() & 0xFFFF
        };
        let conforming = desc.typ() & 4 != 0;
        if kind == FarKind::Jmp {
            if !conforming && desc.dpl() != cpl {
                return Err(Fault::gp(err));
            }
            let seg = desc.to_segment((sel & !3) | u16::from(cpl));
            if off > seg.limit {
                return Err(Fault::gp(0));
            }
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(seg);
            self.state.eip = off;
            return Ok(());
        }
        let old_cs = u32::from(self.state.segs[SegReg::Cs as usize].selector);
        let old_eip = self.state.eip;
        if !conforming && desc.dpl() < cpl {
            // More privilege: switch to the inner stack and copy the parameters.
            let new_cpl = desc.dpl();
            let (ss_sel, esp) = self.tss_stack(bus, new_cpl)?;
            let ss_err = Fault::with_error(vector::TS, sel_error(ss_sel));
            if ss_sel & 0xFFFC == 0 {
                return Err(ss_err);
            }
            let ss_desc = self.read_descriptor(bus, ss_sel, vector::TS)?;
            let writable = ss_desc.is_code_data() && ss_desc.typ() & 0b1010 == 0b0010;
            if (ss_sel & 3) as u8 != new_cpl || ss_desc.dpl() != new_cpl || !writable {
                return Err(ss_err);
            }
            if !ss_desc.present() {
                return Err(Fault::with_error(vector::SS, sel_error(ss_sel)));
            }
            let params = (gate.high & 0x1F) as u8;
            let old_ss = u32::from(self.state.segs[SegReg::Ss as usize].selector);
            let old_esp = self.state.regs[ESP];
            let mut copied = [0u32; 32];
            for (i, slot) in copied.iter_mut().enumerate().take(params as usize) {
                *slot = self.peek_stack(bus, (i as u32) * u32::from(size), size)?;
            }
            let new_ss = ss_desc.to_segment(ss_sel);
            let saved_ss = self.state.segs[SegReg::Ss as usize];
            self.state.segs[SegReg::Ss as usize] = new_ss;
            self.state.regs[ESP] = esp;
            let user = new_cpl == 3;
            let pushed = (|| {
                self.push_with_privilege(bus, size, old_ss, user)?;
                self.push_with_privilege(bus, size, old_esp, user)?;
                for i in (0..params as usize).rev() {
                    self.push_with_privilege(bus, size, copied[i], user)?;
                }
                self.push_with_privilege(bus, size, old_cs, user)?;
                self.push_with_privilege(bus, size, old_eip, user)
            })();
            if let Err(f) = pushed {
                self.state.segs[SegReg::Ss as usize] = saved_ss;
                self.state.regs[ESP] = old_esp;
                // The new stack overflowing its limit is #SS(new SS) (SDM Vol. 2A, CALL).
                return Err(if f.vector == vector::SS {
                    Fault::with_error(vector::SS, sel_error(ss_sel))
                } else {
                    f
                });
            }
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(desc.to_segment((sel & !3) | u16::from(new_cpl)));
            self.state.eip = off;
            return Ok(());
        }
        self.push(bus, size, old_cs)?;
        self.push(bus, size, old_eip)?;
        self.mark_accessed(bus, sel, &desc)?;
        self.set_cs(desc.to_segment((sel & !3) | u16::from(cpl)));
        self.state.eip = off;
        Ok(())
    }

    /// Loads CS for a return to `sel`, checking it as RET/IRET do.
    fn return_cs<B: Bus>(&mut self, bus: &mut B, sel: u16, off: u32) -> Result<(Segment, Descriptor)> {
        let cpl = self.state.cpl();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let desc = self.read_descriptor(bus, sel, vector::GP)?;
        let err = sel_error(sel);
        let rpl = (sel & 3) as u8;
        if !desc.is_code() || rpl < cpl {
            return Err(Fault::gp(err));
        }
        let conforming = desc.typ() & 4 != 0;
        if (conforming && desc.dpl() > rpl) || (!conforming && desc.dpl() != rpl) {
            return Err(Fault::gp(err));
        }
        if !desc.present() {
            return Err(Fault::with_error(vector::NP, err));
        }
        let seg = desc.to_segment(sel);
        if off > seg.limit {
            return Err(Fault::gp(0));
        }
        Ok((seg, desc))
    }

    /// After a return to an outer level, data segments the new level may not use
    /// are nulled (SDM Vol. 2, RET "RETURN-TO-OUTER-PRIVILEGE-LEVEL").
    fn null_inaccessible_segments(&mut self) {
        let cpl = self.state.cpl();
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let seg = &mut self.state.segs[s as usize];
            let conforming_code = seg.attr & attr::CODE != 0 && seg.attr & attr::DC != 0;
            if seg.attr & attr::S != 0 && !conforming_code && seg.dpl() < cpl {
                *seg = Segment {
                    selector: 0,
                    base: 0,
                    limit: 0,
                    attr: 0,
                };
            }
        }
    }

    /// Loads SS:ESP popped during a return to an outer privilege level.
    fn outer_stack<B: Bus>(&mut self, bus: &mut B, ss_sel: u16, rpl: u8) -> Result<Segment> {
        let err = sel_error(ss_sel);
        if ss_sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let d = self.read_descriptor(bus, ss_sel, vector::GP)?;
        let writable = d.is_code_data() && d.typ() & 0b1010 == 0b0010;
        if (ss_sel & 3) as u8 != rpl || d.dpl() != rpl || !writable {
            return Err(Fault::gp(err));
        }
        if !d.present() {
            return Err(Fault::with_error(vector::SS, err));
        }
        self.mark_accessed(bus, ss_sel, &d)?;
        let mut s = d.to_segment(ss_sel);
        s.attr |= attr::ACCESSED;
        Ok(s)
    }

    fn far_return<B: Bus>(&mut self, bus: &mut B, size: u8, imm: u32) -> Result<()> {
        let off = self.peek_stack(bus, 0, size)?;
        let sel = self.peek_stack(bus, u32::from(size), size)? as u16;
        if !self.state.protected_mode() || self.state.v86_mode() {
            if off > self.state.segs[SegReg::Cs as usize].limit {
                return Err(Fault::gp(0));
            }
            self.set_sp(self.state.regs[ESP].wrapping_add(2 * u32::from(size)).wrapping_add(imm));
            self.load_cs_real(sel, off);
            return Ok(());
        }
        let off = if size == 2 { off & 0xFFFF } else { off };
        let (cs, desc) = self.return_cs(bus, sel, off)?;
        let rpl = (sel & 3) as u8;
        if rpl > self.state.cpl() {
            let base = 2 * u32::from(size) + imm;
            let esp = self.peek_stack(bus, base, size)?;
            let ss_sel = self.peek_stack(bus, base + u32::from(size), size)? as u16;
            let ss = self.outer_stack(bus, ss_sel, rpl)?;
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(cs);
            self.state.segs[SegReg::Ss as usize] = ss;
            let mask = if ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
            let new_esp = esp.wrapping_add(imm);
            self.state.regs[ESP] = (self.state.regs[ESP] & !mask) | (new_esp & mask);
            self.state.eip = off;
            self.null_inaccessible_segments();
            return Ok(());
        }
        self.mark_accessed(bus, sel, &desc)?;
        self.set_cs(cs);
        self.set_sp(self.state.regs[ESP].wrapping_add(2 * u32::from(size)).wrapping_add(imm));
        self.state.eip = off;
        Ok(())
    }

    /// IRET/IRETD (SDM Vol. 2A "IRET/IRETD" operation).
    fn iret<B: Bus>(&mut self, bus: &mut B, size: u8) -> Result<()> {
        let s = u32::from(size);
        if !self.state.protected_mode() {
            let off = self.peek_stack(bus, 0, size)?;
            let sel = self.peek_stack(bus, s, size)? as u16;
            let fl_img = self.peek_stack(bus, 2 * s, size)?;
            if off > self.state.segs[SegReg::Cs as usize].limit {
                return Err(Fault::gp(0));
            }
            self.set_sp(self.state.regs[ESP].wrapping_add(3 * s));
            self.load_cs_real(sel, off);
            self.write_eflags(fl_img, size);
            return Ok(());
        }
        if self.state.v86_mode() {
            if self.state.iopl() < 3 {
                return Err(Fault::gp(0));
            }
            let off = self.peek_stack(bus, 0, size)?;
            let sel = self.peek_stack(bus, s, size)? as u16;
            let fl_img = self.peek_stack(bus, 2 * s, size)?;
            self.set_sp(self.state.regs[ESP].wrapping_add(3 * s));
            self.load_cs_real(sel, off & 0xFFFF);
            self.write_eflags(fl_img, size);
            return Ok(());
        }
        if self.state.eflags & fl::NT != 0 {
            return self.iret_to_linked_task(bus);
        }
        let off = self.peek_stack(bus, 0, size)?;
        let sel = self.peek_stack(bus, s, size)? as u16;
        let fl_img = self.peek_stack(bus, 2 * s, size)?;
        let cpl = self.state.cpl();
        if size == 4 && fl_img & fl::VM != 0 && cpl == 0 {
            return self.iret_to_v86(bus, off, sel, fl_img);
        }
        let off = if size == 2 { off & 0xFFFF } else { off };
        let (cs, desc) = self.return_cs(bus, sel, off)?;
        let rpl = (sel & 3) as u8;
        if rpl > cpl {
            let esp = self.peek_stack(bus, 3 * s, size)?;
            let ss_sel = self.peek_stack(bus, 4 * s, size)? as u16;
            let ss = self.outer_stack(bus, ss_sel, rpl)?;
            self.mark_accessed(bus, sel, &desc)?;
            // EFLAGS are written with the privilege of the old CPL.
            self.write_eflags(fl_img, size);
            self.set_cs(cs);
            self.state.segs[SegReg::Ss as usize] = ss;
            let mask = if ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
            self.state.regs[ESP] = (self.state.regs[ESP] & !mask) | (esp & mask);
            self.state.eip = off;
            self.null_inaccessible_segments();
            return Ok(());
        }
        self.mark_accessed(bus, sel, &desc)?;
        self.set_sp(self.state.regs[ESP].wrapping_add(3 * s));
        self.write_eflags(fl_img, size);
        self.set_cs(cs);
        self.state.eip = off;
        Ok(())
    }

    fn iret_to_v86<B: Bus>(&mut self, bus: &mut B, off: u32, sel: u16, fl_img: u32) -> Result<()> {
        let mut vals = [0u32; 6];
        for (i, v) in vals.iter_mut().enumerate() {
            *v = self.peek_stack(bus, 12 + 4 * i as u32, 4)?;
        }
        let [esp, ss, es, ds, fs, gs] = vals;
        self.state.eflags = (fl_img & fl::WRITABLE) | fl::FIXED1;
        let v86_seg = |sel: u32| Segment {
            selector: sel as u16,
            base: (sel & 0xFFFF) << 4,
            limit: 0xFFFF,
            attr: attr::P | attr::S | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT),
        };
        self.state.segs[SegReg::Es as usize] = v86_seg(es);
        self.state.segs[SegReg::Ds as usize] = v86_seg(ds);
        self.state.segs[SegReg::Fs as usize] = v86_seg(fs);
        self.state.segs[SegReg::Gs as usize] = v86_seg(gs);
        self.state.segs[SegReg::Ss as usize] = v86_seg(ss);
        let mut cs = v86_seg(u32::from(sel));
        cs.attr |= attr::CODE;
        self.state.segs[SegReg::Cs as usize] = cs;
        self.state.regs[ESP] = esp;
        self.state.eip = off & 0xFFFF;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{IF, OF, TF, ZF};
    use crate::cpu::state::reg::{EAX, EBX, ECX, ESP};
    use crate::cpu::state::SegReg;
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    /// Where the tests put a second code segment's or a handler's code.
    const TARGET: u32 = 0x4_0000;

    fn sel(slot: usize, rpl: u16) -> u16 {
        (slot as u16) << 3 | rpl
    }

    // SDM Vol. 2A, Jcc and JMP: relative targets from the next instruction.
    #[test]
    fn jumps() {
        let mut m = Machine::flat32();
        m.set_flags(ZF);
        assert_retired(m.exec(&[0x74, 0x10])); // je +10h
        assert_eq!(m.eip(), CODE + 0x12);
        m.cpu.state.eip = CODE;
        m.set_flags(0);
        assert_retired(m.exec(&[0x74, 0x10]));
        assert_eq!(m.eip(), CODE + 2);
        m.cpu.state.eip = CODE;
        m.set_flags(OF);
        assert_retired(m.exec(&[0x0F, 0x8C, 0x00, 0x01, 0x00, 0x00])); // jl +100h (SF != OF)
        assert_eq!(m.eip(), CODE + 6 + 0x100);
        m.cpu.state.eip = CODE;
        assert_retired(m.exec(&[0xEB, 0xFE])); // jmp $
        assert_eq!(m.eip(), CODE);
        m.set_reg(EAX, 0x1234);
        assert_retired(m.exec(&[0xFF, 0xE0])); // jmp eax
        assert_eq!(m.eip(), 0x1234);
    }

    // SDM Vol. 2A, JMP: #GP(0) if the target is beyond the CS limit; EIP unchanged.
    #[test]
    fn jump_beyond_cs_limit() {
        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(0, CODE + 0xFF, ACC_CODE0, 0x4));
        m.load_seg(SegReg::Cs, sel(FREE_SLOT, 0));
        assert_fault(m.exec(&[0xE9, 0x00, 0x02, 0x00, 0x00]), vector::GP, Some(0)); // jmp +200h
        assert_eq!(m.r32(m.reg(ESP) + 4), CODE, "saved EIP is the JMP's");
    }

    // SDM Vol. 2A, CALL and Vol. 2B, RET: near forms push/pop EIP; RET imm16 also
    // releases imm16 bytes.
    #[test]
    fn near_call_ret() {
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xE8, 0x00, 0x01, 0x00, 0x00])); // call +100h
        assert_eq!(m.eip(), CODE + 5 + 0x100);
        assert_eq!((m.reg(ESP), m.r32(STACK_TOP - 4)), (STACK_TOP - 4, CODE + 5));
        assert_retired(m.exec(&[0xC2, 0x08, 0x00])); // ret 8
        assert_eq!((m.eip(), m.reg(ESP)), (CODE + 5, STACK_TOP + 8));

        let mut m = Machine::flat32();
        m.w32(DATA, 0x2_0000);
        m.set_reg(EBX, DATA);
        assert_retired(m.exec(&[0xFF, 0x13])); // call [ebx]
        assert_eq!((m.eip(), m.r32(STACK_TOP - 4)), (0x2_0000, CODE + 2));
    }

    // SDM Vol. 2A, LOOP/LOOPcc: ECX (CX with a 16-bit address size) is
    // decremented first; JECXZ tests without decrementing.
    #[test]
    fn loops() {
        let mut m = Machine::flat32();
        m.set_reg(ECX, 2);
        assert_retired(m.exec(&[0xE2, 0xFE])); // loop $
        assert_eq!((m.eip(), m.reg(ECX)), (CODE, 1));
        assert_retired(m.step());
        assert_eq!((m.eip(), m.reg(ECX)), (CODE + 2, 0));

        let mut m = Machine::flat32();
        m.set_reg(ECX, 5);
        assert_retired(m.exec(&[0xE1, 0xFE])); // loope $ with ZF = 0
        assert_eq!((m.eip(), m.reg(ECX)), (CODE + 2, 4));

        let mut m = Machine::flat32();
        m.set_reg(ECX, 0x1_0001);
        assert_retired(m.exec(&[0x67, 0xE2, 0xFD])); // loop with CX: 1 -> 0
        assert_eq!((m.eip(), m.reg(ECX)), (CODE + 3, 0x1_0000));

        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xE3, 0x10])); // jecxz +10h
        assert_eq!(m.eip(), CODE + 0x12);
    }

    // SDM Vol. 2A, CALL (far, same privilege) and Vol. 2B, RET (far): CS and EIP
    // pushed as 32-bit values; the offset must lie within the new CS limit.
    #[test]
    fn far_call_and_return_same_privilege() {
        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(TARGET, 0xFFFF, ACC_CODE0, 0x4));
        let target_sel = sel(FREE_SLOT, 0);
        assert_retired(m.exec(&[0x9A, 0x10, 0x00, 0x00, 0x00, target_sel as u8, 0x00]));
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, target_sel);
        assert_eq!(m.eip(), 0x10);
        assert_eq!(
            (m.r32(STACK_TOP - 4), m.r32(STACK_TOP - 8)),
            (u32::from(KCODE), CODE + 7)
        );
        assert_retired(m.exec(&[0xCB])); // retf (at TARGET + 10h)
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, KCODE);
        assert_eq!((m.eip(), m.reg(ESP)), (CODE + 7, STACK_TOP));

        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(TARGET, 0xFFFF, ACC_CODE0, 0x4));
        let far = [0x9A, 0x00, 0x00, 0x01, 0x00, target_sel as u8, 0x00]; // offset 10000h > limit
        assert_fault(m.exec(&far), vector::GP, Some(0));
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, KCODE);
    }

    // SDM Vol. 3A, 5.8.2 and Vol. 2A, JMP: a far JMP to non-conforming code needs
    // DPL = CPL; conforming code may be more privileged and keeps CPL.
    #[test]
    fn far_jump_privilege() {
        let mut m = Machine::flat32();
        assert_fault(
            m.exec(&[0xEA, 0x00, 0x00, 0x01, 0x00, UCODE as u8, 0x00]),
            vector::GP,
            Some(u32::from(UCODE & !3)),
        );

        let mut m = Machine::flat32().user();
        m.set_gdt(FREE_SLOT, seg_desc(0, 0xF_FFFF, 0x9E, FLAGS_4G32)); // conforming, DPL 0
        let conf = sel(FREE_SLOT, 0);
        assert_retired(m.exec(&[0xEA, 0x00, 0x00, 0x04, 0x00, conf as u8, 0x00]));
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, conf | 3);
        assert_eq!((m.cpu.state.cpl(), m.eip()), (3, TARGET));
    }

    // SDM Vol. 3A, 5.8.5-5.8.6 and Vol. 2A, CALL "call gate to more privilege":
    // the stack switches to SS0:ESP0 from the TSS, the old SS:ESP and the gate's
    // parameter count of parameters are copied, then CS:EIP. RET imm16 back to the
    // outer level releases the parameters on both stacks and nulls data segments
    // the outer level may not use (Vol. 2B, RET).
    #[test]
    fn call_gate_to_ring0_and_back() {
        let mut m = Machine::flat32().user();
        m.set_gdt(FREE_SLOT, gate_desc(KCODE, TARGET, 0xC, 3, 2));
        let gate = sel(FREE_SLOT, 3);
        m.set_reg(ESP, USER_STACK_TOP - 8);
        m.w32(USER_STACK_TOP - 8, 0xA);
        m.w32(USER_STACK_TOP - 4, 0xB);
        assert_retired(m.exec(&[0x9A, 0x00, 0x00, 0x00, 0x00, gate as u8, 0x00]));
        assert_eq!(m.cpu.state.cpl(), 0);
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, KCODE);
        assert_eq!(m.cpu.state.segs[SegReg::Ss as usize].selector, KDATA);
        assert_eq!(m.eip(), TARGET);
        let esp = m.reg(ESP);
        assert_eq!(esp, STACK0_TOP - 24);
        let frame: Vec<u32> = (0..6).map(|i| m.r32(esp + 4 * i)).collect();
        let want = [
            CODE + 7,
            u32::from(UCODE),
            0xA,
            0xB,
            USER_STACK_TOP - 8,
            u32::from(UDATA),
        ];
        assert_eq!(frame, want);

        m.load_seg(SegReg::Ds, KDATA); // a ring-0 data segment
        assert_retired(m.exec(&[0xCA, 0x08, 0x00])); // retf 8
        assert_eq!(m.cpu.state.cpl(), 3);
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, UCODE);
        assert_eq!(m.cpu.state.segs[SegReg::Ss as usize].selector, UDATA);
        assert_eq!((m.eip(), m.reg(ESP)), (CODE + 7, USER_STACK_TOP));
        assert_eq!(m.cpu.state.segs[SegReg::Ds as usize].selector, 0, "DS nulled");
        assert_eq!(m.cpu.state.segs[SegReg::Es as usize].selector, UDATA, "ES kept");
    }

    // SDM Vol. 3A, 6.12.1 and 6.12.1.1: INT n from CPL 3 through a DPL-3 interrupt
    // gate switches to the ring-0 stack, pushes SS, ESP, EFLAGS, CS, EIP and
    // clears IF; IRET returns to ring 3 (Vol. 2A, IRET "return to outer level").
    #[test]
    fn int_and_iret_between_rings() {
        let mut m = Machine::flat32().user();
        m.set_idt(0x80, gate_desc(KCODE, TARGET, 0xE, 3, 0));
        m.cpu.state.eflags |= IF;
        let flags_before = m.eflags();
        assert_retired(m.exec(&[0xCD, 0x80]));
        assert_eq!((m.cpu.state.cpl(), m.eip()), (0, TARGET));
        assert_eq!(m.eflags() & IF, 0);
        let esp = m.reg(ESP);
        assert_eq!(esp, STACK0_TOP - 20);
        let frame: Vec<u32> = (0..5).map(|i| m.r32(esp + 4 * i)).collect();
        let want = [
            CODE + 2,
            u32::from(UCODE),
            flags_before,
            USER_STACK_TOP,
            u32::from(UDATA),
        ];
        assert_eq!(frame, want);
        assert_retired(m.exec(&[0xCF])); // iretd
        assert_eq!((m.cpu.state.cpl(), m.eip(), m.reg(ESP)), (3, CODE + 2, USER_STACK_TOP));
        assert_eq!(m.eflags(), flags_before);
    }

    // SDM Vol. 3A, 6.12.1.1: INT n with gate DPL < CPL raises #GP with the error
    // code vector * 8 + 2 (IDT bit).
    #[test]
    fn int_gate_dpl_check() {
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0xCD, 0x81]), vector::GP, Some(0x81 * 8 + 2));
        assert_eq!(m.cpu.state.cpl(), 0, "#GP handled in ring 0");
        assert_eq!(m.r32(m.reg(ESP) + 4), CODE, "saved EIP is the INT's");
    }

    // SDM Vol. 3A, 6.12.1.2: a trap gate leaves IF set; same privilege: no stack switch.
    #[test]
    fn trap_gate_keeps_if() {
        let mut m = Machine::flat32();
        m.set_idt(0x82, gate_desc(KCODE, TARGET, 0xF, 0, 0));
        m.cpu.state.eflags |= IF | TF;
        assert_retired(m.exec(&[0xCD, 0x82]));
        assert_eq!(m.eip(), TARGET);
        assert_eq!(m.eflags() & (IF | TF), IF, "TF cleared, IF kept");
        assert_eq!(m.reg(ESP), STACK_TOP - 12);
    }

    // SDM Vol. 2A, INT3/INTO: software interrupts (they retire; control is in the
    // handler), the saved EIP is the next instruction; INTO does nothing when OF = 0.
    #[test]
    fn int3_and_into() {
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xCC]));
        assert_eq!(m.eip(), HANDLERS + 4 * u32::from(vector::BP));
        assert_eq!(m.r32(m.reg(ESP)), CODE + 1);
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xCE]));
        assert_eq!(m.eip(), CODE + 1);
        m.set_flags(OF);
        assert_retired(m.exec(&[0xCE]));
        assert_eq!(m.eip(), HANDLERS + 4 * u32::from(vector::OF));
        assert_eq!(m.r32(m.reg(ESP)), CODE + 2);
    }

    // SDM Vol. 3A, 17.3.1.4: with TF set, an ordinary instruction is followed by a
    // single-step trap (#DB, saved EIP = next instruction); INT n is not, since it
    // clears TF on the way to its handler.
    #[test]
    fn single_step_trap() {
        let mut m = Machine::flat32();
        m.cpu.state.eflags |= TF;
        assert_retired(m.exec(&[0x90])); // nop
        assert_eq!(m.eip(), HANDLERS + 4 * u32::from(vector::DB));
        assert_eq!(m.r32(m.reg(ESP)), CODE + 1);
        assert_eq!(m.cpu.state.dr[6] & (1 << 14), 1 << 14, "DR6.BS");

        let mut m = Machine::flat32();
        m.cpu.state.eflags |= TF;
        assert_retired(m.exec(&[0xCD, 0x40]));
        assert_eq!(m.eip(), HANDLERS + 4 * 0x40);
        assert_eq!(m.r32(m.reg(ESP) + 8) & TF, TF, "the saved EFLAGS keep TF for the IRET");
    }

    // SDM Vol. 2A, BOUND: #BR (a fault) outside [lower, upper]; #UD for a register operand.
    #[test]
    fn bound() {
        let mut m = Machine::flat32();
        m.w32(DATA, 10);
        m.w32(DATA + 4, 20);
        m.set_reg(EBX, DATA).set_reg(EAX, 20);
        assert_retired(m.exec(&[0x62, 0x03])); // bound eax, [ebx]
        m.set_reg(EAX, 21);
        assert_fault(m.exec(&[0x62, 0x03]), vector::BR, None);
        assert_eq!(m.r32(m.reg(ESP)), CODE + 2, "saved EIP is the BOUND's");
        let mut m = Machine::flat32();
        m.set_reg(EAX, (-1i32) as u32);
        m.w32(DATA, (-5i32) as u32);
        m.w32(DATA + 4, 5);
        m.set_reg(EBX, DATA);
        assert_retired(m.exec(&[0x62, 0x03])); // -5 <= -1 <= 5: signed bounds
    }

    // SDM Vol. 3A, 20.1.4: real-mode INT pushes FLAGS, CS, IP and clears IF and
    // TF; IRET pops them back.
    #[test]
    fn real_mode_int_iret() {
        let mut m = Machine::real16();
        m.cpu.state.eflags |= IF | TF;
        m.w8(HANDLERS + 4 * 0x21, 0xCF); // the handler is an IRET
        assert_retired(m.exec(&[0xCD, 0x21]));
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, 0);
        assert_eq!(m.eip(), HANDLERS + 4 * 0x21, "no single-step trap after INT n");
        assert_eq!(m.eflags() & (IF | TF), 0);
        assert_eq!(m.reg(ESP), 0xFFF8);
        let ss = 0x2_0000;
        assert_eq!((m.r16(ss + 0xFFF8), m.r16(ss + 0xFFFA)), (2, 0x1000));
        assert_eq!(u32::from(m.r16(ss + 0xFFFC)), 0x2 | IF | TF);
        assert_retired(m.step()); // iret
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, 0x1000);
        assert_eq!((m.eip(), m.reg(ESP)), (2, 0xFFFE));
        assert_eq!(m.eflags() & (IF | TF), IF | TF);
    }

    // Real mode far CALL / RETF: CS:IP pushed as words, CS base = selector * 16.
    #[test]
    fn real_mode_far_call() {
        let mut m = Machine::real16();
        assert_retired(m.exec(&[0x9A, 0x34, 0x12, 0x00, 0x20])); // call 2000:1234
        let cs = m.cpu.state.segs[SegReg::Cs as usize];
        assert_eq!((cs.selector, cs.base, m.eip()), (0x2000, 0x2_0000, 0x1234));
        assert_eq!((m.r16(0x2_0000 + 0xFFFC), m.r16(0x2_0000 + 0xFFFA)), (0x1000, 5));
        assert_retired(m.exec(&[0xCB])); // retf
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].base, 0x1_0000);
        assert_eq!((m.eip(), m.reg(ESP)), (5, 0xFFFE));
    }
}
