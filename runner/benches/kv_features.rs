//! What `wasmcloud:keyvalue`'s promises cost on each backend, through the
//! store's front as the host calls it, one call at a time:
//! - a plain `set` against a `set` with `ttl-ms` (the bar: at most 1.2x);
//! - a versioned swap (`cas.current`, then `cas.swap` requiring its
//!   version);
//! - a 100-key prefix page, under a prefix of 100 keys, in a bucket of
//!   1,000 keys and in one of 1,000,000 (the bar: at most 2x).
//!
//! Backends: memory, the data directory (`--fsync always`), and Redis when
//! `redis-server` is on PATH (started on a free port, no persistence).
//! Rounds are interleaved across backends and operations; each figure is
//! the median of the rounds, with their range.
//!
//!   cargo bench -p runner --bench kv_features
//!
//! Settings (environment): ROUNDS (3), SECONDS per measurement (0.5).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use runner::store::memory::Store as Memory;
use runner::store::memory::journal::Fsync;
use runner::store::redis::{Connection, PREFIX, Store as Redis};
use runner::store::{Backend, Bucket, Namespace, Quotas, Require, SetOptions, Swapped};

const BIG: usize = 1_000_000;
const SMALL: usize = 1_000;
const UNDER_PREFIX: usize = 100;
const HOT_KEYS: usize = 1_000;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One backend's buckets, filled.
struct Subject {
    name: &'static str,
    hot: Bucket,
    small: Bucket,
    big: Bucket,
    /// Kept alive: the backend (and its reaper) for the namespace.
    _backend: Arc<dyn Backend>,
}

/// A bucket of `total` keys, `UNDER_PREFIX` of them under `p/`.
async fn filled(ns: &Namespace, name: &str, total: usize) -> Bucket {
    let bucket = ns.open(name).await.expect("a bucket");
    let keys: Vec<String> = (0..total - UNDER_PREFIX)
        .map(|i| format!("k/{i:07}"))
        .chain((0..UNDER_PREFIX).map(|i| format!("p/{i:03}")))
        .collect();
    for chunk in keys.chunks(1000) {
        let pairs = chunk
            .iter()
            .map(|k| (k.clone(), Bytes::from_static(b"v")))
            .collect();
        bucket.set_many(pairs).await.expect("filling a bucket");
    }
    bucket
}

async fn subject(name: &'static str, backend: Arc<dyn Backend>) -> Subject {
    let quotas = Quotas {
        max_keys: 2 * BIG as u64,
        max_bytes: 1 << 34,
        max_batch_keys: 1000,
        max_page_keys: UNDER_PREFIX,
        ..Quotas::default()
    };
    let ns = Namespace::new(&*backend, "bench", quotas).expect("a namespace");
    let started = Instant::now();
    let subject = Subject {
        name,
        hot: filled(&ns, "hot", HOT_KEYS).await,
        small: filled(&ns, "small", SMALL).await,
        big: filled(&ns, "big", BIG).await,
        _backend: backend,
    };
    eprintln!("{name}: filled in {:.1?}", started.elapsed());
    subject
}

