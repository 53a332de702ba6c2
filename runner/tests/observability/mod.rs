//! The dashboards and alert rules in dashboards/, checked against a real
//! Prometheus scraping a real runner under load.
//!
//! Needs Debian's `prometheus` package (prometheus and promtool). Without it
//! the test says it skipped and why, unless RUNNER_REQUIRE_PROMETHEUS=1 (set
//! by CI), where a missing Prometheus fails it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::harness::{Runner, Tenants, get, request, try_get};

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner/ is in the repo")
        .to_path_buf()
}

/// A Prometheus server in a temp dir; killed (and the dir removed) on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    fn start(binary: &Path, runner_admin: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("runner-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::copy(
            repo().join("dashboards/prometheus/alerts.yml"),
            dir.join("alerts.yml"),
        )
        .expect("copying alerts.yml");
        // The shipped config, with this runner's address and a fast interval.
        let shipped = std::fs::read_to_string(repo().join("dashboards/prometheus/prometheus.yml"))
            .expect("prometheus.yml");
        let config = shipped
            .replace("127.0.0.1:9095", &runner_admin.to_string())
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
            .replace("evaluation_interval: 5s", "evaluation_interval: 1s");
        assert_ne!(
            config, shipped,
            "the shipped config names the default runner address"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("writing the config");
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address")
        };
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        Self { child, addr, dir }
    }

    async fn query(&self, expr: &str) -> serde_json::Value {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let res = get(self.addr, &path).await;
        let body = res.json();
        assert_eq!(res.status, StatusCode::OK, "{expr}: {body}");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body
    }

    async fn wait_until(&self, what: &str, ok: impl AsyncFn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok(self).await {
            assert!(
                Instant::now() < deadline,
                "prometheus: timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression in the Grafana dashboard, with the template
/// variables replaced as Grafana would for "all tenants".
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("dashboards/grafana/runner.json"))
        .expect("runner.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("runner.json is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            exprs.push(
                expr.replace("$__rate_interval", "15s")
                    .replace("$tenant", ".*"),
            );
        }
    }
    exprs
}

/// Every alert rule's name and expression (the file's own simple layout:
/// `expr:` either inline or as a `|` block).
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("dashboards/prometheus/alerts.yml"))
        .expect("alerts.yml");
    let mut rules = Vec::new();
    let mut lines = text.lines().peekable();
    let mut name = String::new();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("- alert:") {
            name = n.trim().to_string();
        } else if let Some(e) = t.strip_prefix("expr:") {
            let e = e.trim();
            let expr = if e == "|" {
                let mut block = Vec::new();
                while let Some(next) = lines.peek() {
                    if next.trim().is_empty()
                        || next.trim_start().contains(':') && !next.contains('(')
                    {
                        break;
                    }
                    block.push(lines.next().expect("peeked").trim());
                }
                block.join(" ")
            } else {
                e.to_string()
            };
            rules.push((name.clone(), expr));
        }
    }
    rules
}

/// The measured side of an alert condition: the expression before its last
/// top-level comparison. An alert that is quiet returns no series, so the
/// test checks instead that what it compares does have data: a rule whose
/// metric names or labels drifted from the runner's would never fire, and
/// this catches it.
fn measured_side(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    let mut cut = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'>' | b'<' if depth == 0 => cut = Some(i),
            b'=' if depth == 0 && bytes.get(i + 1) == Some(&b'=') => cut = Some(i),
            _ => {}
        }
    }
    cut.map_or(expr, |i| expr[..i].trim())
}

pub async fn dashboards_and_alerts_work_against_a_real_prometheus() {
    let (Some(prometheus), Some(promtool)) = (tool("prometheus"), tool("promtool")) else {
        assert!(
            std::env::var("RUNNER_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "RUNNER_REQUIRE_PROMETHEUS=1 but prometheus or promtool is not on PATH"
        );
        eprintln!("skipped: prometheus not installed (apt-get install prometheus)");
        return;
    };
    let t = Tenants::new()
        .default("t0", "")
        .default("t1", "max-keys = 5")
        .hostile("evil", "fuel = 5000000");
    let r = Runner::start_with(&t, &[]);
    let addr = r.addr;
    let load = tokio::spawn(async move {
        let started = Instant::now();
        let mut i = 0u64;
        while started.elapsed() < Duration::from_secs(8) {
            let tenant = if i.is_multiple_of(2) { "t0" } else { "t1" };
            request(
                addr,
                Method::PUT,
                &format!("/t/{tenant}/kv/k{}", i % 20),
                b"value".to_vec(),
            )
            .await;
            get(addr, &format!("/t/{tenant}/kv/k{}", i % 23)).await;
            request(addr, Method::POST, &format!("/t/{tenant}/incr/n"), vec![]).await;
            get(addr, &format!("/t/{tenant}/hello")).await;
            if i.is_multiple_of(10) {
                get(addr, "/t/evil/loop").await;
                get(addr, "/t/evil/panic").await;
            }
            i += 1;
        }
    });

    let scrape = get(r.admin, "/metrics").await;
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    std::io::Write::write_all(&mut check.stdin.take().expect("piped"), &scrape.body)
        .expect("feeding promtool");
    let out = check.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo().join("dashboards/prometheus/alerts.yml"))
        .output()
        .expect("promtool check rules");
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );

    let p = Prometheus::start(&prometheus, r.admin);
    p.wait_until("readiness", async |p| {
        try_get(p.addr, "/-/ready")
            .await
            .is_some_and(|r| r.status == StatusCode::OK)
    })
    .await;
    p.wait_until("five scrapes", async |p| {
        let body = p.query("count_over_time(up{job=\"runner\"}[1m])").await;
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            >= 5.0
    })
    .await;
    load.await.expect("the load task");
    // Two more scrapes after the load, so rates over the window see it end.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut empty = Vec::new();
    for expr in dashboard_exprs() {
        let body = p.query(&expr).await;
        if body["data"]["result"].as_array().is_none_or(Vec::is_empty) {
            empty.push(expr);
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard expressions with no data: {empty:#?}"
    );

    let alerts = alert_exprs();
    assert_eq!(alerts.len(), 7, "{alerts:#?}");
    for (name, expr) in &alerts {
        p.query(expr).await;
        let side = measured_side(expr);
        let body = p.query(side).await;
        assert!(
            body["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{name}: `{side}` has no data"
        );
    }
    // The load ran t1 into its key quota, so that alert's condition holds,
    // for t1 and the keys quota alone.
    let rule = &alerts
        .iter()
        .find(|(n, _)| n == "RunnerQuotaPressure")
        .expect("rule")
        .1;
    let quota = p.query(rule).await;
    let firing = quota["data"]["result"].as_array().expect("a vector");
    assert_eq!(firing.len(), 1, "{quota}");
    assert_eq!(firing[0]["metric"]["tenant"], "t1", "{quota}");
    assert_eq!(firing[0]["metric"]["quota"], "keys", "{quota}");
}
