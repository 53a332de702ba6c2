//! Runs the load generator against a small in-process HTTP server that
//! implements the default guest's routes over an in-memory map, correct or
//! with a deliberate fault, and checks the exact outcomes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use loadgen::{Config, Op, Report, Verdict};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the test server misbehaves, if at all.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Answers every n-th `PUT /kv` with 204 but does not store it.
    DropEveryNthPut(u64),
    /// Keeps one map for all tenants, so a tenant reads another's values.
    IgnoreTenant,
    /// Every n-th increment adds one more than asked.
    BadEveryNthIncr(u64),
    /// Holds the n-th request (counting from 1) for the given time.
    StallOnce(u64, Duration),
    /// Answers every `PUT /kv` with 500.
    FailSets,
    /// Sends `Connection: close` with every response, ending the connection.
    CloseAfterEach,
}

#[derive(Default)]
struct State {
    /// (tenant, bucket, key) → value.
    map: Mutex<HashMap<(String, String, String), Bytes>>,
    /// Requests to tenant routes.
    requests: AtomicU64,
    puts: AtomicU64,
    incrs: AtomicU64,
    /// Connections accepted.
    connections: AtomicU64,
    /// Requests per tenant, and `GET /kv` requests per key.
    per_tenant: Mutex<HashMap<String, u64>>,
    per_key: Mutex<HashMap<String, u64>>,
    /// Requests per (header, value), for the headers `host`, `x-global` and
    /// `x-test`.
    headers: Mutex<HashMap<(String, String), u64>>,
}

