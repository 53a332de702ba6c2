//! The seam between the store's front and the place data lives.
//!
//! A backend knows keys and bytes. It sees only calls the front has
//! checked: bucket names are never empty (the default bucket arrives as
//! [`super::DEFAULT_BUCKET`]), keys and values fit their size quotas. What
//! needs the stored state is the backend's to enforce, exactly and
//! atomically with the write: the tenant's key, byte and bucket quotas.
//!
//! The promises every backend keeps are written once, as the conformance
//! suite in `store/conformance.rs`, and every backend runs it.
//!
//! A tenant's calls reach a backend's [`NamespaceBackend`] and
//! [`BucketBackend`] through the front's enum of backends
//! ([`super::Namespace`]), never through a trait object: their `async fn`s
//! are called on concrete types, so a backend that never waits (the
//! in-memory one) costs no boxed future per call.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Error, Quotas};

/// Where every tenant's data lives; one per process. Reached once per
/// tenant deployed or removed, so a trait object is fine here.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// `tenant`'s namespace behind the store's front, created empty on
    /// first use. Two calls with the same tenant reach the same data, under
    /// the quotas of the later call (a tenant's limits changed at runtime
    /// apply to what it holds).
    fn front(&self, tenant: &str, quotas: Quotas) -> Result<super::Namespace, Error>;

    /// Deletes everything `tenant` holds, durably where the backend is
    /// durable; its next namespace starts empty.
    async fn purge(&self, tenant: &str) -> Result<(), Error>;

    /// Whether the store answers now, or why not: `/readyz` asks. A
    /// backend in this process always does.
    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Called before each namespace of `tenant` is made, for every version
    /// of it: a backend several runners share reads the tenant's
    /// generation here, which a purge through any of them advances, so
    /// that the writes of namespaces made before a purge are refused after
    /// it in every runner. A backend only this process reaches has its
    /// fence ([`super::Fence`]) for that.
    async fn enter(&self, _tenant: &str) -> Result<(), Error> {
        Ok(())
    }

    /// [`Backend::enter`] for many tenants at once (start-up), ahead of
    /// their namespaces: the `enter` that comes before each of them then
    /// costs nothing.
    async fn enter_many(&self, _tenants: &[&str]) -> Result<(), Error> {
        Ok(())
    }

    /// Drops what this process keeps about `tenant`'s data besides the
    /// data (cached usage, buckets known to exist), because another process
    /// sharing the store removed the tenant and may purge it. A backend
    /// only this process reaches keeps nothing such.
    fn forget(&self, _tenant: &str) {}
}

/// One tenant's buckets and usage.
#[expect(
    async_fn_in_trait,
    reason = "called only on concrete backends, whose futures are known to be Send"
)]
pub trait NamespaceBackend: Send + Sync {
    type Bucket: BucketBackend;

    /// Opens (creating on first use) the bucket `name`, refusing a new one
    /// past the tenant's bucket quota.
    async fn open(&self, name: &str) -> Result<Arc<Self::Bucket>, Error>;

    /// Keys and bytes the tenant holds; may lag writes in flight.
    fn usage(&self) -> Usage;
}

/// One bucket of one tenant.
#[expect(
    async_fn_in_trait,
    reason = "called only on concrete backends, whose futures are known to be Send"
)]
pub trait BucketBackend: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error>;

    async fn exists(&self, key: &str) -> Result<bool, Error>;

    /// Inserts or overwrites; refused whole past the key or byte quota.
    async fn set(&self, key: String, value: Bytes) -> Result<(), Error>;

    /// Removes `key`; a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), Error>;

    /// Atomically adds `delta` to the decimal number under `key` (missing:
    /// 0), read as `delta`'s kind of number; returns the sum.
    async fn increment(&self, key: String, delta: Delta) -> Result<i128, Error>;

    /// Atomically sets `key` to `value` if its value is still `expected`
    /// (`None`: the key is absent); otherwise changes nothing and answers
    /// the value it found.
    async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    ) -> Result<Swap, Error>;

    /// The value of each key, in order.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, Error>;

    /// Sets each pair in order; pairs before a failing one stay set.
    async fn set_many(&self, pairs: Vec<(String, Bytes)>) -> Result<(), Error>;

    async fn delete_many(&self, keys: &[String]) -> Result<(), Error>;

    /// The page after `cursor`: every key that exists for a whole walk is
    /// returned exactly once, and a page stays within `limits` unless a
    /// single indivisible group of keys is larger.
    async fn list_keys(&self, cursor: Option<u64>, limits: PageLimits) -> Result<Page, Error>;

    /// Stores `value` under `key` with the options of
    /// `wasmcloud:keyvalue`'s `set`; `Ok(false)`: `if_absent` was set and
    /// the key exists, so nothing was written. A backend that cannot keep
    /// an expiry refuses a `ttl` rather than ignore it; this default keeps
    /// none, and does `if_absent` by compare-and-swap.
    async fn set_with(
        &self,
        key: String,
        value: Bytes,
        options: SetOptions,
    ) -> Result<bool, Error> {
        if options.ttl.is_some() {
            return Err(unsupported("expiry (ttl-ms)"));
        }
        if options.if_absent {
            let swap = self.compare_and_swap(key, None, value).await?;
            return Ok(swap == Swap::Done);
        }
        self.set(key, value).await.map(|()| true)
    }

    /// `key`'s value and its version: an opaque token that changes with
    /// every write of the key, so a value changed and changed back has
    /// another version.
    async fn current(&self, _key: &str) -> Result<Option<Versioned>, Error> {
        Err(unsupported("versioned compare-and-swap"))
    }

    /// Sets `key` to `value` if every requirement holds (an absent key has
    /// no version and no value, so it meets none), atomically with every
    /// other write of the key; otherwise changes nothing and answers the
    /// current entry.
    async fn swap(&self, _key: String, _value: Bytes, _require: Require) -> Result<Swapped, Error> {
        Err(unsupported("versioned compare-and-swap"))
    }

    /// The keys starting with `prefix`, in key order, after `after` (the
    /// last key of the previous page): every such key that exists for a
    /// whole walk is returned exactly once, at a cost that follows the keys
    /// under the prefix, not the bucket.
    async fn list_prefix(
        &self,
        _prefix: &str,
        _after: Option<&str>,
        _limits: PageLimits,
    ) -> Result<KeyPage, Error> {
        Err(unsupported("prefix listing"))
    }
}

