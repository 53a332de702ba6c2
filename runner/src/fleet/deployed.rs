//! What the admin API deployed, kept so that a restart brings the fleet
//! back as it was: in the data directory ([`Deployed`]), or, with
//! `--store redis://...`, in the Redis that every runner of the fleet
//! shares ([`Shared`]), which also tells each of them of every change.
//!
//! In the data directory, beside the key-value journal (`<data-dir>/kv`), under the same lock:
//! - `<data-dir>/fleet/components/<hex>.wasm`: each component uploaded, by
//!   its SHA-256;
//! - `<data-dir>/fleet/tenants.json`: each tenant deployed through the API,
//!   with its component digest, its whole effective limits and its
//!   incarnation (made anew each time it is created).
//!
//! Every write goes to a temporary file, is fsynced, renamed over the old
//! one and the directory fsynced, so a crash leaves the old or the new
//! version, never a mix; the API answers only after that.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::engine::component::Digest;
use crate::store::redis::Connection;

/// How often every runner on a shared Redis reads every tenant again,
/// whatever was announced (see [`super::follow`]).
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// A tenant as deployed: what `PUT /v1/tenants/{name}` would send again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTenant {
    /// Its component's id in a Spin manifest; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `sha256:<hex>`, or `default` for the embedded guest.
    pub component: String,
    /// Every limit, by its config key.
    pub limits: serde_json::Map<String, serde_json::Value>,
    /// Its configuration (never its secrets, which are not kept in the
    /// clear).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// Its secrets, each sealed (`crate::seal`): never in the clear here.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Made anew each time the tenant is created (an update keeps it): a
    /// tenant removed with its data purged and made again with the same
    /// component and limits is another tenant, which a runner that saw
    /// neither change must build afresh (its old version writes in the
    /// purged generation). Empty in what older runners saved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
    /// Its further components (a Spin application's other HTTP
    /// triggers), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<SavedPart>,
    /// Its own certificate for the hosts it claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SavedTls>,
}

/// A tenant's certificate as deployed: the chain in the clear, the key
/// sealed (for `{tenant}#tls`, as secret `key`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTls {
    pub cert: String,
    pub key: String,
}

/// A further component of a tenant as deployed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedPart {
    /// Its id in the manifest.
    pub id: String,
    /// `sha256:<hex>`.
    pub component: String,
    /// The limits it sets for itself (`super::PART_LIMITS`): the others
    /// are the tenant's.
    pub limits: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// Sealed, for the tenant's name and the part's: `{tenant}/{id}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, String>,
}

impl SavedTenant {
    /// Whether it runs component `named` (`sha256:<hex>`), in any part.
    pub fn runs(&self, named: &str) -> bool {
        self.component == named || self.parts.iter().any(|p| p.component == named)
    }

    /// A new incarnation's name: 64 random bits, in hex.
    pub fn new_incarnation() -> String {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        format!("{:016x}", hasher.finish())
    }
}

pub type SavedTenants = BTreeMap<String, SavedTenant>;

#[derive(Debug)]
pub struct Deployed {
    dir: PathBuf,
}

const TENANTS: &str = "tenants.json";

