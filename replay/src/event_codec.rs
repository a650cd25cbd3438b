//! The compact encoding of an event frame (docs/trace-format.md, "Events").
//!
//! A guest that does port I/O in a loop logs an event every few
//! instructions, so the bytes per event bound how fast a recorder can go:
//! the writer thread serializes and compresses every one. Field-by-field
//! postcard spent most of that time copying varints one at a time and made
//! 14 bytes of a port access; this encoding writes a new access in about 7
//! and leaves the rare events (patches, scans, traps) to postcard.
//!
//! A loop's accesses repeat: the same port from the same instruction, the
//! same number of instructions after the event before. Such an access is
//! written as "again, as the event k back" in one byte, or in one byte and
//! its value, which costs the writer a few compares instead of four
//! varints.
//!
//! ```text
//! batch := (varint first icount, event+)?     (empty: no events)
//! event := tag, body
//! tag   := 0x80 | mmio << 6 | write << 5 | size   -> head, varint addr, varint value (Io, size < 32)
//!        | 0x10 | (k - 1), k = 1..=4              -> nothing: Io as the event k back
//!        | 0x18 | (k - 1), k = 1..=4              -> varint value: Io as the event k back but the value
//!        | 1                                       -> head, vector byte (Interrupt)
//!        | 0                                       -> head, postcard vm::events::Event (any other)
//! head  := varint icount delta, varint zigzag pc delta
//! ```
//! Deltas are from the previous event (the first icount's from the batch's
//! first, the first pc's from 0), wrapping, so every batch encodes. "As
//! the event k back" takes its icount delta, pc, tag and address: only an
//! access of the same batch, with a tag of its own, can be repeated, so
//! every batch decodes on its own.

use vm::events::sites::{SiteAccess, MAX_ACCESSES};
use vm::events::{Entry, Event, EventBatch, EventRecord, EventView, IoAccess};

/// Events in one batch at most (what the recorder writes).
pub const MAX_EVENTS: usize = 8192;

const TAG_EVENT: u8 = 0;
const TAG_INTERRUPT: u8 = 1;
const TAG_IO: u8 = 0x80;
const IO_MMIO: u8 = 0x40;
const IO_WRITE: u8 = 0x20;
const IO_SIZE: u8 = 0x1f;
/// "Again as the event k back" (k - 1 in the low bits), with the same
/// value or with the value following.
const TAG_AGAIN: u8 = 0x10;
const TAG_AGAIN_VALUE: u8 = 0x18;
const AGAIN_BACK: u8 = 0x03;
/// How far back a repeat may refer: a loop's period in events.
const HISTORY: usize = 4;
const _: () = assert!(HISTORY == AGAIN_BACK as usize + 1);
/// The most bytes of an event's fixed part: tag, icount, pc, addr, value.
const MAX_FIXED_BYTES: usize = 1 + 10 + 5 + 5 + 5;
/// The most bytes of a repeat: its tag and a value.
const REPEAT_MAX_BYTES: usize = 1 + 5;

/// Appends `v` as LEB128 at `buf[at..]`; returns the new end.
#[inline(always)]
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

fn io_tag(a: &IoAccess) -> u8 {
    TAG_IO | if a.mmio { IO_MMIO } else { 0 } | if a.write { IO_WRITE } else { 0 } | a.size
}

/// An event's fixed part, written into the room at the buffer's end.
#[inline(always)]
fn fixed_part(buf: &mut [u8], at: usize) -> &mut [u8; MAX_FIXED_BYTES] {
    match buf
        .get_mut(at..at + MAX_FIXED_BYTES)
        .map(<&mut [u8; MAX_FIXED_BYTES]>::try_from)
    {
        Some(Ok(part)) => part,
        _ => unreachable!("the encoder keeps MAX_FIXED_BYTES of room"),
    }
}

/// Grows the room to `2 * MAX_FIXED_BYTES` at least past `used`. It never
/// shrinks: the recorder's frames are alike, and one that needed more room
/// (a long event) is followed by others.
#[cold]
fn grow(buf: &mut Vec<u8>, used: usize) {
    let n = (buf.len() * 2).max(used + 2 * MAX_FIXED_BYTES);
    buf.resize(n, 0);
}

/// Writes an event that is not a frequent one at `at`, with postcard;
/// returns the new end.
#[cold]
#[inline(never)]
fn put_other(buf: &mut Vec<u8>, at: usize, icount_delta: u64, pc_delta: u32, other: &Event) -> usize {
    let out = fixed_part(buf, at);
    out[0] = TAG_EVENT;
    let n = put_varint(out, 1, icount_delta);
    let n = put_varint(out, n, u64::from(pc_delta));
    let at = at + n;
    loop {
        let room = buf.len() - at;
        match postcard::to_slice(other, &mut buf[at..]) {
            Ok(written) => return at + written.len(),
            // Too little room: grow it (strictly) and write again.
            Err(postcard::Error::SerializeBufferFull) => buf.resize(2 * buf.len() + room, 0),
            Err(_) => unreachable!("postcard writes any Event"),
        }
    }
}

