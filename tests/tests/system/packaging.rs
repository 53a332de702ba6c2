//! What ships beside the binary: the container image (`Dockerfile`), the
//! systemd unit and its environment file (`packaging/systemd/`), and the
//! fleet's compose file that builds the image.
//!
//! - The Dockerfile builds with rust-toolchain.toml's Rust, and its two
//!   stages are of one Debian release.
//! - Every `RUNNER_*` variable those files name is one the runner reads.
//! - The unit passes `systemd-analyze verify` (Debian's `systemd` package;
//!   without it the test says it skipped, unless `RUNNER_REQUIRE_SYSTEMD=1`,
//!   as CI sets), reloads with SIGHUP, writes where its sandbox lets it, and
//!   sets nothing wasmtime cannot run under.
//! - The image builds, runs as its own user, answers on both ports, is
//!   healthy by its own HEALTHCHECK and keeps data across a restart: only
//!   where docker or podman answers (the build takes minutes); elsewhere the
//!   test says it skipped, unless `RUNNER_REQUIRE_CONTAINER=1`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use system_tests::http::{request, try_get};
use system_tests::{TempDir, binary, repo_root};

const UNIT: &str = "packaging/systemd/runner.service";
const UNIT_ENV: &str = "packaging/systemd/runner.env";
const FLEET: &str = "dashboards/fleet/compose.yaml";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn the_image_builds_with_the_toolchain_files_rust_on_one_debian_release() {
    let channel = read("rust-toolchain.toml")
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("rust-toolchain.toml names a channel");
    let dockerfile = read("Dockerfile");
    let arg = |name: &str| {
        dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("the Dockerfile has no `ARG {name}=...`"))
            .trim()
            .to_string()
    };
    assert_eq!(
        arg("RUST_VERSION"),
        channel,
        "the Dockerfile's RUST_VERSION and rust-toolchain.toml's channel must be one version"
    );
    assert!(!arg("DEBIAN_RELEASE").is_empty());
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        stages,
        [
            "rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build",
            "debian:${DEBIAN_RELEASE}-slim"
        ],
        "the builder and the runtime stage must take their Rust and Debian from the ARGs"
    );
}

#[test]
fn every_runner_variable_the_packaging_names_is_one_the_runner_reads() {
    // Setting names come from the help (`[env: RUNNER_X=]`); the admin
    // token's variable, read without a flag, is named in its text.
    let mut known = BTreeSet::new();
    for args in [&["--help"][..], &["tenant", "--help"]] {
        let out = Command::new(binary("runner"))
            .args(args)
            .output()
            .expect("running runner --help");
        assert!(out.status.success(), "runner {args:?} failed");
        known.extend(runner_variables(&String::from_utf8_lossy(&out.stdout)));
    }
    assert!(known.contains("RUNNER_METRICS_LISTEN"), "{known:?}");
    assert!(known.contains("RUNNER_ADMIN_TOKEN"), "{known:?}");
    for file in ["Dockerfile", UNIT, UNIT_ENV, FLEET] {
        let named = runner_variables(&read(file));
        assert!(!named.is_empty(), "{file} names no RUNNER_ variable");
        let unknown: Vec<_> = named.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{file} names variables the runner does not read: {unknown:?}"
        );
    }
}

/// Every `RUNNER_X` word in `text`.
fn runner_variables(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("RUNNER_") && w.len() > "RUNNER_".len())
        .map(str::to_string)
        .collect()
}

