//! The model, its messages and `update` (the Elm architecture): keys become
//! messages, `update` changes the model and prepares what the panes show,
//! the view draws it. Only the event loop touches the terminal.

use std::sync::{Arc, Mutex};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vm::cpu::state::reg;
use vm::events::{EventKind, EventRecord};

use crate::density::{self, Density};
use crate::error::Result;
use crate::panes::memory::{MemoryAt, MemoryState};
use crate::panes::patches::PatchRow;
use crate::panes::timeline::TimelineState;
use crate::panes::Pane;
use crate::session::{Cursor, DisasmLine, Session};

/// Slices of the density picture (folded into the columns that fit).
const DENSITY_SLICES: usize = 1024;
/// Instructions a seek runs between two frames.
pub const SEEK_CHUNK: u64 = 2_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptKind {
    Goto,
    Search,
    Memory,
}

impl PromptKind {
    pub fn label(self) -> &'static str {
        match self {
            PromptKind::Goto => "go to icount",
            PromptKind::Search => "search (0xPC or text)",
            PromptKind::Memory => "memory at (0xaddress or register)",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    Quit,
    ToggleHelp,
    FocusNext,
    FocusPrev,
    StepForward,
    StepBack,
    NextOfKind,
    PrevOfKind,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    GotoSelected,
    /// Go to this icount.
    GoTo(u64),
    ToggleKind(usize),
    Prompt(PromptKind),
    Input(char),
    Backspace,
    Submit,
    Cancel,
    SearchNext,
    LastWrite,
    /// The terminal's size (the timeline's rows depend on it).
    Resize(u16, u16),
    /// Time passes: a seek in progress runs a chunk further.
    Tick,
}

/// A seek under way, for the progress display.
#[derive(Clone, Debug)]
pub struct Busy {
    pub what: String,
    pub from: u64,
    pub target: u64,
    pub started: std::time::Instant,
}

pub struct App {
    pub session: Session,
    pub focus: Pane,
    pub timeline: TimelineState,
    pub memory: MemoryState,
    pub disasm: Vec<DisasmLine>,
    pub patches: Vec<PatchRow>,
    pub patch_scroll: usize,
    pub density: Arc<Mutex<Density>>,
    pub prompt: Option<(PromptKind, String)>,
    pub help: bool,
    pub status: String,
    pub busy: Option<Busy>,
    pub quit: bool,
    /// After a seek, move the timeline to the position.
    follow: bool,
    /// After a jump to an event of a kind, select that event (not just the
    /// first one at its icount), so [ and ] keep to the kind.
    select_kind: Option<EventKind>,
}

impl App {
    pub fn new(session: Session) -> Result<App> {
        let density = density::spawn(session.trace.clone(), session.end(), DENSITY_SLICES);
        let mut app = App {
            session,
            focus: Pane::Timeline,
            timeline: TimelineState {
                kinds: EventKind::ALL.to_vec(),
                height: 20,
                ..TimelineState::default()
            },
            memory: MemoryState::default(),
            disasm: Vec::new(),
            patches: Vec::new(),
            patch_scroll: 0,
            density,
            prompt: None,
            help: false,
            status: "? for help".into(),
            busy: None,
            quit: false,
            follow: true,
            select_kind: None,
        };
        app.refresh()?;
        Ok(app)
    }

    /// Maps a key to a message, given what is on screen.
    pub fn key(&self, key: KeyEvent) -> Option<Msg> {
        if self.prompt.is_some() {
            return match key.code {
                KeyCode::Esc => Some(Msg::Cancel),
                KeyCode::Enter => Some(Msg::Submit),
                KeyCode::Backspace => Some(Msg::Backspace),
                KeyCode::Char(c) => Some(Msg::Input(c)),
                _ => None,
            };
        }
        if self.help {
            return matches!(key.code, KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q'))
                .then_some(Msg::ToggleHelp);
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Msg::Quit);
        }
        Some(match key.code {
            KeyCode::Char('q') | KeyCode::Esc => Msg::Quit,
            KeyCode::Char('?') => Msg::ToggleHelp,
            KeyCode::Tab => Msg::FocusNext,
            KeyCode::BackTab => Msg::FocusPrev,
            KeyCode::Char('s') | KeyCode::Right => Msg::StepForward,
            KeyCode::Char('S') | KeyCode::Left => Msg::StepBack,
            KeyCode::Char(']') => Msg::NextOfKind,
            KeyCode::Char('[') => Msg::PrevOfKind,
            KeyCode::Up => Msg::Up,
            KeyCode::Down => Msg::Down,
            KeyCode::PageUp => Msg::PageUp,
            KeyCode::PageDown => Msg::PageDown,
            KeyCode::Home => Msg::Home,
            KeyCode::End => Msg::End,
            KeyCode::Enter => Msg::GotoSelected,
            KeyCode::Char(c @ '1'..='9') => Msg::ToggleKind(c as usize - '1' as usize),
            KeyCode::Char('g') => Msg::Prompt(PromptKind::Goto),
            KeyCode::Char('/') => Msg::Prompt(PromptKind::Search),
            KeyCode::Char('m') => Msg::Prompt(PromptKind::Memory),
            KeyCode::Char('n') => Msg::SearchNext,
            KeyCode::Char('w') => Msg::LastWrite,
            _ => return None,
        })
    }

