//! Test harness: a runner in this process, on port 0, built from the same
//! arguments the binary takes, with its own metrics registry, its own tokio
//! runtime and its own log (printed if the test fails). The HTTP client and
//! tenants files come from the system tests' helpers.

#![allow(dead_code, reason = "each test uses a different part")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use system_tests::Tenants;
pub use system_tests::http::{Client, chunked_put, get, get_with, raw, raw_for, request};
use system_tests::probe;
pub use system_tests::probe::Observed;

/// A runner serving in this process; stopped on drop.
pub struct InProcess {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    output: Arc<Mutex<String>>,
    stop: Option<oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
    _config: Option<Tenants>,
}

impl InProcess {
    /// Starts a runner with the binary's `args` (plus port-0 listeners).
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(args, None)
    }

    /// Starts a runner with a tenants file.
    pub fn start_with(tenants: &Tenants, args: &[&str]) -> Self {
        let path = tenants.write();
        let mut all = vec!["--config", path.to_str().expect("temp paths are UTF-8")];
        all.extend_from_slice(args);
        Self::spawn(&all, Some(tenants.clone()))
    }

    fn spawn(args: &[&str], config: Option<Tenants>) -> Self {
        let mut all = vec![
            "runner",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        let (cli, mut config_parsed) = runner::config::Config::try_from_args(all)
            .unwrap_or_else(|e| panic!("the runner refused {args:?}: {e:#}"));
        // As the binary does: compiles in processes of its own.
        config_parsed.engine.compile.program = Some(env!("CARGO_BIN_EXE_runner").into());
        let output = Arc::new(Mutex::new(String::new()));
        let dispatch = log_capture(output.clone());
        // A runtime of its own, as the binary has: the runner's tasks and
        // log lines stay apart from the test's and other runners'.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.workers.unwrap_or(2))
            .enable_all()
            .on_thread_start(move || {
                // Worker threads live as long as the runtime; so does this.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .expect("building the runner's runtime");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        rt.spawn(async move {
            let started = async {
                let runner = runner::Runner::build(config_parsed).await?;
                let listener = TcpListener::bind(cli.server.listen).await?;
                let admin = TcpListener::bind(cli.server.metrics_listen).await?;
                anyhow::Ok((runner, listener, admin))
            };
            match started.await {
                Ok((runner, listener, admin)) => {
                    let addrs = (listener.local_addr(), admin.local_addr());
                    let _ = ready_tx.send(Ok(addrs));
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    if let Err(e) = runner.serve(listener, admin, shutdown).await {
                        tracing::error!("serve failed: {e:#}");
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            }
        });
        let (addr, admin) = match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok((Ok(addr), Ok(admin)))) => (addr, admin),
            Ok(Ok(_)) => panic!("the runner's listeners have no address"),
            Ok(Err(e)) => panic!("the runner did not start: {e}\n{}", output.lock()),
            Err(_) => panic!("the runner did not start in 60s:\n{}", output.lock()),
        };
        Self {
            addr,
            admin,
            output,
            stop: Some(stop),
            rt: Some(rt),
            _config: config,
        }
    }
}

impl probe::Observed for InProcess {
    fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    fn log(&self) -> &Mutex<String> {
        &self.output
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.rt.take() {
            // Dropping a runtime may not block inside the test's own.
            rt.shutdown_background();
        }
        if std::thread::panicking() {
            eprintln!("--- runner output ---\n{}", self.output.lock());
        }
    }
}

/// A subscriber that writes the runner's log, as the binary formats it at
/// `info`, into `output`.
fn log_capture(output: Arc<Mutex<String>>) -> tracing::Dispatch {
    let writer = move || Sink(output.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    tracing::Dispatch::new(subscriber)
}

struct Sink(Arc<Mutex<String>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until data directory `data` is free: a dropped runner's runtime
/// shuts down in the background, and the directory is free once its lock
/// is (at most 30 s).
pub async fn until_unlocked(data: &std::path::Path) {
    let lock = std::fs::File::open(data.join("runner.lock")).expect("the data directory's lock");
    for _ in 0..1500 {
        if lock.try_lock().is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Asserts how many instances `tenant` created, and how many of its
/// requests ran on an instance kept from an earlier one.
pub async fn assert_instances(r: &InProcess, tenant: &str, created: f64, reused: f64) {
    let labels = format!("tenant=\"{tenant}\"");
    assert_eq!(
        (
            r.metric("runner_instances_created_total", &labels).await,
            r.metric("runner_instances_reused_total", &labels).await,
        ),
        (created, reused),
        "{tenant}: instances created, requests on a reused instance"
    );
}
