//! The sharded in-memory backend, the default.
//!
//! Layout: a process-wide [`Store`] hands each tenant one namespace. A
//! namespace holds the tenant's buckets and its quota account; a bucket is
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
//! Each namespace has its own hash seed, so what a tenant learns about the
//! hash order from its own cursors says nothing about another tenant's.
//!
//! Every call completes without waiting: the async trait methods are ready
//! at their first poll, and no lock is held across an await.
//!
//! With a [`Journal`] (`--data-dir`) this is the durable backend: each
//! write is queued to the journal under its shard lock and returns a
//! [`Pending`] that the caller awaits before acknowledging it, and each
//! namespace starts from what the journal saved, hash seed included; see
//! [`journal`].

pub mod journal;

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::collections::btree_map::Entry as Place;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use foldhash::SharedSeed;
use foldhash::quality::SeedableRandomState;
use parking_lot::{Mutex, RwLock};

use self::journal::{Expiry, Fsync, Journal, Pending, random_seed};
use super::backend::{self, Delta, Page, PageLimits, Swap, Usage};
use super::quota::{Account, Quotas};
use super::{DEFAULT_BUCKET, Error};

/// The in-memory backend: it fixes the shard count and holds every tenant's
/// namespace.
pub struct Store {
    shard_bits: u32,
    /// All ones, except in tests that force hash collisions.
    hash_mask: u64,
    namespaces: Mutex<HashMap<Box<str>, Arc<Namespace>>>,
    journal: Option<Arc<Journal>>,
    /// When every namespace's clock started.
    clock: Clock,
    /// Namespaces with entries to expire, and the thread that expires them
    /// (it stops when the store is dropped).
    expiries: Arc<Expiries>,
    _reaper: crate::periodic::Periodic,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards())
            .field("tenants", &self.namespaces.lock().len())
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store whose buckets have `shards` shards; `shards` must be a power of
    /// two (the config validates it).
    pub fn new(shards: usize) -> Self {
        assert!(
            shards.is_power_of_two(),
            "shard count {shards} is not a power of two"
        );
        let expiries = Arc::new(Expiries::default());
        let reaped = Arc::downgrade(&expiries);
        Self {
            shard_bits: shards.trailing_zeros(),
            hash_mask: u64::MAX,
            namespaces: Mutex::new(HashMap::new()),
            journal: None,
            clock: Clock(std::time::Instant::now()),
            expiries,
            _reaper: crate::periodic::Periodic::start("store-expiry", EXPIRY_INTERVAL, move || {
                if let Some(expiries) = reaped.upgrade() {
                    expiries.reap();
                }
            }),
        }
    }

    /// The durable backend: a store like [`Store::new`]'s whose writes are
    /// kept in the data directory `dir`, durable as `fsync` says, and whose
    /// namespaces start from what `dir` holds.
    pub fn durable(shards: usize, dir: &std::path::Path, fsync: Fsync) -> anyhow::Result<Self> {
        Ok(Self::on(shards, Journal::open(dir, fsync)?))
    }

    /// A store whose writes go to `journal`.
    pub fn on(shards: usize, journal: Journal) -> Self {
        Self {
            journal: Some(Arc::new(journal)),
            ..Self::new(shards)
        }
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_deref()
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
}

impl Store {
    /// `tenant`'s namespace: on first use, empty, or with a journal, as the
    /// journal saved it.
    fn open_namespace(&self, tenant: &str, quotas: &Quotas) -> Result<Arc<Namespace>, Error> {
        let mut namespaces = self.namespaces.lock();
        if let Some(namespace) = namespaces.get(tenant) {
            namespace.account.set_quotas(quotas);
            return Ok(namespace.clone());
        }
        let image = match &self.journal {
            Some(journal) => Some(journal.load(tenant)?),
            None => None,
        };
        let seed = image.as_ref().map_or_else(random_seed, |i| i.seed);
        let hasher = SeedableRandomState::with_seed(seed, SharedSeed::global_fixed());
        let account = Arc::new(Account::new(quotas));
        let journal = self.journal.clone().map(|j| (j, tenant.into()));
        let shared = Arc::new(Shared::new(self.clock, Arc::downgrade(&self.expiries)));
        let namespace = Arc::new(Namespace {
            default: Bucket::new(
                &hasher,
                self.shard_bits,
                self.hash_mask,
                &account,
                &shared,
                bucket_journal(&journal, DEFAULT_BUCKET),
            ),
            shared,
            named: RwLock::new(HashMap::new()),
            shard_bits: self.shard_bits,
            hash_mask: self.hash_mask,
            hasher,
            account,
            journal,
        });
        if let Some(image) = image {
            namespace.restore(image);
        }
        namespaces.insert(tenant.into(), namespace.clone());
        Ok(namespace)
    }
}

impl Store {
    /// Deletes everything `tenant` holds, in memory and in the journal,
    /// and forgets its namespace: the next open starts empty.
    async fn purge_namespace(&self, tenant: &str) -> Result<(), Error> {
        // Bound first: a guard in the match's scrutinee would live through
        // its arms, and the arm below locks the map again.
        let opened = self.namespaces.lock().remove(tenant);
        let namespace = match opened {
            Some(namespace) => namespace,
            // Never opened in this process: only the journal holds it.
            None if self.journal.is_some() => {
                let namespace = self.open_namespace(tenant, &Quotas::default())?;
                self.namespaces.lock().remove(tenant);
                namespace
            }
            None => return Ok(()),
        };
        let mut pending = namespace.clear()?;
        if let Some(journal) = &self.journal {
            let buckets: Vec<Box<str>> = namespace.named.read().keys().cloned().collect();
            pending = pending.then(journal.forget(tenant, &buckets)?);
        }
        pending.wait().await
    }
}

