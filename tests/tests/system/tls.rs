//! HTTPS on the tenant listener: certificates made by the test's own CA
//! (rcgen), the runner binary serving them, a rustls client checking them
//! against that CA alone.

use std::path::PathBuf;
use std::time::Duration;

use http::{StatusCode, Version};
use system_tests::Runner;
use system_tests::Tenants;
use system_tests::http::TlsClient;
use system_tests::probe::{Observed as _, metric};
use system_tests::target_dir;
use system_tests::upstream::TestCa;
use tokio::io::AsyncReadExt as _;

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// HTTP/2 and HTTP/1.1, as ALPN chose.
const BOTH: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A runner serving HTTPS with a certificate from `ca` for `names`, with
/// `tenants` and `extra` flags: the runner, and the key's path.
fn https(ca: &TestCa, names: &[&str], tenants: &Tenants, extra: &[&str]) -> (Runner, PathBuf) {
    let (cert, key) = ca.write_leaf("runner", names);
    let mut args = vec!["--tls-cert", path(&cert), "--tls-key", path(&key)];
    args.extend_from_slice(extra);
    (Runner::start_with(tenants, &args), key)
}

async fn text(client: &mut TlsClient, path: &str) -> (StatusCode, String) {
    let reply = client.get(path).await.expect("a reply on the connection");
    (reply.status, reply.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1_as_alpn_chooses_and_guests_see_https() {
    let ca = TestCa::new();
    let spin = target_dir().join("guests/wasm32-wasip2/release/guest_spin.wasm");
    let tenants = Tenants::new().tenant("s", &format!("component = {spin:?}\nroute = \"/...\""));
    let (r, _) = https(&ca, &["localhost"], &tenants, &["--tenants", "1"]);
    assert!(
        r.output()
            .contains(&format!("listening on https://{}", r.addr))
    );

    let mut h2 = TlsClient::connect(r.addr, "localhost", ca.client_config(&BOTH))
        .await
        .expect("a TLS connection");
    assert_eq!(h2.version, Version::HTTP_2);
    for _ in 0..3 {
        assert_eq!(
            text(&mut h2, "/t/t0/hello").await,
            (StatusCode::OK, "hello".into())
        );
    }
    // The component sees the URL as the client sent it: https, its host.
    let (status, headers) = text(&mut h2, "/t/s/headers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.contains(&format!(
            "spin-full-url: https://localhost:{}/headers",
            r.addr.port()
        )),
        "{headers}"
    );

    let mut h1 = TlsClient::connect(r.addr, "localhost", ca.client_config(&[b"http/1.1"]))
        .await
        .expect("a TLS connection");
    assert_eq!(h1.version, Version::HTTP_11);
    assert_eq!(
        text(&mut h1, "/t/t0/hello").await,
        (StatusCode::OK, "hello".into())
    );
    let mut no_alpn = TlsClient::connect(r.addr, "localhost", ca.client_config(&[]))
        .await
        .expect("a TLS connection");
    assert_eq!(
        text(&mut no_alpn, "/t/t0/hello").await,
        (StatusCode::OK, "hello".into())
    );

    // Plain HTTP on the TLS port is a failed handshake, counted.
    assert!(
        system_tests::http::try_get(r.addr, "/t/t0/hello")
            .await
            .is_none()
    );
    let failures = r#"reason="error""#;
    let counted = async {
        while metric(r.admin, "runner_tls_handshake_failures_total", failures).await != 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("the failed handshake is counted");
    // A certificate the client does not trust is refused by the client.
    let other = TestCa::new();
    assert!(
        TlsClient::connect(r.addr, "localhost", other.client_config(&BOTH))
            .await
            .is_err()
    );
}

/// SIGHUP reads the certificate files again: new handshakes get the new
/// certificate, connections open before keep working under load, and a
/// renewal that does not load leaves the certificate served as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_new_handshakes_and_drops_no_connection() {
    let ca = TestCa::new();
    let (r, key) = https(&ca, &["localhost"], &Tenants::new(), &["--tenants", "1"]);
    // A client configuration each: a resumed session would show the
    // certificate of the session it resumes.
    let connect = || TlsClient::connect(r.addr, "localhost", ca.client_config(&BOTH));
    let mut open = connect().await.expect("a TLS connection");
    let before = open.leaf.clone();
    let load = tokio::spawn(async move {
        let mut answered = 0;
        for _ in 0..300 {
            let reply = open.get("/t/t0/hello").await.expect("the open connection");
            assert_eq!(reply.status, StatusCode::OK);
            answered += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (open, answered)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ca.write_leaf("runner", &["localhost"]);
    r.hangup();
    let renewed = async {
        loop {
            let fresh = connect().await.expect("a TLS connection");
            if fresh.leaf != before {
                return fresh.leaf;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let after = tokio::time::timeout(Duration::from_secs(20), renewed)
        .await
        .expect("new handshakes get the renewed certificate");
    let (mut open, answered) = load.await.expect("the load");
    assert_eq!(answered, 300);
    assert_eq!(open.leaf, before);
    assert_eq!(
        text(&mut open, "/t/t0/hello").await,
        (StatusCode::OK, "hello".into())
    );

    // A key that does not load: refused, logged, the renewed pair served.
    std::fs::write(&key, "not a key").expect("spoiling the key");
    r.hangup();
    let logged = async {
        while !r
            .output()
            .contains("the tenant listener's TLS certificate was not replaced, the one before")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), logged)
        .await
        .expect("the refused renewal is logged");
    let fresh = connect().await.expect("a TLS connection");
    assert_eq!(fresh.leaf, after);
}

/// A client that connects and never finishes its handshake holds a
/// connection slot until --tls-handshake-timeout, no longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_holds_its_slot_only_until_the_timeout() {
    let ca = TestCa::new();
    let flags = [
        "--tenants",
        "1",
        "--max-connections",
        "1",
        "--tls-handshake-timeout",
        "500ms",
    ];
    let (r, _) = https(&ca, &["localhost"], &Tenants::new(), &flags);
    let config = ca.client_config(&BOTH);
    let mut stalled = tokio::net::TcpStream::connect(r.addr)
        .await
        .expect("connecting");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The one slot is the stalled handshake's.
    assert!(
        TlsClient::connect(r.addr, "localhost", config.clone())
            .await
            .is_err()
    );
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the runner closes the stalled connection");
    assert_eq!(closed.expect("a clean close"), 0);
    assert_eq!(
        metric(
            r.admin,
            "runner_tls_handshake_failures_total",
            r#"reason="timeout""#
        )
        .await,
        1.0
    );
    let mut client = TlsClient::connect(r.addr, "localhost", config)
        .await
        .expect("the slot is free again");
    assert_eq!(
        text(&mut client, "/t/t0/hello").await,
        (StatusCode::OK, "hello".into())
    );
}

/// Over TLS a request for a host no tenant has is 421, so a client that
/// reused a connection made for another name asks again; a host a tenant
/// claims reaches it, HTTP/2's :authority as HTTP/1.1's Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_route_over_tls_and_an_unknown_one_is_misdirected() {
    let ca = TestCa::new();
    let tenants = Tenants::new().tenant("shop", "hosts = [\"shop.example.com\"]");
    let names = ["localhost", "shop.example.com"];
    let (r, _) = https(&ca, &names, &tenants, &["--path-routing", "off"]);
    for alpn in [&BOTH[..], &[b"http/1.1"]] {
        let config = ca.client_config(alpn);
        let mut shop = TlsClient::connect(r.addr, "shop.example.com", config.clone())
            .await
            .expect("a TLS connection");
        assert_eq!(
            text(&mut shop, "/hello").await,
            (StatusCode::OK, "hello".into())
        );
        let mut other = TlsClient::connect(r.addr, "localhost", config)
            .await
            .expect("a TLS connection");
        assert_eq!(
            text(&mut other, "/hello").await,
            (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected request: no tenant is served at this host".into()
            )
        );
    }
}

#[test]
fn a_certificate_without_its_key_or_with_another_is_refused_at_start() {
    let ca = TestCa::new();
    let (cert, _) = ca.write_leaf("a", &["localhost"]);
    let (_, other_key) = ca.write_leaf("b", &["localhost"]);
    let out = Runner::run_args_to_exit(&["--tenants", "1", "--tls-cert", path(&cert)]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--tls-cert needs --tls-key, the certificate's key"),
        "{}",
        out.stderr
    );
    let out = Runner::run_args_to_exit(&[
        "--tenants",
        "1",
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&other_key),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{} and {} do not make a key pair",
            cert.display(),
            other_key.display()
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("PRIVATE KEY"), "{}", out.stderr);
}

/// `runner tenant` against the admin listener, as an operator runs it,
/// with the admin token file and `extra` flags.
fn tenant(admin: &str, token: &system_tests::admin::Token, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(system_tests::binary("runner"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUNNER_") {
            command.env_remove(key);
        }
    }
    command
        .args([
            "tenant",
            "--admin",
            admin,
            "--admin-token-file",
            token.path(),
        ])
        .args(args)
        // No system store holds the test's CA.
        .env("SSL_CERT_FILE", "/dev/null")
        .output()
        .expect("running runner tenant")
}

/// HTTPS on the admin listener: the client checks the runner's certificate
/// (refused untrusted, accepted with --admin-ca), the API refuses plain
/// HTTP unless told otherwise, and /metrics stays on plain HTTP for
/// scrapers on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_over_https_is_verified_by_the_client_and_refuses_plain_http() {
    let ca = TestCa::new();
    let (cert, key) = ca.write_leaf("admin", &["localhost", "127.0.0.1"]);
    let token = system_tests::admin::Token::new();
    let start = |require: &str| {
        Runner::start(&[
            "--tenants",
            "1",
            "--admin-token-file",
            token.path(),
            "--admin-tls-cert",
            path(&cert),
            "--admin-tls-key",
            path(&key),
            "--admin-require-tls",
            require,
        ])
    };
    let r = start("on");
    let https = format!("https://localhost:{}", r.admin.port());
    let ca_file = ca.ca_file();

    let untrusted = tenant(&https, &token, &["list"]);
    assert_eq!(untrusted.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        stderr.contains("over TLS (an untrusted certificate? name its CA with --admin-ca FILE)"),
        "{stderr}"
    );
    let listed = tenant(&https, &token, &["--admin-ca", path(&ca_file), "list"]);
    assert_eq!(
        listed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("t0"));
    // By IP address too: the certificate names 127.0.0.1.
    let by_ip = format!("https://{}", r.admin);
    let listed = tenant(&by_ip, &token, &["--admin-ca", path(&ca_file), "list"]);
    assert_eq!(listed.status.code(), Some(0));

    let plain = tenant(&format!("http://{}", r.admin), &token, &["list"]);
    assert_eq!(plain.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        stderr.contains("403: the admin API takes requests over HTTPS alone"),
        "{stderr}"
    );
    // Scrapers and probes keep plain HTTP on the same port.
    let health = system_tests::http::get(r.admin, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        metric(
            r.admin,
            "runner_admin_requests_total",
            r#"result="refused""#
        )
        .await,
        1.0
    );
    drop(r);

    let r = start("off");
    let plain = tenant(&format!("http://{}", r.admin), &token, &["list"]);
    assert_eq!(plain.status.code(), Some(0));
}

/// The leaf certificate of a PEM file, DER, as a client sees it.
fn leaf_of(pem: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_file_iter(pem)
        .expect("reading a certificate")
        .next()
        .expect("a certificate")
        .expect("a PEM certificate")
        .to_vec()
}

/// A tenant's own certificate answers for the hosts it claims, chosen by
/// SNI; every other name gets the operator's. One from the tenants file,
/// one deployed through the admin API (its key sealed in the data
/// directory, never shown), replaced by a deploy, kept across a restart;
/// a certificate that does not name the tenant's hosts is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_certificate_is_chosen_by_sni() {
    let ca = TestCa::new();
    let (shop_cert, shop_key) = ca.write_leaf("shop", &["shop.example.com"]);
    let tenants = Tenants::new().tenant(
        "shop",
        &format!(
            "hosts = [\"shop.example.com\"]\n[tenants.shop.tls]\ncert = {:?}\nkey = {{ file = {:?} }}",
            path(&shop_cert),
            path(&shop_key)
        ),
    );
    let dir = system_tests::TempDir::new();
    let data = dir.path.join("data");
    let secrets_key = dir.path.join("secrets.key");
    std::fs::write(&secrets_key, format!("{}\n", "7b".repeat(32))).expect("a key");
    let token = system_tests::admin::Token::new();
    let flags = [
        "--data-dir",
        path(&data),
        "--admin-token-file",
        token.path(),
        "--secrets-key-file",
        path(&secrets_key),
    ];
    let (r, operator_key) = https(&ca, &["localhost"], &tenants, &flags);
    let operator = leaf_of(&operator_key.with_extension("pem"));
    let connect = |name: &'static str| {
        let config = ca.client_config(&BOTH);
        async move { TlsClient::connect(r.addr, name, config).await }
    };
    let mut shop = connect("shop.example.com").await.expect("a TLS connection");
    assert_eq!(shop.leaf, leaf_of(&shop_cert));
    assert_eq!(
        text(&mut shop, "/hello").await,
        (StatusCode::OK, "hello".into())
    );
    let local = connect("localhost").await.expect("a TLS connection");
    assert_eq!(local.leaf, operator);
    // A name nobody has a certificate for gets the operator's, which does
    // not name it: the client refuses it.
    assert!(connect("other.example.com").await.is_err());

    // Through the admin API, with the client.
    let admin = format!("http://{}", r.admin);
    let (api_cert, api_key) = ca.write_leaf("api", &["api.example.com"]);
    let deploy = |cert: &std::path::Path, key: &std::path::Path, host: &str| {
        tenant(
            &admin,
            &token,
            &[
                "deploy",
                "api",
                "default",
                "--host",
                host,
                "--tls-cert",
                path(cert),
                "--tls-key",
                path(key),
            ],
        )
    };
    let out = deploy(&api_cert, &api_key, "api.example.com");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = connect("api.example.com").await.expect("a TLS connection");
    assert_eq!(api.leaf, leaf_of(&api_cert));
    let shown = tenant(&admin, &token, &["show", "api"]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.contains("\"sha256\": \"sha256:"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    let key_text = std::fs::read_to_string(&api_key).expect("the key");
    let key_body = key_text.lines().nth(1).expect("a key line");
    // Replaced by a deploy: new handshakes get the new one.
    let (renewed, renewed_key) = ca.write_leaf("api2", &["api.example.com"]);
    let out = deploy(&renewed, &renewed_key, "api.example.com");
    assert_eq!(out.status.code(), Some(0));
    let api = connect("api.example.com").await.expect("a TLS connection");
    assert_eq!(api.leaf, leaf_of(&renewed));
    // One that does not name the tenant's host is refused, naming why.
    let out = deploy(&api_cert, &api_key, "www.example.com");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.cert does not name host www.example.com, which the tenant claims"),
        "{stderr}"
    );

    // Kept sealed; served again after a restart.
    drop(r);
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(key_body),
            "{} holds the key",
            entry.display()
        );
        assert!(!text.contains("PRIVATE KEY"), "{}", entry.display());
    }
    let (r, _) = https(&ca, &["localhost"], &tenants, &flags);
    let config = ca.client_config(&BOTH);
    let api = TlsClient::connect(r.addr, "api.example.com", config)
        .await
        .expect("a TLS connection");
    assert_eq!(api.leaf, leaf_of(&renewed));
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// loadgen measures an https:// target, checking its certificate against
/// --cacert, each of its connections resuming the TLS session; one it
/// cannot trust is an error for every request, never a success.
#[test]
fn loadgen_loads_an_https_target() {
    let ca = TestCa::new();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let (r, _) = https(&ca, &["localhost"], &Tenants::new(), &["--tenants", "2"]);
    let url = format!("https://localhost:{}/t/{{tenant}}/hello", r.addr.port());
    let ca_file = ca.ca_file();
    let common = [
        "--tenants",
        "2",
        "-c",
        "4",
        "--requests",
        "400",
        "--warmup",
        "0s",
    ];
    let mut args = vec!["--cacert", path(&ca_file)];
    args.extend_from_slice(&common);
    args.push(&url);
    let run = system_tests::loadgen::run(&args);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.report["requests"], 400, "{}", run.report);
    assert_eq!(run.report["errors"], 0, "{}", run.report);
    assert_eq!(
        rt.block_on(metric(r.admin, "runner_requests_total", "")),
        400.0
    );

    let other = TestCa::new();
    let other_file = other.ca_file();
    let mut args = vec!["--cacert", path(&other_file), "--max-error-rate", "0"];
    args.extend_from_slice(&common);
    args.push(&url);
    let run = system_tests::loadgen::run(&args);
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.report["errors"], 400, "{}", run.report);
}

