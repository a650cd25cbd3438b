//! Small fixed-function ports:
//!
//! - [`DebugCon`]: the Bochs/QEMU debug console at 0xE9 (Bochs user manual,
//!   "port E9 hack"; QEMU isa-debugcon): writes print a byte, reads return
//!   0xE9 so guests can detect it.
//! - [`ExitDevice`]: QEMU's isa-debug-exit at 0xF4 (iosize 4): a write of
//!   `v` ends the machine with exit status `(v << 1) | 1`, as QEMU computes it.
//! - [`Port92`]: "System Control Port A" at 0x92 (IBM PS/2 Hardware Interface
//!   Technical Reference): bit 1 gates A20, writing bit 0 = 1 pulses a reset.

use super::IrqLine;
use crate::snapshot::Snapshot;
/// Debug console at port 0xE9.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DebugCon {
    /// Written bytes not yet drained by the host.
    pub output: Vec<u8>,
}

/// Saved state of a [`DebugCon`] (undrained output).
pub type DebugConState = DebugCon;

impl DebugCon {
    pub fn new() -> Self {
        DebugCon { output: Vec::new() }
    }

    /// Reads return the port number, the Bochs/QEMU presence signature.
    pub fn io_read(&mut self) -> u8 {
        0xE9
    }

    pub fn io_write(&mut self, value: u8) {
        self.output.push(value);
    }

    /// Append written bytes to `out`.
    pub fn drain_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }
}

/// Mask of an access of `size` bytes (0 counts as 1, above 4 as 4, so odd
/// sizes never panic).
fn size_mask(size: u8) -> u32 {
    match size {
        0 => 0xFF,
        1..=3 => (1u32 << (8 * u32::from(size))) - 1,
        _ => u32::MAX,
    }
}

/// QEMU isa-debug-exit at 0xF4.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExitDevice {
    pub status: Option<u32>,
}

/// Saved state of an [`ExitDevice`].
pub type ExitDeviceState = ExitDevice;

impl ExitDevice {
    pub fn new() -> Self {
        ExitDevice { status: None }
    }

    /// Reads float high, as on QEMU.
    pub fn io_read(&mut self, size: u8) -> u32 {
        size_mask(size)
    }

    /// Record the exit request. The shift drops bit 31 of a 32-bit value,
    /// matching QEMU's 32-bit arithmetic before it truncates to an exit code.
    pub fn io_write(&mut self, value: u32, size: u8) {
        self.status = Some(((value & size_mask(size)) << 1) | 1);
    }

    /// The exit status once the guest has written the port.
    pub fn exit_status(&self) -> Option<u32> {
        self.status
    }
}

/// System Control Port A at 0x92.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Port92 {
    /// The register as last written, bit 0 excluded.
    pub value: u8,
    pub reset_request: bool,
}

/// Saved state of a [`Port92`].
pub type Port92State = Port92;

impl Port92 {
    /// A20 starts off here; the platform ORs it with the i8042's A20 gate.
    pub fn new() -> Self {
        Port92 {
            value: 0,
            reset_request: false,
        }
    }

    pub fn io_read(&mut self) -> u8 {
        self.value
    }

    /// Bit 0 is a self-clearing reset pulse: it reads back as 0, so the
    /// usual read-modify-write to set A20 never resets the machine.
    pub fn io_write(&mut self, value: u8) {
        if value & 1 != 0 {
            self.reset_request = true;
        }
        self.value = value & !1;
    }

    pub fn a20(&self) -> bool {
        self.value & 0x02 != 0
    }

    /// Whether the guest asked for a reset since the last call.
    pub fn take_reset_request(&mut self) -> bool {
        std::mem::take(&mut self.reset_request)
    }
}

impl Snapshot for DebugCon {
    const SECTION: &'static str = "debugcon";
    const VERSION: u16 = 1;
    type State = DebugConState;

    fn save(&self) -> DebugConState {
        self.clone()
    }

    fn restore(&mut self, s: &DebugConState) {
        *self = s.clone();
    }
}

impl Snapshot for ExitDevice {
    const SECTION: &'static str = "exit";
    const VERSION: u16 = 1;
    type State = ExitDeviceState;

