//! The README's examples, run as written against a runner on loopback, so
//! the README cannot drift from what the binaries do.
//!
//! Every command of every `sh` block is run with `sh -c` in a directory
//! holding what the examples name (`token`, `shop.wasm`, `spin-app.wasm`
//! (guest/spin) and the `spin.toml` the README shows, the request
//! templates file the README shows as `shop.toml`), against one runner
//! started as the quick start starts it (`--tenants 100`, with the admin
//! token), after `export` lines set their variables. Each must exit 0; a
//! comment `# → TEXT` (up to two spaces) is what its output starts with.
//!
//! Changed on the way, and only these: `runner` and `cargo run --release -p
//! loadgen --` become the binaries this test was built with; the addresses
//! `localhost:8080`, `127.0.0.1:8080`, `localhost:9095` and `127.0.0.1:9095`
//! become this runner's (loadgen's default target too, through
//! `LOADGEN_TARGET`); a load of `--duration 10s` (or none) runs for 1s,
//! with `--max-error-rate 0`: every request answered as expected.
//! Not run: what builds (`cargo build`, `cargo test`, `cargo install`),
//! needs root (`sudo`, anywhere in it), a container daemon, systemd or a fuzzer, and
//! `cargo run -p runner`, which this test stands for.

use std::path::Path;
use std::process::Command;

use system_tests::{Runner, TempDir, binary, repo_root, target_dir};

/// Commands that are not run, by how they start.
const NOT_RUN: &[&str] = &[
    "cargo build",
    "cargo test",
    "cargo install",
    "cargo run --release -p runner",
    "docker ",
    "journalctl",
    "cd ",
    "RUSTC_BOOTSTRAP",
];

/// One command of an `sh` block: its text (continuation lines joined) and
/// what its output must start with, if its comment says.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    expect: Option<String>,
}

/// Every command of the `sh` blocks of `readme`, with the `toml` blocks'
/// texts (for files the commands name).
fn examples(readme: &str) -> (Vec<Example>, Vec<String>) {
    let (mut examples, mut tomls) = (Vec::new(), Vec::new());
    let mut block: Option<&str> = None;
    let mut pending: Option<(usize, String)> = None;
    let mut toml = String::new();
    for (n, line) in readme.lines().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            match block {
                None => block = Some(fence.trim()),
                Some(kind) => {
                    if kind == "toml" {
                        tomls.push(std::mem::take(&mut toml));
                    }
                    block = None;
                }
            }
            continue;
        }
        match block {
            Some("toml") => {
                toml.push_str(line);
                toml.push('\n');
            }
            Some("sh") => {
                let (start, mut text) = pending.take().unwrap_or((n + 1, String::new()));
                if let Some(head) = line.strip_suffix('\\') {
                    text.push_str(head);
                    pending = Some((start, text));
                    continue;
                }
                text.push_str(line);
                let (command, comment) = match text.find("  #").or_else(|| text.find("\t#")) {
                    Some(i) => (text[..i].trim().to_string(), text[i..].trim().to_string()),
                    None => (text.trim().to_string(), String::new()),
                };
                if command.is_empty() || command.starts_with('#') {
                    continue;
                }
                let expect = comment
                    .strip_prefix("# → ")
                    .map(|e| e.split("  ").next().unwrap_or_default().to_string());
                examples.push(Example {
                    line: start,
                    command,
                    expect,
                });
            }
            _ => {}
        }
    }
    (examples, tomls)
}

/// The command as this test runs it (see the module docs).
fn as_run(command: &str, runner: &Runner) -> String {
    let loadgen = binary("loadgen");
    let mut text = command
        .replace(
            "cargo run --release -p loadgen --",
            &loadgen.display().to_string(),
        )
        .replace("localhost:8080", &runner.addr.to_string())
        .replace("127.0.0.1:8080", &runner.addr.to_string())
        .replace("localhost:9095", &runner.admin.to_string())
        .replace("127.0.0.1:9095", &runner.admin.to_string())
        .replace("--duration 10s", "--duration 1s");
    if let Some(rest) = text.strip_prefix("runner ") {
        text = format!("{} {rest}", binary("runner").display());
    }
    if text.starts_with(&loadgen.display().to_string()) {
        // Before any pipe, so they reach loadgen. Every request must get
        // the answer it expects from the quick start's runner.
        let at = text.find(" | ").unwrap_or(text.len());
        text.insert_str(at, " --max-error-rate 0");
        if !text.contains("--duration") && !text.contains(" -n ") {
            text.insert_str(at, " --duration 1s");
        }
    }
    text
}

