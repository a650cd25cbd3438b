//! The event timeline: icount, kind, guest PC and a one-line summary, paged
//! from the trace's event batches.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, StatefulWidget, Widget};
use vm::events::{EventKind, EventRecord};

use crate::session::Cursor;

/// What the timeline shows and where its cursor is.
#[derive(Clone, Debug, Default)]
pub struct TimelineState {
    /// The first row shown.
    pub top: Cursor,
    /// The row the cursor is on.
    pub selected: usize,
    /// The rows from `top` (prepared by the model; as many as fit).
    pub rows: Vec<(Cursor, EventRecord)>,
    /// Rows that fit in the pane.
    pub height: usize,
    /// Kinds shown.
    pub kinds: Vec<EventKind>,
    /// The search, if any: a PC (hex) or text.
    pub search: Option<String>,
}

impl TimelineState {
    pub fn selected_event(&self) -> Option<&(Cursor, EventRecord)> {
        self.rows.get(self.selected)
    }

    pub fn shows(&self, e: &EventRecord) -> bool {
        self.kinds.contains(&e.event.kind())
    }
}

pub struct Timeline {
    pub focused: bool,
    /// The replay's position: rows at or before it are drawn plainly, the
    /// first one after it marked.
    pub icount: u64,
    pub total_batches: usize,
}

impl StatefulWidget for Timeline {
    type State = TimelineState;

    fn render(self, area: Rect, buf: &mut Buffer, state: &mut TimelineState) {
        let hidden = vm::events::EventKind::ALL.len() - state.kinds.len();
        let mut title = format!(" Timeline ({} batches", self.total_batches);
        if hidden > 0 {
            title += &format!(", {hidden} kind(s) hidden");
        }
        if let Some(s) = &state.search {
            title += &format!(", search '{s}'");
        }
        title += ") ";
        let block = super::frame(title, self.focused);
        let mut lines = Vec::new();
        let mut marked = false;
        for (i, (_, e)) in state.rows.iter().enumerate() {
            let here = !marked && e.icount >= self.icount;
            marked |= here;
            let mut style = Style::default();
            if e.icount < self.icount {
                style = style.fg(Color::Gray);
            }
            if i == state.selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            lines.push(Line::from(vec![
                Span::styled(if here { "▶" } else { " " }, Style::default().fg(Color::Yellow)),
                Span::styled(
                    format!(
                        "{:>12} {:<9} {:#010x} {}",
                        e.icount,
                        e.event.kind().name(),
                        e.pc,
                        e.event
                    ),
                    style,
                ),
            ]));
        }
        if lines.is_empty() {
            lines.push(Line::from("(no events of the kinds shown)"));
        }
        Paragraph::new(lines).block(block).render(area, buf);
    }
}
