//! ringback's deterministic traces: recording a run (header, input log,
//! event log, checkpoints, index), opening a trace safely whatever state the
//! file is in, and replaying it — straight through with digest checks, or
//! by seeking to any icount. docs/trace-format.md describes the bytes.

pub mod bisect;
pub mod digest;
pub mod error;
pub mod event_codec;
pub mod format;
pub mod integrity;
pub mod live;
pub mod model;
pub mod reader;
pub mod record;
pub mod replay;
pub mod rewind;
pub mod seek;
pub mod state;
pub mod state_diff;
pub mod timeline;
pub mod verify;

pub use error::{Result, TraceError};
pub use reader::Trace;
pub use record::{record, RecordSummary, DEFAULT_CHECKPOINT_INTERVAL};
pub use replay::{Divergence, ReplayOptions, Replayer};
pub use verify::{verify, verify_until, Verification};

/// BLAKE3 of a guest image, hex.
pub fn image_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The hashes a header records: the kernel image, then each module.
pub fn kernel_hashes(kernel: &vm::machine::Kernel) -> Vec<String> {
    kernel.images().into_iter().map(image_hash).collect()
}
