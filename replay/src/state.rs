//! Machine state as a trace stores it: the clock fields, then the CPU and
//! every device as a named section with its layout version and its own
//! postcard encoding (see `vm::snapshot`). A reader checks each section's
//! name and version before it decodes a byte, so a trace saved by a build
//! with another CPU or device layout is refused naming the part, and
//! adding a part (x87 registers, an APIC) is an explicit format change.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vm::machine::MachineState;
use vm::snapshot::{SectionReader, SectionWriter};

/// A machine state in a checkpoint frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub icount: u64,
    pub idle_ticks: u64,
    pub next_input_poll: u64,
    pub idle_without_wakeup: u64,
    /// The CPU, then each device, in the machine's order.
    pub sections: Vec<Section>,
}

/// One part's saved state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub version: u16,
    /// The part's state type, postcard-encoded (as one slice: the same
    /// bytes as a sequence of u8, written and read at once).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the saved state has no {0} section")]
    Missing(&'static str),
    #[error("the saved state has a {0} section that this build has no part for")]
    Unknown(String),
    #[error("the saved state has its {0} section more than once")]
    Repeated(String),
    #[error("the {section} state was saved in layout version {found}; this build reads version {supported} only")]
    Version {
        section: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("the {section} section does not decode")]
    Decode {
        section: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("the {section} section has {extra} bytes after its contents")]
    Trailing { section: &'static str, extra: usize },
    #[error("the {section} state cannot be encoded")]
    Encode {
        section: &'static str,
        #[source]
        source: postcard::Error,
    },
}

impl SavedState {
    /// The trace's form of `state`.
    pub fn of(state: &MachineState) -> Result<SavedState, StateError> {
        let mut writer = Writer {
            sections: Vec::new(),
            error: None,
        };
        state.write_sections(&mut writer);
        if let Some(e) = writer.error {
            return Err(e);
        }
        Ok(SavedState {
            icount: state.icount,
            idle_ticks: state.idle_ticks,
            next_input_poll: state.next_input_poll,
            idle_without_wakeup: state.idle_without_wakeup,
            sections: writer.sections,
        })
    }

    /// The machine state it holds: every section this build's machine has,
    /// each in the version it reads, and no other.
    pub fn machine_state(&self) -> Result<MachineState, StateError> {
        let mut reader = Reader {
            sections: &self.sections,
            used: vec![false; self.sections.len()],
        };
        let (cpu, devices) = MachineState::read_sections(&mut reader)?;
        if let Some(unused) = reader.used.iter().position(|&u| !u) {
            return Err(StateError::Unknown(self.sections[unused].name.clone()));
        }
        Ok(MachineState {
            cpu,
            icount: self.icount,
            idle_ticks: self.idle_ticks,
            next_input_poll: self.next_input_poll,
            idle_without_wakeup: self.idle_without_wakeup,
            devices,
        })
    }
}

struct Writer {
    sections: Vec<Section>,
    error: Option<StateError>,
}

impl SectionWriter for Writer {
    fn section<T: Serialize>(&mut self, name: &'static str, version: u16, state: &T) {
        match postcard::to_allocvec(state) {
            Ok(data) => self.sections.push(Section {
                name: name.to_string(),
                version,
                data,
            }),
            Err(source) => {
                self.error.get_or_insert(StateError::Encode { section: name, source });
            }
        }
    }
}

struct Reader<'a> {
    sections: &'a [Section],
    used: Vec<bool>,
}

