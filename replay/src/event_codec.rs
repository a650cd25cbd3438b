//! The compact encoding of an event frame (docs/trace-format.md, "Events").
//!
//! A guest that does port I/O in a loop logs an event every few
//! instructions, so the bytes per event bound how fast a recorder can go:
//! the writer thread serializes and compresses every one. Field-by-field
//! postcard spent most of that time copying varints one at a time and made
//! 14 bytes of a port access; this encoding writes an access in about 7,
//! whole, and leaves the rare events (patches, scans, traps) to postcard.
//!
//! ```text
//! batch := (varint first icount, event+)?     (empty: no events)
//! event := varint icount delta, varint zigzag pc delta, tag, body
//! tag   := 0x80 | mmio << 6 | write << 5 | size   -> varint addr, varint value (Io, size < 32)
//!        | 1                                       -> vector byte (Interrupt)
//!        | 0                                       -> postcard vm::events::Event (any other)
//! ```
//! Deltas are from the previous event (the first icount's from the batch's
//! first, the first pc's from 0), wrapping, so every batch encodes.

use vm::events::{Event, EventRecord, EventView};

/// Events in one batch at most (what the recorder writes).
pub const MAX_EVENTS: usize = 8192;

const TAG_EVENT: u8 = 0;
const TAG_INTERRUPT: u8 = 1;
const TAG_IO: u8 = 0x80;
const IO_MMIO: u8 = 0x40;
const IO_WRITE: u8 = 0x20;
const IO_SIZE: u8 = 0x1f;
/// The most bytes of an event's fixed part: icount, pc, tag, addr, value.
const MAX_FIXED_BYTES: usize = 10 + 5 + 1 + 5 + 5;

/// Appends `v` as LEB128 at `buf[at..]`; returns the new end.
fn put_varint(buf: &mut [u8; MAX_FIXED_BYTES], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        buf[at] = v as u8 | 0x80;
        v >>= 7;
        at += 1;
    }
    buf[at] = v as u8;
    at + 1
}

fn zigzag(d: i32) -> u32 {
    ((d << 1) ^ (d >> 31)) as u32
}

fn unzigzag(z: u32) -> i32 {
    (z >> 1) as i32 ^ -((z & 1) as i32)
}

/// Encodes events one at a time, as the recorder logs them: a few bytes
/// per event written once, instead of a whole record kept for later.
#[derive(Debug, Default)]
pub struct Encoder {
    out: Vec<u8>,
    count: usize,
    first: u64,
    icount: u64,
    pc: u32,
}