/// curl, as an operator checks a deployment: each host form over HTTPS
/// (exact, another case, a trailing dot, a suffix subdomain under the
/// operator's wildcard certificate, an unknown host), HTTP/2 where curl
/// offers it.
#[test]
fn curl_reaches_each_host_form_over_https() {
    let ca = TestCa::new();
    let (shop_cert, shop_key) = ca.write_leaf("shop", &["shop.example.com"]);
    let tenants = Tenants::new()
        .tenant(
            "shop",
            &format!(
                "hosts = [\"shop.example.com\"]\n[tenants.shop.tls]\ncert = {:?}\nkey = {{ file = {:?} }}",
                path(&shop_cert),
                path(&shop_key)
            ),
        )
        .tenant("alice", "");
    let flags = ["--host-suffix", "apps.example.com", "--path-routing", "off"];
    let (r, _) = https(&ca, &["*.apps.example.com", "localhost"], &tenants, &flags);
    let port = r.addr.port();
    let curl = |name: &str, extra: &[&str]| {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let out = std::process::Command::new("curl")
            .args(["-s", "--cacert", path(&ca.ca_file()), "--resolve", &resolve])
            .args(["-w", "\n%{http_code} %{http_version}"])
            .args(extra)
            .arg(format!("https://{name}:{port}/hello"))
            .output()
            .expect("running curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(curl("shop.example.com", &[]), "hello\n200 2");
    assert_eq!(curl("shop.example.com", &["--http1.1"]), "hello\n200 1.1");
    assert_eq!(curl("SHOP.Example.COM", &[]), "hello\n200 2");
    assert_eq!(curl("shop.example.com.", &[]), "hello\n200 2");
    assert_eq!(curl("alice.apps.example.com", &[]), "hello\n200 2");
    assert_eq!(
        curl("localhost", &[]),
        "misdirected request: no tenant is served at this host\n\n421 2"
    );
    // No certificate names it: curl refuses the operator's (000: no reply).
    assert_eq!(curl("bob.example.com", &[]), "\n000 0");
}
