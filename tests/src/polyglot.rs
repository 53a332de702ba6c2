//! The example guests in Python and JavaScript (guest/python, guest/js),
//! built from source by their own toolchains, pinned in
//! guest/python/requirements.txt and guest/js/package-lock.json.
//!
//! Without a toolchain ([`build`] finds none) a test says it skipped and
//! why, and passes, unless `RUNNER_REQUIRE_POLYGLOT=1` (CI sets it), where
//! that is a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{repo_root, target_dir};

/// A language toolchain whose example guest a test needs.
#[derive(Clone, Copy, Debug)]
pub enum Toolchain {
    /// componentize-py, on PATH.
    Python,
    /// The Python guest built for its `serve` world: without wasi:logging,
    /// so that `wasmtime serve` runs it too (bench/reuse.sh).
    PythonServe,
    /// ComponentizeJS, in guest/js/node_modules.
    JavaScript,
}

impl Toolchain {
    fn dir(self) -> &'static str {
        match self {
            Toolchain::Python | Toolchain::PythonServe => "python",
            Toolchain::JavaScript => "js",
        }
    }

    /// The world to build, where not the guest's default one.
    fn world(self) -> Option<&'static str> {
        match self {
            Toolchain::PythonServe => Some("serve"),
            _ => None,
        }
    }

    fn installed(self) -> bool {
        match self {
            Toolchain::Python | Toolchain::PythonServe => Command::new("componentize-py")
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success()),
            Toolchain::JavaScript => repo_root()
                .join("guest/js/node_modules/.bin/componentize-js")
                .is_file(),
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Toolchain::Python | Toolchain::PythonServe => {
                "pip install -r guest/python/requirements.txt"
            }
            Toolchain::JavaScript => "npm ci --prefix guest/js",
        }
    }
}

/// The example guest of `toolchain`, built once per test process into the
/// target directory; `None` (after saying so) when the toolchain is absent
/// and not required. A failed build panics with the toolchain's output.
pub fn build(toolchain: Toolchain) -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    static PYTHON_SERVE: OnceLock<Option<PathBuf>> = OnceLock::new();
    static JAVASCRIPT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let cell = match toolchain {
        Toolchain::Python => &PYTHON,
        Toolchain::PythonServe => &PYTHON_SERVE,
        Toolchain::JavaScript => &JAVASCRIPT,
    };
    cell.get_or_init(|| build_now(toolchain)).clone()
}

fn build_now(toolchain: Toolchain) -> Option<PathBuf> {
    if !toolchain.installed() {
        let hint = toolchain.install_hint();
        assert_ne!(
            std::env::var("RUNNER_REQUIRE_POLYGLOT").as_deref(),
            Ok("1"),
            "RUNNER_REQUIRE_POLYGLOT=1, but the {toolchain:?} toolchain is not installed ({hint})"
        );
        // Straight to stderr: the test harness captures println!.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the {toolchain:?} toolchain is not installed ({hint})"
        );
        return None;
    }
    let out_dir = target_dir().join("polyglot");
    std::fs::create_dir_all(&out_dir).expect("creating target/polyglot");
    let name = match toolchain.world() {
        Some(world) => format!("{}-{world}", toolchain.dir()),
        None => toolchain.dir().to_string(),
    };
    let out = out_dir.join(format!("{name}.wasm"));
    let script = repo_root()
        .join("guest")
        .join(toolchain.dir())
        .join("build.sh");
    let output = Command::new(&script)
        .arg(&out)
        .args(toolchain.world())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success() && Path::new(&out).is_file(),
        "{} failed ({}):\n{}{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(out)
}
