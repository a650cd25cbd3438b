//! What the raw engine has learned about guest code (the scanner's results,
//! the patches and the trap counts towards them) as plain data, so that it
//! can be saved where a checkpoint is taken and put back where a replay
//! restores one. The engine then decides from there exactly as the
//! recorder's did, which the guest can see wherever a decision is wrong: a
//! patch bug (DESIGN.md: "Patch bugs are real"), or ring compression
//! without the scanner.
//!
//! A save is either whole or only what changed since the save before it:
//! the pages whose scan results changed, the patches added or changed. A
//! restore folds a whole save and the changes after it ([`RawLearning::merge`])
//! and puts the result into an engine that has forgotten everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::{EngineKind, PatchCause, RefuseReason};
use crate::exec::MAX_INSN_LEN;

/// A patch's kind (defined here, with its state, so that the patch
/// manager and the saved learning share them without importing each
/// other; `patm` re-exports both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum PatchKind {
    /// The instruction runs inline with its reference semantics.
    Inline,
    /// An entry point reached with the guest's IF clear (an interrupt or
    /// exception handler behind an interrupt gate, code after a CLI run on
    /// the reference): the instruction itself is not replaced, but the code
    /// from it up to the next instruction that may set IF runs raw, as
    /// PATM's interrupt-handler patches did.
    Entry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PatchState {
    Enabled,
    /// Switched off by hand (a debugger, delta debugging): the site traps.
    Disabled,
    /// Its page was written; it no longer describes the code there.
    Dirty,
    Refused(RefuseReason),
}

/// One scanned instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedSite {
    /// Its offset in the page.
    pub offset: u16,
    pub code32: bool,
    pub len: u8,
    /// The scanner marked it sensitive.
    pub marked: bool,
}

/// A patch (or a refusal) as the patch table holds it, its instruction as
/// the bytes it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPatch {
    pub site: u32,
    pub phys: u32,
    pub code32: bool,
    pub bytes: Vec<u8>,
    pub kind: PatchKind,
    pub state: PatchState,
    pub cause: Option<PatchCause>,
    pub installed_at: u64,
    pub hits: u64,
    pub traps_avoided: u64,
    /// (physical address, code32) of each site.
    pub region: Vec<(u32, bool)>,
    /// Still found by its site and page (not dropped for a write).
    pub indexed: bool,
}

/// The raw engine's learning, whole (`full`) or the changes since the save
/// before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawLearning {
    pub full: bool,
    /// The scanned instructions of each page (whole) or of each page whose
    /// scan results changed (an empty list: the page was forgotten).
    pub scanned: BTreeMap<u32, Vec<ScannedSite>>,
    /// How many patches the table holds, and each patch (whole) or each
    /// one added or changed, by index.
    pub patch_count: u32,
    pub patches: BTreeMap<u32, SavedPatch>,
    /// Changes only: (index, hits, traps avoided) of each patch whose
    /// counters alone changed (a patch that runs changes nothing else, and
    /// its region need not be saved again).
    pub counts: Vec<(u32, u64, u64)>,
    /// Traps and true-privilege entries with IF clear counted towards a
    /// patch, by (linear, physical) site: whole every time (few).
    pub hot: Vec<((u32, u32), u32)>,
    pub hot_entries: Vec<((u32, u32), u32)>,
    /// The engine that ran last.
    pub current: Option<EngineKind>,
}

/// Why saved learning cannot be put back.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LearningError {
    #[error("the engine's learning has changes but nothing whole to apply them to")]
    NotWhole,
    #[error("patch {index} of {count} is missing from the engine's learning")]
    MissingPatch { index: u32, count: u32 },
    #[error("patch {index}'s instruction ({len} bytes) does not decode")]
    BadInstruction { index: u32, len: usize },
    #[error("counters for patch {index}, beyond the {count} there are")]
    CountBeyond { index: u32, count: u32 },
    #[error("scanned instruction at page {page:#x} offset {offset:#x} ({len} bytes) does not fit its page")]
    BadSite { page: u32, offset: u16, len: u8 },
}

impl RawLearning {
    /// Applies the changes `delta` records over `self`, which stays whole
    /// if it was.
    pub fn merge(&mut self, delta: &RawLearning) {
        if delta.full {
            *self = delta.clone();
            return;
        }
        for (page, sites) in &delta.scanned {
            if sites.is_empty() {
                self.scanned.remove(page);
            } else {
                self.scanned.insert(*page, sites.clone());
            }
        }
        self.patch_count = delta.patch_count;
        for (index, p) in &delta.patches {
            self.patches.insert(*index, p.clone());
        }
        for &(index, hits, traps_avoided) in &delta.counts {
            if let Some(p) = self.patches.get_mut(&index) {
                p.hits = hits;
                p.traps_avoided = traps_avoided;
            }
        }
        self.patches.retain(|&i, _| i < delta.patch_count);
        self.hot = delta.hot.clone();
        self.hot_entries = delta.hot_entries.clone();
        self.current = delta.current;
    }

    /// Checks what a restore relies on: whole, every patch present, every
    /// instruction and scanned site sound ([`RawLearning::check_contents`]).
    pub fn check(&self) -> Result<(), LearningError> {
        self.check_complete()?;
        self.check_contents()
    }

    /// Whole, with every patch below the count present.
    pub fn check_complete(&self) -> Result<(), LearningError> {
        if !self.full {
            return Err(LearningError::NotWhole);
        }
        match (0..self.patch_count).find(|i| !self.patches.contains_key(i)) {
            Some(index) => Err(LearningError::MissingPatch {
                index,
                count: self.patch_count,
            }),
            None => Ok(()),
        }
    }

