//! Group commit in the durable store, without HTTP or wasm in the way:
//! acknowledged writes per second of 1 writer and of 32 concurrent writers,
//! in memory and with each fsync mode.
//!
//! Run with `cargo bench -p runner --bench durable [-- DIR]`; DIR (default:
//! the system temp dir) should be on the disk to measure. Each writer is a
//! task that sets its own keys (100-byte values) one after another, awaiting
//! each acknowledgement, for [`RUN`]; the runtime has two worker threads, as
//! the runner has on this machine. Rounds are interleaved (every case once,
//! then again) so drift hits every case alike; the report gives each case's
//! median over the rounds with the min-max, and for each mode the ratio of
//! 32 writers to 1.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use runner::store::memory::Store;
use runner::store::memory::journal::Fsync;
use runner::store::{Namespace, Quotas};

const RUN: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;
const WRITERS: [usize; 2] = [1, 32];

fn modes() -> [(&'static str, Option<Fsync>); 3] {
    [
        ("memory", None),
        ("always", Some(Fsync::Always)),
        (
            "every=100ms",
            Some(Fsync::Every(Duration::from_millis(100))),
        ),
    ]
}

async fn writes_per_second(store: &Store, writers: usize) -> f64 {
    let ns = Namespace::new(store, "bench", Quotas::default()).expect("a namespace");
    let bucket = ns.open("").await.expect("the default bucket");
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + RUN;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let bucket = bucket.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let value = Bytes::from(vec![b'v'; 100]);
                let mut n = 0u64;
                while Instant::now() < until {
                    bucket
                        .set(format!("w{w}-{}", n % 1000), value.clone())
                        .await
                        .expect("a set");
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer");
    }
    done.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64()
}

fn median_and_range(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let base: PathBuf = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or_else(std::env::temp_dir, PathBuf::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes().len() * WRITERS.len()];
    for round in 0..ROUNDS {
        for (m, (name, fsync)) in modes().into_iter().enumerate() {
            for (w, writers) in WRITERS.into_iter().enumerate() {
                let dir = base.join(format!(
                    "runner-bench-durable-{}-{round}-{m}-{w}",
                    std::process::id()
                ));
                let store = match fsync {
                    Some(fsync) => Store::durable(8, &dir, fsync).expect("opening the data dir"),
                    None => Store::new(8),
                };
                let rate = runtime.block_on(writes_per_second(&store, writers));
                drop(store);
                let _ = std::fs::remove_dir_all(&dir);
                println!("round {round} {name:<12} {writers:>2} writers: {rate:>9.0} writes/s");
                results[m * WRITERS.len() + w].push(rate);
            }
        }
    }
    println!("\nmode          writers  median writes/s  (min-max)        32 over 1");
    for (m, (name, _)) in modes().into_iter().enumerate() {
        let one = median_and_range(results[m * WRITERS.len()].clone());
        for (w, writers) in WRITERS.into_iter().enumerate() {
            let (median, lo, hi) = median_and_range(results[m * WRITERS.len() + w].clone());
            let ratio = if w == 0 {
                String::new()
            } else {
                format!("{:.1}x", median / one.0)
            };
            println!("{name:<13} {writers:>7}  {median:>15.0}  ({lo:.0}-{hi:.0})  {ratio}");
        }
    }
}
