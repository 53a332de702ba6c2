//! A real Prometheus for tests: `prometheus` and `promtool` from PATH
//! (Debian's `prometheus` package), a server on a free loopback port with its
//! data and log in a temporary directory, killed on drop.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::http::{get, try_get};

/// The longest a helper waits for any one thing: Prometheus's readiness, a
/// scrape that shows the load.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A series' labels.
pub type Labels = BTreeMap<String, String>;

/// `prometheus` and `promtool`, from PATH.
pub struct Tools {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

impl Tools {
    pub fn find() -> Option<Self> {
        let find = |name: &str| -> Option<PathBuf> {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        };
        Some(Tools {
            prometheus: find("prometheus")?,
            promtool: find("promtool")?,
        })
    }

    /// Runs `promtool ARGS [FILE]`, feeding `stdin` if given; it must exit 0.
    pub fn promtool(&self, args: &[&str], file: Option<&Path>, stdin: Option<&[u8]>) {
        let mut child = Command::new(&self.promtool)
            .args(args)
            .args(file)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running promtool");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).expect("writing to promtool");
        }
        let out = child.wait_with_output().expect("waiting for promtool");
        assert!(
            out.status.success(),
            "promtool {} {}: {}\n{}{}",
            args.join(" "),
            file.map(|f| f.display().to_string()).unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus server on a free port, with its data and log in a temp dir.
/// Killed on drop, when it also prints its log if the test is failing.
pub struct Prometheus {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus` on `dir/prometheus.yml` and waits until it is
    /// ready. The port is picked by binding port 0 and letting it go, so
    /// another process may take it first: then Prometheus exits, and the
    /// next attempt picks another.
    pub async fn start(binary: &Path, dir: &Path) -> Self {
        let mut failures = Vec::new();
        for attempt in 1..=3 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let file = std::fs::File::create(&log).expect("creating the log");
            let child = Command::new(binary)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("the log"))
                .stderr(file)
                .spawn()
                .expect("starting prometheus");
            let mut prometheus = Prometheus { child, addr, log };
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(e) => failures.push(format!("attempt {attempt} on {addr}: {e}")),
            }
        }
        panic!("prometheus did not start:\n{}", failures.join("\n"));
    }

    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited ({status}):\n{}", read(&self.log)));
            }
            if let Some(reply) = try_get(self.addr, "/-/ready").await
                && reply.status == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready in {PATIENCE:?}:\n{}", read(&self.log)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs an API path; the reply must be a success.
    pub async fn api(&self, path: &str) -> Value {
        let reply = get(self.addr, path).await;
        let body: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", reply.text()));
        assert_eq!(
            (reply.status, &body["status"]),
            (StatusCode::OK, &Value::from("success")),
            "{path}: {body}"
        );
        body
    }

    /// An instant query's series, or Prometheus's error.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let reply = get(self.addr, &path).await;
        let body: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("not JSON ({e}): {}", reply.text()))?;
        if reply.status != StatusCode::OK || body["status"] != "success" {
            return Err(format!(
                "{}: {} {}",
                reply.status, body["errorType"], body["error"]
            ));
        }
        let data = &body["data"];
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            // A scalar or string is one value without labels.
            _ => Ok(vec![
                serde_json::json!({ "metric": {}, "value": data["result"] }),
            ]),
        }
    }

    /// An instant query's values, keyed by each series' labels; every value
    /// must be a whole number.
    pub async fn values(&self, expr: &str) -> BTreeMap<Labels, u64> {
        let series = self
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("`{expr}`: {e}"));
        series
            .iter()
            .map(|s| {
                let key = s["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = sample(s).unwrap_or(f64::NAN);
                assert!(value.fract() == 0.0, "`{expr}`: {s} is not a count");
                (key, value as u64)
            })
            .collect()
    }

    /// Waits until `expr` returns one sample for which `ok` holds.
    pub async fn wait_for(&self, what: &str, expr: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let series = self.query(expr).await;
            if let Ok([one]) = series.as_deref()
                && sample(one).is_some_and(&ok)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: no {what} in {PATIENCE:?}: `{expr}` is {series:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `label_values(selector, label)`, as Grafana asks it.
    pub async fn label_values(&self, label: &str, selector: Option<&str>) -> Vec<String> {
        let mut path = format!("/api/v1/label/{label}/values");
        if let Some(selector) = selector {
            path.push_str(&format!("?match[]={}", encode(selector)));
        }
        let body = self.api(&path).await;
        body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log ---\n{}--- end of prometheus log ---",
                read(&self.log)
            );
        }
    }
}

/// The value of one series of an instant query.
/// The value of one sample of a query result.
pub fn sample(series: &Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
