//! The PC platform around the CPU: physical memory with the A20 gate, the
//! port-I/O bus and the ISA devices on it, and the wiring of device interrupt
//! lines into the PIC pair. It implements [`Bus`], so instruction semantics see
//! it exactly as they see any other bus.
//!
//! Port map (as on a PC/AT and QEMU's `pc` machine):
//! 0x20/0x21, 0xA0/0xA1 PIC pair; 0x40-0x43 PIT; 0x60/0x64 i8042; 0x61 system
//! control port B; 0x70/0x71 CMOS/RTC; 0x92 system control port A; 0xE9 debug
//! console; 0xF4-0xF7 isa-debug-exit; 0x3F8-0x3FF COM1; 0x510/0x511 fw_cfg;
//! 0xF0 the FPU error latch (IRQ 13); 0xCF8-0xCFF PCI configuration
//! mechanism #1 (a host bridge on bus 0); 0xE0-0xE7 and 0x2000-0x2017
//! QEMU's pc-testdev.
//! Reads of any other port return all ones; writes to them are dropped and
//! counted.
//!
//! Memory map: RAM from 0; the I/O APIC at 0xFEC00000; the local APIC where
//! IA32_APIC_BASE puts it (0xFEE00000), above RAM if it overlaps it, as
//! on hardware; pc-testdev's scratch memory at 0xFF000000 (2 MiB); a
//! `--bios` ROM ending at 4 GiB. Anything else reads as all ones.

use crate::bus::Bus;
use crate::devices::bus::{Device, Effects};
use crate::devices::cmos::Cmos;
use crate::devices::debug::{DebugCon, ExitDevice, FpuErrorLatch, Port92};
use crate::devices::fw_cfg::FwCfg;
use crate::devices::i8042::I8042;
use crate::devices::ioapic::IoApic;
use crate::devices::lapic::LocalApic;
use crate::devices::pci::PciHost;
use crate::devices::pic::PicPair;
use crate::devices::pit::Pit;
use crate::devices::testdev::PcTestdev;
use crate::devices::uart::Uart;
use crate::devices::IrqLine;
pub use crate::events::IoAccess;
use crate::events::SinkSlot;
use crate::exec::flags::mask;
use crate::irq::InterruptRouter;
use crate::mem::PhysMem;
use crate::snapshot::{SectionReader, SectionWriter, Snapshot};

pub const COM1_IRQ: u8 = 4;
/// Devices in the table (`with_devices!`).
const DEVICES: usize = 14;
const ALL_DEVICES: u32 = (1 << DEVICES) - 1;

/// The one list of the platform's devices, each `name: Type = field`,
/// given to `$then!` after its other arguments. A new device is a field and
/// an entry here: port decoding, timers, line routing and its section in
/// saved state all come from this list.
macro_rules! with_devices {
    ($then:ident!($($args:tt)*)) => {
        $then! {$($args)* ;
            pic: PicPair = irq.pic,
            lapic: LocalApic = irq.lapic,
            ioapic: IoApic = irq.ioapic,
            pit: Pit = pit,
            i8042: I8042 = i8042,
            cmos: Cmos = cmos,
            port92: Port92 = port92,
            debugcon: DebugCon = debugcon,
            exit: ExitDevice = exit,
            uart: Uart = uart,
            fw_cfg: FwCfg = fw_cfg,
            pci: PciHost = pci,
            ferr: FpuErrorLatch = ferr,
            testdev: PcTestdev = testdev}
    };
}

/// The devices as an array of borrows.
macro_rules! device_array {
    ($p:expr, ref ; $($name:ident : $ty:ty = $($f:ident).+),+) => {
        [$(&$p.$($f).+),+]
    };
}

/// The device at `index` in the list, borrowed `&mut`.
macro_rules! device_at_index {
    ($p:expr, $index:expr ; $($name:ident : $ty:ty = $($f:ident).+),+) => {{
        let mut k = 0usize;
        $(
            if $index == k {
                return &mut $p.$($f).+;
            }
            k += 1;
        )+
        let _ = k;
        unreachable!("device index out of the table")
    }};
}

/// The devices' saved state, one field per device in the list, and its
/// sections.
macro_rules! devices_state {
    (; $($name:ident : $ty:ty = $($f:ident).+),+) => {
        /// The devices' saved state, all together.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub struct DevicesState {
            $(pub $name: <$ty as Snapshot>::State,)+
        }

        impl DevicesState {
            /// One section per device, in the list's order.
            pub fn write_sections(&self, w: &mut impl SectionWriter) {
                $(w.section(<$ty as Snapshot>::SECTION, <$ty as Snapshot>::VERSION, &self.$name);)+
            }

            pub fn read_sections<R: SectionReader>(r: &mut R) -> Result<Self, R::Error> {
                Ok(DevicesState {
                    $($name: r.section(<$ty as Snapshot>::SECTION, <$ty as Snapshot>::VERSION)?,)+
                })
            }
        }

        impl Platform {
            pub fn save_devices(&self) -> DevicesState {
                DevicesState {
                    $($name: self.$($f).+.save(),)+
                }
            }

            pub fn restore_devices(&mut self, s: &DevicesState) {
                $(self.$($f).+.restore(&s.$name);)+
                self.stale_lines = ALL_DEVICES;
                self.update_a20();
                self.update_mmio_floor();
                self.irq.update();
            }
        }
    };
}

with_devices!(devices_state!());

/// Counters of guest activity on the buses, for the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BusStats {
    pub port_reads: u64,
    pub port_writes: u64,
    pub unmapped_port_reads: u64,
    pub unmapped_port_writes: u64,
    pub mmio_reads: u64,
    pub mmio_writes: u64,
}

impl Platform {
    #[cold]
    fn check_watches(&mut self, addr: u32, size: u8, write: bool) {
        if self.watch_hit.is_some() {
            return;
        }
        let end = addr.wrapping_add(u32::from(size));
        let hit = self
            .watches
            .iter()
            .position(|w| (if write { w.write } else { w.read }) && addr < w.end && end > w.start);
        if let Some(index) = hit {
            self.watch_hit = Some(WatchHit { index, addr, write });
        }
    }

    /// A port read, not logged: what `Bus::io_read` does before it logs
    /// the access (a translation's port step logs it itself).
    pub fn port_in(&mut self, port: u16, size: u8, now: u64) -> u32 {
        self.stats.port_reads += 1;
        let wide = match self.device_at(port) {
            Some((index, true)) => Some(index),
            _ => None,
        };
        let value = match wide {
            Some(i) => self.read_device(i, port, size, now),
            None => {
                // A wide access to byte-wide registers reads consecutive ports.
                let mut v = 0u32;
                let mut mapped = false;
                for i in 0..u16::from(size) {
                    let b = match self.read_port8(port.wrapping_add(i), now) {
                        Some(b) => {
                            mapped = true;
                            b
                        }
                        None => 0xFF,
                    };
                    v |= u32::from(b) << (8 * i);
                }
                mapped.then_some(v)
            }
        };
        // Reads can clear interrupt conditions (UART IIR/RBR, CMOS register C).
        self.port_accessed();
        match value {
            Some(v) => v & mask(size),
            None => {
                self.stats.unmapped_port_reads += 1;
                mask(size)
            }
        }
    }

