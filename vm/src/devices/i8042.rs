//! The PC/AT keyboard controller (Intel 8042 running the IBM keyboard
//! controller firmware), after the IBM PC/AT Technical Reference ("Keyboard
//! controller" commands and status register) and the IBM PS/2 Hardware
//! Interface Technical Reference for the auxiliary (mouse) port and the
//! later commands (0xA7-0xA9, 0xD2-0xD4). Data port 0x60, status/command
//! port 0x64.
//!
//! It is here for the A20 gate, the reset line, and so that guests probing
//! the keyboard and the AUX port find what they would on a PC: an idle MF2
//! keyboard that answers its commands (0xFF reset -> 0xFA 0xAA, 0xF2
//! identify -> 0xFA 0xAB 0x83, or 0x41 through the controller's
//! translation) but never sends scancodes, and an AUX port with nothing
//! plugged in (its loopback, 0xD3, works; a byte for the device, 0xD4,
//! comes back as 0xFE with the time-out bit, as from a port whose device
//! does not clock). IRQ 1 is raised while a keyboard byte waits and command
//! byte bit 0 is set, IRQ 12 while an AUX byte waits and bit 1 is set.
//!
//! The machine starts without firmware, so the controller starts as a PC's
//! firmware leaves it (SeaBIOS under QEMU: command byte 0x61, translation
//! and the keyboard interrupt on, the AUX port disabled).

use super::IrqLine;
use crate::snapshot::Snapshot;

// Status register bits.
const ST_OBF: u8 = 0x01;
const ST_SYS: u8 = 0x04;
const ST_CMD: u8 = 0x08;
/// Keyboard inhibit switch: 1 = not inhibited.
const ST_UNLOCKED: u8 = 0x10;
/// The byte in the output buffer came from the AUX port.
const ST_AUX: u8 = 0x20;
/// General time-out: the device did not answer.
const ST_TIMEOUT: u8 = 0x40;

// Command byte bits.
const CB_KBD_INT: u8 = 0x01;
const CB_AUX_INT: u8 = 0x02;
const CB_SYS: u8 = 0x04;
const CB_KBD_DISABLE: u8 = 0x10;
const CB_AUX_DISABLE: u8 = 0x20;
/// Translate the keyboard's set-2 codes to set 1.
const CB_TRANSLATE: u8 = 0x40;

/// The command byte a PC's firmware leaves (SeaBIOS: translate, keyboard
/// interrupt on, AUX port disabled).
const CB_AFTER_FIRMWARE: u8 = CB_TRANSLATE | CB_AUX_DISABLE | CB_KBD_INT;

// Output port bits.
const OP_RESET: u8 = 0x01; // active low: 0 resets the CPU
const OP_A20: u8 = 0x02;

/// Output buffer depth. The real controller holds one byte; a short queue
/// keeps multi-byte keyboard answers (0xFA 0xAB 0x41) in order.
const OUT_QUEUE: usize = 16;

/// A byte waiting in the output buffer, with where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct OutByte {
    pub byte: u8,
    /// From the AUX port (status bit 5, IRQ 12).
    pub aux: bool,
    /// The device did not answer (status bit 6).
    pub timeout: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct I8042 {
    /// Bytes waiting in the output buffer, oldest first.
    pub out_queue: Vec<OutByte>,
    /// The last byte read from port 0x60 (re-read when the buffer is empty).
    pub last_out: u8,
    /// Controller RAM 0x00-0x1F; byte 0 is the command byte.
    pub ram: [u8; 32],
    /// Status bit 3: the last write was to the command port.
    pub last_was_command: bool,
    /// A command waiting for its data byte on port 0x60.
    pub pending_cmd: Option<u8>,
    /// The keyboard waits for the argument of its last command.
    pub kbd_wants_argument: bool,
    /// Output port (bit 0 reset, bit 1 A20).
    pub outport: u8,
    pub reset_request: bool,
}

