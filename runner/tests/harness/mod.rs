//! Test harness: spawns the real runner binary on port 0, reads the
//! addresses it prints, collects its output (printed if the test fails), and
//! speaks plain HTTP/1.1 to it.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HOSTILE_GUEST: &str = env!("RUNNER_HOSTILE_GUEST");

/// A running runner process; killed on drop.
pub struct Runner {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    output: Arc<Mutex<String>>,
    _config: Option<Tenants>,
}

impl Runner {
    /// Starts `runner` with `args` (plus port-0 listeners).
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(args, None)
    }

    /// Starts `runner` with a tenants file.
    pub fn start_with(tenants: &Tenants, args: &[&str]) -> Self {
        let path = tenants.write();
        let mut all = vec!["--config", path.to_str().expect("temp paths are UTF-8")];
        all.extend_from_slice(args);
        Self::spawn(&all, Some(tenants.clone()))
    }

    fn spawn(args: &[&str], config: Option<Tenants>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
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
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the runner binary");
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut out = sink.lock();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (prefix, kind) in [("listening on http://", 0), ("metrics on http://", 1)] {
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
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.output().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line contains {needle:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sum of a metric's samples whose label text contains `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = get(self.admin, "/metrics").await.text();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until a metric (summed as in [`Runner::metric`]) reaches
    /// `value`: a test's way to know that requests it started are really in
    /// flight, however slow the machine.
    pub async fn wait_for_metric(&self, name: &str, labels: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.metric(name, labels).await;
            if now >= value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{{{labels}}} stayed at {now}, short of {value}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The process's resident set size, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading /proc");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// Runs `runner` with a tenants file that is expected to be refused, and
    /// returns how it exited.
    pub fn run_to_exit(tenants: &Tenants) -> Exit {
        let path = tenants.write();
        let out = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&path)
            .output()
            .expect("running the runner binary");
        Exit {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("waiting for the runner")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- runner output ---\n{}", self.output());
        }
    }
}

/// How a runner that was expected to stop exited.
pub struct Exit {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A tenants file under construction.
#[derive(Clone, Default)]
pub struct Tenants {
    text: String,
    path: Arc<Mutex<Option<PathBuf>>>,
}

impl Tenants {
    pub fn new() -> Self {
        <Self as Default>::default()
    }

    /// A tenant on the hostile test guest, with extra TOML lines.
    pub fn hostile(self, name: &str, extra: &str) -> Self {
        self.tenant(name, &format!("component = {HOSTILE_GUEST:?}\n{extra}"))
    }

    /// A tenant on the default guest, with extra TOML lines.
    pub fn default(self, name: &str, extra: &str) -> Self {
        self.tenant(name, extra)
    }

    pub fn tenant(mut self, name: &str, body: &str) -> Self {
        self.text.push_str(&format!("[tenants.{name}]\n{body}\n"));
        self
    }

    pub fn raw(mut self, text: &str) -> Self {
        self.text.push_str(text);
        self
    }

    fn write(&self) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("runner-e2e-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, &self.text).expect("writing the tenants file");
        *self.path.lock() = Some(path.clone());
        path
    }
}

impl Drop for Tenants {
    fn drop(&mut self) {
        if Arc::strong_count(&self.path) == 1
            && let Some(p) = self.path.lock().take()
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .trim_end_matches('\n')
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Checks a limit's answer: its status, the `x-runner-limit` token and
    /// the message that names the limit.
    #[track_caller]
    pub fn assert_limit(&self, status: StatusCode, limit: &str, message: &str) {
        assert_eq!(
            (
                self.status,
                self.header("x-runner-limit"),
                self.text().as_str()
            ),
            (status, Some(limit), message)
        );
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::GET, path, Vec::new()).await
}

/// A GET that reports a refused or broken connection as `None`, for
/// probing a server that may not be up yet.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<Reply> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let res = sender
        .send_request(build_request(addr, Method::GET, path, Vec::new()))
        .await
        .ok()?;
    Some(read_reply(res).await)
}

fn build_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

/// Reads a whole response; a body cut off midway reads as empty.
async fn read_reply(res: hyper::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// One request on a fresh connection.
pub async fn request(addr: SocketAddr, method: Method, path: &str, body: Vec<u8>) -> Reply {
    send(addr, build_request(addr, method, path, body)).await
}

async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .expect("connecting to the runner");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let res = sender.send_request(req).await.expect("sending the request");
    read_reply(res).await
}

/// A keep-alive connection for many requests in a row.
pub struct Client {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connecting to the runner");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        Self { addr, sender }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, Vec::new()).await
    }

    /// Any request on this connection, read whole.
    pub async fn send(&mut self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        self.sender.ready().await.expect("connection ready");
        let res = self
            .sender
            .send_request(build_request(self.addr, method, path, body))
            .await
            .expect("sending the request");
        read_reply(res).await
    }
}

/// A PUT whose body is sent chunked (no Content-Length), frame by frame.
pub async fn chunked_put(addr: SocketAddr, path: &str, chunks: &[&[u8]]) -> Reply {
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = chunks
        .iter()
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let req = Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header("host", addr.to_string())
        .body(body)
        .expect("a valid request");
    send(addr, req).await
}

/// Writes raw bytes and returns whatever the server answers before closing
/// (or within two seconds).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    stream.write_all(bytes).await.expect("writing");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
