//! Components from other toolchains, run unchanged: the Python
//! (componentize-py) and JavaScript (ComponentizeJS) example guests, built
//! from source here, against the real runner binary. See
//! `system_tests::polyglot` for when these skip.

use std::net::TcpListener;
use std::path::Path;

use http::{Method, StatusCode};
use system_tests::http::{get, request};
use system_tests::polyglot::{self, Toolchain};
use system_tests::probe::Observed as _;
use system_tests::upstream::Upstream;
use system_tests::{Runner, Tenants};

/// Every tenant's fuel budget (the default): `/burn` past it is refused.
const FUEL: u64 = 100_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_guest_runs_unchanged() {
    let Some(component) = polyglot::build(Toolchain::Python) else {
        return;
    };
    let runner = exercise(&component, "ErrorCode_HttpRequestDenied").await;

    // CPython imports wasi:sockets; every use is denied, and nothing
    // reaches a port that is listening.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let res = get(runner.addr, &format!("/t/a/connect?port={port}")).await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::FORBIDDEN,
            "refused: [Errno 2] Permission denied"
        )
    );
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "a connection reached the listener"
    );
}

/// The Python guest's `serve` world, which the speed comparisons run under
/// `wasmtime serve` too: no wasi:logging import, the same routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_guest_builds_without_wasi_logging_for_wasmtime_serve() {
    let (Some(full), Some(serve)) = (
        polyglot::build(Toolchain::Python),
        polyglot::build(Toolchain::PythonServe),
    ) else {
        return;
    };
    let imports_logging = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        let name = b"wasi:logging/logging@0.1.0-draft";
        bytes.windows(name.len()).any(|w| w == name)
    };
    assert_eq!(
        (imports_logging(&full), imports_logging(&serve)),
        (true, false)
    );
    exercise(&serve, "ErrorCode_HttpRequestDenied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_guest_runs_unchanged() {
    let Some(component) = polyglot::build(Toolchain::JavaScript) else {
        return;
    };
    exercise(&component, "HTTP-request-denied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_guest_serves_many_requests_per_instance() {
    let Some(component) = polyglot::build(Toolchain::Python) else {
        return;
    };
    reused(&component).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_guest_serves_many_requests_per_instance() {
    let Some(component) = polyglot::build(Toolchain::JavaScript) else {
        return;
    };
    reused(&component).await;
}

/// With `max-instance-reuse`, one instance answers a run of requests,
/// key-value writes and reads among them, each correctly.
async fn reused(component: &Path) {
    const REQUESTS: usize = 30;
    let tenant = format!("component = {component:?}\nmax-instance-reuse = 1000");
    let runner = Runner::start_with(&Tenants::new().tenant("a", &tenant), &[]);
    let addr = runner.addr;
    for i in 0..REQUESTS / 3 {
        let res = get(addr, "/t/a/hello").await;
        assert_eq!((res.status, res.text().as_str()), (StatusCode::OK, "hello"));
        let value = format!("value {i}");
        let res = request(addr, Method::PUT, "/t/a/kv/k", value.clone().into_bytes()).await;
        assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
        let res = get(addr, "/t/a/kv/k").await;
        assert_eq!((res.status, res.text()), (StatusCode::OK, value));
    }
    let labels = "tenant=\"a\"";
    assert_eq!(
        (
            runner
                .metric("runner_instances_created_total", labels)
                .await,
            runner.metric("runner_instances_reused_total", labels).await,
        ),
        (1.0, (REQUESTS - 1) as f64)
    );
}

/// The routes both guests share, on two tenants of one component: a
/// key-value round trip, isolation, increment, a 1 MiB value and one byte
/// more, a request past the fuel budget, and an outgoing request that only
/// the tenant allowed to make it gets through (`denied`: the code the
/// other sees, as the toolchain spells it). Returns the runner, still up.
async fn exercise(component: &Path, denied: &str) -> Runner {
    let upstream = Upstream::start();
    let tenant = format!("component = {component:?}\nfuel = {FUEL}");
    let allowed = format!(
        "{tenant}\nallowed-outbound-hosts = [\"http://{}\"]",
        upstream.addr
    );
    let runner = Runner::start_with(
        &Tenants::new().tenant("a", &allowed).tenant("b", &tenant),
        &["--allowed-outbound-networks", "127.0.0.0/8"],
    );
    let addr = runner.addr;
    let small = upstream.url("/small");
    let res = get(addr, &format!("/t/a/fetch?url={small}")).await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (StatusCode::OK, "upstream says hi")
    );
    let res = get(addr, &format!("/t/b/fetch?url={small}")).await;
    assert_eq!(
        (res.status.as_u16(), res.text()),
        (502, format!("outgoing request failed: {denied}"))
    );
    assert_eq!(upstream.requests(), 1);
    let put = |path: &'static str, body: Vec<u8>| request(addr, Method::PUT, path, body);
    let post = |path: &'static str| request(addr, Method::POST, path, vec![]);

    let res = get(addr, "/t/a/hello").await;
    assert_eq!((res.status, res.text().as_str()), (StatusCode::OK, "hello"));

    assert_eq!(
        put("/t/a/kv/k", b"of a".to_vec()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get(addr, "/t/a/kv/k").await.text(), "of a");
    let res = get(addr, "/t/b/kv/k").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (StatusCode::NOT_FOUND, "key not found")
    );
    put("/t/b/kv/k", b"of b".to_vec()).await;
    assert_eq!(get(addr, "/t/a/kv/k").await.text(), "of a");
    assert_eq!(get(addr, "/t/b/kv/k").await.text(), "of b");
    put("/t/a/kv/k?bucket=other", b"elsewhere".to_vec()).await;
    assert_eq!(
        get(addr, "/t/a/kv/k?bucket=other").await.text(),
        "elsewhere"
    );
    assert_eq!(get(addr, "/t/a/kv/k").await.text(), "of a");

    assert_eq!(post("/t/a/incr/n?by=5").await.text(), "5");
    assert_eq!(post("/t/a/incr/n?by=2").await.text(), "7");
    assert_eq!(post("/t/b/incr/n").await.text(), "1");

    // A value at the size limit round-trips byte for byte; one byte more
    // is the guest's store error, with the runner's status mapping.
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert_eq!(
        put("/t/a/kv/big", big.clone()).await.status,
        StatusCode::NO_CONTENT
    );
    let res = get(addr, "/t/a/kv/big").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body == big, "the 1 MiB value came back changed");
    let res = put("/t/a/kv/big", vec![7; (1 << 20) + 1]).await;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (
            507,
            "store error: quota-exceeded: value of 1048577 bytes is over the 1048576-byte limit"
        )
    );

    let res = get(addr, "/t/a/burn?iters=100000000000").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("fuel exhausted: the request burned its whole budget of {FUEL} fuel units")
                .as_str()
        )
    );
    // Only that request: the tenant and its data are still there.
    assert_eq!(get(addr, "/t/a/hello").await.text(), "hello");
    assert_eq!(get(addr, "/t/a/kv/k").await.text(), "of a");
    runner
}
