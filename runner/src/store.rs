//! The sharded in-memory key-value store behind `wasi:keyvalue`.
//!
//! Layout: a process-wide [`Store`] hands each tenant one [`Namespace`]. A
//! namespace holds the tenant's buckets and its quota account; a [`Bucket`] is
//! split into shards, each a `parking_lot::RwLock` over a `BTreeMap`.
//!
//! Why a `BTreeMap` keyed by the key's 64-bit hash: `wasi:keyvalue@0.2.0-draft`
//! gives list-keys a `u64` cursor. Ordering every bucket by a randomly seeded
//! hash makes "the last hash returned" a stateless cursor, and the top bits of
//! the same hash pick the shard, so walking the shards in order walks the hash
//! space in order. A key that exists for a whole walk is returned exactly once,
//! and a page costs a seek plus its own keys, whatever the rest of the store
//! holds. Keys whose hashes collide share one slot and travel in one page.
//!
//! Isolation is structural: a guest only ever reaches the namespace that the
//! runner bound into its host state, and bucket names are looked up inside it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

/// Longest bucket name a guest may open, in bytes.
pub const MAX_BUCKET_NAME_BYTES: usize = 255;

/// Per-tenant limits on what the store holds and what one call may copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most keys across all of the tenant's buckets.
    pub max_keys: u64,
    /// Most bytes (keys plus values) across all of the tenant's buckets.
    pub max_bytes: u64,
    /// Most named buckets besides the default one.
    pub max_buckets: usize,
    /// Most keys in one list-keys page.
    pub max_page_keys: usize,
    /// Most bytes one call may copy into the guest (a list-keys page is cut
    /// short, a get-many over it is refused).
    pub max_call_bytes: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_keys: 100_000,
            max_bytes: 64 << 20,
            max_buckets: 100,
            max_page_keys: 1000,
            max_call_bytes: 8 << 20,
        }
    }
}

/// Which quota a write ran into; a bounded set, so it can label metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quota {
    KeySize,
    ValueSize,
    Keys,
    Bytes,
    Buckets,
    CallSize,
}

impl Quota {
    pub const ALL: [Quota; 6] = [
        Quota::KeySize,
        Quota::ValueSize,
        Quota::Keys,
        Quota::Bytes,
        Quota::Buckets,
        Quota::CallSize,
    ];

    /// The label value used in metrics and the config key's stem.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::KeySize => "key_size",
            Quota::ValueSize => "value_size",
            Quota::Keys => "keys",
            Quota::Bytes => "bytes",
            Quota::Buckets => "buckets",
            Quota::CallSize => "call_size",
        }
    }
}

/// A store operation's failure, as the guest sees it through
/// `wasi:keyvalue/store.error.other`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A write (or a call's transfer) would pass a quota; nothing was stored.
    #[error("quota exceeded: {detail}")]
    Quota { quota: Quota, detail: String },
    /// The guest passed something the store can never accept.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    fn quota(quota: Quota, detail: impl Into<String>) -> Self {
        Error::Quota {
            quota,
            detail: detail.into(),
        }
    }
}

/// The process-wide store: it fixes the hash seed and the shard count.
#[derive(Clone, Debug)]
pub struct Store {
    hasher: foldhash::quality::RandomState,
    shard_bits: u32,
    /// All ones, except in tests that force hash collisions.
    hash_mask: u64,
}

impl Store {
    /// A store whose buckets have `shards` shards; `shards` must be a power of
    /// two (the config validates it).
    pub fn new(shards: usize) -> Self {
        assert!(
            shards.is_power_of_two(),
            "shard count {shards} is not a power of two"
        );
        Self {
            hasher: foldhash::quality::RandomState::default(),
            shard_bits: shards.trailing_zeros(),
            hash_mask: u64::MAX,
        }
    }