    /// Applies a message. Errors become the status line: the inspector
    /// stays up.
    pub fn update(&mut self, msg: Msg) {
        if let Err(e) = self.apply(msg) {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text += &format!(": {s}");
                src = s.source();
            }
            self.status = text;
        }
    }

    fn apply(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Quit => self.quit = true,
            Msg::ToggleHelp => self.help = !self.help,
            Msg::FocusNext | Msg::FocusPrev => {
                let n = Pane::ORDER.len();
                let i = Pane::ORDER.iter().position(|&p| p == self.focus).unwrap_or(0);
                let j = if msg == Msg::FocusNext {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.focus = Pane::ORDER[j];
            }
            Msg::StepForward => {
                let t = self.session.icount() + 1;
                self.seek(t, "step")?;
            }
            Msg::StepBack => {
                let t = self.session.icount().saturating_sub(1);
                self.seek(t, "step back")?;
            }
            Msg::NextOfKind | Msg::PrevOfKind => self.event_of_kind(msg == Msg::NextOfKind)?,
            Msg::Up | Msg::Down | Msg::PageUp | Msg::PageDown | Msg::Home | Msg::End => {
                if self.focus == Pane::Patches {
                    self.scroll_patches(&msg);
                } else {
                    self.move_cursor(&msg)?;
                }
            }
            Msg::GotoSelected => {
                if let Some((_, e)) = self.timeline.selected_event().cloned() {
                    self.follow = false;
                    self.seek(e.icount, "go to event")?;
                }
            }
            Msg::GoTo(icount) => self.seek(icount, "go to")?,
            Msg::ToggleKind(i) => {
                if let Some(&k) = EventKind::ALL.get(i) {
                    if let Some(p) = self.timeline.kinds.iter().position(|&x| x == k) {
                        self.timeline.kinds.remove(p);
                    } else {
                        self.timeline.kinds.push(k);
                    }
                    self.status = format!(
                        "{} events {}",
                        k.name(),
                        if self.timeline.kinds.contains(&k) {
                            "shown"
                        } else {
                            "hidden"
                        }
                    );
                    let c = self.timeline.top;
                    self.fill_timeline(c)?;
                }
            }
            Msg::Prompt(kind) => self.prompt = Some((kind, String::new())),
            Msg::Input(c) => {
                if let Some((_, text)) = self.prompt.as_mut() {
                    text.push(c);
                }
            }
            Msg::Backspace => {
                if let Some((_, text)) = self.prompt.as_mut() {
                    text.pop();
                }
            }
            Msg::Cancel => self.prompt = None,
            Msg::Submit => {
                if let Some((kind, text)) = self.prompt.take() {
                    self.submit(kind, text.trim())?;
                }
            }
            Msg::SearchNext => self.search_next()?,
            Msg::LastWrite => {
                let addr = self.memory.addr;
                self.status = format!("searching backwards for the last write to {addr:#010x}...");
                match self.session.last_write(addr)? {
                    Some(at) => self.status = format!("last write to {addr:#010x}: the instruction at icount {at}"),
                    None => self.status = format!("no write to {addr:#010x} before this point"),
                }
                self.follow = true;
                self.refresh()?;
            }
            Msg::Resize(w, h) => {
                self.timeline.height = crate::layout::timeline_rows(w, h);
                let c = self.timeline.top;
                self.fill_timeline(c)?;
            }
            Msg::Tick => self.tick()?,
        }
        Ok(())
    }

    /// Starts a move to `target`; short ones finish here, long ones run on
    /// in chunks at each tick with a progress display.
    fn seek(&mut self, target: u64, what: &str) -> Result<()> {
        self.session.begin_seek(target)?;
        self.busy = Some(Busy {
            what: what.into(),
            from: self.session.icount(),
            target: target.min(self.session.end()),
            started: std::time::Instant::now(),
        });
        self.tick()
    }

