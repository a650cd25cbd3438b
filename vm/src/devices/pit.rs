//! The PC's programmable interval timer, after the Intel 82C54 datasheet
//! (Intel order no. 231244): three 16-bit down-counters at 0x40-0x42, the
//! control word register at 0x43, and the channel 2 gate / output bits of
//! "System Control Port B" at 0x61 (IBM PC/AT technical reference).
//!
//! Nothing is incremented per instruction: every counter is a function of the
//! virtual clock. The input clock is 1_193_182 Hz of virtual time, so the
//! counter clock at virtual tick `now` is `now * 1_193_182 / NOMINAL_HZ`.
//!
//! Modes 0 (interrupt on terminal count), 2 (rate generator), 3 (square
//! wave) and 4 (software strobe) are modelled with their gate behaviour.
//! Modes 1 and 5 (hardware-triggered) start counting when the count is
//! written, like 0 and 4, and restart on a gate rising edge. A new count in
//! modes 2/3 takes effect at once instead of at the end of the current cycle.

use super::IrqLine;
use crate::snapshot::Snapshot;
use crate::time::NOMINAL_HZ;

/// Counter input clock of the PC's 8254.
pub const PIT_HZ: u64 = 1_193_182;

/// Virtual ticks per DRAM refresh toggle of port 0x61 bit 4 (15 µs).
const REFRESH_TICKS: u64 = NOMINAL_HZ * 15 / 1_000_000;

/// Counter clocks elapsed at virtual tick `now`.
pub fn pit_count(now: u64) -> u64 {
    // now * PIT_HZ / NOMINAL_HZ < now, so it always fits.
    (u128::from(now) * u128::from(PIT_HZ) / u128::from(NOMINAL_HZ)) as u64
}

/// The first virtual tick at which counter clock `p` has occurred.
fn tick_of_count(p: u64) -> Option<u64> {
    u64::try_from((u128::from(p) * u128::from(NOMINAL_HZ)).div_ceil(u128::from(PIT_HZ))).ok()
}

fn bcd_to_bin(v: u16) -> u32 {
    let mut out = 0u32;
    for shift in [12u32, 8, 4, 0] {
        out = out * 10 + u32::from((v >> shift) & 0xF);
    }
    out
}

fn bin_to_bcd(mut v: u32) -> u16 {
    let mut out = 0u16;
    for shift in [0u32, 4, 8, 12] {
        out |= ((v % 10) as u16) << shift;
        v /= 10;
    }
    out
}

/// One counter. All times are in counter clocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PitChannel {
    /// Mode field as written (0-7); 6 and 7 behave as 2 and 3.
    pub mode_bits: u8,
    /// Read/write access: 1 = LSB only, 2 = MSB only, 3 = LSB then MSB.
    pub access: u8,
    pub bcd: bool,
    /// Count register as last written (0 means the maximum count).
    pub count_reg: u16,
    pub gate: bool,
    /// A count has been written since the control word (status "null count"
    /// is its complement).
    pub loaded: bool,
    /// The counting element is decrementing.
    pub running: bool,
    /// Counter clock at which the current run started...
    pub start: u64,
    /// ...and the count at that moment.
    pub start_count: u32,
    /// The count shown while not running.
    pub frozen_count: u32,
    /// One-shot modes: terminal count was passed in an earlier run segment.
    pub tc_reached: bool,
    /// LSB of a two-byte count being written.
    pub write_lsb: Option<u8>,
    /// Next unlatched read in LSB-then-MSB access returns the MSB.
    pub read_msb_next: bool,
    /// Latched count (counter latch or read-back command).
    pub latch: Option<u16>,
    pub latch_msb_next: bool,
    /// Latched status byte (read-back command).
    pub status_latch: Option<u8>,
}

impl PitChannel {
    fn new() -> Self {
        PitChannel {
            mode_bits: 0,
            access: 3,
            bcd: false,
            count_reg: 0,
            gate: true,
            loaded: false,
            running: false,
            start: 0,
            start_count: 0,
            frozen_count: 0,
            tc_reached: false,
            write_lsb: None,
            read_msb_next: false,
            latch: None,
            latch_msb_next: false,
            status_latch: None,
        }
    }

