//! Tenants changed while the runner serves, from outside: the `runner
//! tenant` client against a live runner, deploys, updates and removals
//! under loadgen, and SIGHUP reloading the tenants file.

use std::process::{Command, Output};
use std::time::Duration;

use http::{Method, StatusCode};
use system_tests::admin::Token;
use system_tests::http::{get, request};
use system_tests::probe::Observed as _;
use system_tests::tenants::hostile_guest;
use system_tests::{Runner, TempDir, binary, loadgen};

/// `runner tenant ARGS` against `r`'s admin listener, with `token`'s file.
fn client(r: &Runner, token: &Token, args: &[&str]) -> Output {
    let mut command = Command::new(binary("runner"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUNNER_") {
            command.env_remove(key);
        }
    }
    command
        .arg("tenant")
        .args(args)
        .env("RUNNER_ADMIN", format!("http://{}", r.admin))
        .env("RUNNER_ADMIN_TOKEN_FILE", token.path())
        .output()
        .expect("running runner tenant")
}

/// `runner tenant list` against `r` with only `env` set of the RUNNER_
/// variables, and `args` after it.
fn list_with(r: &Runner, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(binary("runner"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUNNER_") {
            command.env_remove(key);
        }
    }
    command
        .args(["tenant", "list"])
        .args(args)
        .env("RUNNER_ADMIN", format!("http://{}", r.admin))
        .envs(env.iter().copied())
        .output()
        .expect("running runner tenant list")
}

/// Its stdout, after checking it succeeded.
#[track_caller]
fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn hostile() -> String {
    hostile_guest().to_str().expect("UTF-8 path").to_string()
}

