//! Where the guest paid for virtualization: traps, emulations, patches and
//! interrupts per slice of icount over the whole run, with a cursor at the
//! current position.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::density::{Density, ROWS};

const LEVELS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const COLORS: [Color; 4] = [Color::Red, Color::Yellow, Color::Green, Color::Blue];
const LABEL: usize = 11;

pub struct DensityChart<'a> {
    pub density: &'a Density,
    pub icount: u64,
}

impl Widget for DensityChart<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let d = self.density;
        let width = (area.width as usize).saturating_sub(LABEL).max(1);
        // The counts fold into as many columns as fit.
        let slices = d.counts.len().max(1);
        let column = |s: usize| s * width / slices;
        let mut lines = Vec::new();
        for (row, name) in ROWS.iter().enumerate() {
            let mut cols = vec![0u64; width];
            for (s, c) in d.counts.iter().enumerate() {
                if let Some(v) = cols.get_mut(column(s)) {
                    *v += u64::from(c[row]);
                }
            }
            let max = cols.iter().copied().max().unwrap_or(0).max(1);
            let bars: String = cols
                .iter()
                .map(|&v| {
                    if v == 0 {
                        ' '
                    } else {
                        LEVELS[(1 + (v * 7) / max) as usize]
                    }
                })
                .collect();
            lines.push(Line::from(vec![
                Span::raw(format!("{name:>10} ")),
                Span::styled(bars, Style::default().fg(COLORS[row])),
            ]));
        }
        let at = column(d.slice_of(self.icount)).min(width - 1);
        let label = match &d.error {
            Some(_) => "(unread)",
            None if d.done() => "here",
            None => "(reading)",
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{label:>10} ")),
            Span::raw(" ".repeat(at)),
            Span::styled("▲", Style::default().fg(Color::Yellow)),
        ]));
        Paragraph::new(lines).render(area, buf);
    }
}
