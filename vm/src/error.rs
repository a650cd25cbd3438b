//! Errors of the machine crate: bad configuration and bad guest images. Guest
//! misbehaviour is not an error of ours; it is reported as a stop reason.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum VmError {
    #[error("guest image does not fit in memory: {len} bytes at {addr:#x}, but RAM is {ram} bytes")]
    DoesNotFit { addr: u64, len: u64, ram: u64 },
    #[error("bad memory size: {0}")]
    BadMemorySize(String),
    #[error("not a multiboot kernel: {0}")]
    NotMultiboot(String),
    #[error("malformed ELF kernel: {reason}")]
    BadElf {
        reason: String,
        #[source]
        source: Option<goblin::error::Error>,
    },
    #[error("bad boot image: {0}")]
    BadImage(String),
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {what} {path}")]
    ReadImage {
        /// "kernel" or "module".
        what: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is larger than guest RAM ({limit} bytes); nothing that big can load")]
    ImageTooLarge { what: String, path: String, limit: u64 },
    #[error("bad test vector file {path}: {reason}")]
    BadVectors { path: String, reason: String },
}

pub type Result<T> = std::result::Result<T, VmError>;
