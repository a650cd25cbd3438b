//! The PC's real-time clock and CMOS RAM, after the Motorola MC146818A
//! datasheet: index port 0x70 (bit 7 = NMI mask), data port 0x71, IRQ 8.
//! The memory-size and checksum bytes follow the IBM PC/AT technical
//! reference CMOS map (0x10-0x2F), plus the usual 0x30/0x31 extended memory
//! copy, 0x32 century and 0x34/0x35 (memory above 16 MiB in 64 KiB blocks).
//!
//! The clock is a function of virtual time: the time of day at virtual tick
//! `now` is `start_epoch_seconds + offset + now / NOMINAL_HZ` in UTC, where
//! `offset` absorbs whatever the guest wrote into the time registers. Seconds
//! roll over exactly at multiples of NOMINAL_HZ, which is when update-ended
//! interrupts fire; UIP reads set during the last 244 µs before that. The
//! periodic interrupt runs off a 32.768 kHz time base aligned to virtual
//! time zero. The divider-select bits (register A bits 6-4) only matter in
//! that the reset values 110/111 stop periodic and update events.

use super::IrqLine;
use crate::snapshot::Snapshot;
use crate::time::NOMINAL_HZ;

const REG_A: usize = 0x0A;
const REG_B: usize = 0x0B;
const REG_C: usize = 0x0C;
const REG_D: usize = 0x0D;
const REG_CENTURY: usize = 0x32;

const A_UIP: u8 = 0x80;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

/// UIP is set this many virtual ticks before each update (244 µs).
const UIP_TICKS: u64 = NOMINAL_HZ * 244 / 1_000_000;
/// Time base of the periodic interrupt divider.
const TIME_BASE_HZ: u128 = 32_768;
const SECS_PER_DAY: i64 = 86_400;
/// Days in any 400 consecutive Gregorian years.
const DAYS_PER_400Y: i64 = 146_097;

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_year(y: i64) -> i64 {
    if is_leap(y) {
        366
    } else {
        365
    }
}

/// Days in month `m` (1-12) of year `y`, proleptic Gregorian.
pub fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date. `day` may exceed
/// the month's length (it just runs on into the next month).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Whole 400-year cycles first, then at most 399 years and 11 months.
    let cycles = (year - 1970).div_euclid(400);
    let mut days = cycles * DAYS_PER_400Y;
    for y in (1970 + cycles * 400)..year {
        days += days_in_year(y);
    }
    for m in 1..month {
        days += days_in_month(year, m);
    }
    days + day - 1
}

/// The proleptic Gregorian date of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let mut year = 1970 + days.div_euclid(DAYS_PER_400Y) * 400;
    let mut rest = days.rem_euclid(DAYS_PER_400Y);
    while rest >= days_in_year(year) {
        rest -= days_in_year(year);
        year += 1;
    }
    let mut month = 1;
    while rest >= days_in_month(year, month) {
        rest -= days_in_month(year, month);
        month += 1;
    }
    (year, month, rest + 1)
}

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Calendar {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// 0 = Sunday.
    weekday: i64,
}

/// The range of times the registers can express: 0000-01-01 (day -719528)
/// to 9999-12-31 (10000-01-01 is day 2932897).
const MIN_SECONDS: i64 = -719_528 * SECS_PER_DAY;
const MAX_SECONDS: i64 = 2_932_897 * SECS_PER_DAY - 1;

fn min_seconds() -> i64 {
    MIN_SECONDS
}

fn max_seconds() -> i64 {
    MAX_SECONDS
}