/// The token from the variable itself, from a file named by the variable or
/// by the flag: each lists the tenant; none gives the error that says how,
/// not a panic.
#[test]
fn the_client_takes_its_token_from_each_source() {
    let token = Token::new();
    let r = Runner::start(&["--tenants", "1", "--admin-token-file", token.path()]);
    let listed = ok(list_with(&r, &[("RUNNER_ADMIN_TOKEN", &token.value)], &[]));
    let digest = listed
        .strip_prefix("t0\tsha256:")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("one line for t0, not {listed:?}"));
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{listed:?}"
    );
    for (env, args) in [
        (vec![("RUNNER_ADMIN_TOKEN_FILE", token.path())], vec![]),
        (vec![], vec!["--admin-token-file", token.path()]),
    ] {
        assert_eq!(ok(list_with(&r, &env, &args)), listed, "{env:?} {args:?}");
    }
    let none = list_with(&r, &[], &[]);
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&none.stderr).trim(),
        "error: no admin token: pass --admin-token-file or set RUNNER_ADMIN_TOKEN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_subcommands_drive_a_live_runner() {
    let token = Token::new();
    let r = Runner::start(&["--tenants", "1", "--admin-token-file", token.path()]);
    let out = ok(client(
        &r,
        &token,
        &[
            "deploy",
            "app",
            &hostile(),
            "--max-keys",
            "5",
            "--timeout",
            "2s",
        ],
    ));
    let digest = out
        .strip_prefix("tenant app created: component ")
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{out}");
    assert!(
        get(r.addr, "/t/app/residue")
            .await
            .text()
            .starts_with("static=")
    );

    let shown: serde_json::Value =
        serde_json::from_str(&ok(client(&r, &token, &["show", "app"]))).unwrap();
    assert_eq!(shown["component"], digest.as_str());
    assert_eq!(shown["limits"]["max-keys"], 5);
    assert_eq!(shown["limits"]["timeout"], "2s");
    // What was not given is the runner's default.
    assert_eq!(shown["limits"]["fuel"], 100_000_000);

    let list = ok(client(&r, &token, &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert_eq!(lines[0], format!("app\t{digest}"));
    assert!(lines[1].starts_with("t0\tsha256:"), "{list}");

    // The embedded guest by name; the limits given before are gone.
    let out = ok(client(&r, &token, &["deploy", "app", "default"]));
    assert_eq!(
        out.trim(),
        format!("tenant app updated: component {}", &lines[1][3..])
    );
    assert_eq!(get(r.addr, "/t/app/residue").await.text(), "no route");

    let res = request(r.addr, Method::PUT, "/t/app/kv/k", b"v".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let out = ok(client(&r, &token, &["remove", "app", "--purge"]));
    assert_eq!(out.trim(), "tenant app removed, its data purged");
    assert_eq!(
        get(r.addr, "/t/app/hello").await.status,
        StatusCode::NOT_FOUND
    );

    // Refusals: the API's words, exit code 1.
    let out = client(&r, &token, &["remove", "app"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: DELETE /v1/tenants/app?purge=false: 404: no tenant \"app\""
    );
    let wrong = Token::new();
    std::fs::write(&wrong.path, "not-the-token").unwrap();
    let out = client(&r, &wrong, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: GET /v1/tenants?limit=1000: 401: unauthorized: send the admin token as \
         Authorization: Bearer <token>"
    );
    let out = client(&r, &token, &["deploy", "bad", "/nonexistent/app.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: reading component /nonexistent/app.wasm: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An allow-list, one URL at a time; a malformed one names the key.
    let out = ok(client(
        &r,
        &token,
        &[
            "deploy",
            "caller",
            "default",
            "--allow-outbound",
            "https://api.example.com",
            "--allow-outbound",
            "http://*.svc.internal:8080",
            "--var",
            "mode=fast",
            "--var",
            "greeting=a=b",
        ],
    ));
    assert!(out.starts_with("tenant caller created"), "{out}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(client(&r, &token, &["show", "caller"]))).unwrap();
    assert_eq!(
        shown["limits"]["allowed-outbound-hosts"],
        serde_json::json!(["https://api.example.com", "http://*.svc.internal:8080"])
    );
    assert_eq!(
        shown["config"],
        serde_json::json!({"mode": "fast", "greeting": "a=b"})
    );
    let out = client(
        &r,
        &token,
        &["deploy", "bad", "default", "--allow-outbound", "ftp://x"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: PUT /v1/tenants/bad: 400: limits: allowed-outbound-hosts: \"ftp://x\" is not \
         an outbound host (the scheme is neither http, https nor *); write \
         scheme://host[:port], as https://api.example.com, https://*.example.com or \
         http://10.0.0.5:8080"
    );
    // A secret is read from a file or a variable, never taken from the
    // command line; this runner has no key to seal it, and says so.
    let out = client(
        &r,
        &token,
        &["deploy", "bad", "default", "--secret", "k=plain"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: --secret k: give NAME=@FILE or NAME=env:VARIABLE; a secret on the command \
         line is seen by every user of the machine"
    );
    let out = client(
        &r,
        &token,
        &["deploy", "bad", "default", "--secret", "k=env:PATH"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "error: PUT /v1/tenants/bad: 400: secrets: the admin API takes secrets only to \
             keep them encrypted"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = client(&r, &token, &["deploy", "bad", "default", "--fuel", "0"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: PUT /v1/tenants/bad: 400: limits: fuel must be greater than zero"
    );
    assert_eq!(get(r.addr, "/t/t0/hello").await.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_updates_and_removals_under_load_fail_no_request() {
    let token = Token::new();
    let r = Runner::start(&["--tenants", "3", "--admin-token-file", token.path()]);
    ok(client(&r, &token, &["deploy", "t3", "default"]));
    let target = format!("http://{}", r.addr);
    let run =
        |tenants: &'static str, connections: &'static str, verify: bool, duration: &'static str| {
            let target = target.clone();
            std::thread::spawn(move || {
                let mut args = vec![
                    "--target",
                    &target,
                    "--tenants",
                    tenants,
                    "-c",
                    connections,
                    "--duration",
                    duration,
                    "--warmup",
                    "0s",
                    "--keys",
                    "100",
                ];
                if verify {
                    args.push("--verify");
                }
                loadgen::run(&args)
            })
        };
    // t0..t2 exist throughout (t1 is updated under it, with --verify
    // checking its data survives); t3 is updated, then removed. Each
    // deploy compiles, which on a busy 2-core machine takes seconds: the
    // loads run long enough to outlast all four and the removal.
    let steady = run("3", "6", true, "8s");
    let doomed = run("4", "4", false, "12s");
    std::thread::sleep(Duration::from_millis(800));
    let hostile = hostile();
    for step in [
        vec!["deploy", "t1", &hostile],
        vec!["deploy", "t3", &hostile, "--max-keys", "50000"],
        vec!["deploy", "t1", "default", "--fuel", "200000000"],
        vec!["deploy", "t3", "default"],
    ] {
        ok(client(&r, &token, &step));
        std::thread::sleep(Duration::from_millis(400));
    }
    ok(client(&r, &token, &["remove", "t3"]));
    let steady = steady.join().unwrap();
    let doomed = doomed.join().unwrap();
    assert_eq!(
        (steady.code, steady.report["errors"].as_u64()),
        (Some(0), Some(0)),
        "{}\n{}",
        steady.stdout,
        steady.stderr
    );
    assert!(steady.report["requests"].as_u64().unwrap() > 100);
    // The only failures of the other run: 404s, for t3 after its removal.
    let by_status = doomed.report["errors_by_status"].as_object().unwrap();
    assert_eq!(
        by_status.keys().collect::<Vec<_>>(),
        vec!["404"],
        "{}",
        doomed.stdout
    );
    assert_eq!(
        doomed.report["errors"].as_u64(),
        by_status["404"].as_u64(),
        "{}",
        doomed.stdout
    );
    assert!(by_status["404"].as_u64().unwrap() > 0);
    assert_eq!(
        (
            r.metric("runner_tenant_changes_total", r#"change="updated""#)
                .await,
            r.metric("runner_tenant_changes_total", r#"change="removed""#)
                .await
        ),
        (4.0, 1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tenants_file_whole_or_not_at_all() {
    let dir = TempDir::new();
    let file = dir.path.join("tenants.toml");
    let write = |text: &str| std::fs::write(&file, text).expect("writing the tenants file");
    write(&format!(
        "[defaults]\nmax-keys = 10\n[tenants.a]\n[tenants.b]\ncomponent = {:?}\n",
        hostile()
    ));
    let token = Token::new();
    let r = Runner::start(&[
        "--config",
        file.to_str().unwrap(),
        "--admin-token-file",
        token.path(),
    ]);
    ok(client(&r, &token, &["deploy", "api-one", "default"]));
    let res = request(r.addr, Method::PUT, "/t/a/kv/x", b"kept".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert!(
        get(r.addr, "/t/b/residue")
            .await
            .text()
            .starts_with("static=")
    );

    // a: a key quota below what it holds; b: gone; c: new.
    write("[defaults]\nmax-keys = 10\n[tenants.a]\nmax-keys = 1\n[tenants.c]\n");
    r.hangup();
    r.wait_for_log("reloaded the configuration created=1 updated=1 removed=1");
    assert_eq!(
        get(r.addr, "/t/b/hello").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(r.addr, "/t/c/hello").await.text(), "hello");
    assert_eq!(get(r.addr, "/t/a/kv/x").await.text(), "kept");
    let res = request(r.addr, Method::PUT, "/t/a/kv/y", b"v".to_vec()).await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::INSUFFICIENT_STORAGE,
            "store error: quota-exceeded: the tenant holds 1 keys, the limit is 1"
        )
    );
    // Deployed through the API, not in the file: left alone.
    assert_eq!(get(r.addr, "/t/api-one/hello").await.text(), "hello");

    // A bad file changes nothing, and the log says why; twice, two ways.
    write("[tenants.a]\n[tenants.c]\n[tenants.d]\nfuel = 0\n");
    r.hangup();
    r.wait_for_log("reload refused, nothing changed: tenant \"d\": fuel must be greater than zero");
    write("[tenants.a\n");
    r.hangup();
    r.wait_for_log("reload refused, nothing changed: parsing tenants file");
    assert_eq!(
        get(r.addr, "/t/d/hello").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(r.addr, "/t/c/hello").await.text(), "hello");
    let res = request(r.addr, Method::PUT, "/t/a/kv/y", b"v".to_vec()).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        r.metric("runner_tenants", "").await,
        3.0,
        "a, c and api-one"
    );

    // A changed token file: the new token works from the reload on, the
    // old one is refused.
    write("[defaults]\nmax-keys = 10\n[tenants.a]\nmax-keys = 1\n[tenants.c]\n");
    let old = Token::new();
    std::fs::write(&old.path, format!("{}\n", token.value)).unwrap();
    std::fs::write(&token.path, "rotated-token\n").unwrap();
    r.hangup();
    r.wait_for_log("reloaded the configuration created=0 updated=0 removed=0");
    let out = client(&r, &old, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401: unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = ok(client(&r, &token, &["list"]));
    assert_eq!(listed.lines().count(), 3, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_back_what_the_api_deployed_where_a_data_dir_keeps_it() {
    let data = TempDir::new();
    let token = Token::new();
    let args = [
        "--tenants",
        "1",
        "--admin-token-file",
        token.path(),
        "--data-dir",
        data.path.to_str().unwrap(),
    ];
    let mut r = Runner::start(&args);
    ok(client(
        &r,
        &token,
        &["deploy", "app", &hostile(), "--max-keys", "3"],
    ));
    ok(client(&r, &token, &["deploy", "plain", "default"]));
    ok(client(&r, &token, &["deploy", "gone", "default"]));
    ok(client(&r, &token, &["remove", "gone"]));
    let res = request(r.addr, Method::PUT, "/t/app/kv/k", b"kept".to_vec()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let before = ok(client(&r, &token, &["show", "app"]));
    assert!(r.terminate().success());

    let r = Runner::start(&args);
    r.wait_for_log(
        "tenants deployed through the admin API brought back from the data directory restored=2",
    );
    assert_eq!(ok(client(&r, &token, &["show", "app"])), before);
    assert!(
        get(r.addr, "/t/app/residue")
            .await
            .text()
            .starts_with("static=")
    );
    assert_eq!(get(r.addr, "/t/app/kv/k").await.text(), "kept");
    assert_eq!(get(r.addr, "/t/plain/hello").await.text(), "hello");
    assert_eq!(
        get(r.addr, "/t/gone/hello").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(r.addr, "/t/t0/hello").await.text(), "hello");
    let listed = ok(client(&r, &token, &["list"]));
    let names: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["app", "plain", "t0"]);
}