/// Nanoseconds per call of `op`, run for `for_` (at least 10 calls).
async fn per_call<F, Fut>(for_: Duration, mut op: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    let mut n = 0;
    while n < 10 || started.elapsed() < for_ {
        op(n).await;
        n += 1;
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

const OPS: [&str; 5] = [
    "set",
    "set ttl",
    "versioned swap",
    "page of 1k",
    "page of 1M",
];

async fn measure(s: &Subject, op: &str, for_: Duration) -> f64 {
    let hot = |n: usize| format!("k/{:07}", n % (HOT_KEYS - UNDER_PREFIX));
    let ttl = SetOptions {
        ttl: Some(Duration::from_secs(600)),
        if_absent: false,
    };
    let page = |bucket: &Bucket| {
        let bucket = bucket.clone();
        move |_| {
            let bucket = bucket.clone();
            async move {
                let page = bucket.list_prefix("p/", None).await.expect("a page");
                assert_eq!(page.keys.len(), UNDER_PREFIX);
            }
        }
    };
    match op {
        "set" => {
            per_call(for_, |n| async move {
                s.hot
                    .set(hot(n), Bytes::from_static(b"w"))
                    .await
                    .expect("a set");
            })
            .await
        }
        "set ttl" => {
            per_call(for_, |n| async move {
                s.hot
                    .set_with(hot(n), Bytes::from_static(b"w"), ttl)
                    .await
                    .expect("a set with ttl");
            })
            .await
        }
        "versioned swap" => {
            per_call(for_, |n| async move {
                let key = hot(n);
                let current = s.hot.current(&key).await.expect("current").expect("a key");
                let require = Require {
                    version: Some(current.version),
                    value: None,
                };
                let swapped = s.hot.swap(key, Bytes::from_static(b"x"), require).await;
                assert_eq!(swapped.expect("a swap"), Swapped::Done);
            })
            .await
        }
        "page of 1k" => per_call(for_, page(&s.small)).await,
        "page of 1M" => per_call(for_, page(&s.big)).await,
        _ => unreachable!(),
    }
}

fn main() {
    let rounds = setting("ROUNDS", 3.0) as usize;
    let for_ = Duration::from_secs_f64(setting("SECONDS", 0.5));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = std::env::temp_dir().join(format!("runner-bench-kv-{}", std::process::id()));
    let server = system_tests::redis::Redis::start();
    let subjects = runtime.block_on(async {
        let mut subjects = vec![
            subject("memory", Arc::new(Memory::new(Memory::default_shards()))).await,
            subject(
                "data dir",
                Arc::new(
                    Memory::durable(Memory::default_shards(), &dir, Fsync::Always)
                        .expect("a data directory"),
                ),
            )
            .await,
        ];
        match &server {
            Some(server) => {
                let timeout = Duration::from_secs(5);
                let connection = Connection::open(&[server.url()], false, timeout)
                    .await
                    .expect("a connection");
                let redis = Arc::new(Redis::new(connection, PREFIX, timeout));
                subjects.push(subject("redis", redis).await);
            }
            None => eprintln!("redis: skipped, redis-server is not on PATH"),
        }
        subjects
    });
    // (backend, op) -> ns per call, one per round.
    let mut results: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        for (o, op) in OPS.iter().enumerate() {
            for (i, s) in subjects.iter().enumerate() {
                let ns = runtime.block_on(measure(s, op, for_));
                results.entry((i, o)).or_default().push(ns);
            }
        }
        eprintln!("round {round} of {rounds} done");
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let range = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        (min, max)
    };
    println!(
        "| backend | {} | set ttl / set | page of 1M / 1k |",
        OPS.join(" | ")
    );
    println!("|---|{}---|---|", "---|".repeat(OPS.len()));
    for (i, s) in subjects.iter().enumerate() {
        let cells: Vec<String> = (0..OPS.len())
            .map(|o| {
                let v = &results[&(i, o)];
                let ns = median(v);
                if ns < 10_000.0 {
                    format!("{ns:.0} ns")
                } else {
                    format!("{:.1} µs", ns / 1000.0)
                }
            })
            .collect();
        // Ratios per round, then their median and range.
        let ratio = |a: usize, b: usize| {
            let per_round: Vec<f64> = results[&(i, a)]
                .iter()
                .zip(&results[&(i, b)])
                .map(|(x, y)| x / y)
                .collect();
            let (lo, hi) = range(&per_round);
            format!("{:.2}x ({lo:.2}-{hi:.2})", median(&per_round))
        };
        println!(
            "| {} | {} | {} | {} |",
            s.name,
            cells.join(" | "),
            ratio(1, 0),
            ratio(4, 3)
        );
    }
    drop(subjects);
    let _ = std::fs::remove_dir_all(&dir);
}
