//! A 16550A serial port, after the National Semiconductor PC16550D datasheet
//! ("PC16550D Universal Asynchronous Receiver/Transmitter with FIFOs"),
//! wired as on the PC: the IRQ line reaches the PIC only while MCR.OUT2 is
//! set (the PC board gates the INTR pin with the OUT2 output).
//!
//! Transmission is instantaneous: a byte written to THR goes straight to the
//! host output buffer, so THR and the transmitter are always empty again
//! (LSR.THRE and LSR.TEMT stay set) and the THRE interrupt re-arms at once.
//! Reception comes from the host through [`Uart::receive`] into the 16-byte
//! RX FIFO (1 byte deep when FIFOs are off). Data below the FIFO trigger
//! level raises the character-timeout indication immediately rather than
//! after four character times, since there is no line timing to wait for.
//! No line errors (parity, framing, break) ever occur; overrun does.

use super::IrqLine;
use crate::snapshot::Snapshot;

const RX_FIFO: usize = 16;

// IER bits.
const IER_RDI: u8 = 0x01;
const IER_THRI: u8 = 0x02;
const IER_RLSI: u8 = 0x04;
const IER_MSI: u8 = 0x08;

// IIR interrupt identifications, highest priority first.
const IIR_NONE: u8 = 0x01;
const IIR_RLS: u8 = 0x06;
const IIR_RDA: u8 = 0x04;
const IIR_TIMEOUT: u8 = 0x0C;
const IIR_THRE: u8 = 0x02;
const IIR_MODEM: u8 = 0x00;

// MCR bits.
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;

// LSR bits.
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

/// Modem inputs when not in loopback: the host side is always connected and
/// ready (DCD, DSR, CTS), so flow control never stalls the guest.
const MSR_HOST_LINES: u8 = 0xB0;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Uart {
    /// ISA IRQ the port is wired to.
    pub irq_num: u8,
    /// RX FIFO ring (only `rx_len` bytes from `rx_head` are valid).
    pub rx: [u8; RX_FIFO],
    pub rx_head: u8,
    pub rx_len: u8,
    pub ier: u8,
    pub lcr: u8,
    pub mcr: u8,
    pub scr: u8,
    pub dll: u8,
    pub dlm: u8,
    /// FCR bit 0.
    pub fifo_enabled: bool,
    /// RX FIFO trigger level in bytes (1, 4, 8 or 14), from FCR bits 7-6.
    pub rx_trigger: u8,
    /// LSR.OE, cleared by reading LSR.
    pub overrun: bool,
    /// THR-empty interrupt pending (cleared by reading IIR when it is the
    /// reported source, or by writing THR, which here empties at once).
    pub thr_int: bool,
    /// MSR bits 7-4: current modem input lines.
    pub msr_lines: u8,
    /// MSR bits 3-0: delta bits, cleared by reading MSR.
    pub msr_delta: u8,
    /// Transmitted bytes not yet drained by the host.
    pub output: Vec<u8>,
    /// A THR write cleared and re-raised the THRE interrupt within one
    /// access; the platform turns this into a low-high pulse on the line.
    pub thre_retriggered: bool,
}

/// Saved state of a [`Uart`]: its full register state, including
/// undrained output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct UartState {
    pub uart: Uart,
}

impl Uart {
    pub fn new(irq: u8) -> Self {
        Uart {
            irq_num: irq,
            rx: [0; RX_FIFO],
            rx_head: 0,
            rx_len: 0,
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            // 115200 / 12 = 9600 baud; the datasheet leaves it undefined.
            dll: 0x0C,
            dlm: 0,
            fifo_enabled: false,
            rx_trigger: 1,
            overrun: false,
            thr_int: false,
            msr_lines: MSR_HOST_LINES,
            msr_delta: 0,
            output: Vec::new(),
            thre_retriggered: false,
        }
    }

    fn dlab(&self) -> bool {
        self.lcr & 0x80 != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled {
            RX_FIFO
        } else {
            1
        }
    }

    fn push_rx(&mut self, byte: u8) -> bool {
        if usize::from(self.rx_len) >= self.rx_capacity() {
            // The new character is lost; the FIFO keeps its contents.
            self.overrun = true;
            return false;
        }
        let idx = (usize::from(self.rx_head) + usize::from(self.rx_len)) % RX_FIFO;
        self.rx[idx] = byte;
        self.rx_len += 1;
        true
    }

