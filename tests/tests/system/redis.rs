//! Several runners on one real `redis-server` (`--store redis://...`), as
//! a fleet behind a load balancer runs: data written through one is read
//! through the other, counters and quotas hold across both, an outage of
//! Redis costs only the calls that need it, and tenants deployed through
//! one runner's admin API are served by the other.
//!
//! Skipped where `redis-server` is not on PATH, unless
//! `RUNNER_REQUIRE_REDIS=1` (CI sets it).

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use system_tests::admin::{Admin, Token};
use system_tests::http::{get, request};
use system_tests::probe;
use system_tests::redis::{Cluster, Redis};
use system_tests::tenants::{hostile_guest, p3_guest};
use system_tests::{Launch, Runner, loadgen};

/// Two runners on `redis`, with `args` each.
fn pair(redis: &Redis, args: &[&str]) -> [Runner; 2] {
    let url = redis.url();
    let mut all = vec!["--store", url.as_str()];
    all.extend_from_slice(args);
    [Runner::start(&all), Runner::start(&all)]
}

/// Two runners on `redis`, one tenant each, their admin APIs under
/// `token`.
fn admin_pair(redis: &Redis, token: &Token) -> [Runner; 2] {
    pair(
        redis,
        &["--tenants", "1", "--admin-token-file", token.path()],
    )
}

