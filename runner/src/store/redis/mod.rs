//! The Redis backend (`--store redis://...`): every tenant's data in one
//! Redis, or one Redis Cluster, that several runners share.
//!
//! Layout, for tenant `T` (hex-encoded, so the hash tag can hold no brace),
//! under the key prefix `P` (`runner:` unless a test gives another):
//! - `P{T}:u`: a hash: `k` keys and `b` bytes the tenant holds, `s` the
//!   last sequence number given to a write, `g` the tenant's generation: a
//!   purge advances it first, and every write script checks that the
//!   namespace it comes from was made in the current one, so no write of
//!   the purged tenant's, from any runner, lands after (`g` and `s`
//!   outlive the purge, a few bytes per purged tenant);
//! - `P{T}:b`: a set of the tenant's bucket names, the default one too;
//! - `P{T}:i<len>:<bucket>`: a bucket's index, a sorted set of its keys,
//!   each scored by the sequence number of the write that created it;
//! - `P{T}:o<len>:<bucket>`: the same keys in a sorted set of equal scores,
//!   which Redis orders by key, for prefix listing (`ZRANGEBYLEX`);
//! - `P{T}:v<len>:<bucket>`: a hash: each key's version, the sequence
//!   number of its last write;
//! - `P{T}:d<len>:<bucket><key>`: one string per key, the value, with
//!   Redis's own expiry (`PEXPIREAT`) where the write set one;
//! - `P{T}:x`: the tenant's expiry schedule, a sorted set of `<len>:<bucket>
//!   <key>` scored by the millisecond (Redis's clock) each expiring key is
//!   due, and `P{T}:l`, a hash of the bytes each of them counts: Redis
//!   drops an expired value by itself, and the schedule is how its key and
//!   bytes are given back, by whichever script or reaper reaches it first,
//!   once.
//!
//! The encoding is injective: the tag ends at the first `}`, which hex
//! never holds; after it one letter says what the key is; the bucket name
//! is length-prefixed, so the key is what is left. No name a guest gives
//! can make one tenant's or bucket's key another's. The `{T}` hash tag puts
//! a whole tenant on one Cluster slot, so every script below, which touches
//! a tenant's usage and one of its buckets together, runs on one node.
//!
//! Every write is one Lua script, run atomically by Redis: it first
//! reclaims entries whose time has come, then checks the tenant's key and
//! byte quotas against `P{T}:u` and applies the write with the new counts,
//! its version and its expiry, so quotas, versioned compare-and-swap and
//! `if-not-exists` are exact across every runner sharing the Redis, not
//! per process. A version token is a digest of the tenant's name and the
//! sequence number: no other key's, bucket's or tenant's write has it, and
//! it stays valid across runner restarts.
//!
//! list-keys walks the index in score order, and the cursor is the last
//! score returned. A key keeps its score while it exists (an overwrite does
//! not change it; only a key created anew gets the next number, above every
//! score so far), so a key that exists for a whole walk is returned exactly
//! once, whatever else is written meanwhile, by this runner or another.
//! Redis's own SCAN could return it twice; this cannot. A prefix page is a
//! lexicographic range of `P{T}:o`: a seek plus the keys it returns, and
//! the cursor is the last key. Both skip an entry whose value Redis has
//! already dropped.
//!
//! Every call is bounded by `--store-timeout`, reconnection included: while
//! Redis is unreachable a call fails with `store-unavailable` in that time,
//! and the connection manager reconnects by itself when Redis is back.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::{Cmd, Script, Value};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

mod connection;

pub use self::connection::{Connection, Renewal, client};
pub use super::location::Location;
use crate::store::backend::{self, Delta, Page, PageLimits, Swap, Usage};
use crate::store::quota::{Quota, Quotas};
use crate::store::{DEFAULT_BUCKET, Error};

/// The Redis backend; one per process, shared by every tenant.
pub struct Store {
    shared: Arc<Shared>,
    /// Reclaims expired entries in the background; each tenant state holds
    /// a weak reference, and the reaper's task one to it.
    reaper: Arc<Reaper>,
    /// Each tenant's quotas and cached usage, shared by every namespace of
    /// the tenant this process opens.
    tenants: Mutex<std::collections::HashMap<Box<str>, Arc<TenantState>>>,
    /// Each tenant's generation as [`backend::Backend::enter`] last read
    /// it, for the state made next.
    generations: Mutex<std::collections::HashMap<Box<str>, u64>>,
    /// Tenants whose generation `enter_many` read for the namespace made
    /// next: their next `enter` reads nothing.
    entered: Mutex<HashSet<Box<str>>>,
}

struct Shared {
    connection: Connection,
    prefix: String,
    timeout: Duration,
}

impl Shared {
    async fn call<T: ::redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let mut connection = self.connection.current();
        let outcome = tokio::time::timeout(self.timeout, cmd.query_async(&mut connection)).await;
        connection.settle(self.timeout, outcome)
    }

    async fn script<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let mut connection = self.connection.current();
        let outcome =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await;
        connection.settle(self.timeout, outcome)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("redis::Store")
            .field("connection", &self.shared.connection)
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// The key prefix the runner uses; tests give each backend its own.
pub const PREFIX: &str = "runner:";

impl Store {
    /// The backend over `connection`, its keys under `prefix`, each call
    /// bounded by `timeout`.
    pub fn new(connection: Connection, prefix: &str, timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            connection,
            prefix: prefix.to_string(),
            timeout,
        });
        Self {
            reaper: Reaper::start(shared.clone()),
            shared,
            tenants: Mutex::new(Default::default()),
            generations: Mutex::new(Default::default()),
            entered: Mutex::new(HashSet::new()),
        }
    }

    /// Reads `tenant`'s generation from Redis.
    async fn generation(&self, tenant: &str) -> Result<u64, Error> {
        let names = Names::new(&self.shared.prefix, tenant);
        let mut read = ::redis::cmd("HGET");
        read.arg(names.usage()).arg("g");
        Ok(self.shared.call::<Option<u64>>(&read).await?.unwrap_or(0))
    }

    /// Takes `generation` as `tenant`'s: a state of this process made in
    /// another (the tenant was purged since, through any runner) is
    /// dropped, so the namespace made next writes in this one, while the
    /// namespaces made before keep the old one and are refused.
    fn entered(&self, tenant: &str, generation: u64) {
        self.generations.lock().insert(tenant.into(), generation);
        let mut tenants = self.tenants.lock();
        if tenants
            .get(tenant)
            .is_some_and(|state| state.generation != Some(generation))
        {
            tenants.remove(tenant);
        }
    }

    /// Checks that Redis answers, for a clear error at start-up.
    pub async fn ping(&self) -> Result<(), Error> {
        self.shared.call::<()>(&::redis::cmd("PING")).await
    }

    fn tenant(&self, tenant: &str, quotas: &Quotas) -> Arc<TenantState> {
        let mut tenants = self.tenants.lock();
        if let Some(found) = tenants.get(tenant) {
            found.set_quotas(quotas);
            return found.clone();
        }
        let generation = self.generations.lock().get(tenant).copied();
        let state = Arc::new(TenantState::new(
            Names::new(&self.shared.prefix, tenant),
            quotas,
            generation,
            Arc::downgrade(&self.reaper),
        ));
        tenants.insert(tenant.into(), state.clone());
        self.reaper.refresh(&state);
        state
    }
}

