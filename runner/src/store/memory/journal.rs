//! The durable backend's disk side: every write, kept in a data directory
//! by fjall, an LSM-tree storage engine.
//!
//! Reads never come here. The durable backend is the in-memory store
//! ([`super`]) with a [`Journal`]: memory serves every read, so
//! reads cost what they cost without a data directory, and the journal
//! holds the latest value of every key, from which a tenant's namespace is
//! loaded when it is first opened after a start.
//!
//! Write path. Under the key's shard lock the in-memory store checks the
//! quota, queues the write here ([`Journal::record`]) and applies it, so the
//! queue holds each key's writes in the order memory applied them. One
//! committer thread takes all that is queued as one fjall batch (group
//! commit: writers that arrive while a commit is on disk share the next
//! one) and then:
//! - `--fsync always`: fsyncs, then wakes the writers; a write is
//!   acknowledged once it is on disk.
//! - `--fsync every=D`: hands the batch to the OS, wakes the writers, and
//!   fsyncs every D. A crash of the runner alone loses nothing acknowledged;
//!   a crash of the machine or a power loss loses up to D of acknowledged
//!   writes.
//!
//! The worker threads never wait on the disk: the queue is a short lock and
//! a push, and a writer awaits its [`Pending`] like any other future.
//!
//! A write is visible to readers from the moment memory applies it, before
//! it is durable (as in Redis): a reader may see a value whose writer is
//! still waiting, and which a machine crash in that window would lose.
//!
//! When the disk fails (full, or an I/O error), fjall refuses every later
//! write; so does the journal, with `store-unavailable`, until the runner
//! restarts. Writes waiting at that moment get the same error and may or
//! may not have reached the disk; reads keep being served from memory.
//!
//! Layout of the directory: `runner.lock` (held while a runner has it open,
//! with that runner's pid), `kv/` (fjall's own files). Inside fjall:
//! keyspace `data` maps `tenant, bucket, key` to the value; keyspace `meta`
//! holds the format version, each tenant's hash seed (so a list-keys cursor
//! stays valid across a restart), each named bucket (so the bucket
//! quota stays exact) and each expiring key's expiry. Names are
//! length-prefixed, so no two (tenant, bucket, key) triples share an
//! encoding.
//!
//! Expiry (`ttl-ms`) is kept as wall-clock time, in milliseconds since the
//! Unix epoch, in the same batch as the value it belongs to, and removed
//! with it (by a plain write, a delete, a purge or the reaper). While the
//! runner runs, its monotonic clock decides when a key expires, so a step
//! of the wall clock changes nothing; at a start, the time left is the
//! saved expiry less the wall clock then, so a step while it was stopped
//! moves expiries by as much. A key whose expiry passed while the runner
//! was stopped is not loaded (and its records are removed).

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use fjall::{KeyspaceCreateOptions, PersistMode};
use parking_lot::{Condvar, Mutex};

use crate::metrics::names as metrics;
use crate::store::Error;

/// The data directory's format; a directory written in another one is
/// refused at start-up rather than misread.
pub const FORMAT: u32 = 1;

const FORMAT_KEY: &[u8] = b"format";
/// The number of the last batch committed, in every batch: what the
/// engine recovered says how far it got.
const COMMIT_KEY: &[u8] = b"commit";
/// Beside `kv/`: the number of a batch known durable, written at most
/// every [`ACKNOWLEDGED_EVERY`] (and at a clean stop). A journal that
/// recovers to an earlier batch lost acknowledged writes (damage in its
/// middle, or `kv/` deleted or restored from an older copy): refused, never
/// half-loaded.
const ACKNOWLEDGED_FILE: &str = "acknowledged";
const ACKNOWLEDGED_EVERY: Duration = Duration::from_secs(1);
const SEED_TAG: u8 = b's';
const BUCKET_TAG: u8 = b'b';
const EXPIRY_TAG: u8 = b'x';

/// What a write does to its key's saved expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// The key had none and has none.
    None,
    /// The key expires then: wall-clock milliseconds since the Unix epoch.
    At(u64),
    /// The key had one and has none now (or is gone).
    Clear,
}

/// The wall clock, in milliseconds since the Unix epoch.
pub(super) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the durable backend keeps its data; none: the in-memory backend.
pub use crate::settings::OptionalPath as DataDir;

/// When a write counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Fsync {
    /// Acknowledged once fsynced; concurrent writers share fsyncs.
    Always,
    /// Acknowledged once handed to the OS; fsynced every this often.
    Every(Duration),
}

impl crate::settings::Setting for Fsync {
    fn parse_flag(text: &str) -> Result<Self, String> {
        if text == "always" {
            return Ok(Fsync::Always);
        }
        let Some(every) = text.strip_prefix("every=") else {
            return Err(format!(
                "{text:?} is neither \"always\" nor \"every=<duration>\" (say every=100ms)"
            ));
        };
        let period = humantime::parse_duration(every)
            .map_err(|e| format!("{every:?} in {text:?} is not a duration: {e}"))?;
        if period.is_zero() || period > Duration::from_secs(60) {
            return Err(format!(
                "the fsync period in {text:?} must be more than 0 and at most 1m"
            ));
        }
        Ok(Fsync::Every(period))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        crate::settings::from_toml_string(value, r#""always" or "every=<duration>""#)
    }

    fn show(&self) -> String {
        match self {
            Fsync::Always => "always".into(),
            Fsync::Every(d) => format!("every={}", humantime::format_duration(*d)),
        }
    }

    fn is_zero(&self) -> bool {
        false
    }
}

/// A write that memory applied and the journal has queued: awaiting it
/// returns once the write is as durable as the fsync mode promises.
#[must_use = "a write is acknowledged only once its Pending is awaited"]
pub(super) struct Pending(Option<(Arc<Shared>, Arc<Batch>)>);

impl Pending {
    /// Nothing to wait for: no journal, or nothing was written.
    pub(super) const NONE: Pending = Pending(None);

