//! ringback's trace inspector: a terminal view of a recording — the event
//! timeline, disassembly, registers, memory, serial output, the patch table
//! and where the run paid for virtualization — moved forwards and backwards
//! one instruction or one event at a time. docs/inspector.md shows it.
//!
//! Structure (the Elm architecture): `app` holds the model, its messages
//! and `update`; `view` draws the model; `panes` are the widgets; `session`
//! is the replay behind it. Only `run`'s loop reads keys and writes to the
//! terminal.

pub mod app;
pub mod density;
pub mod error;
pub mod layout;
pub mod panes;
pub mod session;
pub mod view;

use std::path::Path;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyEventKind};

pub use app::{App, Msg};
pub use error::{Result, TuiError};
pub use session::Session;

/// Puts the terminal back however the inspector ends (ratatui's panic hook
/// covers a panic).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Opens `path` and runs the inspector until the user quits. The trace is
/// opened and checked before the screen is taken over, so a bad trace is
/// an ordinary error message.
pub fn run(path: &Path, at: Option<u64>) -> Result<()> {
    let session = Session::open(path)?;
    run_session(session, at)
}

/// Runs the inspector on an open session, starting at icount `at` (a
/// divergence `ringback bisect` found, say) or at the start.
pub fn run_session(session: Session, at: Option<u64>) -> Result<()> {
    let mut app = App::new(session)?;
    if let Some(icount) = at {
        app.update(Msg::GoTo(icount));
    }
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let size = terminal.size()?;
    app.update(Msg::Resize(size.width, size.height));
    while !app.quit {
        terminal.draw(|f| view::draw(f, &mut app))?;
        // While a seek runs, look at the keyboard without waiting.
        let wait = if app.busy.is_some() {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        };
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    if let Some(msg) = app.key(key) {
                        app.update(msg);
                    }
                }
                Event::Resize(w, h) => app.update(Msg::Resize(w, h)),
                _ => {}
            }
        }
        app.update(Msg::Tick);
    }
    Ok(())
}
