//! Outgoing HTTP: each tenant reaches the hosts on its allow-list and
//! nothing else, checked on the address it connects to, under its own
//! limits. The upstream is an HTTP server on loopback that counts what
//! reaches it; the runners here allow loopback through
//! `--allowed-outbound-networks` unless a test checks the default.

use std::time::Duration;

use system_tests::upstream::{Upstream, settle};

use crate::harness::{InProcess, Observed, Tenants, get};

/// Lets loopback through the address policy.
const LOOPBACK: [&str; 2] = ["--allowed-outbound-networks", "127.0.0.0/8"];

fn allow(upstream: &Upstream) -> String {
    format!("allowed-outbound-hosts = [\"http://{}\"]", upstream.addr)
}

fn p3(tenants: Tenants, name: &str, extra: &str) -> Tenants {
    let path = env!("RUNNER_P3_GUEST");
    tenants.tenant(name, &format!("component = {path:?}\n{extra}"))
}

/// `/t/{tenant}/fetch?url=...` and what the guest answered.
async fn fetch(r: &InProcess, tenant: &str, url: &str, extra: &str) -> (u16, String) {
    let reply = get(r.addr, &format!("/t/{tenant}/fetch?url={url}{extra}")).await;
    (reply.status.as_u16(), reply.text())
}

