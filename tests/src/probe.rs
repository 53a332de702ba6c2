//! Waiting on a runner from outside: its metrics over HTTP, its log lines.
//! A test's way to know that requests it started are really in flight,
//! however slow the machine, instead of sleeping.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::http::get;

/// The sum of a metric's samples whose label text contains `labels`.
pub async fn metric(admin: SocketAddr, name: &str, labels: &str) -> f64 {
    let text = get(admin, "/metrics").await.text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until a metric (summed as in [`metric`]) reaches `value`.
pub async fn wait_for_metric(admin: SocketAddr, name: &str, labels: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = metric(admin, name, labels).await;
        if now >= value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{labels}}} stayed at {now}, short of {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for a line of `output` containing `needle` and returns it.
pub fn wait_for_log(output: &Mutex<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = output.lock().lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line contains {needle:?}:\n{}",
            output.lock()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a test can watch of a running runner, in-process or a process: its
/// admin listener and its log. The methods come with it.
pub trait Observed {
    fn admin_addr(&self) -> SocketAddr;
    fn log(&self) -> &Mutex<String>;

    /// The log so far.
    fn output(&self) -> String {
        self.log().lock().clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    fn wait_for_log(&self, needle: &str) -> String {
        wait_for_log(self.log(), needle)
    }

    /// The sum of a metric's samples whose label text contains `labels`.
    fn metric(&self, name: &str, labels: &str) -> impl Future<Output = f64> {
        metric(self.admin_addr(), name, labels)
    }

    /// Waits until a metric (summed as in [`Observed::metric`]) reaches
    /// `value`.
    fn wait_for_metric(&self, name: &str, labels: &str, value: f64) -> impl Future<Output = ()> {
        wait_for_metric(self.admin_addr(), name, labels, value)
    }
}
