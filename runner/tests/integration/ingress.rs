//! The tenant listener as HTTP: routing, body and header limits, slow
//! clients, connection caps, and responses cut short.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::harness::{InProcess, Observed as _, Tenants, get, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_and_paths_outside_tenants_get_404() {
    let r = InProcess::start(&["--tenants", "1"]);
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
    assert_eq!(
        res.header("connection"),
        None,
        "no body: the connection stays"
    );
    // A body it did not read ends the connection, and the answer says so.
    let res = request(r.addr, Method::PUT, "/t/nobody/kv/k", b"value".to_vec()).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.header("connection"), Some("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let r = InProcess::start(&["--max-request-body", "1000"]);
    let res = request(r.addr, Method::PUT, "/t/t0/kv/k", vec![b'x'; 1001]).await;
    res.assert_limit(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_body",
        "request body too large: the limit is 1000 bytes",
    );
    let res =
        crate::harness::chunked_put(r.addr, "/t/t0/kv/k", &[&[b'y'; 600], &[b'y'; 600]]).await;
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
    let r = InProcess::start(&["--max-header-bytes", "8KiB"]);
    let head = format!(
        "GET /t/t0/hello HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let reply = crate::harness::raw(r.addr, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let r = InProcess::start(&["--max-headers", "5"]);
    let many: String = (0..10).map(|i| format!("x-h{i}: v\r\n")).collect();
    let head = format!("GET /t/t0/hello HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let reply = crate::harness::raw(r.addr, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    let few = "GET /t/t0/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let reply = crate::harness::raw(r.addr, few.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_header_timeout() {
    let r = InProcess::start(&["--header-read-timeout", "300ms"]);
    let started = std::time::Instant::now();
    // Half a request head, then silence.
    let reply = crate::harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.1\r\nhost: x\r\n").await;
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
async fn connection_cap_and_idle_timeout_close_connections() {
    let r = InProcess::start(&[
        "--max-connections",
        "2",
        "--idle-timeout",
        "300ms",
        "--header-read-timeout",
        "10s",
    ]);
    let mut first = crate::harness::Client::connect(r.addr).await;
    let mut second = crate::harness::Client::connect(r.addr).await;
    assert_eq!(first.get("/t/t0/hello").await.text(), "hello");
    assert_eq!(second.get("/t/t0/hello").await.text(), "hello");
    // A third connection is closed at once, without a response.
    let reply = crate::harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_requests_need_exactly_one_host_header() {
    let r = InProcess::start(&[]);
    let bad = "HTTP/1.1 400 Bad Request";
    let none = crate::harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.1\r\n\r\n").await;
    assert!(none.starts_with(bad), "{none}");
    assert!(
        none.ends_with("an HTTP/1.1 request needs exactly one Host header\n"),
        "{none}"
    );
    let two = crate::harness::raw(
        r.addr,
        b"GET /t/t0/hello HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    )
    .await;
    assert!(two.starts_with(bad), "{two}");
    let old = crate::harness::raw(r.addr, b"GET /t/t0/hello HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200 OK"), "{old}");
    assert!(old.ends_with("hello"), "{old}");
    assert_eq!(r.metric("runner_requests_total", "").await, 1.0);
    assert_eq!(r.metric("runner_unrouted_requests_total", "").await, 2.0);
}

/// A guest stopped mid-body by a limit does not hand the client a response
/// that looks whole: the connection ends without the body's final chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_by_a_limit_does_not_look_complete() {
    let t = Tenants::new().hostile("evil", "fuel = 100000000000\ntimeout = \"500ms\"");
    let r = InProcess::start_with(&t, &[]);
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
    let r = InProcess::start_with(&t, &["--body-read-timeout", "1s"]);
    let addr = r.addr;
    let stalled: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(crate::harness::raw_for(
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
    let r = InProcess::start_with(&t, &[]);
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

/// A GET to `path` with Host `host`: the status and body.
async fn at_host(r: &InProcess, host: &str, path: &str) -> (u16, String) {
    let res = crate::harness::get_with(r.addr, path, &[("host", host)]).await;
    (res.status.as_u16(), res.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_reached_by_their_hosts_and_a_suffixs_subdomains_with_their_paths_unchanged() {
    let token = system_tests::admin::Token::new();
    let t = Tenants::new()
        .hostile(
            "shop",
            "hosts = [\"shop.example.com\", \"www.shop.example\"]",
        )
        .hostile("alice", "");
    let r = InProcess::start_with(
        &t,
        &[
            "--host-suffix",
            "apps.example.com",
            "--admin-token-file",
            token.path(),
        ],
    );
    let hello = (200, "hello".to_string());
    let not_found = (
        404,
        "not found: tenant requests go to /t/{tenant}/{path}".to_string(),
    );
    for host in [
        "shop.example.com",
        "SHOP.Example.COM",
        "shop.example.com.",
        "shop.example.com:8080",
        "www.shop.example",
    ] {
        assert_eq!(at_host(&r, host, "/hello").await, hello, "{host}");
    }
    assert_eq!(at_host(&r, "alice.apps.example.com", "/hello").await, hello);
    assert_eq!(
        at_host(&r, "Alice.Apps.Example.com:443", "/hello").await,
        hello
    );
    // Only one label under the suffix names a tenant; an unknown host goes
    // by path, as before.
    assert_eq!(
        at_host(&r, "x.alice.apps.example.com", "/hello").await,
        not_found
    );
    assert_eq!(
        at_host(&r, "nobody.apps.example.com", "/hello").await,
        not_found
    );
    assert_eq!(at_host(&r, "other.example.com", "/hello").await, not_found);
    assert_eq!(
        at_host(&r, "other.example.com", "/t/alice/hello").await,
        hello
    );
    // Its own data, whichever way it is reached.
    let put = request(r.addr, Method::PUT, "/t/shop/kv/k", b"v".to_vec()).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert_eq!(
        at_host(&r, "shop.example.com", "/kv/k").await,
        (200, "v".into())
    );
    assert_eq!(
        at_host(&r, "alice.apps.example.com", "/kv/k").await,
        (404, "key not found".into())
    );
    assert_eq!(
        r.metric("runner_routed_requests_total", r#"by="host""#)
            .await,
        9.0
    );
    assert_eq!(
        r.metric("runner_routed_requests_total", r#"by="path""#)
            .await,
        2.0
    );

    // A host another tenant claims is refused, naming both.
    let admin = system_tests::admin::Admin::new(r.admin, &token);
    let claim = |hosts: &[&str]| serde_json::json!({ "component": "default", "limits": { "hosts": hosts } });
    let res = admin
        .put_tenant("rival", claim(&["Shop.Example.com"]))
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text());
    assert_eq!(
        res.json()["detail"],
        "host shop.example.com is claimed by tenant \"shop\" and tenant \"rival\"; a host \
         reaches one tenant"
    );
    assert_eq!(
        admin.get("/v1/tenants/rival").await.status,
        StatusCode::NOT_FOUND
    );
    // Given up, it can be claimed; the old owner is not reached by it.
    let res = admin.put_tenant("shop", claim(&["www.shop.example"])).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(at_host(&r, "shop.example.com", "/hello").await, not_found);
    let res = admin
        .put_tenant("rival", claim(&["shop.example.com"]))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    // The default guest's route, which the hostile guest has not.
    assert_eq!(
        at_host(&r, "shop.example.com", "/demo").await,
        (200, "world".into())
    );
    // Removed, its hosts reach nothing.
    assert_eq!(
        admin.delete("/v1/tenants/rival").await.status,
        StatusCode::OK
    );
    assert_eq!(at_host(&r, "shop.example.com", "/hello").await, not_found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_path_routing_off_only_hosts_reach_tenants() {
    let t = Tenants::new().hostile("shop", "hosts = \"shop.example.com\"");
    let r = InProcess::start_with(&t, &["--path-routing", "off"]);
    assert_eq!(
        at_host(&r, "shop.example.com", "/hello").await,
        (200, "hello".into())
    );
    let no_host = (
        404,
        "not found: no tenant is served at this host".to_string(),
    );
    assert_eq!(at_host(&r, "localhost", "/t/shop/hello").await, no_host);
    assert_eq!(
        at_host(&r, "shop.example.com.evil", "/hello").await,
        no_host
    );
}