#[async_trait]
impl backend::Backend for Store {
    fn front(&self, tenant: &str, quotas: Quotas) -> Result<super::Namespace, Error> {
        let namespace = Arc::new(Namespace {
            shared: self.shared.clone(),
            tenant: self.tenant(tenant, &quotas),
        });
        Ok(super::Namespace::over(
            super::NamespaceRef::Redis(namespace),
            quotas,
        ))
    }

    async fn purge(&self, tenant: &str) -> Result<(), Error> {
        let names = Names::new(&self.shared.prefix, tenant);
        // First the generation: from now on no namespace of the tenant made
        // before, in any runner, writes (a task of the removed tenant still
        // running elsewhere included), so no write lands after the purge.
        let mut advance = ::redis::cmd("HINCRBY");
        advance.arg(names.usage()).arg("g").arg(1);
        self.shared.call::<i64>(&advance).await?;
        // In bounded steps: one script over a tenant of millions of keys
        // would hold Redis, and every runner's calls, for seconds.
        loop {
            let done: i64 = self
                .shared
                .script(
                    PURGE
                        .key(names.usage())
                        .key(names.buckets())
                        .arg(&names.tag)
                        .arg(PURGE_STEP),
                )
                .await?;
            if done == 1 {
                break;
            }
        }
        self.tenants.lock().remove(tenant);
        self.generations.lock().remove(tenant);
        Ok(())
    }

    async fn ready(&self) -> Result<(), Error> {
        self.ping().await
    }

    fn forget(&self, tenant: &str) {
        self.tenants.lock().remove(tenant);
    }

    /// Reads the tenant's generation (see [`Store::entered`]), unless
    /// `enter_many` just did.
    async fn enter(&self, tenant: &str) -> Result<(), Error> {
        if self.entered.lock().remove(tenant) {
            return Ok(());
        }
        let generation = self.generation(tenant).await?;
        self.entered(tenant, generation);
        Ok(())
    }

    /// Reads many tenants' generations at once, a few hundred requests in
    /// flight on the connection, which pipelines them.
    async fn enter_many(&self, tenants: &[&str]) -> Result<(), Error> {
        use futures::{StreamExt as _, TryStreamExt as _};
        // Owned names: a stream over borrowed ones trips the compiler's
        // proof that the future is Send.
        let owned: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
        let read: Vec<(String, u64)> = futures::stream::iter(owned)
            .map(|tenant| async move {
                let generation = self.generation(&tenant).await?;
                Ok::<_, Error>((tenant, generation))
            })
            .buffer_unordered(256)
            .try_collect()
            .await?;
        for (tenant, generation) in read {
            self.entered(&tenant, generation);
            self.entered.lock().insert(tenant.into());
        }
        Ok(())
    }
}

/// How a tenant's Redis keys are named; see the module docs.
#[derive(Debug)]
struct Names {
    /// `P{hex}:`
    tag: String,
}

impl Names {
    fn new(prefix: &str, tenant: &str) -> Self {
        let mut tag = format!("{prefix}{{");
        for byte in tenant.as_bytes() {
            tag.push_str(&format!("{byte:02x}"));
        }
        tag.push_str("}:");
        Self { tag }
    }

    fn usage(&self) -> String {
        format!("{}u", self.tag)
    }

    fn buckets(&self) -> String {
        format!("{}b", self.tag)
    }

    fn index(&self, bucket: &str) -> String {
        format!("{}i{}:{bucket}", self.tag, bucket.len())
    }

    fn lex(&self, bucket: &str) -> String {
        format!("{}o{}:{bucket}", self.tag, bucket.len())
    }

    /// Everything of a data key but the key itself.
    fn data_head(&self, bucket: &str) -> String {
        format!("{}d{}:{bucket}", self.tag, bucket.len())
    }
}

/// A tenant's quotas (its latest namespace's) and the usage its last write
/// through this process saw.
struct TenantState {
    names: Names,
    max_keys: AtomicU64,
    max_bytes: AtomicU64,
    max_buckets: AtomicUsize,
    keys: AtomicU64,
    bytes: AtomicU64,
    /// Counts usage updates, so a refresh that started before a write's
    /// reply does not overwrite it with older counts.
    updates: AtomicU64,
    /// Named buckets this process has opened: opening one again costs no
    /// round trip.
    opened: Mutex<HashSet<Box<str>>>,
    /// The tenant's generation when this state was made (see
    /// [`backend::Backend::enter`]), which each write names; `None`: not
    /// read, writes unfenced (a namespace made without `enter`).
    generation: Option<u64>,
    /// Starts each of the tenant's version tokens: a digest of its name,
    /// the same in every runner, so that no other tenant's token names one
    /// of its writes.
    id: String,
    /// When the reaper next looks at the tenant's expiry schedule, in its
    /// milliseconds ([`Reaper::millis`]); `u64::MAX`: nothing scheduled that
    /// this process knows of.
    reap_at: AtomicU64,
    reaper: std::sync::Weak<Reaper>,
}

impl TenantState {
    fn new(
        names: Names,
        quotas: &Quotas,
        generation: Option<u64>,
        reaper: std::sync::Weak<Reaper>,
    ) -> Self {
        Self {
            id: format!("{:016x}", fnv1a(names.tag.as_bytes())),
            reap_at: AtomicU64::new(u64::MAX),
            reaper,
            generation,
            names,
            max_keys: AtomicU64::new(quotas.max_keys),
            max_bytes: AtomicU64::new(quotas.max_bytes),
            max_buckets: AtomicUsize::new(quotas.max_buckets),
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            opened: Mutex::new(HashSet::new()),
        }
    }

    fn set_quotas(&self, quotas: &Quotas) {
        self.max_keys.store(quotas.max_keys, Ordering::Relaxed);
        self.max_bytes.store(quotas.max_bytes, Ordering::Relaxed);
        self.max_buckets
            .store(quotas.max_buckets, Ordering::Relaxed);
    }

    /// The generation argument of a write script.
    fn generation(&self) -> String {
        self.generation.map(|g| g.to_string()).unwrap_or_default()
    }

