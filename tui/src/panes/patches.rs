//! The raw engine's patch table at the current position (as the recorder's
//! was there; after a step back to a snapshot between checkpoints, as an
//! engine that started there would have it).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Row, Table, Widget};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchRow {
    pub site: u32,
    pub kind: String,
    pub state: String,
    pub hits: u64,
    pub traps_avoided: u64,
    pub instruction: String,
}

pub struct Patches<'a> {
    pub rows: &'a [PatchRow],
    /// The first row shown.
    pub scroll: usize,
    pub focused: bool,
}

impl Widget for Patches<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let header = Row::new(["site", "kind", "state", "hits", "avoided", "instruction"])
            .style(Style::default().add_modifier(Modifier::BOLD));
        let rows = self.rows.iter().skip(self.scroll).map(|p| {
            Row::new([
                format!("{:08x}", p.site),
                p.kind.clone(),
                p.state.clone(),
                p.hits.to_string(),
                p.traps_avoided.to_string(),
                p.instruction.clone(),
            ])
        });
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Min(10),
            ],
        )
        .header(header)
        .block(super::frame(format!(" Patches ({}) ", self.rows.len()), self.focused))
        .render(area, buf);
    }
}