    fn pop_rx(&mut self) -> Option<u8> {
        if self.rx_len == 0 {
            return None;
        }
        let b = self.rx[usize::from(self.rx_head) % RX_FIFO];
        self.rx_head = ((usize::from(self.rx_head) + 1) % RX_FIFO) as u8;
        self.rx_len -= 1;
        Some(b)
    }

    fn clear_rx(&mut self) {
        self.rx_head = 0;
        self.rx_len = 0;
    }

    /// The highest-priority pending interrupt, as IIR bits 3-0.
    fn interrupt_id(&self) -> u8 {
        let data_ready = self.rx_len > 0;
        let at_trigger = !self.fifo_enabled || self.rx_len >= self.rx_trigger;
        if self.ier & IER_RLSI != 0 && self.overrun {
            IIR_RLS
        } else if self.ier & IER_RDI != 0 && data_ready && at_trigger {
            IIR_RDA
        } else if self.ier & IER_RDI != 0 && data_ready {
            IIR_TIMEOUT
        } else if self.ier & IER_THRI != 0 && self.thr_int {
            IIR_THRE
        } else if self.ier & IER_MSI != 0 && self.msr_delta != 0 {
            IIR_MODEM
        } else {
            IIR_NONE
        }
    }

    fn lsr(&self) -> u8 {
        let mut v = LSR_THRE | LSR_TEMT;
        if self.rx_len > 0 {
            v |= LSR_DR;
        }
        if self.overrun {
            v |= LSR_OE;
        }
        v
    }

    /// Recompute the modem input lines (they follow MCR in loopback) and
    /// latch the delta bits.
    fn update_modem_lines(&mut self) {
        let new = if self.loopback() {
            let m = self.mcr;
            // DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
            ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
        } else {
            MSR_HOST_LINES
        };
        let changed = new ^ self.msr_lines;
        if changed & 0x10 != 0 {
            self.msr_delta |= 0x01;
        }
        if changed & 0x20 != 0 {
            self.msr_delta |= 0x02;
        }
        // TERI: only the trailing edge of RI.
        if changed & 0x40 != 0 && new & 0x40 == 0 {
            self.msr_delta |= 0x04;
        }
        if changed & 0x80 != 0 {
            self.msr_delta |= 0x08;
        }
        self.msr_lines = new;
    }

    fn transmit(&mut self, byte: u8) {
        if self.loopback() {
            self.push_rx(byte);
        } else {
            self.output.push(byte);
        }
        // Writing THR clears the THRE interrupt; the byte leaves at once and
        // THR is empty again, which raises it anew: a fresh edge for the PIC.
        self.thre_retriggered = self.ier & IER_THRI != 0;
        self.thr_int = true;
    }

    /// Whether the last access re-raised THRE (see `thre_retriggered`).
    pub fn take_thre_retrigger(&mut self) -> bool {
        std::mem::take(&mut self.thre_retriggered)
    }

    pub fn io_read(&mut self, offset: u16) -> u8 {
        match offset & 7 {
            0 if self.dlab() => self.dll,
            0 => self.pop_rx().unwrap_or(0),
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => {
                let id = self.interrupt_id();
                if id == IIR_THRE {
                    self.thr_int = false;
                }
                id | if self.fifo_enabled { 0xC0 } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr();
                self.overrun = false;
                v
            }
            6 => {
                let v = self.msr_lines | self.msr_delta;
                self.msr_delta = 0;
                v
            }
            _ => self.scr,
        }
    }

    pub fn io_write(&mut self, offset: u16, value: u8) {
        match offset & 7 {
            0 if self.dlab() => self.dll = value,
            0 => self.transmit(value),
            1 if self.dlab() => self.dlm = value,
            1 => {
                let old = self.ier;
                self.ier = value & 0x0F;
                if (old ^ self.ier) & IER_THRI != 0 {
                    // Enabling THRI while THR is empty (always, here) raises
                    // the interrupt; disabling it drops the pending source.
                    self.thr_int = self.ier & IER_THRI != 0;
                }
            }
            2 => {
                let enable = value & 0x01 != 0;
                if enable != self.fifo_enabled {
                    // Switching FIFO mode resets the FIFOs.
                    self.clear_rx();
                }
                self.fifo_enabled = enable;
                if enable {
                    if value & 0x02 != 0 {
                        self.clear_rx();
                    }
                    // Bit 2 clears the TX FIFO, which is always empty here.
                    self.rx_trigger = [1, 4, 8, 14][usize::from(value >> 6)];
                }
            }
            3 => self.lcr = value,
            4 => {
                self.mcr = value & 0x1F;
                self.update_modem_lines();
            }
            7 => self.scr = value,
            // LSR and MSR writes are factory-test only.
            _ => {}
        }
    }