/// Saved state of an [`I8042`]: its full register state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    pub i8042: I8042,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// As a PC's firmware leaves it: command byte 0x61, A20 enabled, the
    /// last write a command.
    pub fn new() -> Self {
        let mut ram = [0; 32];
        ram[0] = CB_AFTER_FIRMWARE;
        I8042 {
            out_queue: Vec::new(),
            last_out: 0,
            ram,
            last_was_command: true,
            pending_cmd: None,
            kbd_wants_argument: false,
            outport: OP_RESET | OP_A20,
            reset_request: false,
        }
    }

    fn command_byte(&self) -> u8 {
        self.ram[0]
    }

    fn push_from(&mut self, byte: u8, aux: bool, timeout: bool) {
        if self.out_queue.len() < OUT_QUEUE {
            self.out_queue.push(OutByte { byte, aux, timeout });
        }
    }

    /// A byte from the controller itself or the keyboard.
    fn push(&mut self, byte: u8) {
        self.push_from(byte, false, false);
    }

    pub fn status(&self) -> u8 {
        let mut s = ST_UNLOCKED;
        if let Some(head) = self.out_queue.first() {
            s |= ST_OBF;
            if head.aux {
                s |= ST_AUX;
            }
            if head.timeout {
                s |= ST_TIMEOUT;
            }
        }
        if self.command_byte() & CB_SYS != 0 {
            s |= ST_SYS;
        }
        if self.last_was_command {
            s |= ST_CMD;
        }
        s
    }

    pub fn io_read(&mut self, port: u16) -> u8 {
        if port & 4 != 0 {
            return self.status();
        }
        if !self.out_queue.is_empty() {
            self.last_out = self.out_queue.remove(0).byte;
        }
        self.last_out
    }

    pub fn io_write(&mut self, port: u16, value: u8) {
        if port & 4 != 0 {
            self.last_was_command = true;
            self.command(value);
        } else {
            self.last_was_command = false;
            self.data(value);
        }
    }

    fn command(&mut self, cmd: u8) {
        // A new command abandons one still waiting for its data byte.
        self.pending_cmd = None;
        match cmd {
            0x20..=0x3F => self.push(self.ram[usize::from(cmd & 0x1F)]),
            0x60..=0x7F | 0xD1..=0xD4 => self.pending_cmd = Some(cmd),
            0xA7 => self.ram[0] |= CB_AUX_DISABLE,
            0xA8 => self.ram[0] &= !CB_AUX_DISABLE,
            // Interface tests: the clock and data lines are fine.
            0xA9 | 0xAB => self.push(0x00),
            0xAA => {
                self.ram[0] |= CB_SYS;
                self.push(0x55);
            }
            0xAD => self.ram[0] |= CB_KBD_DISABLE,
            0xAE => self.ram[0] &= !CB_KBD_DISABLE,
            // Input port: bit 7 = keyboard not inhibited.
            0xC0 => self.push(0x80),
            0xD0 => self.push(self.outport),
            0xDD => self.outport &= !OP_A20,
            0xDF => self.outport |= OP_A20,
            // Test inputs: both clock and data low.
            0xE0 => self.push(0x00),
            // Pulse output bits 0-3 low where the command's bit is 0; only
            // bit 0 (reset) has an effect.
            0xF0..=0xFF if cmd & 1 == 0 => self.reset_request = true,
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending_cmd.take() {
            Some(c @ 0x60..=0x7F) => self.ram[usize::from(c & 0x1F)] = value,
            Some(0xD1) => {
                if value & OP_RESET == 0 {
                    self.reset_request = true;
                }
                // The reset line is a request here, not a level held low.
                self.outport = value | OP_RESET;
            }
            // Write keyboard output buffer: as if the keyboard sent it.
            Some(0xD2) => self.push(value),
            // Write AUX output buffer: as if the AUX device sent it.
            Some(0xD3) => self.push_from(value, true, false),
            // Write to the AUX device: nothing is plugged in to answer.
            Some(0xD4) => self.push_from(0xFE, true, true),
            Some(_) => {}
            None => self.keyboard(value),
        }
    }

    /// A byte sent to the keyboard (an idle MF2 keyboard).
    fn keyboard(&mut self, value: u8) {
        if std::mem::take(&mut self.kbd_wants_argument) {
            // LED bits, a scancode set, a typematic rate.
            self.push(0xFA);
            return;
        }
        match value {
            0xFF => {
                self.push(0xFA);
                self.push(0xAA);
            }
            0xEE => self.push(0xEE),
            0xF2 => {
                self.push(0xFA);
                self.push(0xAB);
                // The controller translates the second ID byte with the codes.
                self.push(if self.command_byte() & CB_TRANSLATE != 0 {
                    0x41
                } else {
                    0x83
                });
            }
            0xED | 0xF0 | 0xF3 => {
                self.kbd_wants_argument = true;
                self.push(0xFA);
            }
            _ => self.push(0xFA),
        }
    }

    /// Output port bit 1.
    pub fn a20(&self) -> bool {
        self.outport & OP_A20 != 0
    }

    /// Whether the guest asked for a CPU reset since the last call.
    pub fn take_reset_request(&mut self) -> bool {
        std::mem::take(&mut self.reset_request)
    }

    /// IRQ 1: a keyboard byte waits with keyboard interrupts enabled.
    pub fn irq(&self) -> IrqLine {
        let head = self.out_queue.first();
        IrqLine {
            irq: 1,
            level: head.is_some_and(|b| !b.aux) && self.command_byte() & CB_KBD_INT != 0,
        }
    }

    /// Both lines: IRQ 1 and IRQ 12.
    pub fn irq_lines(&self) -> [IrqLine; 2] {
        [self.irq(), self.aux_irq()]
    }

    /// IRQ 12: an AUX byte waits with AUX interrupts enabled.
    pub fn aux_irq(&self) -> IrqLine {
        let head = self.out_queue.first();
        IrqLine {
            irq: 12,
            level: head.is_some_and(|b| b.aux) && self.command_byte() & CB_AUX_INT != 0,
        }
    }
}

