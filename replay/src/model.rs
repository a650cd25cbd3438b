//! What the frames hold. Everything but the index is postcard-encoded serde
//! data; the index is rkyv, accessed zero-copy after validation.

use crate::state::{SavedState, StateError};
use serde::{Deserialize, Serialize};
use vm::engine::raw::RawConfig;
use vm::events::EventRecord;
use vm::machine::{Engine, Kernel, MachineState};

/// The machine a trace was recorded on: everything needed to build it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub ram_bytes: u64,
    pub engine: Engine,
    pub raw: RawConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// The ringback build that wrote the trace.
    pub build: String,
    pub config: MachineConfig,
    /// The guest images themselves, so the trace is self-contained.
    pub kernel: Kernel,
    /// BLAKE3 of the kernel image and of each module, hex.
    pub image_hashes: Vec<String>,
    pub rtc_start: u64,
    /// Instructions between checkpoints (the starting interval when adaptive).
    pub checkpoint_interval: u64,
    /// Whether the interval adapts to how much memory the guest writes.
    pub adaptive_checkpoints: bool,
}

impl TraceHeader {
    /// The header for recording `machine` (booted from `kernel`, configured)
    /// from its current state.
    pub fn for_machine(
        build: &str,
        kernel: &Kernel,
        machine: &vm::machine::Machine,
        rtc_start: u64,
        checkpoint_interval: u64,
        adaptive_checkpoints: bool,
    ) -> TraceHeader {
        TraceHeader {
            build: build.to_string(),
            config: MachineConfig {
                ram_bytes: machine.platform.mem.ram_size() as u64,
                engine: machine.engine,
                raw: machine.raw.config,
            },
            kernel: kernel.clone(),
            image_hashes: crate::kernel_hashes(kernel),
            rtc_start,
            checkpoint_interval,
            adaptive_checkpoints,
        }
    }
}

/// One answer of the host input interface, in the order the machine asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputRecord {
    /// A byte received on COM1 at virtual time `now`.
    Serial { now: u64, byte: u8 },
    /// The idle guest waited for input at `now`; `ready` is what the host said.
    Wait { now: u64, ready: bool },
    /// The user ended the run at `now` (the console's escape key): the
    /// last record of a trace that ends so.
    Stop { now: u64 },
}

/// A checkpoint: the machine's state at `state.icount`, the RAM pages written
/// since the previous checkpoint (every page with content for the first),
/// and the digest of the whole machine. In memory the state is the
/// machine's own; a frame holds it as a [`SavedState`] ([`CheckpointFrame`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint<S = MachineState> {
    /// Its place among the trace's checkpoints, from 0: a checkpoint lost
    /// or repeated shows.
    pub sequence: u64,
    pub state: S,
    #[serde(with = "page_list")]
    pub pages: Vec<(u32, Vec<u8>)>,
    pub digest: [u8; 32],
    /// Input records the machine consumed before this point.
    pub inputs_consumed: u64,
    /// Serial output the guest wrote since the previous checkpoint.
    #[serde(with = "serde_bytes")]
    pub serial: Vec<u8>,
    /// Events emitted before this point.
    pub events_before: u64,
    /// Where the run ended in a stop other than the instruction limit (a
    /// halt with interrupts off, a triple fault, a fault loop, an exit),
    /// how it stopped: such a stop can change the machine without retiring
    /// an instruction, so a replay reaching this checkpoint runs the machine
    /// on until it stops the same way. Only the last checkpoint has one.
    pub stopped: Option<String>,
}

/// What the raw engine learned up to a checkpoint, in the frame just
/// before it: whole at the first, the changes since the one before after
/// that. A replay restoring checkpoint `k` folds those of checkpoints 0 to
/// `k` and puts the result back into its engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearningFrame {
    /// The checkpoint's sequence number.
    pub sequence: u64,
    pub learning: vm::engine::raw::learning::RawLearning,
}

/// A checkpoint as its frame holds it.
pub type CheckpointFrame = Checkpoint<SavedState>;

impl<S> Checkpoint<S> {
    /// The same checkpoint with its state converted.
    pub fn try_map_state<T, E>(self, convert: impl FnOnce(&S) -> Result<T, E>) -> Result<Checkpoint<T>, E> {
        Ok(Checkpoint {
            sequence: self.sequence,
            state: convert(&self.state)?,
            pages: self.pages,
            digest: self.digest,
            inputs_consumed: self.inputs_consumed,
            serial: self.serial,
            events_before: self.events_before,
            stopped: self.stopped,
        })
    }
}

