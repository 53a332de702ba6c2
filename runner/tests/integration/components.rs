//! Components no tenant runs are let go: after --component-grace, or at
//! once through `DELETE /v1/components/{digest}`, with their copies in the
//! data directory and the compiled cache; and an upload from before a
//! restart can still be deployed.

use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use system_tests::admin::{Admin, Token};
use system_tests::tenants::hostile_guest;

use crate::harness::{InProcess, Observed as _, get};

/// Uploads `bytes`; their digest.
async fn upload(admin: &Admin, bytes: Vec<u8>) -> String {
    let res = admin.put_component(bytes).await;
    assert!(res.status.is_success(), "{}", res.text());
    res.json()["digest"]
        .as_str()
        .expect("a digest in the answer")
        .to_string()
}

/// `GET /v1/components`, as (digest, tenants) pairs in digest order.
async fn held(admin: &Admin) -> Vec<(String, u64)> {
    let res = admin.get("/v1/components").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.json()["components"]
        .as_array()
        .expect("a list of components")
        .iter()
        .map(|c| {
            (
                c["digest"].as_str().expect("a digest").to_string(),
                c["tenants"].as_u64().expect("a count of tenants"),
            )
        })
        .collect()
}

fn sorted(mut pairs: Vec<(String, u64)>) -> Vec<(String, u64)> {
    pairs.sort();
    pairs
}

/// The files under `dir` (any depth) whose name holds `hex`.
fn files_naming(dir: &Path, hex: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains(hex) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_no_tenant_runs_is_released_after_its_grace_with_its_copies() {
    let token = Token::new();
    let dir = system_tests::TempDir::new();
    let data = dir.path.join("data");
    let cache = dir.path.join("cache");
    let r = InProcess::start(&[
        "--admin-token-file",
        token.path(),
        "--data-dir",
        data.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--component-grace",
        "1s",
        "--tenants",
        "0",
    ]);
    let admin = Admin::new(r.admin, &token);
    let hostile = upload(&admin, std::fs::read(hostile_guest()).unwrap()).await;
    let p3 = upload(&admin, std::fs::read(env!("RUNNER_P3_GUEST")).unwrap()).await;
    let res = admin
        .put_tenant("app", json!({ "component": hostile }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(
        held(&admin).await,
        sorted(vec![(hostile.clone(), 1), (p3.clone(), 0)])
    );
    assert_eq!(r.metric("runner_components", "").await, 2.0);
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_string();
    assert_eq!(files_naming(&data, &hex(&hostile)).len(), 1);
    assert_eq!(files_naming(&cache, &hex(&hostile)).len(), 1);

    // The tenant moves to the WASIp3 guest: the hostile one is left
    // unused, and goes after its grace, with its copies.
    let res = admin.put_tenant("app", json!({ "component": p3 })).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while held(&admin).await.len() > 1 {
        assert!(Instant::now() < deadline, "{:?}", held(&admin).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held(&admin).await, vec![(p3.clone(), 1)]);
    assert_eq!(
        files_naming(&data, &hex(&hostile)),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_naming(&cache, &hex(&hostile)),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(files_naming(&data, &hex(&p3)).len(), 1);
    assert_eq!(files_naming(&cache, &hex(&p3)).len(), 1);
    assert_eq!(r.metric("runner_components", "").await, 1.0);
    let code = admin.get("/v1/components").await.json()["components"][0]["code_bytes"]
        .as_f64()
        .unwrap();
    assert!(code > 0.0);
    assert_eq!(r.metric("runner_component_code_bytes", "").await, code);
    assert_eq!(get(r.addr, "/t/app/hello").await.text(), "hello from p3");

    // Deploying the released one is refused until it is uploaded again.
    let res = admin
        .put_tenant("other", json!({ "component": hostile }))
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
    assert_eq!(
        res.json()["detail"],
        format!("no component {hostile}: upload it first with PUT /v1/components")
    );
    assert_eq!(
        upload(&admin, std::fs::read(hostile_guest()).unwrap()).await,
        hostile
    );
    let res = admin
        .put_tenant("other", json!({ "component": hostile }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(get(r.addr, "/t/other/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_component_no_tenant_runs_can_be_deleted() {
    let token = Token::new();
    let r = InProcess::start(&["--admin-token-file", token.path(), "--tenants", "0"]);
    let admin = Admin::new(r.admin, &token);
    let hostile = upload(&admin, std::fs::read(hostile_guest()).unwrap()).await;
    let p3 = upload(&admin, std::fs::read(env!("RUNNER_P3_GUEST")).unwrap()).await;
    for name in ["app", "app2"] {
        let res = admin
            .put_tenant(name, json!({ "component": hostile }))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    }
    let res = admin.delete(&format!("/v1/components/{hostile}")).await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text());
    assert_eq!(
        res.json(),
        json!({
            "type": "urn:runner:problem:in-use",
            "title": "the component is in use",
            "status": 409,
            "detail": format!(
                "component {hostile} is run by tenant(s) app, app2: update or remove them first"
            ),
        })
    );
    assert_eq!(get(r.addr, "/t/app/hello").await.text(), "hello");

    let res = admin.delete(&format!("/v1/components/{p3}")).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json(), json!({ "removed": p3 }));
    assert_eq!(held(&admin).await, vec![(hostile.clone(), 2)]);
    assert_eq!(r.metric("runner_components", "").await, 1.0);
    let res = admin.put_tenant("p", json!({ "component": p3 })).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
    let res = admin.delete(&format!("/v1/components/{p3}")).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
    assert_eq!(res.json()["detail"], format!("no component {p3}"));
    let res = admin.delete("/v1/components/sha256:xyz").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());

    // Once its tenants are gone, so can it be.
    for name in ["app", "app2"] {
        assert_eq!(
            admin.delete(&format!("/v1/tenants/{name}")).await.status,
            StatusCode::OK
        );
    }
    let res = admin.delete(&format!("/v1/components/{hostile}")).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(held(&admin).await, vec![]);
    assert_eq!(r.metric("runner_components", "").await, 0.0);
    assert_eq!(r.metric("runner_component_code_bytes", "").await, 0.0);
}

/// An upload no tenant ran yet is in the data directory: after a restart
/// a tenant can still be deployed on it without uploading it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_from_before_a_restart_can_be_deployed() {
    let token = Token::new();
    let dir = system_tests::TempDir::new();
    let data = dir.path.join("data");
    let args = [
        "--admin-token-file",
        token.path(),
        "--data-dir",
        data.to_str().unwrap(),
        "--tenants",
        "0",
    ];
    let hostile = {
        let r = InProcess::start(&args);
        let admin = Admin::new(r.admin, &token);
        upload(&admin, std::fs::read(hostile_guest()).unwrap()).await
    };
    crate::harness::until_unlocked(&data).await;
    let r = InProcess::start(&args);
    let admin = Admin::new(r.admin, &token);
    assert_eq!(held(&admin).await, vec![]);
    let res = admin
        .put_tenant("app", json!({ "component": hostile }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(get(r.addr, "/t/app/hello").await.text(), "hello");
}
