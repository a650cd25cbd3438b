//! The `ringback` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ringback",
    version,
    about = "Record/replay, debugger-oriented x86 full-system virtual machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a folder of single-instruction test vectors and print pass rates.
    Conformance {
        /// Folder in the SingleStepTests JSON-lines format.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Print every form, not only the ones with failures.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringback: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Conformance { dir, json, verbose } => conformance(&dir, json, verbose),
    }
}

fn conformance(dir: &std::path::Path, json: bool, verbose: bool) -> Result<ExitCode> {
    let report = vm::conformance::run_dir(dir, |_| {})?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.forms {
            let total = f.passed + f.failed;
            if f.failed == 0 && f.known.is_empty() && !verbose {
                continue;
            }
            let rate = if total == 0 {
                100.0
            } else {
                100.0 * f.passed as f64 / total as f64
            };
            let known: u64 = f.known.values().sum();
            let tag = if known > 0 {
                format!(" ({known} known differences)")
            } else {
                String::new()
            };
            println!(
                "{:<8} {:>6} passed {:>6} failed {:>6.2}%{tag}",
                f.form, f.passed, f.failed, rate
            );
            for fail in &f.failures {
                println!("    {fail}");
            }
        }
        if report.known > 0 {
            let mut by_key = std::collections::BTreeMap::<&str, u64>::new();
            for f in &report.forms {
                for (k, n) in &f.known {
                    *by_key.entry(k.as_str()).or_default() += n;
                }
            }
            println!(
                "known 286-versus-i686 differences ({} vectors, not counted as passes):",
                report.known
            );
            for (key, reason) in vm::conformance::KNOWN_DIFFERENCES {
                if let Some(n) = by_key.get(key) {
                    println!("  {key}: {n} vectors: {reason}");
                }
            }
        }
        println!(
            "{} passed, {} failed ({:.3}% pass rate, {} revoked skipped)",
            report.passed,
            report.failed,
            100.0 * report.pass_rate(),
            report.skipped
        );
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
