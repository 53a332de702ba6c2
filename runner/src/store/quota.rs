//! Quotas, and the exact account of what a tenant holds.
//!
//! [`Quotas::check_key`] and [`Quotas::check_value`] need no stored state:
//! the store's front applies them before any backend sees a call.
//! [`Account`] counts keys and bytes for a backend that keeps its own
//! counts; it takes room for a write or refuses it whole.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Error, Usage};

/// Per-tenant limits on what the store holds and what one call may copy.
/// Their defaults are the declared `max-key-bytes`, `max-keys`, ... limits
/// ([`crate::limits`]).
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
    /// Most keys one batch call (get-many, set-many, delete-many) may name.
    pub max_batch_keys: usize,
    /// The buckets the tenant may open, by name (`key-value-stores`);
    /// `None`: any.
    pub buckets: Option<std::sync::Arc<[String]>>,
}

impl Quotas {
    pub fn check_key(&self, key: &str) -> Result<(), Error> {
        let max = self.max_key_bytes;
        if key.len() > max {
            return Err(Error::quota(
                Quota::KeySize,
                format!("key of {} bytes is over the {max}-byte limit", key.len()),
            ));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        let max = self.max_value_bytes;
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

    /// Refuses a batch call naming more keys than `max_batch_keys`, before
    /// any work is done: what one host call may cost is bounded.
    pub fn check_batch(&self, keys: usize) -> Result<(), Error> {
        let max = self.max_batch_keys;
        if keys > max {
            return Err(Error::quota(
                Quota::BatchSize,
                format!("a batch of {keys} keys is over the {max}-key limit"),
            ));
        }
        Ok(())
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
    BatchSize,
}

impl Quota {
    pub const ALL: [Quota; 7] = [
        Quota::KeySize,
        Quota::ValueSize,
        Quota::Keys,
        Quota::Bytes,
        Quota::Buckets,
        Quota::CallSize,
        Quota::BatchSize,
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
            Quota::BatchSize => "batch_size",
        }
    }
}

/// What a tenant holds against its key and byte quotas.
#[derive(Debug)]
pub struct Account {
    /// The quotas on what is stored; an update of the tenant's limits
    /// changes them in place, for the data the tenant already holds.
    max_keys: AtomicU64,
    max_bytes: AtomicU64,
    max_buckets: AtomicUsize,
    keys: AtomicU64,
    bytes: AtomicU64,
}

impl Account {
    pub fn new(quotas: &Quotas) -> Self {
        Self {
            max_keys: AtomicU64::new(quotas.max_keys),
            max_bytes: AtomicU64::new(quotas.max_bytes),
            max_buckets: AtomicUsize::new(quotas.max_buckets),
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Applies a tenant's new quotas. Data already held past a lowered one
    /// is kept; the account then refuses growth until usage is under it.
    pub fn set_quotas(&self, quotas: &Quotas) {
        self.max_keys.store(quotas.max_keys, Ordering::Relaxed);
        self.max_bytes.store(quotas.max_bytes, Ordering::Relaxed);
        self.max_buckets
            .store(quotas.max_buckets, Ordering::Relaxed);
    }

    /// Refuses a new named bucket when the tenant has `named` already and
    /// that is its quota.
    pub fn check_new_bucket(&self, named: usize) -> Result<(), Error> {
        let max = self.max_buckets.load(Ordering::Relaxed);
        if named >= max {
            return Err(Error::quota(
                Quota::Buckets,
                format!("the tenant already has {max} named buckets, the limit"),
            ));
        }
        Ok(())
    }

    /// Takes room for a write, or refuses it whole. Callers hold the lock of
    /// the key they change, so each delta is exact; the atomics only
    /// arbitrate between keys.
    pub fn reserve(&self, new_keys: u64, grow: u64) -> Result<(), Error> {
        if new_keys > 0 {
            let max = self.max_keys.load(Ordering::Relaxed);
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
            let max = self.max_bytes.load(Ordering::Relaxed);
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

    /// Gives back room a delete or a shrinking overwrite freed.
    pub fn release(&self, keys: u64, bytes: u64) {
        self.keys.fetch_sub(keys, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Counts data loaded at start-up, whatever the quota: it was accepted
    /// when written, and dropping it would lose it.
    pub fn restore(&self, keys: u64, bytes: u64) {
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn usage(&self) -> Usage {
        Usage {
            keys: self.keys.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}
