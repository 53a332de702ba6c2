//! The key-value store behind `wasi:keyvalue`: one seam, several backends.
//!
//! Layout:
//! - [`backend`]: the traits a backend implements: the process-wide
//!   [`Backend`], a tenant's [`NamespaceBackend`], a [`BucketBackend`]. They
//!   are async, so a backend may wait on a disk or a network; the in-memory
//!   one never does, and is called through the same seam without a boxed
//!   future.
//! - [`memory`]: the sharded in-memory backend, the default; with its
//!   journal on disk ([`memory::journal`], `--data-dir`), the durable
//!   backend.
//! - [`location`]: the `--store` setting: in this process, or in Redis.
//! - [`redis`]: the Redis backend (`--store redis://...`), for several
//!   runners sharing their tenants' data.
//! - [`quota`]: the quotas, and the exact account of keys and bytes that a
//!   backend keeping its own counts shares.
//! - this file: [`Error`], whose text starts with a stable token, and the
//!   tenant-facing front ([`Namespace`], [`Bucket`]), one enum over the
//!   backends. The front checks what
//!   needs no stored state (bucket-name, key and value sizes, the page size,
//!   bytes copied into the guest per call) before a backend sees the call,
//!   so every backend enforces those the same way; quotas on what is stored
//!   (keys, bytes, buckets) need the stored state and are the backend's.
//!
//! Isolation is structural: a guest only reaches the [`Namespace`] the
//! runner bound into its host state, and bucket names are looked up inside
//! it.

pub mod backend;
pub mod location;
pub mod memory;
pub mod quota;
pub mod redis;

#[cfg(test)]
pub(crate) mod conformance;

use std::sync::Arc;

use bytes::Bytes;

pub use self::backend::{
    Backend, BucketBackend, Delta, KeyPage, NamespaceBackend, Page, PageLimits, Require,
    SetOptions, Swap, Swapped, Usage, Versioned,
};
pub use self::quota::{Quota, Quotas};

/// Longest bucket name a guest may open, in bytes.
pub const MAX_BUCKET_NAME_BYTES: usize = 255;

/// The name a backend sees for the default bucket, whichever of `""` and
/// `"default"` the guest used (wasmtime's and Spin's conventions).
pub const DEFAULT_BUCKET: &str = "default";

/// A store operation's failure, as the guest sees it through
/// `wasi:keyvalue/store.error.other`: the text starts with the variant's
/// stable token ([`Error::token`]) and a colon, so a guest can branch on the
/// token whatever the rest says. The README lists the tokens.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A write (or a call's transfer) would pass a quota; nothing was stored.
    #[error("quota-exceeded: {detail}")]
    Quota { quota: Quota, detail: String },
    /// The guest passed something the store can never accept.
    #[error("invalid-argument: {0}")]
    Invalid(String),
    /// The backend could not be reached or failed; the call may succeed
    /// later.
    #[error("store-unavailable: {0}")]
    Unavailable(String),
    /// The backend does not offer the feature the call needs (expiry on
    /// a backend that cannot keep it, say); the call never succeeds there.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The tenant may not open the bucket (`key-value-stores`).
    #[error("access-denied: {0}")]
    Denied(String),
}

impl Error {
    pub fn quota(quota: Quota, detail: impl Into<String>) -> Self {
        Error::Quota {
            quota,
            detail: detail.into(),
        }
    }

    /// The token at the start of the error's text.
    pub fn token(&self) -> &'static str {
        match self {
            Error::Quota { .. } => "quota-exceeded",
            Error::Invalid(_) => "invalid-argument",
            Error::Unavailable(_) => "store-unavailable",
            Error::Unsupported(_) => "unsupported",
            Error::Denied(_) => "access-denied",
        }
    }
}

/// One tenant's key-value namespace: its backend's namespace behind the
/// checks every backend shares.
pub struct Namespace {
    inner: NamespaceRef,
    quotas: Arc<Quotas>,
    fence: Arc<Fence>,
}

/// Stops a tenant's writes before its data is purged, so that none lands
/// after: every version of the tenant (and every instance of each, tasks
/// left running included) writes through the same fence, and once it is
/// closed a write is refused, with the writes already past it waited for.
/// A tenant made again under the name gets a new fence.
#[derive(Debug, Default)]
pub struct Fence {
    /// Writes in progress, and [`Fence::CLOSED`] once closed.
    state: std::sync::atomic::AtomicUsize,
}

