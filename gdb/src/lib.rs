//! `target remote :1234`: a gdb server over a recorded trace, built on the
//! gdbstub crate and the replay library. gdb sees the guest as an i386
//! target (general, segment and x87 registers; memory at guest linear
//! addresses through the guest's page tables) and can step and continue
//! both forwards and backwards: reverse-stepi, reverse-continue to a
//! breakpoint, and reverse-continue to a watchpoint — "who wrote this?".
//!
//! Positions are icounts. A forward step or continue replays; a backwards
//! one restores the nearest checkpoint before the target and replays to it.
//! Reaching either end of the trace is reported as gdb expects
//! (`ReplayLog` Begin/End), never by wrapping around.

mod conn;
mod monitor;
mod target;

use std::io::Write;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStubBuilder, SingleThreadStopReason};
use gdbstub::target::Target;
use thiserror::Error;

use conn::{Session, PACKET_SIZE};
pub use replay::live::Live;
pub use target::DebugTarget;

#[derive(Debug, Error)]
pub enum GdbError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replaying the trace failed")]
    Trace(#[source] replay::TraceError),
}

/// The event loop: runs the target as gdb asked, in slices, looking for a
/// Ctrl-C from gdb between slices.
struct EventLoop<'t>(PhantomData<&'t ()>);

impl<'t> BlockingEventLoop for EventLoop<'t> {
    type Target = DebugTarget<'t>;
    type Connection = Session;
    type StopReason = SingleThreadStopReason<u32>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut DebugTarget<'t>,
        conn: &mut Session,
    ) -> Result<
        run_blocking::Event<SingleThreadStopReason<u32>>,
        run_blocking::WaitForStopReasonError<<DebugTarget<'t> as Target>::Error, std::io::Error>,
    > {
        loop {
            match target
                .run_slice()
                .map_err(run_blocking::WaitForStopReasonError::Target)?
            {
                Some(stop) => return Ok(run_blocking::Event::TargetStopped(stop)),
                None => {
                    // A slice ended with nothing to report: gdb may have
                    // sent a Ctrl-C meanwhile.
                    if conn.peek().map(|b| b.is_some()).unwrap_or(true) {
                        let byte = conn.read().map_err(run_blocking::WaitForStopReasonError::Connection)?;
                        return Ok(run_blocking::Event::IncomingData(byte));
                    }
                }
            }
        }
    }

    fn on_interrupt(_target: &mut DebugTarget<'t>) -> Result<Option<SingleThreadStopReason<u32>>, GdbError> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// Serves `target` to one gdb after another on `listener` until `stop`
/// is set. A second client while one is connected is told no and logged;
/// a client that disconnects or sends garbage ends its own session only.
pub fn serve(target: &mut DebugTarget<'_>, listener: TcpListener, stop: Arc<AtomicBool>) -> Result<(), GdbError> {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a: SocketAddr| a.to_string());
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let busy = Arc::new(AtomicBool::new(false));
    let accept_busy = busy.clone();
    let accept_stop = stop.clone();
    // The acceptor: hands a client to the session loop, or refuses it.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if accept_stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut stream) = stream else { continue };
            let peer = stream.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
            if accept_busy.swap(true, Ordering::SeqCst) {
                eprintln!("ringback gdb: refused a second client from {peer}: one debugger at a time");
                // A stop reply packet gdb prints as an error: "E01".
                let _ = Write::write_all(&mut stream, b"$E01#a6");
                continue;
            }
            eprintln!("ringback gdb: client connected from {peer}");
            if tx.send(stream).is_err() {
                break;
            }
        }
    });
    eprintln!("ringback gdb: listening on {local} (in gdb: target remote {local})");
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = rx.recv_timeout(std::time::Duration::from_millis(200)) else {
            continue;
        };
        target.begin_session()?;
        let gdb = match GdbStubBuilder::new(Session::new(stream))
            .packet_buffer_size(PACKET_SIZE)
            .build()
        {
            Ok(gdb) => gdb,
            Err(e) => {
                eprintln!("ringback gdb: cannot start a session: {e}");
                busy.store(false, Ordering::SeqCst);
                continue;
            }
        };
        match gdb.run_blocking::<EventLoop<'_>>(target) {
            Ok(DisconnectReason::Disconnect) => eprintln!("ringback gdb: client disconnected"),
            Ok(DisconnectReason::Kill) => eprintln!("ringback gdb: client sent kill; the trace stays served"),
            Ok(other) => eprintln!("ringback gdb: session ended: {other:?}"),
            Err(e) => eprintln!("ringback gdb: session ended by an error: {e}"),
        }
        busy.store(false, Ordering::SeqCst);
        if target.quit_requested() {
            break;
        }
    }
    Ok(())
}

/// Binds the listening socket, with an error that names the address.
pub fn listen(addr: &str) -> Result<TcpListener, GdbError> {
    TcpListener::bind(addr).map_err(|source| GdbError::Listen {
        addr: addr.to_string(),
        source,
    })
}
