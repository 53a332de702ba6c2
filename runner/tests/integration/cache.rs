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
    // A damaged entry is refused by wasmtime, compiled afresh and replaced.
    let engine_dir = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for entry in std::fs::read_dir(&engine_dir).unwrap() {
        // A new file, not one rewritten in place: the runner before may
        // still map the old one, as a runner maps each entry it loads.
        let path = entry.unwrap().path();
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