    fn limits(&self) -> (u64, u64) {
        (
            self.max_keys.load(Ordering::Relaxed),
            self.max_bytes.load(Ordering::Relaxed),
        )
    }

    fn record(&self, keys: u64, bytes: u64) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.keys.store(keys, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Has the reaper look at the tenant `ttl` after a write with that
    /// expiry.
    fn expires_in(self: &Arc<Self>, ttl: Duration) {
        if let Some(reaper) = self.reaper.upgrade() {
            let at = reaper.millis().saturating_add(millis(ttl));
            reaper.watch(self, at);
        }
    }
}

/// FNV-1a, 64 bits: a digest every runner computes alike, whatever its
/// build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reclaims the entries whose expiry has passed, for the tenants that have
/// some, so their keys and bytes are given back with no request arriving.
/// Redis drops an expired value by itself; what it cannot do is take it
/// off the tenant's usage, indexes and versions, which the reap script
/// does, atomically, so however many runners reap a tenant each entry is
/// reclaimed once. Each tenant is looked at when its next entry is due, as
/// the script answers or a write with an expiry says, so the round costs
/// nothing for tenants without expiring keys.
struct Reaper {
    shared: Arc<Shared>,
    epoch: std::time::Instant,
    /// The tenants with entries scheduled, by tag.
    tenants: Mutex<std::collections::HashMap<String, Arc<TenantState>>>,
}

/// Entries one reap step reclaims at most, so one tenant's mass expiry
/// holds Redis, and every runner's calls, only briefly.
const REAP_STEP: usize = 1000;

impl Reaper {
    /// The reaper of a store over `shared`, its task on the current
    /// runtime (none outside one: entries are then reclaimed by writes).
    fn start(shared: Arc<Shared>) -> Arc<Self> {
        let reaper = Arc::new(Self {
            shared,
            epoch: std::time::Instant::now(),
            tenants: Mutex::new(Default::default()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&reaper);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(crate::store::memory::EXPIRY_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(reaper) = weak.upgrade() else { return };
                    reaper.round().await;
                }
            });
        }
        reaper
    }

    /// Milliseconds since the reaper started, on the monotonic clock.
    fn millis(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Looks at `state`'s tenant at `at` at the latest.
    fn watch(&self, state: &Arc<TenantState>, at: u64) {
        // Watched already, no later than `at`: a time other than `u64::MAX`
        // is only ever set under the lock below, with the tenant listed,
        // and a round lists it off only once the time is `u64::MAX`. Most
        // writes with an expiry end here, without the lock.
        if state.reap_at.load(Ordering::Relaxed) <= at {
            return;
        }
        // Under the lock, so a round dropping the tenant sees the time.
        let mut tenants = self.tenants.lock();
        state.reap_at.fetch_min(at, Ordering::Relaxed);
        match tenants.get(&state.names.tag) {
            Some(known) if Arc::ptr_eq(known, state) => {}
            _ => {
                tenants.insert(state.names.tag.clone(), state.clone());
            }
        }
    }

    /// Reads a tenant's usage and expiry schedule from Redis in the
    /// background, reclaiming what is due: a runner that has not written
    /// for the tenant yet shows what other runners stored, and reaps what
    /// they scheduled.
    fn refresh(self: &Arc<Self>, state: &Arc<TenantState>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (reaper, state) = (self.clone(), state.clone());
        runtime.spawn(async move {
            let _ = reaper.reap(&state).await;
        });
    }

    /// One round: each tenant whose time has come.
    async fn round(&self) {
        let now = self.millis();
        let due: Vec<Arc<TenantState>> = self
            .tenants
            .lock()
            .values()
            .filter(|state| state.reap_at.load(Ordering::Relaxed) <= now)
            .cloned()
            .collect();
        for state in due {
            state.reap_at.store(u64::MAX, Ordering::Relaxed);
            if self.reap(&state).await.is_err() {
                // Redis is away: look again in a second.
                self.watch(&state, now + 1000);
            }
        }
        self.tenants
            .lock()
            .retain(|_, state| state.reap_at.load(Ordering::Relaxed) != u64::MAX);
    }

    /// One reap step for `state`'s tenant: records its usage after, and
    /// when to look next.
    async fn reap(&self, state: &Arc<TenantState>) -> Result<(), Error> {
        let before = state.updates.load(Ordering::Relaxed);
        let mut invocation = REAP.prepare_invoke();
        invocation
            .key(state.names.usage())
            .arg(&state.names.tag)
            .arg(REAP_STEP);
        let reply: Vec<i64> = self.shared.script(&invocation).await?;
        let [keys, bytes, wait] = reply[..] else {
            return Err(Error::Unavailable(format!(
                "redis: unexpected reply {reply:?}"
            )));
        };
        // A write's reply since is newer than this one.
        if state.updates.load(Ordering::Relaxed) == before {
            state.record(keys.max(0) as u64, bytes.max(0) as u64);
        }
        if let Ok(wait) = u64::try_from(wait) {
            self.watch(state, self.millis().saturating_add(wait));
        }
        Ok(())
    }
}

pub(super) struct Namespace {
    shared: Arc<Shared>,
    tenant: Arc<TenantState>,
}

impl backend::NamespaceBackend for Namespace {
    type Bucket = Bucket;

    async fn open(&self, name: &str) -> Result<Arc<Bucket>, Error> {
        let known = name == DEFAULT_BUCKET || self.tenant.opened.lock().contains(name);
        if !known {
            let max = self.tenant.max_buckets.load(Ordering::Relaxed);
            let opened: i64 = self
                .shared
                .script(
                    OPEN_BUCKET
                        .key(self.tenant.names.buckets())
                        .key(self.tenant.names.usage())
                        .arg(self.tenant.generation())
                        .arg(name)
                        .arg(DEFAULT_BUCKET)
                        .arg(max),
                )
                .await?;
            if opened == -2 {
                return Err(super::purged());
            }
            if opened < 0 {
                return Err(Error::quota(
                    Quota::Buckets,
                    format!("the tenant already has {max} named buckets, the limit"),
                ));
            }
            self.tenant.opened.lock().insert(name.into());
        }
        let names = &self.tenant.names;
        Ok(Arc::new(Bucket {
            shared: self.shared.clone(),
            tenant: self.tenant.clone(),
            name: name.to_string(),
            index: names.index(name),
            lex: names.lex(name),
            data_head: names.data_head(name),
        }))
    }

