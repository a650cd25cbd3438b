//! The inspector's access to a trace: a replayer at the current position
//! (moved by seeks done in chunks, so the screen can show progress), the
//! event batches paged in from the index as they are looked at, symbols
//! from the kernel image, and disassembly.

use std::collections::HashMap;
use std::sync::Arc;

use replay::format::FrameKind;
use replay::model::FrameEntry;
use replay::{ReplayOptions, Replayer, Trace};
use vm::cpu::state::CpuState;
use vm::events::EventRecord;
use vm::machine::Kernel;

use crate::error::{Result, TuiError};

/// Decoded event batches kept at most (the rest are decoded again).
const BATCH_CACHE: usize = 64;

/// Where an event is: its batch and its index in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub batch: usize,
    pub index: usize,
}

/// The trace's events, a batch at a time: nothing is decoded until shown.
pub struct EventPager {
    trace: Arc<Trace>,
    frames: Vec<FrameEntry>,
    cache: HashMap<usize, Arc<Vec<EventRecord>>>,
    /// Batches in the order they were used, for eviction.
    used: Vec<usize>,
}

impl EventPager {
    fn new(trace: Arc<Trace>) -> Self {
        let frames = trace.frames_of(FrameKind::Events).cloned().collect();
        EventPager {
            trace,
            frames,
            cache: HashMap::new(),
            used: Vec::new(),
        }
    }

    pub fn batches(&self) -> usize {
        self.frames.len()
    }

    fn batch(&mut self, b: usize) -> Result<Arc<Vec<EventRecord>>> {
        if let Some(events) = self.cache.get(&b) {
            let events = events.clone();
            self.used.retain(|&u| u != b);
            self.used.push(b);
            return Ok(events);
        }
        let frame = self.frames.get(b).ok_or(TuiError::NoSuchBatch(b))?;
        let events = Arc::new(self.trace.event_batch(frame)?);
        if self.cache.len() >= BATCH_CACHE && !self.used.is_empty() {
            let old = self.used.remove(0);
            self.cache.remove(&old);
        }
        self.cache.insert(b, events.clone());
        self.used.push(b);
        Ok(events)
    }

    /// The first event at or after `from` that `keep` accepts.
    pub fn next(&mut self, from: Cursor, keep: &dyn Fn(&EventRecord) -> bool) -> Result<Option<(Cursor, EventRecord)>> {
        let mut c = from;
        while c.batch < self.frames.len() {
            let events = self.batch(c.batch)?;
            if let Some((i, e)) = events.iter().enumerate().skip(c.index).find(|(_, e)| keep(e)) {
                return Ok(Some((
                    Cursor {
                        batch: c.batch,
                        index: i,
                    },
                    e.clone(),
                )));
            }
            c = Cursor {
                batch: c.batch + 1,
                index: 0,
            };
        }
        Ok(None)
    }

    /// The last event before `before` that `keep` accepts.
    pub fn prev(
        &mut self,
        before: Cursor,
        keep: &dyn Fn(&EventRecord) -> bool,
    ) -> Result<Option<(Cursor, EventRecord)>> {
        let mut batch = before.batch.min(self.frames.len());
        let mut limit = if batch < self.frames.len() {
            before.index
        } else {
            usize::MAX
        };
        loop {
            if batch < self.frames.len() {
                let events = self.batch(batch)?;
                let end = limit.min(events.len());
                if let Some(i) = (0..end).rev().find(|&i| keep(&events[i])) {
                    return Ok(Some((Cursor { batch, index: i }, events[i].clone())));
                }
            }
            if batch == 0 {
                return Ok(None);
            }
            batch -= 1;
            limit = usize::MAX;
        }
    }

    /// The cursor of the first event at or after `icount`.
    pub fn at_icount(&mut self, icount: u64) -> Result<Cursor> {
        if self.frames.is_empty() {
            return Ok(Cursor::default());
        }
        // Batch b holds events from its first icount up to the next batch's.
        let b = self.frames.partition_point(|f| f.icount <= icount).saturating_sub(1);
        let events = self.batch(b)?;
        let index = events.partition_point(|e| e.icount < icount);
        Ok(if index < events.len() || b + 1 >= self.frames.len() {
            Cursor { batch: b, index }
        } else {
            Cursor { batch: b + 1, index: 0 }
        })
    }
}

/// Function and object symbols of the kernel image, by address.
#[derive(Default)]
pub struct Symbols {
    by_addr: Vec<(u32, u32, String)>,
}