    fn tick(&mut self) -> Result<()> {
        if self.busy.is_none() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // Run chunks for up to about 50 ms, then let a frame be drawn.
        loop {
            if self.session.advance(SEEK_CHUNK)? {
                self.busy = None;
                self.status = format!("at icount {}", self.session.icount());
                return self.refresh();
            }
            if started.elapsed() > std::time::Duration::from_millis(50) {
                return Ok(());
            }
        }
    }

    /// Fills the panes' data for the current position.
    pub fn refresh(&mut self) -> Result<()> {
        self.disasm = self.session.disassemble(4, 14);
        self.memory.addr = match &self.memory.at {
            MemoryAt::Address(a) => *a,
            MemoryAt::Register(r) => register(self.session.cpu(), r).unwrap_or(0),
        };
        let bytes = self.session.read(self.memory.addr, 16 * 8);
        self.memory.rows = bytes.chunks(16).map(<[Option<u8>]>::to_vec).collect();
        self.patches = self
            .session
            .replayer
            .machine
            .raw
            .patches
            .patches
            .iter()
            .map(|p| PatchRow {
                site: p.site,
                kind: format!("{:?}", p.kind).to_lowercase(),
                state: match p.state {
                    vm::engine::raw::patm::PatchState::Refused(_) => "refused".into(),
                    s => format!("{s:?}").to_lowercase(),
                },
                hits: p.hits,
                traps_avoided: p.traps_avoided,
                instruction: {
                    use iced_x86::Formatter as _;
                    let mut s = String::new();
                    iced_x86::IntelFormatter::new().format(&p.inst, &mut s);
                    s
                },
            })
            .collect();
        if self.follow {
            let c = self.session.events.at_icount(self.session.icount())?;
            // Keep a few earlier events in view above the position.
            let mut top = c;
            for _ in 0..3 {
                let kinds = self.timeline.kinds.clone();
                match self.session.events.prev(top, &|e| kinds.contains(&e.event.kind()))? {
                    Some((p, _)) => top = p,
                    None => break,
                }
            }
            self.fill_timeline(top)?;
            let here = self.session.icount();
            let kind = self.select_kind.take();
            self.timeline.selected = self
                .timeline
                .rows
                .iter()
                .position(|(_, e)| e.icount >= here && kind.map_or(true, |k| k == e.event.kind()))
                .unwrap_or(0);
        }
        self.follow = true;
        Ok(())
    }

    /// The rows of the timeline from `top`.
    fn fill_timeline(&mut self, top: Cursor) -> Result<()> {
        let kinds = self.timeline.kinds.clone();
        let keep = |e: &EventRecord| kinds.contains(&e.event.kind());
        let mut rows = Vec::new();
        let mut c = top;
        while rows.len() < self.timeline.height {
            match self.session.events.next(c, &keep)? {
                Some((at, e)) => {
                    c = Cursor {
                        batch: at.batch,
                        index: at.index + 1,
                    };
                    rows.push((at, e));
                }
                None => break,
            }
        }
        self.timeline.top = rows.first().map_or(top, |r| r.0);
        self.timeline.rows = rows;
        self.timeline.selected = self.timeline.selected.min(self.timeline.rows.len().saturating_sub(1));
        Ok(())
    }

    fn move_cursor(&mut self, msg: &Msg) -> Result<()> {
        let kinds = self.timeline.kinds.clone();
        let keep = |e: &EventRecord| kinds.contains(&e.event.kind());
        let page = self.timeline.height.saturating_sub(1).max(1);
        match msg {
            Msg::Down if self.timeline.selected + 1 < self.timeline.rows.len() => self.timeline.selected += 1,
            Msg::Up if self.timeline.selected > 0 => self.timeline.selected -= 1,
            Msg::Down | Msg::PageDown => {
                let steps = if *msg == Msg::Down { 1 } else { page };
                let mut top = self.timeline.top;
                for _ in 0..steps {
                    let next = Cursor {
                        batch: top.batch,
                        index: top.index + 1,
                    };
                    match self.session.events.next(next, &keep)? {
                        Some((c, _)) => top = c,
                        None => break,
                    }
                }
                self.fill_timeline(top)?;
            }
            Msg::Up | Msg::PageUp => {
                let steps = if *msg == Msg::Up { 1 } else { page };
                let mut top = self.timeline.top;
                for _ in 0..steps {
                    match self.session.events.prev(top, &keep)? {
                        Some((c, _)) => top = c,
                        None => break,
                    }
                }
                self.fill_timeline(top)?;
            }
            Msg::Home => {
                self.fill_timeline(Cursor::default())?;
                self.timeline.selected = 0;
            }
            Msg::End => {
                let end = Cursor {
                    batch: self.session.events.batches(),
                    index: 0,
                };
                let mut top = end;
                for _ in 0..self.timeline.height {
                    match self.session.events.prev(top, &keep)? {
                        Some((c, _)) => top = c,
                        None => break,
                    }
                }
                self.fill_timeline(top)?;
                self.timeline.selected = self.timeline.rows.len().saturating_sub(1);
            }
            _ => {}
        }
        Ok(())
    }

