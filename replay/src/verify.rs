//! `replay --verify`: the whole file checked first (every frame, against its
//! header, the index and the other frames), then the recorded guest replayed
//! with its digests compared at every checkpoint. The two kinds of failure
//! stay apart: a file that is damaged or inconsistent is an error, never a
//! divergence; a divergence is reported only for a file that checked out.

use crate::error::Result;
use crate::integrity::Contents;
use crate::reader::Trace;
use crate::replay::{Divergence, ReplayOptions, Replayer};

/// How a verification ended, for a trace whose frames all checked out.
#[derive(Debug)]
pub struct Verification {
    pub contents: Contents,
    /// The first checkpoint whose digest the replay did not reproduce.
    pub divergence: Option<Divergence>,
    /// Instructions replayed.
    pub icount: u64,
    /// Serial output of the replay.
    pub serial: Vec<u8>,
    /// Whether the trace is a finished recording (else only what a killed
    /// recorder left was verified).
    pub complete: bool,
}

impl Verification {
    /// Verified, and every instruction of a finished recording.
    pub fn verified_complete(&self) -> bool {
        self.divergence.is_none() && self.complete
    }
}

/// Checks `trace` and replays it. `Err` for a file that is damaged or
/// inconsistent anywhere; `Ok` with the divergence, if any, otherwise.
/// `checking` hears the icount of each checkpoint the file check passes,
/// `replaying` each one the replay passes.
pub fn verify(
    trace: &Trace,
    options: ReplayOptions,
    checking: &mut dyn FnMut(u64),
    replaying: &mut dyn FnMut(u64),
) -> Result<Verification> {
    verify_until(trace, options, None, checking, replaying)
}

/// [`verify`], replaying only up to the first checkpoint at or after
/// `until` (the whole file is checked all the same): a prefix of a trace
/// too long to replay on a slow engine.
pub fn verify_until(
    trace: &Trace,
    options: ReplayOptions,
    until: Option<u64>,
    checking: &mut dyn FnMut(u64),
    replaying: &mut dyn FnMut(u64),
) -> Result<Verification> {
    let contents = trace.check_contents(checking)?;
    let mut r = Replayer::new(trace, options)?;
    let divergence = r.run_until(true, until, replaying)?;
    Ok(Verification {
        contents,
        divergence,
        icount: r.icount(),
        serial: std::mem::take(&mut r.console.serial),
        complete: trace.complete(),
    })
}