impl Calendar {
    fn from_seconds(secs: i64) -> Self {
        let secs = secs.clamp(min_seconds(), max_seconds());
        let days = secs.div_euclid(SECS_PER_DAY);
        let tod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Calendar {
            year,
            month,
            day,
            hour: tod / 3600,
            minute: tod / 60 % 60,
            second: tod % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7),
        }
    }

    fn to_seconds(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + self.hour * 3600
            + self.minute * 60
            + self.second
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Cmos {
    /// Selected register (port 0x70 bits 6-0).
    pub index: u8,
    /// Port 0x70 bit 7: NMI disabled.
    pub nmi_disabled: bool,
    /// Register file. Clock registers 0, 2, 4, 6-9 and 0x32 hold values only
    /// while register B's SET bit is on; otherwise they are computed.
    #[serde(with = "serde_big_array::BigArray")]
    pub ram: [u8; 128],
    pub start_epoch_seconds: u64,
    /// Seconds added to the virtual-time clock by guest time writes.
    pub offset_seconds: i64,
    /// Virtual tick up to which periodic/update/alarm flags are current.
    pub last_now: u64,
    /// Register C flags PF, AF, UF (IRQF is derived from them and B).
    pub flags: u8,
}

/// Saved state of a [`Cmos`]: its full register state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CmosState {
    pub cmos: Cmos,
}

impl Cmos {
    pub fn new(start_epoch_seconds: u64, ram_bytes: u64) -> Self {
        let mut ram = [0u8; 128];
        ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        ram[REG_B] = B_24H; // BCD, 24-hour
        ram[REG_D] = 0x80; // VRT: the battery is fine
                           // Base memory: 640 KiB.
        ram[0x15..=0x16].copy_from_slice(&640u16.to_le_bytes());
        let ext_kib = (ram_bytes.saturating_sub(1 << 20) / 1024).min(0xFFFF) as u16;
        ram[0x17..=0x18].copy_from_slice(&ext_kib.to_le_bytes());
        ram[0x30..=0x31].copy_from_slice(&ext_kib.to_le_bytes());
        let above_16m = (ram_bytes.saturating_sub(16 << 20) / 65_536).min(0xFFFF) as u16;
        ram[0x34..=0x35].copy_from_slice(&above_16m.to_le_bytes());
        // AT checksum over 0x10-0x2D, stored big-endian at 0x2E/0x2F.
        let sum: u16 = ram[0x10..=0x2D].iter().map(|&b| u16::from(b)).sum();
        ram[0x2E..=0x2F].copy_from_slice(&sum.to_be_bytes());
        Cmos {
            index: 0,
            nmi_disabled: false,
            ram,
            start_epoch_seconds,
            offset_seconds: 0,
            last_now: 0,
            flags: 0,
        }
    }

