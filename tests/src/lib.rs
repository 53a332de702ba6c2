//! Helpers for the system tests: the real binaries and services, each
//! started by one helper on free loopback ports, its output kept and printed
//! if the test fails, and killed on drop.
//!
//! - [`Runner`]: the `runner` binary.
//! - [`loadgen`]: the `loadgen` binary, run to its end.
//! - [`prometheus`]: a real Prometheus server and promtool.
//! - [`redis`]: a real `redis-server`, which a test can stop and restart.
//! - [`upstream`]: an HTTP server for guests' outgoing requests.
//! - [`polyglot`]: the Python and JavaScript example guests, built.
//! - [`admin`]: admin tokens and requests to the admin API.
//! - [`http`]: a plain HTTP/1.1 client; [`tenants`]: tenants files;
//!   [`probe`]: waiting on a runner's metrics and log. The runner's
//!   in-process tests use these as well.
//!
//! The binaries are found beside the test executable, in the target
//! directory that `cargo test --release --workspace` builds them into.

pub mod admin;
pub mod http;
pub mod loadgen;
pub mod polyglot;
pub mod probe;
pub mod prometheus;
pub mod redis;
pub mod tenants;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

pub use crate::tenants::Tenants;

/// The target directory the running test executable was built into
/// (`target/`, or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash>
    exe.ancestors()
        .nth(3)
        .expect("test executables live in target/<profile>/deps")
        .to_path_buf()
}

/// A workspace binary of the same profile as this test, e.g. `runner`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .ancestors()
        .nth(2)
        .expect("test executables live in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the README's test command (cargo test --release --workspace), \
         which builds every binary first",
        path.display()
    );
    path
}

/// The repository's root, for the files tests check (dashboards, README).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
}

/// A running runner process; killed on drop.
pub struct Runner {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    output: Arc<Mutex<String>>,
    _config: Option<Tenants>,
    /// Held open and never read, for [`Launch::stderr_unread`].
    _stderr: Option<std::process::ChildStderr>,
}

/// How a test's runner process is started, beyond its arguments.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Environment variables to set (beyond the test's, less RUNNER_*).
    pub env: Vec<(String, String)>,
    /// Leave stderr unread, as a stalled log pipeline would: once the pipe
    /// is full, every write to it blocks.
    pub stderr_unread: bool,
    /// Start under `ulimit -n` of this many descriptors, soft and hard.
    pub max_descriptors: Option<u64>,
}

impl Runner {
    /// Starts `runner` with `args` (plus port-0 listeners).
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(args, None, Launch::default())
    }

    /// Starts `runner` with a tenants file.
    pub fn start_with(tenants: &Tenants, args: &[&str]) -> Self {
        Self::launch(Some(tenants), args, Launch::default())
    }

    /// Starts `runner` with an optional tenants file, as `how` says.
    pub fn launch(tenants: Option<&Tenants>, args: &[&str], how: Launch) -> Self {
        let Some(tenants) = tenants else {
            return Self::spawn(args, None, how);
        };
        let path = tenants.write();
        let mut all = vec!["--config", path.to_str().expect("temp paths are UTF-8")];
        all.extend_from_slice(args);
        Self::spawn(&all, Some(tenants.clone()), how)
    }

    fn spawn(args: &[&str], config: Option<Tenants>, how: Launch) -> Self {
        let mut command = match how.max_descriptors {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", r#"ulimit -n "$1" && shift && exec "$@""#, "sh"])
                    .arg(n.to_string())
                    .arg(binary("runner"));
                sh
            }
            None => Command::new(binary("runner")),
        };
        // A test's runner gets only the flags it is given: no RUNNER_*
        // setting from the environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RUNNER_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env("RUNNER_LOG", "info")
            .envs(how.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the runner binary");
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = output.clone();
        let unread = if how.stderr_unread {
            Some(stderr)
        } else {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut out = sink.lock();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
            None
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (prefix, kind) in [
                    ("listening on http://", 0),
                    ("listening on https://", 0),
                    ("metrics on http://", 1),
                ] {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = tx.send((kind, addr.parse::<SocketAddr>().expect("an address")));
                    }
                }
                let mut out = sink.lock();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let mut addrs = [None, None];
        while addrs.iter().any(Option::is_none) {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok((kind, addr)) => addrs[kind] = Some(addr),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("runner did not start:\n{}", output.lock());
                }
            }
        }
        Self {
            child,
            addr: addrs[0].expect("checked"),
            admin: addrs[1].expect("checked"),
            output,
            _config: config,
            _stderr: unread,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident set size, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(&format!("/proc/{}/status", self.child.id()))
    }

    /// Runs `runner` with a tenants file that is expected to be refused, and
    /// returns how it exited.
    pub fn run_to_exit(tenants: &Tenants) -> Exit {
        let path = tenants.write();
        Self::run_args_to_exit(&["--config", path.to_str().expect("temp paths are UTF-8")])
    }

    /// Runs `runner` with `args` (plus port-0 listeners), expecting it to
    /// stop at start-up, and returns how it exited. One that is still
    /// running after a minute (it started, where it should have refused)
    /// is killed, and the test fails saying so.
    pub fn run_args_to_exit(args: &[&str]) -> Exit {
        let child = Command::new(binary("runner"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running the runner binary");
        let pid = child.id();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if finished.recv_timeout(Duration::from_secs(60)).is_err() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                return true;
            }
            false
        });
        let out = child.wait_with_output().expect("running the runner binary");
        let _ = done.send(());
        assert!(
            !watchdog.join().unwrap_or(false),
            "the runner with {args:?} was still running after a minute; it should have stopped \
             at start-up:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Exit {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGHUP: the runner reloads its configuration.
    pub fn hangup(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -HUP {pid}");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("waiting for the runner")
    }
}

impl probe::Observed for Runner {
    fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    fn log(&self) -> &Mutex<String> {
        &self.output
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- runner output ---\n{}", self.output.lock());
        }
    }
}

/// How a runner that was expected to stop exited.
pub struct Exit {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A process's resident set size, from its /proc status file.
pub fn rss_bytes(status_file: &str) -> u64 {
    let status = std::fs::read_to_string(status_file).expect("reading /proc");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // The counter keeps two directories made in one nanosecond apart.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("runner-test-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir { path }
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