/// Writes the run of repeats of the event `k` back that starts at
/// `entries[i]`, as a port loop makes them; returns where the run ends.
/// The event before `i` repeated the one `k` before it, and the `k` events
/// before `i` are accesses of at most [`IO_SIZE`] bytes, so an entry of
/// the same shape as its own `k` back is one too, and its icount delta
/// equals that one's exactly when the icounts `k` apart are as far apart
/// as the pair before: one compare of the shape and one of a subtraction
/// an event, no search and no history kept. (Only after a repeat: events
/// that never repeat would pay the compare twice.) 2.7 ns an event where
/// the search took 3.3.
#[inline(always)]
fn repeat_run(entries: &[Entry], mut i: usize, k: usize, buf: &mut Vec<u8>, len: &mut usize) -> usize {
    let tag = TAG_AGAIN | (k - 1) as u8;
    let span = entries[i - 1].icount().wrapping_sub(entries[i - 1 - k].icount());
    let end = entries.len();
    let mut at = *len;
    while i < end {
        // Events that fit in the room without checking it: each takes a
        // tag and a value at most, and a value is written into a fixed
        // part, which needs MAX_FIXED_BYTES of room (the room is at least
        // that much here).
        let stop = end.min(i + 1 + (buf.len() - at - MAX_FIXED_BYTES) / REPEAT_MAX_BYTES);
        let from = i;
        while i < stop {
            let (e, back) = (&entries[i], &entries[i - k]);
            if e.icount().wrapping_sub(back.icount()) != span || !back.same_shape(e) {
                break;
            }
            let value = e.value();
            if value == back.value() {
                buf[at] = tag;
                at += 1;
            } else {
                let out = fixed_part(buf, at);
                out[0] = tag | (TAG_AGAIN_VALUE ^ TAG_AGAIN);
                at += put_varint(out, 1, u64::from(value));
            }
            i += 1;
        }
        if at + MAX_FIXED_BYTES > buf.len() {
            grow(buf, at);
        }
        if i < stop || i == from {
            break;
        }
    }
    *len = at;
    i
}

/// The icount of the first event `e`, an entry of `batch`, holds.
fn first_icount(batch: &EventBatch, e: &Entry) -> u64 {
    match e.site() {
        Some(number) => {
            let past = batch.site(number).accesses().first().map_or(0, |a| a.past);
            e.icount().wrapping_add(u64::from(past))
        }
        None => e.icount(),
    }
}

/// Writes the run of grouped entries from `entries[i]` that repeat the
/// entry before each, as a port loop makes them: the same site (of `k`
/// accesses) and `span` instructions after it, so that each event repeats
/// the one `k` back. Returns where the run ends. One compare of the site
/// and one of the distance an entry, and a byte or two an access.
fn group_run(entries: &[Entry], i: usize, k: usize, span: u64, buf: &mut Vec<u8>, len: &mut usize) -> usize {
    // A loop over the accesses as a constant: the values stay in registers
    // (indexed, they went through the stack and each load waited on it).
    match k {
        1 => group_run_of::<1>(entries, i, span, buf, len),
        2 => group_run_of::<2>(entries, i, span, buf, len),
        _ => group_run_of::<3>(entries, i, span, buf, len),
    }
}

#[inline(always)]
fn group_run_of<const K: usize>(
    entries: &[Entry],
    mut i: usize,
    span: u64,
    buf: &mut Vec<u8>,
    len: &mut usize,
) -> usize {
    let same = TAG_AGAIN | (K - 1) as u8;
    let new_value = TAG_AGAIN_VALUE | (K - 1) as u8;
    let mut at = *len;
    while i < entries.len() {
        let (e, back) = (&entries[i], &entries[i - 1]);
        if e.site() != back.site() || e.icount().wrapping_sub(back.icount()) != span {
            break;
        }
        if at + (K + 1) * MAX_FIXED_BYTES > buf.len() {
            grow(buf, at + K * MAX_FIXED_BYTES);
        }
        let (values, old) = (e.site_values(), back.site_values());
        for j in 0..K {
            if values[j] == old[j] {
                buf[at] = same;
                at += 1;
            } else {
                let out = fixed_part(buf, at);
                out[0] = new_value;
                at += put_varint(out, 1, u64::from(values[j]));
            }
        }
        i += 1;
    }
    *len = at;
    i
}