impl Symbols {
    fn of(kernel: &Kernel) -> Symbols {
        let Some(image) = kernel.symbols() else {
            return Symbols::default();
        };
        let Ok(elf) = goblin::elf::Elf::parse(image) else {
            return Symbols::default();
        };
        let mut by_addr: Vec<(u32, u32, String)> = elf
            .syms
            .iter()
            .filter(|s| {
                use goblin::elf::sym::{STT_FUNC, STT_NOTYPE, STT_OBJECT};
                s.st_value != 0 && matches!(s.st_type(), STT_FUNC | STT_OBJECT | STT_NOTYPE)
            })
            .filter_map(|s| {
                let name = elf.strtab.get_at(s.st_name)?;
                (!name.is_empty() && !name.starts_with('.'))
                    .then(|| (s.st_value as u32, s.st_size as u32, name.to_string()))
            })
            .collect();
        by_addr.sort();
        Symbols { by_addr }
    }

    /// `name+offset` for an address inside (or just after a sizeless) symbol.
    pub fn describe(&self, addr: u32) -> Option<String> {
        let i = self.by_addr.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (start, size, name) = &self.by_addr[i];
        let off = addr - start;
        if (*size != 0 && off >= *size) || off > 0x10000 {
            return None;
        }
        Some(if off == 0 {
            name.clone()
        } else {
            format!("{name}+{off:#x}")
        })
    }
}

/// One disassembled instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisasmLine {
    pub addr: u32,
    pub bytes: Vec<u8>,
    /// Capstone's text (iced-x86's when capstone cannot decode it).
    pub text: String,
    pub symbol: Option<String>,
    /// iced-x86 and capstone disagree on the length.
    pub disagree: bool,
    pub current: bool,
}

pub struct Session {
    pub trace: Arc<Trace>,
    pub replayer: Replayer<'static>,
    pub events: EventPager,
    pub symbols: Symbols,
    /// Where a seek in progress is going.
    target: Option<u64>,
    /// The CPU before the last move, to show what changed.
    pub previous: Option<CpuState>,
    /// PCs of the instructions stepped over, for disassembly above the
    /// current one.
    pub trail: Vec<u32>,
    /// Capstone for 32-bit and 16-bit code (none if it cannot start).
    capstone: [Option<capstone::Capstone>; 2],
}

impl Session {
    /// Opens a trace; every error (unreadable, damaged beyond use) comes
    /// here, before any screen is drawn.
    pub fn open(path: &std::path::Path) -> Result<Session> {
        let trace = Trace::open(path).map_err(|source| TuiError::Trace {
            path: path.display().to_string(),
            source,
        })?;
        Session::new(Arc::new(trace))
    }

    pub fn new(trace: Arc<Trace>) -> Result<Session> {
        let mut replayer = Replayer::shared(trace.clone(), ReplayOptions::default())?;
        replayer.keep_history();
        let symbols = Symbols::of(&trace.header.kernel);
        use capstone::arch::BuildsCapstone;
        let build = |mode| capstone::Capstone::new().x86().mode(mode).build().ok();
        let capstone = [
            build(capstone::arch::x86::ArchMode::Mode32),
            build(capstone::arch::x86::ArchMode::Mode16),
        ];
        Ok(Session {
            events: EventPager::new(trace.clone()),
            trace,
            replayer,
            symbols,
            target: None,
            previous: None,
            trail: Vec::new(),
            capstone,
        })
    }

    pub fn icount(&self) -> u64 {
        self.replayer.icount()
    }

    pub fn end(&self) -> u64 {
        self.replayer.end_icount()
    }

    pub fn cpu(&self) -> &CpuState {
        &self.replayer.machine.cpu.state
    }

    pub fn pc(&self) -> u32 {
        vm::engine::raw::pc(&self.replayer.machine.cpu)
    }

    /// Starts moving to `target`: restores the nearest checkpoint at or
    /// before it unless the replay is already on the way there. `advance`
    /// does the running.
    pub fn begin_seek(&mut self, target: u64) -> Result<()> {
        let here = self.icount();
        self.previous = Some(self.cpu().clone());
        if target == here + 1 && target <= self.end() {
            self.trail.push(self.pc());
        } else {
            self.trail.clear();
        }
        self.target = Some(self.replayer.begin_seek(target)?);
        Ok(())
    }

