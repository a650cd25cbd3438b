//! Where each pane goes on the screen: shared by the view, which draws
//! there, and the model, which pages the timeline by the rows it shows.

use ratatui::layout::{Constraint, Direction, Layout, Rect};

/// The screen's main area, density picture and status line.
pub fn rows(area: Rect) -> [Rect; 3] {
    Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(10), Constraint::Length(5), Constraint::Length(1)])
        .areas(area)
}

/// The main area's left column: timeline, disassembly, memory and serial.
pub fn left_split(left: Rect) -> [Rect; 3] {
    Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Percentage(50),
            Constraint::Percentage(30),
            Constraint::Percentage(20),
        ])
        .areas(left)
}

/// Rows of events the timeline shows on a terminal of this size.
pub fn timeline_rows(width: u16, height: u16) -> usize {
    let [main, _, _] = rows(Rect::new(0, 0, width, height));
    let [timeline, _, _] = left_split(main);
    usize::from(timeline.height.saturating_sub(2)).max(1)
}
