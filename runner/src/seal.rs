//! Secrets at rest: each secret deployed through the admin API is sealed
//! (ChaCha20-Poly1305, from ring) under a key read from
//! `--secrets-key-file` before it is kept, in the data directory or a
//! shared Redis, so a copy of either holds no secret in the clear.
//!
//! A sealed value is `v1:<key id>:<nonce><ciphertext and tag>` (hex): the
//! key id (the first 8 bytes of the key's SHA-256) says which key sealed it,
//! so a runner given a new key and the previous one
//! (`--secrets-previous-key-file`) opens both and seals anew with the new
//! one. The tenant's and the secret's names are the associated data: a
//! sealed value moved to another tenant or another name does not open.

use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest as _, Sha256};

const VERSION: &str = "v1";

/// One key, and its id.
struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    /// Reads a key file: 64 hex digits (32 bytes), surrounding whitespace
    /// ignored (`openssl rand -hex 32 > key`). An error names the file and
    /// never quotes it.
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the secrets key {}: {e}", path.display()))?;
        let bytes = hex_decode(text.trim())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the secrets key {} is not 64 hex digits (32 bytes); make one with \
                     `openssl rand -hex 32`",
                    path.display()
                )
            })?;
        let id = hex(&Sha256::digest(&bytes)[..8]);
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| anyhow::anyhow!("the secrets key {} is unusable", path.display()))?;
        Ok(Self {
            id,
            key: LessSafeKey::new(key),
        })
    }
}

/// Seals secrets under the current key; opens what it or the previous key
/// sealed.
pub struct Sealer {
    current: Key,
    previous: Option<Key>,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsealed {
    /// Sealed under a key this runner was not given.
    UnknownKey(String),
    /// Malformed, or altered, or moved from another tenant or name.
    Damaged,
}

impl Sealer {
    pub fn open_files(current: &Path, previous: Option<&Path>) -> anyhow::Result<Self> {
        Ok(Self {
            current: Key::read(current)?,
            previous: previous.map(Key::read).transpose()?,
            random: SystemRandom::new(),
        })
    }

    /// The current key's id, as sealed values and messages name it.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `value`, bound to `tenant` and `name`.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .expect("the system's random source");
        let mut sealed = value.as_bytes().to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(tenant, name)),
                &mut sealed,
            )
            .expect("sealing fits in memory");
        format!(
            "{VERSION}:{}:{}{}",
            self.current.id,
            hex(&nonce),
            hex(&sealed)
        )
    }

    /// Opens a value [`Sealer::seal`] made for `tenant` and `name`, and
    /// whether it was sealed under the previous key (so should be sealed
    /// anew).
    pub fn open(&self, tenant: &str, name: &str, sealed: &str) -> Result<(String, bool), Unsealed> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Unsealed::Damaged);
        };
        let (key, old) = if id == self.current.id {
            (&self.current, false)
        } else {
            match &self.previous {
                Some(previous) if previous.id == id => (previous, true),
                _ => return Err(Unsealed::UnknownKey(id.to_owned())),
            }
        };
        let bytes = hex_decode(body).ok_or(Unsealed::Damaged)?;
        if bytes.len() < NONCE_LEN {
            return Err(Unsealed::Damaged);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let mut rest = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealed::Damaged)?;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(associated(tenant, name)), &mut rest)
            .map_err(|_| Unsealed::Damaged)?;
        let value = String::from_utf8(plain.to_vec()).map_err(|_| Unsealed::Damaged)?;
        Ok((value, old))
    }
}

/// What a sealed value is bound to.
fn associated(tenant: &str, name: &str) -> Vec<u8> {
    format!("runner secret\0{tenant}\0{name}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("{}\n", hex(&[byte; 32]))).expect("writing a key");
        path
    }

    #[test]
    fn sealed_values_open_only_for_their_place_and_key() {
        let dir = std::env::temp_dir().join(format!("runner-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let a = key_file(&dir, "a", 1);
        let b = key_file(&dir, "b", 2);
        let old = Sealer::open_files(&a, None).expect("key a");
        let sealed = old.seal("t", "api_key", "hunter2");
        assert!(sealed.starts_with(&format!("v1:{}:", old.key_id())));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            old.seal("t", "api_key", "hunter2"),
            "a fresh nonce each time"
        );
        assert_eq!(
            old.open("t", "api_key", &sealed),
            Ok(("hunter2".into(), false))
        );
        // Moved to another tenant or name, or altered: refused.
        assert_eq!(old.open("u", "api_key", &sealed), Err(Unsealed::Damaged));
        assert_eq!(old.open("t", "other", &sealed), Err(Unsealed::Damaged));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(altered).expect("hex");
        assert_eq!(old.open("t", "api_key", &altered), Err(Unsealed::Damaged));
        // A new key alone cannot open it; with the old one as previous it
        // can, and says it should be sealed anew.
        let new = Sealer::open_files(&b, None).expect("key b");
        assert_eq!(
            new.open("t", "api_key", &sealed),
            Err(Unsealed::UnknownKey(old.key_id().into()))
        );
        let rotating = Sealer::open_files(&b, Some(&a)).expect("keys b and a");
        assert_eq!(
            rotating.open("t", "api_key", &sealed),
            Ok(("hunter2".into(), true))
        );
        std::fs::write(dir.join("bad"), "not a key").expect("writing");
        let e = Sealer::open_files(&dir.join("bad"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("is not 64 hex digits (32 bytes); make one with `openssl rand -hex 32`"),
            "{e}"
        );
        assert!(!e.contains("not a key"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
