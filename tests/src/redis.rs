//! A real `redis-server` for tests (Debian's `redis-server` package), on a
//! free loopback port, with no persistence (nothing saved, no append-only
//! file), its directory and log in a temporary directory, killed on drop.
//! It can be stopped and started again on the same port, as an outage
//! would; it can speak TLS only ([`Redis::start_tls`]), or be one of the
//! three masters of a [`Cluster`].
//!
//! Each server runs under a small shell that holds a pipe from the test
//! process and kills the server when the pipe closes: on drop, and also
//! when the test process ends without dropping it (a server kept in a
//! static for a whole test binary, or a test killed), so no server
//! outlives its tests.
//!
//! Without `redis-server` on PATH the tests that need it are skipped,
//! unless `RUNNER_REQUIRE_REDIS=1` (CI sets it), where that is a failure.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::TempDir;

/// The longest a start or a stop may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs the server given as `$1` with the other arguments, and kills it
/// once its standard input (the test's pipe) closes.
const WATCHDOG: &str =
    r#"server="$1"; shift; "$server" "$@" & pid=$!; read -r _; kill -9 "$pid"; wait "$pid""#;

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
    /// Arguments beyond the common ones: TLS, cluster mode.
    extra: Vec<String>,
    /// With TLS only: the certificate authority that signed its
    /// certificate, for the client to trust.
    pub ca: Option<PathBuf>,
}

/// A free loopback port.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `name` in `dir`, as a string argument.
fn file(dir: &Path, name: &str) -> String {
    dir.join(name)
        .to_str()
        .expect("temp paths are UTF-8")
        .to_string()
}

impl Redis {
    /// Starts one on a free port; `None` where `redis-server` is missing
    /// and not required.
    pub fn start() -> Option<Self> {
        Self::start_with(|_| Vec::new())
    }

    /// Starts one that keeps every write in its append-only file before it
    /// answers (`appendfsync always`), so a [`Redis::stop`] (SIGKILL) and
    /// [`Redis::resume`] loses nothing it acknowledged.
    pub fn start_durable() -> Option<Self> {
        Self::start_with(|_| {
            ["--appendonly", "yes", "--appendfsync", "always"]
                .map(String::from)
                .to_vec()
        })
    }

    /// One server for a whole test binary, for tests that keep apart by
    /// key prefix; `None` where `redis-server` is missing and not required.
    pub fn shared() -> Option<&'static Redis> {
        static SHARED: OnceLock<Option<Redis>> = OnceLock::new();
        SHARED.get_or_init(Redis::start).as_ref()
    }

    /// Starts one that speaks only TLS, with a certificate for 127.0.0.1
    /// from a certificate authority of its own, made with `openssl`.
    pub fn start_tls() -> Option<Self> {
        let mut redis = Self::start_with(|dir| {
            let openssl = |args: &[&str]| {
                let out = Command::new("openssl")
                    .args(args)
                    .output()
                    .expect("running openssl");
                assert!(out.status.success(), "openssl {args:?}: {out:?}");
            };
            let [ca_key, ca, key, csr, cert, ext] = [
                "ca.key",
                "ca.pem",
                "server.key",
                "server.csr",
                "server.pem",
                "server.ext",
            ]
            .map(|name| file(dir, name));
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=runner test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &key,
                "-out",
                &csr,
            ]);
            std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("writing server.ext");
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ]);
            vec![
                "--tls-cert-file".into(),
                cert,
                "--tls-key-file".into(),
                key,
                "--tls-ca-cert-file".into(),
                ca,
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })?;
        redis.ca = Some(redis.dir.path.join("ca.pem"));
        Some(redis)
    }

    /// Starts one with the arguments `extra` makes in its directory.
    fn start_with(extra: impl FnOnce(&Path) -> Vec<String>) -> Option<Self> {
        let binary = server_binary()?;
        let dir = TempDir::new();
        let extra = extra(&dir.path);
        let mut redis = Redis {
            binary,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            extra,
            ca: None,
        };
        redis.resume();
        Some(redis)
    }

    fn tls(&self) -> bool {
        self.extra.iter().any(|a| a == "--tls-cert-file")
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` with TLS), for `--store`.
    pub fn url(&self) -> String {
        let scheme = if self.tls() { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops the server, as a crash would (SIGKILL): connections drop,
    /// the port refuses connections, and with no persistence the data is
    /// gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Closing the pipe is the watchdog's signal.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port: empty, unless it keeps an
    /// append-only file ([`Redis::start_durable`]).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let log = self.dir.path.join("redis.log");
        let _ = std::fs::remove_file(&log);
        let port = self.addr.port().to_string();
        // With TLS the port speaks TLS only.
        let ports = if self.tls() {
            ["--port", "0", "--tls-port", &port]
        } else {
            ["--port", &port, "--port", &port]
        };
        let child = Command::new("sh")
            .args(["-c", WATCHDOG, "sh"])
            .arg(&self.binary)
            .args(["--bind", "127.0.0.1"])
            .args(ports)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.extra)
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
        let ready = || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Ready to accept connections"))
        };
        while !ready() {
            assert!(
                start.elapsed() < PATIENCE,
                "redis-server on {} was not ready within {PATIENCE:?}:\n{}",
                self.addr,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs one command through `redis-cli` next to the server binary and
    /// returns its output, for tests that look inside (plain servers only).
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

/// A Redis Cluster of three masters and no replicas, each a [`Redis`] in
/// cluster mode; every slot is assigned before [`Cluster::start`] returns.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start() -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Redis::start_with(|dir| {
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    file(dir, "nodes.conf"),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ]
            })?);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        nodes[0].cli(&create);
        let start = Instant::now();
        for node in &nodes {
            while !node.cli(&["cluster", "info"]).contains("cluster_state:ok") {
                assert!(start.elapsed() < PATIENCE, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Cluster { nodes })
    }

    /// One for a whole test binary, like [`Redis::shared`].
    pub fn shared() -> Option<&'static Cluster> {
        static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
        SHARED.get_or_init(Cluster::start).as_ref()
    }

    /// One node's URL as a Cluster's seed (`redis+cluster://`), for
    /// `--store`.
    pub fn seed_url(&self) -> String {
        format!("redis+cluster://{}", self.nodes[0].addr)
    }

    /// Every node's URL, comma-separated, for `--store`.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