impl Fence {
    const CLOSED: usize = 1 << (usize::BITS - 1);

    /// Lets one write through, or refuses it: the fence is closed.
    fn pass(&self) -> Result<Passing<'_>, Error> {
        use std::sync::atomic::Ordering;
        if self.state.fetch_add(1, Ordering::Acquire) & Self::CLOSED != 0 {
            self.state.fetch_sub(1, Ordering::Release);
            return Err(purged());
        }
        Ok(Passing(self))
    }

    /// Closes the fence, and returns once no write is past it.
    pub async fn close(&self) {
        use std::sync::atomic::Ordering;
        self.state.fetch_or(Self::CLOSED, Ordering::AcqRel);
        // Writes past it are single store calls, over in moments.
        while self.state.load(Ordering::Acquire) != Self::CLOSED {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// The error of a write after its tenant's purge: past its fence here, or
/// of an earlier generation than the shared store's (another runner
/// purged it).
pub(crate) fn purged() -> Error {
    Error::Unavailable("the tenant was removed and its data purged".into())
}

/// A write past the fence, until dropped.
struct Passing<'a>(&'a Fence);

impl Drop for Passing<'_> {
    fn drop(&mut self) {
        self.0
            .state
            .fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

/// The backends a front reaches, each as its own type: a call is one
/// `match` and a direct call of the backend's `async fn`. The in-memory
/// backend's future stays inline (a boxed future cost a third of a `get`);
/// Redis's, hundreds of bytes and a network round trip behind it, is
/// boxed, so it does not grow every call's future.
#[derive(Clone)]
enum NamespaceRef {
    Memory(Arc<memory::Namespace>),
    Redis(Arc<redis::Namespace>),
}

#[derive(Clone)]
enum BucketRef {
    Memory(Arc<memory::Bucket>),
    Redis(Arc<redis::Bucket>),
}

/// Runs `$call` on whichever backend `$inner` holds: every key-value
/// operation is written once here and once in each backend.
macro_rules! dispatch {
    ($inner:expr, $kind:ident, $trait:ident :: $method:ident ($($arg:expr),*)) => {
        match $inner {
            $kind::Memory(b) => $trait::$method(&**b, $($arg),*).await,
            $kind::Redis(b) => Box::pin($trait::$method(&**b, $($arg),*)).await,
        }
    };
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

impl Namespace {
    /// `tenant`'s namespace in `backend`, under `quotas`.
    pub fn new(backend: &dyn Backend, tenant: &str, quotas: Quotas) -> Result<Self, Error> {
        backend.front(tenant, quotas)
    }

    /// The front over a backend's namespace.
    fn over(inner: NamespaceRef, quotas: Quotas) -> Self {
        Self {
            inner,
            quotas: Arc::new(quotas),
            fence: Arc::default(),
        }
    }

    /// The same namespace (its data, usage and fence), open to `buckets`
    /// alone (`None`: any): a tenant's component with `key-value-stores`
    /// of its own.
    pub fn with_buckets(&self, buckets: Option<Arc<[String]>>) -> Self {
        let mut quotas = (*self.quotas).clone();
        quotas.buckets = buckets;
        Self {
            inner: self.inner.clone(),
            quotas: Arc::new(quotas),
            fence: self.fence.clone(),
        }
    }

    /// The fence its writes pass.
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// The same namespace, its writes through `fence`.
    pub fn fenced(mut self, fence: Arc<Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// Opens a bucket by name, creating it on first use.
    pub async fn open(&self, name: &str) -> Result<Bucket, Error> {
        let name = if name.is_empty() {
            DEFAULT_BUCKET
        } else {
            name
        };
        if name.len() > MAX_BUCKET_NAME_BYTES {
            return Err(Error::Invalid(format!(
                "bucket name of {} bytes is over the {MAX_BUCKET_NAME_BYTES}-byte limit",
                name.len()
            )));
        }
        if let Some(allowed) = &self.quotas.buckets
            && !allowed.iter().any(|bucket| bucket == name)
        {
            return Err(Error::Denied(format!(
                "bucket {name:?} is not among the tenant's key-value-stores"
            )));
        }
        let _passing = self.fence.pass()?;
        let inner = match &self.inner {
            NamespaceRef::Memory(ns) => {
                BucketRef::Memory(NamespaceBackend::open(&**ns, name).await?)
            }
            NamespaceRef::Redis(ns) => {
                BucketRef::Redis(Box::pin(NamespaceBackend::open(&**ns, name)).await?)
            }
        };
        Ok(Bucket {
            inner,
            quotas: self.quotas.clone(),
            fence: self.fence.clone(),
        })
    }

    pub fn usage(&self) -> Usage {
        match &self.inner {
            NamespaceRef::Memory(ns) => NamespaceBackend::usage(&**ns),
            NamespaceRef::Redis(ns) => NamespaceBackend::usage(&**ns),
        }
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }
}

/// An open bucket of one tenant.
#[derive(Clone)]
pub struct Bucket {
    inner: BucketRef,
    quotas: Arc<Quotas>,
    fence: Arc<Fence>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").finish_non_exhaustive()
    }
}

impl Bucket {
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        dispatch!(&self.inner, BucketRef, BucketBackend::get(key))
    }

    /// [`Bucket::get`] without a future, copied out for a guest, where the
    /// backend answers reads without waiting (in memory, with or without a
    /// data directory); `None` where it may wait (Redis).
    pub fn get_now(&self, key: &str) -> Option<Result<Option<Vec<u8>>, Error>> {
        match &self.inner {
            BucketRef::Memory(b) => Some(Ok(b.get_copied(key))),
            BucketRef::Redis(_) => None,
        }
    }

    /// [`Bucket::exists`] without a future, as [`Bucket::get_now`].
    pub fn exists_now(&self, key: &str) -> Option<Result<bool, Error>> {
        match &self.inner {
            BucketRef::Memory(b) => Some(Ok(b.exists(key))),
            BucketRef::Redis(_) => None,
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        dispatch!(&self.inner, BucketRef, BucketBackend::exists(key))
    }

    /// Stores `value` under `key`, refusing it whole if it passes a quota.
    pub async fn set(&self, key: String, value: Bytes) -> Result<(), Error> {
        self.quotas.check_key(&key)?;
        self.quotas.check_value(&value)?;
        let _passing = self.fence.pass()?;
        dispatch!(&self.inner, BucketRef, BucketBackend::set(key, value))
    }

    /// Removes `key`; removing a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let _passing = self.fence.pass()?;
        dispatch!(&self.inner, BucketRef, BucketBackend::delete(key))
    }

    /// Adds `delta` to the decimal u64 stored under `key` (a missing key
    /// counts as 0) and returns the sum; atomic with every other write.
    pub async fn increment(&self, key: String, delta: u64) -> Result<u64, Error> {
        let sum = self.add(key, Delta::U64(delta)).await?;
        u64::try_from(sum).map_err(|_| wrong_kind(sum))
    }

    /// [`Bucket::increment`] on a decimal i64, by a signed `delta`.
    pub async fn increment_signed(&self, key: String, delta: i64) -> Result<i64, Error> {
        let sum = self.add(key, Delta::I64(delta)).await?;
        i64::try_from(sum).map_err(|_| wrong_kind(sum))
    }

    async fn add(&self, key: String, delta: Delta) -> Result<i128, Error> {
        self.quotas.check_key(&key)?;
        let _passing = self.fence.pass()?;
        dispatch!(&self.inner, BucketRef, BucketBackend::increment(key, delta))
    }

    /// Sets `key` to `value` only if its value is still `expected` (`None`:
    /// absent), atomically with every other write of the key. Values are
    /// compared, not versions: a value changed and changed back counts as
    /// unchanged.
    pub async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    ) -> Result<Swap, Error> {
        self.quotas.check_key(&key)?;
        self.quotas.check_value(&value)?;
        let _passing = self.fence.pass()?;
        dispatch!(
            &self.inner,
            BucketRef,
            BucketBackend::compare_and_swap(key, expected, value)
        )
    }

    /// Values for `keys`, in order; refused if the answer would copy more
    /// than the call-size limit into the guest.
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<(String, Bytes)>>, Error> {
        self.quotas.check_batch(keys.len())?;
        let values = dispatch!(&self.inner, BucketRef, BucketBackend::get_many(&keys))?;
        let max = self.quotas.max_call_bytes;
        let mut total = 0usize;
        let mut out = Vec::with_capacity(keys.len());
        for (key, value) in keys.into_iter().zip(values) {
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
    pub async fn set_many(&self, pairs: Vec<(String, Bytes)>) -> Result<(), Error> {
        self.quotas.check_batch(pairs.len())?;
        for (key, value) in &pairs {
            self.quotas.check_key(key)?;
            self.quotas.check_value(value)?;
        }
        let _passing = self.fence.pass()?;
        dispatch!(&self.inner, BucketRef, BucketBackend::set_many(pairs))
    }

    pub async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        self.quotas.check_batch(keys.len())?;
        let _passing = self.fence.pass()?;
        dispatch!(&self.inner, BucketRef, BucketBackend::delete_many(keys))
    }

    /// The page of keys after `cursor` (from the start when `None`), cut at
    /// the page and call-size limits.
    pub async fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        let limits = self.page_limits();
        dispatch!(
            &self.inner,
            BucketRef,
            BucketBackend::list_keys(cursor, limits)
        )
    }

    /// The most one list-keys page holds.
    pub fn page_limits(&self) -> PageLimits {
        PageLimits {
            max_keys: self.quotas.max_page_keys.max(1),
            max_bytes: self.quotas.max_call_bytes,
        }
    }
}

/// The longest expiry a write may ask for: ten years, far past any real
/// use, and far from overflowing a clock.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

impl Bucket {
    /// `wasmcloud:keyvalue`'s set: `Ok(false)` when `options.if_absent`
    /// found the key there, and nothing was written. An expiry the backend
    /// cannot keep is refused, never ignored.
    pub async fn set_with(
        &self,
        key: String,
        value: Bytes,
        options: SetOptions,
    ) -> Result<bool, Error> {
        self.quotas.check_key(&key)?;
        self.quotas.check_value(&value)?;
        if let Some(ttl) = options.ttl
            && (ttl.is_zero() || ttl > MAX_TTL)
        {
            return Err(Error::Invalid(format!(
                "an expiry of {} ms is outside 1 ms to {} ms",
                ttl.as_millis(),
                MAX_TTL.as_millis()
            )));
        }
        let _passing = self.fence.pass()?;
        dispatch!(
            &self.inner,
            BucketRef,
            BucketBackend::set_with(key, value, options)
        )
    }

    /// `key`'s value and version, for a later [`Bucket::swap`].
    pub async fn current(&self, key: &str) -> Result<Option<Versioned>, Error> {
        dispatch!(&self.inner, BucketRef, BucketBackend::current(key))
    }

    /// Sets `key` to `value` if the current entry meets `require` (at least
    /// one requirement: an unconditional write is `set`'s).
    pub async fn swap(
        &self,
        key: String,
        value: Bytes,
        require: Require,
    ) -> Result<Swapped, Error> {
        if require.version.is_none() && require.value.is_none() {
            return Err(Error::Invalid(
                "a swap needs at least one precondition (require-version or require-value)".into(),
            ));
        }
        self.quotas.check_key(&key)?;
        self.quotas.check_value(&value)?;
        let _passing = self.fence.pass()?;
        dispatch!(
            &self.inner,
            BucketRef,
            BucketBackend::swap(key, value, require)
        )
    }

    /// The page of keys starting with `prefix` after `cursor` (the last key
    /// of the previous page), in key order, cut at the page and call-size
    /// limits.
    pub async fn list_prefix(&self, prefix: &str, cursor: Option<&str>) -> Result<KeyPage, Error> {
        let limits = self.page_limits();
        dispatch!(
            &self.inner,
            BucketRef,
            BucketBackend::list_prefix(prefix, cursor, limits)
        )
    }
}

/// A backend answered an increment with a number outside its kind, which
/// [`BucketBackend::increment`] rules out.
fn wrong_kind(sum: i128) -> Error {
    Error::Unavailable(format!(
        "the backend answered an increment with {sum}, out of range"
    ))
}

#[cfg(test)]
mod fence {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Error, Fence};

    #[tokio::test]
    async fn a_closed_fence_waits_for_writes_past_it_and_refuses_the_rest() {
        let fence = Arc::new(Fence::default());
        let passing = fence.pass().expect("open");
        let closing = tokio::spawn({
            let fence = fence.clone();
            async move { fence.close().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "closed with a write past it");
        assert_eq!(
            fence.pass().err(),
            Some(Error::Unavailable(
                "the tenant was removed and its data purged".into()
            ))
        );
        drop(passing);
        closing.await.expect("closed");
        assert!(fence.pass().is_err());
    }
}
