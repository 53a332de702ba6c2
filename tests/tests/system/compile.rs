//! Compiling uploaded components: what can be refused without a compile is,
//! a compile runs beside the requests (not in their way), once for the same
//! bytes, and within its time and memory.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use http::StatusCode;
use system_tests::Runner;
use system_tests::admin::{Admin, Token};
use system_tests::http::get;
use system_tests::probe::Observed as _;

const COMPILED: &str = "runner_component_loads_total";

/// A WASIp2 HTTP handler of `functions` core functions, each enough work
/// that compiling them all takes seconds: it loads and instantiates like
/// any handler, and traps when called.
pub(crate) fn large_component(functions: usize) -> Vec<u8> {
    let mut text = String::from(
        r#"(component
        (import "wasi:http/types@0.2.0" (instance $types
            (export "incoming-request" (type (sub resource)))
            (export "response-outparam" (type (sub resource)))))
        (alias export $types "incoming-request" (type $request))
        (alias export $types "response-outparam" (type $out))
        (core module $m
            (func (export "handle") (param i32 i32) unreachable)"#,
    );
    for i in 0..functions {
        let _ = write!(
            text,
            " (func (param i32 i32) (result i32) local.get 0 local.get 1 i32.mul \
             i32.const {i} i32.add local.get 1 i32.xor local.get 0 i32.sub)"
        );
    }
    text.push_str(
        r#")
        (core instance $i (instantiate $m))
        (func $handle (param "request" (own $request)) (param "response-out" (own $out))
            (canon lift (core func $i "handle")))
        (instance $handler (export "handle" (func $handle)))
        (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#,
    );
    wat::parse_str(&text).expect("the generated component parses")
}

fn start(token: &Token, args: &[&str]) -> (Runner, Admin) {
    let mut all = vec!["--tenants", "1", "--admin-token-file", token.path()];
    all.extend_from_slice(args);
    let r = Runner::start(&all);
    let admin = Admin::new(r.admin, token);
    (r, admin)
}

/// Two uploads of a component of 150,000 functions at once: one compile,
/// in a process of its own, while tenant requests and /healthz keep being
/// answered; both uploads get its digest, one as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_compile_stalls_no_request() {
    let token = Token::new();
    let (r, admin) = start(&token, &[]);
    let bytes = large_component(150_000);
    let before = r.metric(COMPILED, r#"from="compiler""#).await;
    let upload = |bytes: Vec<u8>| {
        let admin = admin.clone();
        tokio::spawn(async move { admin.put_component(bytes).await })
    };
    let started = Instant::now();
    let uploads = [upload(bytes.clone()), upload(bytes)];
    // The longest wait for an answer while the uploads run.
    let (mut slowest, mut answered) = (Duration::ZERO, 0);
    while !uploads.iter().all(tokio::task::JoinHandle::is_finished) {
        let asked = Instant::now();
        let hello = get(r.addr, "/t/t0/hello").await;
        let health = get(r.admin, "/healthz").await;
        slowest = slowest.max(asked.elapsed());
        assert_eq!(
            (hello.status, hello.text().as_str()),
            (StatusCode::OK, "hello")
        );
        assert_eq!(health.status, StatusCode::OK);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let mut statuses = Vec::new();
    for upload in uploads {
        let reply = upload.await.unwrap();
        assert!(
            reply.text().contains("\"digest\":\"sha256:"),
            "{}",
            reply.text()
        );
        statuses.push(reply.status);
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED]);
    assert_eq!(
        r.metric(COMPILED, r#"from="compiler""#).await,
        before + 1.0,
        "the same bytes twice at once are compiled once"
    );
    // The compile must have been long enough to show a stall.
    assert!(
        took > Duration::from_secs(3),
        "the compile took only {took:?}"
    );
    assert!(
        slowest < took / 3,
        "a request waited {slowest:?} ({answered} answered) while the compile took {took:?}"
    );
}

/// Refused in the time it takes to read them, with no compile: a large
/// component that exports no handler, and one that imports a package the
/// runner does not provide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_run_is_refused_before_any_compile() {
    let token = Token::new();
    let (r, admin) = start(&token, &[]);
    let before = r.metric(COMPILED, "").await;
    let mut functions = String::new();
    for i in 0..100_000 {
        let _ = write!(functions, " (func (result i32) i32.const {i})");
    }
    let exports_nothing = format!("(component (core module{functions}))");
    let imports_elsewhere = r#"(component
        (import "acme:billing/charge@1.0.0" (instance (export "charge" (func))))
        (import "wasi:http/types@0.2.0" (instance))
        (instance $handler)
        (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#;
    for (text, refusal) in [
        (
            exports_nothing.as_str(),
            "the component exports neither wasi:http/incoming-handler@0.2.x (WASIp2) nor \
             wasi:http/handler@0.3.0 (WASIp3)",
        ),
        (
            imports_elsewhere,
            "the component imports one interface the runner does not provide: \
             acme:billing/charge@1.0.0 (the runner provides no such package)",
        ),
    ] {
        let reply = admin.put_component(wat::parse_str(text).unwrap()).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        let detail = reply.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(detail, refusal);
    }
    assert_eq!(r.metric(COMPILED, "").await, before, "nothing was compiled");
}

/// A compile past --compile-timeout, or over --compile-max-memory, is
/// stopped and the upload refused with the limit's name; the runner goes
/// on serving, and compiles what fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_past_its_time_or_memory_is_stopped_and_refused() {
    let token = Token::new();
    let bytes = large_component(150_000);
    for (args, refusal) in [
        (
            ["--compile-timeout", "1s"],
            "compiling the component took longer than compile-timeout (1s); it was stopped. \
             Raise --compile-timeout, or make the component smaller",
        ),
        (
            ["--compile-max-memory", "256MiB"],
            "compiling the component needed more than compile-max-memory (256.0 MiB); it was \
             stopped. Raise --compile-max-memory, or make the component smaller",
        ),
    ] {
        let (r, admin) = start(&token, &args);
        let reply = admin.put_component(bytes.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text()
        );
        assert_eq!(reply.json()["detail"].as_str(), Some(refusal));
        assert_eq!(get(r.addr, "/t/t0/hello").await.text(), "hello");
        let small = admin.put_component(large_component(10)).await;
        assert_eq!(small.status, StatusCode::CREATED, "{}", small.text());
    }
}
