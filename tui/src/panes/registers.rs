//! Registers, the ones the last move changed highlighted.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};
use vm::cpu::state::{reg, CpuState, SegReg};

pub struct Registers<'a> {
    pub cpu: &'a CpuState,
    pub previous: Option<&'a CpuState>,
    pub icount: u64,
    pub end: u64,
    pub focused: bool,
}

const FLAGS: [(u32, char); 9] = [
    (1 << 11, 'O'),
    (1 << 10, 'D'),
    (1 << 9, 'I'),
    (1 << 8, 'T'),
    (1 << 7, 'S'),
    (1 << 6, 'Z'),
    (1 << 4, 'A'),
    (1 << 2, 'P'),
    (1 << 0, 'C'),
];

impl Registers<'_> {
    fn cell(&self, name: &str, value: u32, before: Option<u32>) -> Span<'static> {
        let changed = before.is_some_and(|b| b != value);
        let style = if changed {
            Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        Span::styled(format!("{name:<4}{value:08x}  "), style)
    }
}

impl Widget for Registers<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let c = self.cpu;
        let p = self.previous;
        let mut lines = Vec::new();
        for pair in reg::NAMES.chunks(2).enumerate() {
            let (row, names) = pair;
            let spans = names
                .iter()
                .enumerate()
                .map(|(j, n)| {
                    let i = row * 2 + j;
                    self.cell(n, c.regs[i], p.map(|p| p.regs[i]))
                })
                .collect::<Vec<_>>();
            lines.push(Line::from(spans));
        }
        lines.push(Line::from(vec![
            self.cell("eip", c.eip, p.map(|p| p.eip)),
            self.cell("efl", c.eflags, p.map(|p| p.eflags)),
        ]));
        let flags: String = FLAGS
            .iter()
            .map(|&(bit, ch)| if c.eflags & bit != 0 { ch } else { '-' })
            .collect();
        lines.push(Line::from(format!(
            "flags {flags}  IOPL {}  CPL {}{}",
            (c.eflags >> 12) & 3,
            c.cpl(),
            if c.interrupt_shadow { "  shadow" } else { "" }
        )));
        let segs = [SegReg::Cs, SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs];
        let names = ["cs", "ds", "es", "ss", "fs", "gs"];
        let spans: Vec<Span> = segs
            .iter()
            .zip(names)
            .map(|(&s, n)| {
                let v = c.seg(s).selector;
                let changed = p.is_some_and(|p| p.seg(s).selector != v);
                let style = if changed {
                    Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                Span::styled(format!("{n} {v:04x} "), style)
            })
            .collect();
        lines.push(Line::from(spans));
        lines.push(Line::from(vec![
            self.cell("cr0", c.cr0, p.map(|p| p.cr0)),
            self.cell("cr2", c.cr2, p.map(|p| p.cr2)),
        ]));
        lines.push(Line::from(vec![
            self.cell("cr3", c.cr3, p.map(|p| p.cr3)),
            self.cell("cr4", c.cr4, p.map(|p| p.cr4)),
        ]));
        lines.push(Line::from(format!("icount {} of {}", self.icount, self.end)));
        Paragraph::new(lines)
            .block(super::frame(" Registers ".into(), self.focused))
            .render(area, buf);
    }
}