    /// The later of two: waiting for it covers both, since the committer
    /// finishes batches in order and stops at the first that fails.
    pub(super) fn then(self, later: Pending) -> Pending {
        if later.0.is_some() { later } else { self }
    }

    pub(super) async fn wait(self) -> Result<(), Error> {
        let Some((shared, batch)) = self.0 else {
            return Ok(());
        };
        loop {
            // Registered before the check, so a finish in between still
            // wakes this waiter.
            let notified = batch.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = batch.outcome.get() {
                return outcome
                    .as_ref()
                    .map_err(|why| shared.unavailable(why))
                    .copied();
            }
            notified.await;
        }
    }
}

/// The writes one commit takes. Each waiter is woken once, when its own
/// batch is finished, rather than on every commit.
#[derive(Default)]
struct Batch {
    outcome: OnceLock<Result<(), Arc<str>>>,
    notify: tokio::sync::Notify,
}

impl Batch {
    fn finish(&self, outcome: Result<(), Arc<str>>) {
        let _ = self.outcome.set(outcome);
        self.notify.notify_waiters();
    }
}

/// One queued change to fjall.
enum Op {
    Put {
        meta: bool,
        key: Vec<u8>,
        value: Bytes,
    },
    Remove {
        meta: bool,
        key: Vec<u8>,
    },
}

impl Op {
    /// The keyspace and key the op writes.
    fn target(&self) -> (bool, &[u8]) {
        match self {
            Op::Put { meta, key, .. } => (*meta, key),
            Op::Remove { meta, key } => (*meta, key),
        }
    }
}

#[derive(Default)]
struct Queue {
    ops: Vec<Op>,
    /// What the ops queued now will be finished with.
    batch: Arc<Batch>,
    /// Why the journal stopped taking writes; set under this lock, so no
    /// write is queued after the committer has given up.
    failed: Option<Arc<str>>,
}

/// What the writers and the committer thread share.
struct Shared {
    dir: PathBuf,
    db: fjall::Database,
    data: fjall::Keyspace,
    meta: fjall::Keyspace,
    fsync: Fsync,
    /// The last batch committed when it was opened.
    recovered: u64,
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: std::sync::atomic::AtomicBool,
    commits: ::metrics::Counter,
    writes: ::metrics::Counter,
    fsyncs: ::metrics::Counter,
    fsync_seconds: ::metrics::Histogram,
}

impl Shared {
    /// What a writer is told once the disk failed: not where the data
    /// directory is, nor the OS's words, which are for the operator (the
    /// runner's log has both), not for tenants.
    fn unavailable(&self, _why: &str) -> Error {
        Error::Unavailable(
            "the data directory cannot be written (see the runner's log); writes are refused \
             until the runner restarts"
                .into(),
        )
    }

    /// Stops taking writes: `batch` (the one being committed) and the one
    /// queued behind it fail with `error`.
    fn fail(&self, what: &str, error: &fjall::Error, batch: &Batch) {
        let why: Arc<str> = format!("{what}: {error}").into();
        tracing::error!(dir = %self.dir.display(), error = %why, "the data directory failed; key-value writes are refused until restart");
        batch.finish(Err(why.clone()));
        let mut queue = self.queue.lock();
        queue.failed = Some(why.clone());
        queue.ops.clear();
        queue.batch.finish(Err(why));
    }

    fn persist(&self) -> Result<(), fjall::Error> {
        let start = Instant::now();
        self.db.persist(PersistMode::SyncAll)?;
        self.fsync_seconds.record(start.elapsed());
        self.fsyncs.increment(1);
        Ok(())
    }

    /// The committer thread: takes the whole queue as one batch, commits it,
    /// and finishes its batch; see the module docs for each mode.
    fn run(&self) {
        let mut synced_at = Instant::now();
        let mut unsynced = false;
        // Batches committed, known durable, and told to the acknowledged
        // file.
        let (mut committed, mut durable) = (self.recovered, self.recovered);
        let mut told = (self.recovered, Instant::now());
        loop {
            let (ops, batch, stopping) = {
                let mut queue = self.queue.lock();
                loop {
                    let stopping = self.stop.load(std::sync::atomic::Ordering::Acquire);
                    if !queue.ops.is_empty() || stopping {
                        break;
                    }
                    // An untold durable batch is told when its time comes.
                    let tell = (durable > told.0)
                        .then(|| ACKNOWLEDGED_EVERY.saturating_sub(told.1.elapsed()));
                    let sync = match self.fsync {
                        Fsync::Every(period) if unsynced => {
                            Some(period.saturating_sub(synced_at.elapsed()))
                        }
                        _ => None,
                    };
                    match tell.into_iter().chain(sync).min() {
                        Some(left) if left.is_zero() => break,
                        Some(left) => {
                            self.wake.wait_for(&mut queue, left);
                        }
                        None => self.wake.wait(&mut queue),
                    }
                }
                (
                    std::mem::take(&mut queue.ops),
                    std::mem::take(&mut queue.batch),
                    self.stop.load(std::sync::atomic::Ordering::Acquire),
                )
            };
            if !ops.is_empty() {
                if let Err(e) = self.commit(ops, committed + 1) {
                    return self.fail("writing", &e, &batch);
                }
                committed += 1;
                match self.fsync {
                    Fsync::Always => {
                        if let Err(e) = self.persist() {
                            return self.fail("fsync", &e, &batch);
                        }
                        durable = committed;
                    }
                    Fsync::Every(_) => unsynced = true,
                }
                batch.finish(Ok(()));
            }
            if let Fsync::Every(period) = self.fsync
                && unsynced
                && (stopping || synced_at.elapsed() >= period)
            {
                if let Err(e) = self.persist() {
                    return self.fail("fsync", &e, &batch);
                }
                synced_at = Instant::now();
                unsynced = false;
                durable = committed;
            }
            if durable > told.0 && (stopping || told.1.elapsed() >= ACKNOWLEDGED_EVERY) {
                // Only a later check misses a loss if this fails; the
                // writes themselves are durable.
                if let Err(e) = self.tell(durable) {
                    tracing::warn!(dir = %self.dir.display(), "recording the last durable write: {e}");
                }
                told = (durable, Instant::now());
            }
            if stopping && self.queue.lock().ops.is_empty() {
                return;
            }
        }
    }

