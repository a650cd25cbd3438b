//! The host side of the guest console: where COM1 and port 0xE9 output goes,
//! and where serial input and the RTC start time come from. This is the one
//! place `ringback run` reads the host clock and the terminal; the machine
//! sees them only through [`HostInput`].

use std::fs::File;
use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use anyhow::{Context, Result};
use vm::host::HostInput;
use vm::machine::Console;

pub enum Output {
    Stdout(std::io::Stdout),
    File(std::io::BufWriter<File>),
    Discard,
}

pub struct HostConsole {
    out: Output,
    error: Option<std::io::Error>,
}

impl HostConsole {
    fn write(&mut self, bytes: &[u8]) {
        let r = match &mut self.out {
            Output::Stdout(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Output::File(f) => f.write_all(bytes),
            Output::Discard => Ok(()),
        };
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    /// Flushes what is buffered and reports the first write error, if any.
    pub fn finish(&mut self) -> Result<()> {
        if let Output::File(f) = &mut self.out {
            if let Err(e) = f.flush() {
                self.error.get_or_insert(e);
            }
        }
        match self.error.take() {
            Some(e) => Err(e).context("writing the guest's console output"),
            None => Ok(()),
        }
    }
}

impl Console for HostConsole {
    fn serial(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
    fn debugcon(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
}

/// Serial input from the host's stdin, read on its own thread so the guest
/// never waits for the terminal except when it is idle waiting for input.
pub struct StdinInput {
    rx: Option<Receiver<u8>>,
    pending: Option<u8>,
    rtc_start: u64,
}

impl HostInput for StdinInput {
    fn rtc_start(&mut self) -> u64 {
        self.rtc_start
    }

    fn serial_input(&mut self, _now: u64) -> Option<u8> {
        if let Some(b) = self.pending.take() {
            return Some(b);
        }
        match self.rx.as_ref()?.try_recv() {
            Ok(b) => Some(b),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.rx = None;
                None
            }
        }
    }

    fn wait_for_input(&mut self, _now: u64) -> bool {
        if self.pending.is_some() {
            return true;
        }
        let Some(rx) = self.rx.as_ref() else { return false };
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(b) => {
                    self.pending = Some(b);
                    return true;
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    self.rx = None;
                    return false;
                }
            }
        }
    }
}

fn host_epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Opens the console named by `--serial`: `stdio`, `stdout` (no input),
/// `none`, or a file path;
/// the RTC starts at `rtc_base` or else the host's clock.
pub fn open(spec: &str, rtc_base: Option<u64>) -> Result<(HostConsole, StdinInput)> {
    let rtc_start = rtc_base.unwrap_or_else(host_epoch_seconds);
    let (out, rx) = match spec {
        "stdio" => {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 256];
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || buf[..n].iter().any(|&b| tx.send(b).is_err()) {
                        break;
                    }
                }
            });
            (Output::Stdout(std::io::stdout()), Some(rx))
        }
        // Output only: stdin stays with whoever else reads it (the
        // inspector the demo ends in).
        "stdout" => (Output::Stdout(std::io::stdout()), None),
        "none" => (Output::Discard, None),
        path => {
            let f = File::create(path).with_context(|| format!("cannot create serial output file {path}"))?;
            (Output::File(std::io::BufWriter::new(f)), None)
        }
    };
    Ok((
        HostConsole { out, error: None },
        StdinInput {
            rx,
            pending: None,
            rtc_start,
        },
    ))
}
