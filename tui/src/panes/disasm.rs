//! Disassembly around the current position: instructions stepped over
//! above, the current one marked, the next ones below.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::session::DisasmLine;

pub struct Disassembly<'a> {
    pub lines: &'a [DisasmLine],
    pub focused: bool,
}

impl Widget for Disassembly<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let mut out = Vec::new();
        for l in self.lines {
            if let Some(sym) = &l.symbol {
                if !sym.contains('+') {
                    out.push(Line::from(Span::styled(
                        format!("<{sym}>:"),
                        Style::default().fg(Color::Magenta),
                    )));
                }
            }
            let bytes: String = l.bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
            let style = if l.current {
                Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            out.push(Line::from(vec![
                Span::styled(if l.current { "→ " } else { "  " }, style),
                Span::styled(format!("{:#010x}  {:<21} {}", l.addr, bytes, l.text), style),
                Span::styled(
                    if l.disagree {
                        "  (capstone and iced-x86 disagree on its length)"
                    } else {
                        ""
                    },
                    Style::default().fg(Color::Red),
                ),
            ]));
        }
        if out.is_empty() {
            out.push(Line::from("(the code here is not mapped)"));
        }
        Paragraph::new(out)
            .block(super::frame(" Disassembly ".into(), self.focused))
            .render(area, buf);
    }
}