    /// The IRQ as the PIC sees it: INTR gated by OUT2. In loopback the OUT2
    /// pin is forced inactive (datasheet), so the PC's gate is closed too.
    pub fn irq(&self) -> IrqLine {
        let gate = self.mcr & MCR_OUT2 != 0 && !self.loopback();
        IrqLine {
            irq: self.irq_num,
            level: gate && self.interrupt_id() != IIR_NONE,
        }
    }

    /// Append transmitted bytes to `out`.
    pub fn drain_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Host input: one received character. False (and LSR.OE) when the
    /// receiver has no room; false without OE in loopback, where the serial
    /// input is disconnected.
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.loopback() {
            return false;
        }
        self.push_rx(byte)
    }

    /// Bytes the receiver can take now without overrun.
    pub fn rx_space(&self) -> usize {
        if self.loopback() {
            0
        } else {
            self.rx_capacity().saturating_sub(usize::from(self.rx_len))
        }
    }

    /// Character-timeout hook. Data below the trigger level already raises
    /// the timeout indication, so there is nothing left to do; kept so the
    /// platform may call it.
    pub fn rx_timeout(&mut self) {}
}

impl Snapshot for Uart {
    const SECTION: &'static str = "uart";
    const VERSION: u16 = 1;
    type State = UartState;

    fn save(&self) -> UartState {
        UartState { uart: self.clone() }
    }

