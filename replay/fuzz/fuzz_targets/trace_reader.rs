//! Any bytes given to the trace reader, and a replay of whatever it accepts,
//! end in a result, never a panic. `cargo fuzz run trace_reader` (nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use replay::{ReplayOptions, Replayer, Trace};

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = Trace::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = trace.check_contents(&mut |_| {});
    let _ = trace.events(0, u64::MAX);
    if let Ok(mut r) = Replayer::new(&trace, ReplayOptions::default()) {
        // Bounded: a fuzzed header may describe a long-running guest.
        let _ = r.run_to(100_000, true);
    }
});