    /// What it holds, whole or not: each patch's instruction of 1 to 15
    /// bytes, counters only for patches there are, each scanned
    /// instruction inside its page.
    pub fn check_contents(&self) -> Result<(), LearningError> {
        if let Some(&(index, _, _)) = self.counts.iter().find(|c| c.0 >= self.patch_count) {
            return Err(LearningError::CountBeyond {
                index,
                count: self.patch_count,
            });
        }
        for (&index, p) in &self.patches {
            if p.bytes.is_empty() || p.bytes.len() > MAX_INSN_LEN {
                return Err(LearningError::BadInstruction {
                    index,
                    len: p.bytes.len(),
                });
            }
        }
        for (&page, sites) in &self.scanned {
            for s in sites {
                if s.len == 0 || usize::from(s.offset) + usize::from(s.len) > 0x1000 {
                    return Err(LearningError::BadSite {
                        page,
                        offset: s.offset,
                        len: s.len,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::PhysMem;

    fn patch(bytes: &[u8]) -> SavedPatch {
        SavedPatch {
            site: 0x1000,
            phys: 0x1000,
            code32: true,
            bytes: bytes.to_vec(),
            kind: PatchKind::Inline,
            state: PatchState::Enabled,
            cause: None,
            installed_at: 0,
            hits: 0,
            traps_avoided: 0,
            region: Vec::new(),
            indexed: true,
        }
    }

    /// Saved learning comes from a file: anything it can hold that a
    /// restore cannot use is an error naming it, and leaves the engine as
    /// it was.
    #[test]
    fn damaged_learning_is_refused_whole() {
        let mut mem = PhysMem::new(1 << 20);
        let mut engine = super::super::RawEngine::default();
        let whole = |patches: Vec<(u32, SavedPatch)>, count| RawLearning {
            full: true,
            patch_count: count,
            patches: patches.into_iter().collect(),
            ..RawLearning::default()
        };
        let cases = [
            (RawLearning::default(), LearningError::NotWhole),
            (
                whole(vec![(0, patch(&[0xFA]))], 2),
                LearningError::MissingPatch { index: 1, count: 2 },
            ),
            (
                whole(vec![(0, patch(&[]))], 1),
                LearningError::BadInstruction { index: 0, len: 0 },
            ),
            // 0F 0B is UD2, two bytes: one byte of it decodes to nothing.
            (
                whole(vec![(0, patch(&[0x0F]))], 1),
                LearningError::BadInstruction { index: 0, len: 1 },
            ),
            (
                RawLearning {
                    counts: vec![(1, 2, 2)],
                    ..whole(vec![(0, patch(&[0xFA]))], 1)
                },
                LearningError::CountBeyond { index: 1, count: 1 },
            ),
            // Two instructions where one was saved.
            (
                whole(vec![(0, patch(&[0xFA, 0xFB]))], 1),
                LearningError::BadInstruction { index: 0, len: 2 },
            ),
            (
                RawLearning {
                    full: true,
                    scanned: [(
                        3,
                        vec![ScannedSite {
                            offset: 0xFFE,
                            code32: true,
                            len: 3,
                            marked: false,
                        }],
                    )]
                    .into_iter()
                    .collect(),
                    ..RawLearning::default()
                },
                LearningError::BadSite {
                    page: 3,
                    offset: 0xFFE,
                    len: 3,
                },
            ),
        ];
        for (learning, want) in cases {
            assert_eq!(
                engine.restore_learning(&learning, &mut mem),
                Err(want.clone()),
                "{want}"
            );
            assert_eq!(engine.patches.patches.len(), 0);
            assert!(!engine.scanner.page_scanned(3));
        }
        let good = whole(vec![(0, patch(&[0xFA]))], 1);
        assert_eq!(engine.restore_learning(&good, &mut mem), Ok(()));
        assert_eq!(engine.patches.patches.len(), 1);
    }

    /// Changes fold over a whole save: pages replaced or forgotten,
    /// patches replaced or added, a table that shrank (a restore) cut.
    #[test]
    fn changes_fold_over_a_whole_save() {
        let site = |offset| ScannedSite {
            offset,
            code32: true,
            len: 1,
            marked: false,
        };
        let mut learning = RawLearning {
            full: true,
            scanned: [(1, vec![site(0)]), (2, vec![site(4)])].into_iter().collect(),
            patch_count: 1,
            patches: [(0, patch(&[0xFA]))].into_iter().collect(),
            ..RawLearning::default()
        };
        learning.merge(&RawLearning {
            full: false,
            scanned: [(1, vec![]), (2, vec![site(4), site(5)]), (7, vec![site(9)])]
                .into_iter()
                .collect(),
            patch_count: 2,
            patches: [(1, patch(&[0xFB]))].into_iter().collect(),
            counts: vec![(0, 5, 4)],
            hot: vec![((1, 2), 3)],
            ..RawLearning::default()
        });
        assert_eq!((learning.patches[&0].hits, learning.patches[&0].traps_avoided), (5, 4));
        assert!(learning.full);
        assert_eq!(learning.scanned.keys().copied().collect::<Vec<_>>(), [2, 7]);
        assert_eq!(learning.scanned[&2].len(), 2);
        assert_eq!(learning.patches.len(), 2);
        assert_eq!(learning.hot, [((1, 2), 3)]);
        assert_eq!(learning.check(), Ok(()));
    }
}