async fn put(r: &Runner, path: &str, body: &[u8]) -> StatusCode {
    request(r.addr, Method::PUT, path, body.to_vec())
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_share_data_counters_quotas_and_nothing_across_tenants() {
    let Some(redis) = Redis::start() else { return };
    let [a, b] = pair(&redis, &["--tenants", "2", "--max-keys", "20"]);

    // A write through one is read through the other, and a delete likewise.
    assert_eq!(
        put(&a, "/t/t0/kv/greeting", b"hi").await,
        StatusCode::NO_CONTENT
    );
    let read = get(b.addr, "/t/t0/kv/greeting").await;
    assert_eq!((read.status, read.text().as_str()), (StatusCode::OK, "hi"));
    let gone = request(b.addr, Method::DELETE, "/t/t0/kv/greeting", Vec::new()).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(a.addr, "/t/t0/kv/greeting").await.status,
        StatusCode::NOT_FOUND
    );

    // Increments spread over both runners add up exactly.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            tokio::spawn(async move {
                for _ in 0..50 {
                    let res = request(addr, Method::POST, "/t/t0/incr/hits?by=3", Vec::new()).await;
                    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(get(b.addr, "/t/t0/kv/hits").await.text(), "1200");

    // t1's quota of 20 keys holds across both: 30 new keys written through
    // the two at once, exactly 20 stored, the rest refused by the quota.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            tokio::spawn(async move {
                request(addr, Method::PUT, &format!("/t/t1/kv/k{i}"), b"v".to_vec()).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let res = task.await.unwrap();
        if res.status == StatusCode::INSUFFICIENT_STORAGE {
            assert!(
                res.text()
                    .starts_with("store error: quota-exceeded: the tenant holds 20 keys"),
                "{}",
                res.text()
            );
        }
        statuses.push(res.status);
    }
    let stored = statuses
        .iter()
        .filter(|s| **s == StatusCode::NO_CONTENT)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::INSUFFICIENT_STORAGE)
        .count();
    assert_eq!((stored, refused), (20, 10), "{statuses:?}");

    // Tenants stay apart on one Redis: t1 sees none of t0's keys, and t0
    // none of t1's.
    assert_eq!(
        get(a.addr, "/t/t1/kv/hits").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(b.addr, "/t/t0/kv/k0").await.status,
        StatusCode::NOT_FOUND
    );
    let listed = get(b.addr, "/t/t0/keys").await.json();
    assert_eq!(listed["keys"], serde_json::json!(["hits"]));
    let listed = get(a.addr, "/t/t1/keys").await.json();
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_verify_across_both_runners_finds_no_violation() {
    let Some(redis) = Redis::start() else { return };
    let [a, b] = pair(&redis, &["--tenants", "4"]);
    let targets = format!("http://{},http://{}", a.addr, b.addr);
    let run = loadgen::run(&[
        "--target",
        &targets,
        "--tenants",
        "4",
        "--mix",
        "get=50,set=30,delete=5,incr=15",
        "--keys",
        "50",
        "-c",
        "8",
        "--duration",
        "3s",
        "--warmup",
        "0s",
        "--verify",
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let verify = &run.report["verify"];
    assert_eq!(verify["lost_writes"], 0, "{verify}");
    assert_eq!(verify["stale_reads"], 0, "{verify}");
    assert_eq!(verify["bad_increments"], 0, "{verify}");
    assert!(verify["checked_reads"].as_u64().unwrap() > 100, "{verify}");
    assert_eq!(run.report["errors"], 0, "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_costs_store_calls_only_and_service_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let url = redis.url();
    let r = Runner::start(&[
        "--store",
        &url,
        "--tenants",
        "2",
        "--store-timeout",
        "200ms",
    ]);
    assert_eq!(put(&r, "/t/t0/kv/k", b"v").await, StatusCode::NO_CONTENT);
    let ready = get(r.admin, "/readyz").await;
    assert_eq!(
        (ready.status, ready.text()),
        (StatusCode::OK, "ready".into())
    );
    let target = format!("http://{}", r.addr);
    let load = std::thread::spawn(move || {
        loadgen::run(&[
            "--target",
            &target,
            "--tenants",
            "2",
            "--mix",
            "get=50,set=30,hello=20",
            "-c",
            "4",
            "--duration",
            "4s",
            "--warmup",
            "0s",
            "--keys",
            "20",
        ])
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.stop();

    // Key-value calls fail with the store's error within the store
    // timeout; requests that do not touch the store are served.
    let started = Instant::now();
    let res = get(r.addr, "/t/t0/kv/k").await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        res.text()
    );
    assert!(
        res.text().starts_with("store error: store-unavailable: "),
        "{}",
        res.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(get(r.addr, "/t/t1/hello").await.text(), "hello");
    // Not ready while the store is away, and why.
    let ready = get(r.admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready
            .text()
            .starts_with("not ready: the store cannot be reached: store-unavailable: redis"),
        "{}",
        ready.text()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Back (empty: it keeps nothing on disk), and the runner with it, by
    // itself.
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while put(&r, "/t/t0/kv/k", b"again").await != StatusCode::NO_CONTENT {
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(r.addr, "/t/t0/kv/k").await.text(), "again");
    let ready = get(r.admin, "/readyz").await;
    assert_eq!(
        (ready.status, ready.text()),
        (StatusCode::OK, "ready".into())
    );
    let run = load.join().unwrap();
    let by_status = run.report["errors_by_status"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        by_status.keys().all(|s| s == "503"),
        "only store errors: {}",
        run.stdout
    );
    assert!(
        by_status.contains_key("503"),
        "the outage was seen: {}",
        run.stdout
    );
    assert_eq!(get(r.admin, "/healthz").await.status, StatusCode::OK);
    // Counted for the operator's alert.
    let failed = probe::metric(r.admin, "runner_store_unavailable_total", "").await;
    assert!(failed >= 1.0, "runner_store_unavailable_total {failed}");
}

/// Polls `path` on `r` until it answers `status`; how long that took.
async fn until(r: &Runner, path: &str, status: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        if get(r.addr, path).await.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{path} on {} never answered {status}",
            r.addr
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_deployed_through_one_runner_are_served_by_every_runner() {
    let Some(redis) = Redis::start() else { return };
    let token = Token::new();
    let [a, b] = admin_pair(&redis, &token);
    let (api_a, api_b) = (Admin::new(a.admin, &token), Admin::new(b.admin, &token));

    // Deployed through a: b serves it within a second.
    let res = api_a
        .put_tenant("app", serde_json::json!({ "component": "default" }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let took = until(&b, "/t/app/hello", StatusCode::OK).await;
    assert!(took < Duration::from_secs(1), "b served it after {took:?}");
    assert_eq!(api_b.get("/v1/tenants/app").await.status, StatusCode::OK);

    // An uploaded component travels through Redis too: b compiles it from
    // there (compiling may take longer than a second on a slow machine).
    let bytes = std::fs::read(hostile_guest()).unwrap();
    let res = api_a.put_component(bytes).await;
    assert!(res.status.is_success(), "{}", res.text());
    let digest = res.json()["digest"].as_str().unwrap().to_string();
    let res = api_a
        .put_tenant(
            "app",
            serde_json::json!({ "component": digest, "limits": { "max-keys": 7 } }),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    until(&b, "/t/app/residue", StatusCode::OK).await;
    let shown = api_b.get("/v1/tenants/app").await.json();
    assert_eq!(shown["component"], digest.as_str());
    assert_eq!(shown["limits"]["max-keys"], 7);

    // A runner that joins later starts with the whole fleet.
    let url = redis.url();
    let late = Runner::start(&["--store", &url, "--tenants", "1"]);
    assert_eq!(
        get(late.addr, "/t/app/residue").await.status,
        StatusCode::OK
    );

    // Removed through b: a stops serving it within a second, and so does
    // the late one.
    let res = api_b.delete("/v1/tenants/app").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        res.json(),
        serde_json::json!({ "removed": "app", "purged": false })
    );
    let took = until(&a, "/t/app/hello", StatusCode::NOT_FOUND).await;
    assert!(took < Duration::from_secs(1), "a served it {took:?} after");
    until(&late, "/t/app/hello", StatusCode::NOT_FOUND).await;
    // The tenants each runner's own flags made are its own.
    assert_eq!(get(late.addr, "/t/t0/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_loses_redis_catches_up_with_changes_made_meanwhile() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let token = Token::new();
    let [a, b] = admin_pair(&redis, &token);
    let api_a = Admin::new(a.admin, &token);
    let res = api_a
        .put_tenant("before", serde_json::json!({ "component": "default" }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    until(&b, "/t/before/hello", StatusCode::OK).await;

    // Redis restarts empty (it keeps nothing on disk here): both runners'
    // subscriptions drop, and their resync finds the fleet as Redis now
    // has it, without "before". A deploy made once it is back reaches b.
    redis.stop();
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = api_a
            .put_tenant("after", serde_json::json!({ "component": "default" }))
            .await;
        if res.status == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "{}: {}", res.status, res.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until(&b, "/t/after/hello", StatusCode::OK).await;
    until(&b, "/t/before/hello", StatusCode::NOT_FOUND).await;
    until(&a, "/t/before/hello", StatusCode::NOT_FOUND).await;
    assert_eq!(get(b.addr, "/t/t0/hello").await.text(), "hello");
}

#[test]
fn a_store_url_and_a_data_dir_together_are_refused_at_start_up() {
    let exit = Runner::run_args_to_exit(&[
        "--store",
        "redis://:secret@127.0.0.1:1",
        "--data-dir",
        "/tmp/unused",
    ]);
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains(
            "data-dir keeps the in-memory store on this machine's disk, and store \
             redis://:***@127.0.0.1:1 keeps data in Redis: give one or the other"
        ),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("secret"), "{}", exit.stderr);
    let exit = Runner::run_args_to_exit(&["--store", "redis://127.0.0.1:1"]);
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("reaching the store at redis://127.0.0.1:1: store-unavailable: "),
        "{}",
        exit.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_as_one_store_for_data_and_deployments() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let token = Token::new();
    // a names every node, b one seed, by its scheme.
    let (all, seed) = (cluster.url(), cluster.seed_url());
    let rest = ["--tenants", "3", "--admin-token-file", token.path()];
    let a = Runner::start(&[&["--store", all.as_str()][..], &rest].concat());
    let b = Runner::start(&[&["--store", seed.as_str()][..], &rest].concat());
    // Tenants spread over the cluster's slots; each reads back through the
    // other runner what one wrote.
    for t in 0..3 {
        let path = format!("/t/t{t}/kv/k");
        assert_eq!(
            put(&a, &path, format!("v{t}").as_bytes()).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(get(b.addr, &path).await.text(), format!("v{t}"));
        let res = request(
            b.addr,
            Method::POST,
            &format!("/t/t{t}/incr/n?by=2"),
            Vec::new(),
        )
        .await;
        assert_eq!(res.text(), "2");
        let listed = get(a.addr, &format!("/t/t{t}/keys")).await.json();
        assert_eq!(listed["keys"], serde_json::json!(["k", "n"]));
    }
    let res = Admin::new(a.admin, &token)
        .put_tenant("app", serde_json::json!({ "component": "default" }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    until(&b, "/t/app/hello", StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_reaches_a_tls_only_redis_that_the_system_store_trusts() {
    let Some(redis) = Redis::start_tls() else {
        return;
    };
    let ca = redis.ca.clone().expect("a TLS server's CA");
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    // rustls-native-certs reads SSL_CERT_FILE as the system's store would.
    let trusted = Launch {
        env: vec![("SSL_CERT_FILE".into(), ca.to_str().unwrap().into())],
        ..Launch::default()
    };
    let r = Runner::launch(None, &["--store", &url, "--tenants", "1"], trusted);
    assert_eq!(
        put(&r, "/t/t0/kv/k", b"secret").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get(r.addr, "/t/t0/kv/k").await.text(), "secret");
    // Without the CA the certificate is refused, and the start-up says so.
    let exit = Runner::run_args_to_exit(&["--store", &url]);
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("reaching the store at rediss://"),
        "{}",
        exit.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_acknowledged_change_wins_even_where_a_runner_lags() {
    let Some(redis) = Redis::start() else { return };
    let token = Token::new();
    let [a, _b] = admin_pair(&redis, &token);
    let api = Admin::new(a.admin, &token);
    let v1 = serde_json::json!({ "component": "default", "limits": { "fuel": 5_000_000 } });
    assert_eq!(
        api.put_tenant("x", v1.clone()).await.status,
        StatusCode::CREATED
    );
    let kept = |name: &str| redis.cli(&["hget", "runner:fleet:tenants", name]);
    let as_v1 = kept("x");
    assert!(as_v1.contains(r#""fuel":5000000"#), "{as_v1}");

    // A peer's change that runner a has not followed yet (written behind
    // its back, with no announcement): Redis holds another version.
    redis.cli(&[
        "hset",
        "runner:fleet:tenants",
        "x",
        &as_v1.trim().replace("5000000", "7000000"),
    ]);
    // The same deploy again: unchanged on a, and still written, so Redis,
    // and every runner after it, ends with what was acknowledged last.
    let res = api.put_tenant("x", v1).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["change"], "unchanged");
    assert_eq!(kept("x"), as_v1);

    // A deployment only Redis holds is still the fleet's to remove.
    redis.cli(&["hset", "runner:fleet:tenants", "y", as_v1.trim()]);
    let res = api.delete("/v1/tenants/y").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(kept("y").trim(), "");
}

/// A runner following a deploy of a large component it has not compiled
/// compiles it beside its work, not in its way: meanwhile it serves its
/// tenants, answers /healthz, and takes changes through its own admin API
/// (the change lock is not held through the compile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_compiling_a_deploy_keeps_serving_and_taking_changes() {
    let Some(redis) = Redis::start() else { return };
    let token = Token::new();
    let [a, b] = admin_pair(&redis, &token);
    let (api_a, api_b) = (Admin::new(a.admin, &token), Admin::new(b.admin, &token));
    let res = api_a
        .put_component(crate::compile::large_component(150_000))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let digest = res.json()["digest"].as_str().unwrap().to_string();
    let res = api_a
        .put_tenant("large", serde_json::json!({ "component": digest }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    // b compiles it now; until it serves it, b must keep answering.
    let started = Instant::now();
    let (mut slowest, mut changes) = (Duration::ZERO, 0);
    while get(b.addr, "/t/large/").await.status == StatusCode::NOT_FOUND {
        let asked = Instant::now();
        assert_eq!(get(b.addr, "/t/t0/hello").await.text(), "hello");
        assert_eq!(get(b.admin, "/healthz").await.status, StatusCode::OK);
        let res = api_b
            .put_tenant(
                &format!("side{changes}"),
                serde_json::json!({ "component": "default" }),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        changes += 1;
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // Its handler traps: the tenant runs, and its requests fail alone.
    assert_eq!(
        get(b.addr, "/t/large/").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(took > Duration::from_secs(3), "b compiled it in {took:?}");
    assert!(
        slowest < took / 3,
        "a round waited {slowest:?} ({changes} changes made) while b compiled for {took:?}"
    );
}

/// A component uploaded through one runner can be deployed through
/// another (read back from Redis); it cannot be deleted while a tenant of
/// the fleet runs it; once deleted through one runner it cannot be deployed
/// through another that still holds it compiled, since the fleet could not
/// read it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_are_the_fleets_to_deploy_and_delete_through_any_runner() {
    let Some(redis) = Redis::start() else { return };
    let token = Token::new();
    let [a, b] = admin_pair(&redis, &token);
    let (api_a, api_b) = (Admin::new(a.admin, &token), Admin::new(b.admin, &token));
    let bytes = std::fs::read(hostile_guest()).unwrap();
    let res = api_a.put_component(bytes).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let digest = res.json()["digest"].as_str().unwrap().to_string();

    let document = serde_json::json!({ "component": digest });
    let res = api_b.put_tenant("app", document.clone()).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    until(&a, "/t/app/hello", StatusCode::OK).await;
    for api in [&api_a, &api_b] {
        let res = api.delete(&format!("/v1/components/{digest}")).await;
        assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text());
    }

    let res = api_b.delete("/v1/tenants/app").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    until(&a, "/t/app/hello", StatusCode::NOT_FOUND).await;
    let res = api_b.delete(&format!("/v1/components/{digest}")).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    // a still holds it compiled (until its grace), but Redis has it no
    // more: a deploy on it would name what no runner could read back.
    let res = api_a.put_tenant("app", document).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
    assert_eq!(
        res.json()["detail"],
        format!(
            "no component {digest}: it was deleted or released meanwhile (no tenant ran it for \
             --component-grace); upload it again"
        )
    );
    let res = api_a.delete(&format!("/v1/components/{digest}")).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let res = api_b.delete(&format!("/v1/components/{digest}")).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
}

/// A purge through one runner leaves nothing behind even where a task of
/// the removed tenant, on another runner, still writes after it: the
/// purge advances the tenant's generation in Redis first, and that
/// runner's write of the earlier one is refused, so the tenant made again
/// under the name finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_through_one_runner_stops_a_late_write_from_another() {
    let Some(redis) = Redis::start() else { return };
    let token = Token::new();
    let [a, b] = admin_pair(&redis, &token);
    let api_a = Admin::new(a.admin, &token);
    let res = api_a
        .put_component(std::fs::read(p3_guest()).unwrap())
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let digest = res.json()["digest"].as_str().unwrap().to_string();
    let document = serde_json::json!({ "component": digest, "limits": { "timeout": "5s" } });
    let res = api_a.put_tenant("r", document.clone()).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    until(&b, "/t/r/hello", StatusCode::OK).await;
    // On b: answered, and writing 700 ms later.
    let answer = get(b.addr, "/t/r/write-later?ms=700&key=ghost").await;
    assert_eq!(answer.text(), "will write");
    // b is stopped meanwhile, so it sees neither the removal nor the
    // creation, only the tenant as it is after both (the same component
    // and limits): it must still take it for another tenant.
    let signal = |which: &str| {
        let sent = std::process::Command::new("kill")
            .args([which, &b.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-STOP");
    let res = api_a.delete("/v1/tenants/r?purge=true").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let res = api_a.put_tenant("r", document).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    signal("-CONT");
    until(&b, "/t/r/hello", StatusCode::OK).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for r in [&a, &b] {
        let read = get(r.addr, "/t/r/kv/ghost").await;
        assert_eq!(read.status, StatusCode::NOT_FOUND, "{}", read.text());
    }
    // The tenant made again writes, through either runner (b once it has
    // read the fleet again after resubscribing).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = put(&b, "/t/r/kv/fresh", b"v").await;
        if status == StatusCode::NO_CONTENT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b still writes as the purged tenant: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(a.addr, "/t/r/kv/fresh").await.text(), "v");
}
