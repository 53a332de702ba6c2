//! The runner as a process: what only a whole process shows (its exit
//! status and stderr at start-up, SIGTERM, its resident memory).

use http::StatusCode;
use system_tests::http::{Client, get};
use system_tests::probe::Observed as _;
use system_tests::{Launch, Runner, TempDir, Tenants};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_traps_leave_pool_and_memory_at_baseline() {
    let t = Tenants::new().hostile("evil", "").default("good", "");
    let r = Runner::start_with(&t, &[]);
    let addr = r.addr;
    // Warm up, then take the baseline.
    for _ in 0..200 {
        assert_eq!(
            get(addr, "/t/evil/panic").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let rss_before = r.rss_bytes();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for _ in 0..625 {
                    let res = client.get("/t/evil/panic").await;
                    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(get(addr, "/t/good/hello").await.text(), "hello");
    assert_eq!(r.metric("runner_pool_instances_in_use", "").await, 0.0);
    assert_eq!(
        r.metric("runner_traps_total", "kind=\"unreachable\"").await,
        10_200.0
    );
    let rss_after = r.rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 32 << 20,
        "resident memory grew by {growth} bytes over 10,000 traps ({rss_before} -> {rss_after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_with_imports_the_runner_lacks_fail_at_load_naming_them() {
    let dir = TempDir::new();
    // Two interfaces of packages the runner has never heard of: both are
    // named, in import order, before anything is compiled. One of a
    // package it links, whose shape does not match, is named once
    // compiled.
    let cases = [
        (
            r#"(component
                (import "acme:cache/get@1.0.0" (instance (export "get" (func))))
                (import "wasi:sockets/tcp@0.2.0" (instance (export "connect" (func))))
                (import "acme:queue/push" (instance (export "job" (type (sub resource)))))
            )"#,
            "the component imports 2 interfaces the runner does not provide: \
             acme:cache/get@1.0.0 (the runner provides no such package); acme:queue/push (the \
             runner provides no such package)",
        ),
        (
            r#"(component
                (import "wasi:sockets/tcp@0.2.0" (instance (export "connect" (func))))
                (instance $handler)
                (export "wasi:http/incoming-handler@0.2.0" (instance $handler))
            )"#,
            "the component imports one interface the runner does not provide: \
             wasi:sockets/tcp@0.2.0 (instance export `connect` has the wrong type: function \
             implementation is missing)",
        ),
    ];
    for (text, refusal) in cases {
        let wasm = dir.path.join("imports.wasm");
        std::fs::write(&wasm, wat::parse_str(text).unwrap()).unwrap();
        let t = Tenants::new().tenant("bad", &format!("component = {wasm:?}"));
        let out = Runner::run_to_exit(&t);
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert_eq!(
            out.stderr.trim_end(),
            format!(
                "error: tenant \"bad\": component {}: {refusal}",
                wasm.display()
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let t = Tenants::new().hostile("evil", "timeout = \"5s\"");
    let mut r = Runner::start_with(&t, &[]);
    let addr = r.addr;
    let slow = tokio::spawn(async move { get(addr, "/t/evil/sleep?ms=500").await });
    r.wait_for_metric("runner_requests_in_flight", "", 1.0)
        .await;
    let status = tokio::task::spawn_blocking(move || {
        let status = r.terminate();
        (status, r)
    });
    let res = slow.await.unwrap();
    assert_eq!((res.status, res.text().as_str()), (StatusCode::OK, "slept"));
    let (status, r) = status.await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(r.output().contains("shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_whose_limits_cannot_fit_their_component_fail_at_start_up() {
    for (limit, start, needle) in [
        // The initial memory is read from the component, before compiling.
        (
            "max-memory = \"64KiB\"",
            "error: tenant \"cramped\": the component needs 131072 bytes (128.0 KiB) of \
             linear memory from its start, over the tenant's memory limit of 65536 bytes \
             (64.0 KiB); raise it with --max-memory, or max-memory in the tenants file",
            "--max-memory",
        ),
        // Instances only show when one is made.
        (
            "max-instances = 1",
            "error: tenant \"cramped\": instantiating it under the tenant's limits",
            "instance",
        ),
    ] {
        let t = Tenants::new().default("ok", "").default("cramped", limit);
        let out = Runner::run_to_exit(&t);
        assert_eq!(out.status.code(), Some(1), "{limit}: {}", out.stderr);
        assert!(out.stderr.starts_with(start), "{}", out.stderr);
        assert!(out.stderr.contains(needle), "{limit}: {}", out.stderr);
    }
}

/// Host memory a guest causes is bounded per request: eight requests that
/// each try to make the runner hold 2,500 header sets of 120 KB (300 MB
/// apiece, 2.4 GB together, without the bounds), then eight that stay just
/// under the size of one set and stop at the resource count, leave its
/// resident memory far below that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_requests_cannot_flood_host_memory() {
    let t = Tenants::new().hostile("evil", "timeout = \"10s\"\nfuel = 100000000000");
    let r = Runner::start_with(&t, &[]);
    let addr = r.addr;
    let mut peak = r.rss_bytes();
    for (bytes, limit) in [(120_000, "header_fields"), (30_000, "host_resources")] {
        let path = format!("/t/evil/fields?count=2500&bytes={bytes}");
        let floods: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { get(addr, &path).await })
            })
            .collect();
        while !floods.iter().all(|f| f.is_finished()) {
            peak = peak.max(r.rss_bytes());
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        for f in floods {
            let res = f.await.unwrap();
            assert_eq!(
                (res.status, res.header("x-runner-limit")),
                (StatusCode::INTERNAL_SERVER_ERROR, Some(limit)),
                "{}",
                res.text()
            );
        }
    }
    assert!(peak < 512 << 20, "resident memory peaked at {peak} bytes");
    assert_eq!(get(addr, "/t/evil/hello").await.text(), "hello");
}

/// A setting's variable is `RUNNER_` and its flag; the one older name still
/// works, with a warning that names the new one.
#[test]
fn settings_read_their_variable_and_the_old_name_warns() {
    let reaches = "tenant \"t0\": max-tenant-in-flight reaches the runner's 1000 request slots";
    let deprecated = "RUNNER_TENANT_MAX_IN_FLIGHT is deprecated: set RUNNER_MAX_TENANT_IN_FLIGHT \
                      instead";
    for (name, warns) in [
        ("RUNNER_MAX_TENANT_IN_FLIGHT", false),
        ("RUNNER_TENANT_MAX_IN_FLIGHT", true),
    ] {
        let how = Launch {
            env: vec![(name.into(), "1000".into())],
            ..Launch::default()
        };
        let r = Runner::launch(None, &["--tenants", "1"], how);
        r.wait_for_log(reaches);
        assert_eq!(r.output().contains(deprecated), warns, "{name}");
    }
}

/// CPU time (user plus system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split(' ')
        .collect();
    // utime and stime, in clock ticks (100 a second on Linux).
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    (ticks(11) + ticks(12)) / 100.0
}

/// A log pipeline that stalls (stderr never read) costs log lines, counted,
/// not latency: a neighbour stays fast while a tenant, allowed a high log
/// rate, floods the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_stderr_drops_log_lines_counts_them_and_blocks_no_one() {
    let t = Tenants::new()
        .hostile("noisy", "max-log-bytes-per-second = \"1GiB\"")
        .default("quiet", "");
    let how = Launch {
        stderr_unread: true,
        ..Launch::default()
    };
    let r = Runner::launch(Some(&t), &[], how);
    let addr = r.addr;
    let floods: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for _ in 0..50 {
                    let res = client.get("/t/noisy/lines?count=20000").await;
                    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
                }
            })
        })
        .collect();
    let mut client = Client::connect(addr).await;
    let mut latencies = Vec::new();
    while !floods.iter().all(|f| f.is_finished()) {
        let start = std::time::Instant::now();
        assert_eq!(client.get("/t/quiet/hello").await.text(), "hello");
        latencies.push(start.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for f in floods {
        f.await.unwrap();
    }
    latencies.sort();
    let (p50, p99) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );
    eprintln!(
        "neighbour: {} requests, p50 {p50:?}, p99 {p99:?}",
        latencies.len()
    );
    // Generous bounds (figures in BENCHMARKS.md); when the writer blocked
    // on the pipe, the neighbour's p50 passed a second.
    assert!(
        latencies.len() >= 20,
        "only {} neighbour requests",
        latencies.len()
    );
    assert!(
        p50 < std::time::Duration::from_millis(100),
        "neighbour p50 {p50:?}"
    );
    assert!(
        p99 < std::time::Duration::from_millis(500),
        "neighbour p99 {p99:?}"
    );
    // 200 floods of about 490 lines each (the default 64KiB per-request log
    // budget, each line charged with its tenant and request id), past what
    // a full pipe and the writer's 65,536-line buffer hold: the rest were
    // dropped, and counted. Of about 98,000 lines, the pipe and the buffer
    // hold some 66,000.
    let dropped = r.metric("runner_log_lines_dropped_total", "").await;
    assert!(
        (15_000.0..=98_000.0).contains(&dropped),
        "{dropped} lines dropped"
    );
}

