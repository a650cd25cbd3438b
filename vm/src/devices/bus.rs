//! Devices behind one trait (the vm-superio pattern): register logic that
//! sees port accesses and the virtual clock, says through [`Effects`] what
//! the platform must do next (drain output, route lines, update A20, stop),
//! and reports its interrupt line and timer deadline. The platform keeps one
//! table of them (`platform::DEVICES`) for decoding, timers and
//! routing, so a new port device is its file here, this trait, and one
//! entry in that table.

use super::cmos::Cmos;
use super::debug::{DebugCon, ExitDevice, FpuErrorLatch, Port92};
use super::fw_cfg::FwCfg;
use super::i8042::I8042;
use super::ioapic::{self, IoApic};
use super::lapic::{self, LocalApic};
use super::pci::PciHost;
use super::pic::PicPair;
use super::pit::Pit;
use super::testdev::{self, PcTestdev};
use super::uart::Uart;
use super::IrqLine;

/// COM1's registers.
pub const COM1_BASE: u16 = 0x3F8;

/// What an access or a timer step asks of the platform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Console output waits to be drained.
    pub output: bool,
    /// A line or a timer changed: the lines are routed again.
    pub irq: bool,
    /// The exit port was written: the machine loop looks.
    pub stop: bool,
    /// The A20 gate may have changed.
    pub a20: bool,
    /// The guest asked for a reset.
    pub reset: bool,
    /// This line must drop before it is routed again, so that its next
    /// rise is a new edge.
    pub lower: Option<IrqLine>,
    /// A rising edge on this IRQ (a timer tick that is an edge, not a level).
    pub pulse: Option<u8>,
    /// This line is driven to this level now (a device that drives any
    /// line it is told to: the test device).
    pub line: Option<IrqLine>,
    /// The access changed nothing routing looks at (a register read
    /// without side effects), so the device needs no routing for it.
    pub unchanged: bool,
}

/// A device's interrupt lines.
pub type Lines = [Option<IrqLine>; 2];

/// A byte read that returns one of the device's fields and changes
/// nothing, as long as one of its flags is clear: compiled code makes it
/// itself (`Platform::inline_port`). Offsets are from the device's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainRead {
    /// The `u8` the read returns.
    pub value: usize,
    /// A `bool` that, set, makes the read something else (the device's
    /// `read` then does it).
    pub unless: usize,
}

/// A device on the port bus.
pub trait Device {
    /// The port ranges it decodes (inclusive).
    fn ports(&self) -> &'static [(u16, u16)];
    /// Whether an access wider than a byte that starts at its port goes to
    /// it whole; otherwise each byte is an access of its own to its port.
    fn wide(&self) -> bool {
        false
    }
    /// A read; `None` where the device decodes nothing (all ones, counted
    /// as an unmapped read). Reads can change lines too (a byte taken from
    /// a queue, an interrupt condition cleared).
    fn read(&mut self, port: u16, size: u8, now: u64, fx: &mut Effects) -> Option<u32>;
    fn write(&mut self, port: u16, size: u8, value: u32, now: u64, fx: &mut Effects);
    /// A byte read of `port` compiled code may make itself, reading the
    /// field: `read` must return that byte and change nothing (setting
    /// [`Effects::unchanged`]) whenever the flag is clear.
    fn plain_read(&self, _port: u16) -> Option<PlainRead> {
        None
    }
    /// The levels of the interrupt lines it drives (at most two: the 8042
    /// drives IRQ 1 and IRQ 12).
    fn lines(&self) -> Lines {
        [None, None]
    }
    /// Whether it has timers ([`Device::advance`] does something).
    fn timed(&self) -> bool {
        false
    }
    /// Whether a port access to it may move the machine loop's next
    /// deadline (a timer's, or the next look for host input), so that the
    /// loop must work it out again.
    fn access_moves_deadlines(&self) -> bool {
        self.timed()
    }
    /// The earliest virtual tick at which one of its timers fires.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
    /// Brings its timers up to `now`.
    fn advance(&mut self, _now: u64, _fx: &mut Effects) {}
    /// Its memory-mapped register window as now configured: physical base
    /// and length.
    fn mmio_window(&self) -> Option<(u32, u32)> {
        None
    }
    /// A read of its window at `offset`.
    fn mmio_read(&mut self, _offset: u32, size: u8, _now: u64, _fx: &mut Effects) -> u32 {
        crate::exec::flags::mask(size)
    }
    /// A write of its window at `offset`.
    fn mmio_write(&mut self, _offset: u32, _size: u8, _value: u32, _now: u64, _fx: &mut Effects) {}
}

