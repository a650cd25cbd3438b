//! The inspector end to end, in a real terminal: tmux runs `ringback tui`,
//! the test sends keys and reads the screen back, and checks that quitting
//! gives the terminal back.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const RINGBACK: &str = env!("CARGO_BIN_EXE_ringback");

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux (scripts/setup.sh installs it)")
}

struct Session(String);

impl Session {
    /// A tmux session of its own (`tag` tells the tests' sessions apart).
    fn start(tag: &str, command: &str) -> Session {
        let name = format!("ringback-tui-{}-{tag}", std::process::id());
        let _ = tmux(&["kill-session", "-t", &name]);
        let out = tmux(&["new-session", "-d", "-s", &name, "-x", "160", "-y", "48", "sh"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = Session(name);
        s.keys(&[command, "Enter"]);
        s
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend(keys);
        assert!(tmux(&args).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &self.0]).stdout).into_owned()
    }

    /// Whether the pane shows the alternate screen, once tmux settles on
    /// `expected` or after 5 s (on a loaded host tmux can report the switch
    /// after the screen's contents).
    fn alternate_screen(&self, expected: bool) -> bool {
        let start = Instant::now();
        loop {
            let out = tmux(&["display-message", "-p", "-t", &self.0, "#{alternate_on}"]);
            let on = String::from_utf8_lossy(&out.stdout).trim() == "1";
            if on == expected || start.elapsed() > Duration::from_secs(5) {
                return on;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the screen shows `text`.
    fn wait_for(&self, text: &str) -> String {
        self.wait_for_all(&[text])
    }

    /// Waits until one screen shows every one of `texts`: a capture can
    /// catch a frame half drawn (seen in CI under load), so what one
    /// screen must show together is waited for together.
    fn wait_for_all(&self, texts: &[&str]) -> String {
        self.wait_until(&format!("{texts:?} on screen"), |screen| {
            texts.iter().all(|t| screen.contains(t))
        })
    }

    /// Waits until the screen satisfies `done` (what it waits for is
    /// `what`, for the failure's message).
    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "not {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.0]);
    }
}

#[test]
fn the_inspector_answers_keys_and_gives_the_terminal_back() {
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/bisect/stale-patch.rbt");
    let s = Session::start("keys", &format!("{RINGBACK} tui {trace}; echo inspector-exited-$?"));
    s.wait_for_all(&[
        "Timeline",
        "Disassembly",
        "Registers",
        "Memory at esp",
        "Serial (0 bytes)",
        "Patches (0)",
        "interrupts",
        "icount 0 / 918221",
    ]);
    assert!(s.alternate_screen(true));

    // Go to the instruction bisect names, step over it and back.
    s.keys(&["g"]);
    s.wait_for("go to icount:");
    s.keys(&["914473", "Enter"]);
    s.wait_for_all(&["icount 914473 / 918221", "→ 0x00101d30  8c d8"]);
    s.keys(&["s"]);
    s.wait_for_all(&["icount 914474 / 918221", "eax 00000008"]);
    s.keys(&["S"]);
    s.wait_for("icount 914473 / 918221");

    // Help lists the keys; Esc closes it.
    s.keys(&["?"]);
    s.wait_for_all(&["Keys (? or Esc closes)", "step one instruction backwards"]);
    s.keys(&["Escape"]);
    s.wait_until("the help closed", |screen| !screen.contains("Keys (? or Esc closes)"));

    // q quits: the shell is back on the normal screen.
    s.keys(&["q"]);
    let after = s.wait_for("inspector-exited-0");
    assert!(!after.contains("Timeline"), "{after}");
    assert!(!s.alternate_screen(false));
}

#[test]
fn the_inspector_opens_where_bisect_points() {
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/bisect/stale-patch.rbt");
    let s = Session::start("at", &format!("{RINGBACK} tui {trace} --at 914473"));
    s.wait_for_all(&["icount 914473 / 918221", "→ 0x00101d30  8c d8"]);
    s.keys(&["q"]);
}

#[test]
fn a_corrupt_trace_is_an_error_before_the_screen_is_taken() {
    let dir = std::env::temp_dir().join(format!("ringback-tui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("corrupt.rbt");
    let mut bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/traces/hello.rbt")).expect("golden");
    bytes.truncate(40);
    std::fs::write(&path, &bytes).expect("write");
    let out = Command::new(RINGBACK)
        .args(["tui", path.to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot use trace"), "{err}");
    // Nothing was drawn: no escape sequences on stdout.
    assert!(out.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&out.stdout));
}
