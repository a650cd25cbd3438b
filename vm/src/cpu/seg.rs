//! Segmentation: descriptor tables, segment-register loads with their privilege
//! checks, limit and type checks on every access, and the stack (SDM Vol. 3A,
//! 3.4 "Logical and linear addresses", 3.5 "System descriptor types", 5.3-5.8
//! "Protection"; Vol. 2, MOV/POP/LDS "Operation" sections).

use super::mmu::Access;
use super::state::{attr, SegReg, Segment};
use super::{vector, Cpu, Fault, Result};
use crate::bus::Bus;

/// A raw 8-byte segment or gate descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub low: u32,
    pub high: u32,
}

impl Descriptor {
    pub fn base(&self) -> u32 {
        (self.low >> 16) | ((self.high & 0xFF) << 16) | (self.high & 0xFF00_0000)
    }
    pub fn limit(&self) -> u32 {
        let raw = (self.low & 0xFFFF) | (self.high & 0x000F_0000);
        if self.high & (1 << 23) != 0 {
            (raw << 12) | 0xFFF
        } else {
            raw
        }
    }
    /// Access byte plus flags nibble, in [`Segment::attr`] layout.
    pub fn attr(&self) -> u16 {
        (((self.high >> 8) & 0xFF) | ((self.high >> 8) & 0xF000)) as u16
    }
    pub fn present(&self) -> bool {
        self.high & (1 << 15) != 0
    }
    pub fn dpl(&self) -> u8 {
        ((self.high >> 13) & 3) as u8
    }
    /// S bit: code or data rather than a system descriptor.
    pub fn is_code_data(&self) -> bool {
        self.high & (1 << 12) != 0
    }
    /// The 4-bit type field.
    pub fn typ(&self) -> u8 {
        ((self.high >> 8) & 0xF) as u8
    }
    pub fn is_code(&self) -> bool {
        self.is_code_data() && self.typ() & 8 != 0
    }
    pub fn to_segment(self, selector: u16) -> Segment {
        Segment {
            selector,
            base: self.base(),
            limit: self.limit(),
            attr: self.attr(),
        }
    }
    /// Gate descriptors: target selector and offset.
    pub fn gate_selector(&self) -> u16 {
        (self.low >> 16) as u16
    }
    pub fn gate_offset(&self) -> u32 {
        (self.low & 0xFFFF) | (self.high & 0xFFFF_0000)
    }
}

/// Error code for a selector-related fault (SDM Vol. 3A, 6.13).
pub fn sel_error(selector: u16) -> u32 {
    u32::from(selector & 0xFFFC)
}

impl Cpu {
    /// Reads the descriptor a selector names, from the GDT or the LDT. A selector
    /// beyond the table limit raises `fault_vector` with the selector as error code.
    pub fn read_descriptor<B: Bus>(&mut self, bus: &mut B, selector: u16, fault_vector: u8) -> Result<Descriptor> {
        let (base, limit) = if selector & 4 != 0 {
            let ldt = self.state.ldtr;
            if !ldt.present() {
                return Err(Fault::with_error(fault_vector, sel_error(selector)));
            }
            (ldt.base, ldt.limit)
        } else {
            (self.state.gdtr.base, u32::from(self.state.gdtr.limit))
        };
        let offset = u32::from(selector & !7);
        if offset + 7 > limit {
            return Err(Fault::with_error(fault_vector, sel_error(selector)));
        }
        let addr = base.wrapping_add(offset);
        let low = self.read_linear(bus, addr, 4, false)?;
        let high = self.read_linear(bus, addr.wrapping_add(4), 4, false)?;
        Ok(Descriptor { low, high })
    }

    /// Sets the accessed bit of a code/data descriptor, as the processor does on load.
    pub fn mark_accessed<B: Bus>(&mut self, bus: &mut B, selector: u16, desc: &Descriptor) -> Result<()> {
        if desc.high & (1 << 8) != 0 {
            return Ok(());
        }
        let base = if selector & 4 != 0 {
            self.state.ldtr.base
        } else {
            self.state.gdtr.base
        };
        let addr = base.wrapping_add(u32::from(selector & !7)).wrapping_add(4);
        self.write_linear(bus, addr, 4, desc.high | (1 << 8), false)
    }

