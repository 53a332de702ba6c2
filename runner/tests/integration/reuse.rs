//! Instances kept between a tenant's requests (max-instance-reuse):
//! what they keep, what drops them, and fuel and deadline per request.

use std::time::Duration;

use http::StatusCode;

use crate::harness::{InProcess, Observed as _, Tenants, get};

/// Static and grown memory as `/residue` reports them on an instance's
/// first request, and on a later request of the same instance.
const FRESH: &str = "static=0 dirty=0";
const KEPT: &str = "static=42405 dirty=0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_keeps_its_own_state_for_its_own_tenant_only() {
    let t = Tenants::new()
        .hostile("a", "max-instance-reuse = 3")
        .hostile("b", "max-instance-reuse = 3")
        .hostile("c", "");
    let r = InProcess::start_with(&t, &[]);
    // Each tenant's instance serves three requests, then a fresh one
    // takes over; no tenant's requests land on another's instance, and a
    // tenant without reuse always gets a fresh one.
    let plan = [
        ("a", FRESH),
        ("b", FRESH),
        ("c", FRESH),
        ("a", KEPT),
        ("c", FRESH),
        ("b", KEPT),
        ("a", KEPT),
        ("a", FRESH),
        ("b", KEPT),
        ("b", FRESH),
        ("a", KEPT),
    ];
    for (i, (tenant, seen)) in plan.into_iter().enumerate() {
        let res = get(r.addr, &format!("/t/{tenant}/residue")).await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, seen),
            "request {i}, tenant {tenant}"
        );
    }
    for (tenant, created, reused) in [("a", 2.0, 3.0), ("b", 2.0, 2.0), ("c", 2.0, 0.0)] {
        crate::harness::assert_instances(&r, tenant, created, reused).await;
    }
    // a's second instance and b's second instance are parked.
    assert_eq!(r.metric("runner_instances_idle", "").await, 2.0);
    // Dropped so far: a's and b's first (3 requests each), and c's two.
    assert_eq!(r.metric("runner_instance_requests_count", "").await, 4.0);
    assert_eq!(r.metric("runner_instance_requests_sum", "").await, 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_or_a_limit_drops_the_instance() {
    let t = Tenants::new().hostile("a", "max-instance-reuse = 100");
    let r = InProcess::start_with(&t, &[]);
    let residue = async || get(r.addr, "/t/a/residue").await.text();
    assert_eq!(residue().await, FRESH);
    assert_eq!(residue().await, KEPT);
    assert_eq!(
        get(r.addr, "/t/a/panic").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(residue().await, FRESH, "after a trap");
    assert_eq!(residue().await, KEPT);
    let res = get(r.addr, "/t/a/loop").await;
    res.assert_limit(
        StatusCode::SERVICE_UNAVAILABLE,
        "fuel",
        "fuel exhausted: the request burned its whole budget of 100000000 fuel units",
    );
    assert_eq!(residue().await, FRESH, "after running out of fuel");
    // A guest that writes an error response still ended cleanly.
    assert_eq!(
        get(r.addr, "/t/a/burn").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(residue().await, KEPT, "after a 400 from the guest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_and_the_deadline_are_per_request_on_a_reused_instance() {
    // One /burn of this many iterations costs more than half of FUEL (the
    // test checks), so two on one budget would run out.
    const ITERS: u64 = 400_000;
    const FUEL: u64 = 4_000_000;
    let t = Tenants::new().hostile(
        "a",
        &format!("max-instance-reuse = 100\nfuel = {FUEL}\ntimeout = \"400ms\""),
    );
    let r = InProcess::start_with(&t, &[]);
    let labels = "tenant=\"a\"";
    let mut before = 0.0;
    for i in 0..4 {
        let res = get(r.addr, &format!("/t/a/burn?iters={ITERS}")).await;
        assert_eq!(
            (res.status, res.text()),
            (StatusCode::OK, ITERS.to_string()),
            "burn {i}"
        );
        let burned = r.metric("runner_fuel_consumed_total", labels).await;
        assert!(
            (burned - before) * 2.0 > FUEL as f64,
            "burn {i} cost {} fuel, not over half of {FUEL}",
            burned - before
        );
        before = burned;
    }
    // Each sleep takes most of the 400ms timeout; together they would
    // pass it.
    for i in 0..3 {
        let res = get(r.addr, "/t/a/sleep?ms=250").await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, "slept"),
            "sleep {i}"
        );
    }
    assert_eq!(
        r.metric("runner_instances_created_total", labels).await,
        1.0
    );
    assert_eq!(r.metric("runner_instances_reused_total", labels).await, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_is_dropped_after_its_timeout() {
    let t = Tenants::new().hostile(
        "a",
        "max-instance-reuse = 100\ninstance-idle-timeout = \"200ms\"",
    );
    let r = InProcess::start_with(&t, &[]);
    assert_eq!(get(r.addr, "/t/a/residue").await.text(), FRESH);
    assert_eq!(get(r.addr, "/t/a/residue").await.text(), KEPT);
    assert_eq!(r.metric("runner_instances_idle", "").await, 1.0);
    // The reaper drops it once its timeout has passed, without a request.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.metric("runner_instances_idle", "").await != 0.0 {
        assert!(std::time::Instant::now() < deadline, "still parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        r.metric("runner_instance_requests_sum", "").await,
        2.0,
        "it served two requests"
    );
    assert_eq!(get(r.addr, "/t/a/residue").await.text(), FRESH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_evicts_parked_instances_before_it_refuses() {
    // Five tenants, four slots: each tenant parks an instance, so the
    // fifth (and then each in turn) needs another tenant's slot.
    let mut t = Tenants::new();
    for name in ["a", "b", "c", "d", "e"] {
        t = t.hostile(
            name,
            "max-instance-reuse = 100\ninstance-idle-timeout = \"1h\"",
        );
    }
    let r = InProcess::start_with(&t, &["--pool-size", "4"]);
    for round in 0..3 {
        for name in ["a", "b", "c", "d", "e"] {
            let res = get(r.addr, &format!("/t/{name}/hello")).await;
            assert_eq!(
                (res.status, res.text().as_str()),
                (StatusCode::OK, "hello"),
                "round {round}, tenant {name}"
            );
        }
    }
    assert_eq!(r.metric("runner_instances_idle", "").await, 4.0);
    assert_eq!(r.metric("runner_instances_created_total", "").await, 15.0);
    assert_eq!(
        r.metric("runner_limit_hits_total", "limit=\"instance_pool\"")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_answer_twice_gets_fresh_instances_after_its_first_miss() {
    let t = Tenants::new().hostile("a", "max-instance-reuse = 10\nmax-reused-memory = \"2MiB\"");
    let r = InProcess::start_with(&t, &[]);
    let first = get(r.addr, "/t/a/answer-once").await;
    assert_eq!(
        (first.status, first.text().as_str()),
        (StatusCode::OK, "answered")
    );
    let missed = get(r.addr, "/t/a/answer-once").await;
    assert_eq!(
        (missed.status, missed.text().as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the guest ended without sending a response"
        )
    );
    let line = r.wait_for_log("cannot serve more than one request per instance");
    assert!(line.trim_end().ends_with(" tenant=a"), "{line}");
    for i in 0..3 {
        let res = get(r.addr, "/t/a/answer-once").await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, "answered"),
            "request {i} after reuse was turned off"
        );
    }
    let labels = "tenant=\"a\"";
    assert_eq!(
        r.metric("runner_instances_created_total", labels).await,
        4.0
    );
    assert_eq!(r.metric("runner_instances_reused_total", labels).await, 1.0);
    assert_eq!(r.metric("runner_instances_idle", "").await, 0.0);
    // With reuse off, an instance that grew past max-reused-memory is
    // dropped as every instance is: not counted as recycled.
    for _ in 0..2 {
        assert_eq!(get(r.addr, "/t/a/residue").await.text(), FRESH);
    }
    assert_eq!(
        r.metric("runner_instances_created_total", labels).await,
        6.0
    );
    assert_eq!(
        r.metric("runner_instances_recycled_total", labels).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_grown_past_max_reused_memory_is_dropped_after_its_request() {
    // The hostile guest starts with 17 pages (1,088 KiB) and each
    // `/residue` grows its memory by 4 MiB: past 6 MiB on an instance's
    // second. `a` sets the limit itself; `b` takes the flag's default,
    // and `c` the built-in 32 MiB.
    let t = Tenants::new()
        .hostile(
            "a",
            "max-instance-reuse = 100\nmax-reused-memory = \"6MiB\"",
        )
        .hostile("b", "max-instance-reuse = 100")
        .hostile(
            "c",
            "max-instance-reuse = 100\nmax-reused-memory = \"32MiB\"",
        );
    let r = InProcess::start_with(&t, &["--max-reused-memory", "6MiB"]);
    for tenant in ["a", "b"] {
        let residue = async || get(r.addr, &format!("/t/{tenant}/residue")).await.text();
        assert_eq!(residue().await, FRESH, "{tenant}");
        // Served, then dropped: 1,088 KiB and two 4 MiB growths.
        assert_eq!(residue().await, KEPT, "{tenant}");
        assert_eq!(
            residue().await,
            FRESH,
            "{tenant}: after its memory passed 6 MiB"
        );
        // Requests that do not grow it leave it kept.
        for _ in 0..3 {
            assert_eq!(
                get(r.addr, &format!("/t/{tenant}/hello")).await.text(),
                "hello"
            );
        }
        assert_eq!(residue().await, KEPT, "{tenant}");
        crate::harness::assert_instances(&r, tenant, 2.0, 5.0).await;
        let labels = format!("tenant=\"{tenant}\"");
        assert_eq!(
            r.metric("runner_instances_recycled_total", &labels).await,
            2.0
        );
    }
    // Under 32 MiB, five growths stay on one instance.
    for i in 0..5 {
        let seen = if i == 0 { FRESH } else { KEPT };
        assert_eq!(
            get(r.addr, "/t/c/residue").await.text(),
            seen,
            "request {i}"
        );
    }
    crate::harness::assert_instances(&r, "c", 1.0, 4.0).await;
    assert_eq!(
        r.metric("runner_instances_recycled_total", "tenant=\"c\"")
            .await,
        0.0
    );
}
