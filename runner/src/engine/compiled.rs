//! Compiled components kept on disk (`--cache-dir`), so a restart compiles
//! nothing it compiled before: with many distinct components, compilation
//! is most of a start-up.
//!
//! An entry is wasmtime's serialized form of one component, at
//! `<cache-dir>/<engine>/<digest>.cwasm`, where `<engine>` is a hash of
//! everything in the engine's configuration that compiled code depends on
//! (wasmtime's own `precompile_compatibility_hash`) and `<digest>` the
//! SHA-256 of the component's bytes. A changed setting or another wasmtime
//! version thus reads other entries, never a stale one; wasmtime checks the
//! header of each entry again as it loads it, and an entry it refuses is
//! compiled afresh and replaced.
//!
//! Loading an entry maps it as native code, so the directory must be as
//! trusted as the runner's binary: only the runner's user should be able to
//! write to it. Entries are replaced by renaming a new file over them, never
//! rewritten in place: a runner maps each entry it loaded for as long as it
//! runs, and a file cut short under a mapping ends the process (SIGBUS).

use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::component::Digest;

#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache for `engine`'s configuration under `root`.
    pub fn new(root: PathBuf, engine: &Engine) -> Self {
        // DefaultHasher::new() has fixed keys: the same hash in every run.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir: root.join(format!("{:016x}", hasher.finish())),
        }
    }

    fn entry(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    /// The component compiled earlier from the bytes of `digest`, if the
    /// cache holds it and wasmtime accepts it.
    pub fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.entry(digest);
        if !path.is_file() {
            return None;
        }
        // SAFETY: entries are written only by `store` below, from
        // `Component::serialize` of this engine's configuration (the
        // directory is keyed by it), in a directory the operator keeps as
        // trusted as the binary; wasmtime still checks the header and the
        // configuration it was compiled under before using it.
        #[expect(unsafe_code, reason = "loading natively compiled code we wrote")]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(
                    "compiled-component cache entry {} refused ({e}); compiling afresh",
                    path.display()
                );
                None
            }
        }
    }

    /// Keeps `component`, compiled from the bytes of `digest`. A failure
    /// costs only a later compilation, so it is logged, not returned.
    pub fn store(&self, digest: &Digest, component: &Component) {
        let path = self.entry(digest);
        let written = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| {
                std::fs::create_dir_all(&self.dir)?;
                // Renamed into place, so a reader never maps a torn file.
                let temporary = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&temporary, bytes)?;
                std::fs::rename(&temporary, &path)
            });
        if let Err(e) = written {
            tracing::warn!(
                "could not keep the compiled component in {}: {e}",
                path.display()
            );
        }
    }
}
