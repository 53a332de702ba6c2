//! Compiled components kept on disk (`--cache-dir`), so a restart compiles
//! nothing it compiled before: with many distinct components, compilation
//! is most of a start-up.
//!
//! An entry is wasmtime's serialized form of one component, at
//! `<cache-dir>/<engine>/<digest>.cwasm`, where `<engine>` is a hash of
//! everything in the engine's configuration that compiled code depends on
//! (wasmtime's own `precompile_compatibility_hash`) and `<digest>` the
//! SHA-256 of the component's bytes.
//!
//! Loading an entry runs its bytes as native code, so nothing is loaded
//! that this runner's user did not write for this component:
//! - each entry ends with an HMAC-SHA256 of the engine hash, the component
//!   digest and the code, under a key only the runner's user can read
//!   (`<cache-dir>/key`, made on first use): a damaged entry, or another
//!   component's code put under this digest, fails the check and is
//!   compiled afresh with a warning, never run;
//! - the directories, the key and each entry must be owned by the
//!   runner's user and not writable by anyone else, or the cache is not
//!   used (a warning says why); symbolic links are not followed;
//! - an entry is read whole and checked before wasmtime sees it, and
//!   replaced by renaming a new file over it, made with `O_EXCL` under a
//!   name of its own, never written in place or through a link.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::component::Digest;

/// The length of an entry's MAC, at its end.
const MAC_LEN: usize = 32;

pub struct Cache {
    dir: PathBuf,
    /// The engine hash, bound into each entry's MAC.
    engine: String,
    key: [u8; 32],
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Cache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// The cache for `engine`'s configuration under `root`, made if
    /// missing; `None`, with a warning, where it cannot be trusted.
    pub fn open(root: &Path, engine: &Engine) -> Option<Self> {
        use std::hash::{Hash as _, Hasher as _};
        // DefaultHasher::new() has fixed keys: the same hash in every run.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let hash = format!("{:016x}", hasher.finish());
        let dir = root.join(&hash);
        let opened = trusted_dir(root)
            .and_then(|()| trusted_dir(&dir))
            .and_then(|()| key(&root.join("key")));
        match opened {
            Ok(key) => Some(Self {
                dir,
                engine: hash,
                key,
            }),
            Err(why) => {
                tracing::warn!(
                    "not using the compiled-component cache {}: {why}; every component is \
                     compiled at start-up",
                    root.display()
                );
                None
            }
        }
    }

    fn entry(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    fn mac(&self, digest: &Digest, code: &[u8]) -> [u8; MAC_LEN] {
        hmac_sha256(
            &self.key,
            &[self.engine.as_bytes(), digest.as_bytes(), code],
        )
    }

    /// The component compiled earlier from the bytes of `digest`, if the
    /// cache holds it, it passes every check and wasmtime accepts it.
    pub fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.entry(digest);
        let read = match read_trusted(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(why) => {
                refused(&path, &why);
                return None;
            }
        };
        let Some(split) = read.len().checked_sub(MAC_LEN) else {
            refused(&path, "shorter than its check");
            return None;
        };
        let (code, mac) = read.split_at(split);
        if !constant_time_eq(&self.mac(digest, code), mac) {
            refused(
                &path,
                "its check does not match: damaged, or not written by this runner for this \
                 component",
            );
            return None;
        }
        // SAFETY: the code is what this runner's user compiled for this
        // component under this engine's settings: its MAC, under a key only
        // that user can read, says so. wasmtime checks the header and the
        // settings again.
        #[expect(unsafe_code, reason = "loading natively compiled code we wrote")]
        let loaded = unsafe { Component::deserialize(engine, code) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                refused(&path, &e.to_string());
                None
            }
        }
    }

    /// Keeps `component`, compiled from the bytes of `digest`, as `code`
    /// (its serialized form) where the caller has it. A failure costs only
    /// a later compilation, so it is logged, not returned.
    pub fn store(&self, digest: &Digest, component: &Component, code: Option<&[u8]>) {
        let path = self.entry(digest);
        let code = match code {
            Some(code) => Ok(std::borrow::Cow::Borrowed(code)),
            None => component.serialize().map(std::borrow::Cow::Owned),
        };
        let written = code
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|code| {
                let mac = self.mac(digest, &code);
                // A name no one can have planted a link under, renamed into
                // place, so a reader never sees a torn file.
                let temporary = self.dir.join(format!(
                    ".{}.{}.{}.tmp",
                    digest.hex(),
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                let mut file = create_new(&temporary)?;
                let done = file
                    .write_all(&code)
                    .and_then(|()| file.write_all(&mac))
                    .and_then(|()| std::fs::rename(&temporary, &path));
                if done.is_err() {
                    let _ = std::fs::remove_file(&temporary);
                }
                done
            });
        if let Err(e) = written {
            tracing::warn!(
                "could not keep the compiled component in {}: {e}",
                path.display()
            );
        }
    }
}