    fn usage(&self) -> Usage {
        Usage {
            keys: self.tenant.keys.load(Ordering::Relaxed),
            bytes: self.tenant.bytes.load(Ordering::Relaxed),
        }
    }
}

pub(super) struct Bucket {
    shared: Arc<Shared>,
    tenant: Arc<TenantState>,
    name: String,
    index: String,
    lex: String,
    data_head: String,
}

/// What a put requires of each key's entry before it writes.
#[derive(Clone, Copy)]
enum Put<'a> {
    /// Nothing.
    Set,
    /// That the key is absent.
    IfAbsent,
    /// That the key holds this value.
    IfEqual(&'a [u8]),
    /// That the key's last write had this sequence number (`None`: the
    /// token names no write of this tenant's), and that it holds this
    /// value where one is given.
    Versioned {
        version: Option<u64>,
        value: Option<&'a [u8]>,
    },
}

/// How a put script ended.
enum Written {
    Done,
    /// The condition did not hold: the entry found (`None`: absent).
    Changed(Option<Found>),
}

/// A key's value and its last write's sequence number.
struct Found {
    value: Bytes,
    sequence: u64,
}

impl Bucket {
    fn data(&self, key: &str) -> String {
        format!("{}{key}", self.data_head)
    }

    /// Runs the put script over `pairs`, in order, stopping at the first
    /// refused one; each write expires after `ttl` where one is given, and
    /// is permanent otherwise.
    async fn put(
        &self,
        mode: Put<'_>,
        pairs: &[(String, Bytes)],
        ttl: Option<Duration>,
    ) -> Result<Written, Error> {
        let names = &self.tenant.names;
        let (max_keys, max_bytes) = self.tenant.limits();
        let mut invocation = PUT.prepare_invoke();
        invocation
            .key(names.usage())
            .key(names.buckets())
            .key(&self.index);
        let (mode, expected, version): (&str, &[u8], String) = match mode {
            Put::Set => ("set", b"", String::new()),
            Put::IfAbsent => ("absent", b"", String::new()),
            Put::IfEqual(value) => ("equal", value, String::new()),
            Put::Versioned { version, value } => {
                // No sequence number is negative: "-1" matches no write.
                let version = version.map_or("-1".to_string(), |v| v.to_string());
                match value {
                    Some(value) => ("version+equal", value, version),
                    None => ("version", b"", version),
                }
            }
        };
        invocation
            .arg(self.tenant.generation())
            .arg(&names.tag)
            .arg(mode)
            .arg(expected)
            .arg(version)
            .arg(max_keys)
            .arg(max_bytes)
            .arg(&self.name)
            .arg(
                ttl.map(|t| millis(t).max(1).to_string())
                    .unwrap_or_default(),
            );
        for (key, value) in pairs {
            invocation.key(self.data(key)).arg(key).arg(value.as_ref());
        }
        let reply: Vec<Value> = self.shared.script(&invocation).await?;
        let outcome = self.outcome(&reply, (max_keys, max_bytes))?;
        if let Some(ttl) = ttl {
            self.tenant.expires_in(ttl);
        }
        match outcome {
            Some(changed) => Ok(Written::Changed(changed)),
            None => Ok(Written::Done),
        }
    }

    /// Reads a write script's reply: `Ok(None)` when it was applied (its
    /// new usage recorded), `Ok(Some(current))` when a condition did not
    /// hold, the quota error when one refused it.
    fn outcome(
        &self,
        reply: &[Value],
        (max_keys, max_bytes): (u64, u64),
    ) -> Result<Option<Option<Found>>, Error> {
        let int = |i: usize| -> Result<u64, Error> {
            match reply.get(i) {
                Some(Value::Int(n)) => u64::try_from(*n).map_err(|_| unexpected(reply)),
                _ => Err(unexpected(reply)),
            }
        };
        match reply.first() {
            Some(Value::BulkString(tag)) => match tag.as_slice() {
                b"ok" => {
                    self.tenant.record(int(1)?, int(2)?);
                    Ok(None)
                }
                b"purged" => Err(super::purged()),
                b"changed" => match (reply.get(1), reply.get(2)) {
                    (Some(Value::BulkString(v)), Some(Value::BulkString(seq))) => {
                        Ok(Some(Some(Found {
                            value: Bytes::copy_from_slice(v),
                            sequence: sequence(seq).ok_or_else(|| unexpected(reply))?,
                        })))
                    }
                    (Some(Value::Nil) | None, _) => Ok(Some(None)),
                    _ => Err(unexpected(reply)),
                },
                b"keys" => Err(Error::quota(
                    Quota::Keys,
                    format!("the tenant holds {} keys, the limit is {max_keys}", int(1)?),
                )),
                b"bytes" => Err(Error::quota(
                    Quota::Bytes,
                    format!(
                        "writing {} more bytes to the tenant's {} would pass its {max_bytes}-byte limit",
                        int(2)?,
                        int(1)?
                    ),
                )),
                _ => Err(unexpected(reply)),
            },
            _ => Err(unexpected(reply)),
        }
    }

    async fn remove(&self, keys: &[String]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = DELETE.prepare_invoke();
        invocation
            .key(self.tenant.names.usage())
            .key(&self.index)
            .arg(self.tenant.generation())
            .arg(&self.tenant.names.tag)
            .arg(&self.name);
        for key in keys {
            invocation.key(self.data(key)).arg(key);
        }
        let reply: Vec<Value> = self.shared.script(&invocation).await?;
        match reply.as_slice() {
            [Value::Int(held), Value::Int(bytes)] => {
                let count = |n: &i64| u64::try_from(*n).map_err(|_| unexpected(&reply));
                self.tenant.record(count(held)?, count(bytes)?);
                Ok(())
            }
            [Value::BulkString(tag)] if tag.as_slice() == b"purged" => Err(super::purged()),
            _ => Err(unexpected(&reply)),
        }
    }

    /// An increment the script could not do with Redis's own INCRBY (a
    /// value outside what INCRBY reads the same as `Delta::parse`, or a
    /// sum past the i64 range): read, add here, and write back only if the
    /// value is still the one read, until no other write came between.
    async fn increment_by_swaps(&self, key: String, delta: Delta) -> Result<i128, Error> {
        let data = self.data(&key);
        loop {
            let current: Option<Vec<u8>> = self.shared.call(::redis::cmd("GET").arg(&data)).await?;
            let sum = delta.add_to(&key, current.as_deref())?;
            let pair = [(key.clone(), Bytes::from(sum.to_string()))];
            let mode = match &current {
                None => Put::IfAbsent,
                Some(v) => Put::IfEqual(v),
            };
            if let Written::Done = self.put(mode, &pair, None).await? {
                return Ok(sum);
            }
        }
    }

