//! The guest's serial output up to the current position.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Widget};

pub struct Serial<'a> {
    /// Everything the guest wrote to COM1 before the current position.
    pub output: &'a [u8],
    pub focused: bool,
}

impl Widget for Serial<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let text = String::from_utf8_lossy(self.output);
        let inner_height = area.height.saturating_sub(2) as usize;
        let all: Vec<&str> = text.split('\n').collect();
        let shown = &all[all.len().saturating_sub(inner_height)..];
        let lines: Vec<Line> = shown.iter().map(|l| Line::from(l.replace('\r', ""))).collect();
        Paragraph::new(lines)
            .block(super::frame(
                format!(" Serial ({} bytes) ", self.output.len()),
                self.focused,
            ))
            .render(area, buf);
    }
}
