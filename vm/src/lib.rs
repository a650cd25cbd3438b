//! ringback's virtual machine: a 32-bit PC (CPU, memory, devices, boot loaders)
//! and the reference engine that executes it instruction by instruction.
//!
//! Guest execution is a pure function of the initial machine state and the
//! input log: nothing in this crate reads the host clock or host randomness, and
//! every value from outside enters through [`host::HostInput`].

pub mod boot;
pub mod bus;
pub mod conformance;
pub mod cpu;
pub mod devices;
pub mod engine;
pub mod error;
pub mod events;
pub mod exec;
pub mod hash;
pub mod host;
pub mod irq;
pub mod linear;
pub mod machine;
pub mod mem;
pub mod platform;
pub mod snapshot;
pub mod time;

pub use error::VmError;