    /// `key`'s value and the sequence number of its last write, read
    /// together.
    async fn found(&self, key: &str) -> Result<Option<Found>, Error> {
        let mut invocation = CURRENT.prepare_invoke();
        invocation
            .key(self.data(key))
            .arg(&self.tenant.names.tag)
            .arg(&self.name)
            .arg(key);
        let reply: Value = self.shared.script(&invocation).await?;
        match &reply {
            Value::Nil => Ok(None),
            Value::Array(pair) => match pair.as_slice() {
                [Value::BulkString(value), Value::BulkString(seq)] => Ok(Some(Found {
                    value: Bytes::copy_from_slice(value),
                    sequence: sequence(seq).ok_or_else(|| unexpected(pair))?,
                })),
                _ => Err(unexpected(pair)),
            },
            other => Err(unexpected(std::slice::from_ref(other))),
        }
    }

    /// The version token of write `sequence` of this tenant: the tenant's
    /// id, so that no other tenant's token names a write here, and the
    /// sequence number, which no other write of the tenant has.
    fn versioned(&self, found: Found) -> backend::Versioned {
        backend::Versioned {
            value: found.value,
            version: format!("{}.{}", self.tenant.id, found.sequence),
        }
    }

    /// The sequence number a token of this tenant names; `None` for a
    /// token of another tenant, or no token at all.
    fn sequence_of(&self, token: &str) -> Option<u64> {
        let (id, sequence) = token.split_once('.')?;
        if id != self.tenant.id {
            return None;
        }
        sequence.parse().ok()
    }
}

/// A sequence number as a script answers it.
fn sequence(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl backend::BucketBackend for Bucket {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let value: Option<Vec<u8>> = self
            .shared
            .call(::redis::cmd("GET").arg(self.data(key)))
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.shared
            .call(::redis::cmd("EXISTS").arg(self.data(key)))
            .await
    }

    async fn set(&self, key: String, value: Bytes) -> Result<(), Error> {
        self.put(Put::Set, &[(key, value)], None).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.remove(&[key.to_string()]).await
    }

    async fn increment(&self, key: String, delta: Delta) -> Result<i128, Error> {
        // INCRBY takes an i64; a larger u64 delta goes the slow way.
        let Ok(amount) = i64::try_from(delta.amount()) else {
            return self.increment_by_swaps(key, delta).await;
        };
        let names = &self.tenant.names;
        let (max_keys, max_bytes) = self.tenant.limits();
        let mut invocation = INCREMENT.prepare_invoke();
        invocation
            .key(names.usage())
            .key(names.buckets())
            .key(&self.index)
            .key(self.data(&key))
            .arg(self.tenant.generation())
            .arg(&names.tag)
            .arg(amount)
            .arg(delta.kind())
            .arg(max_keys)
            .arg(max_bytes)
            .arg(&self.name)
            .arg(&key);
        let reply: Vec<Value> = self.shared.script(&invocation).await?;
        if let Some(Value::BulkString(tag)) = reply.first()
            && tag.as_slice() == b"slow"
        {
            return self.increment_by_swaps(key, delta).await;
        }
        // Records the new usage, or says which quota refused it.
        self.outcome(&reply, (max_keys, max_bytes))?;
        match reply.get(3) {
            Some(Value::BulkString(sum)) => std::str::from_utf8(sum)
                .ok()
                .and_then(|s| s.parse::<i128>().ok())
                .ok_or_else(|| unexpected(&reply)),
            _ => Err(unexpected(&reply)),
        }
    }

    async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    ) -> Result<Swap, Error> {
        let mode = match &expected {
            None => Put::IfAbsent,
            Some(v) => Put::IfEqual(v),
        };
        match self.put(mode, &[(key, value)], None).await? {
            Written::Done => Ok(Swap::Done),
            Written::Changed(now) => Ok(Swap::Changed(now.map(|found| found.value))),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = ::redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.data(key));
        }
        let values: Vec<Option<Vec<u8>>> = self.shared.call(&cmd).await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    async fn set_many(&self, pairs: Vec<(String, Bytes)>) -> Result<(), Error> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.put(Put::Set, &pairs, None).await.map(|_| ())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        self.remove(keys).await
    }

    async fn list_keys(&self, cursor: Option<u64>, limits: PageLimits) -> Result<Page, Error> {
        let from = match cursor {
            None => "-inf".to_string(),
            Some(last) => format!("({last}"),
        };
        let mut invocation = LIST.prepare_invoke();
        invocation
            .key(&self.index)
            .arg(&self.tenant.names.tag)
            .arg(&self.name)
            .arg(from)
            .arg(limits.max_keys);
        let mut reply: Vec<Value> = self.shared.script(&invocation).await?;
        // Live keys with their scores, then how many entries were read and
        // the last one's score.
        let (Some(last), Some(Value::Int(read))) = (reply.pop(), reply.pop()) else {
            return Err(unexpected(&reply));
        };
        let score = |value: &Value| -> Result<u64, Error> {
            match value {
                Value::BulkString(s) => sequence(s).ok_or_else(|| unexpected(&reply)),
                _ => Err(unexpected(&reply)),
            }
        };
        let full = usize::try_from(read).is_ok_and(|read| read >= limits.max_keys);
        let mut page = Page {
            keys: Vec::with_capacity(reply.len() / 2),
            cursor: None,
        };
        let mut bytes = 0usize;
        for pair in reply.chunks(2) {
            let [Value::BulkString(key), score_value] = pair else {
                return Err(unexpected(&reply));
            };
            let key = String::from_utf8(key.clone()).map_err(|_| unexpected(&reply))?;
            if bytes + key.len() > limits.max_bytes && !page.keys.is_empty() {
                // Cut short: the next page starts after the last key here.
                return Ok(page);
            }
            bytes += key.len();
            page.keys.push(key);
            page.cursor = Some(score(score_value)?);
        }
        // Read whole: the next page starts after the last entry read, listed
        // or not.
        page.cursor = if full { Some(score(&last)?) } else { None };
        Ok(page)
    }

    async fn set_with(
        &self,
        key: String,
        value: Bytes,
        options: backend::SetOptions,
    ) -> Result<bool, Error> {
        let mode = if options.if_absent {
            Put::IfAbsent
        } else {
            Put::Set
        };
        match self.put(mode, &[(key, value)], options.ttl).await? {
            Written::Done => Ok(true),
            Written::Changed(_) => Ok(false),
        }
    }

    async fn current(&self, key: &str) -> Result<Option<backend::Versioned>, Error> {
        Ok(self.found(key).await?.map(|found| self.versioned(found)))
    }

    async fn swap(
        &self,
        key: String,
        value: Bytes,
        require: backend::Require,
    ) -> Result<backend::Swapped, Error> {
        let mode = match (&require.version, require.value.as_deref()) {
            (None, Some(value)) => Put::IfEqual(value),
            (token, value) => Put::Versioned {
                version: token.as_deref().and_then(|t| self.sequence_of(t)),
                value,
            },
        };
        match self.put(mode, &[(key, value)], None).await? {
            Written::Done => Ok(backend::Swapped::Done),
            Written::Changed(now) => Ok(backend::Swapped::Stale(
                now.map(|found| self.versioned(found)),
            )),
        }
    }

    async fn list_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limits: PageLimits,
    ) -> Result<backend::KeyPage, Error> {
        let mut invocation = LIST_PREFIX.prepare_invoke();
        invocation
            .key(&self.lex)
            .arg(&self.tenant.names.tag)
            .arg(&self.name)
            .arg(prefix)
            .arg(after.unwrap_or(""))
            .arg(limits.max_keys);
        let mut reply: Vec<Value> = self.shared.script(&invocation).await?;
        // Live keys, then the last key read and whether more follow.
        let (Some(Value::Int(more)), Some(last)) = (reply.pop(), reply.pop()) else {
            return Err(unexpected(&reply));
        };
        let text = |value: &Value| -> Result<String, Error> {
            match value {
                Value::BulkString(s) => {
                    String::from_utf8(s.clone()).map_err(|_| unexpected(&reply))
                }
                _ => Err(unexpected(&reply)),
            }
        };
        let mut page = backend::KeyPage {
            keys: Vec::with_capacity(reply.len()),
            next: None,
        };
        let mut bytes = 0usize;
        for value in &reply {
            let key = text(value)?;
            if bytes + key.len() > limits.max_bytes && !page.keys.is_empty() {
                page.next = page.keys.last().cloned();
                return Ok(page);
            }
            bytes += key.len();
            page.keys.push(key);
        }
        if more == 1 {
            page.next = Some(text(&last)?);
        }
        Ok(page)
    }
}

