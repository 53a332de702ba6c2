//! The `loadgen` binary, run to its end against a target.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{TempDir, binary};

/// How a load run ended: its exit code, its printed report, and the JSON
/// report it wrote with `--json`.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub report: serde_json::Value,
}

/// Runs `loadgen ARGS --json FILE` and waits for it to exit.
pub fn run(args: &[&str]) -> Run {
    let dir = TempDir::new();
    let json = dir.path.join("report.json");
    let out = Command::new(binary("loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running the loadgen binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = std::fs::read(&json)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| panic!("loadgen wrote no JSON report:\n{stdout}\n{stderr}"));
    Run {
        code: out.status.code(),
        stdout,
        stderr,
        report,
    }
}

/// How a load run that was left to choose its own output ended, and how
/// long it took.
pub struct Exit {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `loadgen ARGS` as given (no `--json` added) and waits for it to exit.
pub fn run_to_exit(args: &[&str]) -> Exit {
    let started = Instant::now();
    let out = Command::new(binary("loadgen"))
        .args(args)
        .output()
        .expect("running the loadgen binary");
    Exit {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}
