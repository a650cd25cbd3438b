//! Whole-screen tests on ratatui's TestBackend: what the panes show after
//! the messages a user's keys become.

use std::path::Path;
use std::sync::Arc;

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use replay::Trace;
use tui::{App, Msg, Session};
use vm::host::NoInput;
use vm::machine::{CaptureConsole, Machine};

const WIDTH: u16 = 160;
const HEIGHT: u16 = 48;

fn golden(name: &str) -> Arc<Trace> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces").join(name);
    Arc::new(Trace::open(&path).expect("golden trace"))
}

fn app(trace: &str) -> App {
    let mut app = App::new(Session::new(golden(trace)).expect("session")).expect("app");
    app.update(Msg::Resize(WIDTH, HEIGHT));
    app
}

/// The screen as lines of text.
fn screen(app: &mut App) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("terminal");
    terminal.draw(|f| tui::view::draw(f, app)).expect("draw");
    let buf = terminal.backend().buffer().clone();
    (0..HEIGHT)
        .map(|y| (0..WIDTH).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>())
        .collect()
}

/// The text inside a pane: the lines between its title row and its
/// bottom border, cut to its columns.
fn pane(lines: &[String], title: &str) -> Vec<String> {
    let (row, col) = lines
        .iter()
        .enumerate()
        .find_map(|(r, l)| l.find(title).map(|c| (r, l[..c].chars().count())))
        .unwrap_or_else(|| panic!("no pane '{title}' in:\n{}", lines.join("\n")));
    let chars: Vec<Vec<char>> = lines.iter().map(|l| l.chars().collect()).collect();
    // The frame's top-left corner is the nearest one left of the title.
    let left = (0..col)
        .rev()
        .find(|&x| matches!(chars[row][x], '┌' | '┏'))
        .expect("left corner");
    let right = (left + 1..chars[row].len())
        .find(|&x| matches!(chars[row][x], '┐' | '┓'))
        .expect("right corner");
    let mut out = Vec::new();
    for line in &chars[row + 1..] {
        if matches!(line[left], '└' | '┗') {
            break;
        }
        out.push(line[left + 1..right].iter().collect::<String>().trim_end().to_string());
    }
    out
}

#[test]
fn hiding_a_kind_takes_its_events_off_the_timeline() {
    let mut app = app("bisect/pushf-leak.rbt");
    let before = pane(&screen(&mut app), "Timeline");
    assert!(before.iter().any(|l| l.contains(" i/o ")), "{before:#?}");
    // 9 is the ninth kind, i/o.
    app.update(Msg::ToggleKind(8));
    let after = screen(&mut app);
    let rows = pane(&after, "Timeline");
    assert!(!rows.iter().any(|l| l.contains(" i/o ")), "{rows:#?}");
    assert!(
        rows.iter().any(|l| l.contains(" engine ") || l.contains(" scan ")),
        "{rows:#?}"
    );
    assert!(after.iter().any(|l| l.contains("1 kind(s) hidden")));
    // And back: from the first event, the same rows as at the start.
    app.update(Msg::ToggleKind(8));
    app.update(Msg::Home);
    let again = pane(&screen(&mut app), "Timeline");
    let strip = |rows: &[String]| {
        rows.iter()
            .map(|r| r.trim_start_matches('▶').trim().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&again), strip(&before));
}

#[test]
fn a_search_by_pc_moves_the_cursor_to_the_next_event_there() {
    let mut app = app("bisect/stale-patch.rbt");
    app.update(Msg::Prompt(tui::app::PromptKind::Search));
    for c in "0x101d30".chars() {
        app.update(Msg::Input(c));
    }
    app.update(Msg::Submit);
    let (_, e) = app.timeline.selected_event().expect("selected").clone();
    assert_eq!(e.pc, 0x101d30, "{e:?}");
    let rows = pane(&screen(&mut app), "Timeline");
    assert!(rows[0].contains("0x00101d30"), "{rows:#?}");
}