    /// A port write, not logged (see `port_in`).
    pub fn port_out(&mut self, port: u16, size: u8, value: u32, now: u64) {
        self.stats.port_writes += 1;
        let wide = match self.device_at(port) {
            Some((index, true)) => Some(index),
            _ => None,
        };
        let mapped = match wide {
            Some(i) => {
                let mut fx = Effects::default();
                self.device(i).write(port, size, value, now, &mut fx);
                self.apply(fx);
                true
            }
            None => {
                let mut mapped = false;
                for i in 0..u16::from(size) {
                    mapped |= self.write_port8(port.wrapping_add(i), (value >> (8 * i)) as u8, now);
                }
                mapped
            }
        };
        if !mapped {
            self.stats.unmapped_port_writes += 1;
        }
        self.port_accessed();
    }

    /// Emits the logged device accesses as events of the instruction at
    /// `pc` that retired as instruction `icount`, emptying the log.
    pub fn emit_logged(&mut self, events: &mut SinkSlot, icount: u64, pc: u32) {
        self.attention.logged = false;
        if let Some(log) = &mut self.io_log {
            for a in log.drain(..) {
                events.io(icount, pc, a);
            }
        }
    }

    #[inline]
    fn log_io(&mut self, addr: u32, mmio: bool, size: u8, value: u32, write: bool) {
        if let Some(log) = &mut self.io_log {
            self.attention.logged = true;
            log.push(IoAccess {
                addr,
                mmio,
                size,
                value,
                write,
            });
        }
    }
}

/// A watched physical range `[start, end)` (a debugger's watchpoint): any
/// access of the watched kinds that touches it is noted, whatever the value,
/// as a hardware watchpoint triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub start: u32,
    pub end: u32,
    pub read: bool,
    pub write: bool,
}

/// The first watched access since the hit was last cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchHit {
    /// Index into `Platform::watches`.
    pub index: usize,
    pub addr: u32,
    pub write: bool,
}

/// A byte port access that compiled code makes itself
/// ([`Platform::inline_port`]). Either way it first checks that no device
/// waits to be routed (`Platform::STALE_LINES` is 0, where `port_in` and
/// `port_out` would route them), then counts the access in
/// `Platform::stats` as they do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InlinePort {
    /// No device decodes the port: a read gives 0xFF, a write goes
    /// nowhere; both count as unmapped.
    Unmapped,
    /// A read returns the `u8` at offset `value` in `Platform` and changes
    /// nothing, while the `bool` at offset `unless` is clear.
    Register { value: usize, unless: usize },
}

/// Something the machine loop must look at after an instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attention {
    /// Console output is waiting to be drained.
    pub output: bool,
    /// A device line or timer changed; the PIC may have a new request.
    pub irq: bool,
    /// Exit device written, or a reset requested.
    pub stop: bool,
    /// A device access went into `io_log`: its event must be emitted
    /// naming the instruction that made it (`Platform::emit_logged`), by
    /// the block engine right after it, or by the machine loop after the
    /// step.
    pub logged: bool,
    /// The A20 gate moved (a port access): blocks end, so that what the
    /// engines hold about memory is worked out again.
    pub memory_map: bool,
}

#[derive(Clone, Debug)]
pub struct Platform {
    pub mem: PhysMem,
    /// Device lines to the CPU: the 8259 pair, the I/O APIC, the local APIC.
    pub irq: InterruptRouter,
    pub pit: Pit,
    pub uart: Uart,
    pub cmos: Cmos,
    pub i8042: I8042,
    pub port92: Port92,
    pub debugcon: DebugCon,
    pub exit: ExitDevice,
    pub fw_cfg: FwCfg,
    pub pci: PciHost,
    pub ferr: FpuErrorLatch,
    pub testdev: PcTestdev,
    pub stats: BusStats,
    pub attention: Attention,
    /// Port and MMIO accesses since the machine last drained them; `None`
    /// (nothing logged) unless an event sink listens.
    pub io_log: Option<Vec<IoAccess>>,
    /// Physical ranges whose accesses a debugger wants to know about.
    pub watches: Vec<Watch>,
    pub watch_hit: Option<WatchHit>,
    /// Port to device: its place in the table plus one (0: none), bit 7
    /// set for a device that takes wide accesses whole. Built from the
    /// devices' own port ranges; shared by clones.
    port_map: std::sync::Arc<[u8]>,
    reset_requested: bool,
    /// Devices (bits by their place in the table) whose output lines may
    /// have changed since they were last routed: those reached through
    /// [`Platform::device`], or all of them.
    stale_lines: u32,
    /// Devices (bits by their place in the table) a port access to which
    /// may move the machine loop's next deadline.
    deadline_devices: u32,
    a20_mask: u32,
    /// The lowest address any device's register window starts at: the one
    /// comparison a memory access makes before it is RAM's.
    mmio_floor: u32,
    /// RAM that holds a copy of the firmware ROM and takes no writes
    /// (`--bios`: 0xE0000-0xFFFFF): its start and length, or empty.
    rom_shadow: (u32, u32),
}

impl Platform {
    /// Where compiled code finds what [`InlinePort`] checks and counts.
    pub const STALE_LINES: usize = std::mem::offset_of!(Platform, stale_lines);
    pub const PORT_READS: usize = std::mem::offset_of!(Platform, stats.port_reads);
    pub const PORT_WRITES: usize = std::mem::offset_of!(Platform, stats.port_writes);
    /// Where compiled code finds the A20 gate's mask as it stands.
    pub const A20_MASK: usize = std::mem::offset_of!(Platform, a20_mask);
    pub const UNMAPPED_PORT_READS: usize = std::mem::offset_of!(Platform, stats.unmapped_port_reads);
    pub const UNMAPPED_PORT_WRITES: usize = std::mem::offset_of!(Platform, stats.unmapped_port_writes);

    pub fn new(ram_bytes: usize, rtc_start: u64) -> Self {
        let mut p = Platform {
            mem: PhysMem::new(ram_bytes),
            irq: InterruptRouter::new(),
            pit: Pit::new(),
            uart: Uart::new(COM1_IRQ),
            cmos: Cmos::new(rtc_start, ram_bytes as u64),
            i8042: I8042::new(),
            port92: Port92::new(),
            debugcon: DebugCon::new(),
            exit: ExitDevice::new(),
            fw_cfg: FwCfg::new(ram_bytes as u64, 1),
            pci: PciHost::new(),
            ferr: FpuErrorLatch::new(),
            testdev: PcTestdev::new(),
            stats: BusStats::default(),
            attention: Attention::default(),
            stale_lines: ALL_DEVICES,
            deadline_devices: 0,
            io_log: None,
            watches: Vec::new(),
            watch_hit: None,
            port_map: std::sync::Arc::from(Vec::new()),
            reset_requested: false,
            a20_mask: 0,
            mmio_floor: 0,
            rom_shadow: (0, 0),
        };
        let mut map = vec![0u8; 1 << 16];
        let mut deadline_devices = 0;
        for (index, device) in p.devices_ref().iter().enumerate() {
            if device.access_moves_deadlines() {
                deadline_devices |= 1 << index;
            }
            let tag = (index as u8 + 1) | if device.wide() { 0x80 } else { 0 };
            for &(first, last) in device.ports() {
                map[usize::from(first)..=usize::from(last)].fill(tag);
            }
        }
        p.port_map = map.into();
        p.deadline_devices = deadline_devices;
        p.update_a20();
        p.update_mmio_floor();
        p
    }