impl Deployed {
    /// The `fleet` directory inside data directory `data_dir`, created if
    /// missing.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("fleet");
        std::fs::create_dir_all(dir.join("components"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Where component `digest` is kept.
    pub fn component_file(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("components")
            .join(format!("{}.wasm", digest.hex()))
    }

    /// Keeps `bytes` as component `digest` (once: the same bytes are not
    /// written twice).
    pub fn save_component(&self, digest: &Digest, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.component_file(digest);
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, bytes)
    }

    /// Deletes the copy of component `digest`; says whether there was one.
    pub fn remove_component(&self, digest: &Digest) -> anyhow::Result<bool> {
        let path = self.component_file(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Deletes the copies, written over `grace` ago, of components `keep`
    /// does not name: uploads no tenant ran (before a restart, say).
    /// Returns the digests deleted.
    pub fn sweep(&self, keep: &dyn Fn(&Digest) -> bool, grace: Duration) -> Vec<Digest> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("components")) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".wasm")) else {
                continue;
            };
            let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= grace));
            if old && !keep(&digest) && std::fs::remove_file(entry.path()).is_ok() {
                removed.push(digest);
            }
        }
        removed
    }

    /// The bytes of component `digest`, checked against it.
    pub fn load_component(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let path = self.component_file(digest);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if Digest::of(&bytes) != *digest {
            anyhow::bail!(
                "{} does not hold component {digest}: the data directory may be damaged",
                path.display()
            );
        }
        Ok(bytes)
    }

    pub fn save_tenants(&self, tenants: &SavedTenants) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(tenants).context("encoding the deployed tenants")?;
        write_atomically(&self.dir.join(TENANTS), &text)
    }

    /// The tenants saved; none before the first deploy.
    pub fn load_tenants(&self) -> anyhow::Result<SavedTenants> {
        let path = self.dir.join(TENANTS);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not readable: the data directory may be damaged",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedTenants::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Where the API's deployments are kept.
#[derive(Debug)]
pub enum Keeper {
    Files(Deployed),
    Redis(Shared),
}

impl Keeper {
    /// Keeps `bytes` as component `digest`.
    pub async fn save_component(&self, digest: &Digest, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Keeper::Files(files) => files.save_component(digest, bytes),
            Keeper::Redis(redis) => redis.save_component(digest, bytes).await,
        }
    }

    /// The bytes of component `digest`, checked against it.
    pub async fn load_component(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let bytes = match self {
            Keeper::Files(files) => return files.load_component(digest),
            Keeper::Redis(redis) => redis.load_component(digest).await?,
        };
        if Digest::of(&bytes) != *digest {
            anyhow::bail!("the store holds other bytes under component {digest}: it is damaged");
        }
        Ok(bytes)
    }

    /// Whether the keeper has component `digest`.
    pub async fn has_component(&self, digest: &Digest) -> anyhow::Result<bool> {
        match self {
            Keeper::Files(files) => Ok(files.component_file(digest).exists()),
            Keeper::Redis(redis) => redis.has_component(digest).await,
        }
    }

    /// The bytes of component `digest` if the keeper has them.
    pub async fn find_component(&self, digest: &Digest) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.has_component(digest).await? {
            return Ok(None);
        }
        self.load_component(digest).await.map(Some)
    }

    /// Writes the change from `before` to `after`.
    pub async fn save_tenants(
        &self,
        before: &SavedTenants,
        after: &SavedTenants,
    ) -> anyhow::Result<()> {
        match self {
            Keeper::Files(files) => files.save_tenants(after),
            Keeper::Redis(redis) => redis.save_tenants(before, after).await,
        }
    }

    pub async fn load_tenants(&self) -> anyhow::Result<SavedTenants> {
        match self {
            Keeper::Files(files) => files.load_tenants(),
            Keeper::Redis(redis) => redis.load_tenants().await,
        }
    }

    /// Whether other runners share these deployments (and a reload's
    /// tenants file speaks for this runner only).
    pub fn shared(&self) -> Option<&Shared> {
        match self {
            Keeper::Files(_) => None,
            Keeper::Redis(redis) => Some(redis),
        }
    }
}

/// What deleting a component from the fleet's Redis came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Redis had no such component.
    Absent,
    /// Tenants of the fleet name it (at most five of them): kept.
    InUse(Vec<String>),
}

/// The deployments every runner on one Redis shares, under its prefix:
/// - `<prefix>fleet:tenants`: a hash, each tenant's [`SavedTenant`] as JSON;
/// - `<prefix>fleet:component:<hex>`: each component's bytes;
/// - `<prefix>fleet:changes`: the channel on which a runner that changed a
///   tenant publishes its name; every runner subscribed reads the tenant
///   again and applies what it finds.
pub struct Shared {
    connection: Connection,
    /// For the subscription, which needs a connection of its own.
    urls: Vec<String>,
    prefix: String,
    timeout: Duration,
}

