//! Metrics: every outcome counted once per tenant, and a bounded label
//! set.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::harness::{InProcess, Observed as _, Tenants, get, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_per_tenant_and_bound_the_label_set() {
    let r = InProcess::start(&["--tenants", "4", "--metrics-max-tenants", "2"]);
    for t in ["t0", "t1", "t2", "t3"] {
        assert_eq!(
            get(r.addr, &format!("/t/{t}/hello")).await.status,
            StatusCode::OK
        );
    }
    get(r.addr, "/t/t0/kv/missing").await;
    request(r.addr, Method::PUT, "/t/t3/kv/k", b"v".to_vec()).await;
    let text = get(r.admin, "/metrics").await.text();
    assert!(text.contains("runner_build_info{version=\""), "{text}");
    assert_eq!(r.metric("runner_tenants", "").await, 4.0);
    assert_eq!(
        r.metric("runner_requests_total", "tenant=\"t0\",outcome=\"ok\"")
            .await,
        1.0
    );
    assert_eq!(
        r.metric(
            "runner_requests_total",
            "tenant=\"t0\",outcome=\"guest_4xx\""
        )
        .await,
        1.0
    );
    assert_eq!(
        r.metric("runner_requests_total", "tenant=\"_other\",outcome=\"ok\"")
            .await,
        3.0
    );
    assert_eq!(r.metric("runner_kv_keys", "tenant=\"_other\"").await, 1.0);
    assert!(
        !text.contains("tenant=\"t2\""),
        "tenants past the cap share _other"
    );
    // One pool per kind of component, each of --pool-size slots.
    for pool in ["wasip2", "wasip3"] {
        let labels = format!("pool=\"{pool}\"");
        assert_eq!(
            r.metric("runner_pool_instances_capacity", &labels).await,
            1000.0
        );
    }
    assert!(r.metric("process_resident_memory_bytes", "").await > 1e6);
    assert!(r.metric("process_open_fds", "").await >= 3.0);
    assert!(r.metric("process_start_time_seconds", "").await > 1.7e9);
    get(r.addr, "/t/nobody/hello").await;
    get(r.addr, "/elsewhere").await;
    assert_eq!(r.metric("runner_unrouted_requests_total", "").await, 2.0);
    assert_eq!(
        r.metric(
            "runner_kv_operations_total",
            "tenant=\"_other\",op=\"set\",result=\"ok\""
        )
        .await,
        1.0
    );
    // Key-value call latency, a histogram the runner keeps itself: a series
    // per op called, whatever the tenant.
    assert!(
        text.contains("# TYPE runner_kv_operation_duration_seconds histogram"),
        "{text}"
    );
    let kv_series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("runner_kv_operation_duration_seconds_count"))
        .collect();
    assert_eq!(
        kv_series,
        [
            "runner_kv_operation_duration_seconds_count{op=\"open\"} 2",
            "runner_kv_operation_duration_seconds_count{op=\"get\"} 1",
            "runner_kv_operation_duration_seconds_count{op=\"set\"} 1",
        ]
    );
    for op in ["get", "set"] {
        let op = format!("op=\"{op}\"");
        let name = "runner_kv_operation_duration_seconds";
        let inf = format!("{op},le=\"+Inf\"");
        assert_eq!(r.metric(&format!("{name}_bucket"), &inf).await, 1.0);
        let sum = r.metric(&format!("{name}_sum"), &op).await;
        assert!(sum > 0.0 && sum < 1.0, "{sum}");
    }

    let r = InProcess::start(&["--tenants", "3", "--metrics-tenant-label", "aggregate"]);
    for t in ["t0", "t1", "t2"] {
        get(r.addr, &format!("/t/{t}/hello")).await;
    }
    let text = get(r.admin, "/metrics").await.text();
    assert_eq!(
        r.metric("runner_requests_total", "tenant=\"_all\",outcome=\"ok\"")
            .await,
        3.0
    );
    assert!(!text.contains("tenant=\"t0\""), "{text}");
    assert_eq!(get(r.admin, "/readyz").await.text(), "ready");
    assert_eq!(
        get(r.addr, "/metrics").await.status,
        StatusCode::NOT_FOUND,
        "admin routes are not on the tenant listener"
    );
}