/// The local APIC: no ports, a window where IA32_APIC_BASE puts it, and
/// its timer. What it requests reaches the CPU through the router.
impl Device for LocalApic {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[]
    }
    fn read(&mut self, _port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        None
    }
    fn write(&mut self, _port: u16, _size: u8, _value: u32, _now: u64, _fx: &mut Effects) {}
    fn timed(&self) -> bool {
        true
    }
    fn next_deadline(&self) -> Option<u64> {
        LocalApic::next_deadline(self)
    }
    fn advance(&mut self, now: u64, fx: &mut Effects) {
        fx.irq |= LocalApic::advance(self, now);
    }
    fn mmio_window(&self) -> Option<(u32, u32)> {
        self.window().map(|base| (base, lapic::WINDOW_BYTES))
    }
    /// A read of an illegal register is an error, which may request the
    /// error LVT's interrupt.
    fn mmio_read(&mut self, offset: u32, size: u8, now: u64, fx: &mut Effects) -> u32 {
        let errors = self.pending_errors();
        let value = LocalApic::mmio_read(self, offset, size, now);
        fx.irq |= self.pending_errors() != errors;
        value
    }
    /// Any write may change what is deliverable (TPR, EOI, an IPI) or the
    /// timer's deadline.
    fn mmio_write(&mut self, offset: u32, size: u8, value: u32, now: u64, fx: &mut Effects) {
        LocalApic::mmio_write(self, offset, size, value, now);
        fx.irq = true;
    }
}

impl Device for IoApic {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[]
    }
    fn read(&mut self, _port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        None
    }
    fn write(&mut self, _port: u16, _size: u8, _value: u32, _now: u64, _fx: &mut Effects) {}
    fn mmio_window(&self) -> Option<(u32, u32)> {
        Some((ioapic::BASE, ioapic::WINDOW_BYTES))
    }
    fn mmio_read(&mut self, offset: u32, size: u8, _now: u64, _fx: &mut Effects) -> u32 {
        IoApic::mmio_read(self, offset, size)
    }
    fn mmio_write(&mut self, offset: u32, size: u8, value: u32, _now: u64, fx: &mut Effects) {
        IoApic::mmio_write(self, offset, size, value);
        fx.irq = true;
    }
}

impl Device for PicPair {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0x20, 0x21), (0xA0, 0xA1)]
    }
    fn read(&mut self, port: u16, _size: u8, _now: u64, fx: &mut Effects) -> Option<u32> {
        // IRR, ISR and IMR read as they are; a read after a poll command is
        // the chip's acknowledge.
        let chip = if port & 0x80 != 0 { &self.slave } else { &self.master };
        fx.unchanged = !chip.poll;
        Some(u32::from(self.io_read(port)))
    }
    /// The mask registers (OCW1): a read returns IMR unless a poll command
    /// waits. IRR and ISR are left to `read`: which one OCW3 selects.
    fn plain_read(&self, port: u16) -> Option<PlainRead> {
        use super::pic::Pic8259;
        use std::mem::offset_of;
        if port & 1 == 0 {
            return None;
        }
        let chip = if port & 0x80 != 0 {
            offset_of!(PicPair, slave)
        } else {
            offset_of!(PicPair, master)
        };
        Some(PlainRead {
            value: chip + offset_of!(Pic8259, imr),
            unless: chip + offset_of!(Pic8259, poll),
        })
    }
    fn write(&mut self, port: u16, _size: u8, value: u32, _now: u64, _fx: &mut Effects) {
        self.io_write(port, value as u8);
    }
}

