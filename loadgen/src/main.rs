//! `loadgen`: parse the command line, run the library, print the report,
//! and turn the outcome into the exit status. All exit-status policy lives here:
//!
//! - 0: the run passed;
//! - 1: a usage, configuration or setup error (printed with its causes);
//! - 2: the error rate exceeded `--max-error-rate`;
//! - 3: `--verify` found a violation (outranks 2);
//! - 4: the target is unreachable: no connection within
//!   `loadgen::REACH_WITHIN` at the start, or no request of the run got a
//!   response (outranks 2 and 3).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Context;
use loadgen::{Args, Config, JsonOut, Report, Unreachable, Verdict};

fn main() -> ExitCode {
    let args = match Args::parse_command_line(std::env::args_os()) {
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
        Ok(Verdict::NoResponse) => ExitCode::from(4),
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            if e.chain().any(|cause| cause.is::<Unreachable>()) {
                ExitCode::from(4)
            } else {
                ExitCode::from(1)
            }
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
    let json = match &config.json {
        Some(_) => Some(serde_json::to_vec_pretty(&report).context("serialising the report")?),
        None => None,
    };
    match (&config.json, json) {
        // stdout carries the JSON alone, for a pipe into jq; the table goes
        // to stderr, where a person still sees it.
        (Some(JsonOut::Stdout), Some(mut json)) => {
            eprint!("{report}");
            json.push(b'\n');
            let mut out = std::io::stdout().lock();
            out.write_all(&json)
                .and_then(|()| out.flush())
                .context("writing the report to stdout")?;
        }
        (Some(JsonOut::File(path)), Some(json)) => {
            print!("{report}");
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
        _ => print!("{report}"),
    }
    let verdict = report.verdict(config.max_error_rate);
    if verdict == Verdict::NoResponse {
        eprintln!(
            "loadgen: error: no request got a response from {} ({} connect errors, {} timeouts, \
             {} I/O errors)",
            report.target,
            report.errors_by_kind.connect,
            report.errors_by_kind.timeout,
            report.errors_by_kind.io
        );
    }
    Ok(verdict)
}
