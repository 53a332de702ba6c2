//! WASIp3 components (`wasi:http/handler@0.3.0`) served beside WASIp2 ones:
//! routing, the tenant's store and log, limits, traps and reuse, through
//! the p3 example guest (guest/p3).

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use system_tests::admin::{Admin, Token};

use crate::harness::{InProcess, Observed as _, Tenants, get, request};

/// A tenant on the p3 example guest, with extra TOML lines.
fn p3(tenants: Tenants, name: &str, extra: &str) -> Tenants {
    let path = env!("RUNNER_P3_GUEST");
    tenants.tenant(name, &format!("component = {path:?}\n{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_and_p3_tenants_are_served_side_by_side() {
    let t = p3(Tenants::new(), "three", "").default("two", "");
    let r = InProcess::start_with(&t, &[]);
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
    let r = InProcess::start_with(&t, &[]);
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
    let r = InProcess::start_with(&t, &[]);
    let res = request(r.addr, Method::PUT, "/t/small/kv/k", b"12345".to_vec()).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(res.text().starts_with("quota-exceeded: "), "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_guest_past_a_limit_or_trapping_fails_only_its_own_request() {
    let t = p3(Tenants::new(), "cpu", "fuel = 5000000\ntimeout = \"10s\"");
    let t = p3(t, "slow", "fuel = 100000000000\ntimeout = \"300ms\"").default("good", "");
    let r = InProcess::start_with(&t, &[]);

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
    let r = InProcess::start_with(&t, &[]);
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
    let r = InProcess::start_with(&t, &[]);
    let res = request(r.addr, Method::POST, "/t/three/log", b"hello log".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let line = r.wait_for_log("hello log");
    assert!(line.contains("tenant=three"), "{line}");
}

/// Sends `n` requests for `path` at once and returns each reply's status
/// and text, in order.
async fn at_once(r: &InProcess, path: &str, n: usize) -> Vec<(StatusCode, String)> {
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
    let r = InProcess::start_with(&t, &[]);
    // An instance exists; a burst that finds none starts several, as
    // each request that finds no room starts one.
    assert_eq!(get(r.addr, "/t/shared/count").await.text(), "1");
    let slept = vec![(StatusCode::OK, "slept 300 ms".to_string()); 8];
    assert_eq!(at_once(&r, "/t/shared/sleep?ms=300", 8).await, slept);
    assert_eq!(at_once(&r, "/t/alone/sleep?ms=300", 8).await, slept);
    // Eight requests waiting at once: one instance took them all, where
    // without concurrency each had its own.
    for (tenant, created, reused) in [("shared", 1.0, 8.0), ("alone", 8.0, 0.0)] {
        crate::harness::assert_instances(&r, tenant, created, reused).await;
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
    let r = InProcess::start_with(&t, &[]);
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
    let r = InProcess::start_with(&t, &[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_component_deploys_through_the_admin_api_and_says_what_it_exports() {
    let token = Token::new();
    let r = InProcess::start(&["--admin-token-file", token.path(), "--tenants", "1"]);
    let admin = Admin::new(r.admin, &token);
    let bytes = std::fs::read(env!("RUNNER_P3_GUEST")).unwrap();
    let uploaded = admin.put_component(bytes).await;
    assert_eq!(uploaded.status, StatusCode::CREATED);
    let digest = uploaded.json()["digest"].as_str().unwrap().to_string();
    let limits = json!({ "max-instance-concurrency": 16, "max-instance-reuse": 128 });
    let res = admin
        .put_tenant("three", json!({ "component": digest, "limits": limits }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let shown = admin.get("/v1/tenants/three").await.json();
    assert_eq!(shown["handler"], "wasi:http/handler@0.3.0");
    assert_eq!(shown["limits"]["max-instance-concurrency"], 16);
    let p2 = admin.get("/v1/tenants/t0").await.json();
    assert_eq!(p2["handler"], "wasi:http/incoming-handler@0.2");
    assert_eq!(get(r.addr, "/t/three/hello").await.text(), "hello from p3");
    // The limit's range is checked as for every other.
    let res = admin
        .put_tenant(
            "three",
            json!({ "component": digest, "limits": { "max-instance-concurrency": 0 } }),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json()["detail"],
        "limits: max-instance-concurrency must be greater than zero"
    );
}

async fn put(r: &InProcess, path: &str, body: &str) -> (StatusCode, String) {
    let res = request(r.addr, Method::PUT, path, body.as_bytes().to_vec()).await;
    (res.status, res.text())
}

async fn post(r: &InProcess, path: &str, body: &str) -> (StatusCode, String) {
    let res = request(r.addr, Method::POST, path, body.as_bytes().to_vec()).await;
    (res.status, res.text())
}

async fn read(r: &InProcess, path: &str) -> (StatusCode, String) {
    let res = get(r.addr, path).await;
    (res.status, res.text())
}

fn ok(text: &str) -> (StatusCode, String) {
    (StatusCode::OK, text.to_string())
}

fn done() -> (StatusCode, String) {
    (StatusCode::NO_CONTENT, String::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmcloud_keyvalue_reaches_the_same_data_as_wasi_keyvalue() {
    let t = p3(Tenants::new(), "a", "");
    let t = p3(t, "b", "");
    let r = InProcess::start_with(&t, &[]);
    assert_eq!(put(&r, "/t/a/kv/k", "from draft").await, done());
    assert_eq!(read(&r, "/t/a/wc/get/k").await, ok("from draft"));
    assert_eq!(put(&r, "/t/a/wc/set/j", "from wasmcloud").await, done());
    assert_eq!(read(&r, "/t/a/kv/j").await, ok("from wasmcloud"));
    assert_eq!(read(&r, "/t/a/wc/exists/j").await, ok("true"));
    assert_eq!(post(&r, "/t/a/wc/incr/n?by=-5", "").await, ok("-5"));
    assert_eq!(
        post(&r, "/t/a/wc/get-many", "k\nnope\nn").await,
        ok("k=from draft\nnope absent\nn=-5")
    );
    assert_eq!(
        request(r.addr, Method::DELETE, "/t/a/wc/delete/k", vec![])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        read(&r, "/t/a/kv/k").await,
        (StatusCode::NOT_FOUND, "key not found".into())
    );
    // Another tenant sees none of it, through either package.
    assert_eq!(read(&r, "/t/b/wc/exists/j").await, ok("false"));
    assert_eq!(read(&r, "/t/b/wc/list").await, ok("cursor: none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_ttl_is_gone_from_every_read_path_and_gives_its_quota_back() {
    let t = p3(Tenants::new(), "a", "max-keys = 2");
    let r = InProcess::start_with(&t, &[]);
    assert_eq!(put(&r, "/t/a/wc/set/brief?ttl-ms=300", "x").await, done());
    assert_eq!(put(&r, "/t/a/wc/set/kept", "y").await, done());
    assert_eq!(
        put(&r, "/t/a/wc/set/third", "z").await,
        (StatusCode::INSUFFICIENT_STORAGE, "quota-exceeded".into())
    );
    assert_eq!(read(&r, "/t/a/wc/get/brief").await, ok("x"));
    assert_eq!(read(&r, "/t/a/kv/brief").await, ok("x"));
    assert_eq!(
        read(&r, "/t/a/wc/list").await,
        ok("brief\nkept\ncursor: none")
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let gone = (StatusCode::NOT_FOUND, "key not found".to_string());
    assert_eq!(read(&r, "/t/a/wc/get/brief").await, gone);
    assert_eq!(read(&r, "/t/a/kv/brief").await, gone);
    assert_eq!(read(&r, "/t/a/wc/exists/brief").await, ok("false"));
    assert_eq!(
        post(&r, "/t/a/wc/get-many", "brief\nkept").await,
        ok("brief absent\nkept=y")
    );
    assert_eq!(read(&r, "/t/a/wc/list").await, ok("kept\ncursor: none"));
    assert_eq!(
        read(&r, "/t/a/wc/current/brief").await,
        (StatusCode::NOT_FOUND, "absent".into())
    );
    // Its key no longer counts: the quota has room again, and the metric
    // shows what is held.
    assert_eq!(put(&r, "/t/a/wc/set/third", "z").await, done());
    assert_eq!(r.metric("runner_kv_keys", "tenant=\"a\"").await, 2.0);
    // A plain write of an expiring key makes it permanent again.
    assert_eq!(
        request(r.addr, Method::DELETE, "/t/a/wc/delete/third", vec![])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(put(&r, "/t/a/wc/set/again?ttl-ms=200", "1").await, done());
    assert_eq!(put(&r, "/t/a/kv/again", "2").await, done());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(read(&r, "/t/a/wc/get/again").await, ok("2"));
    // Expiry bounds are checked.
    for bad in ["0", "315360000001"] {
        assert_eq!(
            put(&r, &format!("/t/a/wc/set/k?ttl-ms={bad}"), "v").await,
            (StatusCode::BAD_REQUEST, "invalid-argument".into()),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_reclaimed_in_the_background() {
    let t = p3(Tenants::new(), "a", "");
    let r = InProcess::start_with(&t, &[]);
    for i in 0..50 {
        assert_eq!(
            put(&r, &format!("/t/a/wc/set/k{i}?ttl-ms=100"), "v").await,
            done()
        );
    }
    assert_eq!(r.metric("runner_kv_keys", "tenant=\"a\"").await, 50.0);
    // No request touches the tenant meanwhile: the reaper removes them.
    r.wait_for_metric("runner_kv_keys", "tenant=\"a\"", 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_not_exists_lets_exactly_one_writer_in() {
    let t = p3(Tenants::new(), "a", "max-tenant-in-flight = 100");
    let r = InProcess::start_with(&t, &[]);
    let writers = (0..20).map(|i| {
        let path = "/t/a/wc/set/lock?if-not-exists";
        let addr = r.addr;
        async move { request(addr, Method::PUT, path, format!("w{i}").into_bytes()).await }
    });
    let replies = futures::future::join_all(writers).await;
    let won: Vec<_> = replies
        .iter()
        .filter(|res| res.status == StatusCode::NO_CONTENT)
        .collect();
    assert_eq!(won.len(), 1);
    let lost = replies
        .iter()
        .filter(|res| {
            (res.status, res.text())
                == (
                    StatusCode::PRECONDITION_FAILED,
                    "precondition-failed".into(),
                )
        })
        .count();
    assert_eq!(lost, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_swaps_race_exactly_and_catch_what_a_value_check_misses() {
    let t = p3(Tenants::new(), "a", "max-tenant-in-flight = 100");
    let r = InProcess::start_with(&t, &[]);
    let incr = (0..40).map(|_| {
        let addr = r.addr;
        async move { request(addr, Method::POST, "/t/a/wc/cas-incr/n", vec![]).await }
    });
    let mut sums: Vec<u64> = futures::future::join_all(incr)
        .await
        .into_iter()
        .map(|res| {
            assert_eq!(res.status, StatusCode::OK, "{}", res.text());
            res.text().parse().unwrap()
        })
        .collect();
    sums.sort();
    // Each swap landed once, on the value the one before it left.
    assert_eq!(sums, (1..=40).collect::<Vec<u64>>());
    assert_eq!(read(&r, "/t/a/wc/get/n").await, ok("40"));

    // A -> B -> A: the value is back, the version is not.
    assert_eq!(put(&r, "/t/a/wc/set/k", "a").await, done());
    let (status, seen) = read(&r, "/t/a/wc/current/k").await;
    assert_eq!(status, StatusCode::OK);
    let (version, value) = seen.split_once('\n').unwrap();
    assert_eq!(value, "a");
    assert_eq!(put(&r, "/t/a/wc/set/k", "b").await, done());
    assert_eq!(put(&r, "/t/a/wc/set/k", "a").await, done());
    let (status, now) = put(&r, &format!("/t/a/wc/swap/k?version={version}"), "c").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (newer, value) = now.split_once('\n').unwrap();
    assert_ne!(newer, version);
    assert_eq!(value, "a");
    assert_eq!(put(&r, "/t/a/wc/swap/k?value=a", "c").await, ok("swapped"));
    assert_eq!(
        put(&r, &format!("/t/a/wc/swap/k?version={newer}"), "d")
            .await
            .0,
        StatusCode::CONFLICT
    );
    // A version this store never made, and a swap with no precondition.
    assert_eq!(
        put(&r, "/t/a/wc/swap/k?version=junk", "d").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        put(&r, "/t/a/wc/swap/k", "d").await,
        (StatusCode::BAD_REQUEST, "invalid-argument".into())
    );
    assert_eq!(
        put(&r, "/t/a/wc/swap/absent?value=x", "d").await,
        (StatusCode::CONFLICT, "absent".into())
    );
    assert_eq!(read(&r, "/t/a/wc/get/k").await, ok("c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_listing_pages_by_cursor_in_key_order() {
    let t = p3(Tenants::new(), "a", "max-page-keys = 10");
    let r = InProcess::start_with(&t, &[]);
    let mut expected = Vec::new();
    for i in 0..25 {
        let key = format!("user/{i:02}");
        assert_eq!(put(&r, &format!("/t/a/wc/set/{key}"), "v").await, done());
        expected.push(key);
    }
    for i in 0..10 {
        assert_eq!(
            put(&r, &format!("/t/a/wc/set/other/{i}"), "v").await,
            done()
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/t/a/wc/list?prefix=user/&cursor={c}"),
            None => "/t/a/wc/list?prefix=user/".to_string(),
        };
        let (status, body) = read(&r, &path).await;
        assert_eq!(status, StatusCode::OK);
        let mut lines: Vec<&str> = body.lines().collect();
        let last = lines.pop().unwrap();
        assert!(lines.len() <= 10, "{body}");
        seen.extend(lines.iter().map(|k| k.to_string()));
        pages += 1;
        match last.strip_prefix("cursor: ").unwrap() {
            "none" => break,
            next => cursor = Some(next.to_string()),
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
    assert_eq!(
        read(&r, "/t/a/wc/list?prefix=nobody/").await,
        ok("cursor: none")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sees_a_typed_error_for_each_limit() {
    let t = p3(
        Tenants::new(),
        "a",
        "max-value-bytes = 4\nmax-key-bytes = 8",
    );
    let r = InProcess::start_with(&t, &[]);
    let quota = (
        StatusCode::INSUFFICIENT_STORAGE,
        "quota-exceeded".to_string(),
    );
    assert_eq!(put(&r, "/t/a/wc/set/k", "12345").await, quota);
    assert_eq!(put(&r, "/t/a/wc/set/a-long-key", "1").await, quota);
    assert_eq!(put(&r, "/t/a/wc/swap/k?value=1", "12345").await, quota);
    assert_eq!(put(&r, "/t/a/wc/set/k", "abcd").await, done());
    // Not a number: the increment's argument is invalid.
    assert_eq!(
        post(&r, "/t/a/wc/incr/k", "").await,
        (StatusCode::BAD_REQUEST, "invalid-argument".into())
    );
}

/// The data directory keeps an expiry with its value: a key set with
/// `ttl-ms` survives a restart until its time, and not past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_keeps_an_expiry_across_a_restart() {
    let dir = system_tests::TempDir::new();
    let data = dir.path.join("data");
    let t = p3(Tenants::new(), "a", "");
    let args = ["--data-dir", data.to_str().expect("a UTF-8 path")];
    let r = InProcess::start_with(&t, &args);
    assert_eq!(put(&r, "/t/a/wc/set/k?ttl-ms=3600000", "v").await, done());
    assert_eq!(put(&r, "/t/a/wc/set/brief?ttl-ms=300", "b").await, done());
    drop(r);
    crate::harness::until_unlocked(&data).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let r = InProcess::start_with(&t, &args);
    assert_eq!(read(&r, "/t/a/wc/exists/k").await, ok("true"));
    assert_eq!(read(&r, "/t/a/wc/exists/brief").await, ok("false"));
    // Everything else works there, versions included.
    assert_eq!(
        put(&r, "/t/a/wc/set/k?if-not-exists", "v").await.0,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(put(&r, "/t/a/wc/set/k", "v").await, done());
    assert_eq!(put(&r, "/t/a/wc/swap/k?value=v", "w").await, ok("swapped"));
    assert_eq!(
        read(&r, "/t/a/wc/list?prefix=k").await,
        ok("k\ncursor: none")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_guest_has_no_network() {
    let t = p3(Tenants::new(), "a", "");
    let r = InProcess::start_with(&t, &[]);
    assert_eq!(
        read(&r, "/t/a/fetch").await,
        ok("http: ErrorCode::HttpRequestDenied\ntcp: ErrorCode::AccessDenied")
    );
}

/// A WASIp3 tenant whose every request answers at once and leaves a task
/// running, in instances that each take one request (so each new request
/// needs a new instance), holds no more of the WASIp3 pool than its
/// max-tenant-in-flight: past that its own requests get 429, while a
/// WASIp3 neighbour is served and a WASIp2 neighbour keeps its kept
/// instance (a full WASIp3 pool evicts nothing from the WASIp2 one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasip3_tenant_holds_no_more_instances_than_its_in_flight_cap() {
    let hostile = "max-instance-concurrency = 4\nmax-instance-reuse = 1\n\
                   max-tenant-in-flight = 10\ntimeout = \"3s\"";
    let t = p3(Tenants::new(), "hostile", hostile);
    let t = p3(t, "neighbour", "").default(
        "two",
        "max-instance-reuse = 1000\ninstance-idle-timeout = \"1h\"",
    );
    let r = InProcess::start_with(&t, &["--pool-size", "100"]);
    assert_eq!(get(r.addr, "/t/two/hello").await.text(), "hello");
    let (mut served, mut refused) = (0, 0);
    let started = std::time::Instant::now();
    for _ in 0..15 {
        for (status, text) in at_once(&r, "/t/hostile/linger?ms=60000", 10).await {
            match status {
                StatusCode::OK => served += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(
                        text,
                        "too many requests: tenant hostile already has 10 instances running \
                         (its max-tenant-in-flight)"
                    );
                    refused += 1;
                }
                other => panic!("{other}: {text}"),
            }
        }
        let neighbour = get(r.addr, "/t/neighbour/hello").await;
        assert_eq!(
            (neighbour.status, neighbour.text().as_str()),
            (StatusCode::OK, "hello from p3")
        );
    }
    // Its 10 instances linger until their 3 s deadlines: 10 more may
    // start in each 3 s.
    let windows = (started.elapsed().as_secs_f64() / 3.0).ceil() as usize;
    assert!(
        served <= 10 * (windows + 1) && served + refused == 150,
        "{served} served in {:?}",
        started.elapsed()
    );
    assert_eq!(get(r.addr, "/t/two/hello").await.text(), "hello");
    crate::harness::assert_instances(&r, "two", 1.0, 1.0).await;
}

/// `GET path` on a connection of its own, read raw until the server closes
/// it (or 10 s), and how long that took.
async fn read_raw(r: &InProcess, path: &str) -> (String, std::time::Duration) {
    let started = std::time::Instant::now();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = crate::harness::raw_for(r.addr, request.as_bytes(), Duration::from_secs(10)).await;
    (answer, started.elapsed())
}

/// A body the guest never finishes, in an instance that serves several
/// requests, is cut at its request's deadline (no final chunk) and counted
/// past it: not ended cleanly seconds later, when the instance goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_body_in_a_shared_instance_is_cut_at_its_deadline() {
    let limits = "max-instance-concurrency = 4\nmax-instance-reuse = 100\ntimeout = \"1s\"";
    let t = p3(Tenants::new(), "shared", limits);
    let r = InProcess::start_with(&t, &[]);
    let (answer, took) = read_raw(&r, "/t/shared/unfinished").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("begun\n"), "{answer}");
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "ended as if whole: {answer:?}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "cut after {took:?}"
    );
    r.wait_for_metric(
        "runner_requests_total",
        r#"tenant="shared",outcome="deadline_exceeded""#,
        1.0,
    )
    .await;
}

/// A whole response from a guest that leaves a task running after it goes
/// out when it is whole, counted ok, not held until the task ends (nor cut
/// when the task runs into the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_response_goes_out_while_the_guest_lingers() {
    let t = p3(Tenants::new(), "lingers", "timeout = \"3s\"");
    let r = InProcess::start_with(&t, &[]);
    let (answer, took) = read_raw(&r, "/t/lingers/linger?ms=60000").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with("lingering\r\n0\r\n\r\n"),
        "not whole: {answer:?}"
    );
    assert!(took < Duration::from_secs(2), "held for {took:?}");
    r.wait_for_metric(
        "runner_requests_total",
        r#"tenant="lingers",outcome="ok""#,
        1.0,
    )
    .await;
}

/// A purge leaves nothing behind, even where a task of the removed tenant
/// still writes after its response: the purge waits for it (or, past the
/// grace, refuses its writes), so a tenant made again under the name finds
/// nothing, before a restart and after (the data directory), in one
/// instance per request and in a shared instance alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_leaves_no_late_write_behind() {
    let token = Token::new();
    let dir = system_tests::TempDir::new();
    let data = dir.path.join("data");
    let args = [
        "--admin-token-file",
        token.path(),
        "--data-dir",
        data.to_str().unwrap(),
        "--tenants",
        "0",
    ];
    let r = InProcess::start(&args);
    let admin = Admin::new(r.admin, &token);
    let bytes = std::fs::read(env!("RUNNER_P3_GUEST")).unwrap();
    let digest = admin.put_component(bytes).await.json()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for (i, limits) in [
        json!({ "timeout": "5s" }),
        json!({ "timeout": "5s", "max-instance-concurrency": 4 }),
    ]
    .into_iter()
    .enumerate()
    {
        let document = json!({ "component": digest, "limits": limits });
        let res = admin.put_tenant("r", document.clone()).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        let key = format!("ghost{i}");
        let answer = get(r.addr, &format!("/t/r/write-later?ms=700&key={key}")).await;
        assert_eq!(answer.text(), "will write");
        let res = admin.delete("/v1/tenants/r?purge=true").await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        let res = admin.put_tenant("r", document).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let read = get(r.addr, &format!("/t/r/kv/{key}")).await;
        assert_eq!(read.status, StatusCode::NOT_FOUND, "{}", read.text());
        let res = admin.delete("/v1/tenants/r").await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    }
    drop(r);
    crate::harness::until_unlocked(&data).await;
    let r = InProcess::start(&args);
    let admin = Admin::new(r.admin, &token);
    let bytes = std::fs::read(env!("RUNNER_P3_GUEST")).unwrap();
    assert!(admin.put_component(bytes).await.status.is_success());
    let document = json!({ "component": digest });
    assert_eq!(
        admin.put_tenant("r", document).await.status,
        StatusCode::CREATED
    );
    for key in ["ghost0", "ghost1"] {
        let read = get(r.addr, &format!("/t/r/kv/{key}")).await;
        assert_eq!(read.status, StatusCode::NOT_FOUND, "{key}: {}", read.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_instance_grown_past_max_reused_memory_takes_no_new_requests() {
    let t = p3(
        Tenants::new(),
        "shared",
        "max-instance-concurrency = 4\nmax-instance-reuse = 100\nmax-reused-memory = \"4MiB\"",
    );
    let r = InProcess::start_with(&t, &[]);
    assert_eq!(get(r.addr, "/t/shared/count").await.text(), "1");
    assert_eq!(get(r.addr, "/t/shared/count").await.text(), "2");
    // 1,088 KiB to start with, and 4 MiB kept: past the limit once
    // answered, so the next request finds a new instance.
    assert_eq!(
        get(r.addr, "/t/shared/grow?kib=4096").await.text(),
        "kept 4096 KiB"
    );
    assert_eq!(get(r.addr, "/t/shared/count").await.text(), "1");
    crate::harness::assert_instances(&r, "shared", 2.0, 2.0).await;
    assert_eq!(
        r.metric("runner_instances_recycled_total", "tenant=\"shared\"")
            .await,
        1.0
    );
}
