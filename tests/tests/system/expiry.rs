//! Expiry and versions through a crash: a WASIp3 tenant sets keys with
//! `ttl-ms` and counts by versioned compare-and-swap under load while the
//! runner is killed (data directory) or Redis is (with its append-only
//! file); afterwards nothing acknowledged is lost, nothing expired comes
//! back, no increment landed twice, and the usage figures are exact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use parking_lot::Mutex;
use system_tests::http::Client;
use system_tests::redis::Redis;
use system_tests::tenants::{Tenants, p3_guest};
use system_tests::{Runner, TempDir, probe};

/// Connections writing at once.
const WRITERS: usize = 4;
/// The short expiry, well within the test.
const BRIEF_MS: u64 = 300;

/// What the writers saw.
#[derive(Default)]
struct Seen {
    /// Keys set with an hour's expiry: the value acknowledged.
    kept: BTreeMap<String, String>,
    /// Keys set with the short expiry, acknowledged or not.
    brief: BTreeSet<String>,
    /// Writes whose outcome is unknown (in flight at the crash, or failed
    /// with the store away): they may or may not have landed.
    unsure: BTreeMap<String, String>,
    /// The sums the counter's acknowledged increments answered.
    sums: Vec<u64>,
    /// Increments that may or may not have landed.
    unsure_increments: u64,
}

fn tenants() -> Tenants {
    Tenants::new().tenant("p", &format!("component = {:?}", p3_guest()))
}

/// Writes from [`WRITERS`] connections until `stop` is set: each writer
/// sets a key for an hour, one for [`BRIEF_MS`], and increments the shared
/// counter `c` by versioned compare-and-swap, in turn. A failed request
/// (the store away: 503) is a write of unknown outcome, and the writer goes
/// on; a dropped connection ends it.
async fn write(addr: std::net::SocketAddr, stop: Arc<std::sync::atomic::AtomicBool>) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (seen, stop) = (seen.clone(), stop.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let (path, key, value) = match n % 3 {
                        0 => {
                            let key = format!("kept-{w}-{n}");
                            let path = format!("/t/p/wc/set/{key}?ttl-ms=3600000");
                            (path, key, format!("v{w}.{n}"))
                        }
                        1 => {
                            let key = format!("brief-{w}-{n}");
                            seen.lock().brief.insert(key.clone());
                            let path = format!("/t/p/wc/set/{key}?ttl-ms={BRIEF_MS}");
                            (path, key, format!("b{w}.{n}"))
                        }
                        _ => (
                            "/t/p/wc/cas-incr/c".to_string(),
                            String::new(),
                            String::new(),
                        ),
                    };
                    let method = if key.is_empty() {
                        Method::POST
                    } else {
                        Method::PUT
                    };
                    let reply = client
                        .try_send(method, &path, value.clone().into_bytes())
                        .await;
                    let mut seen = seen.lock();
                    match (reply, key.is_empty()) {
                        (Some(r), true) if r.status == StatusCode::OK => {
                            seen.sums.push(r.text().parse().expect("a sum"));
                        }
                        (Some(r), false) if r.status == StatusCode::NO_CONTENT => {
                            if key.starts_with("kept") {
                                seen.kept.insert(key, value);
                            }
                        }
                        (Some(r), _) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                            if key.is_empty() {
                                seen.unsure_increments += 1;
                            } else {
                                seen.unsure.insert(key, value);
                            }
                        }
                        (Some(r), _) => panic!("{path}: {} {}", r.status, r.text()),
                        (None, is_increment) => {
                            if is_increment {
                                seen.unsure_increments += 1;
                            } else {
                                seen.unsure.insert(key, value);
                            }
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer");
    }
    Arc::try_unwrap(seen)
        .ok()
        .expect("the writers are done")
        .into_inner()
}

