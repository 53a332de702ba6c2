//! Guest logs: the tenant on every line, text that cannot forge fields,
//! and the per-request budget and per-tenant rate.

use http::StatusCode;

use crate::harness::{InProcess, Observed as _, Tenants, get};

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
    assert!(
        line.ends_with(
            r#"guest: tenant=t0 stream="stdout" text="refund ok tenant=t1\\u{2028}INFO fake\\u{202e}txt""#
        ),
        "{line}"
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