    /// What compiled code may do itself for a byte IN or OUT through port
    /// `port`, without a call: the same as `port_in`/`port_out` would do,
    /// as long as the checks [`InlinePort`] names pass. Which device
    /// decodes a port, and where its fields lie, is the same for every
    /// platform.
    pub fn inline_port(&self, port: u8, input: bool) -> Option<InlinePort> {
        match self.device_at(u16::from(port)) {
            None => Some(InlinePort::Unmapped),
            Some((index, _)) if input => {
                let device = self.devices_ref()[index];
                let read = device.plain_read(u16::from(port))?;
                // Where the device lies in the platform (if it does: a
                // device kept elsewhere is read through `port_in`).
                let at = ((device as *const dyn Device).cast::<u8>() as usize)
                    .checked_sub(self as *const Platform as usize)
                    .filter(|at| at + read.value.max(read.unless) < std::mem::size_of::<Platform>())?;
                Some(InlinePort::Register {
                    value: at + read.value,
                    unless: at + read.unless,
                })
            }
            Some(_) => None,
        }
    }

    /// What decides whether a physical access can go straight to RAM, for
    /// the compiler's inline path: the A20 mask, the end of the addresses
    /// that are plain RAM (0 while a debugger watches memory: every access
    /// must be seen), and the write-protected shadow of the firmware ROM.
    pub fn plain_ram(&self) -> (u32, u64, (u32, u32)) {
        let end = if self.watches.is_empty() {
            (self.mem.ram_size() as u64).min(u64::from(self.mmio_floor))
        } else {
            0
        };
        (self.a20_mask, end, self.rom_shadow)
    }

    /// Whether the physical range `start..start + len` may be read and
    /// written as RAM with no device check ([`Platform::plain_ram`]): the
    /// A20 gate leaves it where it is, and it lies below every device,
    /// with no debugger watch anywhere, outside the ROM's shadow.
    pub fn is_plain_ram(&self, start: u32, len: u32) -> bool {
        let (a20_mask, ram_end, (rom_start, rom_len)) = self.plain_ram();
        let end = u64::from(start) + u64::from(len);
        start & a20_mask == start
            && (end.saturating_sub(1) as u32) & a20_mask == end.saturating_sub(1) as u32
            && end <= ram_end
            && (end <= u64::from(rom_start) || u64::from(start) >= u64::from(rom_start) + u64::from(rom_len))
    }

    /// Makes RAM in `[start, end)` read-only: a ROM's copy (the BIOS area
    /// below 1 MiB).
    pub fn protect_rom_shadow(&mut self, start: u32, end: u32) {
        self.rom_shadow = (start, end.saturating_sub(start));
    }

    fn update_mmio_floor(&mut self) {
        self.mmio_floor = self
            .devices_ref()
            .iter()
            .filter_map(|d| d.mmio_window())
            .map(|(base, _)| base)
            .min()
            .unwrap_or(u32::MAX);
    }

    /// The device whose register window holds `addr`, and the offset.
    #[cold]
    fn mmio_device(&self, addr: u32) -> Option<(usize, u32)> {
        self.devices_ref().iter().enumerate().find_map(|(index, d)| {
            let (base, len) = d.mmio_window()?;
            let offset = addr.wrapping_sub(base);
            (offset < len).then_some((index, offset))
        })
    }

    #[cold]
    fn mmio_read(&mut self, index: usize, offset: u32, addr: u32, size: u8, now: u64) -> u32 {
        self.stats.mmio_reads += 1;
        let mut fx = Effects::default();
        let value = self.device(index).mmio_read(offset, size, now, &mut fx) & mask(size);
        self.apply(fx);
        self.log_io(addr, true, size, value, false);
        value
    }

    #[cold]
    fn mmio_write(&mut self, index: usize, offset: u32, addr: u32, size: u8, value: u32, now: u64) {
        self.stats.mmio_writes += 1;
        let mut fx = Effects::default();
        self.device(index).mmio_write(offset, size, value, now, &mut fx);
        self.apply(fx);
        self.log_io(addr, true, size, value, true);
    }

    /// Whether A20 is enabled (the i8042 output port or port 0x92 bit 1).
    pub fn a20(&self) -> bool {
        self.a20_mask & (1 << 20) != 0
    }

    fn update_a20(&mut self) {
        let on = self.i8042.a20() || self.port92.a20();
        self.a20_mask = if on { 0xFFFF_FFFF } else { !(1 << 20) };
    }

    pub fn take_reset_request(&mut self) -> bool {
        std::mem::take(&mut self.reset_requested)
    }

    /// The earliest virtual tick at which a device timer fires.
    pub fn next_timer_deadline(&self) -> Option<u64> {
        self.devices_ref().iter().filter_map(|d| d.next_deadline()).min()
    }

    /// Brings the timers up to `now` and routes their lines.
    pub fn advance_timers(&mut self, now: u64) {
        for index in 0..DEVICES {
            let mut fx = Effects::default();
            let device = self.device(index);
            if !device.timed() {
                continue;
            }
            device.advance(now, &mut fx);
            let lines = device.lines();
            self.apply(fx);
            for line in lines.into_iter().flatten() {
                self.irq.set_line(line);
            }
        }
    }
    /// Moves every device's output line into the router and brings INTR
    /// up to date (every controller change passes through here: port
    /// accesses route at once, timers are serviced before it).
    pub fn route_all(&mut self) {
        self.stale_lines = ALL_DEVICES;
        self.route_changed();
    }

    /// [`Platform::route_all`] for the devices whose lines may have
    /// changed since they were last routed (after a port or MMIO access:
    /// the device accessed); INTR is brought up to date whichever way.
    pub fn route_changed(&mut self) {
        let mut stale = std::mem::take(&mut self.stale_lines);
        while stale != 0 {
            let index = stale.trailing_zeros() as usize;
            stale &= stale - 1;
            for line in self.devices_ref()[index].lines().into_iter().flatten() {
                self.irq.set_line(line);
            }
        }
        self.irq.update();
    }

    /// Whether the CPU is asked to take an interrupt, as of the last routing.
    #[inline]
    pub fn intr(&self) -> bool {
        self.irq.intr()
    }

    /// The CPU's interrupt-acknowledge cycle: the vector, with INTR updated.
    pub fn acknowledge_interrupt(&mut self) -> u8 {
        self.irq.acknowledge()
    }

    /// Appends what the guest printed (COM1 and port 0xE9) since the last call.
    pub fn drain_console(&mut self, serial: &mut Vec<u8>, debugcon: &mut Vec<u8>) {
        self.uart.drain_output(serial);
        self.debugcon.drain_output(debugcon);
        self.attention.output = false;
    }

    /// The port devices, in one table: decoding, timers and line routing
    /// go through it.
    fn devices_ref(&self) -> [&dyn Device; DEVICES] {
        with_devices!(device_array!(self, ref))
    }

    /// One port device by its place in the table.
    fn device(&mut self, index: usize) -> &mut dyn Device {
        self.stale_lines |= 1 << index;
        with_devices!(device_at_index!(self, index))
    }