/// Checks `runner` against what the writers saw, once the short expiry
/// has passed for every write.
async fn check(runner: &Runner, seen: &Seen) {
    let mut client = Client::connect(runner.addr).await;
    let acked = seen.kept.len();
    eprintln!(
        "{acked} kept and {} brief keys set, {} increments acknowledged, {} writes and {} increments unsure",
        seen.brief.len(),
        seen.sums.len(),
        seen.unsure.len(),
        seen.unsure_increments
    );
    assert!(acked > 20, "only {acked} writes were acknowledged");
    // Every acknowledged key is there with its value; an unsure one is
    // there with its value or absent; what is there is counted.
    let (mut keys, mut bytes) = (0u64, 0u64);
    for (key, value) in seen.kept.iter().chain(&seen.unsure) {
        let reply = client.get(&format!("/t/p/wc/get/{key}")).await;
        let sure = seen.kept.contains_key(key);
        match reply.status {
            StatusCode::OK => {
                assert_eq!(&reply.text(), value, "{key}");
                if key.starts_with("kept") {
                    keys += 1;
                    bytes += (key.len() + value.len()) as u64;
                }
            }
            StatusCode::NOT_FOUND if !sure || key.starts_with("brief") => {}
            status => panic!("{key}: acknowledged {value:?}, found {status}"),
        }
    }
    // Nothing expired comes back, through any read.
    for key in &seen.brief {
        let reply = client.get(&format!("/t/p/wc/exists/{key}")).await;
        assert_eq!(reply.text(), "false", "{key} came back");
    }
    let page = client.get("/t/p/wc/list?prefix=brief").await;
    assert_eq!(page.text(), "cursor: none");
    // Each increment landed once: the sums answered are distinct, and the
    // counter holds at least the highest, at most one per increment tried.
    let distinct: BTreeSet<u64> = seen.sums.iter().copied().collect();
    assert_eq!(distinct.len(), seen.sums.len(), "a sum was answered twice");
    let counter: u64 = client
        .get("/t/p/wc/get/c")
        .await
        .text()
        .parse()
        .expect("the counter");
    let highest = distinct.last().copied().unwrap_or(0);
    let tried = seen.sums.len() as u64 + seen.unsure_increments;
    assert!(
        (highest..=tried).contains(&counter),
        "counter {counter}, highest sum {highest}, {tried} tried"
    );
    keys += 1;
    bytes += 1 + counter.to_string().len() as u64;
    // The usage figures are exact once the expired keys are reclaimed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = (
            probe::metric(runner.admin, "runner_kv_keys", "tenant=\"p\"").await,
            probe::metric(runner.admin, "runner_kv_bytes", "tenant=\"p\"").await,
        );
        if held == (keys as f64, bytes as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage {held:?}, expected ({keys}, {bytes})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_expiry_and_versions_on_the_data_directory() {
    let dir = TempDir::new();
    let data = dir.path.join("data");
    let data = data.to_str().expect("temp paths are UTF-8");
    let t = tenants();
    let args = ["--data-dir", data, "--fsync", "always"];
    let mut runner = Runner::start_with(&t, &args);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = tokio::spawn(write(runner.addr, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    runner.kill();
    let seen = writers.await.expect("the writers");
    // Stopped past every short expiry: the restart must not load them.
    tokio::time::sleep(Duration::from_millis(BRIEF_MS + 100)).await;
    let runner = Runner::start_with(&t, &args);
    check(&runner, &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_keeps_expiry_and_versions() {
    let Some(mut redis) = Redis::start_durable() else {
        return;
    };
    let url = redis.url();
    let t = tenants();
    let runner = Runner::start_with(&t, &["--store", &url, "--store-timeout", "200ms"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = tokio::spawn(write(runner.addr, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(BRIEF_MS)).await;
    redis.resume();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = writers.await.expect("the writers");
    tokio::time::sleep(Duration::from_millis(BRIEF_MS + 100)).await;
    check(&runner, &seen).await;
    // A second runner on the same Redis agrees, from nothing but Redis.
    let second = Runner::start_with(&t, &["--store", &url]);
    check(&second, &seen).await;
}
