//! What the admin API deployed, kept in the data directory so that a
//! restart brings the fleet back as it was.
//!
//! Beside the key-value journal (`<data-dir>/kv`), under the same lock:
//! - `<data-dir>/fleet/components/<hex>.wasm`: each component uploaded, by
//!   its SHA-256;
//! - `<data-dir>/fleet/tenants.json`: each tenant deployed through the API,
//!   with its component digest and its whole effective limits.
//!
//! Every write goes to a temporary file, is fsynced, renamed over the old
//! one and the directory fsynced, so a crash leaves the old or the new
//! version, never a mix; the API answers only after that.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::component::Digest;

/// A tenant as deployed: what `PUT /v1/tenants/{name}` would send again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTenant {
    /// `sha256:<hex>`, or `default` for the embedded guest.
    pub component: String,
    /// Every limit, by its config key.
    pub limits: serde_json::Map<String, serde_json::Value>,
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
        let root = crate::store::durable::scratch_dir();
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