/// The error of a backend without a feature.
pub fn unsupported(feature: &str) -> Error {
    Error::Unsupported(format!("{feature} is not supported by this store backend"))
}

/// How `set_with` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// The entry expires this long after the write.
    pub ttl: Option<std::time::Duration>,
    /// Write only if the key does not exist.
    pub if_absent: bool,
}

/// A value and the version of the write that stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub version: String,
}

/// What a versioned swap requires of the current entry; at least one is
/// set (the front checks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Require {
    pub version: Option<String>,
    pub value: Option<Bytes>,
}

impl Require {
    /// Whether `current` meets every requirement.
    pub fn met_by(&self, current: Option<&Versioned>) -> bool {
        let version = self
            .version
            .as_ref()
            .is_none_or(|want| current.is_some_and(|c| &c.version == want));
        let value = self
            .value
            .as_ref()
            .is_none_or(|want| current.is_some_and(|c| c.value == want));
        version && value
    }
}

/// How a versioned swap ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swapped {
    Done,
    /// A requirement did not hold; the entry as it is (`None`: absent).
    Stale(Option<Versioned>),
}

/// An increment's amount, which also says how the stored decimal is read:
/// as a u64 (`wasi:keyvalue@0.2.0-draft`) or an i64 (`0.2.0-draft2`). Both
/// store decimal ASCII, so a counter is the same whichever version counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delta {
    U64(u64),
    I64(i64),
}

impl Delta {
    pub fn amount(self) -> i128 {
        match self {
            Delta::U64(d) => d.into(),
            Delta::I64(d) => d.into(),
        }
    }

    /// The number kind's name, for errors.
    pub fn kind(self) -> &'static str {
        match self {
            Delta::U64(_) => "u64",
            Delta::I64(_) => "i64",
        }
    }

    /// A stored value read as this kind of number.
    pub fn parse(self, stored: &[u8]) -> Option<i128> {
        let text = std::str::from_utf8(stored).ok()?;
        match self {
            Delta::U64(_) => text.parse::<u64>().ok().map(i128::from),
            Delta::I64(_) => text.parse::<i64>().ok().map(i128::from),
        }
    }

    /// Whether `sum` is a number of this kind.
    pub fn holds(self, sum: i128) -> bool {
        match self {
            Delta::U64(_) => u64::try_from(sum).is_ok(),
            Delta::I64(_) => i64::try_from(sum).is_ok(),
        }
    }

    /// The sum of this delta and the value `stored` under `key` (`None`:
    /// absent, 0), or the error every backend gives when that value is not
    /// this kind of number or the sum leaves its range.
    pub fn add_to(self, key: &str, stored: Option<&[u8]>) -> Result<i128, Error> {
        let current = match stored {
            None => 0,
            Some(value) => self.parse(value).ok_or_else(|| {
                Error::Invalid(format!(
                    "the value under {key:?} is not a decimal {}, so it cannot be incremented",
                    self.kind()
                ))
            })?,
        };
        // i128 holds any sum of two u64s or i64s.
        let sum = current + self.amount();
        if !self.holds(sum) {
            return Err(Error::Invalid(format!(
                "incrementing {current} by {} leaves the {} range",
                self.amount(),
                self.kind()
            )));
        }
        Ok(sum)
    }
}

/// How a compare-and-swap ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// The value was still the expected one and is now the new one.
    Done,
    /// The value had changed; this is what it is now (`None`: absent).
    Changed(Option<Bytes>),
}

/// One page of a key-ordered walk.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// The last key of this page, where the next starts after; `None` once
    /// the walk is done.
    pub next: Option<String>,
}

/// How much one list-keys page may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimits {
    /// Keys in the page; at least 1.
    pub max_keys: usize,
    /// Bytes of key text in the page.
    pub max_bytes: usize,
}

/// One page of a list-keys walk.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` once the walk is done.
    pub cursor: Option<u64>,
}

/// How much of its quota a tenant uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
}