    fn mode(&self) -> u8 {
        match self.mode_bits & 7 {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    fn modulus(&self) -> u32 {
        if self.bcd {
            10_000
        } else {
            65_536
        }
    }

    /// The initial count N, 1..=modulus.
    fn initial(&self) -> u32 {
        let n = if self.bcd {
            bcd_to_bin(self.count_reg)
        } else {
            u32::from(self.count_reg)
        };
        if n == 0 {
            self.modulus()
        } else {
            // Non-decimal nibbles in BCD mode can exceed the modulus.
            n.min(self.modulus())
        }
    }

    /// Cycle length in the periodic modes. A count of 1 is illegal there
    /// (datasheet); treat it as 2 so the output still has a rising edge.
    fn period(&self) -> u64 {
        u64::from(self.initial().max(2))
    }

    fn elapsed(&self, p: u64) -> u64 {
        p.saturating_sub(self.start)
    }

    /// Count in the counting element at counter clock `p` (binary, may be
    /// the modulus itself, which reads as 0).
    fn count_at(&self, p: u64) -> u32 {
        if !self.running {
            return self.frozen_count;
        }
        let e = self.elapsed(p);
        match self.mode() {
            2 => {
                let n = self.period();
                (n - e % n) as u32
            }
            3 => {
                // Decrements by two; the high half lasts (N+1)/2 clocks.
                let n = self.period();
                let phase = e % n;
                let high = n.div_ceil(2);
                let into_half = if phase < high { phase } else { phase - high };
                (n - 2 * into_half) as u32
            }
            // One-shot modes keep counting through zero, wrapping.
            _ => (i128::from(self.start_count) - i128::from(e)).rem_euclid(i128::from(self.modulus())) as u32,
        }
    }

    fn out_at(&self, p: u64) -> bool {
        let mode = self.mode();
        if !self.loaded {
            // After the control word: OUT low in mode 0, high otherwise.
            return mode != 0;
        }
        if !self.running {
            return match mode {
                0 | 1 => self.tc_reached,
                _ => true,
            };
        }
        let e = self.elapsed(p);
        let c = u64::from(self.start_count);
        match mode {
            0 | 1 => self.tc_reached || e >= c,
            4 | 5 => self.tc_reached || e != c,
            2 => {
                let n = self.period();
                e % n != n - 1
            }
            _ => {
                let n = self.period();
                e % n < n.div_ceil(2)
            }
        }
    }

    /// Rising edges of OUT in counter clocks (p0, p1].
    fn edges_in(&self, p0: u64, p1: u64) -> u64 {
        if !self.loaded || !self.running || p1 <= p0 || p1 <= self.start {
            return 0;
        }
        let (e0, e1) = (self.elapsed(p0), self.elapsed(p1));
        let c = u64::from(self.start_count);
        match self.mode() {
            0 | 1 => u64::from(!self.tc_reached && e0 < c && c <= e1),
            4 | 5 => u64::from(!self.tc_reached && e0 <= c && c < e1),
            _ => {
                let n = self.period();
                e1 / n - e0 / n
            }
        }
    }

    /// The first counter clock after `p` at which OUT rises.
    fn next_edge_after(&self, p: u64) -> Option<u64> {
        if !self.loaded || !self.running {
            return None;
        }
        let e0 = self.elapsed(p);
        let c = u64::from(self.start_count);
        let e = match self.mode() {
            0 | 1 if !self.tc_reached && e0 < c => c,
            4 | 5 if !self.tc_reached && e0 <= c => c + 1,
            2 | 3 => {
                let n = self.period();
                (e0 / n + 1).checked_mul(n)?
            }
            _ => return None,
        };
        self.start.checked_add(e)
    }

    /// Stop the counting element at `p`, remembering count and output.
    fn freeze(&mut self, p: u64) {
        if self.running {
            self.frozen_count = self.count_at(p);
            let e = self.elapsed(p);
            if matches!(self.mode(), 0 | 1 | 4 | 5) && e >= u64::from(self.start_count) {
                self.tc_reached = true;
            }
            self.running = false;
        }
    }

    fn set_gate(&mut self, level: bool, p: u64) {
        if level == self.gate {
            return;
        }
        self.gate = level;
        if !self.loaded || self.write_lsb.is_some() {
            return;
        }
        match (self.mode(), level) {
            // Gate low suspends counting; high resumes from the held count.
            (0 | 4, false) => self.freeze(p),
            (0 | 4, true) => {
                self.start = p;
                self.start_count = if self.frozen_count == 0 {
                    self.modulus()
                } else {
                    self.frozen_count
                };
                self.running = true;
            }
            // Gate low stops the cycle with OUT high; a rising edge restarts
            // it from the initial count.
            (2 | 3, false) => self.freeze(p),
            (_, true) => self.restart(p),
            (_, false) => {}
        }
    }

    /// Begin counting from the initial count at `p`.
    fn restart(&mut self, p: u64) {
        self.start = p;
        self.start_count = self.initial();
        self.tc_reached = false;
        self.running = true;
    }

    fn load(&mut self, value: u16, p: u64) {
        self.count_reg = value;
        self.loaded = true;
        self.tc_reached = false;
        self.frozen_count = self.initial();
        // Modes 1 and 5 are treated as triggered by the write itself.
        if self.gate || matches!(self.mode(), 1 | 5) {
            self.restart(p);
        } else {
            self.running = false;
        }
    }

    fn write_control(&mut self, value: u8) {
        self.access = (value >> 4) & 3;
        self.mode_bits = (value >> 1) & 7;
        self.bcd = value & 1 != 0;
        // A control word resets the counter's control logic: no count, no
        // latches, flip-flops at the LSB.
        self.loaded = false;
        self.running = false;
        self.tc_reached = false;
        self.write_lsb = None;
        self.read_msb_next = false;
        self.latch = None;
        self.latch_msb_next = false;
        self.status_latch = None;
    }

    fn encode(&self, count: u32) -> u16 {
        if self.bcd {
            bin_to_bcd(count % 10_000)
        } else {
            count as u16
        }
    }

    fn latch_count(&mut self, p: u64) {
        // A second latch before the first is read is ignored.
        if self.latch.is_none() {
            self.latch = Some(self.encode(self.count_at(p)));
            self.latch_msb_next = false;
        }
    }

    fn latch_status(&mut self, p: u64) {
        if self.status_latch.is_none() {
            self.status_latch = Some(
                (u8::from(self.out_at(p)) << 7)
                    | (u8::from(!self.loaded) << 6)
                    | (self.access << 4)
                    | (self.mode_bits << 1)
                    | u8::from(self.bcd),
            );
        }
    }

    fn read(&mut self, p: u64) -> u8 {
        if let Some(s) = self.status_latch.take() {
            return s;
        }
        if let Some(l) = self.latch {
            let [lo, hi] = l.to_le_bytes();
            return match self.access {
                2 => {
                    self.latch = None;
                    hi
                }
                3 if self.latch_msb_next => {
                    self.latch = None;
                    self.latch_msb_next = false;
                    hi
                }
                3 => {
                    self.latch_msb_next = true;
                    lo
                }
                _ => {
                    self.latch = None;
                    lo
                }
            };
        }
        let [lo, hi] = self.encode(self.count_at(p)).to_le_bytes();
        match self.access {
            2 => hi,
            3 => {
                self.read_msb_next = !self.read_msb_next;
                if self.read_msb_next {
                    lo
                } else {
                    hi
                }
            }
            _ => lo,
        }
    }

    fn write(&mut self, value: u8, p: u64) {
        match self.access {
            1 => self.load(u16::from(value), p),
            2 => self.load(u16::from(value) << 8, p),
            3 => match self.write_lsb.take() {
                Some(lo) => self.load(u16::from_le_bytes([lo, value]), p),
                None => {
                    if self.mode() == 0 {
                        // Mode 0: the first byte stops counting and drives
                        // OUT low at once.
                        self.freeze(p);
                        self.tc_reached = false;
                    }
                    self.write_lsb = Some(value);
                }
            },
            // Access 0 is only ever a latch command, never stored.
            _ => {}
        }
    }
}

/// The 8254 and port 0x61.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Pit {
    pub channels: [PitChannel; 3],
    /// Port 0x61 bits 0-3 as written (bit 0 = channel 2 gate, bit 1 =
    /// speaker data enable).
    pub port61: u8,
    /// Virtual tick of the last [`Pit::advance`] (or write).
    pub last_now: u64,
    /// Rising edges of OUT0 not yet reported by `advance`.
    pub pending_edges: u32,
    /// OUT0 level at `last_now`.
    pub out0: bool,
}

/// Saved state of a [`Pit`]: its full register state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PitState {
    pub channels: [PitChannel; 3],
    pub port61: u8,
    pub last_now: u64,
    pub pending_edges: u32,
    pub out0: bool,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    pub fn new() -> Self {
        let mut channels = [PitChannel::new(), PitChannel::new(), PitChannel::new()];
        // Channel 2's gate comes from port 0x61 bit 0, clear at reset.
        channels[2].gate = false;
        Pit {
            channels,
            port61: 0,
            last_now: 0,
            pending_edges: 0,
            out0: false,
        }
    }

