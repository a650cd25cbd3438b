//! The inspector's panes, each a ratatui widget drawn from data the model
//! prepared (the view does no I/O and no replaying).

pub mod density;
pub mod disasm;
pub mod help;
pub mod memory;
pub mod patches;
pub mod registers;
pub mod serial;
pub mod timeline;

use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, BorderType, Borders};

/// The panes that take the focus (Tab cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Timeline,
    Disassembly,
    Registers,
    Memory,
    Serial,
    Patches,
}

impl Pane {
    pub const ORDER: [Pane; 6] = [
        Pane::Timeline,
        Pane::Disassembly,
        Pane::Registers,
        Pane::Memory,
        Pane::Serial,
        Pane::Patches,
    ];
}

/// A pane's frame: its title, brighter when it has the focus.
pub fn frame(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .border_style(style)
        .title(title)
}
