//! Any sequence of guest store calls, on two tenants with two buckets each
//! and small quotas, gives exactly what a plain map would: values, counters,
//! compare-and-swaps, quota refusals and usage. Forged cursors return only
//! keys of the bucket asked, and a walk returns every key once. One tenant's
//! calls never show in the other's namespace.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runner::store::{Bucket, Error, Namespace, Quota, Quotas, Swap, memory};

const QUOTAS: Quotas = Quotas {
    max_key_bytes: 8,
    max_value_bytes: 16,
    max_keys: 12,
    max_bytes: 96,
    max_buckets: 4,
    max_page_keys: 3,
    max_call_bytes: 64,
    max_batch_keys: 4,
};

#[derive(Arbitrary, Debug)]
enum Op {
    Set { at: Place, value: Vec<u8> },
    Get { at: Place },
    Delete { at: Place },
    Increment { at: Place, delta: u8 },
    IncrementSigned { at: Place, delta: i8 },
    Swap { at: Place, expected: Option<Vec<u8>>, value: Vec<u8> },
    ListFrom { tenant: bool, bucket: bool, cursor: u64 },
    Big { at: Place, exact: u8 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Place {
    tenant: bool,
    bucket: bool,
    /// A key from a small alphabet, so that calls meet each other's keys;
    /// lengths run past the key quota.
    key: u16,
}

impl Place {
    fn key(self) -> String {
        let len = usize::from(self.key % 11);
        (0..len).map(|i| (b'a' + ((self.key >> i) & 1) as u8) as char).collect()
    }
}

type Model = BTreeMap<(bool, bool, String), Bytes>;

struct World {
    namespaces: [Namespace; 2],
    buckets: [[Bucket; 2]; 2],
    model: Model,
}

fn usage(model: &Model, tenant: bool) -> (u64, u64) {
    model
        .iter()
        .filter(|((t, _, _), _)| *t == tenant)
        .fold((0, 0), |(k, b), ((_, _, key), v)| (k + 1, b + (key.len() + v.len()) as u64))
}

impl World {
    async fn new() -> Self {
        let store = memory::Store::new(4);
        let namespaces = ["t0", "t1"].map(|t| Namespace::new(&store, t, QUOTAS.clone()).unwrap());
        let mut buckets = Vec::new();
        for ns in &namespaces {
            buckets.push([ns.open("").await.unwrap(), ns.open("photos").await.unwrap()]);
        }
        let buckets: [[Bucket; 2]; 2] = buckets.try_into().unwrap_or_else(|_| unreachable!());
        Self { namespaces, buckets, model: Model::new() }
    }

    fn bucket(&self, tenant: bool, bucket: bool) -> &Bucket {
        &self.buckets[usize::from(tenant)][usize::from(bucket)]
    }

    /// What a write of `value` at `at` must do: `Ok` or the quota it passes.
    fn admits(&self, at: Place, value: &[u8]) -> Result<(), Quota> {
        let key = at.key();
        if key.len() > QUOTAS.max_key_bytes {
            return Err(Quota::KeySize);
        }
        if value.len() > QUOTAS.max_value_bytes {
            return Err(Quota::ValueSize);
        }
        let (keys, bytes) = usage(&self.model, at.tenant);
        let old = self.model.get(&(at.tenant, at.bucket, key.clone()));
        let new_size = (key.len() + value.len()) as u64;
        let old_size = old.map_or(0, |v| (key.len() + v.len()) as u64);
        if old.is_none() && keys + 1 > QUOTAS.max_keys {
            return Err(Quota::Keys);
        }
        if bytes + new_size.saturating_sub(old_size) > QUOTAS.max_bytes {
            return Err(Quota::Bytes);
        }
        Ok(())
    }

    fn expect_write(&mut self, at: Place, value: Bytes, result: Result<(), Error>) {
        match (self.admits(at, &value), result) {
            (Ok(()), Ok(())) => {
                self.model.insert((at.tenant, at.bucket, at.key()), value);
            }
            (Err(quota), Err(Error::Quota { quota: got, .. })) => assert_eq!(quota, got),
            (want, got) => panic!("write at {at:?}: expected {want:?}, got {got:?}"),
        }
    }

    async fn run(&mut self, op: Op) {
        match op {
            Op::Set { at, value } => {
                let value = Bytes::from(value);
                let result = self.bucket(at.tenant, at.bucket).set(at.key(), value.clone()).await;
                self.expect_write(at, value, result);
            }
            Op::Big { at, exact } => {
                // Values at and just past the value quota.
                let value = Bytes::from(vec![b'x'; QUOTAS.max_value_bytes + usize::from(exact % 2)]);
                let result = self.bucket(at.tenant, at.bucket).set(at.key(), value.clone()).await;
                self.expect_write(at, value, result);
            }
            Op::Get { at } => {
                let got = self.bucket(at.tenant, at.bucket).get(&at.key()).await.unwrap();
                assert_eq!(got.as_ref(), self.model.get(&(at.tenant, at.bucket, at.key())));
                let exists = self.bucket(at.tenant, at.bucket).exists(&at.key()).await.unwrap();
                assert_eq!(exists, got.is_some());
            }
            Op::Delete { at } => {
                self.bucket(at.tenant, at.bucket).delete(&at.key()).await.unwrap();
                self.model.remove(&(at.tenant, at.bucket, at.key()));
            }
            Op::Increment { at, delta } => {
                let result = self.bucket(at.tenant, at.bucket).increment(at.key(), delta.into()).await;
                let current = self.model.get(&(at.tenant, at.bucket, at.key()));
                let parsed = current.map(|v| std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()));
                self.expect_count(at, parsed.map(|p| p.map(i128::from)), delta.into(), u64::MAX.into(), 0, result.map(i128::from));
            }
            Op::IncrementSigned { at, delta } => {
                let result = self.bucket(at.tenant, at.bucket).increment_signed(at.key(), delta.into()).await;
                let current = self.model.get(&(at.tenant, at.bucket, at.key()));
                let parsed = current.map(|v| std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()));
                self.expect_count(at, parsed.map(|p| p.map(i128::from)), delta.into(), i64::MAX.into(), i64::MIN.into(), result.map(i128::from));
            }
            Op::Swap { at, expected, value } => {
                let expected = expected.map(Bytes::from);
                let value = Bytes::from(value);
                let result = self
                    .bucket(at.tenant, at.bucket)
                    .compare_and_swap(at.key(), expected.clone(), value.clone())
                    .await;
                let current = self.model.get(&(at.tenant, at.bucket, at.key())).cloned();
                match result {
                    Ok(Swap::Done) => {
                        assert_eq!(current, expected);
                        self.expect_write(at, value, Ok(()));
                    }
                    Ok(Swap::Changed(now)) => {
                        assert_ne!(current, expected);
                        assert_eq!(now, current);
                    }
                    Err(e) => {
                        // Sizes are checked before the comparison; room only
                        // when the value would be written.
                        let admits = self.admits(at, &value);
                        assert!(admits.is_err(), "swap refused: {e}");
                        self.expect_write(at, value, Err(e));
                    }
                }
            }
            Op::ListFrom { tenant, bucket, cursor } => {
                let page = self.bucket(tenant, bucket).list_keys(Some(cursor)).await.unwrap();
                for key in &page.keys {
                    assert!(self.model.contains_key(&(tenant, bucket, key.clone())), "{key:?} listed");
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn expect_count(
        &mut self,
        at: Place,
        current: Option<Option<i128>>,
        delta: i128,
        max: i128,
        min: i128,
        result: Result<i128, Error>,
    ) {
        let want = match current {
            None => Ok(delta),
            Some(None) => Err("invalid"),
            Some(Some(n)) if n + delta > max || n + delta < min => Err("invalid"),
            Some(Some(n)) => Ok(n + delta),
        };
        match (want, result) {
            (Ok(sum), Ok(got)) => {
                assert_eq!(sum, got);
                self.expect_write(at, Bytes::from(sum.to_string()), Ok(()));
            }
            (Ok(sum), Err(e @ Error::Quota { .. })) => {
                self.expect_write(at, Bytes::from(sum.to_string()), Err(e));
            }
            (Err(_), Err(Error::Invalid(_))) => {}
            (want, got) => panic!("increment at {at:?}: expected {want:?}, got {got:?}"),
        }
    }

    async fn check_walks(&self) {
        for tenant in [false, true] {
            for bucket in [false, true] {
                let mut seen = BTreeSet::new();
                let mut cursor = None;
                loop {
                    let page = self.bucket(tenant, bucket).list_keys(cursor).await.unwrap();
                    for key in page.keys {
                        assert!(seen.insert(key.clone()), "{key:?} listed twice");
                    }
                    match page.cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                let want: BTreeSet<String> = self
                    .model
                    .keys()
                    .filter(|(t, b, _)| (*t, *b) == (tenant, bucket))
                    .map(|(_, _, k)| k.clone())
                    .collect();
                assert_eq!(seen, want);
            }
            let usage = self.namespaces[usize::from(tenant)].usage();
            assert_eq!((usage.keys, usage.bytes), usage_of(&self.model, tenant));
        }
    }
}

fn usage_of(model: &Model, tenant: bool) -> (u64, u64) {
    usage(model, tenant)
}

fuzz_target!(|ops: Vec<Op>| {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut world = World::new().await;
        for op in ops {
            world.run(op).await;
        }
        world.check_walks().await;
    });
});
