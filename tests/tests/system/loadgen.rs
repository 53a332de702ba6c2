//! The load generator against the runner: loadgen's own correctness checks
//! (`--verify`) pass, and the runner counted exactly the requests loadgen
//! says it sent.

use system_tests::probe::Observed as _;
use system_tests::{Runner, loadgen};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_verifies_the_runner_and_both_count_the_same_requests() {
    let runner = Runner::start(&["--tenants", "10"]);
    let target = format!("http://{}", runner.addr);
    let scrape = format!("http://{}/metrics", runner.admin);
    let run = tokio::task::spawn_blocking(move || {
        loadgen::run(&[
            "--target",
            &target,
            "--tenants",
            "10",
            "--keys",
            "50",
            "--mix",
            "get=50,set=20,incr=10,list=5,batch=5,delete=10",
            "--requests",
            "3000",
            "--warmup",
            "0s",
            "--concurrency",
            "8",
            "--threads",
            "1",
            "--verify",
            "--scrape",
            &scrape,
        ])
    })
    .await
    .expect("the loadgen run");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = &run.report;
    assert_eq!(report["requests"], 3000, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    for violation in [
        "lost_writes",
        "stale_reads",
        "wrong_tenant",
        "bad_increments",
        "corrupt_values",
    ] {
        assert_eq!(report["verify"][violation], 0, "{violation}: {report}");
    }
    // Every request loadgen sent reached a tenant and ended in an outcome
    // the runner counted once.
    let counted = runner.metric("runner_requests_total", "").await;
    assert_eq!(counted, 3000.0);
    let served = runner
        .metric("runner_requests_total", "outcome=\"ok\"")
        .await
        + runner
            .metric("runner_requests_total", "outcome=\"guest_4xx\"")
            .await;
    assert_eq!(served, 3000.0);
    assert_eq!(
        runner.metric("runner_unrouted_requests_total", "").await,
        0.0
    );
}