/// A reply no script of ours gives.
fn unexpected(reply: &[Value]) -> Error {
    Error::Unavailable(format!("redis: unexpected reply {reply:?}"))
}

/// Makes a script of `body` with the functions every script shares
/// (`common.lua`: key names, Redis's clock, reclaiming expired entries).
fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("common.lua")))
}

/// Puts each pair into one bucket, in order, under a condition (`set`:
/// none; `absent`; `equal`: the value; `version`, `version+equal`), with an
/// expiry or none. Stops at the first pair a quota or a condition refuses;
/// the pairs before stay put and counted. Each write gets a new version.
static PUT: LazyLock<Script> = LazyLock::new(|| script(include_str!("put.lua")));

/// Adds an i64 to the decimal under a key with INCRBY, when the stored
/// value is one INCRBY reads as `Delta::parse` does (canonical, at most 18
/// digits, not negative for a u64); answers `slow` where it cannot, for
/// the caller's compare-and-swap loop.
static INCREMENT: LazyLock<Script> = LazyLock::new(|| script(include_str!("increment.lua")));

/// Deletes each key of one bucket and gives back what they held; answers
/// the tenant's keys and bytes after.
static DELETE: LazyLock<Script> = LazyLock::new(|| script(include_str!("delete.lua")));

/// A key's value and version, read together.
static CURRENT: LazyLock<Script> = LazyLock::new(|| script(include_str!("current.lua")));

/// A page of a bucket's keys in creation order, without expired entries.
static LIST: LazyLock<Script> = LazyLock::new(|| script(include_str!("list.lua")));

/// A page of a bucket's keys under a prefix, in key order.
static LIST_PREFIX: LazyLock<Script> = LazyLock::new(|| script(include_str!("prefix.lua")));

/// The reaper's step for one tenant: reclaims expired entries, answers the
/// usage after and when the next is due.
static REAP: LazyLock<Script> = LazyLock::new(|| script(include_str!("reap.lua")));

/// Adds bucket ARGV[1] to the tenant's set KEYS[1] unless the tenant has
/// ARGV[3] named buckets (all but ARGV[2], the default) already: 1 added,
/// 0 there already, -1 refused.
static OPEN_BUCKET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("open_bucket.lua")));

/// Keys one purge step deletes.
const PURGE_STEP: usize = 1000;