/// A bucket's way into the journal: the journal and the bucket's prefix.
fn bucket_journal(
    namespace: &Option<(Arc<Journal>, Box<str>)>,
    bucket: &str,
) -> Option<(Arc<Journal>, Box<[u8]>)> {
    namespace
        .as_ref()
        .map(|(j, tenant)| (j.clone(), Journal::bucket_prefix(tenant, bucket)))
}

#[async_trait]
impl backend::Backend for Store {
    fn front(&self, tenant: &str, quotas: Quotas) -> Result<super::Namespace, Error> {
        let namespace = self.open_namespace(tenant, &quotas)?;
        Ok(super::Namespace::over(
            super::NamespaceRef::Memory(namespace),
            quotas,
        ))
    }

    async fn purge(&self, tenant: &str) -> Result<(), Error> {
        self.purge_namespace(tenant).await
    }
}

/// One tenant's buckets and quota account.
pub(super) struct Namespace {
    hasher: SeedableRandomState,
    shard_bits: u32,
    hash_mask: u64,
    account: Arc<Account>,
    shared: Arc<Shared>,
    default: Arc<Bucket>,
    named: RwLock<HashMap<Box<str>, Arc<Bucket>>>,
    /// The journal and this tenant's name in it.
    journal: Option<(Arc<Journal>, Box<str>)>,
}

impl Namespace {
    /// The bucket `name`, created on first use; a creation is journaled,
    /// and the caller awaits the [`Pending`] before using the bucket.
    fn open(&self, name: &str) -> Result<(Arc<Bucket>, Pending), Error> {
        if name == DEFAULT_BUCKET {
            return Ok((self.default.clone(), Pending::NONE));
        }
        if let Some(bucket) = self.named.read().get(name) {
            return Ok((bucket.clone(), Pending::NONE));
        }
        let mut named = self.named.write();
        if let Some(bucket) = named.get(name) {
            return Ok((bucket.clone(), Pending::NONE));
        }
        self.account.check_new_bucket(named.len())?;
        let pending = match &self.journal {
            Some((journal, tenant)) => journal.record_bucket(tenant, name)?,
            None => Pending::NONE,
        };
        Ok((self.insert_bucket(&mut named, name), pending))
    }

    /// Deletes every key of every bucket, each journaled as a delete.
    fn clear(&self) -> Result<Pending, Error> {
        let mut pending = self.default.clear()?;
        for bucket in self.named.read().values() {
            pending = pending.then(bucket.clear()?);
        }
        Ok(pending)
    }

    fn insert_bucket(&self, named: &mut HashMap<Box<str>, Arc<Bucket>>, name: &str) -> Arc<Bucket> {
        let bucket = Bucket::new(
            &self.hasher,
            self.shard_bits,
            self.hash_mask,
            &self.account,
            &self.shared,
            bucket_journal(&self.journal, name),
        );
        named.insert(name.into(), bucket.clone());
        bucket
    }

    /// Lays the journal's saved state into this fresh namespace. Saved data
    /// is kept whole even past quotas lowered since it was written; the
    /// account then shows the overage and refuses growth.
    fn restore(&self, image: journal::Image) {
        let mut named = self.named.write();
        for name in &image.buckets {
            if !named.contains_key(name.as_str()) {
                self.insert_bucket(&mut named, name);
            }
        }
        let (wall, now) = (journal::wall_ms(), self.shared.clock.now());
        for (bucket, key, value, expires) in image.entries {
            let bucket = if bucket == DEFAULT_BUCKET {
                self.default.clone()
            } else {
                match named.get(bucket.as_str()) {
                    Some(b) => b.clone(),
                    None => self.insert_bucket(&mut named, &bucket),
                }
            };
            // Saved as wall-clock time; kept on the monotonic clock.
            let expires = match expires {
                0 => 0,
                at if at <= wall => {
                    // Expired while the runner was stopped: gone, and its
                    // records with it.
                    let _ = bucket.record(&key, None, Expiry::Clear);
                    continue;
                }
                at => now.saturating_add(at - wall),
            };
            bucket.restore(key, value, expires);
        }
    }
}

impl backend::NamespaceBackend for Namespace {
    type Bucket = Bucket;

    async fn open(&self, name: &str) -> Result<Arc<Bucket>, Error> {
        let (bucket, pending) = Namespace::open(self, name)?;
        pending.wait().await?;
        Ok(bucket)
    }

    fn usage(&self) -> Usage {
        Namespace::usage(self)
    }
}

impl Namespace {
    fn usage(&self) -> Usage {
        self.account.usage()
    }
}

#[derive(Debug)]
struct Entry {
    /// Shared with the shard's key-ordered index.
    key: Arc<str>,
    value: Bytes,
    /// The write that stored it, numbered in its namespace.
    version: u64,
    /// When it expires, in [`Clock`] milliseconds; 0: never.
    expires: u64,
}

impl Entry {
    fn size(&self) -> u64 {
        (self.key.len() + self.value.len()) as u64
    }

    /// Whether it is still there at `now` (an expired entry waits for the
    /// reaper, and no read sees it meanwhile).
    fn live(&self, now: &Now) -> bool {
        self.expires == 0 || self.expires > now.get()
    }
}

/// The current time, read from the clock only if an entry asks: most
/// entries never expire, and their reads need no clock.
struct Now<'a> {
    clock: &'a Clock,
    read: std::cell::Cell<u64>,
}

