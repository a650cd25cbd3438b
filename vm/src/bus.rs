//! The CPU's view of the platform: physical memory and the port-I/O space.
//!
//! Instruction semantics are written once against this trait; the machine, the
//! conformance runner and any later engine each provide an implementation.

pub trait Bus {
    /// Reads `size` (1, 2 or 4) bytes at a physical address inside one
    /// page at virtual time `now` (memory-mapped timers read it).
    fn read_phys(&mut self, addr: u32, size: u8, now: u64) -> u32;
    /// Writes `size` (1, 2 or 4) bytes at a physical address inside one page.
    fn write_phys(&mut self, addr: u32, size: u8, value: u32, now: u64);
    /// Reads instruction bytes at a physical address; `out` does not cross a
    /// page. Buses backed by RAM override this with a slice copy.
    #[inline]
    fn fetch_phys(&mut self, addr: u32, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read_phys(addr.wrapping_add(i as u32), 1, 0) as u8;
        }
    }
    /// RAM for a repeated string instruction's iterations done in bulk:
    /// `write` (and `read`, if any) are physical ranges `(start, len)` that
    /// must be ordinary RAM, where an access reaches no device, no ROM, no
    /// debugger's watch and, for `write`, no page holding watched code;
    /// the written pages are marked dirty. `None` (the default) leaves
    /// every iteration to the instruction itself.
    fn bulk_ram(&mut self, _read: Option<(u32, u32)>, _write: (u32, u32)) -> Option<&mut [u8]> {
        None
    }
    /// Port input of `size` bytes at virtual time `now` (see [`Cpu::now`]).
    ///
    /// [`Cpu::now`]: crate::cpu::Cpu::now
    fn io_read(&mut self, port: u16, size: u8, now: u64) -> u32;
    /// Port output of `size` bytes at virtual time `now`.
    fn io_write(&mut self, port: u16, size: u8, value: u32, now: u64);
    /// The FPU's FERR# output: a waiting x87 instruction found an unmasked
    /// exception pending with CR0.NE clear, which a PC turns into IRQ 13.
    /// Buses without an interrupt controller ignore it.
    fn fpu_error(&mut self) {}
    /// The local APIC's MSRs, IA32_APIC_BASE (0x1B) and IA32_TSC_DEADLINE
    /// (0x6E0); `None` where the bus has no local APIC, so they do not
    /// exist.
    fn apic_msr_read(&mut self, _index: u32) -> Option<u64> {
        None
    }
    /// A write of one of them; false where it does not exist or `value`
    /// sets reserved bits (#GP). `tick` is the virtual time at which the
    /// TSC reaches `value`, for IA32_TSC_DEADLINE.
    fn apic_msr_write(&mut self, _index: u32, _value: u64, _tick: u64) -> bool {
        false
    }
}
