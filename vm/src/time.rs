//! Virtual time. The machine has one clock, the retired-instruction count, and
//! every notion of time the guest can observe is derived from it at a fixed
//! nominal rate, so time is a pure function of the instruction stream.

/// Nominal guest speed: instructions per virtual second.
pub const NOMINAL_HZ: u64 = 100_000_000;
/// Virtual nanoseconds per retired instruction.
pub const NS_PER_INSN: u64 = 1_000_000_000 / NOMINAL_HZ;
/// The time-stamp counter ticks at 1 GHz of virtual time.
pub const TSC_PER_INSN: u64 = NS_PER_INSN;

#[inline]
pub fn icount_to_ns(icount: u64) -> u64 {
    icount.saturating_mul(NS_PER_INSN)
}

/// The first instruction count at which virtual time reaches `ns`.
#[inline]
pub fn ns_to_icount_ceil(ns: u64) -> u64 {
    ns.div_ceil(NS_PER_INSN)
}