impl<'a> Now<'a> {
    fn of(clock: &'a Clock) -> Self {
        Self {
            clock,
            read: std::cell::Cell::new(0),
        }
    }

    fn get(&self) -> u64 {
        if self.read.get() == 0 {
            self.read.set(self.clock.now());
        }
        self.read.get()
    }
}

/// The largest value [`Bucket::get_copied`] copies under its shard's read
/// lock: about a hundred nanoseconds of copying, the lookup's own order.
const COPY_UNDER_LOCK: usize = 4096;

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
}

/// One shard of a bucket: its entries by hash (the draft's cursor order),
/// and its keys in key order (prefix listing), each with its expiry or an
/// earlier time (0: never): a write that only moves an expiry later leaves
/// the index as it is, and a listing that finds a passed time asks the
/// entry.
#[derive(Default)]
struct Shard {
    slots: BTreeMap<u64, Slot>,
    keys: BTreeMap<Arc<str>, u64>,
    /// The last write's version. A key stays in one shard, so numbering
    /// writes per shard gives each key's writes distinct, rising versions,
    /// under the lock the write holds anyway.
    versions: u64,
}

impl Shard {
    fn next_version(&mut self) -> u64 {
        self.versions += 1;
        self.versions
    }

    /// The live entry under `key`.
    fn live(&self, hash: u64, key: &str, now: &Now) -> Option<&Entry> {
        self.slots
            .get(&hash)
            .and_then(|slot| slot.find(key))
            .filter(|e| e.live(now))
    }

    /// Removes the entry under `key`, whatever its state.
    fn remove(&mut self, hash: u64, key: &str) -> Option<Entry> {
        let slot = self.slots.get_mut(&hash)?;
        let removed = if &*slot.first.key == key {
            match slot.rest.pop() {
                Some(next) => Some(std::mem::replace(&mut slot.first, next)),
                None => self.slots.remove(&hash).map(|slot| slot.first),
            }
        } else {
            let at = slot.rest.iter().position(|e| &*e.key == key);
            at.map(|i| slot.rest.swap_remove(i))
        }?;
        self.keys.remove(key);
        Some(removed)
    }
}

/// What removing an entry that expired at `expires` does to its saved
/// expiry.
fn cleared(expires: u64) -> Expiry {
    if expires == 0 {
        Expiry::None
    } else {
        Expiry::Clear
    }
}

/// Milliseconds since the store started, never 0 (0 means "never" in an
/// entry's expiry). Monotonic: expiry does not follow the wall clock.
#[derive(Clone, Copy, Debug)]
struct Clock(std::time::Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }
}

/// What a namespace's buckets share: the version counter, the clock and
/// the queue of entries that will expire.
struct Shared {
    /// Random per namespace and process: versions from another process
    /// (before a restart) never match one of this process's.
    epoch: u64,
    clock: Clock,
    expiring: Mutex<BinaryHeap<Reverse<Due>>>,
    /// When the earliest entry in `expiring` expires; `u64::MAX`: none.
    next_due: std::sync::atomic::AtomicU64,
    /// Where the reaper finds namespaces with entries to expire.
    reaper: Weak<Expiries>,
    registered: std::sync::atomic::AtomicBool,
}

