//! Decoding as the machine decodes (SDM Vol. 2A, chapter 2, "Instruction
//! format"), in one place: the engines, the scanner, bisect's reports and
//! the inspector all decode through here, so a tool can never disagree with
//! the machine on an instruction's length or validity.

use iced_x86::{Decoder, DecoderOptions, Instruction};

/// iced-x86's own validity checks stay off: the CPU decides what faults
/// (#UD for a misplaced LOCK, #GP for an overlong instruction), and the
/// semantics raise it.
const OPTIONS: u32 = DecoderOptions::NO_INVALID_CHECK;

/// A decoder over `bytes`, the first at `ip`, for 32-bit or 16-bit code.
#[inline]
pub fn decoder(bytes: &[u8], ip: u64, code32: bool) -> Decoder<'_> {
    Decoder::with_ip(if code32 { 32 } else { 16 }, bytes, ip, OPTIONS)
}

/// The instruction at the start of `bytes`, or `None` where the bytes are
/// not one (or are cut short).
#[inline]
pub fn decode_one(bytes: &[u8], ip: u64, code32: bool) -> Option<Instruction> {
    let inst = decoder(bytes, ip, code32).decode();
    (!inst.is_invalid()).then_some(inst)
}
