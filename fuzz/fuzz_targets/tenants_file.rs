//! Any tenants file is either accepted or refused with an error; it never
//! panics the runner at start-up.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("runner-fuzz-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(path(), data).expect("writing the tenants file");
    let args = ["runner", "--config", path().to_str().expect("a UTF-8 temp path")];
    if let Err(e) = runner::config::Config::try_from_args(args) {
        assert!(!format!("{e:#}").is_empty());
    }
});