/// A key that expires at `at`, unless a write since moved its expiry:
/// when it comes due, the entry says (see [`Bucket::expire`]). An entry with
/// an expiry always has a `Due` queued at or before it, and a write that
/// only moves an expiry later queues nothing, so a key set with `ttl-ms`
/// over and over keeps one place in the queue, not one per write.
struct Due {
    at: u64,
    bucket: Weak<Bucket>,
    key: Arc<str>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// What [`Bucket::expire`] found when a key's queued time came.
enum Expired {
    Removed,
    /// A write since moved its expiry to this time.
    Later(u64),
    /// It is gone, or a write since made it permanent.
    Never,
}

/// Most entries one namespace expires per reaper round, so one tenant's
/// mass expiry cannot hold the reaper from the others for long.
const REAP_BATCH: usize = 10_000;

impl Shared {
    fn new(clock: Clock, reaper: Weak<Expiries>) -> Self {
        Self {
            epoch: random_seed(),
            clock,
            expiring: Mutex::new(BinaryHeap::new()),
            next_due: std::sync::atomic::AtomicU64::new(u64::MAX),
            reaper,
            registered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The token of write `version` of the key that hashes to `hash`.
    /// Versions are numbered per shard, so two keys of different shards
    /// may share a number: the key's hash in the token tells them apart.
    fn token(&self, hash: u64, version: u64) -> String {
        format!("{:x}.{hash:x}.{version}", self.epoch)
    }

    /// Whether this namespace made `token` (for any key).
    fn made(&self, token: &str) -> bool {
        let mut parts = token.split('.');
        let (Some(epoch), Some(hash), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        u64::from_str_radix(epoch, 16).is_ok_and(|e| e == self.epoch)
            && u64::from_str_radix(hash, 16).is_ok()
            && version.parse::<u64>().is_ok()
    }

    fn schedule(self: &Arc<Self>, due: Due) {
        let at = due.at;
        self.expiring.lock().push(Reverse(due));
        if self.next_due.load(Ordering::Acquire) > at {
            self.next_due.fetch_min(at, Ordering::AcqRel);
        }
        // Registered once: a load, not a write, on every later call.
        if !self.registered.load(Ordering::Acquire)
            && !self.registered.swap(true, Ordering::AcqRel)
            && let Some(reaper) = self.reaper.upgrade()
        {
            reaper.namespaces.lock().push(Arc::downgrade(self));
        }
    }

    /// Removes the entries whose time has come, up to `limit` of them, so
    /// they stop counting against the tenant's quotas; cheap when none is
    /// due (one atomic load). Returns how many it removed.
    fn expire_due(&self, limit: usize) -> usize {
        self.expire_due_by(limit, &Now::of(&self.clock))
    }

    /// [`Shared::expire_due`] at `now`, which a caller that reads the clock
    /// anyway shares: the clock is read once, and only if something is
    /// queued.
    fn expire_due_by(&self, limit: usize, now: &Now) -> usize {
        if self.next_due.load(Ordering::Acquire) == u64::MAX {
            return 0;
        }
        let now = now.get();
        if self.next_due.load(Ordering::Acquire) > now {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..limit {
            let due = {
                let mut heap = self.expiring.lock();
                match heap.peek() {
                    Some(Reverse(next)) if next.at <= now => heap.pop().map(|r| r.0),
                    Some(Reverse(next)) => {
                        self.next_due.store(next.at, Ordering::Release);
                        None
                    }
                    None => {
                        self.next_due.store(u64::MAX, Ordering::Release);
                        None
                    }
                }
            };
            let Some(mut due) = due else {
                return removed;
            };
            let Some(bucket) = due.bucket.upgrade() else {
                continue;
            };
            match bucket.expire(&due.key, now) {
                Expired::Removed => removed += 1,
                Expired::Later(at) => {
                    due.at = at;
                    self.expiring.lock().push(Reverse(due));
                    self.next_due.fetch_min(at, Ordering::AcqRel);
                }
                Expired::Never => {}
            }
        }
        removed
    }
}

/// The namespaces of a store that have entries to expire, for the reaper
/// thread.
#[derive(Default)]
pub(super) struct Expiries {
    namespaces: Mutex<Vec<Weak<Shared>>>,
}

impl Expiries {
    /// One reaper round: every namespace's due entries, and forgets
    /// namespaces that are gone.
    fn reap(&self) {
        let namespaces: Vec<Arc<Shared>> = {
            let mut list = self.namespaces.lock();
            list.retain(|n| n.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for namespace in namespaces {
            namespace.expire_due(REAP_BATCH);
        }
    }
}

/// How often the reaper removes expired entries: an expired entry is
/// never read after its time, and is removed (its quota given back) within
/// this long, or at the tenant's next write, whichever comes first.
pub const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// One bucket: its keys spread over shards by the top bits of their hash.
pub(super) struct Bucket {
    hasher: SeedableRandomState,
    shard_bits: u32,
    hash_mask: u64,
    shards: Box<[RwLock<Shard>]>,
    account: Arc<Account>,
    shared: Arc<Shared>,
    /// Itself, for the expiry queue.
    me: Weak<Bucket>,
    /// The journal and this bucket's prefix in it.
    journal: Option<(Arc<Journal>, Box<[u8]>)>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// How a write stores its entry.
#[derive(Clone, Copy)]
struct Write {
    /// Expiry in clock milliseconds; 0: never.
    expires: u64,
}

impl Write {
    const PLAIN: Write = Write { expires: 0 };
}

impl Bucket {
    fn new(
        hasher: &SeedableRandomState,
        shard_bits: u32,
        hash_mask: u64,
        account: &Arc<Account>,
        shared: &Arc<Shared>,
        journal: Option<(Arc<Journal>, Box<[u8]>)>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            hasher: hasher.clone(),
            shard_bits,
            hash_mask,
            shards: (0..1usize << shard_bits)
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            account: account.clone(),
            shared: shared.clone(),
            me: me.clone(),
            journal,
        })
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

    fn now(&self) -> Now<'_> {
        Now::of(&self.shared.clock)
    }

    /// Deletes every key, shard by shard, each journaled as a delete.
    fn clear(&self) -> Result<Pending, Error> {
        let mut pending = Pending::NONE;
        for shard in &self.shards {
            let mut shard = shard.write();
            for slot in shard.slots.values() {
                for entry in slot.entries() {
                    let expiry = cleared(entry.expires);
                    pending = pending.then(self.record(&entry.key, None, expiry)?);
                    self.account.release(1, entry.size());
                }
            }
            shard.slots.clear();
            shard.keys.clear();
        }
        Ok(pending)
    }

    /// Queues a write to the journal, if there is one, with what it does
    /// to the key's saved expiry.
    fn record(&self, key: &str, value: Option<&Bytes>, expiry: Expiry) -> Result<Pending, Error> {
        match &self.journal {
            Some((journal, prefix)) => journal.record(prefix, key, value, expiry),
            None => Ok(Pending::NONE),
        }
    }

    /// What a write that expires at `expires` ([`Clock`] milliseconds, 0:
    /// never) over an entry that expired at `before` saves: an expiry as
    /// wall-clock time, its removal, or nothing.
    fn saved_expiry(&self, expires: u64, before: u64) -> Expiry {
        if self.journal.is_none() {
            return Expiry::None;
        }
        match (expires, before) {
            (0, 0) => Expiry::None,
            (0, _) => Expiry::Clear,
            (at, _) => {
                let left = at.saturating_sub(self.shared.clock.now());
                Expiry::At(journal::wall_ms().saturating_add(left))
            }
        }
    }

    pub(in crate::store) fn get(&self, key: &str) -> Option<Bytes> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        shard.live(hash, key, &self.now()).map(|e| e.value.clone())
    }

    /// [`Bucket::get`] copied out, for a caller that needs its own copy
    /// (a guest): a value up to [`COPY_UNDER_LOCK`] is copied under the
    /// shard's read lock, which spares the reference count of its `Bytes`
    /// an atomic increment and decrement; a larger one after the lock is
    /// released, so no writer waits on a long copy.
    pub(in crate::store) fn get_copied(&self, key: &str) -> Option<Vec<u8>> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        let value = &shard.live(hash, key, &self.now())?.value;
        if value.len() <= COPY_UNDER_LOCK {
            return Some(value.to_vec());
        }
        let value = value.clone();
        drop(shard);
        Some(value.to_vec())
    }

    pub(in crate::store) fn exists(&self, key: &str) -> bool {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        shard.live(hash, key, &self.now()).is_some()
    }

    fn set(&self, key: String, value: Bytes) -> Result<Pending, Error> {
        self.shared.expire_due(usize::MAX);
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        self.put(&mut shard, hash, key, value, Write::PLAIN)
    }

    /// Inserts or overwrites under the caller's shard lock, with exact
    /// quota accounting: room is reserved, the write journaled, and only
    /// then applied, so a refusal at either step changes nothing. An
    /// expired entry still held is replaced as if absent.
    fn put(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: String,
        value: Bytes,
        write: Write,
    ) -> Result<Pending, Error> {
        let account = &self.account;
        let new_size = (key.len() + value.len()) as u64;
        // Room, then the journal: a refusal at either changes nothing.
        let admit = |new_keys, grow, before| {
            account.reserve(new_keys, grow)?;
            let expiry = self.saved_expiry(write.expires, before);
            self.record(&key, Some(&value), expiry)
                .inspect_err(|_| account.release(new_keys, grow))
        };
        let version = shard.next_version();
        let existing = shard.slots.get_mut(&hash).and_then(|s| s.find_mut(&key));
        let (pending, key) = match existing {
            Some(entry) => {
                let old_size = entry.size();
                let before = entry.expires;
                let pending = admit(0, new_size.saturating_sub(old_size), before)?;
                account.release(0, old_size.saturating_sub(new_size));
                entry.value = value;
                entry.version = version;
                entry.expires = write.expires;
                // An expiry moved later: the key index's time and the
                // queued one come first, and then ask the entry, so
                // neither changes.
                if before == write.expires || (before != 0 && before <= write.expires) {
                    return Ok(pending);
                }
                let key = entry.key.clone();
                if let Some(expires) = shard.keys.get_mut(&*key) {
                    *expires = write.expires;
                }
                (pending, key)
            }
            None => {
                let pending = admit(1, new_size, 0)?;
                let key: Arc<str> = key.into();
                let entry = Entry {
                    key: key.clone(),
                    value,
                    version,
                    expires: write.expires,
                };
                match shard.slots.entry(hash) {
                    Place::Occupied(mut slot) => slot.get_mut().rest.push(entry),
                    Place::Vacant(vacant) => {
                        vacant.insert(Slot {
                            first: entry,
                            rest: Vec::new(),
                        });
                    }
                }
                shard.keys.insert(key.clone(), write.expires);
                (pending, key)
            }
        };
        if write.expires != 0 {
            self.shared.schedule(Due {
                at: write.expires,
                bucket: self.me.clone(),
                key,
            });
        }
        Ok(pending)
    }

    /// Removes `key` if its expiry has passed by `now`.
    fn expire(&self, key: &str, now: u64) -> Expired {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        let expires = shard
            .slots
            .get(&hash)
            .and_then(|slot| slot.find(key))
            .map_or(0, |e| e.expires);
        if expires == 0 {
            return Expired::Never;
        }
        if expires > now {
            return Expired::Later(expires);
        }
        // Nobody waits for it: a start skips an expired record anyway, and
        // this removes it from the disk.
        let _ = self.record(key, None, cleared(1));
        if let Some(entry) = shard.remove(hash, key) {
            self.account.release(1, entry.size());
        }
        Expired::Removed
    }

    /// Puts a saved entry back at start-up: no quota check, no journal.
    /// `expires` is in [`Clock`] milliseconds (0: never).
    fn restore(&self, key: String, value: Bytes, expires: u64) {
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        let key: Arc<str> = key.into();
        let version = shard.next_version();
        let entry = Entry {
            key: key.clone(),
            value,
            version,
            expires,
        };
        self.account.restore(1, entry.size());
        shard.keys.insert(key.clone(), expires);
        if expires != 0 {
            self.shared.schedule(Due {
                at: expires,
                bucket: self.me.clone(),
                key,
            });
        }
        match shard.slots.get_mut(&hash) {
            Some(slot) => slot.rest.push(entry),
            None => {
                shard.slots.insert(
                    hash,
                    Slot {
                        first: entry,
                        rest: Vec::new(),
                    },
                );
            }
        }
    }

    /// Removes `key`; a missing key is no write, so nothing is journaled.
    /// An expired entry still held is removed all the same.
    fn delete(&self, key: &str) -> Result<Pending, Error> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        let Some(before) = shard
            .slots
            .get(&hash)
            .and_then(|s| s.find(key))
            .map(|e| e.expires)
        else {
            return Ok(Pending::NONE);
        };
        let pending = self.record(key, None, cleared(before))?;
        if let Some(entry) = shard.remove(hash, key) {
            self.account.release(1, entry.size());
        }
        Ok(pending)
    }

    /// Reads, adds and writes under one shard lock, so it is atomic with
    /// every other write of the key. The sum does not expire.
    fn increment(&self, key: String, delta: Delta) -> Result<(i128, Pending), Error> {
        self.shared.expire_due(usize::MAX);
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        let stored = shard.live(hash, &key, &self.now());
        let sum = delta.add_to(&key, stored.map(|e| &e.value[..]))?;
        let pending = self.put(
            &mut shard,
            hash,
            key,
            Bytes::from(sum.to_string()),
            Write::PLAIN,
        )?;
        Ok((sum, pending))
    }

    /// Compares and sets under one shard lock, so no write of the key can
    /// come between.
    fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    ) -> Result<(Swap, Pending), Error> {
        self.shared.expire_due(usize::MAX);
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        let current = shard.live(hash, &key, &self.now()).map(|e| e.value.clone());
        if current != expected {
            return Ok((Swap::Changed(current), Pending::NONE));
        }
        let pending = self.put(&mut shard, hash, key, value, Write::PLAIN)?;
        Ok((Swap::Done, pending))
    }

    /// `wasmcloud:keyvalue`'s set: with an expiry, and only if absent when
    /// asked. The durable backend saves the expiry with the value.
    fn set_with(
        &self,
        key: String,
        value: Bytes,
        options: backend::SetOptions,
    ) -> Result<(bool, Pending), Error> {
        let now = self.now();
        self.shared.expire_due_by(usize::MAX, &now);
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        if options.if_absent && shard.live(hash, &key, &now).is_some() {
            return Ok((false, Pending::NONE));
        }
        let expires = match options.ttl {
            None => 0,
            Some(ttl) => now.get().saturating_add(ttl.as_millis().max(1) as u64),
        };
        let pending = self.put(&mut shard, hash, key, value, Write { expires })?;
        Ok((true, pending))
    }

    fn current(&self, key: &str) -> Option<backend::Versioned> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        shard
            .live(hash, key, &self.now())
            .map(|e| self.versioned(hash, e))
    }