impl Snapshot for I8042 {
    const SECTION: &'static str = "i8042";
    const VERSION: u16 = 2;
    type State = I8042State;

    fn save(&self) -> I8042State {
        I8042State { i8042: self.clone() }
    }

    fn restore(&mut self, s: &I8042State) {
        *self = s.i8042.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_test_and_command_byte() {
        let mut k = I8042::new();
        k.io_write(0x64, 0x20);
        assert_eq!(k.io_read(0x60), 0x61, "as the firmware leaves it");
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x00);
        assert_eq!(k.io_read(0x64) & (ST_OBF | ST_SYS), 0);
        k.io_write(0x64, 0xAA);
        assert_eq!(k.io_read(0x64) & (ST_OBF | ST_SYS | ST_CMD), ST_OBF | ST_SYS | ST_CMD);
        assert_eq!(k.io_read(0x60), 0x55);
        assert_eq!(k.io_read(0x64) & ST_OBF, 0);
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x65);
        assert_eq!(k.io_read(0x64) & ST_CMD, 0);
        k.io_write(0x64, 0x20);
        assert_eq!(k.io_read(0x60), 0x65);
        k.io_write(0x64, 0xAB);
        assert_eq!(k.io_read(0x60), 0x00);
    }

    #[test]
    fn port_enable_bits() {
        let mut k = I8042::new();
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x00);
        k.io_write(0x64, 0xAD);
        k.io_write(0x64, 0xA7);
        k.io_write(0x64, 0x20);
        assert_eq!(k.io_read(0x60), 0x30);
        k.io_write(0x64, 0xAE);
        k.io_write(0x64, 0xA8);
        k.io_write(0x64, 0x20);
        assert_eq!(k.io_read(0x60), 0x00);
    }

    #[test]
    fn a20_via_output_port() {
        let mut k = I8042::new();
        assert!(k.a20());
        k.io_write(0x64, 0xD1);
        k.io_write(0x60, 0xDD);
        assert!(!k.a20());
        assert!(!k.take_reset_request());
        k.io_write(0x64, 0xD0);
        assert_eq!(k.io_read(0x60), 0xDD);
        k.io_write(0x64, 0xD1);
        k.io_write(0x60, 0xDF);
        assert!(k.a20());
        k.io_write(0x64, 0xDD);
        assert!(!k.a20());
        k.io_write(0x64, 0xDF);
        assert!(k.a20());
        k.io_write(0x64, 0xFF); // pulse nothing
        assert!(k.a20());
        assert!(!k.take_reset_request());
    }

    #[test]
    fn reset_requests() {
        let mut k = I8042::new();
        k.io_write(0x64, 0xFE);
        assert!(k.take_reset_request());
        assert!(!k.take_reset_request());
        k.io_write(0x64, 0xD1);
        k.io_write(0x60, 0x02);
        assert!(k.take_reset_request());
        assert!(k.a20());
        k.io_write(0x64, 0xF0);
        assert!(k.take_reset_request());
    }

    #[test]
    fn idle_keyboard_answers() {
        let mut k = I8042::new();
        k.io_write(0x60, 0xFF);
        assert_eq!(k.io_read(0x60), 0xFA);
        assert_eq!(k.io_read(0x60), 0xAA);
        assert_eq!(k.io_read(0x64) & ST_OBF, 0);
        assert_eq!(k.io_read(0x60), 0xAA, "empty buffer re-reads the last byte");
        // Identify: an MF2 keyboard, its second byte translated.
        k.io_write(0x60, 0xF2);
        assert_eq!((k.io_read(0x60), k.io_read(0x60), k.io_read(0x60)), (0xFA, 0xAB, 0x41));
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x01);
        k.io_write(0x60, 0xF2);
        assert_eq!((k.io_read(0x60), k.io_read(0x60), k.io_read(0x60)), (0xFA, 0xAB, 0x83));
        // A command's argument is acknowledged, not taken for a command.
        k.io_write(0x60, 0xED);
        k.io_write(0x60, 0xF2);
        assert_eq!((k.io_read(0x60), k.io_read(0x60)), (0xFA, 0xFA));
        assert_eq!(k.io_read(0x64) & ST_OBF, 0);
        k.io_write(0x60, 0xEE);
        assert_eq!(k.io_read(0x60), 0xEE);
    }

    #[test]
    fn irq1_follows_obf_and_enable() {
        let mut k = I8042::new();
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x00);
        k.io_write(0x60, 0xF4);
        assert!(!k.irq().level, "interrupts disabled in the command byte");
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x01);
        assert_eq!(k.irq(), IrqLine { irq: 1, level: true });
        let _ = k.io_read(0x60);
        assert!(!k.irq().level);
        k.io_write(0x64, 0xD2);
        k.io_write(0x60, 0x1C);
        assert!(k.irq().level);
        assert!(!k.aux_irq().level);
        assert_eq!(k.io_read(0x60), 0x1C);
    }

    #[test]
    fn aux_loopback_and_an_empty_aux_port() {
        let mut k = I8042::new();
        // Enable the AUX port and its interrupt, as Linux's probe does.
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x43);
        k.io_write(0x64, 0xD3);
        k.io_write(0x60, 0x5A);
        assert_eq!(k.io_read(0x64) & (ST_OBF | ST_AUX | ST_TIMEOUT), ST_OBF | ST_AUX);
        assert_eq!(k.aux_irq(), IrqLine { irq: 12, level: true });
        assert!(!k.irq().level, "an AUX byte is not the keyboard's");
        assert_eq!(k.io_read(0x60), 0x5A);
        assert!(!k.aux_irq().level);
        // No mouse: a byte for it times out.
        k.io_write(0x64, 0xD4);
        k.io_write(0x60, 0xFF);
        assert_eq!(
            k.io_read(0x64) & (ST_OBF | ST_AUX | ST_TIMEOUT),
            ST_OBF | ST_AUX | ST_TIMEOUT
        );
        assert_eq!(k.io_read(0x60), 0xFE);
        // The next data byte goes to the keyboard again.
        k.io_write(0x60, 0xF5);
        assert_eq!(k.io_read(0x64) & ST_AUX, 0);
        assert_eq!(k.io_read(0x60), 0xFA);
    }

    #[test]
    fn arbitrary_access_does_not_panic() {
        let mut k = I8042::new();
        let mut x: u32 = 3;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let port = if x & 0x100 != 0 { 0x64 } else { 0x60 };
            if x & 1 == 0 {
                k.io_write(port, (x >> 16) as u8);
            } else {
                let _ = k.io_read(port);
            }
            assert!(k.out_queue.len() <= OUT_QUEUE);
        }
    }

    #[test]
    fn save_restore_roundtrip() {
        let mut k = I8042::new();
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x47);
        k.io_write(0x60, 0xFF);
        k.io_write(0x64, 0xD1);
        let s = k.save();
        let mut j = I8042::new();
        j.restore(&s);
        assert_eq!(j, k);
        j.io_write(0x60, 0x01);
        k.io_write(0x60, 0x01);
        assert_eq!(j.take_reset_request(), k.take_reset_request());
        assert_eq!(j.io_read(0x60), k.io_read(0x60));
    }
}
