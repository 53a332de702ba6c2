//! The Grafana dashboard and the alert rules in `dashboards/`, checked
//! against a real Prometheus scraping the real runner binary under load.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool` on PATH).
//! Without it the test says it skipped and why, and passes, unless
//! `RUNNER_REQUIRE_PROMETHEUS=1` (CI sets it), where that is a failure.
//!
//! In order:
//! 1. `promtool check rules` on alerts.yml; the dashboard JSON's shape.
//! 2. The runner starts with four tenants (t0 on the hostile guest, which
//!    can trap, run out of fuel and fill its key quota, so the first
//!    tenant has a series for every panel: a tenant's series appear on
//!    first use); a fixed load runs through real HTTP while Prometheus (the
//!    shipped prometheus.yml pointed at this runner, scraping every second,
//!    `promtool check config` first) scrapes; `promtool check metrics`
//!    passes on a real scrape.
//! 3. Prometheus holds exactly the requests sent, by tenant and outcome.
//! 4. Every dashboard expression returns data, for all tenants and for one,
//!    and every series has the labels its legend names; every template
//!    variable's query finds the values it should.
//! 5. Every alert rule, as Prometheus loaded it, evaluates without error,
//!    could fire (see [`with_bool`]), and holds now for exactly the series the
//!    load should cause.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::Value;
use system_tests::http::{Client, get};
use system_tests::prometheus::{Labels, Prometheus, Tools, read};
use system_tests::upstream::Upstream;
use system_tests::{Launch, Runner, TempDir, Tenants};

