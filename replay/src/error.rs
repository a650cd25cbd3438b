//! Errors of the trace crate. Every way a file can be unusable has its own
//! variant with the byte offset where it was found.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("cannot read or write {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a ringback trace (bad magic)")]
    NotATrace,
    #[error("trace written by format {found}, this build reads {supported}")]
    Version { found: u32, supported: u32 },
    #[error("trace truncated at byte {offset}: {what} is cut short")]
    Truncated { offset: u64, what: String },
    #[error("trace corrupt at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("trace corrupt at byte {offset}: the {frame} frame does not decode")]
    Decode {
        offset: u64,
        frame: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("trace corrupt at byte {offset}: the events frame does not decode")]
    Events {
        offset: u64,
        #[source]
        source: crate::event_codec::DecodeError,
    },
    #[error("trace at byte {offset}: the checkpoint's machine state cannot be restored")]
    State {
        offset: u64,
        #[source]
        source: crate::state::StateError,
    },
    #[error("trace has no {0}")]
    Missing(&'static str),
    #[error("cannot boot the recorded machine")]
    Boot(#[source] vm::VmError),
    #[error("the traces are not recordings of the same guest and input: {0}")]
    NotComparable(String),
    #[error("the replay's own undo record of checkpoint {checkpoint} does not decompress")]
    Undo {
        checkpoint: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("the trace writer stopped: {0}")]
    Writer(String),
}

pub type Result<T> = std::result::Result<T, TraceError>;
