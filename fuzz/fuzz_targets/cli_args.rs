//! Any command line (arguments split at NUL bytes) is either accepted or
//! refused with an error, never a panic; every numeric value is range-checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args = std::iter::once("runner".to_owned())
        .chain(data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()));
    if let Err(e) = runner::config::Config::try_from_args(args) {
        assert!(!format!("{e:#}").is_empty());
    }
});
