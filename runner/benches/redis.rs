//! What one key-value call costs on the Redis backend, and where it goes.
//!
//! Run with `cargo bench -p runner --bench redis` (needs `redis-server` on
//! PATH; it starts one on a free port, no persistence). Calls go through the
//! store's front, as the host makes them, on one multiplexed connection:
//! - `one at a time`: a call's latency, nothing else in flight: a round
//!   trip to Redis plus the backend's work (a script for every write);
//! - `raw GET`: the same round trip with redis-rs alone, no backend, the
//!   floor a `get` can reach;
//! - `32 in flight`: throughput when many requests' calls share the
//!   connection (pipelined), as under load.
//!
//! After the runs it prints Redis's own time per command (`INFO
//! commandstats`), so the rest of each call's time is the client's and the
//! network's.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runner::store::redis::{Connection, PREFIX, Store};
use runner::store::{Bucket, Namespace, Quotas};
use system_tests::redis::Redis;

const KEYS: usize = 1_000;
const VALUE: [u8; 100] = [b'v'; 100];
const IN_FLIGHT: usize = 32;

struct Setup {
    runtime: tokio::runtime::Runtime,
    redis: Redis,
    connection: Connection,
    bucket: Bucket,
}

fn setup() -> Option<Setup> {
    let redis = Redis::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let timeout = Duration::from_secs(5);
    let connection = runtime
        .block_on(Connection::open(&[redis.url()], false, timeout))
        .expect("a connection");
    let store = Store::new(connection.clone(), PREFIX, timeout);
    let quotas = Quotas {
        max_keys: 1 << 20,
        max_bytes: 1 << 30,
        ..Quotas::default()
    };
    let bucket = runtime.block_on(async {
        let namespace = Namespace::new(&store, "t0", quotas).expect("a namespace");
        let bucket = namespace.open("").await.expect("the default bucket");
        for i in 0..KEYS {
            bucket
                .set(format!("key-{i:04}"), Bytes::from_static(&VALUE))
                .await
                .expect("a set");
        }
        bucket
    });
    Some(Setup {
        runtime,
        redis,
        connection,
        bucket,
    })
}

fn calls(c: &mut Criterion) {
    let Some(setup) = setup() else {
        eprintln!("skipped: redis-server is not on PATH");
        return;
    };
    let Setup {
        runtime,
        redis,
        connection,
        bucket,
    } = &setup;
    redis.cli(&["config", "resetstat"]);
    let mut group = c.benchmark_group("redis/one at a time");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % KEYS;
        format!("key-{i:04}")
    };
    group.bench_function("get", |b| {
        b.iter(|| runtime.block_on(bucket.get(&next())).expect("a get"))
    });
    group.bench_function("set", |b| {
        b.iter(|| {
            runtime
                .block_on(bucket.set(next(), Bytes::from_static(&VALUE)))
                .expect("a set")
        })
    });
    group.bench_function("increment", |b| {
        b.iter(|| {
            runtime
                .block_on(bucket.increment("counter".into(), 1))
                .expect("an increment")
        })
    });
    group.bench_function("raw GET", |b| {
        let mut raw = connection.clone();
        let key = format!("{PREFIX}bench-raw");
        b.iter(|| {
            runtime
                .block_on(
                    ::redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<Vec<u8>>>(&mut raw),
                )
                .expect("a GET")
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("redis/{IN_FLIGHT} in flight"));
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    for (name, set) in [("get", false), ("set", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let calls = (0..IN_FLIGHT).map(|k| {
                            let bucket = bucket.clone();
                            let key = format!("key-{k:04}");
                            async move {
                                if set {
                                    bucket
                                        .set(key, Bytes::from_static(&VALUE))
                                        .await
                                        .map(|_| ())
                                } else {
                                    bucket.get(&key).await.map(|_| ())
                                }
                            }
                        });
                        for done in futures::future::join_all(calls).await {
                            done.expect("a call");
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    // Redis's own share of each call.
    let stats = redis.cli(&["info", "commandstats"]);
    for line in stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_get:") || l.starts_with("cmdstat_evalsha:"))
    {
        println!("redis server time: {}", line.trim());
    }
}

criterion_group!(benches, calls);
criterion_main!(benches);
