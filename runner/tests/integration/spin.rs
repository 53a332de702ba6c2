//! Spin applications' components, unchanged: `guest/spin`, built with
//! Spin's Rust SDK 7 from crates.io (`spin:key-value@3.0.0`,
//! `spin:variables@3.0.0`, outgoing HTTP), and the hostile guest's
//! `/spin2` routes, bound by wit-bindgen from Spin's published
//! `fermyon:spin/key-value@2.0.0` text, on the tenant's store beside
//! every other key-value interface.

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::json;
use system_tests::Tenants;
use system_tests::admin::{Admin, Token};
use system_tests::upstream::Upstream;

use crate::config::{key_file, keyed};
use crate::harness::{InProcess, Observed as _, request};

const SPIN: &str = env!("RUNNER_SPIN_GUEST");

fn spin(tenants: Tenants, name: &str, extra: &str) -> Tenants {
    tenants.tenant(name, &format!("component = {SPIN:?}\n{extra}"))
}

async fn call(r: &InProcess, method: Method, path: &str, body: &str) -> (u16, String) {
    let reply = request(r.addr, method, path, body.as_bytes().to_vec()).await;
    (reply.status.as_u16(), reply.text())
}

async fn read(r: &InProcess, path: &str) -> (u16, String) {
    call(r, Method::GET, path, "").await
}

fn answer(status: u16, text: &str) -> (u16, String) {
    (status, text.to_string())
}

