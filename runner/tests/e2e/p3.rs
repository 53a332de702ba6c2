//! WASIp3 components (`wasi:http/handler@0.3.0`) served beside WASIp2 ones:
//! routing, the tenant's store and log, limits, traps and reuse, through
//! the p3 example guest (guest/p3).

use http::{Method, StatusCode};

use crate::harness::{Observed as _, Runner, Tenants, get, request};

/// A tenant on the p3 example guest, with extra TOML lines.
fn p3(tenants: Tenants, name: &str, extra: &str) -> Tenants {
    let path = env!("RUNNER_P3_GUEST");
    tenants.tenant(name, &format!("component = {path:?}\n{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_and_p3_tenants_are_served_side_by_side() {
    let t = p3(Tenants::new(), "three", "").default("two", "");
    let r = Runner::start_with(&t, &[]);
    let hello = get(r.addr, "/t/three/hello").await;
    assert_eq!(
        (hello.status, hello.text().as_str()),
        (StatusCode::OK, "hello from p3")
    );
    assert_eq!(
        hello.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(get(r.addr, "/t/two/hello").await.text(), "hello");
    // A body the guest writes after its handler has returned.
    let streamed = get(r.addr, "/t/three/stream?chunks=3").await;
    assert_eq!(
        (streamed.status, &streamed.body[..]),
        (StatusCode::OK, &b"chunk 0\nchunk 1\nchunk 2\n"[..])
    );
    let missing = get(r.addr, "/t/three/nowhere").await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (StatusCode::NOT_FOUND, "no such route")
    );
    assert_eq!(
        r.metric("runner_requests_total", r#"tenant="three",outcome="ok""#)
            .await,
        2.0
    );
    assert_eq!(
        r.metric(
            "runner_requests_total",
            r#"tenant="three",outcome="guest_4xx""#
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_guest_reaches_its_own_store_and_no_one_elses() {
    let t = p3(Tenants::new(), "three", "");
    let t = p3(t, "other", "").default("two", "");
    let r = Runner::start_with(&t, &[]);
    let put = request(r.addr, Method::PUT, "/t/three/kv/k", b"from p3".to_vec()).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let got = get(r.addr, "/t/three/kv/k").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "from p3")
    );
    // The same key of two other tenants, one p3, one p2: not there.
    for other in ["other", "two"] {
        let res = get(r.addr, &format!("/t/{other}/kv/k")).await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::NOT_FOUND, "key not found"),
            "{other}"
        );
    }
    // A quota error reaches the p3 guest with its token.
    let t = p3(Tenants::new(), "small", "max-value-bytes = 4");
    let r = Runner::start_with(&t, &[]);
    let res = request(r.addr, Method::PUT, "/t/small/kv/k", b"12345".to_vec()).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(res.text().starts_with("quota-exceeded: "), "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_guest_past_a_limit_or_trapping_fails_only_its_own_request() {
    let t = p3(Tenants::new(), "cpu", "fuel = 5000000\ntimeout = \"10s\"");
    let t = p3(t, "slow", "fuel = 100000000000\ntimeout = \"300ms\"").default("good", "");
    let r = Runner::start_with(&t, &[]);

    get(r.addr, "/t/cpu/spin").await.assert_limit(
        StatusCode::SERVICE_UNAVAILABLE,
        "fuel",
        "fuel exhausted: the request burned its whole budget of 5000000 fuel units",
    );
    get(r.addr, "/t/slow/spin").await.assert_limit(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline",
        "deadline exceeded: the request ran past its 300ms timeout",
    );
    // Waiting on the host's clock, not computing: the deadline ends it too.
    get(r.addr, "/t/slow/sleep?ms=60000").await.assert_limit(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline",
        "deadline exceeded: the request ran past its 300ms timeout",
    );
    let trap = get(r.addr, "/t/cpu/trap").await;
    assert_eq!(
        (trap.status, trap.text().as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest trapped: wasm `unreachable` instruction executed"
        )
    );
    for tenant in ["cpu", "slow"] {
        assert_eq!(
            get(r.addr, &format!("/t/{tenant}/hello")).await.text(),
            "hello from p3",
            "{tenant}"
        );
    }
    assert_eq!(get(r.addr, "/t/good/hello").await.text(), "hello");
    assert_eq!(
        get(r.addr, "/t/slow/sleep?ms=10").await.text(),
        "slept 10 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_p3_instance_keeps_its_state_until_its_count_or_a_trap() {
    let t = p3(Tenants::new(), "a", "max-instance-reuse = 3");
    let r = Runner::start_with(&t, &[]);
    let count = async || get(r.addr, "/t/a/count").await.text();
    for expected in ["1", "2", "3", "1", "2"] {
        assert_eq!(count().await, expected);
    }
    assert_eq!(
        get(r.addr, "/t/a/trap").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(count().await, "1", "after a trap");
    let labels = "tenant=\"a\"";
    assert_eq!(
        r.metric("runner_instances_created_total", labels).await,
        3.0
    );
    assert_eq!(r.metric("runner_instances_reused_total", labels).await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_guest_logs_with_its_tenant() {
    let t = p3(Tenants::new(), "three", "");
    let r = Runner::start_with(&t, &[]);
    let res = request(r.addr, Method::POST, "/t/three/log", b"hello log".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let line = r.wait_for_log("hello log");
    assert!(line.contains("tenant=three"), "{line}");
}

/// Sends `n` requests for `path` at once and returns each reply's status
/// and text, in order.
async fn at_once(r: &Runner, path: &str, n: usize) -> Vec<(StatusCode, String)> {
    let replies = futures::future::join_all((0..n).map(|_| get(r.addr, path))).await;
    replies
        .into_iter()
        .map(|res| (res.status, res.text()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_p3_instance_only_when_asked() {
    let t = p3(
        Tenants::new(),
        "shared",
        "max-instance-concurrency = 8\nmax-instance-reuse = 100",
    );
    let t = p3(t, "alone", "");
    let r = Runner::start_with(&t, &[]);
    // An instance exists; a burst that finds none starts several, as
    // each request that finds no room starts one.
    assert_eq!(get(r.addr, "/t/shared/count").await.text(), "1");
    let slept = vec![(StatusCode::OK, "slept 300 ms".to_string()); 8];
    assert_eq!(at_once(&r, "/t/shared/sleep?ms=300", 8).await, slept);
    assert_eq!(at_once(&r, "/t/alone/sleep?ms=300", 8).await, slept);
    // Eight requests waiting at once: one instance took them all, where
    // without concurrency each had its own.
    for (tenant, created, reused) in [("shared", 1.0, 8.0), ("alone", 8.0, 0.0)] {
        let labels = format!("tenant=\"{tenant}\"");
        assert_eq!(
            r.metric("runner_instances_created_total", &labels).await,
            created,
            "{tenant}"
        );
        assert_eq!(
            r.metric("runner_instances_reused_total", &labels).await,
            reused,
            "{tenant}"
        );
    }
    // The shared instance is kept for the next requests, with its state.
    assert_eq!(get(r.addr, "/t/shared/count").await.text(), "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_in_a_shared_instance_ends_alone() {
    let t = p3(
        Tenants::new(),
        "a",
        "max-instance-concurrency = 4\nmax-instance-reuse = 100\ntimeout = \"500ms\"",
    );
    let r = Runner::start_with(&t, &[]);
    let (long, short) = futures::join!(get(r.addr, "/t/a/sleep?ms=60000"), async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        at_once(&r, "/t/a/sleep?ms=100", 2).await
    });
    long.assert_limit(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline",
        "deadline exceeded: the request ran past its 500ms timeout",
    );
    assert_eq!(short, vec![(StatusCode::OK, "slept 100 ms".to_string()); 2]);
    // The instance took no more requests after one expired: the next one
    // gets a fresh instance.
    assert_eq!(get(r.addr, "/t/a/count").await.text(), "1");
    let labels = "tenant=\"a\"";
    assert_eq!(
        r.metric("runner_instances_created_total", labels).await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_instance_that_runs_out_of_fuel_fails_every_request_in_it() {
    let t = p3(
        Tenants::new(),
        "a",
        "max-instance-concurrency = 4\nmax-instance-reuse = 100\nfuel = 5000000\ntimeout = \"5s\"",
    );
    let r = Runner::start_with(&t, &[]);
    let (waiting, spinning) = futures::join!(get(r.addr, "/t/a/sleep?ms=2000"), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        get(r.addr, "/t/a/spin").await
    });
    // The tank held both requests' budgets; the spinning one burned them.
    let fuel = "fuel exhausted: the request burned its whole budget of 5000000 fuel units";
    spinning.assert_limit(StatusCode::SERVICE_UNAVAILABLE, "fuel", fuel);
    waiting.assert_limit(StatusCode::SERVICE_UNAVAILABLE, "fuel", fuel);
    assert_eq!(get(r.addr, "/t/a/count").await.text(), "1");
    assert_eq!(
        r.metric("runner_instances_created_total", "tenant=\"a\"")
            .await,
        2.0
    );
}