/// Every way a request can end, each counted exactly once: the guest's own
/// answers, each refusal path, each limit, a trap, and a client that hangs
/// up mid-request (which must not leave the in-flight gauge raised).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_counted_exactly_once() {
    let t = Tenants::new()
        .hostile(
            "evil",
            "max-tenant-in-flight = 1\ntimeout = \"300ms\"\nfuel = 50000000",
        )
        .default("good", "");
    let r = InProcess::start_with(&t, &["--max-request-body", "1KiB"]);
    let addr = r.addr;
    assert_eq!(get(addr, "/t/good/hello").await.status, StatusCode::OK);
    assert_eq!(
        get(addr, "/t/good/kv/missing").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(addr, "/t/evil/panic").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    get(addr, "/t/evil/loop").await.assert_limit(
        StatusCode::SERVICE_UNAVAILABLE,
        "fuel",
        "fuel exhausted: the request burned its whole budget of 50000000 fuel units",
    );
    get(addr, "/t/evil/sleep?ms=2000").await.assert_limit(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline",
        "deadline exceeded: the request ran past its 300ms timeout",
    );
    let big = request(addr, Method::PUT, "/t/evil/kv/k", vec![b'x'; 2048]).await;
    big.assert_limit(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_body",
        "request body too large: the limit is 1024 bytes",
    );

    // The one slot taken, a second request is refused for the tenant cap.
    let holder = tokio::spawn(async move { get(addr, "/t/evil/sleep?ms=200").await });
    r.wait_for_metric("runner_requests_in_flight", "tenant=\"evil\"", 1.0)
        .await;
    get(addr, "/t/evil/hello").await.assert_limit(
        StatusCode::TOO_MANY_REQUESTS,
        "tenant_concurrency",
        "too many requests: tenant evil already has 1 requests in flight",
    );
    assert_eq!(holder.await.unwrap().text(), "slept");

    // A client that leaves while its request runs.
    let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut gone,
        b"GET /t/evil/sleep?ms=250 HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .unwrap();
    r.wait_for_metric("runner_requests_in_flight", "tenant=\"evil\"", 1.0)
        .await;
    drop(gone);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r
        .metric(
            "runner_requests_total",
            "tenant=\"evil\",outcome=\"client_gone\"",
        )
        .await
        < 1.0
    {
        assert!(std::time::Instant::now() < deadline, "no client_gone count");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for (tenant, outcome, count) in [
        ("good", "ok", 1.0),
        ("good", "guest_4xx", 1.0),
        ("evil", "ok", 1.0),
        ("evil", "trap", 1.0),
        ("evil", "fuel_exhausted", 1.0),
        ("evil", "deadline_exceeded", 1.0),
        ("evil", "rejected", 2.0),
        ("evil", "client_gone", 1.0),
        ("evil", "guest_5xx", 0.0),
        ("evil", "host_error", 0.0),
    ] {
        let labels = format!("tenant=\"{tenant}\",outcome=\"{outcome}\"");
        assert_eq!(
            r.metric("runner_requests_total", &labels).await,
            count,
            "{labels}"
        );
    }
    assert_eq!(r.metric("runner_requests_total", "").await, 9.0);
    for (limit, count) in [
        ("fuel", 1.0),
        ("deadline", 1.0),
        ("request_body", 1.0),
        ("tenant_concurrency", 1.0),
        ("global_concurrency", 0.0),
    ] {
        let labels = format!("tenant=\"evil\",limit=\"{limit}\"");
        assert_eq!(
            r.metric("runner_limit_hits_total", &labels).await,
            count,
            "{labels}"
        );
    }
    for (kind, count) in [
        ("unreachable", 1.0),
        ("fuel", 1.0),
        ("deadline", 1.0),
        ("other", 0.0),
    ] {
        let labels = format!("tenant=\"evil\",kind=\"{kind}\"");
        assert_eq!(
            r.metric("runner_traps_total", &labels).await,
            count,
            "{labels}"
        );
    }
    assert_eq!(r.metric("runner_requests_in_flight", "").await, 0.0);
    assert_eq!(
        r.metric("runner_request_duration_seconds_count", "").await,
        9.0
    );
}

/// The sample lines (no comments) of `text` whose labels name `tenant`.
fn tenant_samples<'a>(text: &'a str, tenant: &str) -> Vec<&'a str> {
    let label = format!("tenant=\"{tenant}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
        .collect()
}

