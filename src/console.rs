//! The host side of the guest console: where COM1 and port 0xE9 output goes,
//! and where serial input and the RTC start time come from. This is the one
//! place `ringback run` reads the host clock and the terminal; the machine
//! sees them only through [`HostInput`].

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
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
    /// Where port 0xE9's bytes go when not where COM1's go (QEMU's
    /// -debugcon, or nowhere as QEMU without it).
    debugcon: Option<Output>,
    error: Option<std::io::Error>,
    /// The terminal in raw mode while the console is interactive; restored
    /// when the console goes (every way out of a run drops it).
    raw_terminal: Option<RawTerminal>,
}

/// A terminal switched to raw mode (no echo, no line buffering, Ctrl-C a
/// byte for the guest), switched back when dropped or on SIGTERM/SIGHUP.
struct RawTerminal;

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        ratatui::crossterm::terminal::enable_raw_mode().ok()?;
        // A signal must not leave the terminal raw (ctrlc takes one handler
        // per process; a command that set its own keeps it).
        let _ = ctrlc::set_handler(|| {
            let _ = ratatui::crossterm::terminal::disable_raw_mode();
            std::process::exit(130);
        });
        Some(RawTerminal)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = ratatui::crossterm::terminal::disable_raw_mode();
    }
}

/// The console's escape key, as QEMU's: Ctrl-A, then `x` ends the run and
/// Ctrl-A sends a Ctrl-A to the guest.
const ESCAPE: u8 = 0x01;

impl Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Stdout(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Output::File(f) => f.write_all(bytes),
            Output::Discard => Ok(()),
        }
    }

    /// An output-only destination: stdout (or stdio), none, or a file.
    fn open(spec: &str, what: &str) -> Result<Output> {
        Ok(match spec {
            "stdio" | "stdout" => Output::Stdout(std::io::stdout()),
            "none" => Output::Discard,
            path => {
                let f = File::create(path).with_context(|| format!("cannot create {what} output file {path}"))?;
                Output::File(std::io::BufWriter::new(f))
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            _ => Ok(()),
        }
    }
}

impl HostConsole {
    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.out.write(bytes) {
            self.error.get_or_insert(e);
        }
    }

    /// Sends port 0xE9's output to `spec` (stdio, stdout, none or a file)
    /// instead of where COM1's goes; "serial" keeps it with COM1's.
    pub fn set_debugcon(&mut self, spec: &str) -> Result<()> {
        self.debugcon = match spec {
            "serial" => None,
            spec => Some(Output::open(spec, "debug console")?),
        };
        Ok(())
    }

    /// Whether the terminal is the guest's (raw mode, the escape key).
    pub fn is_interactive(&self) -> bool {
        self.raw_terminal.is_some()
    }

    /// Flushes what is buffered, gives the terminal back, and reports the
    /// first write error, if any.
    pub fn finish(&mut self) -> Result<()> {
        self.raw_terminal = None;
        for out in std::iter::once(&mut self.out).chain(self.debugcon.as_mut()) {
            if let Err(e) = out.flush() {
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
        match &mut self.debugcon {
            None => self.write(bytes),
            Some(out) => {
                if let Err(e) = out.write(bytes) {
                    self.error.get_or_insert(e);
                }
            }
        }
    }
}

/// Serial input from the host's stdin, read on its own thread so the guest
/// never waits for the terminal except when it is idle waiting for input.
pub struct StdinInput {
    rx: Option<Receiver<u8>>,
    pending: Option<u8>,
    rtc_start: u64,
    /// Set when the user typed the escape sequence that ends the run.
    quit: Arc<AtomicBool>,
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

    fn stop_requested(&mut self, _now: u64) -> bool {
        self.quit.load(Ordering::Relaxed)
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
    let quit = Arc::new(AtomicBool::new(false));
    let mut raw = None;
    let (out, rx) = match spec {
        "stdio" => {
            // On a terminal the console is the guest's: raw mode, and the
            // escape key to get out, announced once.
            if std::io::stdin().is_terminal() {
                raw = RawTerminal::enable();
                if raw.is_some() {
                    eprint!("ringback: console: Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A\r\n");
                }
            }
            let interactive = raw.is_some();
            let (tx, rx) = mpsc::channel();
            let quit = quit.clone();
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 256];
                let mut escaped = false;
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    for &b in &buf[..n] {
                        let send = if !interactive {
                            Some(b)
                        } else if escaped {
                            escaped = false;
                            match b {
                                b'x' | b'X' => {
                                    quit.store(true, Ordering::Relaxed);
                                    // Dropping the sender wakes a guest
                                    // waiting for input.
                                    return;
                                }
                                ESCAPE => Some(ESCAPE),
                                _ => None,
                            }
                        } else if b == ESCAPE {
                            escaped = true;
                            None
                        } else {
                            Some(b)
                        };
                        if send.is_some_and(|b| tx.send(b).is_err()) {
                            return;
                        }
                    }
                }
            });
            (Output::Stdout(std::io::stdout()), Some(rx))
        }
        // Output only: stdin stays with whoever else reads it (the
        // inspector the demo ends in).
        spec => (Output::open(spec, "serial")?, None),
    };
    Ok((
        HostConsole {
            out,
            debugcon: None,
            error: None,
            raw_terminal: raw,
        },
        StdinInput {
            rx,
            pending: None,
            rtc_start,
            quit,
        },
    ))
}