impl Device for Pit {
    /// The counters, and system control port B (gate and speaker of
    /// channel 2, the refresh toggle).
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0x40, 0x43), (0x61, 0x61)]
    }
    fn read(&mut self, port: u16, _size: u8, now: u64, _fx: &mut Effects) -> Option<u32> {
        Some(u32::from(match port {
            0x61 => self.port61_read(now),
            _ => self.io_read(port, now),
        }))
    }
    fn write(&mut self, port: u16, _size: u8, value: u32, now: u64, fx: &mut Effects) {
        match port {
            0x61 => self.port61_write(value as u8, now),
            _ => {
                self.io_write(port, value as u8, now);
                // A new count or mode moves the deadline.
                fx.irq = true;
            }
        }
    }
    fn timed(&self) -> bool {
        true
    }
    fn next_deadline(&self) -> Option<u64> {
        Pit::next_deadline(self)
    }
    /// IRQ0 is driven by OUT0's rising edges only, never its level: OUT
    /// rising when the guest writes a control word is no tick (QEMU raises
    /// none either), and a mode 2 period is one edge even though OUT is
    /// high again by the time we look.
    fn advance(&mut self, now: u64, fx: &mut Effects) {
        if Pit::advance(self, now) > 0 {
            fx.pulse = Some(0);
        }
    }
}

impl Device for I8042 {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0x60, 0x60), (0x64, 0x64)]
    }
    fn read(&mut self, port: u16, _size: u8, _now: u64, fx: &mut Effects) -> Option<u32> {
        let line_before = self.irq_lines().into_iter().find(|l| l.level);
        let value = self.io_read(port);
        // The next queued byte is a new interrupt: its line drops and rises
        // again, as a real controller's does between bytes.
        if let Some(line) = line_before {
            if port & 4 == 0 && self.irq_lines().iter().any(|l| l.level) {
                fx.lower = Some(line);
            }
        }
        Some(u32::from(value))
    }
    fn write(&mut self, port: u16, _size: u8, value: u32, _now: u64, fx: &mut Effects) {
        self.io_write(port, value as u8);
        fx.a20 = true;
        fx.reset |= self.take_reset_request();
    }
    fn lines(&self) -> Lines {
        self.irq_lines().map(Some)
    }
}

impl Device for Cmos {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0x70, 0x71)]
    }
    fn read(&mut self, port: u16, _size: u8, now: u64, _fx: &mut Effects) -> Option<u32> {
        Some(u32::from(self.io_read(port, now)))
    }
    fn write(&mut self, port: u16, _size: u8, value: u32, now: u64, _fx: &mut Effects) {
        self.io_write(port, value as u8, now);
    }
    fn lines(&self) -> Lines {
        [Some(self.irq()), None]
    }
    fn timed(&self) -> bool {
        true
    }
    fn next_deadline(&self) -> Option<u64> {
        Cmos::next_deadline(self)
    }
    fn advance(&mut self, now: u64, _fx: &mut Effects) {
        Cmos::advance(self, now);
    }
}

impl Device for Port92 {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0x92, 0x92)]
    }
    fn read(&mut self, _port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        Some(u32::from(self.io_read()))
    }
    fn write(&mut self, _port: u16, _size: u8, value: u32, _now: u64, fx: &mut Effects) {
        self.io_write(value as u8);
        fx.a20 = true;
        fx.reset |= self.take_reset_request();
    }
}

impl Device for DebugCon {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0xE9, 0xE9)]
    }
    fn read(&mut self, _port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        Some(u32::from(self.io_read()))
    }
    fn write(&mut self, _port: u16, _size: u8, value: u32, _now: u64, fx: &mut Effects) {
        self.io_write(value as u8);
        fx.output = true;
    }
}