    fn versioned(&self, hash: u64, entry: &Entry) -> backend::Versioned {
        backend::Versioned {
            value: entry.value.clone(),
            version: self.shared.token(hash, entry.version),
        }
    }

    /// A versioned compare-and-swap, under one shard lock.
    fn swap(
        &self,
        key: String,
        value: Bytes,
        require: &backend::Require,
    ) -> Result<(backend::Swapped, Pending), Error> {
        self.shared.expire_due(usize::MAX);
        let hash = self.hash(&key);
        let mut shard = self.shard(hash).write();
        let current = shard
            .live(hash, &key, &self.now())
            .map(|e| self.versioned(hash, e));
        // A token of another namespace or process names no write here.
        let foreign = require
            .version
            .as_ref()
            .is_some_and(|v| !self.shared.made(v));
        if foreign || !require.met_by(current.as_ref()) {
            return Ok((backend::Swapped::Stale(current), Pending::NONE));
        }
        let pending = self.put(&mut shard, hash, key, value, Write::PLAIN)?;
        Ok((backend::Swapped::Done, pending))
    }

    /// The live keys starting with `prefix` after `after`, in key order, cut
    /// at `limits`. The shards' indexes are merged lazily: each shard's
    /// next key waits in a heap, and only the smallest is taken and its
    /// shard read again past it, so a page costs a seek per shard plus a
    /// seek per key it returns, whatever else the bucket holds. Each read
    /// holds one shard's lock, briefly.
    fn list_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limits: PageLimits,
    ) -> backend::KeyPage {
        use std::ops::Bound;
        let now = self.now().get();
        // The first live key under `prefix` from `from` in shard `index`.
        let next_in = |index: usize, from: Bound<&str>| -> Option<Arc<str>> {
            let shard = self.shards[index].read();
            shard
                .keys
                .range::<str, _>((from, Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .find(|(key, expires)| {
                    // A passed time may be one a write moved later since.
                    **expires == 0
                        || **expires > now
                        || shard
                            .slots
                            .get(&self.hash(key))
                            .and_then(|slot| slot.find(key))
                            .is_some_and(|e| e.expires == 0 || e.expires > now)
                })
                .map(|(key, _)| key.clone())
        };
        let start: Bound<&str> = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut heads: BinaryHeap<Reverse<(Arc<str>, usize)>> = (0..self.shards.len())
            .filter_map(|index| next_in(index, start).map(|key| Reverse((key, index))))
            .collect();
        let mut bytes = 0usize;
        let mut keys = Vec::new();
        while let Some(Reverse((key, _))) = heads.peek() {
            bytes += key.len();
            if keys.len() == limits.max_keys || (bytes > limits.max_bytes && !keys.is_empty()) {
                break;
            }
            let Some(Reverse((key, index))) = heads.pop() else {
                break;
            };
            if let Some(next) = next_in(index, Bound::Excluded(&key)) {
                heads.push(Reverse((next, index)));
            }
            keys.push(key.to_string());
        }
        // A key left in the heap is one more after the page.
        let next = if heads.is_empty() {
            None
        } else {
            keys.last().cloned()
        };
        backend::KeyPage { keys, next }
    }

    /// The page of keys after `cursor` (from the start when `None`). A
    /// slot of colliding keys travels whole, so it may pass the limits.
    fn list_keys(&self, cursor: Option<u64>, limits: PageLimits) -> Page {
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
        let PageLimits {
            max_keys,
            max_bytes,
        } = limits;
        let now = self.now();
        let mut bytes = 0usize;
        for index in self.shard_index(from)..self.shards.len() {
            from = from.max(self.shard_start(index));
            let shard = self.shards[index].read();
            for (&hash, slot) in shard.slots.range(from..) {
                let live = || slot.entries().filter(|e| e.live(&now));
                let slot_keys = live().count();
                if slot_keys == 0 {
                    continue;
                }
                let slot_bytes: usize = live().map(|e| e.key.len()).sum();
                let full = page.keys.len() + slot_keys > max_keys || bytes + slot_bytes > max_bytes;
                if full && !page.keys.is_empty() {
                    return page;
                }
                page.keys.extend(live().map(|e| e.key.to_string()));
                bytes += slot_bytes;
                page.cursor = Some(hash);
            }
        }
        page.cursor = None;
        page
    }
}

/// Keys a batch call handles between two yields to the executor, so a long
/// batch lets other requests run (and its deadline end it) instead of
/// holding a worker thread for its whole length: this backend never waits
/// on its own.
const BATCH_CHUNK: usize = 64;

/// Yields to the executor after one chunk of a batch longer than a chunk;
/// a short batch runs through without a yield.
async fn yield_if_long(total: usize) {
    if total > BATCH_CHUNK {
        tokio::task::yield_now().await;
    }
}

impl backend::BucketBackend for Bucket {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        Ok(Bucket::get(self, key))
    }

    async fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(Bucket::exists(self, key))
    }