    /// Records batch `number` as durable in the acknowledged file: a new
    /// file renamed over the old, so it is one or the other, whole.
    fn tell(&self, number: u64) -> std::io::Result<()> {
        let path = self.dir.join(ACKNOWLEDGED_FILE);
        let temporary = self.dir.join(format!("{ACKNOWLEDGED_FILE}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(number.to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    }

    fn commit(&self, ops: Vec<Op>, number: u64) -> Result<(), fjall::Error> {
        let count = ops.len() as u64;
        // Every item of a fjall batch gets the same sequence number, so two
        // writes of one key in a batch would be ordered by the engine's
        // tie-breaking alone; only the last of them goes in.
        let mut last = std::collections::HashMap::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            last.insert(op.target(), i);
        }
        let mut batch = self.db.batch();
        if let Fsync::Every(_) = self.fsync {
            // Into the OS's hands, so a crash of the runner alone loses
            // nothing acknowledged.
            batch = batch.durability(Some(PersistMode::Buffer));
        }
        for (i, op) in ops.iter().enumerate() {
            if last.get(&op.target()) != Some(&i) {
                continue;
            }
            match op {
                Op::Put { meta, key, value } => {
                    let keyspace = if *meta { &self.meta } else { &self.data };
                    batch.insert(keyspace, key.as_slice(), value.as_ref());
                }
                Op::Remove { meta, key } => {
                    let keyspace = if *meta { &self.meta } else { &self.data };
                    batch.remove(keyspace, key.as_slice());
                }
            }
        }
        batch.insert(&self.meta, COMMIT_KEY, number.to_be_bytes());
        batch.commit()?;
        self.commits.increment(1);
        self.writes.increment(count);
        Ok(())
    }
}

/// The data directory, open: a tenant's saved state is read from it with
/// [`Journal::load`] and every write is recorded with [`Journal::record`].
pub struct Journal {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
    /// Tests' scratch directories go when their journal does.
    remove_on_drop: bool,
    /// Held (locked) for as long as the journal is open.
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.shared.dir)
            .field("fsync", &self.shared.fsync)
            .finish_non_exhaustive()
    }
}

/// A tenant's saved state.
#[derive(Debug, Default)]
pub(super) struct Image {
    pub seed: u64,
    /// Named buckets (the default bucket always exists).
    pub buckets: Vec<String>,
    /// (bucket, key, value, expiry in wall-clock milliseconds or 0)
    pub entries: Vec<(String, String, Bytes, u64)>,
}

impl Journal {
    /// Opens (creating if needed) the data directory `dir`. Refuses a
    /// directory another runner holds, one in another format, and one the
    /// engine cannot read, each with an error that says so.
    pub fn open(dir: &Path, fsync: Fsync) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let lock = lock(dir)?;
        let kv = dir.join("kv");
        // Whether the engine had files here: if so, a missing format record
        // means damage (say, an emptied journal), not a new directory.
        let existed = kv.exists();
        // The engine reports what it can recover from as errors; a panic on
        // input it did not expect is turned into one too, so a damaged
        // directory never takes the process down with a backtrace.
        let opened = std::panic::catch_unwind(|| -> Result<_, fjall::Error> {
            let db = fjall::Database::builder(&kv)
                .manual_journal_persist(true)
                .open()?;
            let data = db.keyspace("data", KeyspaceCreateOptions::default)?;
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
            Ok((db, data, meta))
        });
        let (db, data, meta) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => bail!(
                "the data directory {} cannot be opened: {e}; it may be damaged (restore it from a backup, or move it aside to start empty)",
                dir.display()
            ),
            Err(panic) => bail!(
                "the data directory {} cannot be opened: the storage engine failed on its contents ({}); it may be damaged (restore it from a backup, or move it aside to start empty)",
                dir.display(),
                panic_text(&panic)
            ),
        };
        check_format(dir, existed, &db, &data, &meta)?;
        let recovered = check_whole(dir, existed, &meta)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            db,
            data,
            meta,
            fsync,
            recovered,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stop: Default::default(),
            commits: ::metrics::counter!(metrics::STORE_COMMITS),
            writes: ::metrics::counter!(metrics::STORE_WRITES),
            fsyncs: ::metrics::counter!(metrics::STORE_FSYNCS),
            fsync_seconds: ::metrics::histogram!(metrics::STORE_FSYNC_DURATION),
        });
        let committer = std::thread::Builder::new()
            .name("store-journal".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run()
            })
            .context("starting the store's journal thread")?;
        Ok(Self {
            shared,
            committer: Some(committer),
            remove_on_drop: false,
            _lock: lock,
        })
    }

    /// A journal in a fresh scratch directory, removed when it closes.
    #[cfg(test)]
    pub(super) fn scratch(fsync: Fsync) -> Self {
        let mut journal = Self::open(&scratch_dir(), fsync).expect("opening a scratch journal");
        journal.remove_on_drop = true;
        journal
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn fsync(&self) -> Fsync {
        self.shared.fsync
    }

    /// `tenant`'s saved state; a tenant seen for the first time gets a
    /// fresh hash seed, saved before this returns.
    pub(super) fn load(&self, tenant: &str) -> Result<Image, Error> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read_image(tenant)))
            .unwrap_or_else(|panic| {
                Err(Error::Unavailable(format!(
                    "reading tenant {tenant:?} from the data directory {}: the storage engine failed on its contents ({}); it may be damaged",
                    self.shared.dir.display(),
                    panic_text(&panic)
                )))
            })
    }

    fn read_image(&self, tenant: &str) -> Result<Image, Error> {
        let damaged = |what: String| {
            Error::Unavailable(format!(
                "the data directory {} holds {what} for tenant {tenant:?}; it may be damaged",
                self.shared.dir.display()
            ))
        };
        let engine = |e: fjall::Error| {
            Error::Unavailable(format!(
                "reading tenant {tenant:?} from the data directory {}: {e}",
                self.shared.dir.display()
            ))
        };
        let name = encode(&[tenant]);
        let mut seed_key = vec![SEED_TAG];
        seed_key.extend_from_slice(&name);
        let mut image = Image::default();
        match self.shared.meta.get(&seed_key).map_err(engine)? {
            Some(saved) => {
                let bytes: [u8; 8] = saved
                    .as_ref()
                    .try_into()
                    .map_err(|_| damaged(format!("a {}-byte hash seed", saved.len())))?;
                image.seed = u64::from_le_bytes(bytes);
            }
            None => {
                image.seed = random_seed();
                self.shared
                    .meta
                    .insert(&seed_key, image.seed.to_le_bytes())
                    .map_err(engine)?;
                self.shared.persist().map_err(engine)?;
            }
        }
        let mut bucket_prefix = vec![BUCKET_TAG];
        bucket_prefix.extend_from_slice(&name);
        for item in self.shared.meta.prefix(&bucket_prefix) {
            let key = item.key().map_err(engine)?;
            let (bucket, _) = decode(&key[bucket_prefix.len()..])
                .ok_or_else(|| damaged("a malformed bucket record".into()))?;
            image.buckets.push(bucket);
        }
        // Expiries by the record's key past the tenant's name.
        let mut expiry_prefix = vec![EXPIRY_TAG];
        expiry_prefix.extend_from_slice(&name);
        let mut expiries = std::collections::HashMap::new();
        for item in self.shared.meta.prefix(&expiry_prefix) {
            let (key, at) = item.into_inner().map_err(engine)?;
            let at: [u8; 8] = at
                .as_ref()
                .try_into()
                .map_err(|_| damaged(format!("a {}-byte expiry", at.len())))?;
            expiries.insert(key[expiry_prefix.len()..].to_vec(), u64::from_le_bytes(at));
        }
        for item in self.shared.data.prefix(&name) {
            let (key, value) = item.into_inner().map_err(engine)?;
            let rest = &key[name.len()..];
            let expires = expiries.get(rest).copied().unwrap_or(0);
            let (bucket, rest) =
                decode(rest).ok_or_else(|| damaged("a malformed key record".into()))?;
            let key = std::str::from_utf8(rest)
                .map_err(|_| damaged("a key that is not UTF-8".into()))?
                .to_owned();
            image
                .entries
                .push((bucket, key, Bytes::copy_from_slice(&value), expires));
        }
        Ok(image)
    }

    /// Queues `key`'s new value (`None`: its removal) in bucket `prefix`
    /// (from [`Journal::bucket_prefix`]). Called under the key's shard lock,
    /// before memory applies the write; an error means the write must not
    /// be applied.
    /// `expiry` says what becomes of the key's saved expiry; the value
    /// and its expiry go in one batch, so a crash keeps both or neither.
    pub(super) fn record(
        &self,
        prefix: &[u8],
        key: &str,
        value: Option<&Bytes>,
        expiry: Expiry,
    ) -> Result<Pending, Error> {
        let mut full = Vec::with_capacity(prefix.len() + key.len());
        full.extend_from_slice(prefix);
        full.extend_from_slice(key.as_bytes());
        let expiry_key = || {
            let mut tagged = Vec::with_capacity(1 + full.len());
            tagged.push(EXPIRY_TAG);
            tagged.extend_from_slice(&full);
            tagged
        };
        let saved = match expiry {
            Expiry::None => None,
            Expiry::At(at) if value.is_some() => Some(Op::Put {
                meta: true,
                key: expiry_key(),
                value: Bytes::copy_from_slice(&at.to_le_bytes()),
            }),
            Expiry::At(_) | Expiry::Clear => Some(Op::Remove {
                meta: true,
                key: expiry_key(),
            }),
        };
        let op = match value {
            Some(value) => Op::Put {
                meta: false,
                key: full,
                value: value.clone(),
            },
            None => Op::Remove {
                meta: false,
                key: full,
            },
        };
        match saved {
            None => self.push(op),
            Some(saved) => self.push_all([op, saved]),
        }
    }

    /// Queues the creation of `tenant`'s bucket `bucket`.
    pub(super) fn record_bucket(&self, tenant: &str, bucket: &str) -> Result<Pending, Error> {
        let mut key = vec![BUCKET_TAG];
        key.extend_from_slice(&encode(&[tenant, bucket]));
        self.push(Op::Put {
            meta: true,
            key,
            value: Bytes::new(),
        })
    }

    /// Queues the removal of `tenant`'s own records (its hash seed and its
    /// named `buckets`), once its keys are queued for deletion: a purge.
    pub(super) fn forget(&self, tenant: &str, buckets: &[Box<str>]) -> Result<Pending, Error> {
        let mut pending = Pending::NONE;
        for bucket in buckets {
            let mut key = vec![BUCKET_TAG];
            key.extend_from_slice(&encode(&[tenant, bucket]));
            pending = pending.then(self.push(Op::Remove { meta: true, key })?);
        }
        let mut key = vec![SEED_TAG];
        key.extend_from_slice(&encode(&[tenant]));
        Ok(pending.then(self.push(Op::Remove { meta: true, key })?))
    }

    /// Where `tenant`'s bucket `bucket` keeps its keys in the journal.
    pub(super) fn bucket_prefix(tenant: &str, bucket: &str) -> Box<[u8]> {
        encode(&[tenant, bucket]).into_boxed_slice()
    }

    fn push(&self, op: Op) -> Result<Pending, Error> {
        self.push_all([op])
    }

    /// Queues `ops` together: one commit takes all of them.
    fn push_all<const N: usize>(&self, ops: [Op; N]) -> Result<Pending, Error> {
        let batch = {
            let mut queue = self.shared.queue.lock();
            if let Some(why) = &queue.failed {
                return Err(self.shared.unavailable(why));
            }
            queue.ops.extend(ops);
            queue.batch.clone()
        };
        self.shared.wake.notify_one();
        Ok(Pending(Some((self.shared.clone(), batch))))
    }
}