    /// The default shard count for this machine: a few per core, so writers on
    /// different cores rarely meet on one lock.
    pub fn default_shards() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 4).next_power_of_two()
    }

    pub fn shards(&self) -> usize {
        1 << self.shard_bits
    }

    /// A fresh, empty namespace for one tenant.
    pub fn namespace(&self, quotas: Quotas) -> Arc<Namespace> {
        let account = Arc::new(Account {
            quotas,
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        Arc::new(Namespace {
            default: Arc::new(Bucket::new(self, account.clone())),
            named: RwLock::new(HashMap::new()),
            store: self.clone(),
            account,
        })
    }
}

/// One tenant's buckets and quota account.
pub struct Namespace {
    store: Store,
    account: Arc<Account>,
    /// `""` and `"default"` both name it (wasmtime's and Spin's conventions).
    default: Arc<Bucket>,
    named: RwLock<HashMap<Box<str>, Arc<Bucket>>>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

/// How much of its quota a tenant uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
}

impl Namespace {
    /// Opens a bucket by name, creating it on first use.
    pub fn open(&self, name: &str) -> Result<Arc<Bucket>, Error> {
        if name.is_empty() || name == "default" {
            return Ok(self.default.clone());
        }
        if name.len() > MAX_BUCKET_NAME_BYTES {
            return Err(Error::Invalid(format!(
                "bucket name of {} bytes is over the {MAX_BUCKET_NAME_BYTES}-byte limit",
                name.len()
            )));
        }
        if let Some(bucket) = self.named.read().get(name) {
            return Ok(bucket.clone());
        }
        let mut named = self.named.write();
        if let Some(bucket) = named.get(name) {
            return Ok(bucket.clone());
        }
        let max = self.account.quotas.max_buckets;
        if named.len() >= max {
            return Err(Error::quota(
                Quota::Buckets,
                format!("the tenant already has {max} named buckets, the limit"),
            ));
        }
        let bucket = Arc::new(Bucket::new(&self.store, self.account.clone()));
        named.insert(name.into(), bucket.clone());
        Ok(bucket)
    }

    pub fn usage(&self) -> Usage {
        Usage {
            keys: self.account.keys.load(Ordering::Relaxed),
            bytes: self.account.bytes.load(Ordering::Relaxed),
        }
    }

    pub fn quotas(&self) -> &Quotas {
        &self.account.quotas
    }
}

/// A tenant's quotas and what it uses of them, shared by its buckets.
#[derive(Debug)]
struct Account {
    quotas: Quotas,
    keys: AtomicU64,
    bytes: AtomicU64,
}

impl Account {
    /// Takes room for a write, or refuses it whole. Callers hold the shard
    /// lock of the key they change, so each delta is exact; the atomics only
    /// arbitrate between shards.
    fn reserve(&self, new_keys: u64, grow: u64) -> Result<(), Error> {
        if new_keys > 0 {
            let max = self.quotas.max_keys;
            self.keys
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                    k.checked_add(new_keys).filter(|&n| n <= max)
                })
                .map_err(|k| {
                    Error::quota(
                        Quota::Keys,
                        format!("the tenant holds {k} keys, the limit is {max}"),
                    )
                })?;
        }
        if grow > 0 {
            let max = self.quotas.max_bytes;
            let taken = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    b.checked_add(grow).filter(|&n| n <= max)
                });
            if let Err(b) = taken {
                self.keys.fetch_sub(new_keys, Ordering::Relaxed);
                return Err(Error::quota(
                    Quota::Bytes,
                    format!(
                        "writing {grow} more bytes to the tenant's {b} would pass its {max}-byte limit"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn release(&self, keys: u64, bytes: u64) {
        self.keys.fetch_sub(keys, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        let max = self.quotas.max_key_bytes;
        if key.len() > max {
            return Err(Error::quota(
                Quota::KeySize,
                format!("key of {} bytes is over the {max}-byte limit", key.len()),
            ));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        let max = self.quotas.max_value_bytes;
        if value.len() > max {
            return Err(Error::quota(
                Quota::ValueSize,
                format!(
                    "value of {} bytes is over the {max}-byte limit",
                    value.len()
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Entry {
    key: Box<str>,
    value: Bytes,
}

impl Entry {
    fn size(&self) -> u64 {
        (self.key.len() + self.value.len()) as u64
    }
}

/// The entries whose keys share one 64-bit hash: almost always exactly one,
/// and `rest` then allocates nothing.
#[derive(Debug)]
struct Slot {
    first: Entry,
    rest: Vec<Entry>,
}

impl Slot {
    fn entries(&self) -> impl Iterator<Item = &Entry> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    fn find(&self, key: &str) -> Option<&Entry> {
        self.entries().find(|e| &*e.key == key)
    }

    fn find_mut(&mut self, key: &str) -> Option<&mut Entry> {
        if &*self.first.key == key {
            return Some(&mut self.first);
        }
        self.rest.iter_mut().find(|e| &*e.key == key)
    }

    fn len(&self) -> usize {
        1 + self.rest.len()
    }
}

type Shard = BTreeMap<u64, Slot>;

/// One bucket: its keys spread over shards by the top bits of their hash.
pub struct Bucket {
    hasher: foldhash::quality::RandomState,
    shard_bits: u32,
    hash_mask: u64,
    shards: Box<[RwLock<Shard>]>,
    account: Arc<Account>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// One page of a list-keys walk.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` once the walk is done.
    pub cursor: Option<u64>,
}

impl Bucket {
    fn new(store: &Store, account: Arc<Account>) -> Self {
        Self {
            hasher: store.hasher.clone(),
            shard_bits: store.shard_bits,
            hash_mask: store.hash_mask,
            shards: (0..store.shards())
                .map(|_| RwLock::new(Shard::new()))
                .collect(),
            account,
        }
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key) & self.hash_mask
    }

    fn shard_index(&self, hash: u64) -> usize {
        // The top bits, so shard order is hash order; `checked_shr` covers a
        // single shard, where the shift would be 64.
        hash.checked_shr(64 - self.shard_bits).unwrap_or(0) as usize
    }

    fn shard_start(&self, index: usize) -> u64 {
        (index as u64)
            .checked_shl(64 - self.shard_bits)
            .unwrap_or(0)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[self.shard_index(hash)]
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        shard
            .get(&hash)
            .and_then(|slot| slot.find(key))
            .map(|e| e.value.clone())
    }

    pub fn exists(&self, key: &str) -> bool {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        shard
            .get(&hash)
            .is_some_and(|slot| slot.find(key).is_some())
    }

    /// Stores `value` under `key`, refusing it whole if it passes a quota.
    pub fn set(&self, key: String, value: Bytes) -> Result<(), Error> {
        self.account.check_key(&key)?;
        self.account.check_value(&value)?;
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        Self::put(&self.account, &mut shard, hash, key, value)
    }

    /// Inserts or overwrites under the caller's shard lock, with exact
    /// quota accounting.
    fn put(
        account: &Account,
        shard: &mut Shard,
        hash: u64,
        key: String,
        value: Bytes,
    ) -> Result<(), Error> {
        let new_size = (key.len() + value.len()) as u64;
        match shard.get_mut(&hash) {
            Some(slot) => match slot.find_mut(&key) {
                Some(entry) => {
                    let old_size = entry.size();
                    account.reserve(0, new_size.saturating_sub(old_size))?;
                    account.release(0, old_size.saturating_sub(new_size));
                    entry.value = value;
                }
                None => {
                    account.reserve(1, new_size)?;
                    slot.rest.push(Entry {
                        key: key.into_boxed_str(),
                        value,
                    });
                }
            },
            None => {
                account.reserve(1, new_size)?;
                let first = Entry {
                    key: key.into_boxed_str(),
                    value,
                };
                shard.insert(
                    hash,
                    Slot {
                        first,
                        rest: Vec::new(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Removes `key`; removing a missing key is not an error.
    pub fn delete(&self, key: &str) {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        let Some(slot) = shard.get_mut(&hash) else {
            return;
        };
        let removed = if &*slot.first.key == key {
            match slot.rest.pop() {
                Some(next) => Some(std::mem::replace(&mut slot.first, next)),
                None => shard.remove(&hash).map(|slot| slot.first),
            }
        } else {
            let at = slot.rest.iter().position(|e| &*e.key == key);
            at.map(|i| slot.rest.swap_remove(i))
        };
        if let Some(entry) = removed {
            self.account.release(1, entry.size());
        }
    }

    /// Adds `delta` to the decimal number stored under `key` (a missing key
    /// counts as 0) and returns the sum; atomic with every other write.
    pub fn increment(&self, key: String, delta: u64) -> Result<u64, Error> {
        self.account.check_key(&key)?;
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        let current = match shard.get(&hash).and_then(|slot| slot.find(&key)) {
            None => 0,
            Some(entry) => std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the value under {key:?} is not a decimal u64, so it cannot be incremented"
                    ))
                })?,
        };
        let sum = current.checked_add(delta).ok_or_else(|| {
            Error::Invalid(format!("incrementing {current} by {delta} overflows a u64"))
        })?;
        let value = Bytes::from(sum.to_string());
        Self::put(&self.account, &mut shard, hash, key, value)?;
        Ok(sum)
    }

    /// Values for `keys`, in order; refused if the answer would copy more
    /// than the call-size limit into the guest.
    pub fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<(String, Bytes)>>, Error> {
        let max = self.account.quotas.max_call_bytes;
        let mut total = 0usize;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.get(&key);
            if let Some(v) = &value {
                total += key.len() + v.len();
                if total > max {
                    return Err(Error::quota(
                        Quota::CallSize,
                        format!("get-many would copy over {max} bytes into the guest"),
                    ));
                }
            }
            out.push(value.map(|v| (key, v)));
        }
        Ok(out)
    }

    /// Sets each pair; like the WIT says, not atomic: pairs before a failing
    /// one stay set. Sizes are checked for every pair before any is written.
    pub fn set_many(&self, pairs: Vec<(String, Bytes)>) -> Result<(), Error> {
        for (key, value) in &pairs {
            self.account.check_key(key)?;
            self.account.check_value(value)?;
        }
        for (key, value) in pairs {
            self.set(key, value)?;
        }
        Ok(())
    }

    pub fn delete_many(&self, keys: &[String]) {
        for key in keys {
            self.delete(key);
        }
    }

    /// The page of keys after `cursor` (from the start when `None`), cut at
    /// the page and call-size limits.
    pub fn list_keys(&self, cursor: Option<u64>) -> Page {
        let mut page = Page {
            keys: Vec::new(),
            cursor: None,
        };
        let mut from = match cursor {
            None => 0,
            Some(last) => match last.checked_add(1) {
                Some(next) => next,
                None => return page,
            },
        };
        let max_keys = self.account.quotas.max_page_keys.max(1);
        let max_bytes = self.account.quotas.max_call_bytes;
        let mut bytes = 0usize;
        for index in self.shard_index(from)..self.shards.len() {
            from = from.max(self.shard_start(index));
            let shard = self.shards[index].read();
            for (&hash, slot) in shard.range(from..) {
                let slot_bytes: usize = slot.entries().map(|e| e.key.len()).sum();
                let full =
                    page.keys.len() + slot.len() > max_keys || bytes + slot_bytes > max_bytes;
                if full && !page.keys.is_empty() {
                    return page;
                }
                page.keys.extend(slot.entries().map(|e| e.key.to_string()));
                bytes += slot_bytes;
                page.cursor = Some(hash);
            }
        }
        page.cursor = None;
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ns_with(quotas: Quotas) -> Arc<Namespace> {
        Store::new(8).namespace(quotas)
    }

    fn ns() -> Arc<Namespace> {
        ns_with(Quotas::default())
    }

    fn walk(bucket: &Bucket) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = bucket.list_keys(cursor);
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return keys,
            }
        }
    }

    #[test]
    fn set_get_delete_round_trip() {
        let b = ns().open("").unwrap();
        assert_eq!(b.get("k"), None);
        b.set("k".into(), Bytes::from_static(b"v1")).unwrap();
        assert_eq!(b.get("k").as_deref(), Some(&b"v1"[..]));
        assert!(b.exists("k"));
        b.set("k".into(), Bytes::from_static(b"v22")).unwrap();
        assert_eq!(b.get("k").as_deref(), Some(&b"v22"[..]));
        b.delete("k");
        assert_eq!(b.get("k"), None);
        assert!(!b.exists("k"));
        b.delete("k");
    }

    #[test]
    fn empty_and_default_name_one_bucket_and_others_are_apart() {
        let ns = ns();
        ns.open("")
            .unwrap()
            .set("k".into(), Bytes::from_static(b"v"))
            .unwrap();
        assert_eq!(
            ns.open("default").unwrap().get("k").as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(ns.open("other").unwrap().get("k"), None);
    }

    #[test]
    fn namespaces_do_not_share_keys() {
        let store = Store::new(4);
        let a = store.namespace(Quotas::default());
        let b = store.namespace(Quotas::default());
        a.open("x")
            .unwrap()
            .set("k".into(), Bytes::from_static(b"a"))
            .unwrap();
        assert_eq!(b.open("x").unwrap().get("k"), None);
        assert!(walk(&b.open("x").unwrap()).is_empty());
        assert_eq!(b.usage(), Usage::default());
    }

    #[test]
    fn bucket_names_are_bounded() {
        let ns = ns_with(Quotas {
            max_buckets: 2,
            ..Quotas::default()
        });
        let long = "b".repeat(256);
        assert!(matches!(ns.open(&long), Err(Error::Invalid(_))));
        ns.open(&"b".repeat(255)).unwrap();
        ns.open("two").unwrap();
        ns.open("two").unwrap();
        let err = ns.open("three").unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota exceeded: the tenant already has 2 named buckets, the limit"
        );
        ns.open("default").unwrap();
    }

    #[test]
    fn size_quotas_refuse_whole_writes() {
        let ns = ns_with(Quotas {
            max_key_bytes: 4,
            max_value_bytes: 8,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        b.set("four".into(), Bytes::from(vec![0; 8])).unwrap();
        let err = b.set("fives".into(), Bytes::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota exceeded: key of 5 bytes is over the 4-byte limit"
        );
        let err = b.set("k".into(), Bytes::from(vec![0; 9])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota exceeded: value of 9 bytes is over the 8-byte limit"
        );
        assert_eq!(ns.usage(), Usage { keys: 1, bytes: 12 });
    }

    #[test]
    fn accounting_is_exact_across_overwrites_and_deletes() {
        let ns = ns_with(Quotas {
            max_keys: 2,
            max_bytes: 20,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        let other = ns.open("other").unwrap();
        b.set("a".into(), Bytes::from(vec![0; 9])).unwrap(); // 10 bytes
        other.set("b".into(), Bytes::from(vec![0; 4])).unwrap(); // 5 bytes
        assert_eq!(ns.usage(), Usage { keys: 2, bytes: 15 });
        let err = b.set("c".into(), Bytes::new()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Quota {
                    quota: Quota::Keys,
                    ..
                }
            ),
            "{err}"
        );
        let err = b.set("a".into(), Bytes::from(vec![0; 15])).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Quota {
                    quota: Quota::Bytes,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            b.get("a").unwrap().len(),
            9,
            "a refused write stores nothing"
        );
        b.set("a".into(), Bytes::from(vec![0; 1])).unwrap();
        assert_eq!(ns.usage(), Usage { keys: 2, bytes: 7 });
        other.delete("b");
        b.set("c".into(), Bytes::from(vec![0; 12])).unwrap();
        assert_eq!(ns.usage(), Usage { keys: 2, bytes: 15 });
        b.delete("a");
        b.delete("c");
        assert_eq!(ns.usage(), Usage::default());
    }

    #[test]
    fn increment_is_decimal_and_checked() {
        let b = ns().open("").unwrap();
        assert_eq!(b.increment("n".into(), 5).unwrap(), 5);
        assert_eq!(b.increment("n".into(), 7).unwrap(), 12);
        assert_eq!(b.get("n").as_deref(), Some(&b"12"[..]));
        b.set("s".into(), Bytes::from_static(b"abc")).unwrap();
        assert!(matches!(b.increment("s".into(), 1), Err(Error::Invalid(_))));
        b.set("m".into(), Bytes::from(u64::MAX.to_string()))
            .unwrap();
        let err = b.increment("m".into(), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument: incrementing 18446744073709551615 by 1 overflows a u64"
        );
        assert_eq!(b.get("m").unwrap(), Bytes::from(u64::MAX.to_string()));
    }

    #[test]
    fn concurrent_increments_add_up() {
        let b = ns().open("").unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        b.increment("n".into(), 1).unwrap();
                    }
                });
            }
        });
        assert_eq!(b.get("n").as_deref(), Some(&b"4000"[..]));
    }

    #[test]
    fn list_walk_returns_every_key_once_in_small_pages() {
        let ns = ns_with(Quotas {
            max_page_keys: 7,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        for i in 0..500 {
            b.set(format!("k{i}"), Bytes::new()).unwrap();
        }
        let first = b.list_keys(None);
        assert_eq!(first.keys.len(), 7);
        let keys = walk(&b);
        assert_eq!(keys.len(), 500);
        let unique: HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), 500);
    }

    #[test]
    fn list_walk_is_stable_under_concurrent_writes() {
        let ns = ns_with(Quotas {
            max_page_keys: 13,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        for i in 0..2000 {
            b.set(format!("stable{i}"), Bytes::new()).unwrap();
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let keys = std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    b.set(format!("churn{}", i % 300), Bytes::new()).unwrap();
                    b.delete(&format!("churn{}", (i + 150) % 300));
                    i += 1;
                }
            });
            let keys = walk(&b);
            stop.store(true, Ordering::Relaxed);
            keys
        });
        let stable: Vec<_> = keys.iter().filter(|k| k.starts_with("stable")).collect();
        let unique: HashSet<_> = stable.iter().collect();
        assert_eq!(stable.len(), 2000);
        assert_eq!(unique.len(), 2000);
    }

    #[test]
    fn list_pages_respect_the_call_size_limit() {
        let ns = ns_with(Quotas {
            max_call_bytes: 100,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        for i in 0..50 {
            b.set(format!("{i:0>10}"), Bytes::new()).unwrap();
        }
        let page = b.list_keys(None);
        assert_eq!(page.keys.len(), 10);
        assert!(page.cursor.is_some());
        assert_eq!(walk(&b).len(), 50);
    }

    #[test]
    fn cursor_at_the_end_of_the_hash_space_is_an_empty_last_page() {
        let b = ns().open("").unwrap();
        b.set("k".into(), Bytes::new()).unwrap();
        assert_eq!(
            b.list_keys(Some(u64::MAX)),
            Page {
                keys: vec![],
                cursor: None
            }
        );
    }

    #[test]
    fn colliding_hashes_share_a_slot_and_stay_correct() {
        // Keep two high bits (four shards' worth) and one low bit: 500 keys
        // land on 8 hash values.
        let mut store = Store::new(4);
        store.hash_mask = 0xC000_0000_0000_0001;
        let ns = store.namespace(Quotas {
            max_page_keys: 7,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        for i in 0..500 {
            b.set(format!("k{i}"), Bytes::from(i.to_string())).unwrap();
        }
        for i in 0..500 {
            assert_eq!(b.get(&format!("k{i}")), Some(Bytes::from(i.to_string())));
        }
        // A slot travels whole, so pages may pass the page size.
        let keys = walk(&b);
        assert_eq!(keys.len(), 500);
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 500);
        for i in (0..500).step_by(2) {
            b.delete(&format!("k{i}"));
        }
        assert_eq!(b.get("k0"), None);
        assert_eq!(b.get("k1"), Some(Bytes::from("1")));
        assert_eq!(walk(&b).len(), 250);
        assert_eq!(b.increment("k3".into(), 1).unwrap(), 4);
        assert_eq!(ns.usage().keys, 250);
    }

    #[test]
    fn single_shard_store_works() {
        let b = Store::new(1).namespace(Quotas::default()).open("").unwrap();
        for i in 0..100 {
            b.set(format!("k{i}"), Bytes::new()).unwrap();
        }
        assert_eq!(walk(&b).len(), 100);
        assert!(b.exists("k42"));
    }

    #[test]
    fn get_many_is_bounded_and_ordered() {
        let ns = ns_with(Quotas {
            max_call_bytes: 10,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        b.set("a".into(), Bytes::from_static(b"1234")).unwrap();
        b.set("b".into(), Bytes::from_static(b"1234")).unwrap();
        let got = b
            .get_many(vec!["b".into(), "x".into(), "a".into()])
            .unwrap();
        assert_eq!(
            got,
            vec![
                Some(("b".into(), Bytes::from_static(b"1234"))),
                None,
                Some(("a".into(), Bytes::from_static(b"1234")))
            ]
        );
        let err = b
            .get_many(vec!["a".into(), "b".into(), "a".into()])
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Quota {
                quota: Quota::CallSize,
                ..
            }
        ));
    }

    #[test]
    fn set_many_checks_sizes_before_writing() {
        let ns = ns_with(Quotas {
            max_value_bytes: 2,
            ..Quotas::default()
        });
        let b = ns.open("").unwrap();
        let err = b
            .set_many(vec![
                ("a".into(), Bytes::from_static(b"1")),
                ("b".into(), Bytes::from_static(b"123")),
            ])
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Quota {
                quota: Quota::ValueSize,
                ..
            }
        ));
        assert_eq!(b.get("a"), None);
        b.set_many(vec![("a".into(), Bytes::from_static(b"1"))])
            .unwrap();
        b.delete_many(&["a".into(), "zz".into()]);
        assert_eq!(ns.usage(), Usage::default());
    }
}
