//! The load generator against the runner: loadgen's own correctness checks
//! (`--verify`) pass, and the runner counted exactly the requests loadgen
//! says it sent; request templates against the Python and JavaScript
//! guests, counted per template on both sides; a dead URL; `--json -`.

use std::path::Path;
use std::time::Duration;

use system_tests::polyglot::{self, Toolchain};
use system_tests::probe::Observed as _;
use system_tests::{Runner, TempDir, Tenants, loadgen};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_verifies_the_runner_and_both_count_the_same_requests() {
    let runner = Runner::start(&["--tenants", "10"]);
    let target = format!("http://{}", runner.addr);
    let scrape = format!("http://{}/metrics", runner.admin);
    let run = tokio::task::spawn_blocking(move || {
        loadgen::run(&[
            "--target",
            &target,
            "--tenants",
            "10",
            "--keys",
            "50",
            "--mix",
            "get=50,set=20,incr=10,list=5,batch=5,delete=10",
            "--requests",
            "3000",
            "--warmup",
            "0s",
            "--concurrency",
            "8",
            "--threads",
            "1",
            "--verify",
            "--scrape",
            &scrape,
        ])
    })
    .await
    .expect("the loadgen run");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = &run.report;
    assert_eq!(report["requests"], 3000, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    for violation in [
        "lost_writes",
        "stale_reads",
        "wrong_tenant",
        "bad_increments",
        "corrupt_values",
    ] {
        assert_eq!(report["verify"][violation], 0, "{violation}: {report}");
    }
    // Every request loadgen sent reached a tenant and ended in an outcome
    // the runner counted once.
    let counted = runner.metric("runner_requests_total", "").await;
    assert_eq!(counted, 3000.0);
    let served = runner
        .metric("runner_requests_total", "outcome=\"ok\"")
        .await
        + runner
            .metric("runner_requests_total", "outcome=\"guest_4xx\"")
            .await;
    assert_eq!(served, 3000.0);
    assert_eq!(
        runner.metric("runner_unrouted_requests_total", "").await,
        0.0
    );
}

#[test]
fn a_dead_url_fails_at_once_naming_the_url_and_the_error() {
    // Nothing listens on a loopback port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/t/t0/hello");
    let exit = loadgen::run_to_exit(&[&url, "--duration", "30s", "--threads", "1"]);
    assert_eq!(exit.code, Some(4), "{}\n{}", exit.stdout, exit.stderr);
    assert!(
        exit.stderr.starts_with(&format!(
            "loadgen: error: cannot connect to http://127.0.0.1:{port} (tried for 1s): "
        )) && exit.stderr.contains("Connection refused"),
        "{}",
        exit.stderr
    );
    assert_eq!(exit.stdout, "", "no report of refused connections");
    // Asked for 30 s, it gives up after trying for 1 s; the bound leaves a
    // loaded machine room.
    assert!(exit.elapsed < Duration::from_secs(5), "{:?}", exit.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_dash_writes_the_report_to_stdout() {
    let runner = Runner::start(&["--tenants", "3"]);
    let url = format!("http://{}/t/{{tenant}}/hello", runner.addr);
    let exit = tokio::task::spawn_blocking(move || {
        loadgen::run_to_exit(&[
            &url,
            "--tenants",
            "3",
            "--requests",
            "200",
            "--warmup",
            "0s",
            "-c",
            "4",
            "--threads",
            "1",
            "--seed",
            "11",
            "--json",
            "-",
        ])
    })
    .await
    .expect("the loadgen run");
    assert_eq!(exit.code, Some(0), "{}\n{}", exit.stdout, exit.stderr);
    let report: serde_json::Value = serde_json::from_str(&exit.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", exit.stdout));
    assert_eq!(report["requests"], 200, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["seed"], 11);
    assert_eq!(report["tenants"], "t{0..2}");
    let route = &report["routes"]["GET /t/{tenant}/hello"];
    assert_eq!(route["requests"], 200, "{report}");
    assert_eq!(route["latency"]["samples"], 200, "{report}");
    assert!(!Path::new("-").exists(), "no file named -");
    // The table went to stderr.
    assert!(exit.stderr.contains("requests    200\n"), "{}", exit.stderr);
    assert!(exit.stderr.contains("seed        11\n"), "{}", exit.stderr);
    // The runner saw the same 200, spread over the three tenants.
    assert_eq!(runner.metric("runner_requests_total", "").await, 200.0);
    assert_eq!(
        runner
            .metric("runner_requests_total", "outcome=\"ok\"")
            .await,
        200.0
    );
    for tenant in ["t0", "t1", "t2"] {
        let labels = format!("tenant=\"{tenant}\"");
        let n = runner.metric("runner_requests_total", &labels).await;
        assert!(n > 0.0, "no request reached {tenant}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_drive_the_python_guest() {
    let Some(component) = polyglot::build(Toolchain::Python) else {
        return;
    };
    templates_against(&component).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_drive_the_javascript_guest() {
    let Some(component) = polyglot::build(Toolchain::JavaScript) else {
        return;
    };
    templates_against(&component).await;
}

/// Routes the Python and JavaScript guests share, as weighted templates
/// over their two tenants: each template's count in loadgen's report is
/// the count of what the runner saw of it.
const TEMPLATES: &str = r#"
[[template]]
name = "hello"
weight = 4
path = "hello"
expect = 200

[[template]]
name = "put"
weight = 2
method = "PUT"
path = "kv/{key}"
headers = { content-type = "application/octet-stream" }
body = "a value"
expect = 204

[[template]]
name = "get"
weight = 3
path = "kv/{key}"
expect = [200, 404]

[[template]]
name = "incr"
weight = 1
method = "POST"
path = "/t/{tenant}/incr/n-{key}?by=2"
expect = 200
"#;

/// Requests in each polyglot run: enough for every template to be drawn
/// (the rarest, `incr`, is 10%: absent with odds below 10^-18).
const REQUESTS: u64 = 400;

async fn templates_against(component: &Path) {
    let tenant = format!("component = {component:?}");
    let runner = Runner::start_with(
        &Tenants::new().tenant("a", &tenant).tenant("b", &tenant),
        &[],
    );
    let dir = TempDir::new();
    let file = dir.path.join("templates.toml");
    std::fs::write(&file, TEMPLATES).expect("writing the templates");
    let target = format!("http://{}", runner.addr);
    let run = tokio::task::spawn_blocking(move || {
        loadgen::run(&[
            "--target",
            &target,
            "--templates",
            file.to_str().expect("temp paths are UTF-8"),
            "--tenants",
            "a,b",
            "--keys",
            "5",
            "--requests",
            &REQUESTS.to_string(),
            "--warmup",
            "0s",
            "-c",
            "4",
            "--threads",
            "1",
        ])
    })
    .await
    .expect("the loadgen run");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = &run.report;
    assert_eq!(report["requests"], REQUESTS, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["tenants"], "a,b", "{report}");
    let routes = report["routes"].as_object().expect("routes by name");
    // serde_json's map reads them back sorted by name.
    let names: Vec<&str> = routes.keys().map(String::as_str).collect();
    assert_eq!(names, ["get", "hello", "incr", "put"]);
    let count = |name: &str| {
        let route = &routes[name];
        assert_eq!(route["errors"], 0, "{name}: {report}");
        assert_eq!(route["latency"]["samples"], route["requests"], "{name}");
        let n = route["requests"].as_u64().expect("a count");
        assert!(n > 0, "{name} was never sent: {report}");
        n as f64
    };
    let (hello, put, get, incr) = (count("hello"), count("put"), count("get"), count("incr"));
    assert_eq!(hello + put + get + incr, REQUESTS as f64);

    // The runner counted every request once, and each template's through
    // the key-value call it makes.
    assert_eq!(
        runner.metric("runner_requests_total", "").await,
        REQUESTS as f64
    );
    let served = runner
        .metric("runner_requests_total", "outcome=\"ok\"")
        .await
        + runner
            .metric("runner_requests_total", "outcome=\"guest_4xx\"")
            .await;
    assert_eq!(served, REQUESTS as f64);
    let kv = |labels: &'static str| runner.metric("runner_kv_operations_total", labels);
    assert_eq!(kv("op=\"set\",result=\"ok\"").await, put);
    assert_eq!(kv("op=\"get\",").await, get);
    assert_eq!(kv("op=\"increment\",result=\"ok\"").await, incr);
    assert_eq!(
        runner.metric("runner_unrouted_requests_total", "").await,
        0.0
    );
}