impl Drop for Journal {
    /// Commits and fsyncs what is queued, then stops the committer.
    fn drop(&mut self) {
        // Set under the queue's lock: the committer checks the flag under
        // it before it waits, so the wake-up below cannot fall between its
        // check and its wait and be lost (the committer would sleep on, and
        // this join with it).
        {
            let _queue = self.shared.queue.lock();
            self.shared
                .stop
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.shared.wake.notify_one();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        if self.remove_on_drop {
            let _ = std::fs::remove_dir_all(&self.shared.dir);
        }
    }
}

/// Takes the directory's lock file, or names the runner that holds it.
fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("runner.lock");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            bail!(
                "the data directory {} is in use by another runner{by}; each directory serves one runner at a time",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    // Best effort: the pid only makes the message above more useful.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

fn check_format(
    dir: &Path,
    existed: bool,
    db: &fjall::Database,
    data: &fjall::Keyspace,
    meta: &fjall::Keyspace,
) -> anyhow::Result<()> {
    let read =
        |e: fjall::Error| anyhow::anyhow!("reading the data directory {}: {e}", dir.display());
    match meta.get(FORMAT_KEY).map_err(read)? {
        Some(saved) => {
            let version = std::str::from_utf8(&saved)
                .ok()
                .and_then(|s| s.parse::<u32>().ok());
            match version {
                Some(FORMAT) => Ok(()),
                Some(other) => bail!(
                    "the data directory {} is in format {other}; this runner reads format {FORMAT}",
                    dir.display()
                ),
                None => bail!(
                    "the data directory {} has an unreadable format record; it may be damaged",
                    dir.display()
                ),
            }
        }
        None => {
            let empty = data.is_empty().map_err(read)? && meta.is_empty().map_err(read)?;
            if existed || !empty {
                bail!(
                    "the data directory {} holds data but no format record; it may be damaged",
                    dir.display()
                );
            }
            meta.insert(FORMAT_KEY, FORMAT.to_string()).map_err(read)?;
            db.persist(PersistMode::SyncAll).map_err(read)?;
            Ok(())
        }
    }
}

/// The last batch the engine recovered, after checking nothing
/// acknowledged is missing: none after it was recorded durable, and no
/// `kv/` is missing beside deployments kept in `fleet/`.
fn check_whole(dir: &Path, existed: bool, meta: &fjall::Keyspace) -> anyhow::Result<u64> {
    let damaged = |what: String| {
        anyhow::anyhow!(
            "the data directory {} {what}; it may be damaged, or partly restored (restore it \
             whole from a backup, or move it aside to start empty)",
            dir.display()
        )
    };
    let fleet = dir.join("fleet");
    if !existed && std::fs::read_dir(&fleet).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(damaged(format!(
            "has deployments in {} but no key-value data (kv/ is missing)",
            fleet.display()
        )));
    }
    let recovered = match meta.get(COMMIT_KEY) {
        Ok(Some(saved)) => <[u8; 8]>::try_from(&*saved)
            .map(u64::from_be_bytes)
            .map_err(|_| damaged("has an unreadable commit record".into()))?,
        Ok(None) => 0,
        Err(e) => return Err(damaged(format!("cannot be read ({e})"))),
    };
    let told = match std::fs::read_to_string(dir.join(ACKNOWLEDGED_FILE)) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| damaged(format!("has an unreadable {ACKNOWLEDGED_FILE} file")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(damaged(format!(
                "has an unreadable {ACKNOWLEDGED_FILE} file ({e})"
            )));
        }
    };
    if told > recovered {
        return Err(damaged(format!(
            "is missing acknowledged writes: its journal ends at batch {recovered}, but batch \
             {told} was written durably"
        )));
    }
    Ok(recovered)
}