/// A thousand tenants before any request: each shows its limits and
/// nothing else. A request gives its tenant its series (CPU time among
/// them) and no other tenant any. Prometheus gets the scrape gzipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_series_appear_on_first_use_beside_their_limits() {
    let r = InProcess::start(&["--tenants", "1000", "--max-keys", "500"]);
    let text = get(r.admin, "/metrics").await.text();
    let limits = [
        "runner_tenant_limit{tenant=\"t7\",limit=\"max_keys\"} 500",
        "runner_tenant_limit{tenant=\"t7\",limit=\"max_store_bytes\"} 67108864",
        "runner_tenant_limit{tenant=\"t7\",limit=\"max_tenant_in_flight\"} 100",
        "runner_tenant_limit{tenant=\"t7\",limit=\"max_memory\"} 67108864",
        "runner_tenant_limit{tenant=\"t7\",limit=\"fuel\"} 100000000",
        "runner_tenant_limit{tenant=\"t7\",limit=\"timeout\"} 1",
        "runner_tenant_limit{tenant=\"t7\",limit=\"max_log_bytes_per_second\"} 1048576",
    ];
    assert_eq!(tenant_samples(&text, "t7"), limits);
    let per_tenant = text.lines().filter(|l| l.contains("tenant=\"")).count();
    assert_eq!(per_tenant, 7 * 1000, "only limits before any request");
    eprintln!("1,000 idle tenants: a scrape of {} bytes", text.len());

    assert_eq!(get(r.addr, "/t/t5/hello").await.text(), "hello");
    request(r.addr, Method::PUT, "/t/t5/kv/k", b"v".to_vec()).await;
    let text = get(r.admin, "/metrics").await.text();
    assert_eq!(tenant_samples(&text, "t7"), limits);
    let names: std::collections::BTreeSet<&str> = tenant_samples(&text, "t5")
        .iter()
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "runner_cpu_seconds_total",
            "runner_fuel_consumed_total",
            "runner_instances_created_total",
            "runner_kv_bytes",
            "runner_kv_keys",
            "runner_kv_operations_total",
            "runner_request_duration_seconds_bucket",
            "runner_request_duration_seconds_count",
            "runner_request_duration_seconds_sum",
            "runner_requests_in_flight",
            "runner_requests_total",
            "runner_tenant_limit",
        ]
    );
    assert!(text.contains("# TYPE runner_cpu_seconds_total counter"));
    let cpu = r.metric("runner_cpu_seconds_total", "tenant=\"t5\"").await;
    assert!(cpu > 0.0 && cpu < 1.0, "{cpu}");
    eprintln!("after one tenant's requests: {} bytes", text.len());

    let zipped =
        crate::harness::get_with(r.admin, "/metrics", &[("accept-encoding", "gzip")]).await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped.body[..]),
        &mut plain,
    )
    .expect("a gzip body");
    assert_eq!(tenant_samples(&plain, "t7"), limits);
    assert!(
        zipped.body.len() * 5 < plain.len(),
        "{} of {}",
        zipped.body.len(),
        plain.len()
    );
    let refused =
        crate::harness::get_with(r.admin, "/metrics", &[("accept-encoding", "gzip;q=0")]).await;
    assert_eq!(refused.header("content-encoding"), None);
    assert!(refused.text().starts_with("# "));
}