#[test]
fn stepping_backwards_changes_the_registers_pane_back() {
    let mut app = app("bisect/stale-patch.rbt");
    app.update(Msg::Prompt(tui::app::PromptKind::Goto));
    for c in "914473".chars() {
        app.update(Msg::Input(c));
    }
    app.update(Msg::Submit);
    let at = pane(&screen(&mut app), "Registers");
    assert!(at.iter().any(|l| l.contains("icount 914473")), "{at:#?}");
    app.update(Msg::StepForward);
    let after = pane(&screen(&mut app), "Registers");
    assert_ne!(after, at);
    // mov eax, ds ran (through the stale patch: eax holds CS).
    assert!(after.iter().any(|l| l.contains("eax 00000008")), "{after:#?}");
    app.update(Msg::StepBack);
    let back = pane(&screen(&mut app), "Registers");
    assert_ne!(back, after, "a step backwards changes the registers");
    assert_eq!(
        back.iter().filter(|l| l.contains("eax")).collect::<Vec<_>>(),
        at.iter().filter(|l| l.contains("eax")).collect::<Vec<_>>()
    );
    assert!(back.iter().any(|l| l.contains("icount 914473")), "{back:#?}");
}

#[test]
fn the_serial_pane_shows_exactly_the_output_up_to_the_position() {
    let trace = golden("hello.rbt");
    // The oracle: the recorded kernel run straight on the reference engine
    // to each icount, outside the replay machinery.
    let end = trace.end.as_ref().expect("finished").icount;
    let output_at = |icount: u64| {
        let mut host = NoInput {
            rtc_start: trace.header.rtc_start,
        };
        let mut m = Machine::boot(trace.header.config.ram_bytes, &trace.header.kernel, &mut host).expect("boot");
        m.engine = vm::machine::Engine::Emulate;
        let mut console = CaptureConsole::default();
        m.run(icount, &mut host, &mut console);
        String::from_utf8_lossy(&console.serial).into_owned()
    };
    let mut app = App::new(Session::new(trace.clone()).expect("session")).expect("app");
    app.update(Msg::Resize(WIDTH, HEIGHT));
    let mut seen_partial = false;
    for icount in [end / 3, end / 2, end * 9 / 10, end] {
        app.update(Msg::Prompt(tui::app::PromptKind::Goto));
        for c in icount.to_string().chars() {
            app.update(Msg::Input(c));
        }
        app.update(Msg::Submit);
        while app.busy.is_some() {
            app.update(Msg::Tick);
        }
        let expected = output_at(icount);
        let lines = pane(&screen(&mut app), "Serial");
        let shown: Vec<&str> = lines.iter().map(|l| l.as_str()).filter(|l| !l.is_empty()).collect();
        let want: Vec<&str> = expected
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .collect();
        // Lines longer than the pane are cut at its edge.
        let width = pane(&screen(&mut app), "Serial")
            .first()
            .map_or(0, |_| serial_width(&mut app));
        let cut: Vec<String> = want
            .iter()
            .map(|l| l.chars().take(width).collect::<String>().trim_end().to_string())
            .collect();
        let tail = &cut[cut.len().saturating_sub(shown.len())..];
        assert_eq!(shown, tail, "at icount {icount}");
        seen_partial |= !expected.is_empty() && icount < end;
        assert!(screen(&mut app)
            .iter()
            .any(|l| l.contains(&format!("Serial ({} bytes)", expected.len()))));
    }
    assert!(seen_partial, "some position shows only part of the output");
}

/// Columns inside the serial pane's frame.
fn serial_width(app: &mut App) -> usize {
    let lines = screen(app);
    let row = lines.iter().find(|l| l.contains("Serial (")).expect("serial pane");
    let chars: Vec<char> = row.chars().collect();
    let title = row[..row.find("Serial (").expect("title")].chars().count();
    let left = (0..title)
        .rev()
        .find(|&x| chars[x] == '┌' || chars[x] == '┏')
        .expect("corner");
    let right = (left + 1..chars.len())
        .find(|&x| chars[x] == '┐' || chars[x] == '┓')
        .expect("corner");
    right - left - 1
}

#[test]
fn the_memory_view_follows_a_register_and_finds_the_last_write() {
    let mut app = app("bisect/stale-patch.rbt");
    app.update(Msg::Prompt(tui::app::PromptKind::Goto));
    for c in "914000".chars() {
        app.update(Msg::Input(c));
    }
    app.update(Msg::Submit);
    let esp = app.session.cpu().regs[4];
    let lines = screen(&mut app);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("Memory at esp = {esp:#010x}"))),
        "{}",
        lines.join("\n")
    );
    // The word at esp was written by some earlier instruction: going back
    // to it lands on an instruction that writes there.
    app.update(Msg::LastWrite);
    let at = app.session.icount();
    assert!(at < 914000, "{}", app.status);
    assert!(app.status.contains("last write"), "{}", app.status);
}

