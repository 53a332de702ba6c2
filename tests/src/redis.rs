//! A real `redis-server` for tests (Debian's `redis-server` package), on a
//! free loopback port, with no persistence (nothing saved, no append-only
//! file), its directory and log in a temporary directory, killed on drop.
//! It can be stopped and started again on the same port, as an outage
//! would.
//!
//! Each server runs under a small shell that holds a pipe from the test
//! process and kills the server when the pipe closes: on drop, and also
//! when the test process ends without dropping it (a server kept in a
//! static for a whole test binary, or a test killed), so no server
//! outlives its tests.
//!
//! Without `redis-server` on PATH the tests that need it are skipped,
//! unless `RUNNER_REQUIRE_REDIS=1` (CI sets it), where that is a failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::TempDir;

/// The longest a start or a stop may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// `redis-server` from PATH; `None` (the test skips) when it is missing
/// and not required.
pub fn server_binary() -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("RUNNER_REQUIRE_REDIS").as_deref() != Ok("1"),
            "RUNNER_REQUIRE_REDIS=1, but redis-server is not on PATH \
             (Debian: apt-get install redis-server)"
        );
        eprintln!("skipped: redis-server is not on PATH");
    }
    found
}

/// A running `redis-server`; killed on drop.
pub struct Redis {
    binary: PathBuf,
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Redis {
    /// Starts one on a free port; `None` where `redis-server` is missing
    /// and not required.
    pub fn start() -> Option<Self> {
        let binary = server_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            binary,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: TempDir::new(),
        };
        redis.resume();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT`, for `--store`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// One server for a whole test binary, for tests that keep apart by
    /// key prefix; `None` where `redis-server` is missing and not required.
    pub fn shared() -> Option<&'static Redis> {
        static SHARED: OnceLock<Option<Redis>> = OnceLock::new();
        SHARED.get_or_init(Redis::start).as_ref()
    }

    /// Stops the server, as a crash would (SIGKILL): connections drop,
    /// the port refuses connections, and with no persistence the data is
    /// gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Closing the pipe is the shell's signal.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let log = self.dir.path.join("redis.log");
        let watchdog = r#"server="$1"; shift; "$server" "$@" & pid=$!; read -r _; kill -9 "$pid"; wait "$pid""#;
        let child = Command::new("sh")
            .args(["-c", watchdog, "sh"])
            .arg(&self.binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir.path)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while !self.pong() {
            assert!(
                start.elapsed() < PATIENCE,
                "redis-server did not answer PING on {} within {PATIENCE:?}:\n{}",
                self.addr,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it answers PING now.
    fn pong(&self) -> bool {
        let answer = || -> std::io::Result<bool> {
            let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))?;
            stream.set_read_timeout(Some(Duration::from_millis(500)))?;
            stream.write_all(b"PING\r\n")?;
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG\r\n")
        };
        answer().unwrap_or(false)
    }

    /// Runs one command through `redis-cli` next to the server binary and
    /// returns its output, for tests that look inside.
    pub fn cli(&self, args: &[&str]) -> String {
        let cli = self.binary.with_file_name("redis-cli");
        let out = Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .expect("running redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