#[test]
fn the_readme_examples_run_on_loopback() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let (examples, tomls) = examples(&readme);
    let dir = TempDir::new();
    let token = dir.path.join("token");
    std::fs::write(&token, "readme-example-token\n").expect("writing the token");
    std::fs::copy(
        target_dir().join("guests/wasm32-wasip2/release/guest_default.wasm"),
        dir.path.join("shop.wasm"),
    )
    .expect("copying a component as shop.wasm");
    std::fs::copy(
        target_dir().join("guests/wasm32-wasip2/release/guest_spin.wasm"),
        dir.path.join("spin-app.wasm"),
    )
    .expect("copying the Spin guest as spin-app.wasm");
    // The request templates the README shows, as the file its command names.
    // The Spin manifest it shows, as spin.toml (beside spin-app.wasm).
    if let Some(manifest) = tomls.iter().find(|t| t.contains("spin_manifest_version")) {
        std::fs::write(dir.path.join("spin.toml"), manifest).expect("writing spin.toml");
    }
    if let Some(templates) = tomls.iter().find(|t| t.contains("[[template]]")) {
        std::fs::write(dir.path.join("shop.toml"), templates).expect("writing shop.toml");
        std::fs::write(dir.path.join("value.bin"), b"a value").expect("writing value.bin");
    }
    let runner = Runner::start(&[
        "--tenants",
        "100",
        "--admin-token-file",
        token.to_str().expect("temp paths are UTF-8"),
    ]);

    // loadgen's default target is the quick start's address.
    let mut env = vec![(
        "LOADGEN_TARGET".to_string(),
        format!("http://{}", runner.addr),
    )];
    let mut ran = 0;
    let mut failures = Vec::new();
    for example in &examples {
        let command = &example.command;
        if NOT_RUN.iter().any(|skip| command.starts_with(skip)) || command.contains("sudo ") {
            continue;
        }
        if let Some(vars) = command.strip_prefix("export ") {
            for pair in vars.split_whitespace() {
                let (name, value) = pair.split_once('=').expect("NAME=value");
                let value = as_run(value, &runner);
                env.push((name.to_string(), value));
            }
            continue;
        }
        let text = as_run(command, &runner);
        let out = run(&text, &dir.path, &env);
        ran += 1;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = if !out.status.success() {
            Some(format!("exited with {}", out.status))
        } else {
            example
                .expect
                .as_ref()
                .filter(|want| !stdout.trim_start().starts_with(want.as_str()))
                .map(|want| format!("printed no {want:?} first"))
        };
        if let Some(why) = why {
            failures.push(format!(
                "README.md:{}: `{command}` {why}\n  ran: {text}\n  stdout: {}\n  stderr: {}",
                example.line,
                stdout.trim_end(),
                stderr.trim_end()
            ));
        }
    }
    assert!(ran >= 20, "only {ran} README examples ran: {examples:#?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run(command: &str, dir: &Path, env: &[(String, String)]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("running {command}: {e}"))
}

#[test]
fn examples_are_read_with_their_expected_output() {
    let readme = "text\n```sh\ncurl x   # → hi  (why)\n# a comment\nrunner a \\\n  b  # plain\n```\n\
                  ```toml\n[[template]]\n```\n";
    let (examples, tomls) = examples(readme);
    let shown: Vec<(usize, &str, Option<&str>)> = examples
        .iter()
        .map(|e| (e.line, e.command.as_str(), e.expect.as_deref()))
        .collect();
    assert_eq!(
        shown,
        [(3, "curl x", Some("hi")), (5, "runner a   b", None)]
    );
    assert_eq!(tomls, ["[[template]]\n"]);
}
