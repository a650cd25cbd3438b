//! Errors of the inspector.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TuiError {
    #[error("cannot use trace {path}")]
    Trace {
        path: String,
        #[source]
        source: replay::TraceError,
    },
    #[error("replaying the trace failed")]
    Replay(#[from] replay::TraceError),
    #[error("the trace index names no event batch {0}")]
    NoSuchBatch(usize),
    #[error("address {0:#010x} is not mapped here")]
    Unmapped(u32),
    #[error("the terminal failed")]
    Terminal(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, TuiError>;
