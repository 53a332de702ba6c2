//! End-to-end tests: the real `runner` binary on port 0, real HTTP, real
//! guest components built from guest/.

#[path = "e2e/admin.rs"]
mod admin;
mod harness;
#[path = "e2e/p3.rs"]
mod p3;

use std::collections::HashSet;
use std::time::Duration;

use harness::{Observed as _, Runner, Tenants, get, request};
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_round_trip_and_values_persist_across_requests() {
    let r = Runner::start(&["--tenants", "2"]);
    let res = request(
        r.addr,
        Method::PUT,
        "/t/t0/kv/greeting",
        b"hello there".to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    for _ in 0..3 {
        let res = get(r.addr, "/t/t0/kv/greeting").await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, "hello there")
        );
    }
    assert_eq!(get(r.addr, "/t/t0/exists/greeting").await.text(), "true");
    let res = request(r.addr, Method::DELETE, "/t/t0/kv/greeting", vec![]).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = get(r.addr, "/t/t0/kv/greeting").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (StatusCode::NOT_FOUND, "key not found")
    );
    assert_eq!(get(r.addr, "/t/t0/exists/greeting").await.text(), "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_others_data() {
    let r = Runner::start(&["--tenants", "2"]);
    for (tenant, value) in [("t0", "zero"), ("t1", "one")] {
        for bucket in ["", "?bucket=shared"] {
            let path = format!("/t/{tenant}/kv/same-key{bucket}");
            let res = request(r.addr, Method::PUT, &path, value.as_bytes().to_vec()).await;
            assert_eq!(res.status, StatusCode::NO_CONTENT);
        }
    }
    request(r.addr, Method::PUT, "/t/t0/kv/only-t0", b"secret".to_vec()).await;
    for (tenant, value) in [("t0", "zero"), ("t1", "one")] {
        for bucket in ["", "?bucket=shared"] {
            let res = get(r.addr, &format!("/t/{tenant}/kv/same-key{bucket}")).await;
            assert_eq!(res.text(), value, "{tenant} {bucket}");
        }
    }
    let res = get(r.addr, "/t/t1/kv/only-t0").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(get(r.addr, "/t/t1/exists/only-t0").await.text(), "false");
    let keys = get(r.addr, "/t/t1/keys").await.json();
    assert_eq!(keys["keys"], serde_json::json!(["same-key"]));
    // Incrementing the other tenant's counter name starts from zero.
    request(r.addr, Method::POST, "/t/t0/incr/c?by=40", vec![]).await;
    let res = request(r.addr, Method::POST, "/t/t1/incr/c?by=2", vec![]).await;
    assert_eq!(res.text(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_default_bucket_names_are_one_bucket() {
    let r = Runner::start(&[]);
    request(
        r.addr,
        Method::PUT,
        "/t/t0/kv/k?bucket=default",
        b"v".to_vec(),
    )
    .await;
    assert_eq!(get(r.addr, "/t/t0/kv/k").await.text(), "v");
    assert_eq!(get(r.addr, "/t/t0/kv/k?bucket=").await.text(), "v");
    assert_eq!(
        get(r.addr, "/t/t0/kv/k?bucket=other").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_add_up_exactly() {
    let r = Runner::start(&[]);
    let addr = r.addr;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(
                async move { request(addr, Method::POST, "/t/t0/incr/counter", vec![]).await },
            )
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        seen.insert(res.text());
    }
    assert_eq!(seen.len(), 200, "every increment saw a distinct total");
    assert_eq!(get(addr, "/t/t0/kv/counter").await.text(), "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_walk_returns_each_unchanged_key_once_under_concurrent_writes() {
    let r = Runner::start(&["--max-page-keys", "300"]);
    let addr = r.addr;
    let pairs: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("stable-{i}"), "x".into()))
        .collect();
    for chunk in pairs.chunks(500) {
        let body: serde_json::Map<String, serde_json::Value> = chunk
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let res = request(
            addr,
            Method::POST,
            "/t/t0/batch/set",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    let writer = tokio::spawn(async move {
        for i in 0..400 {
            let path = format!("/t/t0/kv/churn-{}", i % 50);
            let method = if i % 3 == 0 {
                Method::DELETE
            } else {
                Method::PUT
            };
            request(addr, method, &path, b"y".to_vec()).await;
        }
    });
    let mut stable = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/t/t0/keys?cursor={c}"),
            None => "/t/t0/keys".into(),
        };
        let page = get(addr, &path).await.json();
        pages += 1;
        for k in page["keys"].as_array().unwrap() {
            let k = k.as_str().unwrap();
            if k.starts_with("stable-") {
                stable.push(k.to_string());
            }
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    writer.await.unwrap();
    let unique: HashSet<_> = stable.iter().collect();
    assert_eq!(stable.len(), 5000);
    assert_eq!(unique.len(), 5000);
    assert!(
        pages >= 17,
        "5000 keys in pages of at most 300 take at least 17 pages, took {pages}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_operations() {
    let r = Runner::start(&[]);
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/set",
        br#"{"a":"1","b":"2","c":"3"}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/get",
        br#"["c","missing","a"]"#.to_vec(),
    )
    .await;
    assert_eq!(
        res.json(),
        serde_json::json!({"c": "3", "missing": null, "a": "1"})
    );
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/delete",
        br#"["a","b"]"#.to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/get",
        br#"["a","b","c"]"#.to_vec(),
    )
    .await;
    assert_eq!(
        res.json(),
        serde_json::json!({"a": null, "b": null, "c": "3"})
    );
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/get",
        b"not json".to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_value_round_trips_and_one_byte_more_is_refused() {
    let r = Runner::start(&[]);
    let value: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let res = request(r.addr, Method::PUT, "/t/t0/kv/big", value.clone()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = get(r.addr, "/t/t0/kv/big").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body == value, "the value came back changed");
    let mut over = value;
    over.push(0);
    let res = request(r.addr, Method::PUT, "/t/t0/kv/big", over).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        res.text(),
        "store error: quota-exceeded: value of 1048577 bytes is over the 1048576-byte limit"
    );
    assert_eq!(
        get(r.addr, "/t/t0/kv/big").await.body.len(),
        1 << 20,
        "the refused write stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_and_paths_outside_tenants_get_404() {
    let r = Runner::start(&["--tenants", "1"]);
    let res = get(r.addr, "/t/nobody/hello").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (StatusCode::NOT_FOUND, "unknown tenant \"nobody\"")
    );
    let res = get(r.addr, "/hello").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(
        res.text(),
        "not found: tenant requests go to /t/{tenant}/{path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_the_seed_line_with_the_tenant() {
    let r = Runner::start(&["--tenants", "4"]);
    let res = get(r.addr, "/t/t3/demo").await;
    assert_eq!((res.status, res.text().as_str()), (StatusCode::OK, "world"));
    let line = r.wait_for_log("res from guest: world");
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("tenant=t3"), "{line}");
    assert!(line.contains("context=\"I/O\""), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_guest_fails_only_its_request() {
    let t = Tenants::new().hostile("evil", "").default("good", "");
    let r = Runner::start_with(&t, &[]);
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
    let r = Runner::start_with(&t, &[]);

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
    let r = Runner::start_with(&t, &[]);
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
    let r = Runner::start_with(&t, &[]);
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
    let r = Runner::start_with(&t, &[]);
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
async fn oversized_bodies_get_413_declared_or_streamed() {
    let r = Runner::start(&["--max-request-body", "1000"]);
    let res = request(r.addr, Method::PUT, "/t/t0/kv/k", vec![b'x'; 1001]).await;
    res.assert_limit(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_body",
        "request body too large: the limit is 1000 bytes",
    );
    let res = harness::chunked_put(r.addr, "/t/t0/kv/k", &[&[b'y'; 600], &[b'y'; 600]]).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        get(r.addr, "/t/t0/kv/k").await.status,
        StatusCode::NOT_FOUND
    );
    let res = request(r.addr, Method::PUT, "/t/t0/kv/k", vec![b'x'; 1000]).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let r = Runner::start(&["--max-header-bytes", "8KiB"]);
    let head = format!(
        "GET /t/t0/hello HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let reply = harness::raw(r.addr, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let r = Runner::start(&["--max-headers", "5"]);
    let many: String = (0..10).map(|i| format!("x-h{i}: v\r\n")).collect();
    let head = format!("GET /t/t0/hello HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let reply = harness::raw(r.addr, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    let few = "GET /t/t0/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let reply = harness::raw(r.addr, few.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_concurrency_cap_gives_429_and_global_cap_gives_503() {
    let t = Tenants::new()
        .hostile("evil", "max-tenant-in-flight = 2\ntimeout = \"1s\"")
        .default("good", "");
    let r = Runner::start_with(&t, &["--max-in-flight", "3"]);
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
    let r = Runner::start_with(&t, &["--max-in-flight", "2"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spinning_tenants_on_every_worker_do_not_starve_others() {
    let mut t = Tenants::new().default("good", "");
    for i in 0..4 {
        t = t.hostile(
            &format!("spin{i}"),
            "fuel = 1000000000000\ntimeout = \"6s\"",
        );
    }
    let r = Runner::start_with(&t, &["--workers", "2"]);
    let addr = r.addr;
    let spinners: Vec<_> = (0..4)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/t/spin{i}/loop")).await }))
        .collect();
    r.wait_for_metric("runner_requests_in_flight", "", 4.0)
        .await;
    for i in 0..30 {
        let res = request(
            addr,
            Method::PUT,
            &format!("/t/good/kv/k{i}"),
            b"v".to_vec(),
        )
        .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
        assert_eq!(get(addr, &format!("/t/good/kv/k{i}")).await.text(), "v");
    }
    assert_eq!(get(r.admin, "/healthz").await.text(), "ok");
    assert!(
        get(r.admin, "/metrics")
            .await
            .text()
            .contains("runner_requests_total")
    );
    assert!(
        spinners.iter().all(|s| !s.is_finished()),
        "the good tenant was served while all four loops still ran"
    );
    for s in spinners {
        let res = s.await.unwrap();
        assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_answers_503_at_once_and_slots_come_back() {
    let t = Tenants::new().hostile("evil", "timeout = \"2s\"");
    let r = Runner::start_with(&t, &["--pool-size", "2", "--max-in-flight", "10"]);
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
    let r = Runner::start_with(&t, &[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_header_timeout() {
    let r = Runner::start(&["--header-read-timeout", "300ms"]);
    let started = std::time::Instant::now();
    // Half a request head, then silence.
    let reply = harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.1\r\nhost: x\r\n").await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the connection was closed by the server"
    );
    assert_eq!(get(r.addr, "/t/t0/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_per_tenant_and_bound_the_label_set() {
    let r = Runner::start(&["--tenants", "4", "--metrics-max-tenants", "2"]);
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

    let r = Runner::start(&["--tenants", "3", "--metrics-tenant-label", "aggregate"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_and_idle_timeout_close_connections() {
    let r = Runner::start(&[
        "--max-connections",
        "2",
        "--idle-timeout",
        "300ms",
        "--header-read-timeout",
        "10s",
    ]);
    let mut first = harness::Client::connect(r.addr).await;
    let mut second = harness::Client::connect(r.addr).await;
    assert_eq!(first.get("/t/t0/hello").await.text(), "hello");
    assert_eq!(second.get("/t/t0/hello").await.text(), "hello");
    // A third connection is closed at once, without a response.
    let reply = harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(reply, "");
    assert_eq!(
        r.metric("runner_http_connections_rejected_total", "").await,
        1.0
    );
    // Idle connections are closed, which frees their slots.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(r.metric("runner_http_connections_open", "").await, 0.0);
    assert_eq!(get(r.addr, "/t/t0/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_well_behaved_tenant_is_served_during_every_attack() {
    let t = Tenants::new()
        .hostile(
            "evil",
            "max-keys = 1000\nmax-memory = \"16MiB\"\nfuel = 400000000\ntimeout = \"2s\"",
        )
        .default("good", "");
    let r = Runner::start_with(&t, &["--workers", "2"]);
    let addr = r.addr;
    let attacks = [
        "/loop",
        "/grow",
        "/grow-raw",
        "/recurse",
        "/panic",
        "/huge-body?bytes=50000000",
        "/stdout?bytes=20000000",
        "/fill-keys?max=100000",
        "/big-value?bytes=2000000",
        "/sleep?ms=5000",
    ];
    let attackers: Vec<_> = attacks
        .iter()
        .flat_map(|route| std::iter::repeat_n(*route, 3))
        .map(|route| {
            tokio::spawn(async move { get(addr, &format!("/t/evil{route}")).await.status })
        })
        .collect();
    let mut client = harness::Client::connect(addr).await;
    for i in 0..100 {
        let res = client.get(&format!("/t/good/kv/missing-{i}")).await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::NOT_FOUND, "key not found")
        );
        assert_eq!(client.get("/t/good/hello").await.text(), "hello");
    }
    let mut statuses = Vec::new();
    for a in attackers {
        statuses.push(a.await.unwrap().as_u16());
    }
    // Each attack failed (or finished) on its own terms.
    let expected: Vec<u16> = [503, 500, 200, 500, 500, 200, 200, 507, 507, 504]
        .iter()
        .flat_map(|s| std::iter::repeat_n(*s, 3))
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(r.metric("runner_pool_instances_in_use", "").await, 0.0);
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
    let r = Runner::start_with(&t, &["--max-request-body", "1KiB"]);
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

/// Guest text cannot pose as a runner field or forge a line: it is a quoted
/// field after the real tenant, with line separators and bidi controls
/// escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_log_text_cannot_forge_fields_or_lines() {
    let t = Tenants::new().hostile("t0", "");
    let r = Runner::start_with(&t, &[]);
    let forged = "/t/t0/print?text=refund%20ok%20tenant%3Dt1%E2%80%A8INFO%20fake%E2%80%AEtxt";
    assert_eq!(get(r.addr, forged).await.text(), "ok");
    let line = r.wait_for_log("refund ok");
    assert!(
        line.ends_with(
            r#"guest: tenant=t0 stream="stdout" text="refund ok tenant=t1\\u{2028}INFO fake\\u{202e}txt""#
        ),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_requests_need_exactly_one_host_header() {
    let r = Runner::start(&[]);
    let bad = "HTTP/1.1 400 Bad Request";
    let none = harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.1\r\n\r\n").await;
    assert!(none.starts_with(bad), "{none}");
    assert!(
        none.ends_with("an HTTP/1.1 request needs exactly one Host header\n"),
        "{none}"
    );
    let two = harness::raw(
        r.addr,
        b"GET /t/t0/hello HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    )
    .await;
    assert!(two.starts_with(bad), "{two}");
    let old = harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200 OK"), "{old}");
    assert!(old.ends_with("hello"), "{old}");
    assert_eq!(r.metric("runner_requests_total", "").await, 1.0);
    assert_eq!(r.metric("runner_unrouted_requests_total", "").await, 2.0);
}

/// What one host call may cost is bounded: a batch past its key limit is
/// refused whole, with its own quota token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_calls_past_their_key_limit_are_refused() {
    let r = Runner::start(&["--max-batch-keys", "100"]);
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
    let r = Runner::start_with(&t, &[]);
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

/// A guest stopped mid-body by a limit does not hand the client a response
/// that looks whole: the connection ends without the body's final chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_by_a_limit_does_not_look_complete() {
    let t = Tenants::new().hostile("evil", "fuel = 100000000000\ntimeout = \"500ms\"");
    let r = Runner::start_with(&t, &[]);
    let stream = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/t/evil/huge-body?bytes=2000000000")
        .header("host", "x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(res.into_body()).await;
    assert!(body.is_err(), "the client must see the body break off");
    assert_eq!(
        r.metric(
            "runner_limit_hits_total",
            "tenant=\"evil\",limit=\"deadline\""
        )
        .await,
        1.0
    );
    // Counted once its body ended, under the limit that cut it, not as ok.
    for (outcome, count) in [("deadline_exceeded", 1.0), ("ok", 0.0)] {
        let labels = format!("tenant=\"evil\",outcome=\"{outcome}\"");
        assert_eq!(
            r.metric("runner_requests_total", &labels).await,
            count,
            "{outcome}"
        );
    }
    assert_eq!(
        r.metric("runner_requests_in_flight", "tenant=\"evil\"")
            .await,
        0.0
    );
}

/// A client that declares a small body and never sends it holds none of
/// its tenant's request slots, and is answered 408 when its time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_send_their_body_hold_no_slot() {
    let t = Tenants::new().default("t0", "max-tenant-in-flight = 2");
    let r = Runner::start_with(&t, &["--body-read-timeout", "1s"]);
    let addr = r.addr;
    let stalled: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(harness::raw_for(
                addr,
                b"PUT /t/t0/kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n",
                Duration::from_secs(5),
            ))
        })
        .collect();
    r.wait_for_metric("runner_requests_in_flight", "tenant=\"t0\"", 4.0)
        .await;
    let res = request(addr, Method::PUT, "/t/t0/kv/k", b"served".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
    assert_eq!(get(addr, "/t/t0/kv/k").await.text(), "served");
    for s in stalled {
        let reply = s.await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 408 Request Timeout"), "{reply}");
        assert!(
            reply.contains("x-runner-limit: body_read_timeout"),
            "{reply}"
        );
        assert!(
            reply.ends_with("request body timeout: 10 declared bytes did not arrive within 1s\n"),
            "{reply}"
        );
    }
    assert_eq!(
        r.metric(
            "runner_limit_hits_total",
            "tenant=\"t0\",limit=\"body_read_timeout\""
        )
        .await,
        4.0
    );
}

/// The log budget counts what is written, not what the guest wrote: a flood
/// of one-byte lines cannot write many times its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_budgets_count_what_is_written() {
    let t = Tenants::new().hostile("evil", "max-log-bytes = \"8KiB\"");
    let r = Runner::start_with(&t, &[]);
    assert_eq!(get(r.addr, "/t/evil/lines?count=32768").await.text(), "ok");
    r.wait_for_log("log budget of this request spent");
    let logged: usize = r
        .output()
        .lines()
        .filter(|l| l.contains("stream=\"stdout\""))
        .map(|l| l.len() + 1)
        .sum();
    assert!(
        (4 << 10..=8 << 10).contains(&logged),
        "{logged} bytes of log for an 8KiB budget"
    );
}

/// A tenant's requests together are held to its log rate, whatever each
/// request's own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_log_rate_bounds_all_its_requests_together() {
    let t = Tenants::new().hostile(
        "evil",
        "max-log-bytes = \"1MiB\"\nmax-log-bytes-per-second = \"16KiB\"",
    );
    let r = Runner::start_with(&t, &[]);
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let res = get(r.addr, "/t/evil/stdout?bytes=65536").await;
        assert_eq!(res.text(), "ok");
    }
    let elapsed = started.elapsed().as_secs_f64();
    r.wait_for_log("log rate of this tenant exceeded");
    let logged: usize = r
        .output()
        .lines()
        .filter(|l| l.contains("stream=\"stdout\""))
        .map(|l| l.len() + 1)
        .sum();
    // One second's burst plus what the rate refills while the requests run.
    let allowed = (16 << 10) as f64 * (1.0 + elapsed);
    assert!(
        (logged as f64) <= allowed,
        "{logged} bytes logged in {elapsed:.2}s at 16KiB/s"
    );
    assert!(logged >= 8 << 10, "the first burst is logged: {logged}");
}

/// Two tenants running the longest batch calls allowed, back to back, do
/// not stall a neighbour: its p99 stays far under 50 ms (before batches were
/// bounded, one such call took 120-420 ms on a worker thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_host_calls_allowed_do_not_stall_a_neighbour() {
    let t = Tenants::new()
        .default("heavy0", "")
        .default("heavy1", "")
        .default("good", "");
    let r = Runner::start_with(&t, &[]);
    let addr = r.addr;
    let keys: Vec<String> = (0..1000).map(|i| format!("{i:08}")).collect();
    let body = serde_json::to_vec(&keys).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heavy: Vec<_> = ["heavy0", "heavy1"]
        .into_iter()
        .map(|tenant| {
            let (body, stop) = (body.clone(), stop.clone());
            tokio::spawn(async move {
                let mut client = harness::Client::connect(addr).await;
                let path = format!("/t/{tenant}/batch/delete");
                let mut calls = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let res = client.send(Method::POST, &path, body.clone()).await;
                    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut client = harness::Client::connect(addr).await;
    let mut latencies = Vec::new();
    for _ in 0..300 {
        let started = std::time::Instant::now();
        assert_eq!(client.get("/t/good/hello").await.text(), "hello");
        latencies.push(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in heavy {
        assert!(h.await.unwrap() > 0, "the heavy tenants ran");
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "neighbour p99 {p99:?}, max {:?}",
        latencies[latencies.len() - 1]
    );
    assert!(p99 < Duration::from_millis(50), "neighbour p99 {p99:?}");
}

/// Guests racing to compare-and-swap one key through draft2, each retrying
/// on `cas-failed` with the handle it gives back: every swap lands exactly
/// once, and the draft routes read the same counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_compare_and_swaps_through_draft2_each_land_once() {
    let r = Runner::start_with(&Tenants::new().hostile("spin", ""), &[]);
    let addr = r.addr;
    const GUESTS: usize = 16;
    const SWAPS: usize = 25;
    let tasks: Vec<_> = (0..GUESTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut values = Vec::new();
                for _ in 0..SWAPS {
                    let res = request(addr, Method::POST, "/t/spin/cas/n", vec![]).await;
                    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
                    let text = res.text();
                    let (value, _retries) = text.split_once(' ').unwrap();
                    values.push(value.parse::<usize>().unwrap());
                }
                values
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        for value in t.await.unwrap() {
            assert!(seen.insert(value), "two swaps both wrote {value}");
        }
    }
    let total = GUESTS * SWAPS;
    assert_eq!(seen, (1..=total).collect::<HashSet<_>>());
    assert_eq!(get(addr, "/t/spin/kv/n").await.text(), total.to_string());

    // A write between taking the handle and swapping fails the swap; the
    // handle it gives back has the new value, and the retry lands.
    let res = request(addr, Method::POST, "/t/spin/cas/m?interfere", vec![]).await;
    assert_eq!(res.text(), "2 1");
}

/// Draft2's signed increment, its string cursors and its errors, on the
/// same data the draft routes see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft2_counts_and_lists_on_the_same_data() {
    let r = Runner::start_with(&Tenants::new().hostile("spin", "max-page-keys = 4"), &[]);
    let addr = r.addr;
    let post = |path: &'static str| async move { request(addr, Method::POST, path, vec![]).await };
    assert_eq!(post("/t/spin/incr2/c?by=-7").await.text(), "-7");
    assert_eq!(get(addr, "/t/spin/kv/c").await.text(), "-7");
    assert_eq!(post("/t/spin/incr2/c?by=10").await.text(), "3");
    request(addr, Method::PUT, "/t/spin/kv/word", b"abc".to_vec()).await;
    let res = post("/t/spin/incr2/word").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "store error: invalid-argument: the value under \"word\" is not a decimal i64, so it cannot be incremented"
        )
    );

    for i in 0..25 {
        let path = format!("/t/spin/kv/k{i}?bucket=list");
        request(addr, Method::PUT, &path, b"v".to_vec()).await;
    }
    let mut keys = HashSet::new();
    let mut cursor = None::<String>;
    let mut pages = 0;
    loop {
        pages += 1;
        let path = match &cursor {
            None => "/t/spin/keys2?bucket=list".to_owned(),
            Some(c) => format!("/t/spin/keys2?bucket=list&cursor={c}"),
        };
        let res = get(addr, &path).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        let text = res.text();
        let mut lines = text.lines();
        let next = lines.next().unwrap().to_owned();
        for key in lines {
            assert!(keys.insert(key.to_owned()), "{key} listed twice");
        }
        if next == "-" {
            break;
        }
        cursor = Some(next);
    }
    assert_eq!(
        keys,
        (0..25).map(|i| format!("k{i}")).collect::<HashSet<_>>()
    );
    assert!(pages >= 7, "pages of at most 4 keys: {pages}");
    let res = get(addr, "/t/spin/keys2?cursor=not-a-cursor").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "store error: invalid-argument: \"not-a-cursor\" is not a cursor this store returned"
        )
    );
}

/// Nothing one request leaves in linear memory reaches the next, though the
/// pool hands the same slot back and resets only what was touched: a static
/// set and 4 MiB of heap filled by each request read as fresh in the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_memory_carries_over_from_one_request_to_the_next() {
    let t = Tenants::new().hostile("a", "").hostile("b", "");
    let r = Runner::start_with(&t, &[]);
    for i in 0..40 {
        let tenant = if i % 3 == 0 { "b" } else { "a" };
        let res = get(r.addr, &format!("/t/{tenant}/residue")).await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, "static=0 dirty=0"),
            "request {i}"
        );
    }
}

/// Static and grown memory as `/residue` reports them on an instance's
/// first request, and on a later request of the same instance.
const FRESH: &str = "static=0 dirty=0";
const KEPT: &str = "static=42405 dirty=0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_keeps_its_own_state_for_its_own_tenant_only() {
    let t = Tenants::new()
        .hostile("a", "max-instance-reuse = 3")
        .hostile("b", "max-instance-reuse = 3")
        .hostile("c", "");
    let r = Runner::start_with(&t, &[]);
    // Each tenant's instance serves three requests, then a fresh one
    // takes over; no tenant's requests land on another's instance, and a
    // tenant without reuse always gets a fresh one.
    let plan = [
        ("a", FRESH),
        ("b", FRESH),
        ("c", FRESH),
        ("a", KEPT),
        ("c", FRESH),
        ("b", KEPT),
        ("a", KEPT),
        ("a", FRESH),
        ("b", KEPT),
        ("b", FRESH),
        ("a", KEPT),
    ];
    for (i, (tenant, seen)) in plan.into_iter().enumerate() {
        let res = get(r.addr, &format!("/t/{tenant}/residue")).await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, seen),
            "request {i}, tenant {tenant}"
        );
    }
    for (tenant, created, reused) in [("a", 2.0, 3.0), ("b", 2.0, 2.0), ("c", 2.0, 0.0)] {
        harness::assert_instances(&r, tenant, created, reused).await;
    }
    // a's second instance and b's second instance are parked.
    assert_eq!(r.metric("runner_instances_idle", "").await, 2.0);
    // Dropped so far: a's and b's first (3 requests each), and c's two.
    assert_eq!(r.metric("runner_instance_requests_count", "").await, 4.0);
    assert_eq!(r.metric("runner_instance_requests_sum", "").await, 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_or_a_limit_drops_the_instance() {
    let t = Tenants::new().hostile("a", "max-instance-reuse = 100");
    let r = Runner::start_with(&t, &[]);
    let residue = async || get(r.addr, "/t/a/residue").await.text();
    assert_eq!(residue().await, FRESH);
    assert_eq!(residue().await, KEPT);
    assert_eq!(
        get(r.addr, "/t/a/panic").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(residue().await, FRESH, "after a trap");
    assert_eq!(residue().await, KEPT);
    let res = get(r.addr, "/t/a/loop").await;
    res.assert_limit(
        StatusCode::SERVICE_UNAVAILABLE,
        "fuel",
        "fuel exhausted: the request burned its whole budget of 100000000 fuel units",
    );
    assert_eq!(residue().await, FRESH, "after running out of fuel");
    // A guest that writes an error response still ended cleanly.
    assert_eq!(
        get(r.addr, "/t/a/burn").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(residue().await, KEPT, "after a 400 from the guest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_and_the_deadline_are_per_request_on_a_reused_instance() {
    // One /burn of this many iterations costs more than half of FUEL (the
    // test checks), so two on one budget would run out.
    const ITERS: u64 = 400_000;
    const FUEL: u64 = 4_000_000;
    let t = Tenants::new().hostile(
        "a",
        &format!("max-instance-reuse = 100\nfuel = {FUEL}\ntimeout = \"400ms\""),
    );
    let r = Runner::start_with(&t, &[]);
    let labels = "tenant=\"a\"";
    let mut before = 0.0;
    for i in 0..4 {
        let res = get(r.addr, &format!("/t/a/burn?iters={ITERS}")).await;
        assert_eq!(
            (res.status, res.text()),
            (StatusCode::OK, ITERS.to_string()),
            "burn {i}"
        );
        let burned = r.metric("runner_fuel_consumed_total", labels).await;
        assert!(
            (burned - before) * 2.0 > FUEL as f64,
            "burn {i} cost {} fuel, not over half of {FUEL}",
            burned - before
        );
        before = burned;
    }
    // Each sleep takes most of the 400ms timeout; together they would
    // pass it.
    for i in 0..3 {
        let res = get(r.addr, "/t/a/sleep?ms=250").await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, "slept"),
            "sleep {i}"
        );
    }
    assert_eq!(
        r.metric("runner_instances_created_total", labels).await,
        1.0
    );
    assert_eq!(r.metric("runner_instances_reused_total", labels).await, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_is_dropped_after_its_timeout() {
    let t = Tenants::new().hostile(
        "a",
        "max-instance-reuse = 100\ninstance-idle-timeout = \"200ms\"",
    );
    let r = Runner::start_with(&t, &[]);
    assert_eq!(get(r.addr, "/t/a/residue").await.text(), FRESH);
    assert_eq!(get(r.addr, "/t/a/residue").await.text(), KEPT);
    assert_eq!(r.metric("runner_instances_idle", "").await, 1.0);
    // The reaper drops it once its timeout has passed, without a request.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.metric("runner_instances_idle", "").await != 0.0 {
        assert!(std::time::Instant::now() < deadline, "still parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        r.metric("runner_instance_requests_sum", "").await,
        2.0,
        "it served two requests"
    );
    assert_eq!(get(r.addr, "/t/a/residue").await.text(), FRESH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_evicts_parked_instances_before_it_refuses() {
    // Five tenants, four slots: each tenant parks an instance, so the
    // fifth (and then each in turn) needs another tenant's slot.
    let mut t = Tenants::new();
    for name in ["a", "b", "c", "d", "e"] {
        t = t.hostile(
            name,
            "max-instance-reuse = 100\ninstance-idle-timeout = \"1h\"",
        );
    }
    let r = Runner::start_with(&t, &["--pool-size", "4"]);
    for round in 0..3 {
        for name in ["a", "b", "c", "d", "e"] {
            let res = get(r.addr, &format!("/t/{name}/hello")).await;
            assert_eq!(
                (res.status, res.text().as_str()),
                (StatusCode::OK, "hello"),
                "round {round}, tenant {name}"
            );
        }
    }
    assert_eq!(r.metric("runner_instances_idle", "").await, 4.0);
    assert_eq!(r.metric("runner_instances_created_total", "").await, 15.0);
    assert_eq!(
        r.metric("runner_limit_hits_total", "limit=\"instance_pool\"")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_answer_twice_gets_fresh_instances_after_its_first_miss() {
    let t = Tenants::new().hostile("a", "max-instance-reuse = 10");
    let r = Runner::start_with(&t, &[]);
    let first = get(r.addr, "/t/a/answer-once").await;
    assert_eq!(
        (first.status, first.text().as_str()),
        (StatusCode::OK, "answered")
    );
    let missed = get(r.addr, "/t/a/answer-once").await;
    assert_eq!(
        (missed.status, missed.text().as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the guest ended without sending a response"
        )
    );
    let line = r.wait_for_log("cannot serve more than one request per instance");
    assert!(line.trim_end().ends_with(" tenant=a"), "{line}");
    for i in 0..3 {
        let res = get(r.addr, "/t/a/answer-once").await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, "answered"),
            "request {i} after reuse was turned off"
        );
    }
    let labels = "tenant=\"a\"";
    assert_eq!(
        r.metric("runner_instances_created_total", labels).await,
        4.0
    );
    assert_eq!(r.metric("runner_instances_reused_total", labels).await, 1.0);
    assert_eq!(r.metric("runner_instances_idle", "").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_guest_serves_its_routes_and_imports_only_what_wasmtime_serve_links() {
    let path = env!("RUNNER_BENCH_GUEST");
    let bytes = std::fs::read(path).unwrap();
    // The outer component's imports: nested components and modules each
    // open with a version header and close with an end.
    let (mut imports, mut depth) = (Vec::new(), 0);
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.unwrap() {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.unwrap().name.name.to_string());
                }
            }
            _ => {}
        }
    }
    let linked_by_wasmtime_serve = |name: &str| {
        ["http", "io", "cli", "clocks", "random", "filesystem"]
            .iter()
            .any(|p| name.starts_with(&format!("wasi:{p}/")))
            || ["store", "atomics", "batch"]
                .iter()
                .any(|i| name == format!("wasi:keyvalue/{i}@0.2.0-draft"))
    };
    assert!(
        imports
            .iter()
            .any(|i| i == "wasi:keyvalue/store@0.2.0-draft")
    );
    let other: Vec<_> = imports
        .iter()
        .filter(|i| !linked_by_wasmtime_serve(i))
        .collect();
    assert!(other.is_empty(), "{other:?}");

    let t = Tenants::new().tenant("b", &format!("component = {path:?}"));
    let r = Runner::start_with(&t, &[]);
    for (route, body) in [
        ("/hello", "hello"),
        ("/setget/k", "world"),
        ("/kv/k", "world"),
    ] {
        let res = get(r.addr, &format!("/t/b{route}")).await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, body),
            "{route}"
        );
    }
}

/// A component's bytes with a custom section added: the same code, another
/// digest.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let payload = [&[tag.len() as u8][..], tag.as_bytes()].concat();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

/// Components compiled, and read from the cache, so far.
async fn loads(r: &Runner) -> (f64, f64) {
    (
        r.metric("runner_component_loads_total", r#"from="compiler""#)
            .await,
        r.metric("runner_component_loads_total", r#"from="cache""#)
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_cache_dir_compiles_nothing_it_compiled_before() {
    let dir = system_tests::TempDir::new();
    let hostile = std::fs::read(system_tests::tenants::hostile_guest()).unwrap();
    let mut t = Tenants::new().default("plain", "");
    for i in 0..3 {
        let path = dir.path.join(format!("v{i}.wasm"));
        std::fs::write(&path, variant(&hostile, &format!("v{i}"))).unwrap();
        t = t.tenant(&format!("v{i}"), &format!("component = {path:?}"));
    }
    let cache = dir.path.join("cache");
    let args = ["--cache-dir", cache.to_str().unwrap()];
    {
        let r = Runner::start_with(&t, &args);
        assert_eq!(loads(&r).await, (4.0, 0.0));
    }
    let r = Runner::start_with(&t, &args);
    assert_eq!(loads(&r).await, (0.0, 4.0));
    for tenant in ["v0", "v1", "v2"] {
        let res = get(r.addr, &format!("/t/{tenant}/residue")).await;
        assert!(res.text().starts_with("static="), "{}", res.text());
    }
    assert_eq!(get(r.addr, "/t/plain/hello").await.text(), "hello");
    drop(r);
    // A damaged entry is refused by wasmtime, compiled afresh and replaced.
    let engine_dir = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for entry in std::fs::read_dir(&engine_dir).unwrap() {
        // A new file, not one rewritten in place: the runner before may
        // still map the old one, as a runner maps each entry it loads.
        let path = entry.unwrap().path();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"damaged").unwrap();
    }
    let r = Runner::start_with(&t, &args);
    assert_eq!(loads(&r).await, (4.0, 0.0));
    assert!(r.output().contains("compiled-component cache entry"));
    assert_eq!(get(r.addr, "/t/v1/hello").await.text(), "hello");
    drop(r);
    let r = Runner::start_with(&t, &args);
    assert_eq!(loads(&r).await, (0.0, 4.0));
}
