//! A hex view of guest memory at a linear address or a register.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Widget};

/// Where the memory view looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryAt {
    Address(u32),
    /// A general register or eip, followed as the position moves.
    Register(String),
}

#[derive(Clone, Debug)]
pub struct MemoryState {
    pub at: MemoryAt,
    /// The address the rows start at, resolved at this position.
    pub addr: u32,
    /// 16 bytes per row; `None` where not mapped.
    pub rows: Vec<Vec<Option<u8>>>,
}

impl Default for MemoryState {
    fn default() -> Self {
        MemoryState {
            at: MemoryAt::Register("esp".into()),
            addr: 0,
            rows: Vec::new(),
        }
    }
}

pub struct Memory<'a> {
    pub state: &'a MemoryState,
    pub focused: bool,
}

impl Widget for Memory<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let s = self.state;
        let title = match &s.at {
            MemoryAt::Address(a) => format!(" Memory at {a:#010x} "),
            MemoryAt::Register(r) => format!(" Memory at {r} = {:#010x} ", s.addr),
        };
        let lines: Vec<Line> = s
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let hex: Vec<String> = row
                    .iter()
                    .map(|b| b.map_or_else(|| "??".to_string(), |b| format!("{b:02x}")))
                    .collect();
                let ascii: String = row
                    .iter()
                    .map(|b| match b {
                        Some(c) if c.is_ascii_graphic() || *c == b' ' => *c as char,
                        Some(_) => '.',
                        None => ' ',
                    })
                    .collect();
                Line::from(format!(
                    "{:08x}  {}  {}",
                    s.addr.wrapping_add(16 * i as u32),
                    hex.join(" "),
                    ascii
                ))
            })
            .collect();
        Paragraph::new(lines)
            .block(super::frame(title, self.focused))
            .render(area, buf);
    }
}