    /// Collect channel 0 edges up to `now` so a reprogramming never loses
    /// ticks that fell due before it. Returns the (monotonic) time to use.
    fn sync(&mut self, now: u64) -> u64 {
        let now = now.max(self.last_now);
        let edges = self.channels[0].edges_in(pit_count(self.last_now), pit_count(now));
        self.pending_edges = self
            .pending_edges
            .saturating_add(u32::try_from(edges).unwrap_or(u32::MAX));
        self.last_now = now;
        self.out0 = self.channels[0].out_at(pit_count(now));
        now
    }

    pub fn io_read(&mut self, port: u16, now: u64) -> u8 {
        let p = pit_count(now.max(self.last_now));
        match port & 3 {
            3 => 0xFF, // the control word register is write-only
            ch => self.channels[usize::from(ch)].read(p),
        }
    }

    pub fn io_write(&mut self, port: u16, value: u8, now: u64) {
        let now = self.sync(now);
        let p = pit_count(now);
        match port & 3 {
            3 => self.write_control(value, p),
            ch => self.channels[usize::from(ch)].write(value, p),
        }
        self.out0 = self.channels[0].out_at(p);
    }

    fn write_control(&mut self, value: u8, p: u64) {
        let sel = value >> 6;
        if sel == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches
            // status, bits 1-3 select channels 0-2.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) != 0 {
                    if value & 0x10 == 0 {
                        ch.latch_status(p);
                    }
                    if value & 0x20 == 0 {
                        ch.latch_count(p);
                    }
                }
            }
            return;
        }
        let ch = &mut self.channels[usize::from(sel)];
        if value & 0x30 == 0 {
            ch.latch_count(p);
        } else {
            ch.write_control(value);
        }
    }

    /// Channel 0's OUT as ISA IRQ 0, at the last advance or write.
    pub fn irq0(&self) -> IrqLine {
        IrqLine {
            irq: 0,
            level: self.out0,
        }
    }

    /// Bring OUT0 up to date at `now` and return how many times it rose
    /// since the previous call (including edges collected by writes in
    /// between). A periodic timer's OUT is low for a single counter clock,
    /// so the platform should turn a nonzero result into an edge the PIC
    /// sees (drive IRQ0 low, then high) rather than rely on `irq0()` alone;
    /// several edges at once mean ticks the guest missed, as a real PIC
    /// would also merge them.
    pub fn advance(&mut self, now: u64) -> u32 {
        self.sync(now);
        std::mem::take(&mut self.pending_edges)
    }

    /// The earliest virtual tick after the last advance at which OUT0 rises,
    /// or the last advance itself if edges collected by a write are still
    /// waiting for `advance`. None when channel 0 will not rise again.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.pending_edges > 0 {
            return Some(self.last_now);
        }
        let p = self.channels[0].next_edge_after(pit_count(self.last_now))?;
        tick_of_count(p)
    }

    /// Port 0x61 read: bits 0-3 as written, bit 4 the refresh toggle,
    /// bit 5 channel 2's OUT.
    pub fn port61_read(&mut self, now: u64) -> u8 {
        let refresh = (now / REFRESH_TICKS) & 1 != 0;
        let out2 = self.channels[2].out_at(pit_count(now.max(self.last_now)));
        self.port61 | (u8::from(refresh) << 4) | (u8::from(out2) << 5)
    }

    pub fn port61_write(&mut self, value: u8, now: u64) {
        self.port61 = value & 0x0F;
        let p = pit_count(now.max(self.last_now));
        self.channels[2].set_gate(value & 1 != 0, p);
    }
}

