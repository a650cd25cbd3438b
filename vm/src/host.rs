//! The host input interface: the only way a value from outside the guest
//! (bytes typed at the serial console, the wall-clock time at power-on) enters
//! the machine. The machine asks at points that are a pure function of the
//! instruction stream, so a recorder can log each answer with its virtual time
//! and a replayer can give the same answers back.

/// Everything nondeterministic the machine consumes.
pub trait HostInput {
    /// Wall-clock time at power-on in seconds since the Unix epoch; the RTC
    /// counts from it in virtual time. Asked once, when the machine is built.
    fn rtc_start(&mut self) -> u64;

    /// The next byte received on COM1, if one is ready. Asked every
    /// [`INPUT_POLL_TICKS`] of virtual time while the UART can take a byte.
    fn serial_input(&mut self, now: u64) -> Option<u8>;

    /// The guest waits (halted, interrupts on) with no timer armed: only input
    /// can wake it. Block until input may be ready; return false when none
    /// will ever come, which ends the run.
    fn wait_for_input(&mut self, now: u64) -> bool;

    /// Whether the user asked to end the run (the console's escape key),
    /// asked at virtual time `now` when the machine looks for input. A yes
    /// is host input like any other: a recorder logs it and a replayer gives
    /// it back at the same point, so the replay stops exactly there too.
    fn stop_requested(&mut self, _now: u64) -> bool {
        false
    }
}

/// How often (in virtual ticks) the machine asks for serial input: 1 ms of
/// virtual time, well below a human's typing interval.
pub const INPUT_POLL_TICKS: u64 = crate::time::NOMINAL_HZ / 1000;

/// A host with nothing to say: a fixed RTC start and no serial input.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInput {
    pub rtc_start: u64,
}

impl HostInput for NoInput {
    fn rtc_start(&mut self) -> u64 {
        self.rtc_start
    }
    fn serial_input(&mut self, _now: u64) -> Option<u8> {
        None
    }
    fn wait_for_input(&mut self, _now: u64) -> bool {
        false
    }
}

/// Scripted input: bytes delivered in order, one per poll from virtual time
/// `start` on, for tests and for feeding a file to the console.
#[derive(Clone, Debug, Default)]
pub struct ScriptedInput {
    pub rtc_start: u64,
    pub bytes: std::collections::VecDeque<u8>,
    /// No byte arrives before this virtual time (a user types once the guest
    /// is up; bytes sent before it initialises its UART would be lost).
    pub start: u64,
}

impl ScriptedInput {
    pub fn new(rtc_start: u64, bytes: &[u8]) -> Self {
        ScriptedInput {
            rtc_start,
            bytes: bytes.iter().copied().collect(),
            start: 0,
        }
    }

    pub fn starting_at(mut self, start: u64) -> Self {
        self.start = start;
        self
    }
}

impl HostInput for ScriptedInput {
    fn rtc_start(&mut self) -> u64 {
        self.rtc_start
    }
    fn serial_input(&mut self, now: u64) -> Option<u8> {
        if now < self.start {
            return None;
        }
        self.bytes.pop_front()
    }
    fn wait_for_input(&mut self, now: u64) -> bool {
        // Nothing else can wake the guest, so the script's clock jumps ahead.
        self.start = self.start.min(now);
        !self.bytes.is_empty()
    }
}
