//! Guest logs: the tenant on every line, text that cannot forge fields,
//! and the per-request budget and per-tenant rate.

use http::StatusCode;

use crate::harness::{InProcess, Observed as _, Tenants, get, get_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_the_seed_line_with_the_tenant() {
    let r = InProcess::start(&["--tenants", "4"]);
    let res = get(r.addr, "/t/t3/demo").await;
    assert_eq!((res.status, res.text().as_str()), (StatusCode::OK, "world"));
    let line = r.wait_for_log("res from guest: world");
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("tenant=t3"), "{line}");
    assert!(line.contains("context=\"I/O\""), "{line}");
}

/// Guest text cannot pose as a runner field or forge a line: it is a quoted
/// field after the real tenant, with line separators and bidi controls
/// escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_log_text_cannot_forge_fields_or_lines() {
    let t = Tenants::new().hostile("t0", "");
    let r = InProcess::start_with(&t, &[]);
    let forged = "/t/t0/print?text=refund%20ok%20tenant%3Dt1%E2%80%A8INFO%20fake%E2%80%AEtxt";
    assert_eq!(get(r.addr, forged).await.text(), "ok");
    let line = r.wait_for_log("refund ok");
    let (_, fields) = line
        .split_once("guest: tenant=t0 request_id=")
        .unwrap_or_else(|| panic!("{line}"));
    let (id, text) = fields.split_at(32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    assert_eq!(
        text,
        r#" stream="stdout" text="refund ok tenant=t1\\u{2028}INFO fake\\u{202e}txt""#
    );
}

/// The log budget counts what is written, not what the guest wrote: a flood
/// of one-byte lines cannot write many times its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_budgets_count_what_is_written() {
    let t = Tenants::new().hostile("evil", "max-log-bytes = \"8KiB\"");
    let r = InProcess::start_with(&t, &[]);
    assert_eq!(get(r.addr, "/t/evil/lines?count=32768").await.text(), "ok");
    r.wait_for_log("log budget of this request spent");
    let logged: usize = r
        .output()
        .lines()
        .filter(|l| l.contains("stream=\"stdout\""))
        .map(|l| l.len() + 1)
        .sum();
    assert!(
        (4 << 10..=8 << 10).contains(&logged),
        "{logged} bytes of log for an 8KiB budget"
    );
}

/// A tenant's requests together are held to its log rate, whatever each
/// request's own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_log_rate_bounds_all_its_requests_together() {
    let t = Tenants::new().hostile(
        "evil",
        "max-log-bytes = \"1MiB\"\nmax-log-bytes-per-second = \"16KiB\"",
    );
    let r = InProcess::start_with(&t, &[]);
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let res = get(r.addr, "/t/evil/stdout?bytes=65536").await;
        assert_eq!(res.text(), "ok");
    }
    let elapsed = started.elapsed().as_secs_f64();
    r.wait_for_log("log rate of this tenant exceeded");
    let logged: usize = r
        .output()
        .lines()
        .filter(|l| l.contains("stream=\"stdout\""))
        .map(|l| l.len() + 1)
        .sum();
    // One second's burst plus what the rate refills while the requests run.
    let allowed = (16 << 10) as f64 * (1.0 + elapsed);
    assert!(
        (logged as f64) <= allowed,
        "{logged} bytes logged in {elapsed:.2}s at 16KiB/s"
    );
    assert!(logged >= 8 << 10, "the first burst is logged: {logged}");
}

