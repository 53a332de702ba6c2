//! A tenant's configuration and secrets, read by real components through
//! every interface that publishes them: `wasi:config/store` in its two
//! versions and Spin's variables (`fermyon:spin@2.0.0` from the hostile
//! guest, `spin:variables@3.0.0` from the WASIp3 guest).

use http::StatusCode;
use serde_json::json;
use system_tests::admin::{Admin, Token};
use system_tests::{TempDir, Tenants};

use crate::harness::{InProcess, Observed as _, get};

const SECRET: &str = "s3cr3t-value";

fn p3(tenants: Tenants, name: &str, extra: &str) -> Tenants {
    let path = env!("RUNNER_P3_GUEST");
    tenants.tenant(name, &format!("component = {path:?}\n{extra}"))
}

async fn read(r: &InProcess, path: &str) -> (u16, String) {
    let reply = get(r.addr, path).await;
    (reply.status.as_u16(), reply.text())
}

fn ok(text: &str) -> (u16, String) {
    (200, text.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interface_reads_the_same_config_and_secrets() {
    let dir = TempDir::new();
    let secret_file = dir.path.join("api_key");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("writing the secret");
    let vars = format!(
        "config = {{ greeting = \"hello\", region = \"eu\" }}\n\
         secrets = {{ api_key = {{ file = {secret_file:?} }}, pkg = {{ env = \"CARGO_PKG_NAME\" }} }}"
    );
    let t = Tenants::new()
        .hostile("a", &vars)
        .hostile("b", "config = { greeting = \"other\" }");
    let t = p3(t, "p", &vars);
    let r = InProcess::start_with(&t, &[]);

    for (name, value) in [
        ("greeting", "hello"),
        ("api_key", SECRET),
        ("pkg", "runner"),
    ] {
        for route in ["rc1", "draft", "spin2"] {
            assert_eq!(
                read(&r, &format!("/t/a/config/{route}?name={name}")).await,
                ok(value),
                "{route} {name}"
            );
        }
        assert_eq!(
            read(&r, &format!("/t/p/config/spin3?name={name}")).await,
            ok(value),
            "spin3 {name}"
        );
    }
    // Each interface's own answer for a name with nothing under it, and
    // for a malformed one.
    for route in ["rc1", "draft"] {
        assert_eq!(
            read(&r, &format!("/t/a/config/{route}?name=nope")).await,
            (404, "none".into())
        );
        assert_eq!(
            read(&r, &format!("/t/a/config/{route}?name=Bad")).await,
            (404, "none".into())
        );
    }
    let undefined = (404, "undefined: no variable for \"nope\"".to_string());
    assert_eq!(read(&r, "/t/a/config/spin2?name=nope").await, undefined);
    assert_eq!(read(&r, "/t/p/config/spin3?name=nope").await, undefined);
    let invalid = (
        400,
        "invalid-name: \"Bad\": a name may hold only lowercase letters, digits and underscores"
            .to_string(),
    );
    assert_eq!(read(&r, "/t/a/config/spin2?name=Bad").await, invalid);
    assert_eq!(read(&r, "/t/p/config/spin3?name=Bad").await, invalid);
    // get-all: config and secrets alike, by name.
    let all = format!("api_key={SECRET}\ngreeting=hello\npkg=runner\nregion=eu");
    assert_eq!(read(&r, "/t/a/config/rc1").await, ok(&all));
    assert_eq!(read(&r, "/t/a/config/draft").await, ok(&all));
    // Another tenant sees its own, and nothing of a's.
    assert_eq!(read(&r, "/t/b/config/rc1?name=greeting").await, ok("other"));
    assert_eq!(
        read(&r, "/t/b/config/rc1?name=api_key").await,
        (404, "none".into())
    );
    assert_eq!(read(&r, "/t/b/config/rc1").await, ok("greeting=other"));

    let reads = |kind: &str| format!("tenant=\"a\",kind=\"{kind}\"");
    // 3 interfaces x 1 config name, then get-all's 2 twice.
    assert_eq!(
        r.metric("runner_config_reads_total", &reads("config"))
            .await,
        3.0 + 4.0
    );
    assert_eq!(
        r.metric("runner_config_reads_total", &reads("secret"))
            .await,
        6.0 + 4.0
    );
    assert_eq!(
        r.metric("runner_config_reads_total", &reads("undefined"))
            .await,
        6.0
    );
    let scrape = get(r.admin, "/metrics").await.text();
    assert!(!scrape.contains(SECRET) && !scrape.contains("api_key"));
    assert!(!r.output().contains(SECRET), "{}", r.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_config_shows_secret_names_only_and_refuses_secrets_it_cannot_keep() {
    let dir = TempDir::new();
    let secret_file = dir.path.join("token");
    std::fs::write(&secret_file, SECRET).expect("writing the secret");
    let token = Token::new();
    let t = Tenants::new()
        .raw(&format!(
            "[defaults]\nconfig = {{ mode = \"slow\", region = \"eu\" }}\n\
             secrets = {{ shared = {{ file = {secret_file:?} }} }}\n"
        ))
        .hostile(
            "filed",
            &format!(
                "secrets = {{ token = {{ file = {secret_file:?} }}, region = {{ file = {secret_file:?} }} }}"
            ),
        );
    let r = InProcess::start_with(&t, &["--admin-token-file", token.path()]);
    let admin = Admin::new(r.admin, &token);

    let shown = admin.send(http::Method::GET, "/v1/tenants/filed", "").await;
    assert_eq!(shown.status, StatusCode::OK);
    // [defaults] under the tenant's own: its `region` secret replaces the
    // default's `region` config.
    assert_eq!(
        shown.json()["secrets"],
        json!(["region", "shared", "token"])
    );
    assert_eq!(shown.json()["config"], json!({"mode": "slow"}));
    assert!(!shown.text().contains(SECRET), "{}", shown.text());

    let res = admin
        .put_tenant(
            "api",
            json!({"component": "default", "config": {"mode": "fast", "url": "https://x"}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let shown = admin.send(http::Method::GET, "/v1/tenants/api", "").await;
    assert_eq!(
        (
            shown.json()["config"].clone(),
            shown.json()["secrets"].clone()
        ),
        // [defaults]' config under its own; none of the file's secrets.
        (
            json!({"mode": "fast", "region": "eu", "url": "https://x"}),
            json!([])
        )
    );

    let res = admin
        .put_tenant(
            "api",
            json!({"component": "default", "secrets": {"token": SECRET}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json()["detail"],
        "secrets: the admin API takes secrets only to keep them encrypted, under a key from \
         --secrets-key-file, which this runner has not; give them in the tenants file by \
         reference ({ file = \"...\" } or { env = \"...\" })"
    );
    let res = admin
        .put_tenant(
            "api",
            json!({"component": "default", "config": {"Bad-Name": "x"}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json()["detail"],
        "config.\"Bad-Name\": a name may hold only lowercase letters, digits and underscores"
    );
    assert!(!r.output().contains(SECRET));
}

/// Why a runner with tenants file `t` does not start.
async fn start_error(t: &Tenants) -> String {
    let path = t.write();
    let path = path.to_str().expect("a UTF-8 path");
    match runner::config::Config::try_from_args(["runner", "--config", path]) {
        Err(e) => format!("{e:#}"),
        Ok((_, config)) => match runner::Runner::build(config).await {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("the runner started with {path}"),
        },
    }
}

/// The tenants file's refusals at start-up: each names the tenant and the
/// field, and none quotes a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_variables_stop_start_up_naming_the_field() {
    let dir = TempDir::new();
    let big = dir.path.join("big");
    std::fs::write(&big, "x".repeat(65 * 1024)).expect("writing a big secret");
    for (tenant, error) in [
        (
            "secrets = { key = \"inline-value\" }",
            "tenant \"a\": secrets.key: give a secret by reference, { file = \"PATH\" } or \
             { env = \"VARIABLE\" }; a secret is never written in the tenants file",
        ),
        (
            "secrets = { key = { env = \"RUNNER_TEST_UNSET_VARIABLE\" } }",
            "tenant \"a\": secrets.key: the environment variable RUNNER_TEST_UNSET_VARIABLE is \
             not set",
        ),
        (
            &format!("secrets = {{ key = {{ file = {big:?} }} }}"),
            "tenant \"a\": secrets.key: its value is 66560 bytes, over max-config-value-bytes \
             of 65536",
        ),
        (
            "config = { \"API_KEY\" = \"x\" }",
            "tenant \"a\": config.\"API_KEY\": a name may hold only lowercase letters, digits \
             and underscores",
        ),
    ] {
        let t = Tenants::new().hostile("a", tenant);
        let got = start_error(&t).await;
        assert!(got.contains(error), "{got}\nexpected: {error}");
        assert!(!got.contains("inline-value"), "{got}");
    }
}

/// A key file of 32 bytes of `byte`, as 64 hex digits.
pub(crate) fn key_file(dir: &TempDir, name: &str, byte: u8) -> String {
    let path = dir.path.join(name);
    std::fs::write(&path, format!("{}\n", format!("{byte:02x}").repeat(32))).expect("a key");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A runner with the admin API, `store` (its flags), and the secrets key
/// file `key`, and `previous` as the previous one.
pub(crate) fn keyed(token: &Token, store: &[&str], key: &str, previous: Option<&str>) -> InProcess {
    let mut args = vec![
        "--admin-token-file",
        token.path(),
        "--secrets-key-file",
        key,
    ];
    args.extend_from_slice(store);
    if let Some(previous) = previous {
        args.extend(["--secrets-previous-key-file", previous]);
    }
    InProcess::start(&args)
}

/// Every file under `dir`, read whole, searched for `needle`.
fn found_in(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("reading a directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            found.extend(found_in(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

/// Secrets deployed through the API are sealed where the data directory
/// keeps them: the files never hold the value; a restart with the key
/// serves it; without the key, or with another, start-up is refused
/// naming the key; with a new key and the old one as previous, the
/// secrets are sealed anew under the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_secrets_are_sealed_at_rest_and_rotate() {
    let dir = TempDir::new();
    let data = dir.path.join("data");
    let data_arg = data.to_str().expect("a UTF-8 path").to_string();
    let (old, new) = (key_file(&dir, "old", 0x11), key_file(&dir, "new", 0x22));
    let token = Token::new();
    let start = |key: &str, previous| keyed(&token, &["--data-dir", &data_arg], key, previous);

    let r = start(&old, None);
    let admin = Admin::new(r.admin, &token);
    let digest = admin.upload(&system_tests::tenants::hostile_guest()).await;
    let res = admin
        .put_tenant(
            "app",
            json!({"component": digest, "config": {"mode": "fast"}, "secrets": {"api_key": SECRET}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert!(!res.text().contains(SECRET));
    assert_eq!(read(&r, "/t/app/config/rc1?name=api_key").await, ok(SECRET));
    drop(r);
    crate::harness::until_unlocked(&data).await;
    assert_eq!(
        found_in(&data, SECRET.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );

    // Restarted with the key: served as before.
    let r = start(&old, None);
    assert_eq!(read(&r, "/t/app/config/rc1?name=api_key").await, ok(SECRET));
    drop(r);
    crate::harness::until_unlocked(&data).await;

    // Another key alone: refused, naming both keys' ids, never the value.
    let path = data_arg.clone();
    let args = [
        "runner",
        "--admin-token-file",
        token.path(),
        "--data-dir",
        &path,
        "--secrets-key-file",
        &new,
    ];
    let (_, config) = runner::config::Config::try_from_args(args).expect("the arguments");
    let error = match runner::Runner::build(config).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("the runner started with the wrong key"),
    };
    assert!(
        error.contains(
            "tenant \"app\" (deployed through the admin API): secrets.api_key: sealed under key "
        ) && error.contains("which is neither --secrets-key-file (key "),
        "{error}"
    );
    assert!(!error.contains(SECRET));
    crate::harness::until_unlocked(&data).await;

    // The new key with the old one as previous: served, and sealed anew.
    let r = start(&new, Some(&old));
    assert_eq!(read(&r, "/t/app/config/rc1?name=api_key").await, ok(SECRET));
    drop(r);
    crate::harness::until_unlocked(&data).await;
    let r = start(&new, None);
    assert_eq!(read(&r, "/t/app/config/rc1?name=api_key").await, ok(SECRET));
    assert_eq!(read(&r, "/t/app/config/rc1?name=mode").await, ok("fast"));
    drop(r);
    crate::harness::until_unlocked(&data).await;
    assert_eq!(
        found_in(&data, SECRET.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
}

/// On a shared Redis too, a secret deployed through the API is kept
/// sealed: no key or value Redis holds contains it, and a second runner
/// with the key serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_secrets_are_sealed_in_a_shared_redis() {
    let Some(redis) = system_tests::redis::Redis::start() else {
        return;
    };
    let dir = TempDir::new();
    let key = key_file(&dir, "key", 0x33);
    let token = Token::new();
    let url = redis.url();
    let args = [
        "--admin-token-file",
        token.path(),
        "--store",
        &url,
        "--secrets-key-file",
        &key,
    ];
    let r = InProcess::start(&args);
    let admin = Admin::new(r.admin, &token);
    let res = admin
        .put_tenant(
            "app",
            json!({"component": "default", "secrets": {"api_key": SECRET}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let second = InProcess::start(&args);
    let shown = Admin::new(second.admin, &token)
        .send(http::Method::GET, "/v1/tenants/app", "")
        .await;
    assert_eq!(shown.json()["secrets"], json!(["api_key"]));
    let keys = redis.cli(&["--scan"]);
    assert!(!keys.is_empty());
    for k in keys.lines() {
        let held = match redis.cli(&["TYPE", k]).trim() {
            "string" => redis.cli(&["GET", k]),
            "hash" => redis.cli(&["HGETALL", k]),
            "set" => redis.cli(&["SMEMBERS", k]),
            "zset" => redis.cli(&["ZRANGE", k, "0", "-1", "WITHSCORES"]),
            "list" => redis.cli(&["LRANGE", k, "0", "-1"]),
            other => panic!("{k} is a {other}"),
        };
        assert!(!held.contains(SECRET) && !k.contains(SECRET), "{k}: {held}");
    }
}

/// After a rotation, `POST /v1/secrets/reseal` seals a shared Redis's
/// secrets anew under the new key, so a runner with the new key alone
/// serves them; before it, such a runner cannot open them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseal_moves_a_shared_redis_to_the_new_key() {
    let Some(redis) = system_tests::redis::Redis::start() else {
        return;
    };
    let dir = TempDir::new();
    let (old, new) = (key_file(&dir, "old", 0x33), key_file(&dir, "new", 0x44));
    let token = Token::new();
    let url = redis.url();
    let start = |key: &str, previous| keyed(&token, &["--store", &url], key, previous);
    let r = start(&old, None);
    let admin = Admin::new(r.admin, &token);
    let digest = admin.upload(&system_tests::tenants::hostile_guest()).await;
    let res = admin
        .put_tenant(
            "app",
            json!({"component": digest, "secrets": {"api_key": SECRET}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    drop(r);

    // The new key alone cannot open what the old one sealed.
    let r = start(&new, None);
    assert_eq!(
        get(r.addr, "/t/app/hello").await.status,
        StatusCode::NOT_FOUND
    );
    drop(r);
    let r = start(&new, Some(&old));
    assert_eq!(read(&r, "/t/app/config/rc1?name=api_key").await, ok(SECRET));
    let admin = Admin::new(r.admin, &token);
    let reseal = || admin.send(http::Method::POST, "/v1/secrets/reseal", "");
    let res = reseal().await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json(), json!({"resealed": 1}));
    assert_eq!(reseal().await.json(), json!({"resealed": 0}));
    assert_eq!(read(&r, "/t/app/config/rc1?name=api_key").await, ok(SECRET));
    drop(r);
    let r = start(&new, None);
    assert_eq!(read(&r, "/t/app/config/rc1?name=api_key").await, ok(SECRET));
    let scan = redis.cli(&["--scan"]);
    let deployments = scan
        .lines()
        .find(|k| k.ends_with("fleet:tenants"))
        .expect("the fleet's deployments");
    let held = redis.cli(&["HGETALL", deployments]);
    assert!(
        held.contains("\"api_key\"") && !held.contains(SECRET),
        "{held}"
    );
    drop(r);
    // Without a key there is nothing to seal with.
    let r = InProcess::start(&["--admin-token-file", token.path()]);
    let res = Admin::new(r.admin, &token)
        .send(http::Method::POST, "/v1/secrets/reseal", "")
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());
    assert_eq!(
        res.json()["detail"],
        "this runner has no --secrets-key-file to seal secrets with"
    );
}

/// A configuration change is a tenant update like any other: under load,
/// every request answers, each with the old value or the new one, and
/// none with the old one after it has seen the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_update_under_load_switches_values_and_fails_nothing() {
    let token = Token::new();
    let r = InProcess::start(&["--admin-token-file", token.path()]);
    let admin = Admin::new(r.admin, &token);
    let digest = admin.upload(&system_tests::tenants::hostile_guest()).await;
    let deploy = |value: &str| json!({"component": digest, "config": {"v": value}});
    let res = admin.put_tenant("a", deploy("1")).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let addr = r.addr;
    let readers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                // Until it has read the new value a few times (bounded).
                let mut seen = Vec::new();
                let mut new = 0;
                while new < 20 && seen.len() < 20_000 {
                    let reply = get(addr, "/t/a/config/rc1?name=v").await;
                    new += usize::from(reply.text() == "2");
                    seen.push((reply.status.as_u16(), reply.text()));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let res = admin.put_tenant("a", deploy("2")).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(read(&r, "/t/a/config/rc1?name=v").await, ok("2"));
    let mut switched = 0;
    for reader in readers {
        let seen = reader.await.expect("a reader");
        assert!(seen.iter().all(|(status, _)| *status == 200), "{seen:?}");
        let values: Vec<&str> = seen.iter().map(|(_, v)| v.as_str()).collect();
        let first_new = values
            .iter()
            .position(|v| *v == "2")
            .unwrap_or(values.len());
        assert!(values[..first_new].iter().all(|v| *v == "1"), "{values:?}");
        assert!(values[first_new..].iter().all(|v| *v == "2"), "{values:?}");
        switched += usize::from(first_new > 0 && first_new < values.len());
    }
    assert_eq!(switched, 4, "every reader saw the change happen under it");
}