    /// The device decoding `port` (its place in the table) and whether it
    /// takes wide accesses whole.
    #[inline]
    fn device_at(&self, port: u16) -> Option<(usize, bool)> {
        match self.port_map[usize::from(port)] {
            0 => None,
            v => Some((usize::from(v & 0x7F) - 1, v & 0x80 != 0)),
        }
    }

    /// Does what a device asked for.
    fn apply(&mut self, fx: Effects) {
        self.attention.output |= fx.output;
        self.attention.irq |= fx.irq;
        self.attention.stop |= fx.stop;
        if fx.a20 {
            let before = self.a20_mask;
            self.update_a20();
            self.attention.memory_map |= self.a20_mask != before;
        }
        if fx.reset {
            self.reset_requested = true;
            self.attention.stop = true;
        }
        if let Some(line) = fx.lower {
            self.irq.set_line(IrqLine { level: false, ..line });
        }
        if let Some(irq) = fx.pulse {
            self.irq.pulse(irq);
        }
        if let Some(line) = fx.line {
            self.irq.set_line(line);
        }
    }

    /// After a port access: the devices accessed are routed now, so that an
    /// interrupt they raise or withdraw is seen at the next instruction
    /// boundary. The machine loop is asked to look only when it has
    /// something to do: a deadline may have moved, or the CPU is asked for
    /// an interrupt (which ends a block even with IF clear, as every port
    /// access used to). A port access that does neither (the 8259's mask,
    /// port 0x80, an unmapped port) lets the block go on.
    fn port_accessed(&mut self) {
        if self.stale_lines == 0 {
            // No device decoded it (port 0x80): nothing changed.
            return;
        }
        if self.stale_lines & self.deadline_devices != 0 {
            self.attention.irq = true;
        }
        self.route_changed();
        if self.irq.intr() || self.irq.nmi() {
            self.attention.irq = true;
        }
    }

    /// One byte-wide access; `None` where no byte-wide device decodes it.
    fn read_port8(&mut self, port: u16, now: u64) -> Option<u8> {
        match self.device_at(port)? {
            (_, true) => None,
            (index, false) => self.read_device(index, port, 1, now).map(|v| v as u8),
        }
    }

    /// A read of the port device at `index`, with what it asks done; one
    /// that changed nothing routing looks at leaves the device as stale as
    /// it was.
    fn read_device(&mut self, index: usize, port: u16, size: u8, now: u64) -> Option<u32> {
        let stale = self.stale_lines;
        let mut fx = Effects::default();
        let value = self.device(index).read(port, size, now, &mut fx);
        self.apply(fx);
        if fx.unchanged {
            self.stale_lines = stale;
        }
        value
    }

    fn write_port8(&mut self, port: u16, value: u8, now: u64) -> bool {
        let Some((index, false)) = self.device_at(port) else {
            return false;
        };
        let mut fx = Effects::default();
        self.device(index).write(port, 1, u32::from(value), now, &mut fx);
        self.apply(fx);
        true
    }
}

impl Bus for Platform {
    #[inline]
    fn read_phys(&mut self, addr: u32, size: u8, now: u64) -> u32 {
        let addr = addr & self.a20_mask;
        if !self.watches.is_empty() {
            self.check_watches(addr, size, false);
        }
        if addr >= self.mmio_floor {
            if let Some((index, offset)) = self.mmio_device(addr) {
                return self.mmio_read(index, offset, addr, size, now);
            }
        }
        // RAM, or nothing (all ones).
        self.mem.read(addr, size)
    }

    #[inline]
    fn fetch_phys(&mut self, addr: u32, out: &mut [u8]) {
        let addr = addr & self.a20_mask;
        match self.mem.ram().get(addr as usize..addr as usize + out.len()) {
            Some(bytes) => out.copy_from_slice(bytes),
            // ROM or nothing: an instruction fetch never reaches a
            // device's registers (it reads what is under them).
            None => {
                for (i, b) in out.iter_mut().enumerate() {
                    *b = self.mem.read(addr.wrapping_add(i as u32), 1) as u8;
                }
            }
        }
    }

    #[inline]
    fn bulk_ram(&mut self, read: Option<(u32, u32)>, write: (u32, u32)) -> Option<&mut [u8]> {
        let plain = |(start, len): (u32, u32)| self.is_plain_ram(start, len);
        if !plain(write) || !read.is_none_or(plain) {
            return None;
        }
        self.mem.bulk_store(write.0, write.1)
    }

    fn write_phys(&mut self, addr: u32, size: u8, value: u32, now: u64) {
        let addr = addr & self.a20_mask;
        if !self.watches.is_empty() {
            self.check_watches(addr, size, true);
        }
        if addr >= self.mmio_floor {
            if let Some((index, offset)) = self.mmio_device(addr) {
                return self.mmio_write(index, offset, addr, size, value, now);
            }
        }
        if addr.wrapping_sub(self.rom_shadow.0) < self.rom_shadow.1 {
            self.mem.count_dropped_write();
            return;
        }
        // RAM, or nothing: PhysMem drops the bytes and counts them.
        self.mem.write(addr, size, value)
    }

    fn io_read(&mut self, port: u16, size: u8, now: u64) -> u32 {
        let value = self.port_in(port, size, now);
        self.log_io(u32::from(port), false, size, value, false);
        value
    }

    fn fpu_error(&mut self) {
        self.ferr.raise();
        self.stale_lines = ALL_DEVICES;
        self.attention.irq = true;
    }

    fn apic_msr_read(&mut self, index: u32) -> Option<u64> {
        match index {
            0x1B => Some(self.irq.lapic.base_msr()),
            0x6E0 => Some(self.irq.lapic.tsc_deadline_msr()),
            _ => None,
        }
    }

