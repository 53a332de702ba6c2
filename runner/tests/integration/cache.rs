//! Compiled components kept on disk between runs (--cache-dir).

use crate::harness::{InProcess, Observed as _, Tenants, get};

/// A component's bytes with a custom section added: the same code, another
/// digest.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let payload = [&[tag.len() as u8][..], tag.as_bytes()].concat();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

/// Components compiled, and read from the cache, so far.
async fn loads(r: &InProcess) -> (f64, f64) {
    (
        r.metric("runner_component_loads_total", r#"from="compiler""#)
            .await,
        r.metric("runner_component_loads_total", r#"from="cache""#)
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_cache_dir_compiles_nothing_it_compiled_before() {
    let dir = system_tests::TempDir::new();
    let hostile = std::fs::read(system_tests::tenants::hostile_guest()).unwrap();
    let mut t = Tenants::new().default("plain", "");
    for i in 0..3 {
        let path = dir.path.join(format!("v{i}.wasm"));
        std::fs::write(&path, variant(&hostile, &format!("v{i}"))).unwrap();
        t = t.tenant(&format!("v{i}"), &format!("component = {path:?}"));
    }
    let cache = dir.path.join("cache");
    let args = ["--cache-dir", cache.to_str().unwrap()];
    {
        let r = InProcess::start_with(&t, &args);
        assert_eq!(loads(&r).await, (4.0, 0.0));
    }
    let r = InProcess::start_with(&t, &args);
    assert_eq!(loads(&r).await, (0.0, 4.0));
    for tenant in ["v0", "v1", "v2"] {
        let res = get(r.addr, &format!("/t/{tenant}/residue")).await;
        assert!(res.text().starts_with("static="), "{}", res.text());
    }
    assert_eq!(get(r.addr, "/t/plain/hello").await.text(), "hello");
    drop(r);
    // A damaged entry is refused, compiled afresh and replaced.
    for path in entries(&cache) {
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"damaged").unwrap();
    }
    let r = InProcess::start_with(&t, &args);
    assert_eq!(loads(&r).await, (4.0, 0.0));
    assert!(r.output().contains("compiled-component cache entry"));
    assert_eq!(get(r.addr, "/t/v1/hello").await.text(), "hello");
    drop(r);
    let r = InProcess::start_with(&t, &args);
    assert_eq!(loads(&r).await, (0.0, 4.0));
}

/// The entries of `cache`, in every engine's directory, in name order.
fn entries(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let list = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .expect("a cache directory")
            .map(|e| e.expect("a directory entry").path())
            .collect()
    };
    let mut entries: Vec<_> = list(cache)
        .into_iter()
        .filter(|p| p.is_dir())
        .flat_map(|dir| list(&dir))
        .collect();
    entries.sort();
    entries
}

/// Nothing runs from the cache that the runner did not write for that
/// component: an entry damaged in its code (header intact), one swapped
/// for another component's, and one replaced by a symbolic link are each
/// refused with a warning, compiled afresh and replaced; a cache directory
/// others may write to is not used at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_runs_nothing_it_did_not_write_for_that_component() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = system_tests::TempDir::new();
    let hostile = std::fs::read(system_tests::tenants::hostile_guest()).unwrap();
    let mut t = Tenants::new();
    for i in 0..2 {
        let path = dir.path.join(format!("v{i}.wasm"));
        std::fs::write(&path, variant(&hostile, &format!("v{i}"))).unwrap();
        t = t.tenant(&format!("v{i}"), &format!("component = {path:?}"));
    }
    let cache = dir.path.join("cache");
    let args = ["--cache-dir", cache.to_str().unwrap()];
    drop(InProcess::start_with(&t, &args));
    let [first, second] = <[_; 2]>::try_from(entries(&cache)).unwrap();
    let good = std::fs::read(&first).unwrap();
    // Damaged in the middle of its code; the other's replaced by it.
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    for (path, bytes) in [(&first, &damaged), (&second, &good)] {
        std::fs::remove_file(path).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let r = InProcess::start_with(&t, &args);
    assert_eq!(loads(&r).await, (2.0, 0.0));
    let refusal = "refused (its check does not match: damaged, or not written by this runner \
                   for this component); compiling afresh";
    assert_eq!(r.output().matches(refusal).count(), 2, "{}", r.output());
    for tenant in ["v0", "v1"] {
        assert_eq!(
            get(r.addr, &format!("/t/{tenant}/hello")).await.text(),
            "hello"
        );
    }
    drop(r);
    // Replaced: read from the cache from now on.
    assert_eq!(loads(&InProcess::start_with(&t, &args)).await, (0.0, 2.0));

    // A link in place of an entry is not followed.
    std::fs::remove_file(&first).unwrap();
    std::os::unix::fs::symlink(&second, &first).unwrap();
    let r = InProcess::start_with(&t, &args);
    assert_eq!(loads(&r).await, (1.0, 1.0));
    assert!(
        r.output().contains("refused (it is a symbolic link)"),
        "{}",
        r.output()
    );
    drop(r);
    assert!(!std::fs::symlink_metadata(&first).unwrap().is_symlink());

    // A directory anyone may write to is not used.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    for _ in 0..2 {
        let r = InProcess::start_with(&t, &args);
        assert_eq!(loads(&r).await, (2.0, 0.0));
        assert!(
            r.output().contains(&format!(
                "not using the compiled-component cache {}: {} may be written by others than \
                 its owner (mode 777); every component is compiled at start-up",
                cache.display(),
                cache.display()
            )),
            "{}",
            r.output()
        );
    }
}