    fn scroll_patches(&mut self, msg: &Msg) {
        let last = self.patches.len().saturating_sub(1);
        self.patch_scroll = match msg {
            Msg::Up => self.patch_scroll.saturating_sub(1),
            Msg::Down => (self.patch_scroll + 1).min(last),
            Msg::PageUp => self.patch_scroll.saturating_sub(10),
            Msg::PageDown => (self.patch_scroll + 10).min(last),
            Msg::Home => 0,
            _ => last,
        };
    }

    /// The next (or previous) event after (before) the position of the
    /// selected event's kind, and goes there.
    fn event_of_kind(&mut self, forward: bool) -> Result<()> {
        let Some(kind) = self.timeline.selected_event().map(|(_, e)| e.event.kind()) else {
            self.status = "no event selected".into();
            return Ok(());
        };
        let here = self.session.icount();
        let keep = |e: &EventRecord| e.event.kind() == kind;
        let found = if forward {
            self.session.trace.next_event(here, &keep)?
        } else {
            self.session.trace.prev_event(here, &keep)?
        };
        match found {
            Some(e) => {
                self.select_kind = Some(kind);
                self.seek(e.icount, &format!("{} event", kind.name()))
            }
            None => {
                self.status = format!(
                    "no {} event {} here",
                    kind.name(),
                    if forward { "after" } else { "before" }
                );
                Ok(())
            }
        }
    }

    fn submit(&mut self, kind: PromptKind, text: &str) -> Result<()> {
        match kind {
            PromptKind::Goto => match parse_u64(text) {
                Some(n) => self.seek(n, "go to")?,
                None => self.status = format!("'{text}' is not an icount"),
            },
            PromptKind::Search => {
                self.timeline.search = (!text.is_empty()).then(|| text.to_string());
                self.search_next()?;
            }
            PromptKind::Memory => {
                let lower = text.to_ascii_lowercase();
                if register(self.session.cpu(), &lower).is_some() {
                    self.memory.at = MemoryAt::Register(lower);
                } else if let Some(a) = parse_number(text) {
                    self.memory.at = MemoryAt::Address(a);
                } else {
                    self.status = format!("'{text}' is neither an address nor a register");
                    return Ok(());
                }
                self.focus = Pane::Memory;
                self.refresh()?;
            }
        }
        Ok(())
    }

    /// Moves the timeline cursor to the next event after it that matches
    /// the search.
    fn search_next(&mut self) -> Result<()> {
        let Some(text) = self.timeline.search.clone() else {
            self.status = "no search (/ starts one)".into();
            return Ok(());
        };
        let pc = text.strip_prefix("0x").and_then(|h| u32::from_str_radix(h, 16).ok());
        let lower = text.to_lowercase();
        let from = match self.timeline.selected_event() {
            Some((c, _)) => Cursor {
                batch: c.batch,
                index: c.index + 1,
            },
            None => self.timeline.top,
        };
        let kinds: Vec<EventKind> = self.timeline.kinds.clone();
        let matches = |e: &EventRecord| {
            kinds.contains(&e.event.kind())
                && match pc {
                    Some(pc) => e.pc == pc,
                    None => e.event.to_string().to_lowercase().contains(&lower),
                }
        };
        match self.session.events.next(from, &matches)? {
            Some((c, e)) => {
                self.fill_timeline(c)?;
                self.timeline.selected = 0;
                self.status = format!("found at icount {}", e.icount);
            }
            None => self.status = format!("'{text}' not found after the cursor"),
        }
        Ok(())
    }
}

/// A number, decimal or 0x-hex, `_` allowed between digits.
fn parse_u64(text: &str) -> Option<u64> {
    let t = text.replace('_', "");
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

fn parse_number(text: &str) -> Option<u32> {
    parse_u64(text).and_then(|n| u32::try_from(n).ok())
}

/// A general register or eip by name.
fn register(cpu: &vm::cpu::state::CpuState, name: &str) -> Option<u32> {
    if name == "eip" {
        return Some(cpu.eip);
    }
    reg::NAMES.iter().position(|&n| n == name).map(|i| cpu.regs[i])
}