impl SectionReader for Reader<'_> {
    type Error = StateError;

    fn section<T: DeserializeOwned>(&mut self, name: &'static str, version: u16) -> Result<T, StateError> {
        let mut found = self.sections.iter().enumerate().filter(|(_, s)| s.name == name);
        let (index, section) = found.next().ok_or(StateError::Missing(name))?;
        if found.next().is_some() {
            return Err(StateError::Repeated(name.to_string()));
        }
        if section.version != version {
            return Err(StateError::Version {
                section: name,
                found: section.version,
                supported: version,
            });
        }
        let (value, rest) =
            postcard::take_from_bytes(&section.data).map_err(|source| StateError::Decode { section: name, source })?;
        if !rest.is_empty() {
            return Err(StateError::Trailing {
                section: name,
                extra: rest.len(),
            });
        }
        self.used[index] = true;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_reflection::{Samples, Tracer, TracerConfig};

    fn machine() -> MachineState {
        vm::machine::Machine::new(1 << 20, &mut vm::host::NoInput::default()).state()
    }

    #[test]
    fn a_machine_state_survives_its_sections() {
        let mut state = machine();
        state.icount = 12345;
        state.cpu.regs[3] = 0xDEAD_BEEF;
        let saved = SavedState::of(&state).expect("encodes");
        assert_eq!(saved.sections[0].name, "cpu");
        assert_eq!(saved.machine_state().expect("decodes"), state);
    }

    #[test]
    fn sections_from_another_layout_are_refused_by_name_and_version() {
        let saved = SavedState::of(&machine()).expect("encodes");
        let pit = saved
            .sections
            .iter()
            .position(|s| s.name == "pit")
            .expect("a pit section");
        let mut newer = saved.clone();
        newer.sections[pit].version = 2;
        let e = newer.machine_state().expect_err("version 2").to_string();
        assert_eq!(
            e,
            "the pit state was saved in layout version 2; this build reads version 1 only"
        );
        let mut fewer = saved.clone();
        fewer.sections.remove(pit);
        assert_eq!(
            fewer.machine_state().expect_err("no pit").to_string(),
            "the saved state has no pit section"
        );
        let mut more = saved.clone();
        more.sections.push(Section {
            name: "hpet".into(),
            version: 1,
            data: vec![0; 4],
        });
        assert_eq!(
            more.machine_state().expect_err("an hpet").to_string(),
            "the saved state has a hpet section that this build has no part for"
        );
    }

    /// Traces the layout of each part's state type.
    struct LayoutReader {
        seen: Vec<(&'static str, u16, String)>,
    }

    impl SectionReader for LayoutReader {
        type Error = String;
        fn section<T: DeserializeOwned>(&mut self, name: &'static str, version: u16) -> Result<T, String> {
            let mut tracer = Tracer::new(TracerConfig::default());
            let samples = Samples::new();
            let (format, mut values) = tracer.trace_type::<T>(&samples).map_err(|e| format!("{name}: {e}"))?;
            let registry = tracer.registry().map_err(|e| format!("{name}: {e}"))?;
            let layout = format!("{format:?} {registry:?}");
            self.seen.push((
                name,
                version,
                blake3::hash(layout.as_bytes()).to_hex()[..16].to_string(),
            ));
            values.pop().ok_or_else(|| format!("{name}: no value"))
        }
    }

    /// A change to what a part saves must come with a new version of its
    /// section (and a new trace format): traces already written then read
    /// as what they are. Each part's layout, traced from its types, is
    /// pinned here with the version that names it.
    #[test]
    fn every_saved_part_has_the_layout_its_version_names() {
        let pinned: &[(&str, u16, &str)] = &[
            ("cpu", 4, "71a26ee92aa9aed2"),
            ("pic", 1, "d4fba6dee9e4c58b"),
            ("lapic", 1, "6e8eb400a71b5c41"),
            ("ioapic", 1, "8d2498417bf595ae"),
            ("pit", 1, "eb15a1a01fa1d11d"),
            ("i8042", 2, "efecbae312425e77"),
            ("cmos", 1, "e5fb8e9e5acbee8b"),
            ("port92", 1, "7de9966953eaffdc"),
            ("debugcon", 1, "4e11ec1e9db5529b"),
            ("exit", 1, "901eab30173410fa"),
            ("uart", 1, "1fd238da67570d3b"),
            ("fw_cfg", 1, "ab56402ebc120ce0"),
            ("pci", 1, "bd166846ab41afd6"),
            ("ferr", 1, "1ca74a5d03351b95"),
            ("testdev", 1, "d963d8b3a39d01e1"),
        ];
        let mut reader = LayoutReader { seen: Vec::new() };
        MachineState::read_sections(&mut reader).expect("layouts trace");
        let mut wrong = Vec::new();
        for (name, version, layout) in &reader.seen {
            if !pinned.contains(&(name, *version, layout.as_str())) {
                wrong.push(format!("(\"{name}\", {version}, \"{layout}\"),"));
            }
        }
        assert!(
            wrong.is_empty() && pinned.len() == reader.seen.len(),
            "saved layouts changed: give each changed part a new Snapshot::VERSION, bump the trace \
             FORMAT_VERSION, and pin the new layouts:\n{}",
            wrong.join("\n")
        );
    }
}