fn refused(code: &str) -> (u16, String) {
    (502, format!("outgoing request 1 failed: ErrorCode::{code}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_allowed_host_is_reached_and_everything_else_touches_nothing() {
    let up = Upstream::start();
    let port = up.addr.port();
    let t = Tenants::new()
        .hostile("a", &allow(&up))
        .hostile("b", "allowed-outbound-hosts = [\"http://127.0.0.1:1\"]")
        .hostile("none", "");
    let r = InProcess::start_with(&t, &LOOPBACK);
    let small = up.url("/small");

    assert_eq!(
        fetch(&r, "a", &small, "").await,
        (200, "upstream says hi".into())
    );
    // Not listed, another tenant's, an IP literal and a name not listed.
    assert_eq!(
        fetch(&r, "none", &small, "").await,
        refused("HttpRequestDenied")
    );
    assert_eq!(
        fetch(&r, "b", &small, "").await,
        refused("HttpRequestDenied")
    );
    for other in [
        format!("http://127.0.0.2:{port}/small"),
        format!("http://localhost:{port}/small"),
        format!("https://127.0.0.1:{port}/small"),
    ] {
        assert_eq!(
            fetch(&r, "a", &other, "").await,
            refused("HttpRequestDenied"),
            "{other}"
        );
    }
    // An absolute-form target naming another host on the allowed
    // authority, and a Host header naming another host (wasi:http forbids
    // the guest to set one at all).
    assert_eq!(
        fetch(&r, "a", &small, "&target=http://example.com/x").await,
        (
            502,
            "outgoing request 1 failed: the path was refused".into()
        )
    );
    assert_eq!(
        fetch(&r, "a", &small, "&host=example.com").await,
        (
            502,
            "outgoing request 1 failed: header refused: HeaderError::Forbidden".into()
        )
    );
    settle().await;
    assert_eq!((up.accepts(), up.requests()), (1, 1));
    assert_eq!(
        up.heads(),
        vec![("/small".to_string(), format!("127.0.0.1:{port}"))],
        "the upstream sees an origin-form target and the checked Host"
    );
    let line =
        r.wait_for_log("outgoing request refused: the tenant's allowed-outbound-hosts is empty");
    assert!(line.contains("tenant=none"), "{line}");
    assert!(
        line.contains(&format!("GET http://127.0.0.1:{port}/small")),
        "{line}"
    );
    let outcome =
        |tenant: &str, outcome: &str| format!("tenant=\"{tenant}\",outcome=\"{outcome}\"");
    assert_eq!(
        r.metric("runner_outbound_requests_total", &outcome("a", "ok"))
            .await,
        1.0
    );
    assert_eq!(
        r.metric(
            "runner_outbound_requests_total",
            &outcome("a", "denied_host")
        )
        .await,
        3.0
    );
    assert_eq!(
        r.metric("runner_outbound_received_bytes_total", "tenant=\"a\"")
            .await,
        16.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_by_default_on_the_address_it_resolves_to() {
    let up = Upstream::start();
    let port = up.addr.port();
    let t = Tenants::new().hostile(
        "a",
        &format!("allowed-outbound-hosts = [\"http://localhost:{port}\", \"http://127.0.0.1:{port}\", \"http://169.254.169.254\"]"),
    );
    let r = InProcess::start_with(&t, &[]);
    for url in [
        format!("http://localhost:{port}/small"),
        format!("http://127.0.0.1:{port}/small"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        assert_eq!(
            fetch(&r, "a", &url, "").await,
            refused("DestinationIpProhibited"),
            "{url}"
        );
    }
    settle().await;
    assert_eq!(up.accepts(), 0);
    let line = r.wait_for_log("refused by the address policy (link-local)");
    assert!(line.contains("169.254.169.254"), "{line}");
    r.wait_for_log("refused by the address policy (loopback)");
    assert_eq!(
        r.metric(
            "runner_outbound_requests_total",
            "tenant=\"a\",outcome=\"denied_address\""
        )
        .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_itself_is_never_reached() {
    let t = Tenants::new().hostile("a", "allowed-outbound-hosts = [\"http://127.0.0.1:*\"]");
    let r = InProcess::start_with(&t, &LOOPBACK);
    for addr in [r.addr, r.admin] {
        assert_eq!(
            fetch(&r, "a", &format!("http://{addr}/metrics"), "").await,
            refused("DestinationIpProhibited"),
            "{addr}"
        );
    }
    r.wait_for_log("refused by the address policy (the runner's own listener)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_reaches_the_guest_unfollowed_and_the_cap_holds() {
    let up = Upstream::start();
    let t = Tenants::new().hostile("a", &format!("{}\nmax-outbound-requests = 3", allow(&up)));
    let r = InProcess::start_with(&t, &LOOPBACK);
    assert_eq!(
        fetch(&r, "a", &up.url("/redirect"), "").await,
        (302, "moved".into())
    );
    assert_eq!(
        fetch(&r, "a", &up.url("/small"), "&n=3").await,
        (200, "upstream says hi".into())
    );
    assert_eq!(
        fetch(&r, "a", &up.url("/small"), "&n=4").await,
        (
            502,
            "outgoing request 4 failed: ErrorCode::HttpRequestDenied".into()
        )
    );
    settle().await;
    assert_eq!(up.requests(), 1 + 3 + 3);
    r.wait_for_log("outgoing request refused: past max-outbound-requests for this request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_timeout_and_the_size_limit_end_the_outgoing_request() {
    let up = Upstream::start();
    // A listener that never accepts, its one-connection backlog filled:
    // the kernel answers no more SYNs, so connecting hangs.
    let full = tokio::net::TcpSocket::new_v4().expect("a socket");
    full.bind("127.0.0.1:0".parse().expect("an address"))
        .expect("binding");
    let full = full.listen(0).expect("listening");
    let hanging = full.local_addr().expect("its address");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(hanging),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let closed_at = closed.local_addr().expect("its address");
    drop(closed);
    let t = Tenants::new().hostile(
        "a",
        "allowed-outbound-hosts = [\"http://127.0.0.1:*\"]\n\
         timeout = \"10s\"\n\
         outbound-connect-timeout = \"300ms\"\n\
         outbound-first-byte-timeout = \"300ms\"\n\
         outbound-between-bytes-timeout = \"300ms\"\n\
         max-outbound-response-bytes = 1000",
    );
    let r = InProcess::start_with(&t, &LOOPBACK);
    assert_eq!(
        fetch(&r, "a", &format!("http://{hanging}/"), "").await,
        refused("ConnectionTimeout")
    );
    assert_eq!(
        fetch(&r, "a", &up.url("/silent"), "").await,
        refused("ConnectionReadTimeout")
    );
    // WASIp2 hands a body's error to the guest as a stream error whose
    // text names it (wasmtime-wasi-http 48 does the same for its own).
    assert_eq!(
        fetch(&r, "a", &up.url("/stall"), "").await,
        (
            502,
            "outgoing request 1 failed: connection read timeout".into()
        )
    );
    assert_eq!(fetch(&r, "a", &up.url("/big?bytes=1000"), "").await.0, 200);
    assert_eq!(
        fetch(&r, "a", &up.url("/big?bytes=1001"), "").await,
        refused("HttpResponseBodySize(Some(1001))")
    );
    assert_eq!(
        fetch(&r, "a", &format!("http://{closed_at}/"), "").await,
        refused("ConnectionRefused")
    );
    assert_eq!(
        r.metric("runner_outbound_requests_total", "outcome=\"timeout\"")
            .await,
        2.0,
        "the connect and first-byte timeouts"
    );
    drop(fillers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_and_a_silent_upstream_slow_no_neighbour() {
    let up = Upstream::start();
    let t = Tenants::new()
        .hostile(
            "slow",
            &format!(
                "{}\ntimeout = \"10s\"\nmax-outbound-connections = 2\n\
                 outbound-connect-timeout = \"300ms\"\noutbound-first-byte-timeout = \"3s\"",
                allow(&up)
            ),
        )
        .hostile("quick", "");
    let r = InProcess::start_with(&t, &LOOPBACK);
    let silent = up.url("/silent");
    let addr = r.addr;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let path = format!("/t/slow/fetch?url={silent}");
            tokio::spawn(async move { get(addr, &path).await })
        })
        .collect();
    // Both hold their connections on the silent upstream.
    for _ in 0..200 {
        if up.requests() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.requests(), 2);
    // A third finds both connections in use for its whole connect timeout.
    assert_eq!(
        fetch(&r, "slow", &silent, "").await,
        refused("ConnectionLimitReached")
    );
    // Meanwhile the neighbour is served, every request, while the two
    // still wait.
    for _ in 0..50 {
        assert_eq!(get(addr, "/t/quick/hello").await.text(), "hello");
    }
    assert!(waiting.iter().all(|w| !w.is_finished()));
    for w in waiting {
        let reply = w.await.expect("the request task");
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            refused("ConnectionReadTimeout")
        );
    }
    assert_eq!(
        r.metric(
            "runner_outbound_requests_total",
            "tenant=\"slow\",outcome=\"denied_limit\""
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_a_pooled_connection() {
    let up = Upstream::start();
    let t = Tenants::new().hostile("a", &allow(&up));
    let r = InProcess::start_with(&t, &LOOPBACK);
    for _ in 0..1000 {
        assert_eq!(
            fetch(&r, "a", &up.url("/small"), "").await,
            (200, "upstream says hi".into())
        );
    }
    assert_eq!(up.requests(), 1000);
    assert!(up.accepts() <= 2, "{} connections", up.accepts());
    assert_eq!(
        r.metric("runner_outbound_connections", "tenant=\"a\"")
            .await,
        up.accepts() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_bounded_in_count_and_time() {
    let up = Upstream::start();
    let t = Tenants::new()
        .hostile(
            "none",
            &format!("{}\noutbound-idle-connections = 0", allow(&up)),
        )
        .hostile(
            "brief",
            &format!("{}\noutbound-idle-timeout = \"200ms\"", allow(&up)),
        );
    let r = InProcess::start_with(&t, &LOOPBACK);
    let small = up.url("/small");
    for _ in 0..3 {
        assert_eq!(fetch(&r, "none", &small, "").await.0, 200);
    }
    // No idle connection kept: one each.
    assert_eq!(up.accepts(), 3);
    assert_eq!(fetch(&r, "brief", &small, "").await.0, 200);
    assert_eq!(fetch(&r, "brief", &small, "").await.0, 200);
    assert_eq!(up.accepts(), 4, "the second request reused the first's");
    // Past the idle timeout the connection is closed, and the next opens
    // a new one.
    let mut open = 1.0;
    for _ in 0..300 {
        open = r
            .metric("runner_outbound_connections", "tenant=\"brief\"")
            .await;
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open, 0.0, "the idle connection was closed");
    assert_eq!(fetch(&r, "brief", &small, "").await.0, 200);
    assert_eq!(up.accepts(), 5);
    assert_eq!(
        r.metric("runner_outbound_connections", "tenant=\"none\"")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasip3_guest_calls_out_through_the_same_policy() {
    let up = Upstream::start();
    let t = p3(Tenants::new(), "a", &allow(&up));
    let t = p3(t, "none", "");
    let r = InProcess::start_with(&t, &LOOPBACK);
    assert_eq!(
        fetch(&r, "a", &up.url("/small"), "").await,
        (200, "upstream says hi".into())
    );
    assert_eq!(
        fetch(&r, "none", &up.url("/small"), "").await,
        (
            502,
            "outgoing request failed: ErrorCode::HttpRequestDenied".into()
        )
    );
    assert_eq!(
        fetch(
            &r,
            "a",
            &format!("http://127.0.0.2:{}/small", up.addr.port()),
            ""
        )
        .await,
        (
            502,
            "outgoing request failed: ErrorCode::HttpRequestDenied".into()
        )
    );
    settle().await;
    assert_eq!(up.requests(), 1);
}