    /// Runs at most `budget` instructions towards the seek's target;
    /// returns true when there.
    pub fn advance(&mut self, budget: u64) -> Result<bool> {
        let Some(target) = self.target else {
            return Ok(true);
        };
        let next = self.icount().saturating_add(budget).min(target);
        self.replayer.run_to(next, false)?;
        // A replay that cannot get further (the trace ends) is there too.
        if self.icount() >= target || self.icount() < next {
            self.target = None;
        }
        Ok(self.target.is_none())
    }

    /// Where a seek in progress is going.
    pub fn seeking(&self) -> Option<u64> {
        self.target
    }

    /// Moves to `target` at once.
    pub fn seek(&mut self, target: u64) -> Result<()> {
        self.begin_seek(target)?;
        while !self.advance(u64::MAX)? {}
        Ok(())
    }

    /// Guest memory at a linear address, `None` for bytes not mapped.
    pub fn read(&mut self, addr: u32, len: usize) -> Vec<Option<u8>> {
        (0..len)
            .map(|i| {
                self.replayer
                    .read_linear(addr.wrapping_add(i as u32), 1)
                    .and_then(|b| b.first().copied())
            })
            .collect()
    }

    /// The guest-physical address a linear one maps to now.
    pub fn translate(&mut self, addr: u32) -> Option<u32> {
        let m = &mut self.replayer.machine;
        m.cpu.probe_translate(&mut m.platform, addr)
    }

    /// The last instruction before the current position that wrote the
    /// byte at linear `addr`; the replay stays there.
    pub fn last_write(&mut self, addr: u32) -> Result<Option<u64>> {
        let phys = self.translate(addr).ok_or(TuiError::Unmapped(addr))?;
        self.previous = Some(self.cpu().clone());
        self.trail.clear();
        Ok(self.replayer.find_previous(replay::timeline::Predicate::Writes {
            start: phys,
            end: phys + 1,
        })?)
    }

    /// `before` instructions stepped over (when known) and `after` from the
    /// current one on. iced-x86 decides where instructions start; capstone
    /// gives the text, and a disagreement on length is flagged.
    pub fn disassemble(&mut self, before: usize, after: usize) -> Vec<DisasmLine> {
        let code32 = self.cpu().code32();
        let mut out = Vec::new();
        let start = self.trail.len().saturating_sub(before);
        let trail: Vec<u32> = self.trail[start..].to_vec();
        for addr in trail {
            if let Some(line) = self.decode(addr, code32, false) {
                out.push(line);
            }
        }
        let mut addr = self.pc();
        for i in 0..after {
            let Some(line) = self.decode(addr, code32, i == 0) else {
                break;
            };
            addr = addr.wrapping_add(line.bytes.len() as u32);
            out.push(line);
        }
        out
    }

    fn decode(&mut self, addr: u32, code32: bool, current: bool) -> Option<DisasmLine> {
        let bytes: Vec<u8> = self.read(addr, 15).into_iter().map_while(|b| b).collect();
        if bytes.is_empty() {
            return None;
        }
        let ip = u64::from(addr);
        // As the machine decodes: the inspector never disagrees with it on
        // where an instruction ends.
        let Some(inst) = vm::exec::decode::decode_one(&bytes, ip, code32) else {
            return Some(DisasmLine {
                addr,
                bytes: bytes[..1].to_vec(),
                text: "(bad)".into(),
                symbol: self.symbols.describe(addr),
                disagree: false,
                current,
            });
        };
        let len = inst.len();
        let mut text = None;
        let mut disagree = false;
        if let Some(cs) = self.capstone[usize::from(!code32)].as_ref() {
            if let Ok(insns) = cs.disasm_count(&bytes, ip, 1) {
                if let Some(i) = insns.iter().next() {
                    disagree = i.len() != len;
                    text = Some(
                        format!("{} {}", i.mnemonic().unwrap_or("?"), i.op_str().unwrap_or(""))
                            .trim()
                            .to_string(),
                    );
                }
            }
        }
        let text = text.unwrap_or_else(|| {
            use iced_x86::Formatter as _;
            let mut s = String::new();
            iced_x86::IntelFormatter::new().format(&inst, &mut s);
            s
        });
        Some(DisasmLine {
            addr,
            bytes: bytes[..len.min(bytes.len())].to_vec(),
            text,
            symbol: self.symbols.describe(addr),
            disagree,
            current,
        })
    }
}