/// One step of deleting everything a tenant holds: up to ARGV[2] keys of
/// the buckets in its set KEYS[2] (found through each bucket's index, and
/// taken out of it), each bucket whose index is then empty, and once none
/// is left the set and the usage KEYS[1]. Answers 1 when done, 0 when
/// there is more. ARGV[1] is the tenant's tag, from which the script names
/// the bucket keys as `Names` does.
static PURGE: LazyLock<Script> = LazyLock::new(|| script(include_str!("purge.lua")));

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use system_tests::redis::Redis;

    use super::*;
    use crate::store::conformance::conformance_suite;
    use crate::store::{Namespace as Front, Quotas};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn connect(redis: &Redis, timeout: Duration) -> Connection {
        let urls = [redis.url()];
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(Connection::open(&urls, false, timeout))
        })
        .expect("a connection")
    }

    /// A fresh, empty backend: on the test binary's one server, under a
    /// key prefix of its own. `None` where redis-server is missing and not
    /// required.
    fn fresh() -> Option<Store> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let redis = Redis::shared()?;
        let prefix = format!("test{}:", NEXT.fetch_add(1, Ordering::Relaxed));
        Some(Store::new(connect(redis, TIMEOUT), &prefix, TIMEOUT))
    }

    conformance_suite!(
        fresh().expect("a redis-server"),
        skip unless system_tests::redis::server_binary().is_some()
    );

    /// The same promises on a Redis Cluster of three masters: each script
    /// touches one tenant's keys, which its hash tag keeps on one slot.
    mod cluster {
        use super::*;
        use system_tests::redis::Cluster;

        fn fresh() -> Option<Store> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let cluster = Cluster::shared()?;
            let urls: Vec<String> = cluster.nodes.iter().map(Redis::url).collect();
            let connection = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(Connection::open(&urls, true, TIMEOUT))
            })
            .expect("a cluster connection");
            assert!(matches!(connection, Connection::Cluster(_)));
            let prefix = format!("cluster{}:", NEXT.fetch_add(1, Ordering::Relaxed));
            Some(Store::new(connection, &prefix, TIMEOUT))
        }

        conformance_suite!(
            fresh().expect("a redis cluster"),
            skip unless system_tests::redis::server_binary().is_some()
        );
    }

    /// Expiry, versions and the if-absent race across two runners on one
    /// Redis: one reclaims what the other scheduled, exactly once; a token
    /// taken through one works through the other and after a "restart"
    /// (a new backend on the same Redis).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_runners_share_expiry_versions_and_if_absent() {
        use crate::store::{Require, SetOptions, Swapped};
        let Some(a) = fresh() else { return };
        let b = Store::new(a.shared.connection.clone(), &a.shared.prefix, TIMEOUT);
        let ns_a = Front::new(&a, "t", Quotas::default()).unwrap();
        let ns_b = Front::new(&b, "t", Quotas::default()).unwrap();
        let (ba, bb) = (ns_a.open("").await.unwrap(), ns_b.open("").await.unwrap());
        let brief = SetOptions {
            ttl: Some(Duration::from_millis(100)),
            if_absent: false,
        };
        for i in 0..50 {
            ba.set_with(format!("e{i}"), Bytes::from_static(b"v"), brief)
                .await
                .unwrap();
        }
        bb.set("kept".into(), Bytes::from_static(b"v"))
            .await
            .unwrap();
        // Both runners reap (the second for its own expiring write): each
        // entry is given back once, by whichever gets there, and both end
        // with the usage Redis holds, exact, not below.
        bb.set_with("late".into(), Bytes::from_static(b"v"), brief)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ns_a.usage().keys != 1 || ns_b.usage().keys != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?} {:?}",
                ns_a.usage(),
                ns_b.usage()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let names = Names::new(&a.shared.prefix, "t");
        let mut all = ::redis::cmd("HMGET");
        all.arg(names.usage()).arg("k").arg("b");
        let (keys, bytes): (u64, u64) = a.shared.call(&all).await.unwrap();
        assert_eq!((keys, bytes), (1, 5));
        for gone in ["x", "l"] {
            let mut exists = ::redis::cmd("EXISTS");
            exists.arg(format!("{}{gone}", names.tag));
            assert_eq!(a.shared.call::<i64>(&exists).await.unwrap(), 0, "{gone}");
        }
        let mut index = ::redis::cmd("ZCARD");
        index.arg(names.index("default"));
        assert_eq!(a.shared.call::<i64>(&index).await.unwrap(), 1);

        // A version read through one runner swaps through the other, and
        // through a backend made later (a restarted runner).
        let token = ba.current("kept").await.unwrap().unwrap().version;
        let later = Store::new(a.shared.connection.clone(), &a.shared.prefix, TIMEOUT);
        let bl = Front::new(&later, "t", Quotas::default())
            .unwrap()
            .open("")
            .await
            .unwrap();
        let require = Require {
            version: Some(token.clone()),
            value: None,
        };
        assert_eq!(
            bl.swap("kept".into(), Bytes::from_static(b"w"), require.clone())
                .await
                .unwrap(),
            Swapped::Done
        );
        assert!(matches!(
            bb.swap("kept".into(), Bytes::from_static(b"x"), require)
                .await
                .unwrap(),
            Swapped::Stale(Some(_))
        ));

        // If-absent: one of ten writers over two runners wins.
        let absent = SetOptions {
            ttl: None,
            if_absent: true,
        };
        let writers = (0..10).map(|i| {
            let bucket = if i % 2 == 0 { ba.clone() } else { bb.clone() };
            async move {
                bucket
                    .set_with("lock".into(), Bytes::from(format!("w{i}")), absent)
                    .await
                    .unwrap()
            }
        });
        let won = futures::future::join_all(writers).await;
        assert_eq!(won.iter().filter(|w| **w).count(), 1);
    }

    /// Two runners on one Redis: a purge through one refuses every later
    /// write of the tenant's namespaces made before it, in the other too
    /// (bucket made, set, increment, delete), and a namespace made after
    /// it, in either, writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_through_one_runner_fences_every_runners_earlier_namespaces() {
        use crate::store::backend::Backend as _;
        let Some(a) = fresh() else { return };
        let b = Store::new(
            connect(Redis::shared().unwrap(), TIMEOUT),
            &a.shared.prefix,
            TIMEOUT,
        );
        b.enter("t").await.unwrap();
        let before = Front::new(&b, "t", Quotas::default()).unwrap();
        let bucket = before.open("").await.unwrap();
        bucket.set("k1".into(), Bytes::from("v")).await.unwrap();
        a.purge("t").await.unwrap();
        let purged = Some(Error::Unavailable(
            "the tenant was removed and its data purged".into(),
        ));
        assert_eq!(
            bucket.set("k2".into(), Bytes::from("v")).await.err(),
            purged
        );
        assert_eq!(bucket.increment("n".into(), 1).await.err(), purged);
        assert_eq!(bucket.delete("k1").await.err(), purged);
        assert_eq!(before.open("named").await.err(), purged);
        // Made after the purge, in either runner: empty, and written.
        for runner in [&a, &b] {
            runner.enter("t").await.unwrap();
            let after = Front::new(runner, "t", Quotas::default())
                .unwrap()
                .open("")
                .await
                .unwrap();
            assert_eq!(after.get("k1").await.unwrap(), None);
            after.set("k3".into(), Bytes::from("v")).await.unwrap();
        }
        assert_eq!(
            bucket.set("k4".into(), Bytes::from("v")).await.err(),
            purged
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_are_injective_and_tenants_share_nothing() {
        let Some(served) = fresh() else { return };
        // "a" + bucket "b:c" and "a:b" + bucket "c" would meet under a
        // separator encoding; here they are apart.
        let one = Front::new(&served, "a", Quotas::default()).unwrap();
        let two = Front::new(&served, "ab", Quotas::default()).unwrap();
        let b1 = one.open("1:x").await.unwrap();
        let b2 = one.open("1").await.unwrap();
        b1.set("k".into(), Bytes::from_static(b"first"))
            .await
            .unwrap();
        assert_eq!(b2.get(":xk").await.unwrap(), None);
        assert_eq!(b2.get("xk").await.unwrap(), None);
        let other = two.open("1:x").await.unwrap();
        assert_eq!(other.get("k").await.unwrap(), None);
        assert_eq!(
            Names::new(PREFIX, "a").data_head("1:x"),
            "runner:{61}:d3:1:x"
        );
        assert_eq!(Names::new(PREFIX, "a}{").tag, "runner:{617d7b}:");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_share_quotas_and_counters() {
        // Two backends on one server, under one prefix, stand for two
        // runners.
        let Some(served) = fresh() else { return };
        let second = Store::new(
            served.shared.connection.clone(),
            &served.shared.prefix,
            TIMEOUT,
        );
        let quotas = Quotas {
            max_keys: 3,
            ..Quotas::default()
        };
        let a = Front::new(&served, "t", quotas.clone())
            .unwrap()
            .open("")
            .await
            .unwrap();
        let b = Front::new(&second, "t", quotas)
            .unwrap()
            .open("")
            .await
            .unwrap();
        for (bucket, key) in [(&a, "1"), (&b, "2"), (&a, "3")] {
            bucket
                .set(key.into(), Bytes::from_static(b"0"))
                .await
                .unwrap();
        }
        let err = b.set("4".into(), Bytes::new()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota-exceeded: the tenant holds 3 keys, the limit is 3"
        );
        let tasks: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|bucket| {
                tokio::spawn(async move {
                    for _ in 0..500 {
                        bucket.increment("1".into(), 1).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(b.get("1").await.unwrap().as_deref(), Some(&b"1000"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_larger_than_one_step_takes_everything_in_steps() {
        let Some(store) = fresh() else { return };
        let quotas = Quotas {
            max_keys: 10_000,
            ..Quotas::default()
        };
        let big = Front::new(&store, "big", quotas).unwrap();
        let other = Front::new(&store, "other", Quotas::default()).unwrap();
        let pairs = |n: usize| -> Vec<(String, Bytes)> {
            (0..n)
                .map(|i| (format!("k{i}"), Bytes::from_static(b"v")))
                .collect()
        };
        // 2,500 keys over two buckets: three steps of 1,000.
        for bucket in ["", "named"] {
            let b = big.open(bucket).await.unwrap();
            for chunk in pairs(1250).chunks(500) {
                b.set_many(chunk.to_vec()).await.unwrap();
            }
        }
        other
            .open("")
            .await
            .unwrap()
            .set("k0".into(), Bytes::from_static(b"kept"))
            .await
            .unwrap();
        backend::Backend::purge(&store, "big").await.unwrap();
        // Nothing of the tenant is left in Redis but its usage hash, which
        // the purge emptied but for two numbers.
        let names = Names::new(&store.shared.prefix, "big");
        let mut scan = ::redis::cmd("KEYS");
        scan.arg(format!("{}*", names.tag));
        let left: Vec<String> = store.shared.call(&scan).await.unwrap();
        assert_eq!(left, [names.usage()]);
        let mut all = ::redis::cmd("HGETALL");
        all.arg(names.usage());
        let mut usage: Vec<(String, String)> = store.shared.call(&all).await.unwrap();
        usage.sort();
        // The generation, and the sequence (so no version token of before
        // the purge names a write after it).
        assert_eq!(
            usage,
            [
                ("g".to_string(), "1".to_string()),
                ("s".to_string(), "2500".to_string())
            ]
        );
        let fresh = Front::new(&store, "big", Quotas::default()).unwrap();
        for bucket in ["", "named"] {
            let b = fresh.open(bucket).await.unwrap();
            assert_eq!(b.get("k7").await.unwrap(), None);
            assert!(crate::store::conformance::walk(&b).await.is_empty());
        }
        let kept = other.open("").await.unwrap().get("k0").await.unwrap();
        assert_eq!(kept.as_deref(), Some(&b"kept"[..]));
    }

    /// A TCP proxy on a free port that sends each new connection to
    /// whatever `target` says then, as a DNS name does across a failover:
    /// connections made before a switch stay with the old node.
    async fn proxy(target: Arc<parking_lot::Mutex<std::net::SocketAddr>>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = *target.lock();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failover_behind_one_name_writes_reach_the_new_primary() {
        let (Some(old), Some(new)) = (Redis::start(), Redis::start()) else {
            return;
        };
        let target = Arc::new(parking_lot::Mutex::new(old.addr));
        let via = proxy(target.clone()).await;
        let urls = [format!("redis://{via}")];
        let connection = Connection::open(&urls, false, TIMEOUT).await.unwrap();
        let store = Store::new(connection, PREFIX, TIMEOUT);
        let b = Front::new(&store, "t", Quotas::default())
            .unwrap()
            .open("")
            .await
            .unwrap();
        b.set("k".into(), Bytes::from_static(b"before"))
            .await
            .unwrap();

        // The new node replicates the old, then they trade places, and the
        // name points at the new primary.
        let port = old.addr.port().to_string();
        new.cli(&["replicaof", "127.0.0.1", &port]);
        let start = std::time::Instant::now();
        while !new
            .cli(&["info", "replication"])
            .contains("master_link_status:up")
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "replication did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while new
            .cli(&[
                "get",
                &format!("{}d7:defaultk", Names::new(PREFIX, "t").tag),
            ])
            .trim()
            != "before"
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the key did not replicate"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *target.lock() = new.addr;
        new.cli(&["replicaof", "no", "one"]);
        let new_port = new.addr.port().to_string();
        old.cli(&["replicaof", "127.0.0.1", &new_port]);

        // The kept connection reaches the old node, a replica now: the
        // first write fails with its READONLY, and the next goes to the
        // new primary.
        let first = b.set("k".into(), Bytes::from_static(b"after")).await;
        if let Err(e) = &first {
            assert!(e.to_string().contains("read only replica"), "{e}");
            b.set("k".into(), Bytes::from_static(b"after"))
                .await
                .unwrap();
        }
        let on_new = new.cli(&[
            "get",
            &format!("{}d7:defaultk", Names::new(PREFIX, "t").tag),
        ]);
        assert_eq!(on_new.trim(), "after");
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"after"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_incrby_reads_differently_take_the_slow_way() {
        let Some(served) = fresh() else { return };
        let b = Front::new(&served, "t", Quotas::default())
            .unwrap()
            .open("")
            .await
            .unwrap();
        for (stored, delta, sum) in [
            ("007", 1, 8),
            ("+5", 2, 7),
            ("9223372036854775807", 1, 9_223_372_036_854_775_808u64),
        ] {
            b.set("n".into(), Bytes::from(stored)).await.unwrap();
            assert_eq!(
                b.increment("n".into(), delta).await.unwrap(),
                sum,
                "{stored}"
            );
        }
        assert_eq!(
            b.increment("n".into(), u64::MAX)
                .await
                .unwrap_err()
                .to_string(),
            "invalid-argument: incrementing 9223372036854775808 by 18446744073709551615 leaves the u64 range"
        );
        b.set("n".into(), Bytes::from("1")).await.unwrap();
        assert_eq!(
            b.increment("n".into(), u64::MAX - 1).await.unwrap(),
            u64::MAX
        );
        b.set("s".into(), Bytes::from("-0")).await.unwrap();
        assert_eq!(b.increment_signed("s".into(), -3).await.unwrap(), -3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_redis_is_store_unavailable_within_the_timeout() {
        let Some(mut redis) = Redis::start() else {
            return;
        };
        let timeout = Duration::from_millis(300);
        let store = Store::new(connect(&redis, timeout), PREFIX, timeout);
        let b = Front::new(&store, "t", Quotas::default())
            .unwrap()
            .open("")
            .await
            .unwrap();
        b.set("k".into(), Bytes::from_static(b"v")).await.unwrap();
        redis.stop();
        let started = std::time::Instant::now();
        let err = b.get("k").await.unwrap_err();
        assert_eq!(err.token(), "store-unavailable", "{err}");
        assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
        redis.resume();
        // Back, and empty (no persistence): the manager reconnects by itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match b.get("k").await {
                Ok(value) => {
                    assert_eq!(value, None);
                    break;
                }
                Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b.set("k".into(), Bytes::from_static(b"w")).await.unwrap();
    }
}