/// A server on 127.0.0.1:0, stopped on drop.
struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(fault: Fault) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), fault, req));
                    // A client that goes away mid-request is not a failure here.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { addr, state, task }
    }

    fn target(&self) -> String {
        format!("--target=http://{}", self.addr)
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn handle(
    state: Arc<State>,
    fault: Fault,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    for name in ["host", "x-global", "x-test"] {
        for value in req.headers().get_all(name) {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            *state
                .headers
                .lock()
                .expect("count lock")
                .entry((name.to_owned(), value))
                .or_default() += 1;
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "bad body")),
    };
    if path == "/metrics" {
        return Ok(metrics(&state));
    }
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Fault::StallOnce(at, pause) = fault
        && n == at
    {
        tokio::time::sleep(pause).await;
    }
    let Some((tenant, route)) = path.strip_prefix("/t/").and_then(|r| r.split_once('/')) else {
        return Ok(reply(StatusCode::NOT_FOUND, "no such route"));
    };
    *state
        .per_tenant
        .lock()
        .expect("count lock")
        .entry(tenant.to_owned())
        .or_default() += 1;
    if method == Method::GET
        && let Some(key) = route.strip_prefix("kv/")
    {
        *state
            .per_key
            .lock()
            .expect("count lock")
            .entry(key.to_owned())
            .or_default() += 1;
    }
    let scope = if fault == Fault::IgnoreTenant {
        String::new()
    } else {
        tenant.to_owned()
    };
    let bucket = query_param(&query, "bucket")
        .unwrap_or("default")
        .to_owned();
    let slot = |key: &str| (scope.clone(), bucket.clone(), key.to_owned());
    let mut map = state.map.lock().expect("map lock");
    let response = match (method, route) {
        (Method::GET, "hello") => reply(StatusCode::OK, "hello"),
        (Method::GET, "keys") => {
            let keys: Vec<&String> = map
                .keys()
                .filter(|(t, b, _)| *t == scope && *b == bucket)
                .map(|(_, _, k)| k)
                .take(100)
                .collect();
            let json = serde_json::json!({ "keys": keys, "cursor": null });
            reply(StatusCode::OK, json.to_string())
        }
        (method, route) if route.starts_with("kv/") => {
            let key = &route["kv/".len()..];
            match method {
                Method::GET => match map.get(&slot(key)) {
                    Some(v) => reply(StatusCode::OK, v.clone()),
                    None => reply(StatusCode::NOT_FOUND, "key not found"),
                },
                Method::PUT => {
                    let put = state.puts.fetch_add(1, Ordering::SeqCst) + 1;
                    match fault {
                        Fault::FailSets => return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "")),
                        Fault::DropEveryNthPut(every) if put.is_multiple_of(every) => {}
                        _ => {
                            map.insert(slot(key), body);
                        }
                    }
                    reply(StatusCode::NO_CONTENT, "")
                }
                Method::DELETE => {
                    map.remove(&slot(key));
                    reply(StatusCode::NO_CONTENT, "")
                }
                _ => reply(StatusCode::METHOD_NOT_ALLOWED, ""),
            }
        }
        (Method::POST, route) if route.starts_with("incr/") => {
            let key = &route["incr/".len()..];
            let Some(by) = query_param(&query, "by").and_then(|b| b.parse::<i64>().ok()) else {
                return Ok(reply(StatusCode::BAD_REQUEST, "bad by"));
            };
            let nth = state.incrs.fetch_add(1, Ordering::SeqCst) + 1;
            let extra = match fault {
                Fault::BadEveryNthIncr(every) if nth.is_multiple_of(every) => 1,
                _ => 0,
            };
            let old = map
                .get(&slot(key))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0);
            let new = old + by + extra;
            map.insert(slot(key), Bytes::from(new.to_string()));
            reply(StatusCode::OK, new.to_string())
        }
        (Method::POST, "batch/get") => {
            let Ok(keys) = serde_json::from_slice::<Vec<String>>(&body) else {
                return Ok(reply(StatusCode::BAD_REQUEST, "bad batch"));
            };
            let values: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .map(|k| {
                    let v = map
                        .get(&slot(k))
                        .map(|v| String::from_utf8_lossy(v).into_owned().into())
                        .unwrap_or(serde_json::Value::Null);
                    (k.clone(), v)
                })
                .collect();
            reply(
                StatusCode::OK,
                serde_json::Value::Object(values).to_string(),
            )
        }
        (Method::POST, "batch/set") => {
            let Ok(entries) = serde_json::from_slice::<HashMap<String, String>>(&body) else {
                return Ok(reply(StatusCode::BAD_REQUEST, "bad batch"));
            };
            for (k, v) in entries {
                map.insert(slot(&k), Bytes::from(v));
            }
            reply(StatusCode::NO_CONTENT, "")
        }
        (Method::POST, "batch/delete") => {
            let Ok(keys) = serde_json::from_slice::<Vec<String>>(&body) else {
                return Ok(reply(StatusCode::BAD_REQUEST, "bad batch"));
            };
            for k in keys {
                map.remove(&slot(&k));
            }
            reply(StatusCode::NO_CONTENT, "")
        }
        _ => reply(StatusCode::NOT_FOUND, "no such route"),
    };
    let mut response = response;
    if fault == Fault::CloseAfterEach {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

/// A Prometheus page whose figures follow the requests served: 10 fuel per
/// request, every instantiation under 1 ms, and no traps metric at all.
fn metrics(state: &State) -> Response<Full<Bytes>> {
    let n = state.requests.load(Ordering::SeqCst);
    let text = format!(
        "# TYPE runner_requests_total counter\n\
         runner_requests_total{{tenant=\"t0\",outcome=\"ok\"}} {n}\n\
         runner_requests_total{{tenant=\"t1\",outcome=\"ok\"}} 7\n\
         runner_fuel_consumed_total{{tenant=\"t0\"}} {fuel}\n\
         runner_instantiation_duration_seconds_bucket{{le=\"0.001\"}} {n}\n\
         runner_instantiation_duration_seconds_bucket{{le=\"0.01\"}} {n}\n\
         runner_instantiation_duration_seconds_bucket{{le=\"+Inf\"}} {n}\n",
        fuel = n * 10
    );
    reply(StatusCode::OK, text)
}

fn config(server: &Server, args: &[&str]) -> Config {
    let target = server.target();
    let base = ["loadgen", target.as_str(), "--warmup=0s", "--seed=1"];
    Config::from_args(base.iter().copied().chain(args.iter().copied())).expect("valid arguments")
}

async fn load(server: &Server, args: &[&str]) -> Report {
    loadgen::run(config(server, args), std::future::pending())
        .await
        .expect("the run completes")
}

/// A run of exactly `args`, after the program's name.
async fn run_args(args: &[&str]) -> Report {
    let config = Config::from_args(std::iter::once("loadgen").chain(args.iter().copied()))
        .expect("valid arguments");
    loadgen::run(config, std::future::pending())
        .await
        .expect("the run completes")
}

fn op(report: &Report, op: Op) -> u64 {
    report.routes.get(op.name()).map_or(0, |c| c.requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_exactly_the_requested_requests() {
    let server = Server::start(Fault::None).await;
    let report = load(
        &server,
        &[
            "--requests=300",
            "-c4",
            "--mix=get=50,set=30,delete=10,incr=10",
        ],
    )
    .await;
    assert_eq!(report.requests, 300);
    assert_eq!(server.requests(), 300, "the server saw every request once");
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.successes, 300);
    assert_eq!(
        report.routes.iter().map(|(_, c)| c.requests).sum::<u64>(),
        300
    );
    // Per-route latency covers every answered request of the route.
    for (name, route) in report.routes.iter() {
        assert_eq!(route.latency.samples, route.requests, "{name}");
    }
    assert_eq!(report.latency.samples, 300);
    assert!(report.latency.p50_us <= report.latency.p99_us);
    assert!(report.latency.p99_us <= report.latency.max_us);
    assert_eq!(report.verdict(Some(0.0)), Verdict::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mix_is_respected() {
    let server = Server::start(Fault::None).await;
    let n = 3000;
    let report = load(
        &server,
        &[
            "--requests=3000",
            "-c8",
            "--mix=hello=50,get=30,set=15,list=5",
        ],
    )
    .await;
    assert_eq!(report.requests, n);
    assert_eq!(report.errors, 0, "{report}");
    // Each op's count is Binomial(n, p): within five standard deviations
    // unless something is wrong (a false alarm has odds below 1 in 10^6).
    for (o, p) in [
        (Op::Hello, 0.5),
        (Op::Get, 0.3),
        (Op::Set, 0.15),
        (Op::List, 0.05),
    ] {
        let expected = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        let got = op(&report, o) as f64;
        assert!(
            (got - expected).abs() < 5.0 * sigma,
            "{o}: {got} requests, expected {expected} ± {}",
            5.0 * sigma
        );
    }
    assert_eq!(op(&report, Op::Delete), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipf_skews_tenants_and_keys() {
    let server = Server::start(Fault::None).await;
    let n = 4000u64;
    let report = load(
        &server,
        &[
            "--requests=4000",
            "-c4",
            "--mix=get=1",
            "--tenants=10",
            "--tenant-dist=zipf",
            "--keys=10",
            "--key-dist=zipf",
            "--zipf-s=1",
        ],
    )
    .await;
    assert_eq!(report.requests, n);
    // P(rank i) = (1 / (i + 1)) / H_10 with H_10 = 7381 / 2520. Counts are
    // Binomial(n, p): within five standard deviations.
    let h10 = 7381.0 / 2520.0;
    for (counts, prefix) in [
        (&server.state.per_tenant, 't'),
        (&server.state.per_key, 'k'),
    ] {
        let name = |i: usize| format!("{prefix}{i}");
        let counts = counts.lock().expect("count lock");
        for i in [0, 1, 9] {
            let p = 1.0 / (i as f64 + 1.0) / h10;
            let expected = n as f64 * p;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            let got = counts.get(&name(i)).copied().unwrap_or(0) as f64;
            assert!(
                (got - expected).abs() < 5.0 * sigma,
                "{}: {got}, expected {expected:.0} ± {:.0}",
                name(i),
                5.0 * sigma
            );
        }
        assert_eq!(counts.values().sum::<u64>(), n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_every_op_on_a_correct_server() {
    let server = Server::start(Fault::None).await;
    let report = load(
        &server,
        &[
            "--requests=3000",
            "-c4",
            "--verify",
            "--keys=20",
            "--tenants=3",
            "--batch-size=4",
            "--bucket=b1",
            "--mix=hello=1,get=4,set=3,delete=1,incr=2,list=1,batch=3",
        ],
    )
    .await;
    assert_eq!(report.requests, 3000);
    assert_eq!(report.errors, 0, "{report}");
    let v = report.verify.expect("verify was on");
    assert_eq!(v.violations(), 0, "{v:?}");
    assert!(v.checked_reads > 500, "{v:?}");
    assert!(v.checked_increments > 100, "{v:?}");
    for o in Op::ALL {
        assert!(op(&report, o) > 0, "{o} was never sent");
    }
    assert_eq!(report.verdict(None), Verdict::Pass);
}

async fn verify_against(fault: Fault) -> loadgen::VerifyCounts {
    let server = Server::start(fault).await;
    let report = load(
        &server,
        &[
            "--requests=2000",
            "-c4",
            "--verify",
            "--keys=20",
            "--tenants=2",
            "--mix=get=50,set=40,incr=10",
        ],
    )
    .await;
    assert_eq!(report.requests, 2000);
    assert_eq!(report.verdict(None), Verdict::VerifyFailed);
    report.verify.expect("verify was on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_dropped_writes() {
    let v = verify_against(Fault::DropEveryNthPut(10)).await;
    // ~800 writes, 80 dropped: many are a key's first write, read back
    // before the next one.
    assert!(v.lost_writes > 0, "{v:?}");
    assert_eq!(
        (v.wrong_tenant, v.bad_increments, v.corrupt_values),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_another_tenants_values() {
    let v = verify_against(Fault::IgnoreTenant).await;
    assert!(v.wrong_tenant > 0, "{v:?}");
    // The tenants' counters are one counter too, so totals do not add up.
    assert!(v.bad_increments > 0, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_bad_increments() {
    let v = verify_against(Fault::BadEveryNthIncr(5)).await;
    assert!(v.bad_increments > 0, "{v:?}");
    assert_eq!((v.lost_writes, v.stale_reads, v.wrong_tenant), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_does_not_hide_a_stall() {
    // 200 req/s over 2 connections for 1 s: 200 requests, due every 10 ms on
    // each connection. The server holds the 50th for 200 ms; the requests
    // queued behind it on that connection are late by 190, 180, … ms, and
    // their latency counts from when they were due. A closed loop would
    // report a single slow request, invisible at p99.
    let server = Server::start(Fault::StallOnce(50, Duration::from_millis(200))).await;
    let report = load(
        &server,
        &["--rate=200", "-c2", "--duration=1s", "--mix=hello=1"],
    )
    .await;
    assert_eq!(report.requests, 200, "{report}");
    assert_eq!(report.errors, 0);
    assert_eq!(report.requested_rate, Some(200.0));
    assert_eq!(report.schedule, "open");
    assert!(report.latency.max_us >= 200_000, "{report}");
    assert!(report.latency.p99_us >= 150_000, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status_and_kind() {
    let server = Server::start(Fault::FailSets).await;
    let report = load(&server, &["--requests=200", "-c2", "--mix=get=1,set=1"]).await;
    let sets = op(&report, Op::Set);
    assert!(sets > 0);
    assert_eq!(report.errors, sets);
    assert_eq!(report.errors_by_status.get(&500), Some(&sets));
    let route = |name| report.routes.get(name).expect("in the mix");
    assert_eq!(route("set").errors, sets);
    assert_eq!(route("get").errors, 0);
    // Only answered requests have a latency: here all of them.
    assert_eq!(route("set").latency.samples, sets);
    assert_eq!(report.verdict(Some(0.01)), Verdict::TooManyErrors);
}

/// A port on which nothing listens: one just released.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_fails_before_the_run() {
    let port = dead_port();
    let config = Config::from_args([
        "loadgen".to_owned(),
        format!("--target=http://127.0.0.1:{port}"),
        "--duration=30s".into(),
        "-c1".into(),
    ])
    .expect("valid");
    let started = std::time::Instant::now();
    let error = loadgen::run(config, std::future::pending())
        .await
        .expect_err("nothing listens");
    // After trying for REACH_WITHIN (1 s), not after the 30 s run.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(started.elapsed() >= loadgen::REACH_WITHIN);
    assert!(
        matches!(
            error.downcast_ref::<loadgen::Unreachable>(),
            Some(loadgen::Unreachable::Connect { .. })
        ),
        "{error:#}"
    );
    let message = format!("{error:#}");
    assert!(
        message.starts_with(&format!(
            "cannot connect to http://127.0.0.1:{port} (tried for 1s): "
        )),
        "{message}"
    );
    assert!(message.contains("refused"), "{message}");

    let config =
        Config::from_args(["loadgen", "http://no-such-host.invalid:80/hello"]).expect("valid");
    let error = loadgen::run(config, std::future::pending())
        .await
        .expect_err("does not resolve");
    assert!(
        matches!(
            error.downcast_ref::<loadgen::Unreachable>(),
            Some(loadgen::Unreachable::Resolve { .. })
        ),
        "{error:#}"
    );
    assert!(
        format!("{error:#}")
            .starts_with("cannot resolve the host of http://no-such-host.invalid:80: "),
        "{error:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_sent_by_weight_with_their_headers_and_bodies() {
    let server = Server::start(Fault::None).await;
    let dir = std::env::temp_dir().join(format!("loadgen-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("templates.toml");
    std::fs::write(
        &file,
        r#"
        [[template]]
        name = "hello"
        weight = 3
        path = "hello"
        headers = { x-test = "a" }
        expect = 200

        [[template]]
        name = "put"
        method = "PUT"
        path = "/t/{tenant}/kv/{key}"
        body = "v"
        expect = 204

        [[template]]
        name = "missing"
        path = "/nope"
        "#,
    )
    .expect("write");
    let report = load(
        &server,
        &[
            "--templates",
            file.to_str().expect("UTF-8"),
            "--tenants=shop-{0..1}",
            "--keys=3",
            "--requests=1000",
            "-c4",
            "-H",
            "X-Global: g",
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(report.requests, 1000, "{report}");
    assert_eq!(server.requests(), 1000);
    let names: Vec<&str> = report.routes.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["hello", "put", "missing"]);
    let route = |name| *report.routes.get(name).expect("a template");
    let (hello, put, missing) = (route("hello"), route("put"), route("missing"));
    assert_eq!(hello.requests + put.requests + missing.requests, 1000);
    // Each count is Binomial(1000, p): within five standard deviations.
    for (r, p) in [(hello, 0.6f64), (put, 0.2), (missing, 0.2)] {
        let sigma = (1000.0 * p * (1.0 - p)).sqrt();
        assert!(
            (r.requests as f64 - 1000.0 * p).abs() < 5.0 * sigma,
            "{report}"
        );
    }
    // `/nope` answers 404, which no template expects: all its requests are
    // errors, and only they.
    assert_eq!((hello.errors, put.errors), (0, 0), "{report}");
    assert_eq!(missing.errors, missing.requests);
    assert_eq!(report.errors, missing.requests);
    assert_eq!(report.errors_by_status.get(&404), Some(&missing.requests));
    for r in [hello, put, missing] {
        assert_eq!(r.latency.samples, r.requests);
    }
    assert_eq!(report.tenants.as_deref(), Some("shop-{0..1}"));
    // Tenants and keys filled in; bodies and headers as given.
    let per_tenant = server.state.per_tenant.lock().expect("lock").clone();
    assert_eq!(
        per_tenant.values().sum::<u64>(),
        hello.requests + put.requests
    );
    assert!(
        per_tenant.keys().all(|t| t == "shop-0" || t == "shop-1"),
        "{per_tenant:?}"
    );
    let map = server.state.map.lock().expect("lock").clone();
    assert!(!map.is_empty());
    for ((tenant, bucket, key), value) in &map {
        assert!(
            tenant.starts_with("shop-") && bucket == "default",
            "{tenant} {bucket}"
        );
        assert!(["k0", "k1", "k2"].contains(&key.as_str()), "{key}");
        assert_eq!(&value[..], b"v");
    }
    let headers = server.state.headers.lock().expect("lock").clone();
    let seen = |name: &str, value: &str| {
        headers
            .get(&(name.to_owned(), value.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(seen("x-global", "g"), 1000);
    assert_eq!(seen("x-test", "a"), hello.requests);
    assert_eq!(seen("host", &server.addr.to_string()), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_is_sent_as_given() {
    let server = Server::start(Fault::None).await;
    let url = format!("http://{}/t/app/kv/x?bucket=b", server.addr);
    let config = Config::from_args([
        "loadgen",
        "--warmup=0s",
        "--requests=50",
        "-c2",
        "-m",
        "PUT",
        "-d",
        "hi",
        "-H",
        "Host: example.com",
        "--expect-status=204",
        &url,
    ])
    .expect("valid");
    let report = loadgen::run(config, std::future::pending())
        .await
        .expect("runs");
    assert_eq!((report.requests, report.errors), (50, 0), "{report}");
    assert_eq!(report.tenants, None);
    let route = report
        .routes
        .get("PUT /t/app/kv/x?bucket=b")
        .expect("named after the request");
    assert_eq!(route.requests, 50);
    let map = server.state.map.lock().expect("lock").clone();
    assert_eq!(map.len(), 1);
    let key = ("app".to_owned(), "b".to_owned(), "x".to_owned());
    assert_eq!(map.get(&key).map(|v| &v[..]), Some(&b"hi"[..]));
    let headers = server.state.headers.lock().expect("lock").clone();
    assert_eq!(
        headers.get(&("host".to_owned(), "example.com".to_owned())),
        Some(&50)
    );

    // The same request expecting 200: every answer is an error.
    let put = [
        "--warmup=0s",
        "--requests=10",
        "-c1",
        "-m",
        "PUT",
        "-d",
        "hi",
        &url,
    ];
    let report = run_args(&put).await;
    assert_eq!(
        (report.requests, report.errors),
        (10, 0),
        "2xx and 3xx by default"
    );
    let report = run_args(&[&put[..], &["--expect-status=200"]].concat()).await;
    assert_eq!((report.requests, report.errors), (10, 10));
    assert_eq!(report.errors_by_status.get(&204), Some(&10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_server_is_replaced_without_errors() {
    let server = Server::start(Fault::CloseAfterEach).await;
    let report = load(&server, &["--requests=200", "-c2", "--mix=hello=1,get=1"]).await;
    assert_eq!(report.requests, 200);
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(server.requests(), 200);
    // One per request, and the one `run` opens first to check that the
    // target is reachable.
    assert_eq!(server.state.connections.load(Ordering::SeqCst), 200 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_times_out_and_the_next_reconnects() {
    let server = Server::start(Fault::StallOnce(1, Duration::from_secs(3))).await;
    let report = load(
        &server,
        &["--requests=5", "-c1", "--timeout=100ms", "--mix=hello=1"],
    )
    .await;
    assert_eq!(report.requests, 5);
    assert_eq!(report.errors_by_kind.timeout, 1, "{report}");
    assert_eq!(report.successes, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_a_partial_report() {
    let server = Server::start(Fault::None).await;
    let config = config(&server, &["--duration=60s", "-c2", "--mix=hello=1"]);
    let report = loadgen::run(config, tokio::time::sleep(Duration::from_millis(300)))
        .await
        .expect("runs");
    assert!(report.interrupted);
    assert!(report.requests > 0);
    assert_eq!(report.errors, 0);
    assert!(report.to_string().contains("interrupted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_requests_are_left_out() {
    let server = Server::start(Fault::None).await;
    let target = server.target();
    let config = Config::from_args([
        "loadgen",
        &target,
        "--warmup=200ms",
        "--requests=100",
        "-c2",
        "--mix=hello=1",
    ])
    .expect("valid");
    let report = loadgen::run(config, std::future::pending())
        .await
        .expect("runs");
    assert_eq!(report.requests, 100);
    assert!(report.warmup_requests > 0);
    assert_eq!(server.requests(), 100 + report.warmup_requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_reports_runner_side_deltas() {
    let server = Server::start(Fault::None).await;
    let scrape = format!("--scrape=http://{}/metrics", server.addr);
    let report = load(
        &server,
        &["--requests=300", "-c4", "--mix=hello=1", &scrape],
    )
    .await;
    let runner = report.runner.clone().expect("scrape was on");
    assert_eq!(runner.requests, Some(300.0));
    assert_eq!(runner.fuel_per_request, Some(10.0));
    assert_eq!(runner.traps, None);
    assert_eq!(runner.notes, ["runner_traps_total absent"]);
    // Every instantiation in (0, 1 ms]: p99 interpolates to 0.99 ms.
    let p99 = runner.instantiation_p99_seconds.expect("has observations");
    assert!((p99 - 0.00099).abs() < 1e-12, "{p99}");
    assert!(report.to_string().contains("traps               absent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_maps_outcomes_to_exit_statuses() {
    let exe = env!("CARGO_BIN_EXE_loadgen");
    let json = std::env::temp_dir().join(format!("loadgen-test-{}.json", std::process::id()));
    let good = Server::start(Fault::None).await;
    let out = tokio::process::Command::new(exe)
        .args([
            &good.target(),
            "--warmup=0s",
            "--requests=100",
            "-c2",
            "--threads=1",
            "--verify",
            "--max-error-rate=0",
            "--json",
        ])
        .arg(&json)
        .output()
        .await
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("verify      ok"), "{stdout}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid json");
    let _ = std::fs::remove_file(&json);
    assert_eq!(written["requests"], 100);
    assert_eq!(written["verify"]["lost_writes"], 0);

    let broken = Server::start(Fault::IgnoreTenant).await;
    let out = tokio::process::Command::new(exe)
        .args([
            &broken.target(),
            "--warmup=0s",
            "--requests=500",
            "-c4",
            "--tenants=2",
            "--keys=5",
            "--verify",
        ])
        .output()
        .await
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(3));

    let failing = Server::start(Fault::FailSets).await;
    let out = tokio::process::Command::new(exe)
        .args([
            &failing.target(),
            "--warmup=0s",
            "--requests=100",
            "--max-error-rate=0.01",
        ])
        .output()
        .await
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(2));

    let out = tokio::process::Command::new(exe)
        .args(["--mix=get=80,fly=20"])
        .output()
        .await
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--mix: unknown op \"fly\""),
        "the cause chain is printed: {stderr}"
    );
    let out = tokio::process::Command::new(exe)
        .args(["--requests=1", "--duration=1s"])
        .output()
        .await
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(1));

    // Nothing listening: status 4, the URL and the cause on stderr, no report.
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}/t/t0/hello");
    let out = tokio::process::Command::new(exe)
        .args([url.as_str(), "--duration=30s"])
        .output()
        .await
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "loadgen: error: cannot connect to http://127.0.0.1:{port} (tried for 1s): "
        )) && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // --json -: the JSON report alone on stdout, the table on stderr.
    let url = format!("http://{}/t/t0/hello", good.addr);
    let out = tokio::process::Command::new(exe)
        .args([
            url.as_str(),
            "--warmup=0s",
            "-n",
            "20",
            "-c1",
            "--seed=7",
            "--json",
            "-",
        ])
        .output()
        .await
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["requests"], 20);
    assert_eq!(report["seed"], 7);
    assert_eq!(report["routes"]["GET /t/t0/hello"]["requests"], 20);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requests    20\n"), "{stderr}");
    assert!(!std::path::Path::new("-").exists(), "no file named -");
}