impl Cache {
    /// Drops the entry of `digest`, if there is one.
    pub fn remove(&self, digest: &Digest) {
        let path = self.entry(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
        }
    }

    /// Drops every entry (and every temporary file a crash left) last
    /// written over `grace` ago whose component `keep` does not name:
    /// entries of components no tenant runs any more. Returns how many.
    pub fn sweep(&self, keep: &dyn Fn(&Digest) -> bool, grace: std::time::Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // A temporary file is being written for at most a moment; one
            // a minute old is a crash's.
            let (collect, grace) = match name.strip_suffix(".cwasm") {
                Some(hex) => (
                    Digest::parse(&format!("sha256:{hex}")).is_ok_and(|d| !keep(&d)),
                    grace,
                ),
                None => (
                    name.starts_with('.') && name.ends_with(".tmp"),
                    grace.max(std::time::Duration::from_secs(60)),
                ),
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= grace));
            if collect && old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Temporary files made by this process so far.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn refused(path: &Path, why: &str) {
    tracing::warn!(
        "compiled-component cache entry {} refused ({why}); compiling afresh",
        path.display()
    );
}

/// The runner's effective user.
fn user() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    #[expect(unsafe_code, reason = "a libc call with no preconditions")]
    unsafe {
        libc::geteuid()
    }
}

/// Why `meta` (of `path`) may not be trusted: another owner, or writable
/// by others than its owner.
fn untrusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    if meta.uid() != user() {
        return Err(format!(
            "{} is owned by user {}, not the runner's ({})",
            path.display(),
            meta.uid(),
            user()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} may be written by others than its owner (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Makes `dir` (only its owner may enter) if missing, and checks it is a
/// directory, not a link, owned by the runner's user and writable by it
/// alone.
fn trusted_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("making {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    untrusted(dir, &meta)
}

/// Creates `path`, which must not exist (as anything, a link included),
/// readable and writable by its owner only.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The whole of the file at `path`, if there is one, after checking it is
/// a regular file (a link is not followed) that only the runner's user may
/// write.
fn read_trusted(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: the path is a symbolic link.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symbolic link".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    untrusted(path, &meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

/// The cache's key at `path`: made (32 random bytes, readable by the
/// runner's user only) if missing, else read, if no one else may read or
/// write it.
fn key(path: &Path) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    match create_new(path) {
        Ok(mut file) => {
            File::open("/dev/urandom")
                .and_then(|mut random| random.read_exact(&mut key))
                .and_then(|()| file.write_all(&key))
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("making the key {}: {e}", path.display()))?;
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("making the key {}: {e}", path.display())),
    }
    let read = read_trusted(path)?.ok_or_else(|| format!("{} vanished", path.display()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the key {} may be read by others than its owner (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    key = read
        .try_into()
        .map_err(|_| format!("the key {} is not 32 bytes", path.display()))?;
    Ok(key)
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `parts` under `key`.
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equal, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 has a 4-byte key; case 1 a 20-byte one:
        // zero-padded to the block, as ours are, they give the same MAC.
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let mac = hmac_sha256(&key, &[b"Hi ", b"There"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn a_new_file_is_never_made_through_a_link() {
        let dir = std::env::temp_dir().join(format!("runner-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            create_new(&link).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        assert_eq!(read_trusted(&link).unwrap_err(), "it is a symbolic link");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