impl CheckpointFrame {
    /// The checkpoint with the machine state its sections hold.
    pub fn into_checkpoint(self) -> Result<Checkpoint, StateError> {
        self.try_map_state(SavedState::machine_state)
    }
}

/// A checkpoint's pages, each page's bytes as one slice: on the wire the
/// same as a sequence of u8 (postcard writes a length, then the bytes), but
/// written and read at once rather than byte by byte, which was most of
/// the trace writer's time on a guest dirtying many pages.
mod page_list {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(pages: &[(u32, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(pages.iter().map(|(page, bytes)| (page, Bytes::new(bytes))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, Vec<u8>)>, D::Error> {
        let pages = Vec::<(u32, ByteBuf)>::deserialize(d)?;
        Ok(pages
            .into_iter()
            .map(|(page, bytes)| (page, bytes.into_vec()))
            .collect())
    }
}

impl Checkpoint {
    /// The checkpoint as a frame holds it.
    pub fn into_frame(self) -> Result<CheckpointFrame, StateError> {
        self.try_map_state(SavedState::of)
    }
}

/// The last frame of a finished recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndInfo {
    pub icount: u64,
    pub stop: String,
    pub exit_status: Option<u32>,
    pub wall_seconds: f64,
    pub serial_bytes: u64,
    pub events: u64,
}

/// A batch of events, in icount order. An event frame's payload is its
/// compact encoding ([`crate::event_codec`]), not postcard.
#[derive(Clone, Debug, PartialEq)]
pub struct EventBatch {
    pub events: Vec<EventRecord>,
}

impl EventBatch {
    pub fn encode(&self) -> Vec<u8> {
        crate::event_codec::encode(&self.events)
    }

    /// Decodes the payload of the event frame at `offset`.
    pub fn decode(raw: &[u8], offset: u64) -> crate::error::Result<EventBatch> {
        crate::event_codec::decode(raw)
            .map(|events| EventBatch { events })
            .map_err(|source| crate::error::TraceError::Events { offset, source })
    }
}

/// A batch of input records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputBatch {
    pub records: Vec<InputRecord>,
}

/// Where each frame is, for seeking without reading the file through.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FrameEntry {
    pub kind: u8,
    pub offset: u64,
    /// The frame header's icount.
    pub icount: u64,
    /// Compressed and uncompressed payload sizes.
    pub payload_len: u32,
    pub raw_len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TraceIndex {
    pub frames: Vec<FrameEntry>,
}

impl TraceIndex {
    /// The index frame's payload (uncompressed).
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map(|b| b.to_vec())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same checkpoint with plain sequences of u8, as trace format 7
    /// was first written.
    #[derive(Serialize, Deserialize)]
    struct ByteByByte {
        sequence: u64,
        state: u32,
        pages: Vec<(u32, Vec<u8>)>,
        digest: [u8; 32],
        inputs_consumed: u64,
        serial: Vec<u8>,
        events_before: u64,
        stopped: Option<String>,
    }

    #[test]
    fn pages_as_slices_are_the_bytes_a_sequence_of_u8_was() {
        let pages: Vec<(u32, Vec<u8>)> = vec![(3, (0..=255).collect()), (70_000, vec![]), (9, vec![0xAB; 4096])];
        let cp = Checkpoint {
            sequence: 5,
            state: 0x1234u32,
            pages: pages.clone(),
            digest: [7; 32],
            inputs_consumed: 300,
            serial: b"login:".to_vec(),
            events_before: 12,
            stopped: None,
        };
        let old = ByteByByte {
            sequence: 5,
            state: 0x1234,
            pages,
            digest: [7; 32],
            inputs_consumed: 300,
            serial: b"login:".to_vec(),
            events_before: 12,
            stopped: None,
        };
        let new_bytes = postcard::to_allocvec(&cp).expect("encodes");
        assert_eq!(new_bytes, postcard::to_allocvec(&old).expect("encodes"));
        let back: Checkpoint<u32> = postcard::from_bytes(&new_bytes).expect("decodes");
        assert_eq!(back, cp);
        // A truncated page is refused, not read past.
        let cut = &new_bytes[..new_bytes.len() - 300];
        assert!(postcard::from_bytes::<Checkpoint<u32>>(cut).is_err());
    }
}