/// Writes the events of grouped entry `e` of site `accesses` in full, the
/// first `first_delta` instructions after the event before, at
/// `pc_before` (a repeat of the entry before is [`group_run`]'s).
#[inline(always)]
fn put_group(
    buf: &mut Vec<u8>,
    len: &mut usize,
    e: &Entry,
    accesses: &[SiteAccess],
    first_delta: u64,
    mut pc_before: u32,
) {
    if *len + (MAX_ACCESSES + 1) * MAX_FIXED_BYTES > buf.len() {
        grow(buf, *len + MAX_ACCESSES * MAX_FIXED_BYTES);
    }
    let values = e.site_values();
    let mut past_before = None;
    for (a, &value) in accesses.iter().zip(values.iter()) {
        let delta = match past_before {
            None => first_delta,
            Some(p) => u64::from(a.past).wrapping_sub(u64::from(p)),
        };
        past_before = Some(a.past);
        let out = fixed_part(buf, *len);
        out[0] = io_tag(&a.access(value));
        let n = put_varint(out, 1, delta);
        let n = put_varint(out, n, u64::from(zigzag(a.pc.wrapping_sub(pc_before) as i32)));
        let n = put_varint(out, n, u64::from(a.addr));
        *len += put_varint(out, n, u64::from(value));
        pc_before = a.pc;
    }
}

/// Encodes the guest's event batches into frames' batches: a few bytes per
/// event written once, instead of a whole record kept for later.
///
/// The writer thread encodes every event a guest logs, and a port loop
/// logs one every few nanoseconds, so [`Encoder::push_from`] reads the
/// guest's entries field by field in one loop with its state in locals,
/// the entries themselves serving as the history a repeat is found in,
/// and writes into a buffer that always has room. (Through `&mut self`, a
/// `Vec` and an event view per event, it cost the writer 2.7 times as
/// much, and the recording waited for it.)
#[derive(Debug)]
pub struct Encoder {
    /// Its first `used` bytes are the batch; the rest is room, grown
    /// ahead of need so that an event's fixed part never checks for it.
    buf: Vec<u8>,
    used: usize,
    count: usize,
    first: u64,
    icount: u64,
    pc: u32,
    /// The repeat distance that last matched, tried first.
    period: usize,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::with_capacity(0)
    }
}