    fn save(&self) -> ExitDeviceState {
        self.clone()
    }

    fn restore(&mut self, s: &ExitDeviceState) {
        *self = s.clone();
    }
}

impl Snapshot for Port92 {
    const SECTION: &'static str = "port92";
    const VERSION: u16 = 1;
    type State = Port92State;

    fn save(&self) -> Port92State {
        self.clone()
    }

    fn restore(&mut self, s: &Port92State) {
        *self = s.clone();
    }
}

/// The PC's FPU error latch (the "FERR#/IGNNE#" logic of the PC/AT and
/// every chipset since): FERR# from the processor raises IRQ 13 and keeps
/// it up until software writes port 0xF0, which is how DOS-era handlers
/// acknowledge an x87 error when CR0.NE is clear. QEMU has the same latch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FpuErrorLatch {
    pub asserted: bool,
}

/// Saved state of an [`FpuErrorLatch`].
pub type FpuErrorLatchState = FpuErrorLatch;

/// The IRQ the latch drives.
pub const FPU_ERROR_IRQ: u8 = 13;

impl FpuErrorLatch {
    pub fn new() -> Self {
        FpuErrorLatch { asserted: false }
    }

    pub fn raise(&mut self) {
        self.asserted = true;
    }

    /// Any write to port 0xF0 clears the request.
    pub fn io_write(&mut self) {
        self.asserted = false;
    }

    pub fn irq(&self) -> IrqLine {
        IrqLine {
            irq: FPU_ERROR_IRQ,
            level: self.asserted,
        }
    }
}

impl Snapshot for FpuErrorLatch {
    const SECTION: &'static str = "ferr";
    const VERSION: u16 = 1;
    type State = FpuErrorLatchState;

    fn save(&self) -> FpuErrorLatchState {
        self.clone()
    }

    fn restore(&mut self, s: &FpuErrorLatchState) {
        *self = s.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugcon_prints_and_identifies() {
        let mut d = DebugCon::new();
        assert_eq!(d.io_read(), 0xE9);
        for b in b"ok\n" {
            d.io_write(*b);
        }
        assert!(d.has_output());
        let mut out = b">".to_vec();
        d.drain_output(&mut out);
        assert_eq!(out, b">ok\n");
        assert!(!d.has_output());
        let s = d.save();
        let mut e = DebugCon::new();
        e.restore(&s);
        assert_eq!(e, d);
    }

    #[test]
    fn exit_device_status() {
        let mut x = ExitDevice::new();
        assert_eq!(x.exit_status(), None);
        assert_eq!(x.io_read(4), u32::MAX);
        assert_eq!(x.io_read(1), 0xFF);
        x.io_write(0, 1);
        assert_eq!(x.exit_status(), Some(1));
        x.io_write(0x1234_5610, 1);
        assert_eq!(x.exit_status(), Some(0x21));
        x.io_write(0x0000_FFFF, 2);
        assert_eq!(x.exit_status(), Some(0x1FFFF));
        x.io_write(0x8000_0001, 4);
        assert_eq!(x.exit_status(), Some(3));
        x.io_write(7, 200);
        assert_eq!(x.exit_status(), Some(15));
        let s = x.save();
        let mut y = ExitDevice::new();
        y.restore(&s);
        assert_eq!(y.exit_status(), x.exit_status());
    }

    #[test]
    fn port92_a20_and_reset() {
        let mut p = Port92::new();
        assert!(!p.a20());
        let v = p.io_read();
        p.io_write(v | 0x02);
        assert!(p.a20());
        assert!(!p.take_reset_request());
        let v = p.io_read();
        assert_eq!(v, 0x02);
        p.io_write(v | 0x01);
        assert!(p.take_reset_request());
        assert!(!p.take_reset_request());
        assert_eq!(p.io_read(), 0x02, "reset bit reads back clear");
        let s = p.save();
        let mut q = Port92::new();
        q.restore(&s);
        assert_eq!(q, p);
        p.io_write(0x00);
        assert!(!p.a20());
    }
}