    fn apic_msr_write(&mut self, index: u32, value: u64, tick: u64) -> bool {
        let ok = match index {
            0x1B => self.irq.lapic.write_base_msr(value),
            0x6E0 => {
                self.irq.lapic.write_tsc_deadline_msr(value, tick);
                true
            }
            _ => false,
        };
        // The window may have moved, LINT0 may pass the 8259 now, the
        // timer's deadline may have changed.
        self.update_mmio_floor();
        self.attention.irq = true;
        self.stale_lines = ALL_DEVICES;
        ok
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, now: u64) {
        self.port_out(port, size, value, now);
        self.log_io(u32::from(port), false, size, value, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte at `offset` in `p`.
    fn byte_at(p: &Platform, offset: usize) -> u8 {
        assert!(offset < std::mem::size_of::<Platform>());
        // SAFETY: in bounds (checked), and `inline_port` gives only offsets
        // of `u8` and `bool` fields, which are initialised bytes.
        unsafe { *(p as *const Platform).cast::<u8>().add(offset) }
    }

    // What compiled code does for a byte port access `inline_port` offers
    // is what `port_in`/`port_out` do: for every port, with the 8259s
    // programmed, masked in many ways and with a poll command waiting.
    #[test]
    fn inline_port_accesses_do_what_the_platform_does() {
        let mut p = Platform::new(2 << 20, 0);
        let mut registers = 0;
        for round in 0..64u32 {
            if round % 8 == 0 {
                // ICW1-ICW4 to both chips: IMR cleared.
                for (base, vector, icw3) in [(0x20u16, 0x20u32, 4u32), (0xA0, 0x28, 2)] {
                    p.port_out(base, 1, 0x11, 0);
                    p.port_out(base + 1, 1, vector, 0);
                    p.port_out(base + 1, 1, icw3, 0);
                    p.port_out(base + 1, 1, 1, 0);
                }
            }
            p.port_out(0x21, 1, round.wrapping_mul(0x9D) & 0xFF, 0);
            p.port_out(0xA1, 1, round.wrapping_mul(0x3B) & 0xFF, 0);
            if round % 3 == 0 {
                // OCW3 with the poll bit: the next read is an acknowledge.
                p.port_out(if round % 2 == 0 { 0x20 } else { 0xA0 }, 1, 0x0C, 0);
            }
            p.route_changed();
            p.attention = Attention::default();
            for port in 0..=255u8 {
                for input in [true, false] {
                    let Some(how) = p.inline_port(port, input) else {
                        continue;
                    };
                    let devices = p.save_devices();
                    let stats = p.stats;
                    match how {
                        InlinePort::Unmapped if input => {
                            assert_eq!(p.port_in(u16::from(port), 1, 0), 0xFF, "port {port:#x}");
                            assert_eq!(p.stats.unmapped_port_reads, stats.unmapped_port_reads + 1);
                        }
                        InlinePort::Unmapped => {
                            p.port_out(u16::from(port), 1, round, 0);
                            assert_eq!(p.stats.unmapped_port_writes, stats.unmapped_port_writes + 1);
                        }
                        InlinePort::Register { value, unless } => {
                            assert!(input, "port {port:#x}: a register offered for writes");
                            if byte_at(&p, unless) != 0 {
                                continue;
                            }
                            registers += 1;
                            let field = byte_at(&p, value);
                            assert_eq!(p.port_in(u16::from(port), 1, 0), u32::from(field), "port {port:#x}");
                        }
                    }
                    assert_eq!(p.save_devices(), devices, "port {port:#x}: nothing changes");
                    assert_eq!(p.stale_lines, 0, "port {port:#x}: nothing to route");
                    assert_eq!(p.attention, Attention::default(), "port {port:#x}");
                }
            }
            // The poll, if one waits, is answered by the platform's read.
            p.port_in(0x20, 1, 0);
            p.port_in(0xA0, 1, 0);
        }
        assert!(registers >= 64, "mask registers read: {registers}");
        assert_eq!(p.inline_port(0x80, false), Some(InlinePort::Unmapped));
        assert!(matches!(p.inline_port(0x21, true), Some(InlinePort::Register { .. })));
        assert_eq!(p.inline_port(0x21, false), None, "a mask write reroutes");
        assert_eq!(p.inline_port(0x20, true), None, "IRR or ISR, as OCW3 chose");
    }

    #[test]
    fn every_port_is_decoded_by_one_device_at_most() {
        let p = Platform::new(2 << 20, 0);
        let mut owner = vec![None; 1 << 16];
        for (index, device) in p.devices_ref().iter().enumerate() {
            for &(first, last) in device.ports() {
                assert!(first <= last, "device {index}: range {first:#x}-{last:#x}");
                for port in first..=last {
                    let slot = &mut owner[usize::from(port)];
                    assert!(slot.is_none(), "port {port:#x}: devices {slot:?} and {index}");
                    *slot = Some(index);
                    assert_eq!(p.device_at(port).map(|(i, _)| i), Some(index), "port {port:#x}");
                }
            }
        }
        assert_eq!(p.device_at(0x80), None, "the POST port is unmapped");
    }

    #[test]
    fn unmapped_ports_read_all_ones_and_writes_are_counted() {
        let mut p = Platform::new(2 << 20, 0);
        assert_eq!(p.io_read(0x1234, 1, 0), 0xFF);
        assert_eq!(p.io_read(0x1234, 2, 0), 0xFFFF);
        assert_eq!(p.io_read(0x1234, 4, 0), 0xFFFF_FFFF);
        p.io_write(0x1234, 4, 7, 0);
        p.io_write(0x80, 1, 7, 0);
        assert_eq!(p.stats.unmapped_port_reads, 3);
        assert_eq!(p.stats.unmapped_port_writes, 2);
    }

    #[test]
    fn a20_gate_wraps_the_megabyte_when_off() {
        let mut p = Platform::new(4 << 20, 0);
        // The i8042 output port starts with A20 on; turn it off (command 0xD1).
        p.io_write(0x64, 1, 0xD1, 0);
        p.io_write(0x60, 1, 0xDD, 0);
        assert!(!p.a20());
        p.write_phys(0x10_0500, 1, 0x42, 0);
        assert_eq!(p.read_phys(0x500, 1, 0), 0x42);
        // Port 0x92 bit 1 turns it back on.
        p.io_write(0x92, 1, 0x02, 0);
        assert!(p.a20());
        p.write_phys(0x10_0500, 1, 0x99, 0);
        assert_eq!(p.read_phys(0x500, 1, 0), 0x42);
    }
}

/// A platform whose 8259s are initialised (vectors 0x20 and 0x28, slave on
/// IRQ 2) with the masks given, for the interrupt tests.
#[cfg(test)]
fn with_pics(master_mask: u32, slave_mask: u32) -> Platform {
    let mut p = Platform::new(2 << 20, 0);
    for (port, v) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, master_mask),
        (0xA0, 0x11),
        (0xA1, 0x28),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0xA1, slave_mask),
    ] {
        p.io_write(port, 1, v, 0);
    }
    p
}

#[cfg(test)]
mod fpu_error_tests {
    use super::*;

    // FERR# with CR0.NE clear: IRQ 13 on the slave 8259 until port 0xF0 is
    // written (the PC/AT's latch).
    #[test]
    fn fpu_errors_raise_irq_13_until_port_f0_is_written() {
        let mut p = with_pics(0xFB, 0xDF);
        p.route_all();
        assert!(!p.intr());
        p.fpu_error();
        p.route_all();
        assert!(p.intr());
        assert_eq!(p.acknowledge_interrupt(), 0x28 + 5, "IRQ 13");
        p.io_write(0xA0, 1, 0x20, 0);
        p.io_write(0x20, 1, 0x20, 0);
        p.io_write(0xF0, 1, 0, 0);
        p.route_all();
        assert!(!p.intr(), "the latch was cleared");
    }
}

#[cfg(test)]
mod uart_irq_tests {
    use super::*;

    #[test]
    fn each_thr_write_is_a_new_thre_interrupt_edge() {
        let mut p = Platform::new(2 << 20, 0);
        for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, 0xEF)] {
            p.io_write(port, 1, v, 0);
        }
        p.io_write(0x3FC, 1, 0x08, 0); // MCR.OUT2
        p.io_write(0x3F9, 1, 0x02, 0); // IER.THRI: THR is empty, so THRE is pending
        p.route_all();
        assert_eq!(p.irq.pic.acknowledge(), 0x24);
        p.io_write(0x20, 1, 0x20, 0); // EOI without reading IIR
        p.io_write(0x3F8, 1, u32::from(b'x'), 0);
        p.route_all();
        assert!(
            p.irq.pic.interrupt_pending(),
            "the THR write re-raised THRE as a new edge"
        );
    }
}

#[cfg(test)]
mod i8042_irq_tests {
    use super::*;

