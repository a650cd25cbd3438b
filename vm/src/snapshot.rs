//! Saved state, part by part (QEMU's vmstate sections are the model): the
//! CPU and every device have a state type of their own, saved under a
//! section name with a layout version. A trace stores those sections, not
//! the machine's in-memory structs, so a change to what a part saves (x87
//! registers, an APIC) is a new version of its section that a reader
//! checks, never a silent change of meaning.
//!
//! The machine visits its sections through [`SectionWriter`] and
//! [`SectionReader`]; the encoding is the reader's and writer's business
//! (the trace uses postcard), so the VM stays format-agnostic.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::hash::Hash;

/// A part of the machine that checkpoints save and restore.
pub trait Snapshot {
    /// The section's name in a saved machine, unique among its parts.
    const SECTION: &'static str;
    /// The version of `State`'s layout: bumped with every change to what
    /// it holds, so that a reader sees an old or new section as such.
    const VERSION: u16;
    type State: Clone + Debug + PartialEq + Eq + Hash + Serialize + DeserializeOwned;
    fn save(&self) -> Self::State;
    fn restore(&mut self, state: &Self::State);
}

/// Takes a machine's sections, in order, to encode them.
pub trait SectionWriter {
    fn section<T: Serialize>(&mut self, name: &'static str, version: u16, state: &T);
}

/// Hands out a saved machine's sections by name and version, decoded.
pub trait SectionReader {
    type Error;
    fn section<T: DeserializeOwned>(&mut self, name: &'static str, version: u16) -> Result<T, Self::Error>;
}