impl Snapshot for Pit {
    const SECTION: &'static str = "pit";
    const VERSION: u16 = 1;
    type State = PitState;

    fn save(&self) -> PitState {
        PitState {
            channels: self.channels.clone(),
            port61: self.port61,
            last_now: self.last_now,
            pending_edges: self.pending_edges,
            out0: self.out0,
        }
    }

    fn restore(&mut self, s: &PitState) {
        self.channels = s.channels.clone();
        self.port61 = s.port61;
        self.last_now = s.last_now;
        self.pending_edges = s.pending_edges;
        self.out0 = s.out0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATCH_100HZ: u16 = 11932;

    fn program(pit: &mut Pit, ch: u16, control: u8, count: u16, now: u64) {
        pit.io_write(0x43, control, now);
        let [lo, hi] = count.to_le_bytes();
        pit.io_write(0x40 + ch, lo, now);
        pit.io_write(0x40 + ch, hi, now);
    }

    #[test]
    fn conversion_is_exact_at_boundaries() {
        assert_eq!(pit_count(NOMINAL_HZ), PIT_HZ);
        for p in [1u64, 2, 11932, 65536, 1_193_181, 123_456_789] {
            let t = tick_of_count(p).expect("fits");
            assert!(pit_count(t) >= p);
            assert!(pit_count(t - 1) < p);
        }
    }

    #[test]
    fn rate_generator_one_edge_per_period() {
        let mut pit = Pit::new();
        assert_eq!(pit.next_deadline(), None, "unprogrammed timer is silent");
        program(&mut pit, 0, 0x34, LATCH_100HZ, 0);
        assert!(pit.irq0().level, "mode 2 OUT idles high");
        let d1 = pit.next_deadline().expect("periodic");
        assert_eq!(pit_count(d1), u64::from(LATCH_100HZ));
        assert_eq!(pit.advance(d1 - 1), 0);
        assert_eq!(pit.advance(d1), 1);
        let d2 = pit.next_deadline().expect("periodic");
        assert!(d2 > d1);
        assert_eq!(pit_count(d2), 2 * u64::from(LATCH_100HZ));
        // A late advance reports every period that passed.
        let late = tick_of_count(12 * u64::from(LATCH_100HZ)).expect("fits");
        assert_eq!(pit.advance(late), 11);
        assert_eq!(pit.advance(late), 0);
        // Linux's 100 Hz LATCH is a little over 1/100 s of counter clocks.
        let mut pit = Pit::new();
        program(&mut pit, 0, 0x34, LATCH_100HZ, 0);
        assert_eq!(pit.advance(NOMINAL_HZ), 99);
        assert_eq!(
            pit.advance(tick_of_count(100 * u64::from(LATCH_100HZ)).expect("fits")),
            1
        );
    }

    #[test]
    fn reprogramming_keeps_due_edges() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 0x34, 1000, 0);
        let t = tick_of_count(2500).expect("fits");
        // The guest reprograms before the platform advanced: two edges were due.
        program(&mut pit, 0, 0x34, 1000, t);
        assert_eq!(pit.next_deadline(), Some(t));
        assert_eq!(pit.advance(t), 2);
        assert_eq!(pit_count(pit.next_deadline().expect("periodic")), 3500);
    }

    #[test]
    fn square_wave_levels_and_edges() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 0x36, 100, 0);
        assert!(pit.irq0().level);
        assert_eq!(pit.advance(tick_of_count(49).expect("fits")), 0);
        assert!(pit.irq0().level);
        assert_eq!(pit.advance(tick_of_count(50).expect("fits")), 0);
        assert!(!pit.irq0().level, "low half");
        assert_eq!(pit_count(pit.next_deadline().expect("periodic")), 100);
        assert_eq!(pit.advance(tick_of_count(100).expect("fits")), 1);
        assert!(pit.irq0().level);
    }

    #[test]
    fn one_shot_mode0() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0x30, 0);
        assert!(!pit.irq0().level);
        pit.io_write(0x40, 0x10, 0);
        pit.io_write(0x40, 0x00, 0);
        assert!(!pit.irq0().level);
        let d = pit.next_deadline().expect("armed");
        assert_eq!(pit_count(d), 16);
        assert_eq!(pit.advance(d), 1);
        assert!(pit.irq0().level);
        assert_eq!(pit.next_deadline(), None, "fires once");
        assert_eq!(pit.advance(NOMINAL_HZ), 0);
        // Re-arming drops OUT and fires again.
        let now = NOMINAL_HZ;
        pit.io_write(0x40, 0x20, now);
        assert!(!pit.irq0().level, "first byte drives OUT low");
        pit.io_write(0x40, 0x00, now);
        let d = pit.next_deadline().expect("armed");
        assert_eq!(pit_count(d), pit_count(now) + 32);
        assert_eq!(pit.advance(d), 1);
    }

    #[test]
    fn counter_latch_and_live_reads() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 0x34, 1000, 0);
        let t = tick_of_count(300).expect("fits");
        pit.io_write(0x43, 0x00, t);
        // The latched value holds even though time moves on.
        let later = tick_of_count(400).expect("fits");
        let lo = pit.io_read(0x40, later);
        let hi = pit.io_read(0x40, later);
        assert_eq!(u16::from_le_bytes([lo, hi]), 700);
        // Unlatched: each byte read live.
        let lo = pit.io_read(0x40, later);
        let hi = pit.io_read(0x40, later);
        assert_eq!(u16::from_le_bytes([lo, hi]), 600);
        // Wraps with the period.
        pit.io_write(0x43, 0x00, tick_of_count(1300).expect("fits"));
        let lo = pit.io_read(0x40, 0);
        let hi = pit.io_read(0x40, 0);
        assert_eq!(u16::from_le_bytes([lo, hi]), 700);
    }

    #[test]
    fn lsb_and_msb_only_access() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0x50, 0); // ch1, LSB only, mode 0
        pit.io_write(0x41, 200, 0);
        assert_eq!(pit.io_read(0x41, tick_of_count(50).expect("fits")), 150);
        pit.io_write(0x43, 0x60, 0); // ch1, MSB only
        pit.io_write(0x41, 0x02, 0);
        assert_eq!(
            pit.io_read(0x41, tick_of_count(1).expect("fits")),
            0x01,
            "0x200 - 1 = 0x1FF"
        );
    }

    #[test]
    fn readback_status_and_count() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0xB4, 0); // ch2, lsb/msb, mode 2
        pit.io_write(0x43, 0xE8, 0); // read-back status of ch2
        assert_eq!(
            pit.io_read(0x42, 0),
            0x40 | 0x80 | 0x34,
            "null count, OUT high, rw 3, mode 2"
        );
        pit.port61_write(0x01, 0);
        pit.io_write(0x42, 0x00, 0);
        pit.io_write(0x42, 0x01, 0);
        let t = tick_of_count(10).expect("fits");
        pit.io_write(0x43, 0xC8, t); // latch count and status of ch2
        assert_eq!(pit.io_read(0x42, t), 0x80 | 0x34);
        assert_eq!(pit.io_read(0x42, t), 0xF6);
        assert_eq!(pit.io_read(0x42, t), 0x00);
    }

    #[test]
    fn channel2_calibration_via_port61() {
        // Linux's pit_calibrate_tsc: gate on, speaker off, mode 0, poll OUT2.
        let mut pit = Pit::new();
        let t0 = 5_000;
        let v = pit.port61_read(t0);
        pit.port61_write((v & !0x02) | 0x01, t0);
        pit.io_write(0x43, 0xB0, t0);
        pit.io_write(0x42, 0xFF, t0);
        pit.io_write(0x42, 0xFF, t0);
        let p0 = pit_count(t0);
        let before = tick_of_count(p0 + 0xFFFF).expect("fits") - 1;
        assert_eq!(pit.port61_read(before) & 0x20, 0);
        assert_eq!(pit.port61_read(before + 1) & 0x20, 0x20);
        assert_eq!(pit.port61_read(before + 1) & 0x0F, 0x01);
        // Reading the MSB-then-LSB count while it runs.
        let mid = tick_of_count(p0 + 0x1234).expect("fits");
        let lo = pit.io_read(0x42, mid);
        let hi = pit.io_read(0x42, mid);
        assert_eq!(u16::from_le_bytes([lo, hi]), 0xFFFF - 0x1234);
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut pit = Pit::new();
        pit.port61_write(0x01, 0);
        program(&mut pit, 2, 0xB0, 1000, 0);
        pit.port61_write(0x00, tick_of_count(100).expect("fits"));
        let later = tick_of_count(5000).expect("fits");
        pit.io_write(0x43, 0x80, later);
        assert_eq!(pit.io_read(0x42, later), (900u16 & 0xFF) as u8);
        assert_eq!(pit.io_read(0x42, later), (900u16 >> 8) as u8);
        assert_eq!(pit.port61_read(later) & 0x20, 0);
        pit.port61_write(0x01, later);
        let t = tick_of_count(pit_count(later) + 900).expect("fits");
        assert_eq!(pit.port61_read(t - 1) & 0x20, 0);
        assert_eq!(pit.port61_read(t) & 0x20, 0x20);
    }

    #[test]
    fn bcd_counting() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0x71, 0); // ch1, lsb/msb, mode 0, BCD
        pit.io_write(0x41, 0x00, 0);
        pit.io_write(0x41, 0x10, 0); // 1000 decimal
        let t = tick_of_count(1).expect("fits");
        let lo = pit.io_read(0x41, t);
        let hi = pit.io_read(0x41, t);
        assert_eq!((hi, lo), (0x09, 0x99));
    }

    #[test]
    fn refresh_bit_toggles_with_virtual_time() {
        let mut pit = Pit::new();
        let a = pit.port61_read(0) & 0x10;
        let b = pit.port61_read(REFRESH_TICKS) & 0x10;
        assert_ne!(a, b);
    }

    #[test]
    fn arbitrary_guest_access_does_not_panic() {
        let mut pit = Pit::new();
        let mut x: u32 = 12345;
        let mut now = 0u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let port = 0x40 + u16::from((x >> 8) as u8 & 3);
            let v = (x >> 16) as u8;
            now += u64::from(x >> 20);
            match x & 7 {
                0 => {
                    pit.port61_write(v, now);
                }
                1 => {
                    let _ = pit.port61_read(now);
                }
                2 | 3 => {
                    let _ = pit.io_read(port, now);
                }
                _ => pit.io_write(port, v, now),
            }
            if let Some(d) = pit.next_deadline() {
                assert!(d >= pit.last_now);
            }
            let _ = pit.advance(now);
        }
        let _ = pit.io_read(0xFFFF, u64::MAX);
        pit.io_write(0x43, 0x34, u64::MAX);
        pit.io_write(0x40, 0x02, u64::MAX);
        pit.io_write(0x40, 0x00, u64::MAX);
        let _ = pit.next_deadline();
        let _ = pit.advance(u64::MAX);
    }

    #[test]
    fn save_restore_roundtrip() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 0x34, LATCH_100HZ, 1000);
        pit.io_write(0x43, 0x00, 50_000);
        let _ = pit.io_read(0x40, 60_000);
        let s = pit.save();
        let mut other = Pit::new();
        other.restore(&s);
        assert_eq!(other, pit);
        assert_eq!(other.io_read(0x40, 70_000), pit.io_read(0x40, 70_000));
        assert_eq!(other.next_deadline(), pit.next_deadline());
        assert_eq!(other.advance(NOMINAL_HZ), pit.advance(NOMINAL_HZ));
    }
}