    async fn set(&self, key: String, value: Bytes) -> Result<(), Error> {
        Bucket::set(self, key, value)?.wait().await
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        Bucket::delete(self, key)?.wait().await
    }

    async fn increment(&self, key: String, delta: Delta) -> Result<i128, Error> {
        let (sum, pending) = Bucket::increment(self, key, delta)?;
        pending.wait().await?;
        Ok(sum)
    }

    async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    ) -> Result<Swap, Error> {
        let (swap, pending) = Bucket::compare_and_swap(self, key, expected, value)?;
        pending.wait().await?;
        Ok(swap)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, Error> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_CHUNK) {
            values.extend(chunk.iter().map(|k| Bucket::get(self, k)));
            yield_if_long(keys.len()).await;
        }
        Ok(values)
    }

    async fn set_many(&self, pairs: Vec<(String, Bytes)>) -> Result<(), Error> {
        // With a journal, one wait for the last write covers all.
        let total = pairs.len();
        let mut pairs = pairs.into_iter().peekable();
        let mut last = Pending::NONE;
        while pairs.peek().is_some() {
            for (key, value) in pairs.by_ref().take(BATCH_CHUNK) {
                match Bucket::set(self, key, value) {
                    Ok(pending) => last = last.then(pending),
                    Err(e) => {
                        last.wait().await?;
                        return Err(e);
                    }
                }
            }
            yield_if_long(total).await;
        }
        last.wait().await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        let mut last = Pending::NONE;
        for chunk in keys.chunks(BATCH_CHUNK) {
            for key in chunk {
                last = last.then(Bucket::delete(self, key)?);
            }
            yield_if_long(keys.len()).await;
        }
        last.wait().await
    }

    async fn list_keys(&self, cursor: Option<u64>, limits: PageLimits) -> Result<Page, Error> {
        Ok(Bucket::list_keys(self, cursor, limits))
    }

    async fn set_with(
        &self,
        key: String,
        value: Bytes,
        options: backend::SetOptions,
    ) -> Result<bool, Error> {
        let (written, pending) = Bucket::set_with(self, key, value, options)?;
        pending.wait().await?;
        Ok(written)
    }

    async fn current(&self, key: &str) -> Result<Option<backend::Versioned>, Error> {
        Ok(Bucket::current(self, key))
    }

    async fn swap(
        &self,
        key: String,
        value: Bytes,
        require: backend::Require,
    ) -> Result<backend::Swapped, Error> {
        let (swapped, pending) = Bucket::swap(self, key, value, &require)?;
        pending.wait().await?;
        Ok(swapped)
    }

    async fn list_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limits: PageLimits,
    ) -> Result<backend::KeyPage, Error> {
        Ok(Bucket::list_prefix(self, prefix, after, limits))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;

    use super::Store;
    use crate::store::conformance::{conformance_suite, walk};
    use crate::store::{Namespace, Quotas};

    conformance_suite!(Store::new(8));

    mod one_shard {
        use super::*;
        conformance_suite!(Store::new(1));
    }

    /// A key set with `ttl-ms` over and over keeps one place in the expiry
    /// queue, and still expires at the time its last write gave it, earlier
    /// or later than before.
    #[tokio::test]
    async fn rewriting_an_expiry_keeps_one_place_in_the_queue() {
        use crate::store::SetOptions;
        use std::time::Duration;
        let store = Store::new(4);
        let front = Namespace::new(&store, "t", Quotas::default()).unwrap();
        let b = front.open("").await.unwrap();
        let namespace = store.open_namespace("t", &Quotas::default()).unwrap();
        let queued = || namespace.shared.expiring.lock().len();
        let ttl = |ms| SetOptions {
            ttl: Some(Duration::from_millis(ms)),
            if_absent: false,
        };
        for _ in 0..1000 {
            b.set_with("k".into(), Bytes::from("v"), ttl(600_000))
                .await
                .unwrap();
        }
        assert_eq!(queued(), 1);
        // Sooner: queued again, at the sooner time.
        b.set_with("k".into(), Bytes::from("v"), ttl(100))
            .await
            .unwrap();
        assert_eq!(queued(), 2);
        // Later again: the queued time finds the later one and waits on.
        b.set_with("k".into(), Bytes::from("v"), ttl(400))
            .await
            .unwrap();
        assert_eq!(queued(), 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(b.get("k").await.unwrap(), Some(Bytes::from("v")));
        // The key index kept the first time, and the listing asks the entry.
        assert_eq!(b.list_prefix("", None).await.unwrap().keys, ["k"]);
        assert_eq!(front.usage().keys, 1);
        assert!(queued() <= 2, "{}", queued());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.get("k").await.unwrap(), None);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while front.usage().keys != 0 {
            assert!(std::time::Instant::now() < deadline, "not reclaimed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Left: the first queued time, ten minutes out, which will find
        // nothing then.
        assert_eq!(queued(), 1);
    }

    /// A read without a future answers what `get` does, for a value
    /// copied under the shard's lock (up to 4 KiB) and one copied after
    /// it, and not for an expired key.
    #[tokio::test]
    async fn reads_now_answer_as_reads_on_both_sides_of_the_copy_limit() {
        use crate::store::SetOptions;
        use std::time::Duration;
        let store = Store::new(4);
        let front = Namespace::new(&store, "t", Quotas::default()).unwrap();
        let b = front.open("").await.unwrap();
        for len in [
            0,
            1,
            super::COPY_UNDER_LOCK,
            super::COPY_UNDER_LOCK + 1,
            65_536,
        ] {
            let key = format!("k{len}");
            let v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            b.set(key.clone(), Bytes::from(v.clone())).await.unwrap();
            assert_eq!(b.get(&key).await.unwrap().as_deref(), Some(&v[..]));
            assert_eq!(b.get_now(&key).unwrap().unwrap(), Some(v), "{len}");
            assert!(b.exists_now(&key).unwrap().unwrap());
        }
        assert_eq!(b.get_now("missing").unwrap().unwrap(), None);
        assert!(!b.exists_now("missing").unwrap().unwrap());
        let soon = SetOptions {
            ttl: Some(Duration::from_millis(50)),
            if_absent: false,
        };
        b.set_with("brief".into(), Bytes::from("v"), soon)
            .await
            .unwrap();
        assert_eq!(b.get_now("brief").unwrap().unwrap(), Some(b"v".to_vec()));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(b.get_now("brief").unwrap().unwrap(), None);
        assert!(!b.exists_now("brief").unwrap().unwrap());
    }

    #[tokio::test]
    async fn colliding_hashes_share_a_slot_and_stay_correct() {
        // Keep two high bits (four shards' worth) and one low bit: 500 keys
        // land on 8 hash values.
        let mut store = Store::new(4);
        store.hash_mask = 0xC000_0000_0000_0001;
        let ns = Namespace::new(
            &store,
            "t",
            Quotas {
                max_page_keys: 7,
                ..Quotas::default()
            },
        )
        .unwrap();
        let b = ns.open("").await.unwrap();
        for i in 0..500 {
            b.set(format!("k{i}"), Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        for i in 0..500 {
            assert_eq!(
                b.get(&format!("k{i}")).await.unwrap(),
                Some(Bytes::from(i.to_string()))
            );
        }
        // A slot travels whole, so pages may pass the page size.
        let keys = walk(&b).await;
        assert_eq!(keys.len(), 500);
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 500);
        for i in (0..500).step_by(2) {
            b.delete(&format!("k{i}")).await.unwrap();
        }
        assert_eq!(b.get("k0").await.unwrap(), None);
        assert_eq!(b.get("k1").await.unwrap(), Some(Bytes::from("1")));
        assert_eq!(walk(&b).await.len(), 250);
        assert_eq!(b.increment("k3".into(), 1).await.unwrap(), 4);
        assert_eq!(ns.usage().keys, 250);
    }

    #[tokio::test]
    async fn a_keys_version_satisfies_no_other_keys_swap() {
        use crate::store::{Require, Swapped};
        // Versions are numbered per shard: with 8 shards and 40 keys
        // written alike, many keys of different shards share a number.
        let store = Store::new(8);
        let b = Namespace::new(&store, "t", Quotas::default())
            .unwrap()
            .open("")
            .await
            .unwrap();
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        for key in &keys {
            b.set(key.clone(), Bytes::from("v")).await.unwrap();
        }
        let mut tokens = Vec::new();
        for key in &keys {
            tokens.push(b.current(key).await.unwrap().unwrap().version);
        }
        for (x, token) in keys.iter().zip(&tokens) {
            for y in keys.iter().filter(|y| *y != x) {
                let require = Require {
                    version: Some(token.clone()),
                    value: None,
                };
                let swapped = b.swap(y.clone(), Bytes::from("w"), require).await.unwrap();
                assert!(
                    matches!(swapped, Swapped::Stale(Some(_))),
                    "{x}'s token {token} satisfied {y}'s swap"
                );
            }
        }
        // Its own key's swap it satisfies.
        let require = Require {
            version: Some(tokens[0].clone()),
            value: None,
        };
        assert_eq!(
            b.swap(keys[0].clone(), Bytes::from("w"), require)
                .await
                .unwrap(),
            Swapped::Done
        );
    }

    #[tokio::test]
    async fn single_shard_store_works() {
        let store = Store::new(1);
        let b = Namespace::new(&store, "t", Quotas::default())
            .unwrap()
            .open("")
            .await
            .unwrap();
        for i in 0..100 {
            b.set(format!("k{i}"), Bytes::new()).await.unwrap();
        }
        assert_eq!(walk(&b).await.len(), 100);
        assert!(b.exists("k42").await.unwrap());
    }

    #[tokio::test]
    async fn each_tenant_walks_in_its_own_hash_order() {
        let store = Store::new(8);
        let mut orders = Vec::new();
        for tenant in ["a", "b"] {
            let b = Namespace::new(&store, tenant, Quotas::default())
                .unwrap()
                .open("")
                .await
                .unwrap();
            for i in 0..64 {
                b.set(format!("k{i}"), Bytes::new()).await.unwrap();
            }
            orders.push(walk(&b).await);
        }
        // Same 64 keys; with independent seeds the chance of one order is 1/64!.
        assert_ne!(orders[0], orders[1]);
    }
}
