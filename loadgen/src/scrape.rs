//! Runner-side figures from its Prometheus endpoint (`--scrape`).
//!
//! The text exposition format is parsed minimally: comments are skipped, and a
//! metric's value is the sum of its samples over all label sets. The report
//! holds deltas between a scrape before and one after the run. A counter the
//! runner has not touched yet is often not exported at all, so a metric absent
//! *before* counts as 0; one absent *after* is reported as absent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::Serialize;

use crate::conn::{Conn, Endpoint};

/// Total requests handled by the runner.
pub const REQUESTS: &str = "runner_requests_total";
/// Total guest fuel consumed.
pub const FUEL: &str = "runner_fuel_consumed_total";
/// Total guest traps.
pub const TRAPS: &str = "runner_traps_total";
/// Histogram of instance creation time.
pub const INSTANTIATION: &str = "runner_instantiation_duration_seconds";

/// One sample line: name, labels in order, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text format; lines that are not samples are errors.
    pub fn parse(text: &str) -> anyhow::Result<Exposition> {
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample =
                parse_sample(line).with_context(|| format!("metrics line {}: {line:?}", n + 1))?;
            samples.push(sample);
        }
        Ok(Exposition { samples })
    }

    /// The sum of `name`'s samples over all label sets; `None` if it has none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self.samples.iter().filter(|s| s.name == name) {
            found = true;
            total += s.value;
        }
        found.then_some(total)
    }

    /// The cumulative buckets of histogram `name` (its `{name}_bucket`
    /// samples), summed over all other labels and keyed by upper bound.
    pub fn buckets(&self, name: &str) -> Option<Vec<(f64, f64)>> {
        let bucket = format!("{name}_bucket");
        let mut by_bound: Vec<(f64, f64)> = Vec::new();
        for s in self.samples.iter().filter(|s| s.name == bucket) {
            let Some(le) = s
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .and_then(|(_, v)| parse_float(v))
            else {
                continue;
            };
            match by_bound.iter_mut().find(|(b, _)| *b == le) {
                Some((_, count)) => *count += s.value,
                None => by_bound.push((le, s.value)),
            }
        }
        if by_bound.is_empty() {
            return None;
        }
        by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(by_bound)
    }
}

