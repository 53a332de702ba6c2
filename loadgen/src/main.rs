//! `loadgen`: parse the command line, run the library, print the report,
//! and turn the outcome into the exit status. All exit-status policy lives here:
//!
//! - 0: the run passed;
//! - 1: a usage, configuration or setup error (printed with its causes);
//! - 2: the error rate exceeded `--max-error-rate`;
//! - 3: `--verify` found a violation (outranks 2).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadgen::{Args, Config, Report, Verdict};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; clap's own status for a
            // usage error (2) would collide with "too many errors".
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args) {
        Ok(Verdict::Pass) => ExitCode::SUCCESS,
        Ok(Verdict::TooManyErrors) => ExitCode::from(2),
        Ok(Verdict::VerifyFailed) => ExitCode::from(3),
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<Verdict> {
    let mut config = Config::try_from(args)?;
    config.live = std::io::stderr().is_terminal();
    // The load runs on threads of its own (see `loadgen::run`); this runtime
    // only waits for them, Ctrl-C and the scrapes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report: Report = runtime.block_on(loadgen::run(config.clone(), async {
        // If the handler cannot be installed, run to the end instead of
        // stopping at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }))?;
    print!("{report}");
    if let Some(path) = &config.json {
        let json = serde_json::to_vec_pretty(&report).context("serialising the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.verdict(config.max_error_rate))
}