/// The unit's `Key=value` lines, in order (comments skipped).
fn unit_directives() -> Vec<(String, String)> {
    read(UNIT)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{UNIT}: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn the_unit_reloads_with_sighup_writes_only_its_own_directories_and_lets_wasmtime_jit() {
    let directives = unit_directives();
    let one = |key: &str| -> Option<&str> {
        let all: Vec<_> = directives.iter().filter(|(k, _)| k == key).collect();
        assert!(all.len() <= 1, "{key} is set {} times", all.len());
        all.first().map(|(_, v)| v.as_str())
    };
    // SIGHUP reloads the --config file, SIGTERM drains.
    let exec = one("ExecStart").expect("ExecStart");
    assert!(
        exec.starts_with("/usr/local/bin/runner --config "),
        "{exec}"
    );
    assert_eq!(one("ExecReload"), Some("/bin/kill -HUP $MAINPID"));
    assert_eq!(one("KillSignal"), Some("SIGTERM"));
    assert_eq!(
        one("EnvironmentFile"),
        Some("-/etc/runner/runner.env"),
        "an optional environment file"
    );
    // Under ProtectSystem=strict the data and cache directories must be
    // the ones systemd makes writable for the service.
    assert_eq!(one("ProtectSystem"), Some("strict"));
    let environment = one("Environment").expect("Environment");
    let state = one("StateDirectory").expect("StateDirectory");
    let cache = one("CacheDirectory").expect("CacheDirectory");
    for expected in [
        format!("RUNNER_DATA_DIR=/var/lib/{state}"),
        format!("RUNNER_CACHE_DIR=/var/cache/{cache}"),
    ] {
        assert!(
            environment.split_whitespace().any(|kv| kv == expected),
            "Environment={environment} lacks {expected}"
        );
    }
    // wasmtime maps the code it compiles executable; the instance pool
    // reserves terabytes of address space; process metrics read /proc/stat.
    for key in [
        "MemoryDenyWriteExecute",
        "LimitAS",
        "LimitDATA",
        "ProcSubset",
    ] {
        assert_eq!(one(key), None, "{key} would stop the runner");
    }
    let nofile: u64 = one("LimitNOFILE")
        .expect("LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    assert!(nofile >= 65_536, "LimitNOFILE={nofile}");
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = on_path("systemd-analyze") else {
        assert_ne!(
            std::env::var("RUNNER_REQUIRE_SYSTEMD").as_deref(),
            Ok("1"),
            "RUNNER_REQUIRE_SYSTEMD=1, but systemd-analyze is not on PATH \
             (Debian: apt-get install systemd)"
        );
        eprintln!("skipped: systemd-analyze is not on PATH (Debian: apt-get install systemd)");
        return;
    };
    // verify checks that ExecStart's program exists: the one built here
    // stands in for /usr/local/bin/runner.
    let unit = read(UNIT);
    let installed = "\nExecStart=/usr/local/bin/runner ";
    assert!(unit.contains(installed), "{UNIT}: no {installed:?}");
    let built = binary("runner");
    let unit = unit.replace(
        installed,
        &format!("\nExecStart={} ", built.to_str().expect("UTF-8 path")),
    );
    let dir = TempDir::new();
    let path = dir.path.join("runner.service");
    std::fs::write(&path, unit).expect("writing the unit");
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
    // It exits 0 on unknown keys and bad values too, and says so, naming
    // the file: none of that may concern this unit.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("runner.service"))
        .collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify on {UNIT}:\n{}",
        about_unit.join("\n")
    );
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// docker or podman, whichever answers `info` (its daemon or service up).
fn container_tool() -> Option<PathBuf> {
    let found = ["docker", "podman"]
        .into_iter()
        .filter_map(on_path)
        .find(|tool| {
            Command::new(tool)
                .arg("info")
                .output()
                .is_ok_and(|out| out.status.success())
        });
    if found.is_none() {
        assert_ne!(
            std::env::var("RUNNER_REQUIRE_CONTAINER").as_deref(),
            Ok("1"),
            "RUNNER_REQUIRE_CONTAINER=1, but neither docker nor podman answers `info`"
        );
        eprintln!("skipped: no docker or podman whose daemon answers `info`");
    }
    found
}

/// Runs `tool args`; its stdout, trimmed; panics with its output on failure.
fn run(tool: &Path, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", tool.display()));
    check(&out, tool, args)
}

fn check(out: &Output, tool: &Path, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{}\n{}",
        tool.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image and its container, removed on drop (the volume with it).
struct Image {
    tool: PathBuf,
    tag: String,
    container: Option<String>,
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Some(id) = &self.container {
            if std::thread::panicking()
                && let Ok(out) = Command::new(&self.tool).args(["logs", id]).output()
            {
                eprintln!(
                    "container log:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let _ = Command::new(&self.tool)
                .args(["rm", "--force", "--volumes", id])
                .output();
        }
        let _ = Command::new(&self.tool).args(["rmi", &self.tag]).output();
    }
}

/// The host address a container port is published on.
fn published(image: &Image, id: &str, port: &str) -> SocketAddr {
    let out = run(&image.tool, &["port", id, port]);
    out.lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("`port {id} {port}` said {out:?}"))
}

/// Waits for `path` on `addr` to answer (a published port accepts before
/// the runner inside listens).
async fn answer(addr: SocketAddr, path: &str) -> system_tests::http::Reply {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(reply) = try_get(addr, path).await {
            return reply;
        }
        assert!(Instant::now() < deadline, "{addr}{path} never answered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_its_own_user_answers_is_healthy_and_keeps_data() {
    let Some(tool) = container_tool() else {
        return;
    };
    let podman = tool.ends_with("podman");
    let mut image = Image {
        tool: tool.clone(),
        tag: format!("runner-packaging-test:{}", std::process::id()),
        container: None,
    };
    // Podman keeps HEALTHCHECK only in Docker's image format.
    let mut build = vec!["build", "--tag", &image.tag];
    if podman {
        build.extend(["--format", "docker"]);
    }
    build.push(".");
    run(&tool, &build);
    let id = run(
        &tool,
        &[
            "run",
            "--detach",
            "--publish",
            "127.0.0.1::8080",
            "--publish",
            "127.0.0.1::9095",
            &image.tag,
            "--tenants",
            "1",
        ],
    );
    image.container = Some(id.clone());

    // The runner is the container's first process, as user 10001.
    let status = run(&tool, &["exec", &id, "cat", "/proc/1/status"]);
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line");
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["10001"; 4],
        "{uid}"
    );
    let name = status.lines().next().unwrap_or_default();
    assert_eq!(name, "Name:\trunner");

    let tenants = published(&image, &id, "8080/tcp");
    let admin = published(&image, &id, "9095/tcp");
    let health = answer(admin, "/healthz").await;
    assert_eq!(
        (health.status, health.text().trim()),
        (StatusCode::OK, "ok")
    );
    let put = request(
        tenants,
        Method::PUT,
        "/t/t0/kv/kept",
        b"across a restart".to_vec(),
    )
    .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());

    // Its HEALTHCHECK says healthy (it probes every 10 s).
    if podman {
        run(&tool, &["healthcheck", "run", &id]);
    } else {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = run(
                &tool,
                &["inspect", "--format", "{{.State.Health.Status}}", &id],
            );
            if health == "healthy" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container is {health:?}, not healthy, after 60 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // SIGTERM, a new process on the same volume: the write is still there.
    run(&tool, &["restart", "--time", "20", &id]);
    let tenants = published(&image, &id, "8080/tcp");
    let kept = answer(tenants, "/t/t0/kv/kept").await;
    assert_eq!(
        (kept.status, kept.text()),
        (StatusCode::OK, "across a restart".to_string())
    );
}

/// `runner completions bash` is a script bash loads and that completes the
/// runner's flags; `runner man` is a man page naming every setting.
#[test]
fn completions_and_the_man_page_come_from_the_cli() {
    let runner = binary("runner");
    let script = Command::new(&runner)
        .args(["completions", "bash"])
        .output()
        .expect("runner completions bash");
    assert!(script.status.success(), "{script:?}");
    let dir = TempDir::new();
    let path = dir.path.join("runner.bash");
    std::fs::write(&path, &script.stdout).expect("writing the script");
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            // As bash calls a completion function: the command, the word
            // being completed and the one before it.
            "source {}; COMP_WORDS=(runner --max-tenant-in); COMP_CWORD=1; \
             _runner runner --max-tenant-in runner; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .expect("bash");
    assert_eq!(
        String::from_utf8_lossy(&completed.stdout),
        "--max-tenant-in-flight\n",
        "{}",
        String::from_utf8_lossy(&completed.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(&runner)
            .args(["completions", shell])
            .output()
            .expect("runner completions");
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }

    let man = Command::new(&runner)
        .arg("man")
        .output()
        .expect("runner man");
    assert!(man.status.success(), "{man:?}");
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH runner 1"), "{man}");
    let help = Command::new(&runner)
        .arg("--help")
        .output()
        .expect("runner --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', '.']))
        .collect();
    assert!(flags.len() > 50, "{flags:?}");
    for flag in flags {
        // roff escapes each '-' of a flag as "\-".
        let escaped = flag.replace('-', "\\-");
        assert!(man.contains(&escaped), "{flag} is not in the man page");
    }
}
