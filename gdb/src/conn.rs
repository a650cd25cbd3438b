//! The connection to one gdb. gdbstub reads and writes it a byte at a
//! time; unbuffered, that is a system call (and, with Nagle off, a TCP
//! segment) per byte. And gdbstub answers an `m` packet in full however
//! long it asks for, one packet-buffer-sized read after another, without
//! stopping at a short read: `m0,ffffffff` streamed megabytes for half a
//! minute while other clients were refused. So a memory read is clamped
//! here, before gdbstub sees it, to what one reply of the advertised
//! packet size holds; gdb's protocol allows the shorter answer, and gdb
//! asks again for the rest.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;

use gdbstub::conn::{Connection, ConnectionExt};

/// The packet buffer gdbstub gets, which is also the PacketSize it tells
/// gdb: the longest packet either side sends.
pub(crate) const PACKET_SIZE: usize = 4096;

/// The most bytes one `m` reply carries: two hex digits each fill the
/// packet size.
pub(crate) const MAX_READ: usize = PACKET_SIZE / 2;

/// Output held before it is sent regardless of a flush: bounds the buffer
/// whatever gdbstub writes.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;

pub(crate) struct Session {
    stream: TcpStream,
    /// Received and not yet vetted: the start of a packet not yet complete.
    incoming: Vec<u8>,
    /// Vetted bytes for gdbstub.
    ready: VecDeque<u8>,
    outgoing: Vec<u8>,
}

impl Session {
    pub(crate) fn new(stream: TcpStream) -> Session {
        Session {
            stream,
            incoming: Vec::new(),
            ready: VecDeque::new(),
            outgoing: Vec::new(),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if !self.outgoing.is_empty() {
            Write::write_all(&mut self.stream, &self.outgoing)?;
            self.outgoing.clear();
        }
        Ok(())
    }

    /// Reads what the socket has (waiting for it when `block`) and vets it.
    /// Output goes first: gdbstub does not flush the ack it sends before a
    /// continue, and gdb may be waiting for it.
    fn fill(&mut self, block: bool) -> io::Result<()> {
        self.send()?;
        let mut buf = [0u8; 4096];
        self.stream.set_nonblocking(!block)?;
        let got = loop {
            match Read::read(&mut self.stream, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if !block {
            self.stream.set_nonblocking(false)?;
        }
        match got {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.incoming.extend_from_slice(&buf[..n]);
                self.vet();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves what is complete from `incoming` to `ready`, packets clamped.
    fn vet(&mut self) {
        while let Some(&first) = self.incoming.first() {
            if first != b'$' {
                // Acks, Ctrl-C and noise between packets pass as they are.
                let n = self
                    .incoming
                    .iter()
                    .position(|&b| b == b'$')
                    .unwrap_or(self.incoming.len());
                self.ready.extend(self.incoming.drain(..n));
                continue;
            }
            match self.incoming.iter().position(|&b| b == b'#') {
                Some(hash) if self.incoming.len() >= hash + 3 => {
                    let packet: Vec<u8> = self.incoming.drain(..hash + 3).collect();
                    match clamp_read(&packet) {
                        Some(clamped) => self.ready.extend(clamped),
                        None => self.ready.extend(packet),
                    }
                }
                // Longer than gdbstub takes: passed on for it to refuse.
                None if self.incoming.len() > PACKET_SIZE => self.ready.extend(self.incoming.drain(..)),
                _ => break,
            }
        }
    }
}

/// `$mADDR,LEN#cs` with LEN over `MAX_READ`, as the same read of
/// `MAX_READ` bytes; `None` for anything else, including a bad checksum
/// (gdbstub refuses it as it came).
fn clamp_read(packet: &[u8]) -> Option<Vec<u8>> {
    let framed = packet.strip_prefix(b"$")?;
    let (body, tail) = framed.split_at(framed.len().checked_sub(3)?);
    let sum = tail.strip_prefix(b"#")?;
    if !sum.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let sum = u8::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    if checksum(body) != sum {
        return None;
    }
    let rest = body.strip_prefix(b"m")?;
    let comma = rest.iter().position(|&b| b == b',')?;
    let (addr, len) = (&rest[..comma], &rest[comma + 1..]);
    if addr.is_empty() || len.is_empty() || !addr.iter().chain(len).all(u8::is_ascii_hexdigit) {
        return None;
    }
    // Too many digits for a usize is a huge length too.
    let fits = len
        .iter()
        .try_fold(0usize, |v, &d| {
            v.checked_mul(16)?.checked_add(char::from(d).to_digit(16)? as usize)
        })
        .is_some_and(|n| n <= MAX_READ);
    if fits {
        return None;
    }
    let mut body = b"m".to_vec();
    body.extend_from_slice(addr);
    body.extend_from_slice(format!(",{MAX_READ:x}").as_bytes());
    let mut out = b"$".to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(format!("#{:02x}", checksum(&body)).as_bytes());
    Some(out)
}

fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

impl Connection for Session {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.outgoing.push(byte);
        if self.outgoing.len() >= MAX_PENDING_OUTPUT {
            self.send()?;
        }
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.outgoing.extend_from_slice(buf);
        if self.outgoing.len() >= MAX_PENDING_OUTPUT {
            self.send()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        Write::flush(&mut self.stream)
    }

    fn on_session_start(&mut self) -> io::Result<()> {
        // Replies are small and gdb waits for each one.
        self.stream.set_nodelay(true)
    }
}

impl ConnectionExt for Session {
    fn read(&mut self) -> io::Result<u8> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(b);
            }
            self.fill(true)?;
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.ready.is_empty() {
            self.fill(false)?;
        } else {
            self.send()?;
        }
        Ok(self.ready.front().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &str) -> Vec<u8> {
        format!("${body}#{:02x}", checksum(body.as_bytes())).into_bytes()
    }

    #[test]
    fn long_reads_are_clamped_and_the_rest_passes_as_it_came() {
        let max = format!("{MAX_READ:x}");
        let clamped = |body: &str| clamp_read(&packet(body)).map(|p| String::from_utf8_lossy(&p).into_owned());
        let expect = |addr: &str| Some(String::from_utf8_lossy(&packet(&format!("m{addr},{max}"))).into_owned());
        assert_eq!(clamped("m0,ffffffff"), expect("0"));
        assert_eq!(clamped("mFFFFF000,1ffffffffffffffffffff"), expect("FFFFF000"));
        assert_eq!(clamped(&format!("m10,{:x}", MAX_READ + 1)), expect("10"));
        for untouched in [
            format!("m10,{max}"),
            "m10,4".to_string(),
            "M10,4:00000000".to_string(),
            "qSupported:multiprocess+".to_string(),
            "m10,".to_string(),
            "m,ffffffff".to_string(),
            "m10,zz".to_string(),
            "m10".to_string(),
        ] {
            assert_eq!(clamped(&untouched), None, "{untouched}");
        }
        assert_eq!(
            clamp_read(b"$m0,ffffffff#00"),
            None,
            "a bad checksum is left to gdbstub"
        );
        assert_eq!(clamp_read(b"$#00"), None);
        assert_eq!(clamp_read(b"#"), None);
    }
}