/// Under `ulimit -n 1024`, 1,100 idle connections to the metrics port take
/// that listener to its cap (lowered to fit the limit), not the process to
/// the end of its descriptors: tenants are still served, and the accept
/// loops do not spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_under_a_descriptor_limit_starve_no_one() {
    rlimit::increase_nofile_limit(4096).expect("raising the test's own descriptor limit");
    let how = Launch {
        max_descriptors: Some(1024),
        ..Launch::default()
    };
    let r = Runner::launch(None, &[], how);
    r.wait_for_log("max-connections lowered");
    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(r.admin).await {
            idle.push(stream);
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = cpu_seconds(r.pid());
    let mut client = Client::connect(r.addr).await;
    for _ in 0..50 {
        assert_eq!(client.get("/t/t0/hello").await.text(), "hello");
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let used = cpu_seconds(r.pid()) - before;
    assert!(
        used < 0.5,
        "the runner used {used} s of CPU in about 1 s while idle"
    );
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(get(r.admin, "/healthz").await.status, StatusCode::OK);
}

/// The memory refusal names the tenant's own limit, even when another
/// tenant's larger limit sizes the pool and the component passes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_refusal_names_the_tenants_own_limit() {
    // The embedded guest too: the tenant's own limit, not the pool it sized.
    let out = Runner::run_args_to_exit(&["--tenants", "1", "--max-memory", "64KiB"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        "error: tenant \"t0\": the component needs 131072 bytes (128.0 KiB) of linear memory \
         from its start, over the tenant's memory limit of 65536 bytes (64.0 KiB); raise it \
         with --max-memory, or max-memory in the tenants file"
    );

    let dir = TempDir::new();
    let wasm = dir.path.join("big.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str("(component (core module (memory 4800)))").unwrap(),
    )
    .unwrap();
    let t = Tenants::new()
        .default("roomy", "max-memory = \"256MiB\"")
        .tenant(
            "small",
            &format!("component = {wasm:?}\nmax-memory = \"64MiB\""),
        );
    let out = Runner::run_to_exit(&t);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "error: tenant \"small\": component {}: the component needs 314572800 bytes \
             (300.0 MiB) of linear memory from its start, over the tenant's memory limit of \
             67108864 bytes (64.0 MiB); raise it with --max-memory, or max-memory in the \
             tenants file",
            wasm.display()
        )
    );
}