/// A listing with its lines sorted: a backend lists in its own order.
fn lines((status, text): (u16, String)) -> (u16, String) {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    (status, lines.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spin_sdk_7_component_keeps_its_data_in_the_tenants_store_alone() {
    let t = spin(Tenants::new(), "s", "config = { greeting = \"hello\" }");
    let t = spin(t, "other", "");
    let r = InProcess::start_with(&t, &[]);

    assert_eq!(read(&r, "/t/s/hello").await, answer(200, "hello from spin"));
    assert_eq!(
        call(&r, Method::PUT, "/t/s/kv/colour", "blue").await,
        answer(204, "")
    );
    assert_eq!(read(&r, "/t/s/kv/colour").await, answer(200, "blue"));
    assert_eq!(read(&r, "/t/s/exists/colour").await, answer(200, "true"));
    // One key a line (the client trims the last line's end).
    assert_eq!(read(&r, "/t/s/keys").await, answer(200, "colour"));
    // A named store is another bucket.
    assert_eq!(
        read(&r, "/t/s/kv/colour?store=cache").await,
        answer(404, "key not found")
    );
    // Another tenant's store is its own.
    assert_eq!(
        read(&r, "/t/other/kv/colour").await,
        answer(404, "key not found")
    );
    assert_eq!(
        read(&r, "/t/other/exists/colour").await,
        answer(200, "false")
    );
    assert_eq!(read(&r, "/t/other/keys").await, answer(200, ""));
    assert_eq!(
        call(&r, Method::DELETE, "/t/s/kv/colour", "").await,
        answer(204, "")
    );
    assert_eq!(
        read(&r, "/t/s/kv/colour").await,
        answer(404, "key not found")
    );
    assert_eq!(read(&r, "/t/s/exists/colour").await, answer(200, "false"));

    // Variables: the tenant's configuration.
    assert_eq!(read(&r, "/t/s/var/greeting").await, answer(200, "hello"));
    assert_eq!(
        read(&r, "/t/other/var/greeting").await,
        answer(404, "undefined: no variable for \"greeting\"")
    );

    let ops = |op: &str| format!("tenant=\"s\",op=\"{op}\",result=\"ok\"");
    assert_eq!(
        r.metric("runner_kv_operations_total", &ops("set")).await,
        1.0
    );
    assert_eq!(
        r.metric("runner_kv_operations_total", &ops("delete")).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_key_value_in_both_versions_shares_one_tenants_data_with_wasi_keyvalue() {
    let token = Token::new();
    let r = InProcess::start(&["--admin-token-file", token.path()]);
    let admin = Admin::new(r.admin, &token);
    let mut digests = Vec::new();
    for path in [SPIN, env!("RUNNER_HOSTILE_GUEST")] {
        digests.push(admin.upload(std::path::Path::new(path)).await);
    }
    let deploy = |digest: &str| json!({ "component": digest });
    let res = admin.put_tenant("app", deploy(&digests[0])).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());

    // Written through spin:key-value@3.0.0...
    for (key, value) in [("from-spin3", "three"), ("shared", "v3")] {
        assert_eq!(
            call(&r, Method::PUT, &format!("/t/app/kv/{key}"), value).await,
            answer(204, "")
        );
    }
    // ...read through fermyon:spin/key-value@2.0.0 and both wasi:keyvalue
    // drafts, in the same tenant with another component.
    let res = admin.put_tenant("app", deploy(&digests[1])).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        read(&r, "/t/app/spin2/kv/from-spin3").await,
        answer(200, "three")
    );
    assert_eq!(read(&r, "/t/app/kv/from-spin3").await, answer(200, "three"));
    // draft2's page starts with its cursor, `-` at the end.
    assert_eq!(
        lines(read(&r, "/t/app/keys2").await),
        answer(200, "-\nfrom-spin3\nshared")
    );
    assert_eq!(
        lines(read(&r, "/t/app/spin2/keys").await),
        answer(200, "from-spin3\nshared")
    );
    assert_eq!(
        read(&r, "/t/app/spin2/exists/shared").await,
        answer(200, "true")
    );
    assert_eq!(
        call(&r, Method::PUT, "/t/app/spin2/kv/shared", "v2").await,
        answer(204, "")
    );
    assert_eq!(
        call(&r, Method::PUT, "/t/app/spin2/kv/from-spin2", "two").await,
        answer(204, "")
    );
    assert_eq!(
        call(&r, Method::DELETE, "/t/app/spin2/kv/from-spin3", "").await,
        answer(204, "")
    );
    assert_eq!(read(&r, "/t/app/kv/shared").await, answer(200, "v2"));
    // A named store is the bucket of that name in every interface.
    assert_eq!(
        call(&r, Method::PUT, "/t/app/spin2/kv/k?store=cache", "c").await,
        answer(204, "")
    );
    assert_eq!(read(&r, "/t/app/kv/k?bucket=cache").await, answer(200, "c"));

    // And back: SDK 7 sees what 2.0.0 wrote.
    let res = admin.put_tenant("app", deploy(&digests[0])).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(read(&r, "/t/app/kv/shared").await, answer(200, "v2"));
    assert_eq!(
        read(&r, "/t/app/kv/from-spin3").await,
        answer(404, "key not found")
    );
    assert_eq!(
        lines(read(&r, "/t/app/keys").await),
        answer(200, "from-spin2\nshared")
    );
    assert_eq!(read(&r, "/t/app/kv/k?store=cache").await, answer(200, "c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_keys_streams_every_key_once_a_page_at_a_time() {
    let token = Token::new();
    // Pages of 100: the stream reads the store a page per guest read.
    let t = spin(Tenants::new(), "s", "max-page-keys = 100").hostile("h", "max-page-keys = 100");
    let r = InProcess::start_with(&t, &["--admin-token-file", token.path()]);
    for i in 0..250 {
        assert_eq!(
            call(&r, Method::PUT, &format!("/t/s/kv/key-{i:04}"), "v").await,
            answer(204, "")
        );
    }
    // In the backend's order, which is not the keys' order in memory.
    let (status, listed) = read(&r, "/t/s/keys").await;
    assert_eq!(status, 200);
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort_unstable();
    let expected: Vec<String> = (0..250).map(|i| format!("key-{i:04}")).collect();
    assert_eq!(listed, expected);
    let pages = |tenant: &str| format!("tenant=\"{tenant}\",op=\"list_keys\",result=\"ok\"");
    assert_eq!(
        r.metric("runner_kv_operations_total", &pages("s")).await,
        3.0
    );

    // 3,000 keys, written through wasi:keyvalue by the hostile guest; 2.0.0's
    // list form refuses more than a page, naming the limits that cut it.
    assert_eq!(
        read(&r, "/t/h/fill-keys?max=3000").await,
        answer(200, "wrote 3000 keys")
    );
    assert_eq!(
        read(&r, "/t/h/spin2/keys").await,
        answer(
            507,
            "store error: other: quota-exceeded: the bucket holds more keys than one call \
             may return (max-page-keys 100, max-call-bytes 8.0 MiB); spin:key-value@3.0.0's \
             get-keys and wasi:keyvalue's list-keys walk it all"
        )
    );
    // The same tenant on the Spin guest streams all 3,000, each once, in 30
    // page reads.
    let admin = Admin::new(r.admin, &token);
    let digest = admin.upload(std::path::Path::new(SPIN)).await;
    let res = admin
        .put_tenant(
            "h",
            json!({ "component": digest, "limits": { "max-page-keys": 100 } }),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        read(&r, "/t/h/keys?count").await,
        answer(200, "3000 keys, 3000 distinct")
    );
    assert_eq!(
        r.metric("runner_kv_operations_total", &pages("h")).await,
        30.0
    );
    let (_, all) = read(&r, "/t/h/keys").await;
    let all: BTreeSet<&str> = all.lines().collect();
    let written: BTreeSet<String> = (0..3000).map(|i| format!("k{i}")).collect();
    assert_eq!(all, written.iter().map(String::as_str).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outside_the_tenants_key_value_stores_is_access_denied_in_every_interface() {
    let listed = "key-value-stores = [\"default\", \"cache\"]";
    let t = spin(Tenants::new(), "s", listed).hostile("h", listed);
    let t = spin(t, "none", "key-value-stores = []");
    let t = t.tenant(
        "p",
        &format!(
            "component = {:?}\nkey-value-stores = []",
            env!("RUNNER_P3_GUEST")
        ),
    );
    let r = InProcess::start_with(&t, &[]);
    let denied = answer(403, "store error: access-denied");
    for ok in [
        "/t/s/kv/k",
        "/t/s/kv/k?store=cache",
        "/t/h/spin2/kv/k?store=cache",
    ] {
        assert_eq!(read(&r, ok).await, answer(404, "key not found"), "{ok}");
    }
    assert_eq!(
        read(&r, "/t/h/kv/k?bucket=cache").await,
        answer(404, "key not found")
    );
    for path in [
        "/t/s/kv/k?store=other",
        "/t/h/spin2/kv/k?store=other",
        "/t/h/kv/k?bucket=other",
        "/t/none/kv/k",
    ] {
        assert_eq!(read(&r, path).await, denied, "{path}");
    }
    assert_eq!(read(&r, "/t/h/keys2?bucket=other").await, denied);
    // wasmcloud:keyvalue opens the default bucket, which "p" may not.
    assert_eq!(
        read(&r, "/t/p/wc/get/k").await,
        answer(403, "access-denied")
    );
    let errors = "tenant=\"h\",op=\"open\",result=\"error\"";
    assert_eq!(r.metric("runner_kv_operations_total", errors).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spin_sdk_7_component_calls_the_hosts_it_is_allowed() {
    let upstream = Upstream::start();
    let url = upstream.url("/small");
    let allowed = format!("allowed-outbound-hosts = [\"http://{}\"]", upstream.addr);
    let t = spin(Tenants::new(), "s", &allowed);
    let t = spin(t, "closed", "");
    let r = InProcess::start_with(&t, &["--allowed-outbound-networks", "127.0.0.0/8"]);
    let (status, body) = read(&r, &format!("/t/s/fetch?url={url}")).await;
    assert_eq!((status, body.as_str()), (200, "upstream says hi"));
    assert_eq!(
        read(&r, &format!("/t/closed/fetch?url={url}")).await,
        answer(502, "ErrorCode::HttpRequestDenied")
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spin_component_using_what_the_runner_does_not_serve_is_refused_naming_it_all() {
    let token = Token::new();
    let r = InProcess::start(&["--admin-token-file", token.path()]);
    let admin = Admin::new(r.admin, &token);
    let bytes = std::fs::read(env!("RUNNER_SPIN_UNSUPPORTED_GUEST")).unwrap();
    let res = admin.put_component(bytes).await;
    assert_eq!(
        res.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        res.text()
    );
    assert_eq!(
        res.json()["detail"],
        "the component imports 6 interfaces the runner does not provide: \
         spin:postgres/postgres@4.2.0 (the runner provides no such package); \
         fermyon:spin/llm@2.0.0 (the runner provides no such interface); \
         spin:mqtt/mqtt@3.0.0 (the runner provides no such package); \
         spin:mysql/mysql@3.0.0 (the runner provides no such package); \
         spin:redis/redis@3.0.0 (the runner provides no such package); \
         spin:sqlite/sqlite@3.1.0 (the runner provides no such package)"
    );
}

/// A Spin application's manifest, its HTTP component at `route`.
fn manifest(route: &str, greeting: &str) -> String {
    format!(
        r#"spin_manifest_version = 2

[application]
name = "todo"

[variables]
greeting = {{ default = "{greeting}" }}
api_key = {{ required = true, secret = true }}

[[trigger.http]]
route = "{route}"
component = "todo"

[[trigger.cron]]
cron_expression = "0 * * * *"
component = "sweeper"

[component.todo]
source = "todo.wasm"
key_value_stores = ["default"]
variables = {{ greeting = "{{{{ greeting }}}}", auth = "Bearer {{{{ api_key }}}}" }}
[component.todo.build]
command = "cargo build --target wasm32-wasip2 --release"

[component.sweeper]
source = "sweeper.wasm"
"#
    )
}

/// A runner with the admin API and a secrets key, the Spin guest uploaded:
/// the runner, its API, and the guest's digest.
async fn with_api(dir: &system_tests::TempDir, token: &Token) -> (InProcess, Admin, String) {
    let key = dir.path.join("key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).expect("writing a key");
    let r = InProcess::start(&[
        "--admin-token-file",
        token.path(),
        "--secrets-key-file",
        key.to_str().expect("a UTF-8 path"),
    ]);
    let admin = Admin::new(r.admin, token);
    let res = admin
        .put_component(std::fs::read(SPIN).expect("the Spin guest"))
        .await;
    let digest = res.json()["digest"].as_str().expect("a digest").to_string();
    (r, admin, digest)
}

fn spin_document(manifest: &str, digest: &str) -> serde_json::Value {
    json!({
        "spin": { "manifest": manifest, "components": { "todo": digest } },
        "secrets": { "api_key": "k3y" },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spin_manifest_deploys_as_a_tenant_on_its_route_with_its_variables_and_stores() {
    let dir = system_tests::TempDir::new();
    let token = Token::new();
    let (r, admin, digest) = with_api(&dir, &token).await;
    let res = admin
        .put_tenant(
            "todo",
            spin_document(&manifest("/app/...", "hello"), &digest),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let body = res.json();
    assert_eq!(
        body["warnings"],
        json!([
            "trigger.cron: only HTTP triggers run here; not deployed for it: sweeper",
            "component.todo.build: ignored; the runner runs the built component",
            "component.sweeper: no HTTP route names it; not deployed",
        ])
    );
    assert_eq!(body["component"], json!(digest));
    assert_eq!(body["config"], json!({ "greeting": "hello" }));
    assert_eq!(body["secrets"], json!(["auth"]));
    assert_eq!(body["limits"]["route"], json!("/app/..."));
    assert_eq!(body["limits"]["key-value-stores"], json!(["default"]));
    assert!(!res.text().contains("k3y"));

    assert_eq!(
        read(&r, "/t/todo/app/var/greeting").await,
        answer(200, "hello")
    );
    assert_eq!(
        read(&r, "/t/todo/app/var/auth").await,
        answer(200, "Bearer k3y")
    );
    assert_eq!(
        read(&r, "/t/todo/elsewhere").await,
        answer(404, "no route of tenant \"todo\" matches /elsewhere")
    );
    assert_eq!(
        read(&r, "/t/todo/application").await,
        answer(404, "no route of tenant \"todo\" matches /application")
    );
    assert_eq!(
        call(&r, Method::PUT, "/t/todo/app/kv/first", "milk").await,
        answer(204, "")
    );
    assert_eq!(read(&r, "/t/todo/app/kv/first").await, answer(200, "milk"));
    assert_eq!(
        read(&r, "/t/todo/app/kv/first?store=cache").await,
        answer(403, "store error: access-denied")
    );
    let (status, headers) = read(&r, "/t/todo/app/headers?x=1").await;
    assert_eq!(status, 200);
    let client = headers
        .lines()
        .find_map(|l| l.strip_prefix("spin-client-addr: "))
        .expect("spin-client-addr")
        .to_string();
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    assert_eq!(
        headers,
        format!(
            "spin-base-path: /\n\
             spin-client-addr: {client}\n\
             spin-component-route: /app\n\
             spin-full-url: http://{}/app/headers?x=1\n\
             spin-matched-route: /app/...\n\
             spin-path-info: /headers\n\
             spin-raw-component-route: /app/...",
            r.addr
        )
    );
    // A component deployed without a route gets every path, and no spin-*
    // headers.
    let res = admin
        .put_tenant("plain", json!({ "component": digest }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(read(&r, "/t/plain/headers").await, answer(200, ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_the_runner_cannot_honour_is_refused_naming_why() {
    let dir = system_tests::TempDir::new();
    let token = Token::new();
    let (_r, admin, digest) = with_api(&dir, &token).await;
    let refused = |res: system_tests::http::Reply| {
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());
        res.json()["detail"].as_str().unwrap().to_string()
    };
    let files = manifest("/...", "hello").replace(
        "key_value_stores",
        "files = [\"static/**\"]\nkey_value_stores",
    );
    assert_eq!(
        refused(admin.put_tenant("a", spin_document(&files, &digest)).await),
        "component.todo.files: the runner mounts no files into components"
    );
    let mut no_secret = spin_document(&manifest("/...", "hello"), &digest);
    no_secret.as_object_mut().unwrap().remove("secrets");
    assert_eq!(
        refused(admin.put_tenant("a", no_secret).await),
        "variable \"api_key\" is required and was not given: give it with --var \
         api_key=VALUE or --secret api_key=@FILE"
    );
    let no_digest = json!({
        "spin": { "manifest": manifest("/...", "hello") },
        "secrets": { "api_key": "k" },
    });
    assert_eq!(
        refused(admin.put_tenant("a", no_digest).await),
        "spin.components: no digest for component \"todo\" (todo.wasm): upload it to \
         /v1/components and name its digest here"
    );
    assert_eq!(
        admin.get("/v1/tenants/a").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_updated_under_load_fails_no_request() {
    let dir = system_tests::TempDir::new();
    let token = Token::new();
    let (r, admin, digest) = with_api(&dir, &token).await;
    let res = admin
        .put_tenant("todo", spin_document(&manifest("/...", "v0"), &digest))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let addr = r.addr;
    let load = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let reply = system_tests::http::get(addr, "/t/todo/var/greeting").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            seen.insert(reply.text());
        }
        seen
    });
    for version in 1..=5 {
        let res = admin
            .put_tenant(
                "todo",
                spin_document(&manifest("/...", &format!("v{version}")), &digest),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen = load.await.unwrap();
    assert!(
        seen.iter().all(|v| v.len() == 2 && v.starts_with('v')),
        "{seen:?}"
    );
    assert_eq!(read(&r, "/t/todo/var/greeting").await, answer(200, "v5"));
}

/// The two-component example application, guest/spin-app/spin.toml, both
/// components the uploaded Spin guest.
fn two_components(digest: &str) -> serde_json::Value {
    json!({
        "spin": {
            "manifest": include_str!("../../../guest/spin-app/spin.toml"),
            "components": { "site": digest, "api": digest },
        },
        "secrets": { "api_key": "k3y" },
    })
}

/// What the two-component application serves, checked the same on every
/// runner that serves it: each path reaches the component whose route
/// matches it best, with that component's variables and stores, over the
/// tenant's one namespace.
async fn serves_both_components(r: &InProcess) {
    assert_eq!(
        read(r, "/t/shop/var/greeting").await,
        answer(200, "hello from the site")
    );
    assert_eq!(
        read(r, "/t/shop/api/var/greeting").await,
        answer(200, "hello from the api")
    );
    assert_eq!(read(r, "/t/shop/api/var/api_key").await, answer(200, "k3y"));
    let (status, _) = read(r, "/t/shop/var/api_key").await;
    assert_eq!(status, 404, "the site has no api_key");
    let (_, headers) = read(r, "/t/shop/headers").await;
    assert!(headers.contains("spin-component-route: \n"), "{headers}");
    assert!(headers.contains("spin-path-info: /headers"), "{headers}");
    let (_, headers) = read(r, "/t/shop/api/headers").await;
    assert!(
        headers.contains("spin-component-route: /api\n"),
        "{headers}"
    );
    assert!(headers.contains("spin-path-info: /headers"), "{headers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_component_manifest_is_one_tenant_routed_by_path_and_kept() {
    let dir = system_tests::TempDir::new();
    let token = Token::new();
    let data = dir.path.join("data");
    let data_arg = data.to_str().expect("a UTF-8 path").to_string();
    let (old, new) = (key_file(&dir, "old", 0x44), key_file(&dir, "new", 0x55));
    let start = |key: &str, previous| keyed(&token, &["--data-dir", &data_arg], key, previous);
    let r = start(&old, None);
    let admin = Admin::new(r.admin, &token);
    let digest = admin.upload(std::path::Path::new(SPIN)).await;
    let res = admin.put_tenant("shop", two_components(&digest)).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let body = res.json();
    assert_eq!(body["id"], json!("site"));
    assert_eq!(body["limits"]["route"], json!("/..."));
    assert_eq!(body["config"], json!({ "greeting": "hello from the site" }));
    assert_eq!(body["secrets"], json!([]));
    assert_eq!(
        body["parts"],
        json!([{
            "id": "api",
            "component": digest,
            "handler": body["handler"],
            "limits": {
                "route": "/api/...",
                "allowed-outbound-hosts": ["https://api.example.com"],
                "key-value-stores": ["default", "cache"],
            },
            "config": { "greeting": "hello from the api" },
            "secrets": ["api_key"],
        }])
    );
    assert!(!res.text().contains("k3y"));
    serves_both_components(&r).await;

    // One namespace, each component with its own stores.
    assert_eq!(
        call(&r, Method::PUT, "/t/shop/api/kv/cart", "3 apples").await,
        answer(204, "")
    );
    assert_eq!(read(&r, "/t/shop/kv/cart").await, answer(200, "3 apples"));
    assert_eq!(
        call(&r, Method::PUT, "/t/shop/api/kv/hot?store=cache", "1").await,
        answer(204, "")
    );
    assert_eq!(
        read(&r, "/t/shop/kv/hot?store=cache").await,
        answer(403, "store error: access-denied")
    );
    let usage = admin.get("/v1/tenants/shop").await.json()["usage"].clone();
    assert_eq!(usage["keys"], json!(2));

    // A client's own spin-* headers never reach a component.
    let reply = system_tests::http::get_with(
        r.addr,
        "/t/shop/api/headers",
        &[("spin-path-info", "/admin"), ("spin-forged", "1")],
    )
    .await;
    assert!(!reply.text().contains("/admin"), "{}", reply.text());
    assert!(!reply.text().contains("spin-forged"), "{}", reply.text());
    assert!(reply.text().contains("spin-path-info: /headers"));

    // Kept whole in the data directory, both components' secrets sealed:
    // a restart serves it as before, and a new key seals them anew.
    drop(r);
    crate::harness::until_unlocked(&data).await;
    let r = start(&old, None);
    serves_both_components(&r).await;
    assert_eq!(read(&r, "/t/shop/kv/cart").await, answer(200, "3 apples"));
    drop(r);
    crate::harness::until_unlocked(&data).await;
    let r = start(&new, Some(&old));
    serves_both_components(&r).await;
    drop(r);
    crate::harness::until_unlocked(&data).await;
    let r = start(&new, None);
    serves_both_components(&r).await;

    // Deployed again with one component, it has no part any more.
    let admin = Admin::new(r.admin, &token);
    let one = json!({
        "spin": { "manifest": manifest("/...", "hello"), "components": { "todo": digest } },
        "secrets": { "api_key": "k" },
    });
    let res = admin.put_tenant("shop", one).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["parts"], serde_json::Value::Null);
    assert_eq!(read(&r, "/t/shop/api/var/greeting").await.0, 404);
    assert_eq!(read(&r, "/t/shop/kv/cart").await, answer(200, "3 apples"));
}

/// A second runner on the fleet's Redis serves the application as the
/// first deployed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_component_tenant_is_followed_through_a_shared_redis() {
    let Some(redis) = system_tests::redis::Redis::start() else {
        return;
    };
    let dir = system_tests::TempDir::new();
    let key = key_file(&dir, "key", 0x66);
    let token = Token::new();
    let store = ["--store", &redis.url()];
    let first = keyed(&token, &store, &key, None);
    let second = keyed(&token, &store, &key, None);
    let admin = Admin::new(first.admin, &token);
    let digest = admin.upload(std::path::Path::new(SPIN)).await;
    let res = admin.put_tenant("shop", two_components(&digest)).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    serves_both_components(&first).await;
    let followed = async {
        while read(&second, "/t/shop/api/var/greeting").await.0 != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), followed)
        .await
        .expect("the second runner follows the deploy");
    serves_both_components(&second).await;
}

/// What a client says it was forwarded for reaches a guest only from a
/// proxy in --trusted-proxies, and a trusted proxy's `https` is the
/// guest's scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_reach_guests_from_trusted_proxies_alone() {
    let t = spin(Tenants::new(), "s", "route = \"/...\"");
    let forged = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example.com"),
        ("forwarded", "for=203.0.113.9;proto=https"),
        ("x-real-ip", "203.0.113.9"),
    ];
    let headers = |r: &InProcess| {
        let addr = r.addr;
        async move {
            let reply = crate::harness::get_with(addr, "/t/s/headers", &forged).await;
            assert_eq!(reply.status, StatusCode::OK);
            reply
                .text()
                .lines()
                .filter(|l| !l.starts_with("spin-") || l.starts_with("spin-full-url"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    let untrusted = InProcess::start_with(&t, &["--trusted-proxies", "10.0.0.0/8"]);
    assert_eq!(
        headers(&untrusted).await,
        [format!("spin-full-url: http://{}/headers", untrusted.addr)]
    );
    let trusted = InProcess::start_with(&t, &["--trusted-proxies", "10.0.0.0/8,127.0.0.1"]);
    assert_eq!(
        headers(&trusted).await,
        [
            "forwarded: for=203.0.113.9;proto=https".to_string(),
            format!("spin-full-url: https://{}/headers", trusted.addr),
            "x-forwarded-for: 203.0.113.9".into(),
            "x-forwarded-host: shop.example.com".into(),
            "x-forwarded-proto: https".into(),
        ]
    );
}
