//! Runs the 80286 single-instruction vectors (../shared/data/singlestep-80286,
//! beside the repository) through the reference engine, with the same code as
//! `ringback conformance`, and requires that every vector either passes or is a
//! documented 286-versus-i686 difference (vm::conformance::KNOWN_DIFFERENCES).

use std::path::Path;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/singlestep-80286");

#[test]
fn singlestep_80286_vectors() {
    let dir = Path::new(DATA);
    assert!(
        dir.is_dir(),
        "conformance vectors not found at {} (the repository is expected beside a `shared` directory \
         holding data/singlestep-80286)",
        dir.display()
    );
    let report = match vm::conformance::run_dir(dir, |_| {}) {
        Ok(r) => r,
        Err(e) => panic!("running the vectors in {}: {e}", dir.display()),
    };

    // No unexplained failure: list them all if there are any.
    let failures: Vec<String> = report
        .forms
        .iter()
        .filter(|f| f.failed > 0)
        .map(|f| format!("{}: {} failed, e.g. {}", f.form, f.failed, f.failures.join("; ")))
        .collect();
    assert!(failures.is_empty(), "unexplained failures:\n{}", failures.join("\n"));
    assert_eq!(report.failed, 0);

    // Every known difference is one of the documented keys.
    for f in &report.forms {
        for key in f.known.keys() {
            assert!(
                vm::conformance::KNOWN_DIFFERENCES.iter().any(|(k, _)| k == key),
                "{}: undocumented known difference {key}",
                f.form
            );
        }
    }

    // Pass rate over the vectors that are not documented differences, and a bound
    // on how many are explained away (LOCK-prefixed forms are most of them).
    let total = report.passed + report.failed + report.known;
    assert!(total > 300_000, "only {total} vectors ran");
    let rate = report.passed as f64 / (report.passed + report.failed) as f64;
    assert!(rate >= 0.995, "pass rate {:.4} below 99.5%", rate);
    assert!(
        report.known * 100 <= total * 3,
        "{} of {total} vectors classified as known differences",
        report.known
    );
}