/// Each part as a big-endian u16 length and its bytes: parts never run
/// into each other, so no two lists share an encoding. Names fit: tenant
/// names are short and bucket names at most 255 bytes.
fn encode(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum());
    for part in parts {
        let len = u16::try_from(part.len()).expect("names are shorter than 64 KiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The first part of an encoding, and what follows it.
fn decode(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
    let part = bytes.get(2..2 + len)?;
    let part = std::str::from_utf8(part).ok()?.to_owned();
    Some((part, &bytes[2 + len..]))
}

/// 64 random bits from the standard library's per-process random keys.
pub(super) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::hash::RandomState::new().build_hasher().finish()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// A directory no other test uses.
#[cfg(test)]
pub(crate) fn scratch_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("runner-store-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{conformance_suite, walk};
    use crate::store::memory::Store;
    use crate::store::{DEFAULT_BUCKET, Namespace, Quota, Quotas, Usage};

    conformance_suite!(Store::on(8, Journal::scratch(Fsync::Always)));

    mod every {
        use super::*;
        conformance_suite!(Store::on(
            8,
            Journal::scratch(Fsync::Every(Duration::from_millis(5)))
        ));
    }

    /// A scratch directory removed when the test ends, for tests that
    /// reopen it.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            Dir(scratch_dir())
        }

        fn open(&self, quotas: &Quotas) -> Namespace {
            let store = Store::durable(4, &self.0, Fsync::Always).expect("opening the data dir");
            Namespace::new(&store, "t", quotas.clone()).expect("opening the namespace")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_purge_survives_a_restart_and_spares_other_tenants() {
        use crate::store::Backend as _;
        let dir = Dir::new();
        {
            let store = Store::durable(4, &dir.0, Fsync::Always).unwrap();
            for tenant in ["t", "u"] {
                let ns = Namespace::new(&store, tenant, Quotas::default()).unwrap();
                let b = ns.open("named").await.unwrap();
                b.set("k".into(), Bytes::from_static(b"v")).await.unwrap();
            }
            store.purge("t").await.unwrap();
        }
        // Purged before it was ever opened in this process, too.
        {
            let store = Store::durable(4, &dir.0, Fsync::Always).unwrap();
            store.purge("u").await.unwrap();
            let ns = Namespace::new(&store, "v", Quotas::default()).unwrap();
            let b = ns.open("").await.unwrap();
            b.set("k".into(), Bytes::from_static(b"kept"))
                .await
                .unwrap();
        }
        let store = Store::durable(4, &dir.0, Fsync::Always).unwrap();
        for tenant in ["t", "u"] {
            let ns = Namespace::new(&store, tenant, Quotas::default()).unwrap();
            assert_eq!(ns.usage(), Usage::default(), "{tenant}");
            let named = ns.open("named").await.unwrap();
            assert_eq!(named.get("k").await.unwrap(), None, "{tenant}");
        }
        let ns = Namespace::new(&store, "v", Quotas::default()).unwrap();
        let b = ns.open("").await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), Some(Bytes::from_static(b"kept")));
    }

    #[tokio::test]
    async fn data_usage_and_buckets_survive_a_restart() {
        let dir = Dir::new();
        let quotas = Quotas {
            max_buckets: 2,
            ..Quotas::default()
        };
        {
            let ns = dir.open(&quotas);
            let b = ns.open("").await.unwrap();
            b.set("kept".into(), Bytes::from_static(b"v1"))
                .await
                .unwrap();
            b.set("kept".into(), Bytes::from_static(b"v2"))
                .await
                .unwrap();
            b.set("gone".into(), Bytes::from_static(b"x"))
                .await
                .unwrap();
            b.delete("gone").await.unwrap();
            assert_eq!(b.increment("n".into(), 41).await.unwrap(), 41);
            assert_eq!(b.increment("n".into(), 1).await.unwrap(), 42);
            let named = ns.open("named").await.unwrap();
            named
                .set_many(vec![
                    ("a".into(), Bytes::from_static(b"1")),
                    ("b".into(), Bytes::new()),
                ])
                .await
                .unwrap();
            named.delete_many(&["b".into()]).await.unwrap();
            ns.open("empty").await.unwrap();
        }
        let ns = dir.open(&quotas);
        let b = ns.open("default").await.unwrap();
        assert_eq!(
            b.get("kept").await.unwrap(),
            Some(Bytes::from_static(b"v2"))
        );
        assert_eq!(b.get("gone").await.unwrap(), None);
        assert_eq!(b.increment("n".into(), 1).await.unwrap(), 43);
        let named = ns.open("named").await.unwrap();
        assert_eq!(walk(&named).await, vec!["a".to_string()]);
        // kept=v2, n=43, a=1: 3 keys of 6, 3 and 2 bytes.
        assert_eq!(ns.usage(), crate::store::Usage { keys: 3, bytes: 11 });
        // "named" and "empty" were created before: the bucket quota is full.
        match ns.open("third").await {
            Err(Error::Quota {
                quota: Quota::Buckets,
                ..
            }) => {}
            other => panic!("a third bucket past a quota of 2: {other:?}"),
        }
    }

    /// An expiry is saved with its value: a key still due after a restart
    /// expires on time, one that expired while the runner was stopped is
    /// not brought back (nor counted), and a plain write made a key
    /// permanent for good.
    #[tokio::test]
    async fn expiries_survive_a_restart_and_expired_keys_stay_gone() {
        use crate::store::SetOptions;
        let dir = Dir::new();
        let ttl = |ms| SetOptions {
            ttl: Some(Duration::from_millis(ms)),
            if_absent: false,
        };
        let v = |s: &'static str| Bytes::from_static(s.as_bytes());
        let token = {
            let ns = dir.open(&Quotas::default());
            let b = ns.open("").await.unwrap();
            b.set_with("short".into(), v("s"), ttl(300)).await.unwrap();
            b.set_with("long".into(), v("l"), ttl(3_600_000))
                .await
                .unwrap();
            b.set_with("made-permanent".into(), v("p1"), ttl(300))
                .await
                .unwrap();
            b.set("made-permanent".into(), v("p2")).await.unwrap();
            b.set_with("soon".into(), v("n"), ttl(1_500)).await.unwrap();
            b.set("plain".into(), v("x")).await.unwrap();
            b.set_with("deleted".into(), v("d"), ttl(3_600_000))
                .await
                .unwrap();
            b.delete("deleted").await.unwrap();
            b.current("plain").await.unwrap().unwrap().version
        };
        // The runner is stopped past "short"'s expiry.
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Held, with its reaper, for as long as the test reads.
        let store = Store::durable(4, &dir.0, Fsync::Always).expect("opening the data dir");
        let ns = Namespace::new(&store, "t", Quotas::default()).expect("opening the namespace");
        let b = ns.open("").await.unwrap();
        // A version token of before the restart matches nothing after it
        // (as the README says), even on the unchanged value.
        let require = crate::store::Require {
            version: Some(token),
            value: None,
        };
        let now = b.current("plain").await.unwrap();
        assert_eq!(
            b.swap("plain".into(), v("y"), require).await.unwrap(),
            crate::store::Swapped::Stale(now)
        );
        for (key, value) in [
            ("short", None),
            ("long", Some(v("l"))),
            ("made-permanent", Some(v("p2"))),
            ("soon", Some(v("n"))),
            ("plain", Some(v("x"))),
            ("deleted", None),
        ] {
            assert_eq!(b.get(key).await.unwrap(), value, "{key}");
        }
        let bytes = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>()
        };
        let kept = [("long", "l"), ("made-permanent", "p2"), ("plain", "x")];
        assert_eq!(
            ns.usage(),
            Usage {
                keys: 4,
                bytes: bytes(&kept) + bytes(&[("soon", "n")]),
            }
        );
        // "soon" expires on time after the restart, its quota given back
        // with no request arriving.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(b.get("soon").await.unwrap(), None);
        assert_eq!(
            ns.usage(),
            Usage {
                keys: 3,
                bytes: bytes(&kept),
            }
        );
        drop((b, ns, store));
        let ns = dir.open(&Quotas::default());
        assert_eq!(ns.usage().keys, 3);
        let b = ns.open("").await.unwrap();
        assert_eq!(b.get("made-permanent").await.unwrap(), Some(v("p2")));
    }

    #[tokio::test]
    async fn a_cursor_stays_valid_across_a_restart() {
        let dir = Dir::new();
        let quotas = Quotas {
            max_page_keys: 10,
            ..Quotas::default()
        };
        let first = {
            let ns = dir.open(&quotas);
            let b = ns.open("").await.unwrap();
            for i in 0..100 {
                b.set(format!("k{i}"), Bytes::new()).await.unwrap();
            }
            b.list_keys(None).await.unwrap()
        };
        assert_eq!(first.keys.len(), 10);
        let ns = dir.open(&quotas);
        let b = ns.open("").await.unwrap();
        let mut keys = first.keys;
        let mut cursor = first.cursor;
        while let Some(c) = cursor {
            let page = b.list_keys(Some(c)).await.unwrap();
            keys.extend(page.keys);
            cursor = page.cursor;
        }
        keys.sort();
        let mut expected: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        expected.sort();
        assert_eq!(keys, expected);
    }

    #[tokio::test]
    async fn data_past_a_lowered_quota_is_kept_and_refuses_growth() {
        let dir = Dir::new();
        {
            let b = dir.open(&Quotas::default()).open("").await.unwrap();
            for i in 0..5 {
                b.set(format!("k{i}"), Bytes::new()).await.unwrap();
            }
        }
        let ns = dir.open(&Quotas {
            max_keys: 3,
            ..Quotas::default()
        });
        let b = ns.open("").await.unwrap();
        assert_eq!(ns.usage().keys, 5);
        assert_eq!(walk(&b).await.len(), 5);
        match b.set("k9".into(), Bytes::new()).await {
            Err(Error::Quota {
                quota: Quota::Keys, ..
            }) => {}
            other => panic!("a new key past the quota: {other:?}"),
        }
        // Overwriting an existing key adds no key.
        b.set("k0".into(), Bytes::from_static(b"x")).await.unwrap();
        b.delete("k1").await.unwrap();
        assert_eq!(ns.usage().keys, 4);
    }

    /// Writes of one key that land in one batch keep their order: the last
    /// one is what a restart finds.
    #[tokio::test]
    async fn the_last_write_of_a_key_in_a_batch_wins() {
        let dir = Dir::new();
        let prefix = Journal::bucket_prefix("t", DEFAULT_BUCKET);
        let key = |k: &str| [&prefix[..], k.as_bytes()].concat();
        let put = |k: &str, v: &'static [u8]| Op::Put {
            meta: false,
            key: key(k),
            value: Bytes::from_static(v),
        };
        {
            let journal = Journal::open(&dir.0, Fsync::Always).unwrap();
            journal
                .shared
                .commit(
                    vec![
                        put("gone", b"1"),
                        Op::Remove {
                            meta: false,
                            key: key("gone"),
                        },
                        put("kept", b"1"),
                        Op::Remove {
                            meta: false,
                            key: key("kept"),
                        },
                        put("kept", b"2"),
                    ],
                    1,
                )
                .unwrap();
        }
        let journal = Journal::open(&dir.0, Fsync::Always).unwrap();
        let image = journal.load("t").unwrap();
        assert_eq!(
            image.entries,
            vec![(
                DEFAULT_BUCKET.to_string(),
                "kept".to_string(),
                Bytes::from_static(b"2"),
                0
            )]
        );
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = Dir::new();
        let _held = Journal::open(&dir.0, Fsync::Always).unwrap();
        let err = Journal::open(&dir.0, Fsync::Always)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "the data directory {} is in use by another runner (pid {}); each directory serves one runner at a time",
                dir.0.display(),
                std::process::id()
            )
        );
    }

    /// Every file fjall wrote, so a test can damage them.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.join("kv")];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }

    /// Each file of a directory holding 200 keys, truncated to half,
    /// emptied, or with 16 bytes flipped in its middle: opening it either
    /// recovers all 200 keys (the engine's own recovery, or a file it does
    /// not need) or fails saying the directory may be damaged. Never a
    /// panic, never a silently partial load.
    #[tokio::test]
    async fn damaged_directories_recover_whole_or_are_refused() {
        let make = || async {
            let dir = Dir::new();
            {
                let b = dir.open(&Quotas::default()).open("").await.unwrap();
                for i in 0..200 {
                    b.set(format!("k{i}"), Bytes::from(vec![b'v'; 100]))
                        .await
                        .unwrap();
                }
            }
            dir
        };
        let count = files(&make().await.0).len();
        assert!(count >= 5, "fjall wrote only {count} files");
        let (mut recovered, mut refused) = (0, 0);
        for index in 0..count {
            for damage in ["truncate", "empty", "flip"] {
                let dir = make().await;
                let file = files(&dir.0)[index].clone();
                let mut bytes = std::fs::read(&file).unwrap();
                match damage {
                    "truncate" => bytes.truncate(bytes.len() / 2),
                    "empty" => bytes.clear(),
                    _ => {
                        let mid = bytes.len() / 2;
                        bytes.iter_mut().skip(mid).take(16).for_each(|b| *b ^= 0xA5);
                    }
                }
                std::fs::write(&file, bytes).unwrap();
                let what = format!("{damage} {}", file.strip_prefix(&dir.0).unwrap().display());
                let opened = std::panic::catch_unwind(|| {
                    let store = Store::durable(4, &dir.0, Fsync::Always)?;
                    Ok::<_, anyhow::Error>(Namespace::new(&store, "t", Quotas::default())?.usage())
                })
                .unwrap_or_else(|p| panic!("{what}: panicked: {}", panic_text(&p)));
                match opened {
                    Ok(usage) => {
                        assert_eq!(usage.keys, 200, "{what}: recovered only part");
                        recovered += 1;
                    }
                    Err(e) => {
                        let e = e.to_string();
                        assert!(
                            e.starts_with(&format!("the data directory {}", dir.0.display()))
                                && e.contains("may be damaged"),
                            "{what}: {e}"
                        );
                        refused += 1;
                    }
                }
            }
        }
        assert!(
            recovered > 0 && refused > 0,
            "{recovered} recovered, {refused} refused"
        );
    }

    #[tokio::test]
    async fn an_emptied_journal_is_damage_not_a_new_directory() {
        let dir = Dir::new();
        {
            let b = dir.open(&Quotas::default()).open("").await.unwrap();
            b.set("k".into(), Bytes::from_static(b"v")).await.unwrap();
        }
        let journal = files(&dir.0)
            .into_iter()
            .find(|f| f.extension().is_some_and(|e| e == "jnl"))
            .expect("a journal file");
        std::fs::write(&journal, b"").unwrap();
        let err = Store::durable(4, &dir.0, Fsync::Always)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "the data directory {} holds data but no format record; it may be damaged",
                dir.0.display()
            )
        );
    }

    #[test]
    fn another_format_is_refused() {
        let dir = Dir::new();
        {
            let journal = Journal::open(&dir.0, Fsync::Always).unwrap();
            journal.shared.meta.insert(FORMAT_KEY, "2").unwrap();
        }
        let err = Journal::open(&dir.0, Fsync::Always)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "the data directory {} is in format 2; this runner reads format 1",
                dir.0.display()
            )
        );
    }

    #[test]
    fn encodings_are_injective() {
        assert_ne!(encode(&["ab", "c"]), encode(&["a", "bc"]));
        assert_ne!(encode(&["a", ""]), encode(&["", "a"]));
        let bytes = encode(&["tenant", "bucket"]);
        let (tenant, rest) = decode(&bytes).unwrap();
        let (bucket, rest) = decode(rest).unwrap();
        assert_eq!(
            (tenant.as_str(), bucket.as_str(), rest),
            ("tenant", "bucket", &[][..])
        );
        assert_eq!(decode(&[0, 5, b'a']), None);
    }

    #[test]
    fn fsync_modes_parse_and_show() {
        use crate::settings::Setting;
        assert_eq!(Fsync::parse_flag("always"), Ok(Fsync::Always));
        assert_eq!(
            Fsync::parse_flag("every=100ms"),
            Ok(Fsync::Every(Duration::from_millis(100)))
        );
        assert_eq!(
            Fsync::Every(Duration::from_millis(100)).show(),
            "every=100ms"
        );
        for bad in ["never", "every=", "every=0s", "every=2m", "every=fast"] {
            assert!(Fsync::parse_flag(bad).is_err(), "{bad} parsed");
        }
    }
}