/// A request id sent by a trusted client comes back in `x-request-id` and
/// is on the guest's lines, stderr written piece by piece included (one
/// line, not one per write); its unfinished last line is written when the
/// request ends, under the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_request_id_comes_back_and_tags_the_guests_lines() {
    let t = Tenants::new().hostile("t0", "");
    let r = InProcess::start_with(&t, &["--request-id", "trust"]);
    let path = "/t/t0/stderr?text=hello%20in%20pieces&tail=left%20unfinished";
    let res = get_with(r.addr, path, &[("x-request-id", "order-7f3a")]).await;
    assert_eq!(res.text(), "ok");
    assert_eq!(res.header("x-request-id"), Some("order-7f3a"));
    let line = r.wait_for_log("hello in pieces");
    assert!(
        line.ends_with(
            r#"guest: tenant=t0 request_id=order-7f3a stream="stderr" text="hello in pieces""#
        ),
        "{line}"
    );
    let tail = r.wait_for_log("left unfinished");
    assert!(
        tail.ends_with(
            r#"guest: tenant=t0 request_id=order-7f3a stream="stderr" text="left unfinished""#
        ),
        "{tail}"
    );
    let pieces = r.output().lines().filter(|l| l.contains("hel")).count();
    assert_eq!(pieces, 1, "{}", r.output());

    // W3C trace context: the trace id is the request id.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let res = get_with(
        r.addr,
        "/t/t0/print?text=traced",
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(res.header("x-request-id"), Some(trace));
    let line = r.wait_for_log("text=\"traced\"");
    assert!(line.contains(&format!("request_id={trace} ")), "{line}");
}

/// By default ids are the runner's own: one a client sends is replaced, and
/// each request, a failed one included, gets a new one that its log lines
/// carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_made_by_default_and_tag_a_failure() {
    let t = Tenants::new().hostile("t0", "");
    let r = InProcess::start_with(&t, &[]);
    let res = get_with(r.addr, "/t/t0/panic", &[("x-request-id", "forged")]).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    let id = res.header("x-request-id").expect("an id").to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    // The trap is a warning naming the tenant and the request.
    let line = r.wait_for_log("hostile guest panicked on purpose");
    assert!(line.contains(&format!("request_id={id}")), "{line}");
    let trap = r.wait_for_log("WARN runner::outcome:");
    assert!(
        trap.ends_with(&format!(" tenant=t0 request_id={id}")),
        "{trap}"
    );
    let again = get(r.addr, "/t/t0/hello").await;
    assert_ne!(again.header("x-request-id"), Some(id.as_str()));
    assert!(!r.output().contains("forged"), "{}", r.output());
}

/// `--access-log on`: one line per request, routed or not, with its
/// tenant, method, path without the query, status, outcome, duration,
/// body bytes and id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_line_per_request() {
    let t = Tenants::new().hostile("t0", "");
    let r = InProcess::start_with(&t, &["--access-log", "on"]);
    let res = get(r.addr, "/t/t0/huge-body?bytes=100000&secret=s3cr3t").await;
    assert_eq!(res.body.len(), 100_000);
    let id = res.header("x-request-id").expect("an id").to_owned();
    let line = r.wait_for_log(&format!("request_id={id}"));
    let fields = line.split_once("access: ").expect("an access line").1;
    let (before, after) = fields.split_once(" duration_ms=").expect("a duration");
    assert_eq!(
        before,
        r#"tenant=t0 method=GET path="/t/t0/huge-body" status=200 outcome=ok routed=path"#
    );
    let (duration, rest) = after.split_once(' ').expect("fields after the duration");
    assert!(duration.parse::<f64>().expect("a number") > 0.0, "{line}");
    assert_eq!(rest, format!("bytes=100000 request_id={id}"));
    assert!(!r.output().contains("s3cr3t"));

    let res = get(r.addr, "/t/nobody/x").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let id = res.header("x-request-id").expect("an id").to_owned();
    let line = r.wait_for_log(&format!("request_id={id}"));
    assert!(
        line.contains(r#"access: tenant=- method=GET path="/t/nobody/x" status=404 outcome=unrouted routed=- duration_ms="#),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(" bytes=23 request_id={id}")),
        "{line}"
    );
    // Off by default.
    let quiet = InProcess::start_with(&t, &[]);
    get(quiet.addr, "/t/t0/hello").await;
    get(quiet.addr, "/t/t0/print?text=done").await;
    quiet.wait_for_log("text=\"done\"");
    assert!(!quiet.output().contains("access:"), "{}", quiet.output());
}
