//! Compiling components, away from the threads that serve requests.
//!
//! Compiling a large component takes seconds of CPU and, for a hostile
//! one, gigabytes of memory, so it never runs on a tokio worker. With a
//! compiler program (the runner's own binary, run as `runner __compile`:
//! [`child`]), each compile is a process of its own on one core, stopped
//! past `compile-timeout` and refused memory past `compile-max-memory`; a
//! crash in the compiler costs that upload only. At most `compile-workers`
//! run at once and the rest wait their turn, so however many uploads
//! arrive, the other cores keep serving tenants. The compiled code comes
//! back in wasmtime's serialized form, read by the engine it was compiled
//! for (the same settings, checked by wasmtime as it reads them), and kept
//! in the cache as it is.
//!
//! Without a compiler program (the library embedded, unit tests), a compile
//! runs on a blocking thread, still one at a time per worker, but without
//! the time and memory bounds: a thread cannot be stopped.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use bytesize::ByteSize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine};

/// The argument that makes the runner's binary a compiler ([`child`]).
pub const CHILD_ARG: &str = "__compile";

/// How components are compiled: where, how many at once, within what.
#[derive(Clone, Debug)]
pub struct CompileSettings {
    /// The runner's binary, run as a compiler; `None`: compiled in this
    /// process, on a blocking thread, without the bounds below.
    pub program: Option<PathBuf>,
    /// Compiles that run at once.
    pub workers: usize,
    /// Longest one compile may take.
    pub timeout: Duration,
    /// Most memory (address space) one compile may use.
    pub max_memory: u64,
}

/// The engine settings compiled code depends on, those of
/// [`crate::engine::Runtime`]'s engines but the instance allocator, which
/// compiled code does not depend on (a compiler process must not reserve
/// the pool's address space).
pub fn wasm_config(max_wasm_stack: usize, p3: bool) -> Config {
    let mut wasm = Config::new();
    wasm.consume_fuel(true)
        .epoch_interruption(true)
        .wasm_component_model_async(p3)
        .concurrency_support(p3)
        .wasm_backtrace_max_frames(None)
        .max_wasm_stack(max_wasm_stack)
        .async_stack_size(max_wasm_stack + (512 << 10));
    wasm
}

/// Compiles `bytes` in a compiler process for the engine of `p3`, under
/// `settings`' bounds; returns the compiled code, serialized.
pub async fn in_child(
    program: &std::path::Path,
    bytes: &[u8],
    p3: bool,
    max_wasm_stack: usize,
    settings: &CompileSettings,
) -> wasmtime::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new(program)
        .arg(CHILD_ARG)
        .arg(if p3 { "p3" } else { "p2" })
        .arg(max_wasm_stack.to_string())
        .arg(settings.max_memory.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A compile past its time, or a runner that stops waiting for it,
        // ends the process.
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the compiler ({})", program.display()))?;
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let run = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let write = async {
            // A compiler that stops reading has failed; what it says is
            // the error, not the broken pipe.
            let _ = stdin.write_all(bytes).await;
            drop(stdin);
        };
        let (_, read_out, read_err) = tokio::join!(
            write,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err)
        );
        read_out.and(read_err)?;
        let status = child.wait().await?;
        std::io::Result::Ok((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(settings.timeout, run).await {
        Ok(finished) => finished.context("running the compiler")?,
        Err(_) => wasmtime::bail!(
            "compiling the component took longer than compile-timeout ({}); it was stopped. \
             Raise --compile-timeout, or make the component smaller",
            humantime::format_duration(settings.timeout)
        ),
    };
    if status.success() {
        return Ok(out);
    }
    let said = String::from_utf8_lossy(&err);
    let said = said.trim();
    if out_of_memory(&status, said) {
        wasmtime::bail!(
            "compiling the component needed more than compile-max-memory ({}); it was stopped. \
             Raise --compile-max-memory, or make the component smaller",
            ByteSize(settings.max_memory).display().iec()
        );
    }
    if status.code() == Some(1) && !said.is_empty() {
        return Err(wasmtime::format_err!("{said}"));
    }
    wasmtime::bail!("the compiler failed ({status}){}", {
        let last = said.lines().last().unwrap_or_default();
        if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        }
    })
}

/// Whether a compiler that failed so ran out of the memory it was given:
/// an allocation refused under its address-space limit aborts the process
/// (Rust's "memory allocation of N bytes failed"), or, where the kernel
/// ran out first, kills it.
fn out_of_memory(status: &std::process::ExitStatus, said: &str) -> bool {
    use std::os::unix::process::ExitStatusExt as _;
    const SIGABRT: i32 = 6;
    const SIGKILL: i32 = 9;
    match status.signal() {
        Some(SIGABRT) => said.contains("memory allocation of"),
        Some(SIGKILL) => true,
        _ => said.contains("memory allocation of") || said.contains("out of memory"),
    }
}

/// `runner __compile p2|p3 MAX_WASM_STACK MAX_MEMORY`: reads a component
/// from stdin and writes its compiled code to stdout, on one thread,
/// within MAX_MEMORY bytes of address space. Errors go to stderr, with
/// exit status 1.
pub fn child(args: &[String]) -> ExitCode {
    match compile_stdin(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn compile_stdin(args: &[String]) -> wasmtime::Result<()> {
    let [flavor, stack, memory] = args else {
        wasmtime::bail!("usage: runner {CHILD_ARG} p2|p3 MAX_WASM_STACK MAX_MEMORY");
    };
    let p3 = flavor == "p3";
    let stack = stack.parse::<usize>().context("MAX_WASM_STACK")?;
    let memory = memory.parse::<u64>().context("MAX_MEMORY")?;
    rlimit::setrlimit(rlimit::Resource::AS, memory, memory)
        .context("limiting the compiler's memory")?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading the component")?;
    let mut config = wasm_config(stack, p3);
    // One core per compile: `compile-workers` says how many.
    config.parallel_compilation(false);
    let engine = Engine::new(&config).context("configuring the wasmtime engine")?;
    let compiled = engine
        .precompile_component(&bytes)
        .context("compiling the component")?;
    std::io::stdout()
        .write_all(&compiled)
        .and_then(|()| std::io::stdout().flush())
        .context("writing the compiled component")?;
    Ok(())
}
