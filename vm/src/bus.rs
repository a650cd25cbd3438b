//! The CPU's view of the platform: physical memory and the port-I/O space.
//!
//! Instruction semantics are written once against this trait; the machine, the
//! conformance runner and any later engine each provide an implementation.

pub trait Bus {
    /// Reads `size` (1, 2 or 4) bytes at a physical address inside one page.
    fn read_phys(&mut self, addr: u32, size: u8) -> u32;
    /// Writes `size` (1, 2 or 4) bytes at a physical address inside one page.
    fn write_phys(&mut self, addr: u32, size: u8, value: u32);
    /// Port input of `size` bytes at virtual time `now` (see [`Cpu::now`]).
    ///
    /// [`Cpu::now`]: crate::cpu::Cpu::now
    fn io_read(&mut self, port: u16, size: u8, now: u64) -> u32;
    /// Port output of `size` bytes at virtual time `now`.
    fn io_write(&mut self, port: u16, size: u8, value: u32, now: u64);
}