    /// Port 0x70 bit 7 as last written.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_disabled
    }

    fn reg_b(&self) -> u8 {
        self.ram[REG_B]
    }

    fn binary(&self) -> bool {
        self.reg_b() & B_DM_BINARY != 0
    }

    fn divider_running(&self) -> bool {
        // DV = 110 or 111 holds the divider chain in reset.
        (self.ram[REG_A] >> 4) & 0x6 != 0x6
    }

    fn updates_running(&self) -> bool {
        self.divider_running() && self.reg_b() & B_SET == 0
    }

    /// log2 of the periodic period in time-base cycles, if enabled.
    fn periodic_shift(&self) -> Option<u32> {
        if !self.divider_running() {
            return None;
        }
        match self.ram[REG_A] & 0x0F {
            0 => None,
            // Rates 1 and 2 repeat rates 8 and 9 with the 32.768 kHz base.
            1 => Some(7),
            2 => Some(8),
            rs => Some(u32::from(rs) - 1),
        }
    }

    /// Periodic events in virtual ticks (0, now].
    fn periodic_count(now: u64, shift: u32) -> u128 {
        u128::from(now) * TIME_BASE_HZ / (u128::from(NOMINAL_HZ) << shift)
    }

    fn seconds_at(&self, now: u64) -> i64 {
        let s = i128::from(self.start_epoch_seconds) + i128::from(self.offset_seconds) + i128::from(now / NOMINAL_HZ);
        s.clamp(i128::from(min_seconds()), i128::from(max_seconds())) as i64
    }

    fn encode(&self, v: i64) -> u8 {
        let v = v.clamp(0, 99) as u8;
        if self.binary() {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    fn decode(&self, v: u8) -> i64 {
        if self.binary() {
            i64::from(v)
        } else {
            i64::from(v >> 4) * 10 + i64::from(v & 0x0F)
        }
    }

    fn encode_hour(&self, h: i64) -> u8 {
        if self.reg_b() & B_24H != 0 {
            self.encode(h)
        } else {
            let h12 = match h % 12 {
                0 => 12,
                x => x,
            };
            self.encode(h12) | if h >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, v: u8) -> i64 {
        if self.reg_b() & B_24H != 0 {
            self.decode(v)
        } else {
            (self.decode(v & 0x7F) % 12) + if v & 0x80 != 0 { 12 } else { 0 }
        }
    }

    /// The value of clock register `reg` for time `c`, in the current format.
    fn clock_register(&self, reg: usize, c: &Calendar) -> Option<u8> {
        Some(match reg {
            0x00 => self.encode(c.second),
            0x02 => self.encode(c.minute),
            0x04 => self.encode_hour(c.hour),
            0x06 => self.encode(c.weekday + 1),
            0x07 => self.encode(c.day),
            0x08 => self.encode(c.month),
            0x09 => self.encode(c.year % 100),
            REG_CENTURY => self.encode(c.year / 100),
            _ => return None,
        })
    }

    /// Apply a guest write of clock register `reg` to calendar `c`. Values
    /// are clamped to their field's range, so nonsense never overflows.
    fn set_clock_field(&self, c: &mut Calendar, reg: usize, v: u8) {
        match reg {
            0x00 => c.second = self.decode(v).min(59),
            0x02 => c.minute = self.decode(v).min(59),
            0x04 => c.hour = self.decode_hour(v).min(23),
            0x07 => c.day = self.decode(v).clamp(1, 31),
            0x08 => c.month = self.decode(v).clamp(1, 12),
            0x09 => c.year = c.year.div_euclid(100) * 100 + self.decode(v).min(99),
            REG_CENTURY => c.year = self.decode(v).min(99) * 100 + c.year.rem_euclid(100),
            // The weekday is derived from the date.
            _ => {}
        }
    }

    /// Collect periodic, update-ended and alarm events up to `now`.
    pub fn advance(&mut self, now: u64) {
        let now = now.max(self.last_now);
        let last = self.last_now;
        if let Some(shift) = self.periodic_shift() {
            if Self::periodic_count(now, shift) > Self::periodic_count(last, shift) {
                self.flags |= C_PF;
            }
        }
        if self.updates_running() {
            let (s0, s1) = (last / NOMINAL_HZ, now / NOMINAL_HZ);
            if s1 > s0 {
                self.flags |= C_UF;
                // The alarm repeats at most daily, so the last day of updates
                // decides whether it matched.
                let first = s0.max(s1.saturating_sub(SECS_PER_DAY as u64)) + 1;
                if (first..=s1).any(|k| self.alarm_matches(k)) {
                    self.flags |= C_AF;
                }
            }
        }
        self.last_now = now;
    }

    /// Whether the alarm registers match the time of the update at virtual
    /// second `k`. Alarm bytes 0xC0-0xFF are "don't care".
    fn alarm_matches(&self, k: u64) -> bool {
        let secs = self.seconds_at(k.saturating_mul(NOMINAL_HZ));
        let tod = secs.rem_euclid(SECS_PER_DAY);
        let check = |alarm: u8, actual: u8| alarm & 0xC0 == 0xC0 || alarm == actual;
        check(self.ram[0x01], self.encode(tod % 60))
            && check(self.ram[0x03], self.encode(tod / 60 % 60))
            && check(self.ram[0x05], self.encode_hour(tod / 3600))
    }

    fn irqf(&self) -> bool {
        self.flags & self.reg_b() & (C_PF | C_AF | C_UF) != 0
    }

    /// IRQ 8: high while register C's IRQF is set.
    pub fn irq(&self) -> IrqLine {
        IrqLine {
            irq: 8,
            level: self.irqf(),
        }
    }

    /// The next virtual tick after the last advance at which an enabled
    /// event can raise the IRQ. None when none is enabled, or while the IRQ
    /// is already asserted (flags are caught up lazily at the next access).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.irqf() {
            return None;
        }
        let mut best: Option<u64> = None;
        if self.reg_b() & B_PIE != 0 {
            if let Some(shift) = self.periodic_shift() {
                let k = Self::periodic_count(self.last_now, shift) + 1;
                let t = (k * (u128::from(NOMINAL_HZ) << shift)).div_ceil(TIME_BASE_HZ);
                best = u64::try_from(t).ok();
            }
        }
        if self.reg_b() & (B_UIE | B_AIE) != 0 && self.updates_running() {
            if let Some(t) = (self.last_now / NOMINAL_HZ + 1).checked_mul(NOMINAL_HZ) {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        best
    }

    pub fn io_read(&mut self, port: u16, now: u64) -> u8 {
        if port & 1 == 0 {
            // The index register is write-only.
            return 0xFF;
        }
        self.advance(now);
        let now = self.last_now;
        let reg = usize::from(self.index & 0x7F);
        match reg {
            REG_A => {
                let uip = self.updates_running() && now % NOMINAL_HZ >= NOMINAL_HZ - UIP_TICKS;
                self.ram[REG_A] | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                let v = self.flags | if self.irqf() { C_IRQF } else { 0 };
                self.flags = 0;
                v
            }
            REG_D => 0x80,
            _ if self.reg_b() & B_SET == 0 => {
                let c = Calendar::from_seconds(self.seconds_at(now));
                self.clock_register(reg, &c).unwrap_or(self.ram[reg])
            }
            _ => self.ram[reg],
        }
    }

    pub fn io_write(&mut self, port: u16, value: u8, now: u64) {
        if port & 1 == 0 {
            self.index = value & 0x7F;
            self.nmi_disabled = value & 0x80 != 0;
            return;
        }
        self.advance(now);
        let now = self.last_now;
        let reg = usize::from(self.index & 0x7F);
        match reg {
            REG_A => self.ram[REG_A] = value & 0x7F,
            REG_B => self.write_reg_b(value, now),
            // C and D are read-only.
            REG_C | REG_D => {}
            _ => {
                let set = self.reg_b() & B_SET != 0;
                let base = Calendar::from_seconds(self.seconds_at(now));
                if !set && self.clock_register(reg, &base).is_some() {
                    // A running clock continues from the written field.
                    let mut c = base;
                    self.set_clock_field(&mut c, reg, value);
                    self.offset_seconds = self.offset_seconds.saturating_add(c.to_seconds() - base.to_seconds());
                } else {
                    self.ram[reg] = value;
                }
            }
        }
    }

    fn write_reg_b(&mut self, mut value: u8, now: u64) {
        let old = self.reg_b();
        if value & B_SET != 0 {
            // Setting SET clears UIE (datasheet).
            value &= !B_UIE;
        }
        self.ram[REG_B] = value;
        if old & B_SET == 0 && value & B_SET != 0 {
            // Freeze the clock into the registers (in the new format) so the
            // guest can rewrite them.
            let c = Calendar::from_seconds(self.seconds_at(now));
            for reg in [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, REG_CENTURY] {
                if let Some(v) = self.clock_register(reg, &c) {
                    self.ram[reg] = v;
                }
            }
        } else if old & B_SET != 0 && value & B_SET == 0 {
            // Resume from whatever the registers now hold.
            let mut c = Calendar::from_seconds(self.seconds_at(now));
            for reg in [REG_CENTURY, 0x09, 0x08, 0x07, 0x04, 0x02, 0x00] {
                let v = self.ram[reg];
                self.set_clock_field(&mut c, reg, v);
            }
            let base = i128::from(self.start_epoch_seconds) + i128::from(now / NOMINAL_HZ);
            let off = i128::from(c.to_seconds()) - base;
            self.offset_seconds = off.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        }
    }
}

impl Snapshot for Cmos {
    const SECTION: &'static str = "cmos";
    const VERSION: u16 = 1;
    type State = CmosState;

    fn save(&self) -> CmosState {
        CmosState { cmos: self.clone() }
    }

    fn restore(&mut self, s: &CmosState) {
        *self = s.cmos.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC, a Tuesday

    fn rd(c: &mut Cmos, reg: u8, now: u64) -> u8 {
        c.io_write(0x70, reg, now);
        c.io_read(0x71, now)
    }

    fn wr(c: &mut Cmos, reg: u8, v: u8, now: u64) {
        c.io_write(0x70, reg, now);
        c.io_write(0x71, v, now);
    }

    #[test]
    fn calendar_conversions() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2000, 2, 29, 11016),
            (2000, 3, 1, 11017),
            (1900, 3, 1, -25508),
            (2100, 2, 28, 47540),
            (1600, 1, 1, -135140),
            (9999, 12, 31, 2932896),
            (1, 1, 1, -719162),
        ] {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        assert_eq!(days_from_civil(0, 1, 1) * SECS_PER_DAY, MIN_SECONDS);
        assert_eq!(days_from_civil(10_000, 1, 1) * SECS_PER_DAY - 1, MAX_SECONDS);
        for z in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn memory_size_registers() {
        let mut c = Cmos::new(0, 128 << 20);
        assert_eq!((rd(&mut c, 0x15, 0), rd(&mut c, 0x16, 0)), (0x80, 0x02));
        assert_eq!((rd(&mut c, 0x17, 0), rd(&mut c, 0x18, 0)), (0xFF, 0xFF));
        assert_eq!((rd(&mut c, 0x30, 0), rd(&mut c, 0x31, 0)), (0xFF, 0xFF));
        assert_eq!((rd(&mut c, 0x34, 0), rd(&mut c, 0x35, 0)), (0x00, 0x07));
        let c = Cmos::new(0, 8 << 20);
        assert_eq!(u16::from_le_bytes([c.ram[0x17], c.ram[0x18]]), 7 * 1024);
        assert_eq!(u16::from_le_bytes([c.ram[0x34], c.ram[0x35]]), 0);
        let sum: u16 = c.ram[0x10..=0x2D].iter().map(|&b| u16::from(b)).sum();
        assert_eq!(u16::from_be_bytes([c.ram[0x2E], c.ram[0x2F]]), sum);
    }

    #[test]
    fn status_register_defaults() {
        let mut c = Cmos::new(T0, 0);
        assert_eq!(rd(&mut c, 0x0A, 0), 0x26);
        assert_eq!(rd(&mut c, 0x0B, 0), 0x02);
        assert_eq!(rd(&mut c, 0x0C, 0), 0x00);
        assert_eq!(rd(&mut c, 0x0D, 0), 0x80);
    }

    #[test]
    fn bcd_time_follows_virtual_clock() {
        let mut c = Cmos::new(T0, 0);
        let regs = |c: &mut Cmos, now| [0x00u8, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|r| rd(c, r, now));
        assert_eq!(regs(&mut c, 0), [0x20, 0x13, 0x22, 0x03, 0x14, 0x11, 0x23, 0x20]);
        assert_eq!(rd(&mut c, 0x00, 5 * NOMINAL_HZ + 123), 0x25);
        // Across midnight: 1h46m40s later is 2023-11-15 00:00:00, Wednesday.
        let mid = (3600 + 46 * 60 + 40) * NOMINAL_HZ;
        assert_eq!(regs(&mut c, mid), [0x00, 0x00, 0x00, 0x04, 0x15, 0x11, 0x23, 0x20]);
    }

    #[test]
    fn binary_and_12_hour_formats() {
        let mut c = Cmos::new(T0, 0);
        wr(&mut c, 0x0B, 0x04, 0); // binary, 12-hour
        assert_eq!(rd(&mut c, 0x04, 0), 0x80 | 10, "10 PM");
        assert_eq!(rd(&mut c, 0x02, 0), 13);
        assert_eq!(rd(&mut c, 0x32, 0), 20);
        let c2 = Cmos::new(0, 0); // midnight -> 12 AM
        let mut c2 = c2;
        wr(&mut c2, 0x0B, 0x00, 0);
        assert_eq!(rd(&mut c2, 0x04, 0), 0x12);
    }

    #[test]
    fn guest_sets_time_with_set_bit() {
        let mut c = Cmos::new(T0, 0);
        let t = 3 * NOMINAL_HZ / 2;
        wr(&mut c, 0x0B, 0x82, t);
        let t = t + 10 * NOMINAL_HZ;
        assert_eq!(rd(&mut c, 0x00, t), 0x21, "frozen while SET");
        wr(&mut c, 0x09, 0x99, t);
        wr(&mut c, 0x32, 0x19, t);
        wr(&mut c, 0x08, 0x12, t);
        wr(&mut c, 0x07, 0x31, t);
        wr(&mut c, 0x04, 0x23, t);
        wr(&mut c, 0x02, 0x59, t);
        wr(&mut c, 0x00, 0x58, t);
        wr(&mut c, 0x0B, 0x02, t);
        // Two seconds of virtual time later (crossing two updates): 2000-01-01.
        let later = t + 2 * NOMINAL_HZ;
        let got = [0x00u8, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32, 0x06].map(|r| rd(&mut c, r, later));
        assert_eq!(got, [0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x20, 0x07]);
    }

    #[test]
    fn writing_running_clock_field_adjusts_offset() {
        let mut c = Cmos::new(T0, 0);
        wr(&mut c, 0x02, 0x45, 0);
        assert_eq!(rd(&mut c, 0x02, 0), 0x45);
        assert_eq!(rd(&mut c, 0x04, 0), 0x22);
        assert_eq!(rd(&mut c, 0x00, 60 * NOMINAL_HZ), 0x20);
        assert_eq!(rd(&mut c, 0x02, 60 * NOMINAL_HZ), 0x46);
    }

    #[test]
    fn uip_window() {
        let mut c = Cmos::new(T0, 0);
        assert_eq!(rd(&mut c, 0x0A, 0) & 0x80, 0);
        assert_eq!(rd(&mut c, 0x0A, NOMINAL_HZ - UIP_TICKS - 1) & 0x80, 0);
        assert_eq!(rd(&mut c, 0x0A, NOMINAL_HZ - UIP_TICKS) & 0x80, 0x80);
        assert_eq!(rd(&mut c, 0x0A, NOMINAL_HZ) & 0x80, 0);
    }

    #[test]
    fn periodic_interrupt() {
        let mut c = Cmos::new(T0, 0);
        assert_eq!(c.next_deadline(), None);
        wr(&mut c, 0x0B, 0x42, 0); // PIE
        let d = c.next_deadline().expect("periodic");
        assert_eq!(d, 97_657, "1024 Hz");
        c.advance(d - 1);
        assert!(!c.irq().level);
        c.advance(d);
        assert_eq!(c.irq(), IrqLine { irq: 8, level: true });
        assert_eq!(c.next_deadline(), None, "nothing new until C is read");
        assert_eq!(rd(&mut c, 0x0C, d), 0xC0);
        assert!(!c.irq().level);
        assert_eq!(rd(&mut c, 0x0C, d), 0x00);
        let d2 = c.next_deadline().expect("periodic");
        assert_eq!(d2, 195_313);
        // Rate 15: 2 Hz.
        wr(&mut c, 0x0A, 0x2F, d2);
        assert_eq!(rd(&mut c, 0x0C, d2), 0xC0);
        assert_eq!(c.next_deadline(), Some(NOMINAL_HZ / 2));
        // Divider in reset stops it.
        wr(&mut c, 0x0A, 0x7F, d2);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn pf_is_set_without_pie() {
        let mut c = Cmos::new(T0, 0);
        assert_eq!(rd(&mut c, 0x0C, NOMINAL_HZ / 100), 0x40);
        assert!(!c.irq().level);
    }

    #[test]
    fn update_ended_and_alarm() {
        let mut c = Cmos::new(T0, 0);
        wr(&mut c, 0x01, 0x22, 0); // alarm at hh:mm:22
        wr(&mut c, 0x03, 0xFF, 0);
        wr(&mut c, 0x05, 0xC0, 0);
        wr(&mut c, 0x0B, 0x12, 0); // UIE
        assert_eq!(c.next_deadline(), Some(NOMINAL_HZ));
        c.advance(NOMINAL_HZ);
        assert!(c.irq().level);
        // PF runs too (rate 6 in register A), it just does not interrupt.
        assert_eq!(rd(&mut c, 0x0C, NOMINAL_HZ), 0xD0);
        wr(&mut c, 0x0B, 0x22, NOMINAL_HZ); // AIE only
        c.advance(NOMINAL_HZ + 1);
        assert!(!c.irq().level);
        c.advance(2 * NOMINAL_HZ);
        assert!(c.irq().level, "22 seconds past");
        assert_eq!(rd(&mut c, 0x0C, 2 * NOMINAL_HZ) & 0xA0, 0xA0);
        // SET clears UIE and stops updates.
        wr(&mut c, 0x0B, 0x92, 2 * NOMINAL_HZ);
        assert_eq!(rd(&mut c, 0x0B, 2 * NOMINAL_HZ), 0x82);
    }

    #[test]
    fn index_masking_and_nmi() {
        let mut c = Cmos::new(0, 0);
        wr(&mut c, 0xC0, 0x5A, 0);
        assert!(c.nmi_masked());
        assert_eq!(c.index, 0x40);
        assert_eq!(rd(&mut c, 0x40, 0), 0x5A);
        assert!(!c.nmi_masked());
        assert_eq!(c.io_read(0x70, 0), 0xFF);
    }

    #[test]
    fn arbitrary_access_does_not_panic() {
        for epoch in [0u64, T0, u64::MAX] {
            let mut c = Cmos::new(epoch, u64::MAX);
            let mut x: u32 = 7;
            let mut now = 0u64;
            for _ in 0..5_000 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                now = now.wrapping_add(u64::from(x >> 12));
                let v = (x >> 16) as u8;
                if x & 1 == 0 {
                    c.io_write(0x70 | (x >> 31) as u16, v, now);
                } else {
                    let _ = c.io_read(0x71, now);
                }
                let _ = c.next_deadline();
            }
            c.advance(u64::MAX);
            let _ = rd(&mut c, 0x00, u64::MAX);
        }
    }

    #[test]
    fn save_restore_roundtrip() {
        let mut c = Cmos::new(T0, 64 << 20);
        wr(&mut c, 0x0B, 0x52, 10);
        wr(&mut c, 0x02, 0x01, 10);
        c.advance(3 * NOMINAL_HZ);
        let s = c.save();
        let mut d = Cmos::new(0, 0);
        d.restore(&s);
        assert_eq!(d, c);
        for r in [0x0C, 0x00, 0x02, 0x0A] {
            assert_eq!(rd(&mut d, r, 4 * NOMINAL_HZ), rd(&mut c, r, 4 * NOMINAL_HZ));
        }
        assert_eq!(d.next_deadline(), c.next_deadline());
    }
}
