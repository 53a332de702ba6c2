//! Outgoing HTTP from the runner binary: HTTPS to an upstream whose
//! certificate the test's own CA signed, trusted through `SSL_CERT_FILE`
//! and refused without it, over HTTP/2 where ALPN offers it; and the
//! `runner tenant` client deploying an allow-list.

use system_tests::http::get;
use system_tests::upstream::{TestCa, Upstream};
use system_tests::{Launch, Runner, Tenants};

fn trusting(ca: &TestCa) -> Launch {
    Launch {
        env: vec![(
            "SSL_CERT_FILE".into(),
            ca.ca_file().to_str().expect("a UTF-8 path").into(),
        )],
        ..Launch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_goes_to_a_server_the_runner_trusts_and_no_other() {
    let ca = TestCa::new();
    let up = Upstream::start_tls(&ca);
    let port = up.addr.port();
    let t = Tenants::new().hostile(
        "a",
        &format!("allowed-outbound-hosts = [\"https://localhost:{port}\"]"),
    );
    let args = ["--allowed-outbound-networks", "127.0.0.0/8,::1"];
    let url = format!("/t/a/fetch?url=https://localhost:{port}/small");

    let r = Runner::launch(Some(&t), &args, trusting(&ca));
    let reply = get(r.addr, &url).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "upstream says hi".to_string())
    );
    assert_eq!(up.versions(), vec![http::Version::HTTP_2], "ALPN chose h2");
    assert_eq!(
        up.heads(),
        vec![("/small".to_string(), format!("localhost:{port}"))]
    );
    drop(r);

    // Trusting another CA only: the certificate is refused, and nothing
    // is sent.
    let other = TestCa::new();
    let r = Runner::launch(Some(&t), &args, trusting(&other));
    let reply = get(r.addr, &url).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (
            502,
            "outgoing request 1 failed: ErrorCode::TlsCertificateError".to_string()
        )
    );
    assert_eq!(up.requests(), 1);
}