#[test]
fn the_help_overlay_lists_every_key() {
    let mut app = app("hello.rbt");
    app.update(Msg::ToggleHelp);
    let text = screen(&mut app).join("\n");
    for (key, _) in tui::panes::help::KEYS {
        assert!(text.contains(key), "{key} missing");
    }
    app.update(Msg::ToggleHelp);
    assert!(!screen(&mut app).join("\n").contains("Keys (? or Esc closes)"));
}

#[test]
fn the_patch_table_shows_the_raw_engines_patches_here() {
    let mut app = app("bisect/stale-patch.rbt");
    app.update(Msg::Prompt(tui::app::PromptKind::Goto));
    for c in "914474".chars() {
        app.update(Msg::Input(c));
    }
    app.update(Msg::Submit);
    let rows = pane(&screen(&mut app), "Patches");
    assert!(rows[0].contains("site") && rows[0].contains("avoided"), "{rows:#?}");
    let stale = rows
        .iter()
        .find(|l| l.starts_with("00101d30"))
        .expect("the stale patch");
    assert!(
        stale.contains("inline") && stale.contains("enabled") && stale.contains("mov eax,cs"),
        "{stale}"
    );
}

#[test]
fn events_of_the_selected_kind_and_the_event_under_the_cursor_are_gone_to() {
    let mut app = app("bisect/stale-patch.rbt");
    // Select the first patch event, go there.
    let trace = golden("bisect/stale-patch.rbt");
    let patches: Vec<u64> = trace
        .events(0, u64::MAX)
        .expect("events")
        .iter()
        .filter(|e| e.event.kind() == vm::events::EventKind::Patch)
        .map(|e| e.icount)
        .collect();
    while app
        .timeline
        .selected_event()
        .is_some_and(|(_, e)| e.event.kind() != vm::events::EventKind::Patch)
    {
        app.update(Msg::Down);
    }
    app.update(Msg::GotoSelected);
    assert_eq!(app.session.icount(), patches[0]);
    // ] goes to the next patch event after the position, [ back.
    let next = *patches.iter().find(|&&i| i > patches[0]).expect("a second patch event");
    app.update(Msg::NextOfKind);
    while app.busy.is_some() {
        app.update(Msg::Tick);
    }
    assert_eq!(app.session.icount(), next);
    let status = screen(&mut app).join("\n");
    assert!(status.contains(&format!("icount {next} /")), "{status}");
    app.update(Msg::PrevOfKind);
    while app.busy.is_some() {
        app.update(Msg::Tick);
    }
    assert_eq!(app.session.icount(), patches[0]);
}

#[test]
fn a_trace_without_events_opens() {
    // cli; hlt, on the reference engine: no port I/O, no interrupt, no
    // exception, so the trace holds no event batch at all.
    let kernel = vm::machine::Kernel::Flat {
        image: vec![0xFA, 0xF4],
        addr: 0x7C00,
    };
    let mut host = NoInput::default();
    let mut m = Machine::boot(2 << 20, &kernel, &mut host).expect("boot");
    m.engine = vm::machine::Engine::Emulate;
    let header = replay::model::TraceHeader::for_machine("test", &kernel, &m, host.rtc_start, 1000, false);
    let path = std::env::temp_dir().join(format!("ringback-tui-empty-{}.rbt", std::process::id()));
    let mut console = CaptureConsole::default();
    replay::record(&path, &header, &mut m, &mut host, &mut console, 1000, &mut |_| {}).expect("record");
    let trace = Arc::new(Trace::open(&path).expect("open"));
    let _ = std::fs::remove_file(&path);
    assert_eq!(trace.events(0, u64::MAX).expect("events").len(), 0);
    let mut app = App::new(Session::new(trace).expect("session")).expect("app");
    app.update(Msg::Resize(WIDTH, HEIGHT));
    let lines = screen(&mut app);
    assert!(
        pane(&lines, "Timeline").iter().any(|l| l.contains("no events")),
        "{}",
        lines.join("\n")
    );
    app.update(Msg::End);
    app.update(Msg::NextOfKind);
    app.update(Msg::StepForward);
    assert_eq!(app.session.icount(), 1);
}