/// `--log-format json`: every log line is one JSON object with the fields
/// by name, the access line and the guest's own included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let r = Runner::start(&[
        "--tenants",
        "1",
        "--log-format",
        "json",
        "--access-log",
        "on",
    ]);
    let res = get(r.addr, "/t/t0/demo").await;
    assert_eq!(res.text(), "world");
    let id = res.header("x-request-id").expect("an id").to_owned();
    r.wait_for_log("\"target\":\"access\"");
    let lines: Vec<serde_json::Value> = r
        .output()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["message"] == "runner ready")
        .expect("the ready line");
    assert_eq!(
        (&ready["level"], &ready["tenants"]),
        (&"INFO".into(), &1.into())
    );
    let guest = lines
        .iter()
        .find(|l| l["target"] == "guest")
        .expect("the guest's line");
    assert_eq!(guest["tenant"], "t0");
    assert_eq!(guest["request_id"], id.as_str());
    assert_eq!(guest["text"], "res from guest: world");
    let access = lines
        .iter()
        .find(|l| l["target"] == "access")
        .expect("the access line");
    for (field, value) in [
        ("tenant", serde_json::json!("t0")),
        ("method", "GET".into()),
        ("path", "/t/t0/demo".into()),
        ("status", 200.into()),
        ("outcome", "ok".into()),
        ("routed", "path".into()),
        ("bytes", 5.into()),
        ("request_id", id.as_str().into()),
    ] {
        assert_eq!(access[field], value, "{field}: {access}");
    }
    assert!(
        access["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{access}"
    );
    // Nothing but the two lines on stdout is written outside JSON.
    let output = r.output();
    let other: Vec<&str> = output
        .lines()
        .filter(|l| {
            !l.starts_with('{') && !l.starts_with("listening on") && !l.starts_with("metrics on")
        })
        .collect();
    assert!(other.is_empty(), "{other:?}");
}

/// Two tenants of the tenants file claiming one host: the runner does not
/// start, and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_two_tenants_claim_stops_the_start_naming_both() {
    let t = Tenants::new()
        .default("a", "hosts = [\"shop.example.com\"]")
        .default("b", "hosts = [\"Shop.Example.com.\"]");
    let out = Runner::run_to_exit(&t);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        "error: host shop.example.com is claimed by tenant \"a\" and tenant \"b\"; a host \
         reaches one tenant"
    );
}
