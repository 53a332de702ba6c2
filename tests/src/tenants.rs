//! Tenants files for tests, and where the test guests are.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::target_dir;

/// The hostile test guest, built by the runner's build script.
pub fn hostile_guest() -> PathBuf {
    guest("guest_hostile")
}

/// The WASIp3 test guest (`guest/p3`), built by the runner's build script.
pub fn p3_guest() -> PathBuf {
    guest("guest_p3")
}

fn guest(name: &str) -> PathBuf {
    let path = target_dir().join(format!("guests/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the runner first (cargo test --release --workspace does)",
        path.display()
    );
    path
}

/// A tenants file under construction.
#[derive(Clone, Default)]
pub struct Tenants {
    text: String,
    path: Arc<Mutex<Option<PathBuf>>>,
}

impl Tenants {
    pub fn new() -> Self {
        <Self as Default>::default()
    }

    /// A tenant on the hostile test guest, with extra TOML lines.
    pub fn hostile(self, name: &str, extra: &str) -> Self {
        self.tenant(name, &format!("component = {:?}\n{extra}", hostile_guest()))
    }

    /// A tenant on the default guest, with extra TOML lines.
    pub fn default(self, name: &str, extra: &str) -> Self {
        self.tenant(name, extra)
    }

    pub fn tenant(mut self, name: &str, body: &str) -> Self {
        self.text.push_str(&format!("[tenants.{name}]\n{body}\n"));
        self
    }

    pub fn raw(mut self, text: &str) -> Self {
        self.text.push_str(text);
        self
    }

    /// Writes the file (once per call) and returns its path; it is removed
    /// when the last clone of this value is dropped.
    pub fn write(&self) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("runner-e2e-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, &self.text).expect("writing the tenants file");
        *self.path.lock() = Some(path.clone());
        path
    }
}

impl Drop for Tenants {
    fn drop(&mut self) {
        if Arc::strong_count(&self.path) == 1
            && let Some(p) = self.path.lock().take()
        {
            let _ = std::fs::remove_file(p);
        }
    }
}