    /// Loads a data or stack segment register (MOV Sreg, POP Sreg, LDS and friends).
    /// CS is loaded only by far transfers; see `load_code_segment`.
    pub fn load_segment<B: Bus>(&mut self, bus: &mut B, sreg: SegReg, selector: u16) -> Result<()> {
        let st = &mut self.state;
        if !st.protected_mode() || st.v86_mode() {
            let v86 = st.v86_mode();
            let seg = &mut st.segs[sreg as usize];
            seg.selector = selector;
            seg.base = u32::from(selector) << 4;
            if v86 {
                seg.limit = 0xFFFF;
                seg.attr = attr::P | attr::S | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT);
            }
            return Ok(());
        }
        let cpl = st.cpl();
        let rpl = (selector & 3) as u8;
        if selector & 0xFFFC == 0 {
            if sreg == SegReg::Ss {
                return Err(Fault::gp(0));
            }
            // A null selector loads an unusable segment; using it faults later.
            st.segs[sreg as usize] = Segment {
                selector,
                base: 0,
                limit: 0,
                attr: 0,
            };
            return Ok(());
        }
        let desc = self.read_descriptor(bus, selector, vector::GP)?;
        let err = sel_error(selector);
        if sreg == SegReg::Ss {
            let writable_data = desc.is_code_data() && desc.typ() & 0b1010 == 0b0010;
            if rpl != cpl || desc.dpl() != cpl || !writable_data {
                return Err(Fault::gp(err));
            }
            if !desc.present() {
                return Err(Fault::with_error(vector::SS, err));
            }
        } else {
            let readable = desc.is_code_data() && (!desc.is_code() || desc.typ() & 2 != 0);
            if !readable {
                return Err(Fault::gp(err));
            }
            let conforming_code = desc.is_code() && desc.typ() & 4 != 0;
            if !conforming_code && (rpl > desc.dpl() || cpl > desc.dpl()) {
                return Err(Fault::gp(err));
            }
            if !desc.present() {
                return Err(Fault::with_error(vector::NP, err));
            }
        }
        self.mark_accessed(bus, selector, &desc)?;
        let mut seg = desc.to_segment(selector);
        seg.attr |= attr::ACCESSED;
        self.state.segs[sreg as usize] = seg;
        Ok(())
    }

    /// Computes the linear address of `size` bytes at `offset` in a segment,
    /// applying the limit and type checks (SDM Vol. 3A, 5.3 and 5.4).
    #[inline]
    pub fn seg_linear(&self, sreg: SegReg, offset: u32, size: u32, access: Access) -> Result<u32> {
        let protected = self.state.protected_mode() && !self.state.v86_mode();
        check_segment(&self.state.segs[sreg as usize], offset, size, access, protected).ok_or(if sreg == SegReg::Ss {
            Fault::with_error(vector::SS, 0)
        } else {
            Fault::gp(0)
        })
    }

    /// For the compiler's inline memory path: the segment's base and the
    /// number of offsets, from 0, at which a 4-byte `access` (and so any
    /// smaller one) passes [`check_segment`]; 0 when it is expand-down or
    /// refuses the access (the path then always takes the slow way).
    pub fn fast_window(&self, sreg: SegReg, access: Access) -> (u32, u32) {
        let seg = &self.state.segs[sreg as usize];
        let protected = self.state.protected_mode() && !self.state.v86_mode();
        let expand_down = seg.attr & (attr::CODE | attr::DC) == attr::DC && seg.attr & attr::S != 0;
        // Offsets 0..=limit-3 start an access of 4 bytes that ends inside
        // the limit without wrapping.
        let usable = check_segment(seg, 0, 1, access, protected).is_some() && !expand_down;
        let end = if usable { seg.limit.saturating_sub(2) } else { 0 };
        (seg.base, end)
    }

    #[inline]
    pub fn read_mem<B: Bus>(&mut self, bus: &mut B, sreg: SegReg, offset: u32, size: u8) -> Result<u32> {
        let lin = self.seg_linear(sreg, offset, u32::from(size), Access::Read)?;
        let user = self.state.cpl() == 3;
        self.read_linear(bus, lin, size, user)
    }

    #[inline]
    pub fn write_mem<B: Bus>(&mut self, bus: &mut B, sreg: SegReg, offset: u32, size: u8, value: u32) -> Result<()> {
        let lin = self.seg_linear(sreg, offset, u32::from(size), Access::Write)?;
        let user = self.state.cpl() == 3;
        self.write_linear(bus, lin, size, value, user)
    }

    /// Mask for the stack pointer: ESP with a 32-bit stack, SP otherwise.
    #[inline]
    pub fn sp_mask(&self) -> u32 {
        if self.state.stack32() {
            0xFFFF_FFFF
        } else {
            0xFFFF
        }
    }

    /// Updates ESP or SP only, as the stack size demands.
    #[inline]
    pub fn set_sp(&mut self, value: u32) {
        let mask = self.sp_mask();
        let esp = &mut self.state.regs[super::state::reg::ESP];
        *esp = (*esp & !mask) | (value & mask);
    }

    #[inline]
    pub fn push<B: Bus>(&mut self, bus: &mut B, size: u8, value: u32) -> Result<()> {
        let user = self.state.cpl() == 3;
        self.push_with_privilege(bus, size, value, user)
    }

    /// Pushes with the page-level privilege given explicitly: during a far
    /// transfer to an inner ring the stack is already the inner one while CS
    /// (and so the CPL) is still the caller's (SDM Vol. 3A, 5.8.5).
    pub fn push_with_privilege<B: Bus>(&mut self, bus: &mut B, size: u8, value: u32, user: bool) -> Result<()> {
        let mask = self.sp_mask();
        let sp = self.state.regs[super::state::reg::ESP].wrapping_sub(u32::from(size)) & mask;
        let lin = self.seg_linear(SegReg::Ss, sp, u32::from(size), Access::Write)?;
        self.write_linear(bus, lin, size, value, user)?;
        self.set_sp(sp);
        Ok(())
    }

    #[inline]
    pub fn pop<B: Bus>(&mut self, bus: &mut B, size: u8) -> Result<u32> {
        let mask = self.sp_mask();
        let sp = self.state.regs[super::state::reg::ESP] & mask;
        let v = self.read_mem(bus, SegReg::Ss, sp, size)?;
        self.set_sp(sp.wrapping_add(u32::from(size)));
        Ok(v)
    }

    /// Reads the stack `offset` bytes above the top without popping.
    pub fn peek_stack<B: Bus>(&mut self, bus: &mut B, offset: u32, size: u8) -> Result<u32> {
        let mask = self.sp_mask();
        let sp = self.state.regs[super::state::reg::ESP].wrapping_add(offset) & mask;
        self.read_mem(bus, SegReg::Ss, sp, size)
    }
}

/// Checks an access of `size` bytes at `offset` against a segment's type and limit;
/// returns the linear address, or None when the access must fault.
#[inline]
pub fn check_segment(seg: &Segment, offset: u32, size: u32, access: Access, protected: bool) -> Option<u32> {
    if protected {
        if seg.attr & attr::P == 0 {
            return None;
        }
        let is_code = seg.attr & attr::CODE != 0;
        let ok = match access {
            Access::Read => !is_code || seg.attr & attr::RW != 0,
            Access::Write => !is_code && seg.attr & attr::RW != 0,
            Access::Execute => true,
        };
        if !ok {
            return None;
        }
    }
    let last = offset.wrapping_add(size - 1);
    let expand_down = seg.attr & (attr::CODE | attr::DC) == attr::DC && seg.attr & attr::S != 0;
    if expand_down {
        let upper = if seg.big() { 0xFFFF_FFFF } else { 0xFFFF };
        if offset <= seg.limit || last > upper || last < offset {
            return None;
        }
    } else if last > seg.limit || last < offset {
        return None;
    }
    Some(seg.base.wrapping_add(offset))
}