    fn restore(&mut self, s: &UartState) {
        *self = s.uart.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's 8250 setup for a 115200 8N1 console with FIFOs and IRQs.
    fn linux_setup(u: &mut Uart) {
        u.io_write(3, 0x80);
        u.io_write(0, 0x01);
        u.io_write(1, 0x00);
        u.io_write(3, 0x03);
        u.io_write(2, 0xC7);
        u.io_write(4, 0x0B);
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let mut u = Uart::new(4);
        u.io_write(3, 0x80);
        u.io_write(0, 0x34);
        u.io_write(1, 0x12);
        assert_eq!((u.io_read(0), u.io_read(1)), (0x34, 0x12));
        u.io_write(3, 0x03);
        assert_eq!(u.io_read(1), 0, "IER, not DLM");
        u.io_write(7, 0xA5);
        assert_eq!(u.io_read(7), 0xA5);
        assert_eq!(u.io_read(5), 0x60);
        assert_eq!(u.io_read(2), 0x01);
    }

    #[test]
    fn transmit_goes_to_output() {
        let mut u = Uart::new(4);
        linux_setup(&mut u);
        for b in b"hi\n" {
            assert_ne!(u.io_read(5) & 0x20, 0);
            u.io_write(0, *b);
        }
        assert!(u.has_output());
        let mut out = Vec::new();
        u.drain_output(&mut out);
        assert_eq!(out, b"hi\n");
        assert!(!u.has_output());
    }

    #[test]
    fn thre_interrupt_cycle() {
        let mut u = Uart::new(4);
        linux_setup(&mut u);
        assert!(!u.irq().level);
        u.io_write(1, 0x02);
        assert_eq!(u.irq(), IrqLine { irq: 4, level: true });
        assert_eq!(u.io_read(2), 0xC2);
        assert!(!u.irq().level, "reading IIR clears THRE");
        assert_eq!(u.io_read(2), 0xC1);
        u.io_write(0, b'x');
        assert!(u.irq().level, "THR emptied again");
        u.io_write(1, 0x00);
        assert!(!u.irq().level);
    }

    #[test]
    fn out2_gates_irq() {
        let mut u = Uart::new(4);
        linux_setup(&mut u);
        u.io_write(4, 0x03); // DTR|RTS, no OUT2
        u.io_write(1, 0x02);
        assert!(!u.irq().level);
        assert_eq!(u.io_read(2) & 0x0F, 0x02, "pending in IIR nevertheless");
        u.io_write(1, 0x00);
        u.io_write(1, 0x02);
        u.io_write(4, 0x0B);
        assert!(u.irq().level);
    }

    #[test]
    fn receive_trigger_and_timeout() {
        let mut u = Uart::new(4);
        linux_setup(&mut u); // trigger 14
        u.io_write(1, 0x01);
        assert_eq!(u.rx_space(), 16);
        assert!(u.receive(b'a'));
        assert_eq!(u.io_read(2), 0xCC, "below trigger: character timeout");
        assert!(u.irq().level);
        for b in 1..14u8 {
            assert!(u.receive(b'a' + b));
        }
        assert_eq!(u.io_read(2), 0xC4, "trigger reached");
        let mut got = Vec::new();
        while u.io_read(5) & 1 != 0 {
            got.push(u.io_read(0));
        }
        assert_eq!(got, b"abcdefghijklmn");
        assert_eq!(u.io_read(2), 0xC1);
        assert!(!u.irq().level);
    }

    #[test]
    fn overrun_sets_oe_and_line_status_interrupt() {
        let mut u = Uart::new(4);
        linux_setup(&mut u);
        u.io_write(1, 0x05);
        for i in 0..16u8 {
            assert!(u.receive(i));
        }
        assert_eq!(u.rx_space(), 0);
        assert!(!u.receive(16));
        assert_eq!(u.io_read(2), 0xC6);
        assert_eq!(u.io_read(5), 0x63);
        assert_eq!(u.io_read(5), 0x61, "OE cleared by the read");
        assert_eq!(u.io_read(2), 0xC4);
        assert_eq!(u.io_read(0), 0, "oldest byte kept");
        // FCR clear-RX empties the FIFO.
        u.io_write(2, 0xC3);
        assert_eq!(u.io_read(5), 0x60);
    }

    #[test]
    fn non_fifo_mode_holds_one_byte() {
        let mut u = Uart::new(3);
        u.io_write(1, 0x01);
        u.io_write(4, 0x08);
        assert_eq!(u.rx_space(), 1);
        assert!(u.receive(7));
        assert!(!u.receive(8));
        assert_eq!(u.io_read(2), 0x04, "no FIFO bits, RX data available");
        assert_eq!(u.irq(), IrqLine { irq: 3, level: true });
        assert_eq!(u.io_read(0), 7);
    }

    #[test]
    fn loopback_like_linux_autoconfig() {
        let mut u = Uart::new(4);
        linux_setup(&mut u);
        u.io_write(4, 0x10 | 0x0A); // LOOP | OUT2 | RTS
        assert_eq!(u.io_read(6) & 0xF0, 0x90, "DCD|CTS");
        u.io_write(1, 0x01);
        u.io_write(0, 0x5A);
        assert_eq!(u.io_read(5) & 1, 1);
        assert!(!u.irq().level, "OUT2 pin inactive in loopback");
        assert!(!u.has_output());
        assert_eq!(u.io_read(0), 0x5A);
        assert_eq!(u.rx_space(), 0);
        assert!(!u.receive(1));
        u.io_write(4, 0x0B);
        assert_eq!(u.io_read(6), 0xB0 | 0x02, "DSR rose on leaving loopback");
        assert_eq!(u.io_read(6), 0xB0);
    }

    #[test]
    fn modem_status_interrupt() {
        let mut u = Uart::new(4);
        u.io_write(1, 0x08);
        u.io_write(4, 0x10 | 0x04); // loop, OUT1 -> RI
        u.io_write(4, 0x10 | 0x08); // RI falls, DCD rises (no OUT2 to the PIC)
        assert_eq!(u.io_read(2), 0x00);
        assert_eq!(u.io_read(6), 0x80 | 0x04 | 0x08 | 0x02 | 0x01);
        assert_eq!(u.io_read(2), 0x01);
    }

    #[test]
    fn arbitrary_access_does_not_panic() {
        let mut u = Uart::new(4);
        let mut x: u32 = 99;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let off = u16::from((x >> 8) as u8);
            let v = (x >> 16) as u8;
            match x & 3 {
                0 => u.io_write(off, v),
                1 => {
                    let _ = u.io_read(off);
                }
                _ => {
                    let _ = u.receive(v);
                }
            }
            assert!(usize::from(u.rx_len) <= RX_FIFO);
        }
    }

    #[test]
    fn save_restore_roundtrip() {
        let mut u = Uart::new(4);
        linux_setup(&mut u);
        u.io_write(1, 0x03);
        u.receive(b'q');
        u.io_write(0, b'z');
        let s = u.save();
        let mut v = Uart::new(3);
        v.restore(&s);
        assert_eq!(v, u);
        for off in [2u16, 5, 0, 2, 6] {
            assert_eq!(v.io_read(off), u.io_read(off));
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        u.drain_output(&mut a);
        v.drain_output(&mut b);
        assert_eq!(a, b);
    }
}
