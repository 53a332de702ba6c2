//! The admin API (/v1) in process: tokens, deploys, updates, listing,
//! removal, and the errors that name what is wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use system_tests::admin::{Admin, Token};
use system_tests::tenants::hostile_guest;

use crate::harness::{InProcess, Observed as _, get, request};

/// The problem document (RFC 9457) the API answers an error with.
fn problem(token: &str, title: &str, status: StatusCode, detail: &str) -> serde_json::Value {
    json!({
        "type": format!("urn:runner:problem:{token}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    })
}

fn start(token: &Token, args: &[&str]) -> (InProcess, Admin) {
    let mut all = vec!["--admin-token-file", token.path()];
    all.extend_from_slice(args);
    let r = InProcess::start(&all);
    let admin = Admin::new(r.admin, token);
    (r, admin)
}

/// Uploads the hostile guest; its digest.
async fn upload_hostile(admin: &Admin) -> String {
    let bytes = std::fs::read(hostile_guest()).expect("reading the hostile guest");
    let res = admin.put_component(bytes).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    res.json()["digest"]
        .as_str()
        .expect("a digest in the answer")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_off_without_a_token() {
    let r = InProcess::start(&["--tenants", "1"]);
    let res = get(r.admin, "/v1/tenants").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::NOT_FOUND,
            "not found: the admin API is off; start the runner with an admin token \
             (--admin-token-file or RUNNER_ADMIN_TOKEN) to turn it on"
        )
    );
    // Nor does the tenant listener ever serve it.
    let token = Token::new();
    let (r, admin) = start(&token, &["--tenants", "1"]);
    let tenant_side = Admin {
        addr: r.addr,
        token: admin.token.clone(),
    };
    let res = tenant_side.get("/v1/tenants").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::NOT_FOUND,
            "not found: tenant requests go to /t/{tenant}/{path}"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_gets_401_and_changes_nothing() {
    let token = Token::new();
    let (r, admin) = start(&token, &["--tenants", "1"]);
    let document = json!({ "component": "default" });
    for who in [admin.with_token(None), admin.with_token(Some("guess"))] {
        let res = who.put_tenant("intruder", document.clone()).await;
        assert_eq!(
            (res.status, res.json()),
            (
                StatusCode::UNAUTHORIZED,
                problem(
                    "unauthorized",
                    "missing or wrong admin token",
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: send the admin token as Authorization: Bearer <token>"
                )
            )
        );
        assert_eq!(res.header("content-type"), Some("application/problem+json"));
        assert_eq!(
            res.header("www-authenticate"),
            Some("Bearer realm=\"runner admin\"")
        );
        let res = who.delete("/v1/tenants/t0?purge=true").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        let res = who.put_component(b"\0asm".to_vec()).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        get(r.addr, "/t/intruder/hello").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(r.addr, "/t/t0/hello").await.text(), "hello");
    assert_eq!(
        r.metric("runner_admin_requests_total", r#"result="unauthorized""#)
            .await,
        6.0
    );
    assert_eq!(r.metric("runner_tenants", "").await, 1.0);
    // The right token, once.
    let res = admin.put_tenant("welcome", document).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(
        r.metric("runner_admin_requests_total", r#"result="ok""#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_update_and_remove_a_tenant() {
    let token = Token::new();
    let (r, admin) = start(&token, &["--tenants", "1"]);
    let digest = upload_hostile(&admin).await;
    // The same bytes again: the same digest, nothing compiled.
    let bytes = std::fs::read(hostile_guest()).unwrap();
    let res = admin.put_component(bytes).await;
    assert_eq!(
        (res.status, res.json()),
        (StatusCode::OK, json!({ "digest": digest }))
    );
    assert_eq!(r.metric("runner_components", "").await, 2.0);

    let res = admin
        .put_tenant(
            "app",
            json!({ "component": digest, "limits": { "fuel": 500_000_000, "max-keys": 2, "timeout": "2s" } }),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let body = res.json();
    assert_eq!(
        (
            body["name"].as_str(),
            body["component"].as_str(),
            body["change"].as_str()
        ),
        (Some("app"), Some(digest.as_str()), Some("created"))
    );
    assert_eq!(body["limits"]["fuel"], 500_000_000);
    assert_eq!(body["limits"]["max-keys"], 2);
    assert_eq!(body["limits"]["timeout"], "2s");
    // Keys left out take the runner's defaults.
    assert_eq!(body["limits"]["max-memory"], 64 << 20);
    // Served at once, on the hostile guest (it has /residue).
    assert_eq!(get(r.addr, "/t/app/residue").await.status, StatusCode::OK);
    for key in ["a", "b"] {
        let res = request(
            r.addr,
            Method::PUT,
            &format!("/t/app/kv/{key}"),
            b"v".to_vec(),
        )
        .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    let res = request(r.addr, Method::PUT, "/t/app/kv/c", b"v".to_vec()).await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::INSUFFICIENT_STORAGE,
            "store error: quota-exceeded: the tenant holds 2 keys, the limit is 2"
        )
    );
    let shown = admin.get("/v1/tenants/app").await.json();
    assert_eq!(
        shown["usage"],
        json!({ "keys": 2, "bytes": 4, "requests_in_flight": 0 })
    );

    // The same document again changes nothing.
    let same = json!({ "component": digest, "limits": { "fuel": 500_000_000, "max-keys": 2, "timeout": "2s" } });
    let res = admin.put_tenant("app", same).await;
    assert_eq!(
        (res.status, res.json()["change"].as_str()),
        (StatusCode::OK, Some("unchanged"))
    );

    // Update: the default guest, a larger key quota. The data stays, the
    // new quota applies to it, the new component serves.
    let res = admin
        .put_tenant(
            "app",
            json!({ "component": "default", "limits": { "max-keys": 3 } }),
        )
        .await;
    assert_eq!(
        (res.status, res.json()["change"].as_str()),
        (StatusCode::OK, Some("updated"))
    );
    assert_eq!(get(r.addr, "/t/app/residue").await.text(), "no route");
    assert_eq!(get(r.addr, "/t/app/kv/a").await.text(), "v");
    let res = request(r.addr, Method::PUT, "/t/app/kv/c", b"v".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = request(r.addr, Method::PUT, "/t/app/kv/d", b"v".to_vec()).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        r.metric("runner_tenant_changes_total", r#"change="updated""#)
            .await,
        1.0
    );
    let line = format!(
        "tenant updated through the admin API tenant=app component={}",
        admin.get("/v1/tenants/app").await.json()["component"]
            .as_str()
            .unwrap()
    );
    assert!(r.log().lock().contains(&line), "{line}");

    // Removed: 404 at once; the data is kept for a tenant of the same name.
    let res = admin.delete("/v1/tenants/app").await;
    assert_eq!(
        (res.status, res.json()),
        (StatusCode::OK, json!({ "removed": "app", "purged": false }))
    );
    let res = get(r.addr, "/t/app/kv/a").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (StatusCode::NOT_FOUND, "unknown tenant \"app\"")
    );
    let res = admin.get("/v1/tenants/app").await;
    assert_eq!(
        (res.status, res.json()),
        (
            StatusCode::NOT_FOUND,
            problem(
                "not-found",
                "no such tenant or component",
                StatusCode::NOT_FOUND,
                "no tenant \"app\""
            )
        )
    );
    let res = admin.delete("/v1/tenants/app").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = admin
        .put_tenant("app", json!({ "component": "default" }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(get(r.addr, "/t/app/kv/a").await.text(), "v");
    let scrape = get(r.admin, "/metrics").await.text();
    // The three keys it kept through its removal.
    assert!(
        scrape.contains("runner_kv_keys{tenant=\"app\"} 3\n"),
        "{scrape}"
    );
    // With purge, it is gone for good, and so are its usage series.
    let res = admin.delete("/v1/tenants/app?purge=true").await;
    assert_eq!(
        (res.status, res.json()),
        (StatusCode::OK, json!({ "removed": "app", "purged": true }))
    );
    let scrape = get(r.admin, "/metrics").await.text();
    for gone in [
        "runner_kv_keys{tenant=\"app\"}",
        "runner_kv_bytes{tenant=\"app\"}",
        "runner_tenant_limit{tenant=\"app\"",
    ] {
        assert!(!scrape.contains(gone), "{gone}: {scrape}");
    }
    admin
        .put_tenant("app", json!({ "component": "default" }))
        .await;
    assert_eq!(
        get(r.addr, "/t/app/kv/a").await.status,
        StatusCode::NOT_FOUND
    );
    let shown = admin.get("/v1/tenants/app").await.json();
    assert_eq!(shown["usage"]["keys"], 0);
    // t0 was never touched.
    assert_eq!(get(r.addr, "/t/t0/hello").await.text(), "hello");
    assert_eq!(
        (
            r.metric("runner_tenant_changes_total", r#"change="created""#)
                .await,
            r.metric("runner_tenant_changes_total", r#"change="removed""#)
                .await,
            r.metric("runner_tenants", "").await,
        ),
        (4.0, 2.0, 2.0),
        "t0 at start-up and app three times; two removals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_and_bad_limits_get_4xx_naming_the_problem() {
    let token = Token::new();
    let (r, admin) = start(&token, &["--tenants", "1", "--max-component-bytes", "4KiB"]);
    let res = admin.put_component(b"not wasm at all".to_vec()).await;
    assert_eq!(
        (res.status, res.json()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            problem(
                "cannot-run",
                "the component or limits cannot run on this runner",
                StatusCode::UNPROCESSABLE_ENTITY,
                "reading the component: not a WebAssembly binary (it does not \
                start with \\0asm)"
            )
        )
    );
    let res = admin.put_component(vec![0; 4097]).await;
    assert_eq!(
        (res.status, res.json()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            problem(
                "body-too-large",
                "the request body is too large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than the limit of 4096 bytes"
            )
        )
    );
    // A component that imports what the runner does not give: the
    // start-up check's own words.
    let wat = r#"(component
        (import "acme:cache/get@1.0.0" (instance (export "get" (func))))
    )"#;
    let res = admin.put_component(wat::parse_str(wat).unwrap()).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = res.json()["detail"].as_str().unwrap().to_string();
    assert!(
        error.starts_with(
            "the component imports one interface the runner does not provide: acme:cache/get@1.0.0"
        ),
        "{error}"
    );
    for (document, status, message) in [
        (
            json!({ "component": "default", "limits": { "fule": 1 } }),
            StatusCode::BAD_REQUEST,
            "the tenant document: unknown field `fule`, expected one of",
        ),
        (
            json!({ "component": "default", "limits": { "fuel": 0 } }),
            StatusCode::BAD_REQUEST,
            "limits: fuel must be greater than zero",
        ),
        (
            json!({ "component": "default", "limits": { "timeout": 5 } }),
            StatusCode::BAD_REQUEST,
            "limits: timeout: expected a duration such as \"500ms\" or \"2s\", found integer",
        ),
        (
            json!({ "component": "default", "limits": { "max-memory": "128MiB" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max-memory 134217728 bytes is above the runner's pool-max-memory of 67108864 \
             bytes, fixed when it started; restart it with a larger --pool-max-memory",
        ),
        (
            json!({ "component": "default", "limits": { "max-memory": "64KiB" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the component needs",
        ),
        (
            json!({ "component": "sha256:0000000000000000000000000000000000000000000000000000000000000000" }),
            StatusCode::NOT_FOUND,
            "no component sha256:0000000000000000000000000000000000000000000000000000000000000000: \
             upload it first with PUT /v1/components",
        ),
        (
            json!({ "component": "app.wasm" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "\"app.wasm\" is not a component digest (sha256:<64 hex digits>)",
        ),
        (
            json!({ "component": "default", "extra": true }),
            StatusCode::BAD_REQUEST,
            "the tenant document: unknown field `extra`",
        ),
        // A struct by position, which serde would take.
        (
            json!(["default", {}]),
            StatusCode::BAD_REQUEST,
            "the tenant document must be a JSON object, as in {\"component\": \"default\"",
        ),
        (
            json!({ "component": "default", "limits": [1] }),
            StatusCode::BAD_REQUEST,
            "limits must be a JSON object",
        ),
    ] {
        let res = admin.put_tenant("bad", document.clone()).await;
        let error = res.json()["detail"].as_str().unwrap().to_string();
        assert_eq!(res.status, status, "{document}: {error}");
        assert!(error.starts_with(message), "{document}: {error}");
    }
    let res = admin
        .put_tenant("a/b", json!({ "component": "default" }))
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "a/b is no route");
    let res = admin
        .put_tenant("ä", json!({ "component": "default" }))
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = admin
        .send(Method::PUT, "/v1/tenants/bad", "{not json")
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        get(r.addr, "/t/bad/hello").await.status,
        StatusCode::NOT_FOUND
    );
    let res = admin.send(Method::POST, "/v1/tenants", "").await;
    assert_eq!(
        (res.status, res.json()),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            problem(
                "method-not-allowed",
                "method not allowed on this route",
                StatusCode::METHOD_NOT_ALLOWED,
                "POST is not allowed on /v1/tenants"
            )
        )
    );
    assert_eq!(r.metric("runner_tenants", "").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_every_tenant_exactly_once() {
    let token = Token::new();
    let (_r, admin) = start(&token, &["--tenants", "25"]);
    let mut seen = Vec::new();
    let mut path = "/v1/tenants?limit=10".to_string();
    let mut pages = 0;
    loop {
        let page = admin.get(&path).await.json();
        pages += 1;
        assert_eq!(page["total"], 25 + pages - 1, "{page}");
        for t in page["tenants"].as_array().unwrap() {
            seen.push(t["name"].as_str().unwrap().to_string());
        }
        // Changes between pages: one created before the cursor, one after.
        if pages == 1 {
            let res = admin
                .put_tenant(&format!("a{pages}"), json!({ "component": "default" }))
                .await;
            assert_eq!(res.status, StatusCode::CREATED);
        }
        if pages == 2 {
            let res = admin
                .put_tenant("zz", json!({ "component": "default" }))
                .await;
            assert_eq!(res.status, StatusCode::CREATED);
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/tenants?limit=10&cursor={next}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("t{i}")).collect();
    expected.push("zz".into());
    expected.sort();
    assert_eq!(
        seen, expected,
        "in name order, each once; a1 sorts before the cursor"
    );
    assert_eq!(pages, 3);
    let res = admin.get("/v1/tenants?limit=0").await;
    assert_eq!(
        res.json(),
        problem(
            "bad-request",
            "the request cannot be read",
            StatusCode::BAD_REQUEST,
            "limit must be a whole number from 1 to 1000, not \"0\""
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_under_load_fails_no_request_and_switches_versions() {
    let token = Token::new();
    let (r, admin) = start(&token, &["--tenants", "2"]);
    let hostile = upload_hostile(&admin).await;
    let res = admin
        .put_tenant("app", json!({ "component": "default" }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let stop = Arc::new(AtomicBool::new(false));
    let addr = r.addr;
    let drivers: Vec<_> = ["/t/app/hello", "/t/t0/hello", "/t/t1/kv/k", "/t/app/kv/k"]
        .into_iter()
        .flat_map(|path| [path, path])
        .map(|path| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut client = crate::harness::Client::connect(addr).await;
                let mut statuses = std::collections::BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let res = if path.ends_with("/hello") {
                        client.get(path).await
                    } else {
                        client.send(Method::PUT, path, b"v".to_vec()).await
                    };
                    *statuses.entry(res.status.as_u16()).or_insert(0u64) += 1;
                }
                (path, statuses)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0..6 {
        let component = if round % 2 == 0 { &hostile } else { "default" };
        let res = admin
            .put_tenant(
                "app",
                json!({ "component": component, "limits": { "fuel": 500_000_000 + round } }),
            )
            .await;
        assert_eq!(res.json()["change"], "updated", "round {round}");
        let expected = if round % 2 == 0 {
            "static="
        } else {
            "no route"
        };
        let residue = get(r.addr, "/t/app/residue").await.text();
        assert!(residue.starts_with(expected), "round {round}: {residue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for driver in drivers {
        let (path, statuses) = driver.await.unwrap();
        let ok = if path.ends_with("/hello") { 200 } else { 204 };
        assert_eq!(
            statuses.keys().copied().collect::<Vec<_>>(),
            vec![ok],
            "{path}: {statuses:?}"
        );
    }
    assert_eq!(
        r.metric("runner_tenant_changes_total", r#"change="updated""#)
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_changes_nothing_not_even_quotas() {
    let token = Token::new();
    let (r, admin) = start(&token, &["--tenants", "1"]);
    let res = admin
        .put_tenant(
            "app",
            json!({ "component": "default", "limits": { "max-keys": 3 } }),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    for key in ["a", "b"] {
        let res = request(
            r.addr,
            Method::PUT,
            &format!("/t/app/kv/{key}"),
            b"v".to_vec(),
        )
        .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    // Fewer keys, and no tables, which the component cannot be
    // instantiated without: the check fails after the namespace was
    // reopened under the new quotas.
    let res = admin
        .put_tenant(
            "app",
            json!({ "component": "default", "limits": { "max-keys": 1, "max-tables": 0 } }),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        res.text()
    );
    let res = request(r.addr, Method::PUT, "/t/app/kv/c", b"v".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
    let res = request(r.addr, Method::PUT, "/t/app/kv/d", b"v".to_vec()).await;
    assert_eq!(
        res.text(),
        "store error: quota-exceeded: the tenant holds 3 keys, the limit is 3"
    );
    let shown = admin.get("/v1/tenants/app").await.json();
    assert_eq!(shown["limits"]["max-keys"], 3);
}

/// A request whose tenant is removed with `purge` while its body is still
/// coming is told the tenant is gone (404), as one that came after would
/// be: the purge, waiting for the tenant's requests in flight, holds its
/// permits, and they are not the request's to be refused for (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_during_a_purge_is_told_the_tenant_is_gone() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let token = Token::new();
    let (r, admin) = start(&token, &["--tenants", "0"]);
    let hostile = upload_hostile(&admin).await;
    let document = json!({
        "component": hostile,
        "limits": { "max-tenant-in-flight": 2, "timeout": "5s" },
    });
    let res = admin.put_tenant("r", document).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    // In flight throughout: the purge waits for it.
    let addr = r.addr;
    let slow = tokio::spawn(async move { get(addr, "/t/r/sleep?ms=1500").await });
    // Named its tenant, and is sending its body.
    let mut late = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    late.write_all(
        b"PUT /t/r/kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\nab",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let purge = tokio::spawn(async move { admin.delete("/v1/tenants/r?purge=true").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !purge.is_finished(),
        "the purge waits for the request in flight"
    );
    late.write_all(b"cd").await.unwrap();
    let mut answer = Vec::new();
    late.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nunknown tenant \"r\"\n"),
        "{answer}"
    );
    assert_eq!(slow.await.unwrap().text(), "slept");
    let res = purge.await.unwrap();
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}
