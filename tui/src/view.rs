//! The whole screen, drawn from the model alone.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};
use ratatui::Frame;

use crate::app::App;
use crate::layout::{left_split, rows};
use crate::panes::density::DensityChart;
use crate::panes::disasm::Disassembly;
use crate::panes::help::Help;
use crate::panes::memory::Memory;
use crate::panes::patches::Patches;
use crate::panes::registers::Registers;
use crate::panes::serial::Serial;
use crate::panes::timeline::Timeline;
use crate::panes::Pane;

/// How long a seek runs before its progress is shown.
const PROGRESS_AFTER: std::time::Duration = std::time::Duration::from_millis(150);

pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    let [main, density, status] = rows(area);
    let [left, right] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(62), Constraint::Percentage(38)])
        .areas(main);
    let [timeline, disasm, bottom] = left_split(left);
    let [memory, serial] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(60), Constraint::Percentage(40)])
        .areas(bottom);
    let [registers, patches] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(12), Constraint::Min(4)])
        .areas(right);

    let s = &app.session;
    let focus = app.focus;
    frame.render_stateful_widget(
        Timeline {
            focused: focus == Pane::Timeline,
            icount: s.icount(),
            total_batches: s.events.batches(),
        },
        timeline,
        &mut app.timeline,
    );
    let s = &app.session;
    frame.render_widget(
        Disassembly {
            lines: &app.disasm,
            focused: focus == Pane::Disassembly,
        },
        disasm,
    );
    frame.render_widget(
        Registers {
            cpu: s.cpu(),
            previous: s.previous.as_ref(),
            icount: s.icount(),
            end: s.end(),
            focused: focus == Pane::Registers,
        },
        registers,
    );
    frame.render_widget(
        Memory {
            state: &app.memory,
            focused: focus == Pane::Memory,
        },
        memory,
    );
    frame.render_widget(
        Serial {
            output: &s.replayer.console.serial,
            focused: focus == Pane::Serial,
        },
        serial,
    );
    frame.render_widget(
        Patches {
            rows: &app.patches,
            scroll: app.patch_scroll,
            focused: focus == Pane::Patches,
        },
        patches,
    );
    if let Ok(d) = app.density.lock() {
        frame.render_widget(
            DensityChart {
                density: &d,
                icount: s.icount(),
            },
            density,
        );
    }
    draw_status(frame, app, status);
    if app.help {
        frame.render_widget(Help, main);
    }
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    if let Some(b) = &app.busy {
        if b.started.elapsed() >= PROGRESS_AFTER {
            let done = app.session.icount().saturating_sub(b.from.min(app.session.icount()));
            let total = b.target.abs_diff(b.from).max(1);
            let ratio = (done as f64 / total as f64).clamp(0.0, 1.0);
            frame.render_widget(
                Gauge::default()
                    .gauge_style(Style::default().fg(Color::Cyan))
                    .label(format!("{}: icount {} of {}", b.what, app.session.icount(), b.target))
                    .ratio(ratio),
                area,
            );
            return;
        }
    }
    let line = match &app.prompt {
        Some((kind, text)) => Line::from(vec![
            Span::styled(
                format!("{}: ", kind.label()),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(text.clone()),
            Span::styled("█", Style::default().fg(Color::Cyan)),
        ]),
        None => {
            let s = &app.session;
            let pc = s.pc();
            let sym = s.symbols.describe(pc).map(|n| format!(" <{n}>")).unwrap_or_default();
            Line::from(vec![
                Span::styled(
                    format!(" icount {} / {}  pc {pc:#010x}{sym} ", s.icount(), s.end()),
                    Style::default().add_modifier(Modifier::REVERSED),
                ),
                Span::raw(format!("  {}", app.status)),
            ])
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