// By hand: the URLs may carry a password.
impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The bound on one command, from `--store-timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn new(connection: Connection, urls: &[String], prefix: &str, timeout: Duration) -> Self {
        Self {
            connection,
            urls: urls.to_vec(),
            prefix: prefix.to_string(),
            timeout,
        }
    }

    fn tenants_key(&self) -> String {
        format!("{}fleet:tenants", self.prefix)
    }

    /// The channel changes are announced on.
    pub fn channel(&self) -> String {
        format!("{}fleet:changes", self.prefix)
    }

    /// The nodes a subscription may connect to, first one first.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A component may be many megabytes: its transfer gets longer than
    /// one key-value call.
    fn transfer_timeout(&self) -> Duration {
        (self.timeout * 20).max(Duration::from_secs(10))
    }

    async fn query<T: ::redis::FromRedisValue>(
        &self,
        cmd: &::redis::Cmd,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let mut connection = self.connection.current();
        let outcome = tokio::time::timeout(timeout, cmd.query_async(&mut connection)).await;
        if let Ok(Err(e)) = &outcome {
            connection.renew_after(e);
        }
        match outcome {
            Ok(result) => result.context("redis"),
            Err(_) => anyhow::bail!(
                "redis did not answer within {}",
                humantime::format_duration(timeout)
            ),
        }
    }

    async fn save_component(&self, digest: &Digest, bytes: &[u8]) -> anyhow::Result<()> {
        let mut set = ::redis::cmd("SET");
        set.arg(self.component_key(digest)).arg(bytes).arg("NX");
        self.query::<()>(&set, self.transfer_timeout())
            .await
            .with_context(|| format!("keeping component {digest} in Redis"))
    }

    fn component_key(&self, digest: &Digest) -> String {
        format!("{}fleet:component:{}", self.prefix, digest.hex())
    }

    async fn has_component(&self, digest: &Digest) -> anyhow::Result<bool> {
        let mut exists = ::redis::cmd("EXISTS");
        exists.arg(self.component_key(digest));
        self.query(&exists, self.timeout * 4)
            .await
            .with_context(|| format!("looking for component {digest} in Redis"))
    }

    /// Deletes the fleet's copy of component `digest` unless a tenant of
    /// the fleet names it. A deploy of the same component that a runner
    /// saves between the check and the delete would name a component the
    /// fleet no longer has: the copy is put back if a second check finds
    /// such a tenant.
    pub async fn remove_component(&self, digest: &Digest) -> anyhow::Result<Removal> {
        let users = |tenants: &SavedTenants| -> Vec<String> {
            let named = digest.to_string();
            tenants
                .iter()
                .filter(|(_, t)| t.runs(&named))
                .map(|(name, _)| name.clone())
                .take(5)
                .collect()
        };
        let users_now = users(&self.load_tenants().await?);
        if !users_now.is_empty() {
            return Ok(Removal::InUse(users_now));
        }
        let key = self.component_key(digest);
        let mut get = ::redis::cmd("GET");
        get.arg(&key);
        let bytes: Option<Vec<u8>> = self.query(&get, self.transfer_timeout()).await?;
        let Some(bytes) = bytes else {
            return Ok(Removal::Absent);
        };
        let mut del = ::redis::cmd("DEL");
        del.arg(&key);
        self.query::<()>(&del, self.timeout * 4).await?;
        let users_after = users(&self.load_tenants().await?);
        if !users_after.is_empty() {
            self.save_component(digest, &bytes).await?;
            return Ok(Removal::InUse(users_after));
        }
        Ok(Removal::Removed)
    }

    async fn load_component(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let mut get = ::redis::cmd("GET");
        get.arg(self.component_key(digest));
        let found: Option<Vec<u8>> = self
            .query(&get, self.transfer_timeout())
            .await
            .with_context(|| format!("reading component {digest} from Redis"))?;
        found.with_context(|| format!("Redis holds no component {digest}"))
    }

    async fn save_tenants(
        &self,
        before: &SavedTenants,
        after: &SavedTenants,
    ) -> anyhow::Result<()> {
        let changed = after
            .iter()
            .filter(|(name, t)| before.get(*name) != Some(t))
            .map(|(name, _)| name)
            .chain(before.keys().filter(|name| !after.contains_key(*name)));
        for name in changed {
            self.save_tenant(name, after.get(name)).await?;
        }
        Ok(())
    }

    /// Keeps tenant `name` as `value` (`None`: removed), then announces it.
    /// The write to the hash is the commit: once it is done the change is
    /// the fleet's, and every runner's next resync applies it even if the
    /// announcement is lost, so a failed announcement is logged, not
    /// reported as a failed change. One command at a time: in a Cluster the
    /// hash and the channel live on different nodes.
    pub async fn save_tenant(&self, name: &str, value: Option<&SavedTenant>) -> anyhow::Result<()> {
        let timeout = self.timeout * 4;
        let write = match value {
            Some(t) => {
                let json = serde_json::to_string(t).context("encoding a tenant")?;
                let mut hset = ::redis::cmd("HSET");
                hset.arg(self.tenants_key()).arg(name).arg(json);
                hset
            }
            None => {
                let mut hdel = ::redis::cmd("HDEL");
                hdel.arg(self.tenants_key()).arg(name);
                hdel
            }
        };
        self.query::<()>(&write, timeout)
            .await
            .with_context(|| format!("keeping tenant {name:?} in Redis"))?;
        self.announce(name).await;
        Ok(())
    }

    /// Writes `value` for tenant `name` only if Redis still holds
    /// `expected`, the text [`Shared::load_tenant_text`] read: whether it
    /// did. A change made meanwhile through another runner is never
    /// overwritten.
    pub async fn replace_tenant(
        &self,
        name: &str,
        expected: &str,
        value: &SavedTenant,
    ) -> anyhow::Result<bool> {
        const REPLACE: &str = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
                               redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end return 0";
        let json = serde_json::to_string(value).context("encoding a tenant")?;
        let mut eval = ::redis::cmd("EVAL");
        eval.arg(REPLACE)
            .arg(1)
            .arg(self.tenants_key())
            .arg(name)
            .arg(expected)
            .arg(json);
        let replaced: i64 = self
            .query(&eval, self.timeout * 4)
            .await
            .with_context(|| format!("keeping tenant {name:?} in Redis"))?;
        if replaced == 1 {
            self.announce(name).await;
        }
        Ok(replaced == 1)
    }

    /// Tells the other runners that tenant `name` changed.
    async fn announce(&self, name: &str) {
        let mut publish = ::redis::cmd("PUBLISH");
        publish.arg(self.channel()).arg(name);
        if let Err(e) = self.query::<()>(&publish, self.timeout * 4).await {
            tracing::warn!(
                tenant = %name,
                "announcing the change on Redis: {e:#}; the other runners apply it at their next resync (within {}s)",
                RESYNC_EVERY.as_secs()
            );
        }
    }

    pub async fn load_tenants(&self) -> anyhow::Result<SavedTenants> {
        let mut all = ::redis::cmd("HGETALL");
        all.arg(self.tenants_key());
        let found: BTreeMap<String, String> = self
            .query(&all, self.transfer_timeout())
            .await
            .context("reading the deployed tenants from Redis")?;
        // One unreadable entry (written by hand, or by a newer runner) is
        // that tenant's problem, not the whole fleet's.
        Ok(found
            .into_iter()
            .filter_map(|(name, json)| match serde_json::from_str(&json) {
                Ok(tenant) => Some((name, tenant)),
                Err(e) => {
                    tracing::error!(tenant = %name, "its entry in Redis is not readable, so it is not served: {e}");
                    None
                }
            })
            .collect())
    }

    /// Tenant `name` as Redis has it now; `None`: not deployed.
    pub async fn load_tenant(&self, name: &str) -> anyhow::Result<Option<SavedTenant>> {
        self.load_tenant_text(name)
            .await?
            .map(|json| {
                serde_json::from_str(&json)
                    .with_context(|| format!("tenant {name:?} in Redis is not readable"))
            })
            .transpose()
    }

    /// Tenant `name` as Redis holds it: its JSON text, as stored.
    pub async fn load_tenant_text(&self, name: &str) -> anyhow::Result<Option<String>> {
        let mut get = ::redis::cmd("HGET");
        get.arg(self.tenants_key()).arg(name);
        self.query(&get, self.timeout * 4)
            .await
            .with_context(|| format!("reading tenant {name:?} from Redis"))
    }
}

/// Replaces `path` with `bytes`, all or nothing, durably.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file in a directory")?;
    let temporary = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_tenants_round_trip_and_damage_is_named() {
        let root = crate::store::memory::journal::scratch_dir();
        let deployed = Deployed::open(&root).unwrap();
        assert_eq!(deployed.load_tenants().unwrap(), SavedTenants::new());
        let digest = Digest::of(b"\0asm bytes");
        deployed.save_component(&digest, b"\0asm bytes").unwrap();
        assert_eq!(deployed.load_component(&digest).unwrap(), b"\0asm bytes");
        let mut tenants = SavedTenants::new();
        tenants.insert(
            "a".into(),
            SavedTenant {
                component: digest.to_string(),
                limits: serde_json::json!({ "fuel": 5 })
                    .as_object()
                    .unwrap()
                    .clone(),
                config: [("mode".to_string(), "fast".to_string())].into(),
                secrets: Default::default(),
                incarnation: SavedTenant::new_incarnation(),
                id: "site".into(),
                tls: None,
                parts: vec![SavedPart {
                    id: "api".into(),
                    component: digest.to_string(),
                    limits: serde_json::json!({ "route": "/api/..." })
                        .as_object()
                        .unwrap()
                        .clone(),
                    config: Default::default(),
                    secrets: [("k".to_string(), "v1:sealed".to_string())].into(),
                }],
            },
        );
        deployed.save_tenants(&tenants).unwrap();
        let reopened = Deployed::open(&root).unwrap();
        assert_eq!(reopened.load_tenants().unwrap(), tenants);
        std::fs::write(reopened.component_file(&digest), b"other").unwrap();
        let err = reopened.load_component(&digest).unwrap_err().to_string();
        assert!(err.ends_with("the data directory may be damaged"), "{err}");
        let _ = std::fs::remove_dir_all(root);
    }
}