impl Encoder {
    pub fn with_capacity(bytes: usize) -> Encoder {
        Encoder {
            buf: vec![0; bytes],
            used: 0,
            count: 0,
            first: 0,
            icount: 0,
            pc: 0,
            period: 1,
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

    /// Appends the events of `batch` from its entry `*at` on until this
    /// batch holds [`MAX_EVENTS`] or `batch` ends, and moves `*at` past
    /// them; returns whether this batch is full (the writer then ends its
    /// frame and calls again for the rest).
    pub fn push_from(&mut self, batch: &EventBatch, at: &mut usize) -> bool {
        self.fill(batch, at, MAX_EVENTS)
    }

    /// [`Encoder::push_from`] up to `limit` events in this batch instead
    /// of [`MAX_EVENTS`].
    fn fill(&mut self, batch: &EventBatch, at: &mut usize, limit: usize) -> bool {
        let start = *at;
        let all = batch.entries();
        // Events this call may add: an entry is one, a grouped one a few.
        let room = limit.saturating_sub(self.count);
        let end = all.len().min(start.saturating_add(room));
        if start >= end {
            return self.count >= limit || start < all.len();
        }
        let entries = &all[..end];
        if self.used + 2 * MAX_FIXED_BYTES > self.buf.len() {
            grow(&mut self.buf, self.used);
        }
        if self.count == 0 {
            let first = first_icount(batch, &entries[start]);
            self.used = put_varint(fixed_part(&mut self.buf, 0), 0, first);
            self.first = first;
            self.icount = first;
            self.pc = 0;
        }
        // The buffer as a local: through `self`, every byte stored made the
        // loop load its length and address again.
        let mut buf = std::mem::take(&mut self.buf);
        let mut len = self.used;
        let mut last_icount = self.icount;
        // The pc of the event before `plain_from`.
        let mut pc_before = self.pc;
        let mut period = self.period;
        // An entry looks back for a repeat at entries of this call only,
        // all of them events of this batch, and not past a grouped one
        // (whose events are not one an entry): from `plain_from`. Their
        // icount deltas by index.
        let mut plain_from = start;
        let mut deltas = [0u64; HISTORY];
        let mut events = 0;
        // The grouped entry before, by index, and its first event's
        // icount delta: a repeat of it is a repeat of each of its events.
        let mut group_before = None;
        let mut i = start;
        // The event before was a repeat of the one `period` back.
        let mut repeating = false;
        while i < end && events < room {
            // A run of repeats of the event `period` back, in a loop of
            // its own (the pair before the run inside this call).
            if repeating && i - plain_from > period && entries[i - period..i].iter().all(|b| b.is_access_up_to(IO_SIZE))
            {
                let run_end = end.min(i + (room - events));
                let from = i;
                i = repeat_run(&entries[..run_end], i, period, &mut buf, &mut len);
                events += i - from;
                // The deltas the search below compares, of the run's last
                // events (the run began past `plain_from`).
                for j in i.saturating_sub(HISTORY).max(plain_from + 1)..i {
                    deltas[j % HISTORY] = entries[j].icount().wrapping_sub(entries[j - 1].icount());
                }
                last_icount = entries[i - 1].icount();
                if i == end || events == room {
                    break;
                }
            }
            let e = &entries[i];
            if let Some(number) = e.site() {
                let accesses = batch.site(number).accesses();
                if events + accesses.len() > room {
                    // Whole into the next batch.
                    break;
                }
                let first_delta = first_icount(batch, e).wrapping_sub(last_icount);
                let again = i > start
                    && entries[i - 1].site() == Some(number)
                    && group_before == Some((i - 1, first_delta))
                    && accesses.len() <= HISTORY;
                let k = accesses.len();
                if again {
                    // A loop's: it and the entries after it that repeat
                    // the one before at the same distance, in a loop of
                    // their own (at least `e` fits the room).
                    let span = e.icount().wrapping_sub(entries[i - 1].icount());
                    let most = (room - events) / k;
                    let from = i;
                    i = group_run(&entries[..end.min(i + most)], i, k, span, &mut buf, &mut len);
                    events += (i - from) * k;
                } else {
                    let last_pc = if i > plain_from { entries[i - 1].pc() } else { pc_before };
                    put_group(&mut buf, &mut len, e, accesses, first_delta, last_pc);
                    i += 1;
                    events += k;
                }
                if let Some(last) = accesses.last() {
                    last_icount = entries[i - 1].icount().wrapping_add(u64::from(last.past));
                    pc_before = last.pc;
                }
                group_before = Some((i - 1, first_delta));
                repeating = false;
                plain_from = i;
                continue;
            }
            let icount_delta = e.icount().wrapping_sub(last_icount);
            last_icount = e.icount();
            // The pc before, only a full event needs.
            let last_pc = || if i > plain_from { entries[i - 1].pc() } else { pc_before };
            // `e` is an access, so one of the same shape is one too.
            let again = |k: usize| {
                k <= i - plain_from && entries[i - k].same_shape(e) && deltas[(i - k) % HISTORY] == icount_delta
            };
            match e.access() {
                Some(access) if access.size <= IO_SIZE => {
                    let k = if again(period) {
                        period
                    } else {
                        (1..=HISTORY).find(|&k| again(k)).unwrap_or(0)
                    };
                    let out = fixed_part(&mut buf, len);
                    repeating = k != 0;
                    len += if k == 0 {
                        out[0] = io_tag(&access);
                        let pc_delta = zigzag(e.pc().wrapping_sub(last_pc()) as i32);
                        let n = put_varint(out, 1, icount_delta);
                        let n = put_varint(out, n, u64::from(pc_delta));
                        let n = put_varint(out, n, u64::from(access.addr));
                        put_varint(out, n, u64::from(access.value))
                    } else {
                        period = k;
                        if entries[i - k].value() == e.value() {
                            out[0] = TAG_AGAIN | (k - 1) as u8;
                            1
                        } else {
                            out[0] = TAG_AGAIN_VALUE | (k - 1) as u8;
                            put_varint(out, 1, u64::from(e.value()))
                        }
                    };
                }
                _ => {
                    repeating = false;
                    let pc_delta = zigzag(e.pc().wrapping_sub(last_pc()) as i32);
                    len = match batch.view(e) {
                        EventView::Interrupt(vector) => {
                            let out = fixed_part(&mut buf, len);
                            out[0] = TAG_INTERRUPT;
                            let n = put_varint(out, 1, icount_delta);
                            let n = put_varint(out, n, u64::from(pc_delta));
                            out[n] = vector;
                            len + n + 1
                        }
                        EventView::Io(a) => put_other(&mut buf, len, icount_delta, pc_delta, &Event::from(a)),
                        EventView::Other(other) => put_other(&mut buf, len, icount_delta, pc_delta, other),
                    };
                }
            }
            deltas[i % HISTORY] = icount_delta;
            if len + MAX_FIXED_BYTES > buf.len() {
                grow(&mut buf, len);
            }
            events += 1;
            i += 1;
        }
        self.buf = buf;
        self.pc = if i > plain_from { entries[i - 1].pc() } else { pc_before };
        *at = i;
        self.used = len;
        self.count += events;
        self.icount = last_icount;
        self.period = period;
        // Stopped before the batch's end: this one is full.
        self.count >= limit || i < all.len()
    }

    /// The encoded batch; the encoder starts a new one.
    pub fn take(&mut self) -> Vec<u8> {
        let bytes = self.bytes().to_vec();
        self.clear();
        bytes
    }

    /// The batch encoded so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.used]
    }

    /// Starts a new batch in the same buffer.
    pub fn clear(&mut self) {
        self.used = 0;
        self.count = 0;
    }
}

/// Encodes `events` as one event frame's batch, however many (a reader
/// refuses more than [`MAX_EVENTS`]: tests build such batches).
pub fn encode(events: &[EventRecord]) -> Vec<u8> {
    let mut batch = EventBatch::with_capacity(events.len());
    for e in events {
        batch.push(e.icount, e.pc, e.event.clone());
    }
    let mut encoder = Encoder::with_capacity(events.len() * 8 + 16);
    encoder.fill(&batch, &mut 0, usize::MAX);
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
    #[error("the repeat at byte {at} names the event {back} back, which is not a device access of this batch")]
    Again { at: usize, back: usize },
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

/// What a repeat takes from the event it names: all but, perhaps, the
/// value. `tag` is 0 for an event that cannot be repeated.
#[derive(Clone, Copy, Debug, Default)]
struct Shape {
    icount_delta: u64,
    pc: u32,
    tag: u8,
    addr: u32,
    value: u32,
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
    // The last HISTORY events' shapes, by index; tag 0 before the first.
    let mut shapes = [Shape::default(); HISTORY];
    while c.at < bytes.len() {
        if events.len() == MAX_EVENTS {
            return Err(DecodeError::TooMany);
        }
        let at = c.at;
        let tag = c.byte()?;
        let repeat = matches!(tag & !AGAIN_BACK, TAG_AGAIN | TAG_AGAIN_VALUE);
        if !(repeat || tag & TAG_IO != 0 || tag == TAG_INTERRUPT || tag == TAG_EVENT) {
            return Err(DecodeError::Tag { tag, at });
        }
        let shape = if repeat {
            let back = usize::from(tag & AGAIN_BACK) + 1;
            let mut shape = match events.len().checked_sub(back) {
                Some(j) => shapes[j % HISTORY],
                None => Shape::default(),
            };
            if shape.tag & TAG_IO == 0 {
                return Err(DecodeError::Again { at, back });
            }
            if tag & !AGAIN_BACK == TAG_AGAIN_VALUE {
                shape.value = c.varint_u32()?;
            }
            shape
        } else {
            let icount_delta = c.varint(64)?;
            let pc_delta = unzigzag(c.varint_u32()?);
            let (addr, value) = if tag & TAG_IO != 0 {
                (c.varint_u32()?, c.varint_u32()?)
            } else {
                (0, 0)
            };
            Shape {
                icount_delta,
                pc: pc.wrapping_add(pc_delta as u32),
                tag: if tag & TAG_IO != 0 { tag } else { 0 },
                addr,
                value,
            }
        };
        icount = icount.wrapping_add(shape.icount_delta);
        pc = shape.pc;
        let event = if shape.tag & TAG_IO != 0 {
            Event::Io {
                mmio: shape.tag & IO_MMIO != 0,
                write: shape.tag & IO_WRITE != 0,
                size: shape.tag & IO_SIZE,
                addr: shape.addr,
                value: shape.value,
            }
        } else if tag == TAG_INTERRUPT {
            Event::Interrupt { vector: c.byte()? }
        } else {
            let (event, rest) = postcard::take_from_bytes::<Event>(&bytes[c.at..])
                .map_err(|source| DecodeError::Event { at, source })?;
            c.at = bytes.len() - rest.len();
            event
        };
        shapes[events.len() % HISTORY] = shape;
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
        // An overlong varint in a 32-bit field (an access's pc delta).
        assert!(matches!(
            decode(&[1, TAG_IO | 1, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x80, 0, 0]),
            Err(DecodeError::Overlong(_))
        ));
    }

    fn io(icount: u64, pc: u32, addr: u32, value: u32, write: bool) -> EventRecord {
        EventRecord {
            icount,
            pc,
            event: Event::Io {
                addr,
                mmio: false,
                size: 1,
                value,
                write,
            },
        }
    }

    /// A port loop of `period` accesses an iteration, `iterations` times;
    /// the first access's value changes every iteration.
    fn port_loop(period: u32, iterations: u32) -> Vec<EventRecord> {
        (0..iterations)
            .flat_map(|i| {
                (0..period).map(move |p| {
                    let icount = 1_000 + u64::from(i) * 40 + u64::from(p) * 7;
                    let value = if p == 0 { i & 0xff } else { 0xff - p };
                    io(icount, 0xc010_0000 + p * 16, 0x70 + p, value, p == 0)
                })
            })
            .collect()
    }

    #[test]
    fn a_loops_accesses_take_a_byte_or_two() {
        for period in 1..=HISTORY as u32 {
            let events = port_loop(period, 1000);
            let bytes = encode(&events);
            assert_eq!(decode(&bytes).expect("decodes"), events, "period {period}");
            // The first access of an iteration: a byte and its value (two
            // bytes past 127); the others a byte.
            let most = 10 * HISTORY + events.len() + 1000 * 2;
            assert!(
                bytes.len() <= most,
                "period {period}: {} bytes for {}",
                bytes.len(),
                events.len()
            );
        }
        // Farther apart than the history reaches: each access whole.
        let events = port_loop(HISTORY as u32 + 1, 200);
        let bytes = encode(&events);
        assert_eq!(decode(&bytes).expect("decodes"), events);
        assert!(bytes.len() >= events.len() * 5, "{} bytes", bytes.len());
    }

    fn port_0x80_at(icount: u64) -> EventRecord {
        io(icount, 0x1000, 0x80, 1, true)
    }

    #[test]
    fn a_repeat_is_of_an_access_with_all_but_its_value_the_same() {
        let base = io(100, 0x1000, 0x80, 1, true);
        let variants = [
            io(110, 0x1000, 0x80, 1, true),  // another icount delta
            io(105, 0x1004, 0x80, 1, true),  // another pc
            io(105, 0x1000, 0x81, 1, true),  // another port
            io(105, 0x1000, 0x80, 1, false), // a read
            io(105, 0x1000, 0x80, 2, true),  // another value only
            EventRecord {
                icount: 105,
                pc: 0x1000,
                event: Event::Io {
                    addr: 0x80,
                    mmio: true,
                    size: 1,
                    value: 1,
                    write: true,
                },
            },
        ];
        for v in variants {
            // The variant comes 5 after the base as the base came 5 after
            // its own predecessor.
            let first = io(95, 0x1000, 0x80, 1, true);
            let events = vec![first, base.clone(), v.clone()];
            let bytes = encode(&events);
            assert_eq!(decode(&bytes).expect("decodes"), events, "{v:?}");
        }
        // The same again is one byte.
        let events = vec![port_0x80_at(95), port_0x80_at(100), port_0x80_at(105)];
        let two = encode(&events[..2]).len();
        assert_eq!(encode(&events).len(), two + 1);
        assert_eq!(decode(&encode(&events)).expect("decodes"), events);
    }

    #[test]
    fn a_repeat_names_an_access_of_its_own_batch() {
        // A repeat first in a batch: nothing before it.
        assert!(matches!(
            decode(&[5, TAG_AGAIN]),
            Err(DecodeError::Again { at: 1, back: 1 })
        ));
        // Two back when only one event came before.
        let mut bytes = encode(&[io(5, 0x10, 0x80, 0, true)]);
        bytes.push(TAG_AGAIN | 1);
        assert!(matches!(decode(&bytes), Err(DecodeError::Again { back: 2, .. })));
        // An interrupt is not an access.
        let mut bytes = encode(&[EventRecord {
            icount: 5,
            pc: 0x10,
            event: Event::Interrupt { vector: 0x20 },
        }]);
        bytes.push(TAG_AGAIN_VALUE);
        bytes.push(3);
        assert!(matches!(decode(&bytes), Err(DecodeError::Again { back: 1, .. })));
        // Nor is an access too wide for a tag (written as any other event).
        let wide = sample()[4].clone();
        assert!(matches!(wide.event, Event::Io { size: 32, .. }));
        let mut bytes = encode(&[wide]);
        bytes.push(TAG_AGAIN);
        assert!(matches!(decode(&bytes), Err(DecodeError::Again { back: 1, .. })));
        let mut bytes = encode(&[io(8, 5, 0x10, 1, false)]);
        // The tags between the repeats' and above are unknown.
        for tag in [2u8, 0x0f, 0x14, 0x17, 0x1c, 0x7f] {
            bytes.truncate(encode(&[io(8, 5, 0x10, 1, false)]).len());
            bytes.push(tag);
            assert!(matches!(decode(&bytes), Err(DecodeError::Tag { .. })), "tag {tag:#x}");
        }
    }

    /// A small deterministic generator (no crate needed for a test).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn random_streams_round_trip_across_frames() {
        for seed in 0..200 {
            let mut rng = Lcg(seed);
            let mut events = Vec::new();
            let mut icount = rng.next();
            let sites: Vec<(u32, u32, bool)> = (0..6)
                .map(|_| (rng.next() as u32, rng.next() as u32 % 0x400, rng.next() % 2 == 0))
                .collect();
            let n = if seed % 10 == 0 { MAX_EVENTS + 500 } else { 300 };
            for _ in 0..n {
                icount = icount.wrapping_add([0, 1, 5, 5, 5, 1 << 40][rng.next() as usize % 6]);
                let (pc, port, write) = sites[rng.next() as usize % sites.len()];
                let event = match rng.next() % 20 {
                    0 => Event::Interrupt {
                        vector: rng.next() as u8,
                    },
                    1 => Event::Trap {
                        reason: ExitReason::Fault(13),
                    },
                    _ => Event::Io {
                        addr: port,
                        mmio: false,
                        size: 1,
                        value: [0xff, rng.next() as u32 & 0xff, rng.next() as u32][rng.next() as usize % 3],
                        write,
                    },
                };
                events.push(EventRecord { icount, pc, event });
            }
            // The guest's batches, cut at random places.
            let mut batches = vec![EventBatch::default()];
            for e in &events {
                if rng.next() % 500 == 0 {
                    batches.push(EventBatch::default());
                }
                if let Some(b) = batches.last_mut() {
                    b.push(e.icount, e.pc, e.event.clone());
                }
            }
            let mut encoder = Encoder::with_capacity(16);
            let mut frames = Vec::new();
            for batch in &batches {
                let mut at = 0;
                while encoder.push_from(batch, &mut at) {
                    frames.push(encoder.take());
                }
                assert_eq!(at, batch.len());
            }
            if !encoder.is_empty() {
                frames.push(encoder.take());
            }
            let decoded: Vec<EventRecord> = frames.iter().flat_map(|f| decode(f).expect("decodes")).collect();
            assert_eq!(decoded, events, "seed {seed}");
            assert_eq!(frames.len(), events.len().div_ceil(MAX_EVENTS), "seed {seed}");
        }
    }

    /// Encodes `batches` in frames as the writer does; the frames.
    fn frames_of(batches: &[EventBatch], capacity: usize) -> Vec<Vec<u8>> {
        let mut encoder = Encoder::with_capacity(capacity);
        let mut frames = Vec::new();
        for batch in batches {
            let mut at = 0;
            while encoder.push_from(batch, &mut at) {
                assert!(encoder.len() <= MAX_EVENTS);
                frames.push(encoder.take());
            }
            assert_eq!(at, batch.len());
        }
        if !encoder.is_empty() {
            frames.push(encoder.take());
        }
        frames
    }

    // Grouped entries (a translation's run of IN and OUT) among single
    // accesses, interrupts and other events, the same site again and
    // again or not, in batches cut anywhere: every event decodes as the
    // batch gives it, across frames of at most MAX_EVENTS, from encoders
    // with any room.
    #[test]
    fn grouped_entries_round_trip_across_frames() {
        use vm::events::sites::{number, SiteAccess};
        for seed in 0..120 {
            let mut rng = Lcg(seed);
            let site = |rng: &mut Lcg, n: usize| -> Vec<SiteAccess> {
                let mut past = rng.next() as u16 % 4;
                (0..n)
                    .map(|_| {
                        past += 1 + rng.next() as u16 % 3;
                        SiteAccess {
                            pc: 0xC000_0000 | (rng.next() as u32 % 0x1000),
                            addr: rng.next() as u32 % 0x400,
                            size: 1,
                            write: rng.next() % 2 == 0,
                            past,
                        }
                    })
                    .collect()
            };
            let groups: Vec<(u32, usize)> = (1..=3)
                .chain(1..=3)
                .map(|n| (number(&site(&mut rng, n)).expect("numbered"), n))
                .collect();
            let mut batches = vec![EventBatch::default()];
            let mut icount = rng.next();
            let steps = [0u64, 19, 19, 19, 21, 1 << 33];
            let n = if seed % 8 == 0 { MAX_EVENTS + 700 } else { 400 };
            let (mut g, mut same) = (0, 0);
            for i in 0..n as u32 {
                if rng.next() % 300 == 0 {
                    batches.push(EventBatch::default());
                }
                icount = icount.wrapping_add(steps[rng.next() as usize % steps.len()]);
                let b = batches.last_mut().expect("a batch");
                match rng.next() % 12 {
                    0 => b.push(icount, i, Event::Interrupt { vector: i as u8 }),
                    1 => b.push(
                        icount,
                        i,
                        Event::Trap {
                            reason: ExitReason::Fault(13),
                        },
                    ),
                    2 | 3 => b.push_io(
                        icount,
                        0x1000 + i % 3,
                        IoAccess {
                            addr: 0x80,
                            mmio: false,
                            size: 1,
                            value: i % 2,
                            write: true,
                        },
                    ),
                    _ => {
                        // Runs of one site, as a loop makes.
                        if same == 0 {
                            g = rng.next() as usize % groups.len();
                            same = rng.next() % 40;
                        } else {
                            same -= 1;
                        }
                        let values = [rng.next() as u32 % 3, 0xFF, rng.next() as u32];
                        b.push_site(icount, groups[g].0, values);
                    }
                }
            }
            let want: Vec<EventRecord> = batches.iter().flat_map(|b| b.records().collect::<Vec<_>>()).collect();
            let events: usize = batches.iter().map(EventBatch::events).sum();
            assert_eq!(want.len(), events);
            for capacity in [0, 16, 4096] {
                let frames = frames_of(&batches, capacity);
                let decoded: Vec<EventRecord> = frames.iter().flat_map(|f| decode(f).expect("decodes")).collect();
                let first_wrong = decoded.iter().zip(&want).position(|(d, w)| d != w);
                assert_eq!(
                    (decoded.len(), first_wrong),
                    (want.len(), None),
                    "seed {seed}, capacity {capacity}: {:?}",
                    first_wrong.map(|i| (&decoded[i.saturating_sub(2)..=i], &want[i.saturating_sub(2)..=i]))
                );
                assert!(frames.len() <= events.div_ceil(MAX_EVENTS) + 1, "seed {seed}");
            }
        }
    }

    // A loop's grouped entry, the same steps apart each time, takes a
    // byte an access, and one more for a value that changed.
    #[test]
    fn a_loops_grouped_accesses_take_a_byte_or_two() {
        use vm::events::sites::{number, SiteAccess};
        let accesses = [
            SiteAccess {
                pc: 0x0010_4257,
                addr: 0x80,
                size: 1,
                write: true,
                past: 6,
            },
            SiteAccess {
                pc: 0x0010_4260,
                addr: 0x21,
                size: 1,
                write: false,
                past: 10,
            },
        ];
        let site = number(&accesses).expect("numbered");
        let mut batch = EventBatch::default();
        for i in 0..4000u32 {
            batch.push_site(5_000 + 19 * u64::from(i), site, [i & 0x7F, 0xFF, 0]);
        }
        let frames = frames_of(&[batch], 0);
        let bytes: usize = frames.iter().map(Vec::len).sum();
        assert!(bytes < 4000 * 3 + 64, "{bytes} bytes for 8000 accesses");
        let decoded = decode(&frames[0]).expect("decodes");
        assert_eq!(decoded.len(), 8000);
        assert_eq!(decoded[7999].icount, 5_000 + 19 * 3999 + 10);
    }

    // A run of repeats whose values change, into an encoder that starts
    // with no room: every value is written into room the encoder keeps,
    // however the run's stretches fall against the buffer's end (a
    // stretch once counted 6 bytes of room an event where writing a value
    // needs MAX_FIXED_BYTES).
    #[test]
    fn a_run_of_new_values_fits_the_room_from_any_start() {
        for capacity in 0..64 {
            for wide in [false, true] {
                let events: Vec<EventRecord> = (0..200u32)
                    .map(|i| EventRecord {
                        icount: 1_000 + 5 * u64::from(i),
                        pc: 0x1000,
                        event: Event::Io {
                            addr: 0x3F8,
                            mmio: false,
                            size: if wide { 4 } else { 1 },
                            value: if wide { i.wrapping_mul(0x9E37_79B9) } else { i & 0x7F },
                            write: true,
                        },
                    })
                    .collect();
                let mut batch = EventBatch::with_capacity(events.len());
                for r in &events {
                    batch.push(r.icount, r.pc, r.event.clone());
                }
                let mut encoder = Encoder::with_capacity(capacity);
                let mut at = 0;
                assert!(!encoder.push_from(&batch, &mut at));
                assert_eq!(at, events.len());
                assert_eq!(
                    decode(encoder.bytes()).expect("decodes"),
                    events,
                    "capacity {capacity}, wide {wide}"
                );
            }
        }
    }

    // A loop of a byte access and a 32-byte one, the same steps apart: the
    // byte one repeats, the wide one (which only postcard writes) never
    // does, though its shape and delta match (a review found no test with
    // an access past the tag's 31 bytes).
    #[test]
    fn a_wide_access_in_a_loop_is_written_whole_every_time() {
        let events: Vec<EventRecord> = (0..64u32)
            .map(|i| EventRecord {
                icount: 100 + 5 * u64::from(i),
                pc: 0x1000 + (i % 2) * 4,
                event: Event::Io {
                    addr: 0x80 + i % 2,
                    mmio: false,
                    size: if i % 2 == 0 { 1 } else { 32 },
                    value: 7,
                    write: true,
                },
            })
            .collect();
        let bytes = encode(&events);
        assert_eq!(decode(&bytes).expect("decodes"), events);
        let repeats = bytes.iter().filter(|&&b| b & 0xF0 == TAG_AGAIN).count();
        assert!(repeats >= 30, "the byte accesses repeat: {repeats}");
    }
}