impl Device for ExitDevice {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0xF4, 0xF7)]
    }
    fn wide(&self) -> bool {
        true
    }
    /// Write-only, as QEMU's isa-debug-exit: reads are unmapped.
    fn read(&mut self, _port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        None
    }
    fn write(&mut self, _port: u16, size: u8, value: u32, _now: u64, fx: &mut Effects) {
        self.io_write(value, size);
        fx.stop = true;
    }
}

impl Device for Uart {
    /// COM1.
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(COM1_BASE, COM1_BASE + 7)]
    }
    fn read(&mut self, port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        Some(u32::from(self.io_read(port - COM1_BASE)))
    }
    fn write(&mut self, port: u16, _size: u8, value: u32, _now: u64, fx: &mut Effects) {
        self.io_write(port - COM1_BASE, value as u8);
        if self.take_thre_retrigger() {
            // The line dropped and rose again; routing raises it.
            fx.lower = Some(self.irq());
        }
        fx.output |= self.has_output();
    }
    fn lines(&self) -> Lines {
        [Some(self.irq()), None]
    }
    /// A read of the receive buffer makes room for host input, which the
    /// machine loop then looks for at its next poll.
    fn access_moves_deadlines(&self) -> bool {
        true
    }
}

impl Device for FwCfg {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0x510, 0x511)]
    }
    fn wide(&self) -> bool {
        true
    }
    fn read(&mut self, port: u16, size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        Some(self.io_read(port, size))
    }
    fn write(&mut self, port: u16, size: u8, value: u32, _now: u64, _fx: &mut Effects) {
        self.io_write(port, size, value);
    }
}

impl Device for PciHost {
    /// CONFIG_ADDRESS and CONFIG_DATA.
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0xCF8, 0xCFF)]
    }
    fn wide(&self) -> bool {
        true
    }
    fn read(&mut self, port: u16, size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        self.io_read(port, size)
    }
    fn write(&mut self, port: u16, size: u8, value: u32, _now: u64, _fx: &mut Effects) {
        self.io_write(port, size, value);
    }
}

impl Device for FpuErrorLatch {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0xF0, 0xF0)]
    }
    /// Write-only: reads are unmapped, as on QEMU.
    fn read(&mut self, _port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        None
    }
    fn write(&mut self, _port: u16, _size: u8, _value: u32, _now: u64, fx: &mut Effects) {
        self.io_write();
        fx.irq = true;
    }
    fn lines(&self) -> Lines {
        [Some(self.irq()), None]
    }
}

/// QEMU's pc-testdev: the scratch register, the flush-page port, the IRQ
/// line ports and the scratch memory window.
impl Device for PcTestdev {
    fn ports(&self) -> &'static [(u16, u16)] {
        &[(0xE0, 0xE7), (0x2000, 0x2017)]
    }
    fn wide(&self) -> bool {
        true
    }
    /// Only the scratch register reads; the flush-page and IRQ ports are
    /// write-only.
    fn read(&mut self, port: u16, _size: u8, _now: u64, _fx: &mut Effects) -> Option<u32> {
        (0xE0..=0xE3).contains(&port).then(|| self.ioport_read(port - 0xE0))
    }
    fn write(&mut self, port: u16, size: u8, value: u32, _now: u64, fx: &mut Effects) {
        match port {
            0xE0..=0xE3 => self.ioport_write(port - 0xE0, size, value),
            0x2000..=0x2017 => {
                fx.line = PcTestdev::irq_write(port, value);
                fx.irq = true;
            }
            // The flush-page port: a host's page protection, nothing here.
            _ => {}
        }
    }
    fn mmio_window(&self) -> Option<(u32, u32)> {
        Some((testdev::IOMEM_BASE, testdev::IOMEM_BYTES))
    }
    fn mmio_read(&mut self, offset: u32, size: u8, _now: u64, _fx: &mut Effects) -> u32 {
        self.iomem_read(offset, size)
    }
    fn mmio_write(&mut self, offset: u32, size: u8, value: u32, _now: u64, _fx: &mut Effects) {
        self.iomem_write(offset, size, value);
    }
}
