//! The help overlay: every key.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Clear, Paragraph, Widget};

/// Every key and what it does (the overlay lists exactly these).
pub const KEYS: &[(&str, &str)] = &[
    ("s  →", "step one instruction forwards"),
    ("S  ←", "step one instruction backwards"),
    ("]", "next event of the selected event's kind"),
    ("[", "previous event of the selected event's kind"),
    ("Enter", "go to the event under the cursor"),
    ("g", "go to an icount"),
    ("↑ ↓ PgUp PgDn", "move through the timeline (or the patch table)"),
    ("Home End", "first and last event"),
    (
        "1-9",
        "show/hide a kind: trap emulated exception interrupt engine scan patch smc i/o",
    ),
    ("/", "search events: a PC (0x...) or text; n finds the next"),
    ("m", "memory view at an address (hex) or a register (esp, eax, ...)"),
    (
        "w",
        "go back to the last write of the byte at the memory view's address",
    ),
    ("Tab Shift-Tab", "focus the next or previous pane"),
    ("?", "this help"),
    ("q  Esc", "quit (Esc first closes a prompt or this help)"),
];

pub struct Help;

impl Widget for Help {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let width = area.width.min(100);
        let height = area.height.min(KEYS.len() as u16 + 2);
        let r = Rect {
            x: area.x + (area.width - width) / 2,
            y: area.y + (area.height - height) / 2,
            width,
            height,
        };
        Clear.render(r, buf);
        let lines: Vec<Line> = KEYS
            .iter()
            .map(|(k, what)| Line::from(format!(" {k:<15} {what}")))
            .collect();
        Paragraph::new(lines)
            .block(super::frame(" Keys (? or Esc closes) ".into(), true))
            .render(r, buf);
    }
}