    /// Both 8259s initialised, every IRQ unmasked.
    fn platform() -> Platform {
        with_pics(0, 0)
    }

    fn eoi(p: &mut Platform) {
        p.io_write(0xA0, 1, 0x20, 0);
        p.io_write(0x20, 1, 0x20, 0);
        p.route_all();
    }

    // A keyboard answer of three bytes is three interrupts: the controller's
    // line drops when a byte is read and rises for the next, so the
    // edge-triggered 8259 sees each (Linux's atkbd reads its ID this way).
    #[test]
    fn each_queued_byte_is_a_new_interrupt() {
        let mut p = platform();
        p.io_write(0x60, 1, 0xF2, 0);
        p.route_all();
        for expected in [0xFA, 0xAB, 0x41] {
            assert!(p.intr(), "byte {expected:#x}");
            assert_eq!(p.acknowledge_interrupt(), 0x21, "IRQ 1");
            assert_eq!(p.io_read(0x60, 1, 0), expected);
            eoi(&mut p);
        }
        assert!(!p.intr());
    }

    // The AUX loopback raises IRQ 12 (on the slave), not IRQ 1.
    #[test]
    fn aux_bytes_raise_irq_12() {
        let mut p = platform();
        p.io_write(0x64, 1, 0x60, 0);
        p.io_write(0x60, 1, 0x43, 0);
        p.io_write(0x64, 1, 0xD3, 0);
        p.io_write(0x60, 1, 0xA5, 0);
        p.route_all();
        assert!(p.intr());
        assert_eq!(p.acknowledge_interrupt(), 0x28 + 4, "IRQ 12");
        assert_eq!(p.io_read(0x64, 1, 0) & 0x21, 0x21, "output full, from AUX");
        assert_eq!(p.io_read(0x60, 1, 0), 0xA5);
        eoi(&mut p);
        assert!(!p.intr());
    }
}

#[cfg(test)]
mod apic_tests {
    use super::*;

    const LAPIC: u32 = 0xFEE0_0000;
    const IOAPIC: u32 = 0xFEC0_0000;

    fn rd(p: &mut Platform, reg: u32) -> u32 {
        p.read_phys(LAPIC + reg, 4, 0)
    }

    fn wr(p: &mut Platform, reg: u32, v: u32, now: u64) {
        p.write_phys(LAPIC + reg, 4, v, now);
        p.route_all();
    }

    fn self_ipi(p: &mut Platform, vector: u8) {
        wr(p, 0x300, (1 << 18) | u32::from(vector), 0);
    }

    fn eoi(p: &mut Platform) {
        wr(p, 0xB0, 0, 0);
    }

    fn take(p: &mut Platform) -> Option<u8> {
        p.route_all();
        p.intr().then(|| p.acknowledge_interrupt())
    }

    fn ioapic_route(p: &mut Platform, pin: u32, low: u32) {
        p.write_phys(IOAPIC, 4, 0x10 + 2 * pin, 0);
        p.write_phys(IOAPIC + 0x10, 4, low, 0);
        p.write_phys(IOAPIC, 4, 0x11 + 2 * pin, 0);
        p.write_phys(IOAPIC + 0x10, 4, 0, 0);
        p.route_all();
    }

    #[test]
    fn registers_read_as_the_firmware_leaves_them() {
        let mut p = Platform::new(2 << 20, 0);
        assert_eq!(rd(&mut p, 0x20), 0, "APIC ID 0");
        assert_eq!(rd(&mut p, 0x30), 0x0005_0014, "version: xAPIC, six LVT entries");
        assert_eq!(rd(&mut p, 0xF0), 0x1FF, "software-enabled, spurious vector 0xFF");
        assert_eq!(rd(&mut p, 0x350), 0x8700, "LINT0: ExtINT");
        assert_eq!(rd(&mut p, 0x360), 0x8400, "LINT1: NMI");
        assert_eq!(rd(&mut p, 0x320), 0x1_0000, "timer masked");
        assert_eq!(rd(&mut p, 0xE0), 0xFFFF_FFFF, "flat model");
        assert_eq!(p.apic_msr_read(0x1B), Some(0xFEE0_0900));
        // The I/O APIC: ID 0, version 0x20 with 24 pins, every pin masked.
        p.write_phys(IOAPIC, 4, 1, 0);
        assert_eq!(p.read_phys(IOAPIC + 0x10, 4, 0), 0x0017_0020);
        p.write_phys(IOAPIC, 4, 0, 0);
        assert_eq!(p.read_phys(IOAPIC + 0x10, 4, 0), 0);
        p.write_phys(IOAPIC, 4, 0x10 + 2 * 23, 0);
        assert_eq!(p.read_phys(IOAPIC + 0x10, 4, 0), 1 << 16);
    }

    #[test]
    fn self_ipis_are_taken_in_priority_order_and_retired_by_eoi() {
        let mut p = Platform::new(2 << 20, 0);
        self_ipi(&mut p, 0x40);
        assert_eq!(rd(&mut p, 0x200 + 0x20), 1, "IRR bit 0x40");
        assert_eq!(take(&mut p), Some(0x40));
        assert_eq!(rd(&mut p, 0x100 + 0x20), 1, "ISR bit 0x40");
        assert_eq!(rd(&mut p, 0xA0), 0x40, "PPR follows the in-service class");
        // A lower class waits for the EOI; a higher one nests.
        self_ipi(&mut p, 0x35);
        assert_eq!(take(&mut p), None);
        self_ipi(&mut p, 0x81);
        assert_eq!(take(&mut p), Some(0x81));
        eoi(&mut p);
        assert_eq!(take(&mut p), None, "0x40 is still in service");
        eoi(&mut p);
        assert_eq!(take(&mut p), Some(0x35));
        eoi(&mut p);
        assert_eq!(take(&mut p), None);
        assert_eq!(rd(&mut p, 0x100 + 0x20), 0);
    }