fn parse_float(s: &str) -> Option<f64> {
    // Rust accepts "inf", "+Inf", "NaN" in any case, as Prometheus writes them.
    s.trim().parse().ok()
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .context("no value")?;
    let name = &line[..name_end];
    ensure!(!name.is_empty(), "no metric name");
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let close = loop {
            while chars
                .next_if(|(_, c)| c.is_whitespace() || *c == ',')
                .is_some()
            {}
            let (start, c) = chars.next().context("unterminated labels")?;
            if c == '}' {
                break start;
            }
            let mut key_end = start + c.len_utf8();
            while let Some((i, _)) = chars.next_if(|(_, c)| *c != '=') {
                key_end = i + 1;
            }
            let key = inner[start..key_end].trim();
            ensure!(chars.next().is_some(), "label {key:?} has no value");
            ensure!(
                chars.next().map(|(_, c)| c) == Some('"'),
                "label {key:?} value is not quoted"
            );
            let mut value = String::new();
            loop {
                match chars.next().context("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().context("unterminated escape")?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key.to_owned(), value));
        };
        rest = &inner[close + 1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .context("no value after the name")?;
    let value = parse_float(value).with_context(|| format!("value {value:?} is not a number"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Estimates quantile `q` from cumulative buckets `(upper bound, count)`
/// sorted by bound and ending with `+Inf`, as Prometheus's
/// `histogram_quantile` does: find the bucket holding rank `q · total` and
/// interpolate linearly within it (from 0 for the first bucket). A rank in the
/// `+Inf` bucket gives the highest finite bound. `None` without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_bound, total) = buckets.last()?;
    if last_bound != f64::INFINITY || total <= 0.0 || buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|&(_, count)| count >= rank)?;
    if i == buckets.len() - 1 {
        return Some(buckets[i - 1].0);
    }
    let (end, count) = buckets[i];
    let (start, below) = if i == 0 {
        (0.0f64.min(end), 0.0)
    } else {
        buckets[i - 1]
    };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * ((rank - below) / in_bucket))
}

/// Runner-side figures for the run, from two scrapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunnerFigures {
    /// The metrics URL.
    pub url: String,
    /// Δ `runner_requests_total`.
    pub requests: Option<f64>,
    /// Δ `runner_fuel_consumed_total` / Δ requests.
    pub fuel_per_request: Option<f64>,
    /// Δ `runner_traps_total`.
    pub traps: Option<f64>,
    /// p99 of Δ `runner_instantiation_duration_seconds`, in seconds.
    pub instantiation_p99_seconds: Option<f64>,
    /// Why a figure is missing (absent metric, failed scrape).
    pub notes: Vec<String>,
}

impl RunnerFigures {
    /// Computes the deltas between `before` and `after`; a failed scrape
    /// leaves every figure empty with a note saying why.
    pub fn from_scrapes(
        url: String,
        before: anyhow::Result<Exposition>,
        after: anyhow::Result<Exposition>,
    ) -> RunnerFigures {
        let mut figures = RunnerFigures {
            url,
            ..RunnerFigures::default()
        };
        let (before, after) = match (before, after) {
            (Ok(b), Ok(a)) => (b, a),
            (b, a) => {
                for (when, result) in [("before", b), ("after", a)] {
                    if let Err(e) = result {
                        figures
                            .notes
                            .push(format!("scrape {when} the run failed: {e:#}"));
                    }
                }
                return figures;
            }
        };
        let mut delta = |name: &str| -> Option<f64> {
            let d = after.sum(name).map(|a| a - before.sum(name).unwrap_or(0.0));
            if d.is_none() {
                figures.notes.push(format!("{name} absent"));
            }
            d
        };
        let requests = delta(REQUESTS);
        let fuel = delta(FUEL);
        let traps = delta(TRAPS);
        figures.requests = requests;
        figures.traps = traps;
        figures.fuel_per_request = match (fuel, requests) {
            (Some(f), Some(r)) if r > 0.0 => Some(f / r),
            (Some(_), Some(_)) => {
                figures
                    .notes
                    .push("no runner requests: fuel per request undefined".into());
                None
            }
            _ => None,
        };
        figures.instantiation_p99_seconds = match after.buckets(INSTANTIATION) {
            None => {
                figures.notes.push(format!("{INSTANTIATION}_bucket absent"));
                None
            }
            Some(after_buckets) => {
                let before_buckets: BTreeMap<u64, f64> = before
                    .buckets(INSTANTIATION)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(b, c)| (b.to_bits(), c))
                    .collect();
                let deltas: Vec<(f64, f64)> = after_buckets
                    .into_iter()
                    .map(|(b, c)| (b, c - before_buckets.get(&b.to_bits()).unwrap_or(&0.0)))
                    .collect();
                let p99 = histogram_quantile(0.99, &deltas);
                if p99.is_none() {
                    figures
                        .notes
                        .push("no instantiations during the run: p99 undefined".into());
                }
                p99
            }
        };
        figures
    }
}

/// Reads the metrics page at `endpoint`.
pub async fn fetch(endpoint: &Endpoint, timeout: Duration) -> anyhow::Result<Exposition> {
    let text = tokio::time::timeout(timeout, get(endpoint))
        .await
        .with_context(|| format!("reading {endpoint} timed out"))?
        .with_context(|| format!("reading {endpoint}"))?;
    Exposition::parse(&text).with_context(|| format!("parsing {endpoint}"))
}

async fn get(endpoint: &Endpoint) -> anyhow::Result<String> {
    let addr: SocketAddr = endpoint.resolve().await?;
    let host = format!("Host: {}\r\n", endpoint.authority());
    let mut conn = Conn::open(addr, host.as_bytes())
        .await
        .context("connecting")?;
    let path = if endpoint.path.is_empty() {
        "/"
    } else {
        &endpoint.path
    };
    let mut body = Vec::new();
    let status = conn
        .send("GET", path.as_bytes(), b"", b"", &mut body)
        .await?;
    ensure!((200..300).contains(&status), "status {status}");
    String::from_utf8(body).context("metrics are not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_labels_and_escapes() {
        let e = Exposition::parse(
            "# HELP x help\n# TYPE x counter\n\
             x 1\n\
             x{a=\"b\",c=\"d, }e\"} 2.5 1700000000\n\
             y{q=\"\\\"quoted\\\" \\\\ \\n\",} +Inf\n\
             z{} 3\n",
        )
        .expect("valid");
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.sum("x"), Some(3.5));
        assert_eq!(
            e.samples[1].labels,
            [("a".into(), "b".into()), ("c".into(), "d, }e".into())]
        );
        assert_eq!(e.samples[2].labels[0].1, "\"quoted\" \\ \n");
        assert_eq!(e.sum("y"), Some(f64::INFINITY));
        assert_eq!(e.sum("z"), Some(3.0));
        assert_eq!(e.sum("absent"), None);
        assert!(Exposition::parse("x{a=\"b\" 1").is_err());
        assert!(Exposition::parse("x one").is_err());
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let b = [
            (0.001, 50.0),
            (0.01, 98.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // Rank 99 lies in (0.01, 0.1], which holds ranks 99 and 100: halfway.
        let p99 = histogram_quantile(0.99, &b).expect("has observations");
        assert!((p99 - 0.055).abs() < 1e-12, "{p99}");
        // Rank 25 in the first bucket interpolates from 0.
        let p25 = histogram_quantile(0.25, &b).expect("has observations");
        assert!((p25 - 0.0005).abs() < 1e-12, "{p25}");
        // A rank in +Inf gives the highest finite bound.
        let tail = [(1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.99, &tail), Some(1.0));
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.5, &[(1.0, 5.0)]), None);
    }

    const BEFORE: &str = "\
# TYPE runner_requests_total counter
runner_requests_total{tenant=\"t0\",outcome=\"ok\"} 100
runner_requests_total{tenant=\"t1\",outcome=\"ok\"} 50
runner_fuel_consumed_total{tenant=\"t0\"} 1000000
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"0.001\"} 10
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"0.01\"} 10
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"0.1\"} 10
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"+Inf\"} 10
runner_instantiation_duration_seconds_sum{tenant=\"t0\"} 0.005
runner_instantiation_duration_seconds_count{tenant=\"t0\"} 10
";

    const AFTER: &str = "\
# TYPE runner_requests_total counter
runner_requests_total{tenant=\"t0\",outcome=\"ok\"} 1100
runner_requests_total{tenant=\"t1\",outcome=\"ok\"} 150
runner_requests_total{tenant=\"t1\",outcome=\"trap\"} 50
runner_fuel_consumed_total{tenant=\"t0\"} 7000000
runner_fuel_consumed_total{tenant=\"t1\"} 3000000
runner_traps_total{tenant=\"t1\",kind=\"fuel\"} 50
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"0.001\"} 40
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"0.01\"} 78
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"0.1\"} 80
runner_instantiation_duration_seconds_bucket{tenant=\"t0\",le=\"+Inf\"} 80
runner_instantiation_duration_seconds_bucket{tenant=\"t1\",le=\"0.001\"} 20
runner_instantiation_duration_seconds_bucket{tenant=\"t1\",le=\"0.01\"} 30
runner_instantiation_duration_seconds_bucket{tenant=\"t1\",le=\"0.1\"} 30
runner_instantiation_duration_seconds_bucket{tenant=\"t1\",le=\"+Inf\"} 30
";

    #[test]
    fn deltas_from_two_scrapes() {
        let before = Exposition::parse(BEFORE).expect("valid");
        let after = Exposition::parse(AFTER).expect("valid");
        let f = RunnerFigures::from_scrapes("u".into(), Ok(before), Ok(after));
        // (1100 + 150 + 50) - (100 + 50)
        assert_eq!(f.requests, Some(1150.0));
        // (7e6 + 3e6 - 1e6) / 1150
        assert_eq!(f.fuel_per_request, Some(9_000_000.0 / 1150.0));
        // Absent before: counted from 0.
        assert_eq!(f.traps, Some(50.0));
        assert_eq!(f.notes, Vec::<String>::new());
        // Bucket deltas: ≤1ms 50, ≤10ms 98, ≤100ms 100, +Inf 100 → 0.055.
        let p99 = f.instantiation_p99_seconds.expect("has observations");
        assert!((p99 - 0.055).abs() < 1e-12, "{p99}");
    }

    #[test]
    fn absent_metrics_and_failed_scrapes_are_noted() {
        let empty = || Exposition::parse("# nothing\n");
        let f = RunnerFigures::from_scrapes("u".into(), empty(), empty());
        assert_eq!(
            (f.requests, f.traps, f.fuel_per_request),
            (None, None, None)
        );
        assert_eq!(
            f.notes,
            [
                "runner_requests_total absent",
                "runner_fuel_consumed_total absent",
                "runner_traps_total absent",
                "runner_instantiation_duration_seconds_bucket absent",
            ]
        );
        let f = RunnerFigures::from_scrapes("u".into(), Err(anyhow::anyhow!("refused")), empty());
        assert_eq!(f.notes, ["scrape before the run failed: refused"]);
    }
}