/// The key quota of every tenant in this run: low enough that t3's writes
/// run into it, which is what makes the error-rate and quota alerts hold.
const MAX_KEYS: usize = 16;
/// The longest the test waits for any one thing.
const PATIENCE: Duration = system_tests::prometheus::PATIENCE;
/// Keys t1 cycles through (it also increments one more, `n`).
const T1_KEYS: usize = 8;
/// Distinct keys t3 writes: more than [`MAX_KEYS`].
const T3_WRITES: usize = 40;
/// Pause between one tenant's requests, so the load spans a few scrapes.
const PACE: Duration = Duration::from_millis(20);
/// Pause after each of t3's refused writes, so they span more than two.
const REFUSAL_PACE: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_against_a_real_prometheus() {
    let Some(tools) = Tools::find() else {
        assert_ne!(
            std::env::var("RUNNER_REQUIRE_PROMETHEUS").as_deref(),
            Ok("1"),
            "RUNNER_REQUIRE_PROMETHEUS=1, but prometheus or promtool is not on PATH \
             (apt-get install prometheus)"
        );
        // Straight to the process's stderr: the test harness captures
        // println!, and a skip should be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: prometheus not installed (apt-get install prometheus)"
        );
        return;
    };
    let repo = system_tests::repo_root();
    let alerts_file = repo.join("dashboards/prometheus/alerts.yml");
    tools.promtool(&["check", "rules"], Some(&alerts_file), None);
    let dashboard = Dashboard::load(&repo.join("dashboards/grafana/runner.json"));
    // The fleet compose file's Prometheus config, with the alerts beside it
    // as the compose file mounts them.
    let fleet = system_tests::TempDir::new();
    std::fs::copy(
        repo.join("dashboards/fleet/prometheus.yml"),
        fleet.path.join("prometheus.yml"),
    )
    .expect("copying the fleet's prometheus.yml");
    std::fs::copy(&alerts_file, fleet.path.join("alerts.yml")).expect("copying alerts.yml");
    tools.promtool(
        &["check", "config"],
        Some(&fleet.path.join("prometheus.yml")),
        None,
    );

    // t0 calls out and reads its configuration too, so the outgoing-HTTP
    // and configuration panels have its series.
    let upstream = Upstream::start();
    let t0 = format!(
        "fuel = 20000000\nmax-tenant-in-flight = 1\nallowed-outbound-hosts = [\"http://{}\"]\n\
         config = {{ greeting = \"hi\" }}",
        upstream.addr
    );
    let tenants = Tenants::new()
        .hostile("t0", &t0)
        .default("t1", "")
        .default("t2", "")
        .default("t3", "");
    let max_keys = MAX_KEYS.to_string();
    let runner = Runner::launch(
        Some(&tenants),
        &[
            "--max-keys",
            &max_keys,
            "--allowed-outbound-networks",
            "127.0.0.0/8",
        ],
        Launch::default(),
    );
    let ready = get(runner.admin, "/readyz").await;
    assert_eq!(
        (ready.status, ready.text().trim_end()),
        (StatusCode::OK, "ready")
    );

    // The shipped scrape config, pointed at this runner and made faster.
    let dir = TempDir::new();
    let shipped = read(&repo.join("dashboards/prometheus/prometheus.yml"));
    let config = replace_once(
        &shipped,
        r#""127.0.0.1:9095""#,
        &format!("\"{}\"", runner.admin),
    );
    let config = replace_once(&config, "scrape_interval: 5s", "scrape_interval: 1s");
    let config = replace_once(
        &config,
        "evaluation_interval: 5s",
        "evaluation_interval: 1s",
    );
    let config_file = dir.path.join("prometheus.yml");
    std::fs::write(&config_file, config).expect("writing prometheus.yml");
    std::fs::copy(&alerts_file, dir.path.join("alerts.yml")).expect("copying alerts.yml");
    tools.promtool(&["check", "config"], Some(&config_file), None);

    let prometheus = Prometheus::start(&tools.prometheus, &dir.path).await;
    // A scrape before the load; a tenant's series appear on first use, and
    // rate() starts from each one's first sample.
    prometheus
        .wait_for("a first scrape", r#"up{job="runner"}"#, |up| up == 1.0)
        .await;
    let expected = drive_load(runner.addr, &upstream.url("/small")).await;
    let scrape = get(runner.admin, "/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    tools.promtool(&["check", "metrics"], None, Some(&scrape.body));

    // Prometheus holds every request, in the right tenant and outcome.
    let sent: u64 = expected.values().sum();
    prometheus
        .wait_for(
            "a scrape after the load",
            r#"sum(runner_requests_total{job="runner"})"#,
            |n| n == sent as f64,
        )
        .await;
    prometheus
        .wait_for(
            "three scrapes",
            r#"count_over_time(up{job="runner"}[1m])"#,
            |n| n >= 3.0,
        )
        .await;
    let counted = prometheus
        .values(r#"sum by (tenant, outcome) (runner_requests_total{job="runner"}) > 0"#)
        .await;
    assert_eq!(counted, expected, "requests by (tenant, outcome)");
    let rejected = prometheus
        .values(r#"sum by (tenant, quota) (runner_kv_quota_rejections_total{job="runner"}) > 0"#)
        .await;
    let over_quota = (T3_WRITES - MAX_KEYS) as u64;
    assert_eq!(
        rejected,
        BTreeMap::from([
            (labels(&[("tenant", "t0"), ("quota", "keys")]), 1),
            (labels(&[("tenant", "t3"), ("quota", "keys")]), over_quota),
        ]),
        "quota rejections by (tenant, quota)"
    );
    let keys = prometheus
        .values(r#"sum by (tenant) (runner_kv_keys{job="runner"}) > 0"#)
        .await;
    assert_eq!(
        keys,
        BTreeMap::from([
            (labels(&[("tenant", "t0")]), MAX_KEYS as u64),
            (labels(&[("tenant", "t1")]), T1_KEYS as u64 + 1),
            (labels(&[("tenant", "t3")]), MAX_KEYS as u64),
        ]),
        "keys by tenant"
    );

    check_dashboard(&prometheus, &dashboard, runner.admin).await;
    check_alerts(&prometheus, &read(&alerts_file)).await;
}

/// The load: one keep-alive connection per tenant, all four at once, every
/// reply checked. Returns the requests Prometheus must count, by (tenant,
/// outcome).
async fn drive_load(addr: SocketAddr, upstream: &str) -> BTreeMap<Labels, u64> {
    // t0's hellos, t1's rounds of three requests, t2's pairs of a miss and a
    // hello.
    let (hellos, rounds, pairs) = (80, 25, 40);
    // t0 also traps once, runs out of fuel once, fills its key quota and,
    // with two requests at once, is refused one for its concurrency cap:
    // four failures in 87 requests, under the error-rate alert's 5%.
    let t0 = async {
        let mut c = Client::connect(addr).await;
        for _ in 0..hellos {
            expect(&mut c, Method::GET, "/t/t0/hello", "", 200, Some("hello")).await;
        }
        let fetch = format!("/t/t0/fetch?url={upstream}");
        expect(
            &mut c,
            Method::GET,
            &fetch,
            "",
            200,
            Some("upstream says hi"),
        )
        .await;
        let config = "/t/t0/config/rc1?name=greeting";
        expect(&mut c, Method::GET, config, "", 200, Some("hi")).await;
        expect(&mut c, Method::GET, "/t/t0/panic", "", 500, None).await;
        expect(&mut c, Method::GET, "/t/t0/loop", "", 503, None).await;
        let fill = format!("/t/t0/fill-keys?max={}", MAX_KEYS + 1);
        expect(&mut c, Method::GET, &fill, "", 507, None).await;
        let (first, second) = tokio::join!(get(addr, "/t/t0/sleep?ms=300"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            get(addr, "/t/t0/sleep?ms=300").await
        });
        assert_eq!((first.status.as_u16(), second.status.as_u16()), (200, 429));
    };
    // t1 also calls out once where it may not: one guest 5xx in 76.
    let t1 = async {
        let mut c = Client::connect(addr).await;
        let fetch = format!("/t/t1/fetch?url={upstream}");
        let denied = "outgoing request 1 failed: ErrorCode::HttpRequestDenied";
        expect(&mut c, Method::GET, &fetch, "", 502, Some(denied)).await;
        for i in 0..rounds {
            let (path, value) = (format!("/t/t1/kv/k{}", i % T1_KEYS), format!("v{i}"));
            expect(&mut c, Method::PUT, &path, &value, 204, Some("")).await;
            expect(&mut c, Method::GET, &path, "", 200, Some(value.as_str())).await;
            let count = (i + 1).to_string();
            expect(
                &mut c,
                Method::POST,
                "/t/t1/incr/n",
                "",
                200,
                Some(count.as_str()),
            )
            .await;
        }
    };
    // Guest 4xx: the tenant's own answer, which no alert counts as a failure.
    let t2 = async {
        let mut c = Client::connect(addr).await;
        for i in 0..pairs {
            let path = format!("/t/t2/kv/missing-{i}");
            expect(&mut c, Method::GET, &path, "", 404, Some("key not found")).await;
            expect(&mut c, Method::GET, "/t/t2/hello", "", 200, Some("hello")).await;
        }
    };
    // Past its key quota the default guest answers 507: guest 5xx.
    let t3 = async {
        let mut c = Client::connect(addr).await;
        for i in 0..T3_WRITES {
            let status = if i < MAX_KEYS { 204 } else { 507 };
            expect(
                &mut c,
                Method::PUT,
                &format!("/t/t3/kv/k{i}"),
                "v",
                status,
                None,
            )
            .await;
            if status == 507 {
                // Its refusals span a few scrapes: a series appears on
                // first use, and rate() sees only what it gains after.
                tokio::time::sleep(REFUSAL_PACE).await;
            }
        }
    };
    tokio::join!(t0, t1, t2, t3);
    [
        ("t0", "ok", hellos + 3),
        ("t0", "rejected", 1),
        ("t0", "trap", 1),
        ("t0", "fuel_exhausted", 1),
        ("t0", "guest_5xx", 1),
        ("t1", "ok", 3 * rounds),
        ("t1", "guest_5xx", 1),
        ("t2", "ok", pairs),
        ("t2", "guest_4xx", pairs),
        ("t3", "ok", MAX_KEYS),
        ("t3", "guest_5xx", T3_WRITES - MAX_KEYS),
    ]
    .into_iter()
    .map(|(tenant, outcome, n)| {
        let series = labels(&[("tenant", tenant), ("outcome", outcome)]);
        (series, n as u64)
    })
    .collect()
}

/// Every expression of every panel returns data, once with each template
/// variable at its "All" value and once at its first value; and every
/// variable's own query finds what it should.
async fn check_dashboard(prometheus: &Prometheus, dashboard: &Dashboard, admin: SocketAddr) {
    let mut all = BTreeMap::new();
    let mut first = BTreeMap::new();
    let mut found = BTreeMap::new();
    for var in &dashboard.variables {
        // A variable's query may use the variables before it.
        let selector = var
            .selector
            .as_deref()
            .map(|s| substitute(s, &all).unwrap_or_else(|e| panic!("variable {}: {e}", var.name)));
        let values = prometheus
            .label_values(&var.label, selector.as_deref())
            .await;
        assert!(!values.is_empty(), "variable {} finds no values", var.name);
        all.insert(var.name.clone(), var.all_value.clone());
        first.insert(var.name.clone(), values[0].clone());
        found.insert(var.name.clone(), values);
    }
    let tenants: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    assert_eq!(found.get("tenant"), Some(&tenants), "the tenant variable");
    assert_eq!(
        found.get("instance"),
        Some(&vec![admin.to_string()]),
        "the instance variable"
    );

    let mut failures = Vec::new();
    for values in [&all, &first] {
        for target in &dashboard.targets {
            let expr = match substitute(&target.expr, values) {
                Ok(expr) => expr,
                Err(e) => {
                    failures.push(format!("{}: {e}", target.panel));
                    continue;
                }
            };
            match prometheus.query(&expr).await {
                Err(e) => failures.push(format!("{}: `{expr}`: {e}", target.panel)),
                Ok(series) if series.is_empty() => {
                    failures.push(format!("{}: `{expr}` returns no data", target.panel));
                }
                Ok(series) => {
                    // A legend that names a label the query aggregated away
                    // shows as blank in Grafana.
                    for label in legend_labels(&target.legend) {
                        if series.iter().any(|s| s["metric"].get(label).is_none()) {
                            failures.push(format!(
                                "{}: legend names {{{{{label}}}}}, which `{expr}` does not return",
                                target.panel
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard expressions that fail:\n{}",
        failures.join("\n")
    );
}

/// Every alert rule as Prometheus loaded it: healthy, labelled and
/// annotated, able to fire, and holding now for exactly the series the load
/// should cause.
async fn check_alerts(prometheus: &Prometheus, alerts_yml: &str) {
    // Labels left once `instance` and `job` are dropped; `None` where the
    // answer depends on timing.
    let t3 = || labels(&[("tenant", "t3")]);
    let expected: BTreeMap<&str, Option<BTreeSet<Labels>>> = BTreeMap::from([
        ("RunnerDown", Some(BTreeSet::new())),
        // t3's 507s are 60% of its requests; t2's 404s do not count.
        ("RunnerHighErrorRate", Some(BTreeSet::from([t3()]))),
        ("RunnerTrapsRising", Some(BTreeSet::new())),
        // The store here is in memory and never fails.
        ("RunnerStoreUnavailable", Some(BTreeSet::new())),
        ("RunnerInstancePoolNearlyFull", Some(BTreeSet::new())),
        ("RunnerConcurrencyRejections", Some(BTreeSet::new())),
        ("RunnerConnectionsRejected", Some(BTreeSet::new())),
        (
            "RunnerKvQuotaRejections",
            Some(BTreeSet::from([labels(&[
                ("tenant", "t3"),
                ("quota", "keys"),
            ])])),
        ),
        // t3's keys, written within a second up to its quota, extrapolate
        // past it in four hours, or not, depending on how the scrapes fall.
        ("RunnerKvKeysNearQuota", None),
        // A few hundred bytes a second stay far below 64 MiB in four hours.
        ("RunnerKvBytesNearQuota", Some(BTreeSet::new())),
        // t1's one refusal is far from one a second.
        ("RunnerOutboundDenials", Some(BTreeSet::new())),
    ]);

    let in_file = alerts_yml
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let deadline = Instant::now() + PATIENCE;
    let rules = loop {
        let body = prometheus.api("/api/v1/rules").await;
        let rules: Vec<Value> = body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.len() == in_file && rules.iter().all(|r| r["health"] != "unknown") {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "alerts.yml has {in_file} alerts; Prometheus has not loaded and evaluated them all: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut failures: Vec<String> = expected
        .keys()
        .filter(|name| !rules.iter().any(|r| r["name"] == **name))
        .map(|name| format!("{name}: expected by this test, but not in alerts.yml"))
        .collect();
    for rule in &rules {
        let name = rule["name"].as_str().unwrap_or("?");
        let query = rule["query"].as_str().unwrap_or_default();
        if rule["health"] != "ok" {
            failures.push(format!(
                "{name}: health {}: {}",
                rule["health"], rule["lastError"]
            ));
        }
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        if !["critical", "warning", "info"].contains(&severity) {
            failures.push(format!("{name}: severity {severity:?}"));
        }
        for annotation in ["summary", "description"] {
            if rule["annotations"][annotation]
                .as_str()
                .is_none_or(str::is_empty)
            {
                failures.push(format!("{name}: no {annotation} annotation"));
            }
        }
        let holds = match prometheus.query(query).await {
            Ok(series) => series,
            Err(e) => {
                failures.push(format!("{name}: `{query}`: {e}"));
                continue;
            }
        };
        // A quiet alert returns nothing, which cannot tell a healthy runner
        // from a rule whose metric or labels no longer exist. The `bool`
        // form returns every series the rule could fire for.
        let could = with_bool(query);
        match prometheus.query(&could).await {
            Ok(series) if series.is_empty() => {
                failures.push(format!(
                    "{name}: `{could}` is empty: this rule can never fire"
                ));
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{name}: `{could}`: {e}")),
        }
        match expected.get(name) {
            None => failures.push(format!(
                "{name}: no expectation in runner/tests/prometheus.rs; add one"
            )),
            Some(None) => {}
            Some(Some(want)) => {
                let got: BTreeSet<Labels> = holds.iter().map(alert_labels).collect();
                if &got != want {
                    failures.push(format!(
                        "{name}: `{query}` holds for {got:?}, expected {want:?}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "alert rules that fail:\n{}",
        failures.join("\n")
    );
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A series' labels, less those that name the scrape target.
fn alert_labels(series: &Value) -> Labels {
    series["metric"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !["instance", "job", "__name__"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// `expr` with every comparison in its `bool` form: `a > 0.05` becomes
/// `a > bool 0.05`. A filtering comparison drops the series for which it is
/// false; its `bool` form keeps them all, as 0 or 1, and keeps everything
/// else (aggregations, vector matching, `and`) as it was. So the result is
/// exactly the set of series the alert could fire for, whether or not it
/// holds now; if it is empty, the rule names a metric or label the runner no
/// longer exports, or its two sides never match. (Cutting the comparison off
/// would not do: it misses comparisons that are not last, and `x and y > 0`.)
///
/// Label matchers (`{outcome!~"ok"}`) and strings are left alone.
fn with_bool(expr: &str) -> String {
    let b = expr.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 16);
    let (mut i, mut braces, mut quote) = (0, 0usize, None::<u8>);
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' && i + 1 < b.len() {
                out.extend_from_slice(&b[i..i + 2]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            out.push(c);
            i += 1;
            continue;
        }
        let op = match (c, b.get(i + 1)) {
            (b'"' | b'\'' | b'`', _) => {
                quote = Some(c);
                0
            }
            (b'{', _) => {
                braces += 1;
                0
            }
            (b'}', _) => {
                braces = braces.saturating_sub(1);
                0
            }
            _ if braces > 0 => 0,
            (b'=' | b'!' | b'<' | b'>', Some(b'=')) => 2,
            (b'<' | b'>', _) => 1,
            _ => 0,
        };
        if op == 0 {
            out.push(c);
            i += 1;
            continue;
        }
        out.extend_from_slice(&b[i..i + op]);
        i += op;
        let rest = expr[i..].trim_start();
        let has_bool = rest
            .strip_prefix("bool")
            .is_some_and(|r| !r.starts_with(|c: char| c.is_alphanumeric() || c == '_'));
        if !has_bool {
            out.extend_from_slice(b" bool");
            if !b.get(i).is_some_and(u8::is_ascii_whitespace) {
                out.push(b' ');
            }
        }
    }
    String::from_utf8(out).expect("ASCII was inserted only between ASCII characters")
}

/// The labels a legend format names: `{{tenant}} {{quota}}`.
fn legend_labels(legend: &str) -> Vec<&str> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}"))
        .map(|(name, _)| name.trim())
        .collect()
}

/// `expr` with Grafana's variables (`$name`, `${name}`, `${name:format}`)
/// replaced: the built-in intervals, and the dashboard's own from `values`.
/// A name that is neither is an error; a `$` not followed by a name (a regex
/// anchor) stays.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let builtin = |name: &str| match name {
        "__rate_interval" => Some("1m"),
        "__interval" => Some("15s"),
        "__interval_ms" => Some("15000"),
        "__range" => Some("5m"),
        "__range_s" => Some("300"),
        "__range_ms" => Some("300000"),
        _ => None,
    };
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed `${{` in `{expr}`"))?;
                let inner = &braced[..end];
                (inner.split(':').next().unwrap_or(inner), end + 2)
            }
            None => {
                let end = after.find(|c| !is_name(c)).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if name.is_empty() {
            out.push('$');
        } else {
            let value = values
                .get(name)
                .map(String::as_str)
                .or_else(|| builtin(name))
                .ok_or_else(|| format!("unknown variable `${name}` in `{expr}`"))?;
            out.push_str(value);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What the test reads from the dashboard JSON.
struct Dashboard {
    targets: Vec<Target>,
    variables: Vec<Variable>,
}

struct Target {
    panel: String,
    expr: String,
    legend: String,
}

/// A query variable: `label_values(selector, label)`.
struct Variable {
    name: String,
    selector: Option<String>,
    label: String,
    all_value: String,
}

impl Dashboard {
    /// Reads the dashboard and checks its shape: unique panel ids, panels
    /// inside the 24-column grid, every panel and target on the
    /// `${datasource}` variable, every target a non-empty `expr` with its
    /// own refId, a `datasource` and a `tenant` variable.
    fn load(path: &Path) -> Self {
        let json: Value = serde_json::from_str(&read(path))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut problems = Vec::new();
        let mut ids = BTreeSet::new();
        let mut targets = Vec::new();
        let mut panels: Vec<&Value> = json["panels"].as_array().into_iter().flatten().collect();
        while let Some(panel) = panels.pop() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            if !panel["id"].as_u64().is_some_and(|id| ids.insert(id)) {
                problems.push(format!("{title}: id {} missing or not unique", panel["id"]));
            }
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
            if !matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24) {
                problems.push(format!("{title}: gridPos {grid}"));
            }
            if panel["type"] == "row" {
                // A collapsed row holds its panels.
                panels.extend(panel["panels"].as_array().into_iter().flatten());
                continue;
            }
            let on_variable = |v: &Value| v["datasource"]["uid"] == "${datasource}";
            if !on_variable(panel) {
                problems.push(format!("{title}: panel datasource {}", panel["datasource"]));
            }
            let mut refs = BTreeSet::new();
            let list = panel["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if list.is_empty() {
                problems.push(format!("{title}: no targets"));
            }
            for target in list {
                let expr = target["expr"].as_str().unwrap_or_default();
                if expr.trim().is_empty() {
                    problems.push(format!("{title}: a target has no expr"));
                }
                if !refs.insert(target["refId"].as_str()) {
                    problems.push(format!("{title}: refId {} repeated", target["refId"]));
                }
                if !on_variable(target) {
                    problems.push(format!(
                        "{title}: target datasource {}",
                        target["datasource"]
                    ));
                }
                targets.push(Target {
                    panel: title.clone(),
                    expr: expr.to_string(),
                    legend: target["legendFormat"].as_str().unwrap_or_default().into(),
                });
            }
        }
        let mut variables = Vec::new();
        let mut names = BTreeSet::new();
        for var in json["templating"]["list"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap_or("?").to_string();
            names.insert(name.clone());
            if var["type"] != "query" {
                continue;
            }
            let query = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap_or_default();
            let Some(inner) = query
                .trim()
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
            else {
                problems.push(format!(
                    "variable {name}: not a label_values query: {query}"
                ));
                continue;
            };
            let (selector, label) = match inner.rsplit_once(',') {
                Some((selector, label)) => (Some(selector.trim().to_string()), label),
                None => (None, inner),
            };
            variables.push(Variable {
                name,
                selector,
                label: label.trim().to_string(),
                all_value: var["allValue"].as_str().unwrap_or(".*").to_string(),
            });
        }
        for needed in ["datasource", "tenant"] {
            if !names.contains(needed) {
                problems.push(format!("no `{needed}` variable"));
            }
        }
        assert!(
            problems.is_empty(),
            "{}:\n{}",
            path.display(),
            problems.join("\n")
        );
        targets.reverse();
        Dashboard { targets, variables }
    }
}

/// `text` with `from`, which must occur exactly once, replaced.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "dashboards/prometheus/prometheus.yml should hold `{from}` once; this test rewrites it"
    );
    text.replacen(from, to, 1)
}

/// Sends a request on `client`, checks the status (and the body, if
/// given), then waits [`PACE`].
async fn expect(
    client: &mut Client,
    method: Method,
    path: &str,
    body: &str,
    status: u16,
    want: Option<&str>,
) {
    let reply = client
        .send(method.clone(), path, body.as_bytes().to_vec())
        .await;
    assert_eq!(
        reply.status.as_u16(),
        status,
        "{method} {path}: {}",
        reply.text()
    );
    if let Some(want) = want {
        assert_eq!(reply.text(), want, "{method} {path}");
    }
    tokio::time::sleep(PACE).await;
}

#[test]
fn with_bool_keeps_every_series_a_comparison_would_drop() {
    assert_eq!(
        with_bool(r#"up{job="runner"} == 0"#),
        r#"up{job="runner"} == bool 0"#
    );
    assert_eq!(
        with_bool(r#"sum by (t) (rate(x{outcome!~"ok|guest_4xx"}[5m])) / sum(y) > 0.05"#),
        r#"sum by (t) (rate(x{outcome!~"ok|guest_4xx"}[5m])) / sum(y) > bool 0.05"#
    );
    assert_eq!(with_bool("a >= 1 and b<2"), "a >= bool 1 and b< bool 2");
    assert_eq!(with_bool("a != bool 1"), "a != bool 1");
    assert_eq!(with_bool("a > boolean_metric"), "a > bool boolean_metric");
    assert_eq!(
        with_bool(r#"a{x="<>=", y!="}"} < 3"#),
        r#"a{x="<>=", y!="}"} < bool 3"#
    );
    assert_eq!(
        with_bool(r#"label_replace(a, "d", "\"<", "s", ".*")"#),
        r#"label_replace(a, "d", "\"<", "s", ".*")"#
    );
}

#[test]
fn substitute_replaces_every_variable_or_says_which_is_unknown() {
    let values = BTreeMap::from([("tenant".to_string(), "t0".to_string())]);
    assert_eq!(
        substitute(r#"rate(x{tenant=~"$tenant"}[$__rate_interval])"#, &values).as_deref(),
        Ok(r#"rate(x{tenant=~"t0"}[1m])"#)
    );
    assert_eq!(
        substitute(r#"x{tenant=~"${tenant}"}[$__interval]"#, &values).as_deref(),
        Ok(r#"x{tenant=~"t0"}[15s]"#)
    );
    assert!(substitute(r#"x{tenant=~"$tenants"}"#, &values).is_err());
    assert_eq!(
        substitute(r#"x{path=~"/a$"}"#, &values).as_deref(),
        Ok(r#"x{path=~"/a$"}"#)
    );
}

#[test]
fn legend_labels_lists_the_labels_a_legend_names() {
    assert_eq!(legend_labels("{{tenant}} {{ quota }}"), ["tenant", "quota"]);
    assert!(legend_labels("p99").is_empty());
}
