//! The key-value store on its own, no wasm: what one `get` or `set` costs,
//! how a 90/10 get/set mix scales with threads and shard counts, and what
//! a page of a prefix listing costs by shard count.
//!
//! Run with `cargo bench -p runner --bench store`. Every bucket holds
//! 10,000 keys of the form `key-NNNNN` with 100-byte values; the baseline is
//! one `parking_lot::RwLock<HashMap<String, Bytes>>` (std's SipHash hasher),
//! the design CONTEXT.md says stops scaling at a few million ops/s.
//!
//! Calls go through the store's front (`store::Bucket`, the size checks and
//! the async backend seam), as the host makes them; the in-memory backend is
//! ready at the first poll, so each call is polled once (`now_or_never`),
//! which is what the host's async call costs without the guest around it.
//!
//! The multi-threaded cases use `iter_custom`: one iteration is
//! [`OPS_PER_THREAD`] operations on *each* thread, and the reported time is
//! the wall-clock time until the last thread is done, so criterion's
//! "thrpt" line is the total ops/s across all threads. On a 2-core machine
//! the 2-thread figures share the cores with whatever else runs.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt as _;
use parking_lot::RwLock;
use runner::store::memory::Store;
use runner::store::{Bucket, Namespace, Quotas};

/// Keys in every bucket, all present before measuring.
const KEYS: usize = 10_000;
/// Size of every value, in bytes.
const VALUE_BYTES: usize = 100;
/// Operations each thread runs per criterion iteration in the mix benches.
const OPS_PER_THREAD: u64 = 10_000;
/// Out of 100 operations in the mix, how many are sets.
const SET_PERCENT: u64 = 10;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key-{i:05}")).collect()
}

/// The value every set writes. Each set stores its own copy (as the host
/// does when it copies a value out of guest memory), so threads do not all
/// bump one shared reference count on every get.
const VALUE: [u8; VALUE_BYTES] = [b'v'; VALUE_BYTES];

fn value() -> Bytes {
    Bytes::copy_from_slice(&VALUE)
}

/// A bucket of `shards` shards holding every key. Quotas are raised so the
/// bench measures the map, not a quota refusal.
fn filled_bucket(shards: usize, keys: &[String]) -> Bucket {
    let quotas = Quotas {
        max_keys: (keys.len() * 2) as u64,
        max_bytes: 1 << 30,
        ..Quotas::default()
    };
    let namespace =
        Namespace::new(&Store::new(shards), "t0", quotas).expect("a fresh namespace opens");
    let bucket = ready(namespace.open("")).expect("the default bucket always opens");
    for key in keys {
        ready(bucket.set(key.clone(), value())).expect("small keys fit the raised quotas");
    }
    bucket
}

/// The in-memory backend never waits: each call is ready at its first poll.
fn ready<T>(call: impl Future<Output = T>) -> T {
    call.now_or_never()
        .expect("the in-memory backend is ready at the first poll")
}

/// The two operations the mix needs, so one driver runs every map.
trait Map: Sync {
    fn get(&self, key: &str) -> Option<Bytes>;
    fn set(&self, key: &str, value: Bytes);
}

impl Map for Bucket {
    fn get(&self, key: &str) -> Option<Bytes> {
        ready(Bucket::get(self, key)).expect("gets do not fail in memory")
    }

    fn set(&self, key: &str, value: Bytes) {
        // The store's API takes the key by value; the copy is part of a set.
        ready(Bucket::set(self, key.to_owned(), value)).expect("overwriting a key fits the quotas");
    }
}

/// The baseline: one lock over one std `HashMap`.
struct Locked(RwLock<HashMap<String, Bytes>>);

impl Locked {
    fn filled(keys: &[String]) -> Self {
        let map = keys.iter().map(|k| (k.clone(), value())).collect();
        Self(RwLock::new(map))
    }
}

impl Map for Locked {
    fn get(&self, key: &str) -> Option<Bytes> {
        self.0.read().get(key).cloned()
    }

    fn set(&self, key: &str, value: Bytes) {
        // Same key copy as the store's set, for a like-for-like comparison.
        self.0.write().insert(key.to_owned(), value);
    }
}

/// xorshift64*: a few ns per draw and no shared state between threads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Runs `ops` operations of the 90/10 mix on uniformly chosen keys.
fn mix(map: &impl Map, keys: &[String], ops: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..ops {
        let r = rng.next();
        let key = &keys[(r >> 32) as usize % keys.len()];
        if r % 100 < SET_PERCENT {
            map.set(key, value());
        } else {
            black_box(map.get(key));
        }
    }
}

/// Wall-clock time for `threads` threads to each run `iters` iterations of
/// the mix, started together behind a barrier.
fn timed_mix(map: &impl Map, keys: &[String], threads: usize, iters: u64) -> Duration {
    let ops = iters * OPS_PER_THREAD;
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let start = &start;
            s.spawn(move || {
                start.wait();
                mix(map, keys, ops, t as u64 + 1);
            });
        }
        start.wait();
        Instant::now()
    })
    // `scope` has joined every thread by the time it returns.
    .elapsed()
}

fn single_threaded(c: &mut Criterion) {
    let keys = keys();
    let bucket = filled_bucket(Store::default_shards(), &keys);
    let mut group = c.benchmark_group("store/single");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));

    let mut i = 0usize;
    group.bench_function("get_100B", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(Map::get(&bucket, black_box(&keys[i])))
        });
    });
    let mut i = 0usize;
    group.bench_function("set_100B_overwrite", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            ready(bucket.set(black_box(keys[i].clone()), value()))
                .expect("overwriting a key fits the quotas");
        });
    });
    group.finish();
}

fn threaded_mix(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("store/mix90get10set");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(OPS_PER_THREAD * threads as u64));
        for shards in [1usize, 8, 64] {
            let bucket = filled_bucket(shards, &keys);
            let id = BenchmarkId::new(format!("store_{shards}_shards"), format!("{threads}t"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| timed_mix(&bucket, &keys, threads, iters));
            });
        }
        let locked = Locked::filled(&keys);
        let id = BenchmarkId::new("rwlock_hashmap", format!("{threads}t"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| timed_mix(&locked, &keys, threads, iters));
        });
    }
    group.finish();
}

/// One page of a prefix listing (`wasmcloud:keyvalue`'s `list-keys` with a
/// prefix) from the middle of the prefix's keys, by shard count: a page
/// should cost a seek per shard plus its own keys.
fn prefix_pages(c: &mut Criterion) {
    // 100,000 keys, 50,000 after the cursor: a page is 1,000 of them.
    let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i:06}")).collect();
    let mut group = c.benchmark_group("store/prefix_page");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for shards in [8usize, 64, 256] {
        let bucket = filled_bucket(shards, &keys);
        group.bench_function(BenchmarkId::new("shards", shards), |b| {
            b.iter(|| {
                let page = ready(bucket.list_prefix(black_box("key-"), Some("key-050000")))
                    .expect("a prefix page of the memory store");
                black_box(page)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, single_threaded, threaded_mix, prefix_pages);
criterion_main!(benches);
