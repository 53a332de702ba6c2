//! `runner`: parse the command line, set up logging, build and serve (or,
//! for `runner tenant ...`, talk to a runner's admin API).

use std::process::ExitCode;

use anyhow::Context as _;
use runner::Runner;
use runner::config::{Config, Invocation};
use runner::settings::LogFormat;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // The runner compiles components by running itself as a compiler.
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(runner::engine::compile::CHILD_ARG)) {
        let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        return runner::engine::compile::child(&rest);
    }
    disable_library_backtraces();
    let (cli, mut config) = match Invocation::from_args() {
        Ok(Invocation::Serve(cli, config)) => (*cli, *config),
        Ok(Invocation::Tenant(command, matches)) => return tenant(&command, &matches),
        Ok(Invocation::Print(text)) => {
            use std::io::Write as _;
            return match std::io::stdout().write_all(&text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&anyhow::Error::new(e).context("writing to stdout")),
            };
        }
        Err(e) => return fail(&e),
    };
    // As servers do: take the hard limit on descriptors as the soft one, then
    // make both listeners' connection caps fit it.
    let descriptors = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let lowered = match config.fit_descriptors(descriptors) {
        Ok(lowered) => lowered,
        Err(e) => return fail(&e),
    };
    // This very binary, even once an upgrade has replaced its file: the
    // compiled code must be for this wasmtime.
    let own = std::path::Path::new("/proc/self/exe");
    config.engine.compile.program = if own.exists() {
        Some(own.to_path_buf())
    } else {
        std::env::current_exe().ok()
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            return fail(&anyhow::anyhow!(
                "--log {:?} is not a log filter: {e}",
                cli.log
            ));
        }
    };
    // Log lines are written by a thread of their own: a flood, or a stderr
    // read slowly, never blocks a worker running guests. When the writer
    // falls behind, lines are dropped rather than queued without bound.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 << 10)
        .finish(std::io::stderr());
    let log_drops = writer.error_counter();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.server.log_format {
        LogFormat::Text => subscriber
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Fields at the top level, beside timestamp, level and target.
        LogFormat::Json => subscriber
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = cli.workers {
        builder.worker_threads(workers.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let log_drops = move || log_drops.dropped_lines() as u64;
    match runtime.block_on(serve(cli, config, lowered, log_drops)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn serve(
    cli: runner::config::Cli,
    config: Config,
    lowered: Option<String>,
    log_drops: impl Fn() -> u64 + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let tenants = config.tenants.len();
    let warnings = config.warnings();
    let store = config.store.describe();
    let runner = Runner::build(config).await?;
    runner.count_log_drops(log_drops);
    // Said once the tenants loaded, so a start-up error stays the first line.
    // A default fitted to the descriptor limit is news, not a warning: the
    // operator asked for nothing that was refused.
    if let Some(lowered) = lowered {
        tracing::info!("{lowered}");
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let listener = TcpListener::bind(cli.server.listen)
        .await
        .with_context(|| format!("binding --listen {}", cli.server.listen))?;
    let admin = TcpListener::bind(cli.server.metrics_listen)
        .await
        .with_context(|| format!("binding --metrics-listen {}", cli.server.metrics_listen))?;
    // Parseable lines for scripts and tests, on stdout.
    let scheme = if cli.server.tls_cert.0.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    println!("metrics on http://{}", admin.local_addr()?);
    tracing::info!(tenants, %store, "runner ready");
    reload_on_hangup(runner.reloader());
    runner.serve(listener, admin, shutdown_signal()).await
}

/// `runner tenant ...`: one client call on a small runtime of its own.
fn tenant(command: &runner::client::TenantCommand, matches: &clap::ArgMatches) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(runner::client::run(command, matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// On SIGHUP, reads the command line's configuration again (the --config
/// file, with the same flags) and applies it; a bad one changes nothing
/// and the log says why. Taking SIGHUP also keeps it from ending the
/// process, as it would by default.
fn reload_on_hangup(mut reloader: runner::Reloader) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let reloaded = match Config::try_from_args(std::env::args_os()) {
                Ok((_, config)) => reloader.reload(config).await,
                Err(e) => Err(e),
            };
            match reloaded {
                Ok(changes) => {
                    let count = |c: runner::fleet::Change| {
                        changes.iter().filter(|(_, change)| *change == c).count()
                    };
                    use runner::fleet::Change::*;
                    tracing::info!(
                        created = count(Created),
                        updated = count(Updated),
                        removed = count(Removed),
                        "reloaded the configuration"
                    );
                }
                Err(e) => tracing::error!("reload refused, nothing changed: {e:#}"),
            }
        }
    });
    #[cfg(not(unix))]
    drop(reloader);
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn fail(error: &anyhow::Error) -> ExitCode {
    // clap's own errors (and --help, --version) print themselves.
    if let Some(clap) = error.downcast_ref::<clap::Error>() {
        let _ = clap.print();
        return if clap.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

/// Error values must not capture backtraces on the request path (a guest
/// trap creates one); RUST_BACKTRACE=1 in the environment would make every
/// one of them walk the stack. Panics keep their backtraces.
#[expect(unsafe_code, reason = "set_var before any other thread exists")]
fn disable_library_backtraces() {
    // SAFETY: called first thing in main, while the process has one thread.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
}