impl Encoder {
    pub fn with_capacity(bytes: usize) -> Encoder {
        Encoder {
            out: Vec::with_capacity(bytes),
            ..Encoder::default()
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's first icount, once it holds an event.
    pub fn first_icount(&self) -> Option<u64> {
        (self.count > 0).then_some(self.first)
    }

    /// Appends an event's fixed part, written by `fill` straight into the
    /// buffer (bytes built elsewhere and copied in stall on store
    /// forwarding, or call memmove for a few bytes); `fill` returns its
    /// length.
    #[inline]
    fn put(&mut self, fill: impl FnOnce(&mut [u8; MAX_FIXED_BYTES]) -> usize) {
        let len = self.out.len();
        self.out.resize(len + MAX_FIXED_BYTES, 0);
        let n = match <&mut [u8; MAX_FIXED_BYTES]>::try_from(&mut self.out[len..]) {
            Ok(buf) => fill(buf),
            Err(_) => unreachable!("resized by MAX_FIXED_BYTES just above"),
        };
        self.out.truncate(len + n);
    }

    pub fn push(&mut self, e: &EventRecord) {
        self.push_view(e.icount, e.pc, EventView::of(&e.event));
    }

    /// Appends one event of a batch. Inline: the writer thread's loop over
    /// a batch spent a fifth of its time calling it.
    #[inline]
    pub fn push_view(&mut self, icount: u64, pc: u32, view: EventView<'_>) {
        if self.count == 0 {
            self.put(|buf| put_varint(buf, 0, icount));
            self.first = icount;
            self.icount = icount;
            self.pc = 0;
        }
        self.count += 1;
        let icount_delta = icount.wrapping_sub(self.icount);
        let pc_delta = u64::from(zigzag(pc.wrapping_sub(self.pc) as i32));
        self.icount = icount;
        self.pc = pc;
        let head = |buf: &mut [u8; MAX_FIXED_BYTES]| {
            let n = put_varint(buf, 0, icount_delta);
            put_varint(buf, n, pc_delta)
        };
        let wide_io;
        let other = match view {
            EventView::Io(a) if a.size <= IO_SIZE => {
                return self.put(|buf| {
                    let n = head(buf);
                    buf[n] = TAG_IO | if a.mmio { IO_MMIO } else { 0 } | if a.write { IO_WRITE } else { 0 } | a.size;
                    let n = put_varint(buf, n + 1, u64::from(a.addr));
                    put_varint(buf, n, u64::from(a.value))
                })
            }
            EventView::Interrupt(vector) => {
                return self.put(|buf| {
                    let n = head(buf);
                    buf[n] = TAG_INTERRUPT;
                    buf[n + 1] = vector;
                    n + 2
                })
            }
            EventView::Io(a) => {
                wide_io = Event::from(a);
                &wide_io
            }
            EventView::Other(other) => other,
        };
        self.put(|buf| {
            let n = head(buf);
            buf[n] = TAG_EVENT;
            n + 1
        });
        // Writing to a Vec cannot fail; an Event always serializes.
        let out = std::mem::take(&mut self.out);
        self.out = match postcard::to_extend(other, out) {
            Ok(out) => out,
            Err(_) => unreachable!("postcard writes any Event to a Vec"),
        };
    }

    /// The encoded batch; the encoder starts a new one in a new buffer of
    /// the same capacity.
    pub fn take(&mut self) -> Vec<u8> {
        self.count = 0;
        let capacity = self.out.capacity();
        std::mem::replace(&mut self.out, Vec::with_capacity(capacity))
    }

    /// The batch encoded so far.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// Starts a new batch in the same buffer.
    pub fn clear(&mut self) {
        self.out.clear();
        self.count = 0;
    }
}

/// Encodes `events` as an event frame's batch.
pub fn encode(events: &[EventRecord]) -> Vec<u8> {
    let mut encoder = Encoder::with_capacity(events.len() * 8 + 16);
    for e in events {
        encoder.push(e);
    }
    encoder.take()
}

/// Why an event frame's batch does not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the batch ends inside an event (byte {0})")]
    Truncated(usize),
    #[error("a varint at byte {0} is too long for its field")]
    Overlong(usize),
    #[error("more than {MAX_EVENTS} events in one batch")]
    TooMany,
    #[error("unknown event tag {tag:#x} at byte {at}")]
    Tag { tag: u8, at: usize },
    #[error("event at byte {at} does not decode")]
    Event {
        at: usize,
        #[source]
        source: postcard::Error,
    },
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    /// A LEB128 value of at most `bits` bits.
    fn varint(&mut self, bits: u32) -> Result<u64, DecodeError> {
        let start = self.at;
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            let low = u64::from(b & 0x7f);
            if shift >= bits || (shift > 0 && bits - shift < 7 && low >> (bits - shift) != 0) {
                return Err(DecodeError::Overlong(start));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn varint_u32(&mut self) -> Result<u32, DecodeError> {
        // At most 32 bits by the check in varint.
        Ok(self.varint(32)? as u32)
    }
}

/// Decodes an event frame's batch.
pub fn decode(bytes: &[u8]) -> Result<Vec<EventRecord>, DecodeError> {
    let mut c = Cursor { bytes, at: 0 };
    let mut events = Vec::new();
    if bytes.is_empty() {
        return Ok(events);
    }
    let mut icount = c.varint(64)?;
    let mut pc = 0u32;
    while c.at < bytes.len() {
        if events.len() == MAX_EVENTS {
            return Err(DecodeError::TooMany);
        }
        icount = icount.wrapping_add(c.varint(64)?);
        pc = pc.wrapping_add(unzigzag(c.varint_u32()?) as u32);
        let at = c.at;
        let tag = c.byte()?;
        let event = if tag & TAG_IO != 0 {
            Event::Io {
                mmio: tag & IO_MMIO != 0,
                write: tag & IO_WRITE != 0,
                size: tag & IO_SIZE,
                addr: c.varint_u32()?,
                value: c.varint_u32()?,
            }
        } else if tag == TAG_INTERRUPT {
            Event::Interrupt { vector: c.byte()? }
        } else if tag == TAG_EVENT {
            let (event, rest) = postcard::take_from_bytes::<Event>(&bytes[c.at..])
                .map_err(|source| DecodeError::Event { at, source })?;
            c.at = bytes.len() - rest.len();
            event
        } else {
            return Err(DecodeError::Tag { tag, at });
        };
        events.push(EventRecord { icount, pc, event });
    }
    if events.is_empty() {
        // A first icount with no event after it.
        return Err(DecodeError::Truncated(c.at));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm::events::{ExitReason, PatchCause};

    fn sample() -> Vec<EventRecord> {
        let io = |icount, pc, addr, size, value, write, mmio| EventRecord {
            icount,
            pc,
            event: Event::Io {
                addr,
                mmio,
                size,
                value,
                write,
            },
        };
        vec![
            io(100, 0x1000, 0x3f8, 1, 0x41, true, false),
            io(100, 0x0ff0, 0x60, 1, 0xff, false, false),
            io(u64::MAX, 0xffff_fff0, 0xfee0_00b0, 4, u32::MAX, true, true),
            // Out of order and wrapping: still encodes exactly.
            io(7, 0, 0, 0, 0, false, false),
            io(8, 5, 0x10, 32, 1, false, false),
            EventRecord {
                icount: 9,
                pc: 0x8000_0000,
                event: Event::Interrupt { vector: 0x20 },
            },
            EventRecord {
                icount: 1 << 40,
                pc: 0xc010_0000,
                event: Event::PatchInstalled {
                    site: 0xc010_0000,
                    phys: 0x10_0000,
                    mnemonic: "cli".into(),
                    cause: PatchCause::Hot(40),
                },
            },
            EventRecord {
                icount: (1 << 40) + 1,
                pc: 3,
                event: Event::Trap {
                    reason: ExitReason::Fault(13),
                },
            },
        ]
    }

    #[test]
    fn every_event_round_trips() {
        let events = sample();
        assert_eq!(decode(&encode(&events)).expect("decodes"), events);
        assert_eq!(decode(&encode(&[])).expect("decodes"), Vec::new());
    }

    #[test]
    fn a_batch_holds_at_most_the_events_the_recorder_writes() {
        let event = EventRecord {
            icount: 1,
            pc: 2,
            event: Event::Interrupt { vector: 0x20 },
        };
        let full = vec![event.clone(); MAX_EVENTS];
        assert_eq!(decode(&encode(&full)).expect("decodes").len(), MAX_EVENTS);
        let over = vec![event; MAX_EVENTS + 1];
        assert!(matches!(decode(&encode(&over)), Err(DecodeError::TooMany)));
    }

    #[test]
    fn a_port_access_takes_a_few_bytes() {
        let events: Vec<EventRecord> = (0..1000u32)
            .map(|i| EventRecord {
                icount: 5_000_000_000 + u64::from(i) * 3,
                pc: 0xc000_1000 + (i % 2) * 4,
                event: Event::Io {
                    addr: 0x71,
                    mmio: false,
                    size: 1,
                    value: i & 0xff,
                    write: i % 2 == 0,
                },
            })
            .collect();
        let bytes = encode(&events);
        assert!(bytes.len() <= 20 + 1000 * 6, "{} bytes", bytes.len());
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let events = sample();
        let bytes = encode(&events);
        // A cut inside an event is an error; one between events decodes to
        // the events before it (the frame's CRC and length catch that cut).
        let mut whole = 0;
        for cut in 0..bytes.len() {
            if let Ok(prefix) = decode(&bytes[..cut]) {
                assert_eq!(prefix[..], events[..prefix.len()], "cut at {cut}");
                assert!(prefix.len() < events.len());
                whole += 1;
            }
        }
        assert_eq!(whole, events.len(), "one clean cut per event");
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                // A flipped byte may still decode (a changed value); it must
                // never panic or claim more events than bytes.
                let _ = decode(&b);
            }
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(decode(&long), Err(DecodeError::Truncated(_))));
        // An overlong varint in a 32-bit field (the pc delta).
        assert!(matches!(
            decode(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x80, 0, 0]),
            Err(DecodeError::Overlong(_))
        ));
    }
}