    #[test]
    fn task_priority_holds_back_lower_classes() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0x80, 0x50, 0);
        self_ipi(&mut p, 0x45);
        self_ipi(&mut p, 0x50);
        assert_eq!(take(&mut p), None, "classes 4 and 5 are at or below TPR");
        wr(&mut p, 0x80, 0x40, 0);
        assert_eq!(take(&mut p), Some(0x50));
        eoi(&mut p);
        assert_eq!(take(&mut p), None);
        wr(&mut p, 0x80, 0, 0);
        assert_eq!(take(&mut p), Some(0x45));
    }

    #[test]
    fn a_request_that_lost_its_priority_before_the_acknowledge_is_spurious() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0xF0, 0x1E7, 0);
        self_ipi(&mut p, 0x45);
        p.route_all();
        assert!(p.intr());
        // TPR raised between INTR and INTA, without re-routing.
        p.write_phys(LAPIC + 0x80, 4, 0x60, 0);
        assert_eq!(p.acknowledge_interrupt(), 0xE7, "the spurious vector");
        assert_eq!(rd(&mut p, 0x100 + 0x20), 0, "nothing went in service");
    }

    #[test]
    fn illegal_vectors_are_errors_and_the_esr_latches_on_write() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0x370, 0xEE, 0);
        self_ipi(&mut p, 0x05);
        assert_eq!(rd(&mut p, 0x280), 0, "not latched before a write");
        wr(&mut p, 0x280, 0, 0);
        assert_eq!(rd(&mut p, 0x280), 0x60, "send and receive illegal vector");
        assert_eq!(take(&mut p), Some(0xEE), "the error LVT's vector");
        wr(&mut p, 0x280, 0, 0);
        assert_eq!(rd(&mut p, 0x280), 0);
    }

    // An error LVT with an illegal vector must not turn one error into an
    // endless chain of them (it overflowed the host's stack once).
    #[test]
    fn an_illegal_error_vector_is_one_more_error_not_a_loop() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0x370, 0x03, 0);
        assert_eq!(p.read_phys(LAPIC + 0x2F0, 4, 0), 0, "an illegal register");
        self_ipi(&mut p, 0x04);
        wr(&mut p, 0x280, 0, 0);
        assert_eq!(
            rd(&mut p, 0x280),
            0xE0,
            "illegal register, send and receive illegal vector"
        );
        assert_eq!(take(&mut p), None);
    }

    // A software-disabled APIC holds what it accepts; enabled again, it
    // delivers it (QEMU's does; a level pin's remote IRR is not stranded).
    #[test]
    fn a_software_disabled_apic_holds_requests_until_enabled() {
        let mut p = with_pics(0xFF, 0xFF);
        wr(&mut p, 0xF0, 0xFF, 0);
        ioapic_route(&mut p, 10, (1 << 15) | 0x3A);
        p.irq.set_line(IrqLine { irq: 10, level: true });
        assert_eq!(take(&mut p), None, "disabled: nothing delivered");
        wr(&mut p, 0xF0, 0x1FF, 0);
        assert_eq!(take(&mut p), Some(0x3A));
    }

    // Between one-shot and periodic the timer counts on; into TSC-deadline
    // mode it is disarmed, and the deadline MSR reads zero outside it.
    #[test]
    fn timer_mode_changes_disarm_only_around_tsc_deadline_mode() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0x3E0, 0x0B, 0);
        wr(&mut p, 0x320, 0x31, 0);
        wr(&mut p, 0x380, 1000, 0);
        wr(&mut p, 0x320, (1 << 17) | 0x31, 100);
        assert_eq!(p.next_timer_deadline(), Some(1000), "one-shot to periodic counts on");
        assert!(p.apic_msr_write(0x6E0, 5000, 500));
        assert_eq!(p.apic_msr_read(0x6E0), Some(0), "ignored outside TSC-deadline mode");
        wr(&mut p, 0x320, (2 << 17) | 0x31, 200);
        assert_eq!(p.next_timer_deadline(), None, "into TSC-deadline mode disarms");
        assert_eq!(rd(&mut p, 0x380), 0);
    }

    // A wild guest: random accesses of every size to the APICs' and the
    // test device's registers, random MSR values, interrupts taken and
    // timers run between them. Nothing may panic, recurse or stall, and
    // the same sequence must leave the same state (no host input).
    #[test]
    fn random_register_traffic_never_panics_and_is_deterministic() {
        fn run(seed: u64) -> DevicesState {
            let mut x = seed;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut p = with_pics(0, 0);
            let mut now = 0u64;
            for _ in 0..200_000 {
                let r = next();
                let size = [1u8, 2, 4][(r % 3) as usize];
                let base = [LAPIC, IOAPIC, 0xFF00_0000, 0xFF1F_FFF0][((r >> 2) % 4) as usize];
                let addr = base + ((r >> 8) as u32 & 0x3FF);
                let value = (r >> 32) as u32;
                match (r >> 4) % 8 {
                    0..=3 => p.write_phys(addr, size, value, now),
                    4 | 5 => {
                        p.read_phys(addr, size, now);
                    }
                    6 => {
                        let msr = if r & (1 << 40) != 0 { 0x1B } else { 0x6E0 };
                        let v = if msr == 0x1B {
                            0xFEE0_0000 | (r & 0x900)
                        } else {
                            r >> 20
                        };
                        p.apic_msr_write(msr, v, now + (r >> 50));
                    }
                    _ => {
                        now += (r >> 44) % 5000;
                        p.advance_timers(now);
                    }
                }
                p.route_all();
                if p.intr() {
                    p.acknowledge_interrupt();
                }
                if p.irq.nmi() {
                    p.irq.lapic.take_nmi();
                }
            }
            p.save_devices()
        }
        for seed in [1, 0xDEAD_BEEF, 0x1234_5678_9ABC] {
            assert_eq!(run(seed), run(seed), "seed {seed:#x}");
        }
    }

    // With the 8259 (through LINT0) and the local APIC both asking, the
    // 8259's ExtINT is acknowledged first, as QEMU's local APIC lets it.
    #[test]
    fn the_8259s_extint_is_served_before_the_local_apic() {
        let mut p = with_pics(0xFE, 0xFF);
        self_ipi(&mut p, 0x90);
        p.irq.pulse(0);
        assert_eq!(take(&mut p), Some(0x20), "the PIT through the 8259");
        assert_eq!(take(&mut p), Some(0x90), "then the APIC's request");
    }

    // Reading the 8259's IRR, ISR or mask changes nothing, so it needs no
    // routing; a read after a poll command is the acknowledge, and routes:
    // INTR drops at once.
    #[test]
    fn a_poll_read_of_the_8259_routes_where_a_register_read_needs_not() {
        let mut p = with_pics(0xFE, 0xFF);
        p.irq.pulse(0);
        p.route_all();
        assert!(p.intr());
        assert_eq!(p.io_read(0x21, 1, 0), 0xFE, "the mask");
        assert_eq!(p.io_read(0x20, 1, 0), 0x01, "IRR: IRQ 0");
        assert!(p.intr(), "still asked");
        p.io_write(0x20, 1, 0x0C, 0); // OCW3: poll
        assert_eq!(p.io_read(0x20, 1, 0), 0x80, "IRQ 0, taken by the poll");
        assert!(!p.intr(), "routed at the read");
        assert_eq!(take(&mut p), None);
    }

    // Cluster destinations name a cluster and CPUs in it; only 0xFF is
    // everyone (QEMU's and KVM's reading of the SDM).
    #[test]
    fn cluster_destinations_match_cluster_and_member() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0xE0, 0x0FFF_FFFF, 0); // cluster model
        wr(&mut p, 0xD0, 0x21 << 24, 0); // cluster 2, member 1
        let lapic = &p.irq.lapic;
        assert!(lapic.is_destination(0x21, true));
        assert!(lapic.is_destination(0x23, true), "member bit 0 in cluster 2");
        assert!(!lapic.is_destination(0x31, true), "another cluster");
        assert!(!lapic.is_destination(0xF1, true), "0xF is no broadcast cluster");
        assert!(lapic.is_destination(0xFF, true));
    }

    // Code fetched from a device's window reads what is under it and never
    // reaches the registers (whose reads can have effects).
    #[test]
    fn instruction_fetches_never_reach_device_registers() {
        let mut p = Platform::new(2 << 20, 0);
        let mut bytes = [0u8; 4];
        p.fetch_phys(LAPIC + 0x2F0, &mut bytes); // an illegal register
        assert_eq!(bytes, [0xFF; 4]);
        wr(&mut p, 0x280, 0, 0);
        assert_eq!(rd(&mut p, 0x280), 0, "no error was logged");
    }

    #[test]
    fn one_shot_timer_fires_once_at_its_exact_tick() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0x3E0, 0x0B, 0); // divide by 1
        wr(&mut p, 0x320, 0x31, 0);
        wr(&mut p, 0x380, 1000, 500);
        assert_eq!(p.next_timer_deadline(), Some(1500));
        assert_eq!(p.read_phys(LAPIC + 0x390, 4, 700), 800);
        p.advance_timers(1499);
        assert_eq!(take(&mut p), None);
        p.advance_timers(1500);
        assert_eq!(take(&mut p), Some(0x31));
        assert_eq!(p.read_phys(LAPIC + 0x390, 4, 1600), 0);
        assert_eq!(p.next_timer_deadline(), None);
    }

    #[test]
    fn periodic_timer_reloads_and_the_divider_scales_it() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0x3E0, 0x03, 0); // divide by 16
        wr(&mut p, 0x320, (1 << 17) | 0x32, 0);
        wr(&mut p, 0x380, 100, 0);
        for k in 1..=3u64 {
            assert_eq!(p.next_timer_deadline(), Some(k * 1600));
            p.advance_timers(k * 1600);
            assert_eq!(take(&mut p), Some(0x32));
            eoi(&mut p);
        }
        assert_eq!(p.read_phys(LAPIC + 0x390, 4, 3 * 1600 + 16 * 30), 70);
        // Masked, it counts on and requests nothing.
        wr(&mut p, 0x320, (1 << 17) | (1 << 16) | 0x32, 0);
        p.advance_timers(4 * 1600);
        assert_eq!(take(&mut p), None);
        assert_eq!(p.next_timer_deadline(), Some(5 * 1600));
    }

    #[test]
    fn tsc_deadline_timer_fires_at_its_tick_and_disarms() {
        let mut p = Platform::new(2 << 20, 0);
        wr(&mut p, 0x320, (2 << 17) | 0x33, 0);
        wr(&mut p, 0x380, 1000, 0);
        assert_eq!(p.next_timer_deadline(), None, "initial count is ignored in this mode");
        assert!(p.apic_msr_write(0x6E0, 123_450, 12_345));
        assert_eq!(p.next_timer_deadline(), Some(12_345));
        p.advance_timers(12_345);
        assert_eq!(take(&mut p), Some(0x33));
        assert_eq!(p.apic_msr_read(0x6E0), Some(0), "the MSR reads zero once it fired");
        assert_eq!(p.next_timer_deadline(), None);
    }

    #[test]
    fn pic_interrupts_pass_through_lint0_until_it_is_masked() {
        let mut p = with_pics(0xFE, 0xFF);
        p.irq.pulse(0);
        assert_eq!(take(&mut p), Some(0x20), "virtual wire");
        p.io_write(0x20, 1, 0x20, 0);
        wr(&mut p, 0x350, 0x1_8700, 0);
        p.irq.pulse(0);
        assert_eq!(take(&mut p), None, "LINT0 masked");
        // A software-disabled APIC masks every LVT, LINT0 too; turning the
        // APIC off altogether wires INTR straight to the CPU again.
        wr(&mut p, 0x350, 0x8700, 0);
        wr(&mut p, 0xF0, 0xFF, 0);
        assert_eq!(rd(&mut p, 0x350), 0x1_8700);
        assert_eq!(take(&mut p), None);
        assert!(p.apic_msr_write(0x1B, 0xFEE0_0100, 0));
        assert_eq!(take(&mut p), Some(0x20));
        assert_eq!(p.read_phys(LAPIC + 0x30, 4, 0), 0xFFFF_FFFF, "the window is gone");
        assert!(!p.apic_msr_write(0x1B, 0x1_FEE0_0900, 0), "reserved bits #GP");
    }

    #[test]
    fn the_window_moves_with_the_base_msr() {
        let mut p = Platform::new(2 << 20, 0);
        p.write_phys(0x10_0000, 4, 0x1234_5678, 0);
        assert!(p.apic_msr_write(0x1B, 0x10_0900, 0));
        assert_eq!(
            p.read_phys(0x10_0030, 4, 0),
            0x0005_0014,
            "the APIC hides the RAM under it"
        );
        assert_eq!(p.read_phys(LAPIC + 0x30, 4, 0), 0xFFFF_FFFF);
        assert!(p.apic_msr_write(0x1B, 0xFEE0_0900, 0));
        assert_eq!(p.read_phys(0x10_0000, 4, 0), 0x1234_5678);
    }

    #[test]
    fn the_io_apic_routes_the_pit_on_pin_2_and_edges_once() {
        let mut p = with_pics(0xFF, 0xFF);
        ioapic_route(&mut p, 2, 0x30);
        p.irq.pulse(0);
        assert_eq!(take(&mut p), Some(0x30));
        eoi(&mut p);
        assert_eq!(take(&mut p), None, "an edge is one message");
        p.irq.pulse(0);
        assert_eq!(take(&mut p), Some(0x30));
    }

    #[test]
    fn a_level_pin_is_in_service_until_eoi_and_sends_again_while_asserted() {
        let mut p = with_pics(0xFF, 0xFF);
        // IRQ 10: no device drives it, so only the test moves it.
        ioapic_route(&mut p, 10, (1 << 15) | 0x34);
        p.irq.set_line(IrqLine { irq: 10, level: true });
        assert_eq!(take(&mut p), Some(0x34));
        assert_eq!(rd(&mut p, 0x180 + 0x10) & (1 << 20), 1 << 20, "TMR: level");
        p.write_phys(IOAPIC, 4, 0x10 + 20, 0);
        assert_ne!(p.read_phys(IOAPIC + 0x10, 4, 0) & (1 << 14), 0, "remote IRR");
        p.irq.set_line(IrqLine { irq: 10, level: true });
        assert_eq!(take(&mut p), None, "in service: no second message");
        eoi(&mut p);
        assert_eq!(take(&mut p), Some(0x34), "still asserted after the EOI");
        p.irq.set_line(IrqLine { irq: 10, level: false });
        eoi(&mut p);
        assert_eq!(take(&mut p), None);
        assert_eq!(p.read_phys(IOAPIC + 0x10, 4, 0) & (1 << 14), 0);
        // Version 0x20's EOI register clears remote IRR by vector too.
        p.irq.set_line(IrqLine { irq: 10, level: true });
        assert_eq!(take(&mut p), Some(0x34));
        p.irq.set_line(IrqLine { irq: 10, level: false });
        p.write_phys(IOAPIC + 0x40, 4, 0x34, 0);
        p.route_all();
        assert_eq!(p.read_phys(IOAPIC + 0x10, 4, 0) & (1 << 14), 0, "the EOI register");
    }

    #[test]
    fn io_apic_messages_for_another_cpu_are_dropped() {
        let mut p = with_pics(0xFF, 0xFF);
        p.write_phys(IOAPIC, 4, 0x10 + 2, 0);
        p.write_phys(IOAPIC + 0x10, 4, 0x31, 0);
        p.write_phys(IOAPIC, 4, 0x11 + 2, 0);
        p.write_phys(IOAPIC + 0x10, 4, 3 << 24, 0);
        p.route_all();
        p.irq.pulse(1);
        assert_eq!(take(&mut p), None, "physical destination 3 is nobody");
    }
}
