//! Every per-request and per-tenant limit: its own error, its status,
//! and the resources that come back after it.

use http::{Method, StatusCode};

use crate::harness::{InProcess, Observed as _, Tenants, get, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_guest_fails_only_its_request() {
    let t = Tenants::new().hostile("evil", "").default("good", "");
    let r = InProcess::start_with(&t, &[]);
    let res = get(r.addr, "/t/evil/panic").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        res.text(),
        "guest trapped: wasm `unreachable` instruction executed"
    );
    let line = r.wait_for_log("hostile guest panicked on purpose");
    assert!(line.contains("tenant=evil"), "{line}");
    assert_eq!(get(r.addr, "/t/evil/hello").await.text(), "hello");
    assert_eq!(get(r.addr, "/t/good/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_and_deadline_each_have_their_own_error() {
    let t = Tenants::new()
        .hostile("cpu", "fuel = 5000000\ntimeout = \"10s\"")
        .hostile("slow", "fuel = 100000000000\ntimeout = \"300ms\"");
    let r = InProcess::start_with(&t, &[]);

    let res = get(r.addr, "/t/cpu/loop").await;
    res.assert_limit(
        StatusCode::SERVICE_UNAVAILABLE,
        "fuel",
        "fuel exhausted: the request burned its whole budget of 5000000 fuel units",
    );
    assert_eq!(res.header("retry-after"), None);
    // A budgeted amount of work still fits.
    assert_eq!(get(r.addr, "/t/cpu/burn?iters=1000").await.text(), "1000");

    let res = get(r.addr, "/t/slow/loop").await;
    res.assert_limit(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline",
        "deadline exceeded: the request ran past its 300ms timeout",
    );

    // Blocked in a host call, where epochs cannot interrupt: the wall-clock
    // backstop ends it.
    let res = get(r.addr, "/t/slow/sleep?ms=60000").await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.header("x-runner-limit"), Some("deadline"));

    assert_eq!(get(r.addr, "/t/slow/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_stack_limits_trap_cleanly() {
    let t = Tenants::new().hostile("evil", "max-memory = \"4MiB\"\nfuel = 10000000000");
    let r = InProcess::start_with(&t, &[]);
    // memory.grow past the cap fails (returns -1); the guest reports the size
    // it reached, which is exactly the cap.
    let res = get(r.addr, "/t/evil/grow-raw").await;
    assert_eq!((res.status, res.text().as_str()), (StatusCode::OK, "64"));

    let res = get(r.addr, "/t/evil/grow").await;
    res.assert_limit(
        StatusCode::INTERNAL_SERVER_ERROR,
        "memory",
        "memory limit exceeded: a linear memory may grow to at most 4194304 bytes",
    );

    let res = get(r.addr, "/t/evil/recurse").await;
    res.assert_limit(
        StatusCode::INTERNAL_SERVER_ERROR,
        "stack",
        "stack overflow: the guest exhausted its wasm stack",
    );

    assert_eq!(get(r.addr, "/t/evil/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_quota_stops_writes_and_deletes_give_room_back() {
    let t = Tenants::new().hostile("evil", "max-keys = 50");
    let r = InProcess::start_with(&t, &[]);
    let res = get(r.addr, "/t/evil/fill-keys?max=1000").await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        res.text(),
        "wrote 50 keys; store error: quota-exceeded: the tenant holds 50 keys, the limit is 50"
    );
    let res = request(
        r.addr,
        Method::PUT,
        "/t/evil/kv/k0",
        b"overwrite is fine".to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = request(r.addr, Method::PUT, "/t/evil/kv/new", b"x".to_vec()).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_give_room_back_on_delete() {
    let t = Tenants::new().default(
        "small",
        "max-keys = 3
max-store-bytes = 100",
    );
    let r = InProcess::start_with(&t, &[]);
    let res = request(
        r.addr,
        Method::POST,
        "/t/small/batch/set",
        br#"{"a":"1","b":"2","c":"3"}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = request(r.addr, Method::PUT, "/t/small/kv/d", b"4".to_vec()).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        res.text(),
        "store error: quota-exceeded: the tenant holds 3 keys, the limit is 3"
    );
    request(r.addr, Method::DELETE, "/t/small/kv/a", vec![]).await;
    let res = request(r.addr, Method::PUT, "/t/small/kv/d", vec![b'x'; 96]).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        res.text(),
        "store error: quota-exceeded: writing 97 more bytes to the tenant's 4 would pass its 100-byte limit"
    );
    let res = request(r.addr, Method::PUT, "/t/small/kv/d", vec![b'x'; 95]).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(r.metric("runner_kv_keys", "tenant=\"small\"").await, 3.0);
    assert_eq!(r.metric("runner_kv_bytes", "tenant=\"small\"").await, 100.0);
    assert_eq!(
        r.metric("runner_kv_quota_rejections_total", "quota=\"keys\"")
            .await
            + r.metric("runner_kv_quota_rejections_total", "quota=\"bytes\"")
                .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_concurrency_cap_gives_429_and_global_cap_gives_503() {
    let t = Tenants::new()
        .hostile("evil", "max-tenant-in-flight = 2\ntimeout = \"1s\"")
        .default("good", "");
    let r = InProcess::start_with(&t, &["--max-in-flight", "3"]);
    let addr = r.addr;
    let sleepers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/t/evil/sleep?ms=700").await }))
        .collect();
    r.wait_for_metric("runner_requests_in_flight", "", 2.0)
        .await;
    let res = get(addr, "/t/evil/hello").await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.header("x-runner-limit"), Some("tenant_concurrency"));
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(
        res.text(),
        "too many requests: tenant evil already has 2 requests in flight"
    );
    // The other tenant still has room: one more slot of the three.
    let third = tokio::spawn(async move { get(addr, "/t/good/hello").await });
    assert_eq!(third.await.unwrap().status, StatusCode::OK);
    for s in sleepers {
        assert_eq!(s.await.unwrap().text(), "slept");
    }
    assert_eq!(get(addr, "/t/evil/hello").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_cap_gives_503_with_retry_after() {
    let t = Tenants::new().hostile("a", "").hostile("b", "");
    let r = InProcess::start_with(&t, &["--max-in-flight", "2"]);
    let addr = r.addr;
    let sleepers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|t| tokio::spawn(async move { get(addr, &format!("/t/{t}/sleep?ms=600")).await }))
        .collect();
    r.wait_for_metric("runner_requests_in_flight", "", 2.0)
        .await;
    let res = get(addr, "/t/a/hello").await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.header("x-runner-limit"), Some("global_concurrency"));
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(
        res.text(),
        "runner busy: all 2 request slots are in use; retry later"
    );
    for s in sleepers {
        assert_eq!(s.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(get(addr, "/t/b/hello").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_answers_503_at_once_and_slots_come_back() {
    let t = Tenants::new().hostile("evil", "timeout = \"2s\"");
    let r = InProcess::start_with(&t, &["--pool-size", "2", "--max-in-flight", "10"]);
    let addr = r.addr;
    let sleepers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/t/evil/sleep?ms=800").await }))
        .collect();
    r.wait_for_metric("runner_requests_in_flight", "", 2.0)
        .await;
    let res = get(addr, "/t/evil/hello").await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.header("x-runner-limit"), Some("instance_pool"));
    assert_eq!(res.header("retry-after"), Some("1"));
    assert!(
        res.text().starts_with("instance pool exhausted"),
        "{}",
        res.text()
    );
    for s in sleepers {
        assert_eq!(s.await.unwrap().text(), "slept");
    }
    assert_eq!(get(addr, "/t/evil/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_responses_stream_and_stdout_floods_are_bounded() {
    let t = Tenants::new().hostile("evil", "max-log-bytes = \"8KiB\"\nfuel = 10000000000");
    let r = InProcess::start_with(&t, &[]);
    let res = get(r.addr, "/t/evil/huge-body?bytes=20000000").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body.len(), 20_000_000);
    let res = get(r.addr, "/t/evil/stdout?bytes=10000000").await;
    assert_eq!((res.status, res.text().as_str()), (StatusCode::OK, "ok"));
    r.wait_for_log("log budget of this request spent");
    let logged: usize = r
        .output()
        .lines()
        .filter(|l| l.contains("stream=\"stdout\"") || l.contains("stream=stdout"))
        .map(str::len)
        .sum();
    assert!(
        logged < 64 << 10,
        "{logged} bytes of stdout reached the log"
    );
}

/// What one host call may cost is bounded: a batch past its key limit is
/// refused whole, with its own quota token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_calls_past_their_key_limit_are_refused() {
    let r = InProcess::start(&["--max-batch-keys", "100"]);
    let keys = |n: usize| -> Vec<u8> {
        let list: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        serde_json::to_vec(&list).unwrap()
    };
    let res = request(r.addr, Method::POST, "/t/t0/batch/delete", keys(101)).await;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (
            507,
            "store error: quota-exceeded: a batch of 101 keys is over the 100-key limit"
        )
    );
    let res = request(r.addr, Method::POST, "/t/t0/batch/get", keys(100)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        r.metric(
            "runner_kv_quota_rejections_total",
            "tenant=\"t0\",quota=\"batch_size\""
        )
        .await,
        1.0
    );
}

/// Host memory a guest causes is bounded per request: a guest that holds
/// more host resources than its limit fails with its own limit, not as a
/// fault of the runner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_resources_are_bounded_per_request() {
    let t = Tenants::new().hostile("evil", "max-host-resources = 100");
    let r = InProcess::start_with(&t, &[]);
    assert_eq!(
        get(r.addr, "/t/evil/fields?count=50").await.text(),
        "held 50"
    );
    get(r.addr, "/t/evil/fields?count=200").await.assert_limit(
        StatusCode::INTERNAL_SERVER_ERROR,
        "host_resources",
        "host resource limit exceeded: a request may hold at most 100 host resources \
         (headers, bodies, streams) at once",
    );
    assert_eq!(
        r.metric(
            "runner_requests_total",
            "tenant=\"evil\",outcome=\"host_error\""
        )
        .await,
        0.0
    );
    assert_eq!(
        r.metric(
            "runner_limit_hits_total",
            "tenant=\"evil\",limit=\"host_resources\""
        )
        .await,
        1.0
    );
    assert!(!r.output().contains("ERROR"), "{}", r.output());
}
