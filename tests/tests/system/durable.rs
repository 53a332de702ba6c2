//! The durable backend through the real binary: what was acknowledged
//! survives SIGKILL, a full disk refuses writes but keeps serving, and a
//! data directory serves one runner at a time.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use parking_lot::Mutex;
use system_tests::Runner;
use system_tests::TempDir;
use system_tests::http::{Client, get, request};

/// Connections writing at once.
const WRITERS: usize = 32;
/// Keys each writer cycles through, so later writes overwrite earlier ones.
const KEYS_PER_WRITER: usize = 20;
/// Tenants the writers spread over.
const TENANTS: usize = 4;
/// Padding in each value, so a commit has real work and takes a while.
const VALUE_PAD: usize = 16 * 1024;

/// What one writer saw: for each key, the last value acknowledged, and the
/// write it had in flight when the runner died (its value may or may not
/// have been kept).
#[derive(Default)]
struct Seen {
    acked: HashMap<String, String>,
    writes: usize,
    in_flight: Option<(String, String)>,
}

/// Writes from [`WRITERS`] connections until the runner is killed after
/// `run_for`; returns each writer's record and the number of acknowledged
/// writes. Bounded: each writer stops at its first failed request, or after
/// 200,000 writes.
async fn write_until_killed(runner: &mut Runner, run_for: Duration) -> (Vec<Seen>, usize) {
    let addr = runner.addr;
    let seen: Vec<Arc<Mutex<Seen>>> = (0..WRITERS).map(|_| Default::default()).collect();
    let mut tasks = Vec::new();
    for (w, record) in seen.iter().enumerate() {
        let record = record.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for n in 0..200_000usize {
                let key = format!("/t/t{}/kv/w{w}-{}", w % TENANTS, n % KEYS_PER_WRITER);
                let value = format!("{w}:{n}:{}", "v".repeat(VALUE_PAD));
                record.lock().in_flight = Some((key.clone(), value.clone()));
                match client
                    .try_send(Method::PUT, &key, value.clone().into_bytes())
                    .await
                {
                    Some(reply) if reply.status == StatusCode::NO_CONTENT => {
                        let mut r = record.lock();
                        r.in_flight = None;
                        r.writes += 1;
                        r.acked.insert(key, value);
                    }
                    Some(reply) => panic!("PUT {key}: {} {}", reply.status, reply.text()),
                    None => return,
                }
            }
        }));
    }
    tokio::time::sleep(run_for).await;
    runner.kill();
    for task in tasks {
        task.await.expect("a writer task");
    }
    let seen: Vec<Seen> = seen
        .into_iter()
        .map(|s| std::mem::take(&mut *s.lock()))
        .collect();
    let total = seen.iter().map(|s| s.writes).sum();
    (seen, total)
}

/// Reads every acknowledged key back from a restarted runner; returns how
/// many came back with neither the acknowledged value nor the one in flight.
async fn lost_after_restart(runner: &Runner, seen: &[Seen]) -> usize {
    let mut lost = 0;
    let mut client = Client::connect(runner.addr).await;
    for record in seen {
        for (key, value) in &record.acked {
            let reply = client.get(key).await;
            let found = (reply.status == StatusCode::OK).then(|| reply.text());
            let in_flight = record
                .in_flight
                .as_ref()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str());
            if found.as_deref() != Some(value.as_str()) && found.as_deref() != in_flight {
                eprintln!("{key}: acknowledged {value:?}, found {found:?}");
                lost += 1;
            }
        }
    }
    lost
}

async fn kill_and_check(fsync: &str) -> (usize, usize) {
    let dir = TempDir::new();
    let data = dir.path.join("data");
    let data = data.to_str().expect("temp paths are UTF-8");
    let tenants = TENANTS.to_string();
    let args = ["--tenants", &tenants, "--data-dir", data, "--fsync", fsync];
    let mut runner = Runner::start(&args);
    let (seen, acked) = write_until_killed(&mut runner, Duration::from_millis(1500)).await;
    assert!(
        acked > 100,
        "only {acked} writes were acknowledged before the kill"
    );
    let runner = Runner::start(&args);
    let lost = lost_after_restart(&runner, &seen).await;
    let keys: usize = seen.iter().map(|s| s.acked.len()).sum();
    eprintln!(
        "fsync {fsync}: {acked} writes to {keys} keys acknowledged; {lost} keys lost after SIGKILL"
    );
    (acked, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_with_fsync_always() {
    let (_, lost) = kill_and_check("always").await;
    assert_eq!(lost, 0);
}

/// `every=` acknowledges once the OS has the write, so killing the runner
/// (not the machine) loses nothing either; what the window risks is a
/// machine crash, which a test cannot stage here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_with_fsync_every() {
    let (_, lost) = kill_and_check("every=100ms").await;
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_runner_at_a_time() {
    let dir = TempDir::new();
    let data = dir.path.join("data");
    let data = data.to_str().expect("temp paths are UTF-8");
    let first = Runner::start(&["--data-dir", data]);
    let second = Runner::run_args_to_exit(&["--data-dir", data]);
    assert!(!second.status.success());
    assert!(
        second.stderr.contains(&format!(
            "the data directory {data} is in use by another runner (pid {}); each directory serves one runner at a time",
            first.pid()
        )),
        "{}",
        second.stderr
    );
    // The first still serves.
    assert_eq!(get(first.addr, "/t/t0/hello").await.status, StatusCode::OK);
}

/// A tmpfs of its own, so the test can fill it; unmounted on drop.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    /// `None` where this process may not mount (not root): the test is then
    /// skipped, unless RUNNER_REQUIRE_MOUNT=1 (CI sets it).
    fn mount(size: &str) -> Option<Self> {
        let dir = TempDir::new();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert_ne!(
                std::env::var("RUNNER_REQUIRE_MOUNT").as_deref(),
                Ok("1"),
                "RUNNER_REQUIRE_MOUNT=1, but a tmpfs could not be mounted"
            );
            eprintln!("skipped: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        &self.dir.path
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("creating the filler");
        let chunk = vec![0xAB; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_keeps_serving() {
    let Some(disk) = SmallDisk::mount("32m") else {
        return;
    };
    let data = disk.path().join("data");
    let data = data.to_str().expect("temp paths are UTF-8");
    let token = system_tests::admin::Token::new();
    let args = [
        "--tenants",
        "2",
        "--data-dir",
        data,
        "--admin-token-file",
        token.path(),
    ];
    let mut runner = Runner::start(&args);
    let put = |path: &'static str, body: &'static str| {
        request(runner.addr, Method::PUT, path, body.as_bytes().to_vec())
    };
    assert_eq!(
        put("/t/t0/kv/before", "kept").await.status,
        StatusCode::NO_CONTENT
    );
    let filler = disk.fill();

    // A write needs the disk: refused, with the store's own token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let reply = request(
            runner.addr,
            Method::PUT,
            "/t/t1/kv/after",
            vec![b'x'; 64 * 1024],
        )
        .await;
        if reply.status != StatusCode::NO_CONTENT || Instant::now() > deadline {
            break reply;
        }
    };
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    // Not where the data directory is: that is for the operator's log.
    assert_eq!(
        refused.text(),
        "store error: store-unavailable: the data directory cannot be written (see the \
         runner's log); writes are refused until the runner restarts"
    );
    // Reads, other routes and the admin side keep working.
    let kept = get(runner.addr, "/t/t0/kv/before").await;
    assert_eq!(
        (kept.status, kept.text().as_str()),
        (StatusCode::OK, "kept")
    );
    assert_eq!(get(runner.addr, "/t/t1/hello").await.status, StatusCode::OK);
    assert_eq!(get(runner.admin, "/healthz").await.status, StatusCode::OK);
    // Later writes are refused at once, and say why.
    let again = put("/t/t0/kv/later", "x").await;
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    // A deploy the disk refuses is the runner's failure, not the deploy's.
    let admin = system_tests::admin::Admin::new(runner.admin, &token);
    let deploy = admin
        .put_tenant("new", serde_json::json!({ "component": "default" }))
        .await;
    assert_eq!(
        deploy.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        deploy.text()
    );
    assert_eq!(deploy.json()["type"], "urn:runner:problem:failed");

    // With room again, a restart serves what was acknowledged.
    std::fs::remove_file(filler).expect("removing the filler");
    runner.kill();
    let runner = Runner::start(&args);
    let kept = get(runner.addr, "/t/t0/kv/before").await;
    assert_eq!(
        (kept.status, kept.text().as_str()),
        (StatusCode::OK, "kept")
    );
    assert_eq!(
        request(runner.addr, Method::PUT, "/t/t0/kv/later", b"y".to_vec())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A data directory that lost acknowledged writes is refused at start-up,
/// naming what is missing, never served half-empty: its journal damaged in
/// the middle after a SIGKILL, or its `kv/` deleted beside the deployments
/// in `fleet/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_missing_acknowledged_writes_is_refused() {
    let token = system_tests::admin::Token::new();
    for damage in ["journal", "kv"] {
        let dir = TempDir::new();
        let data = dir.path.join("data");
        let data = data.to_str().expect("temp paths are UTF-8");
        let args = [
            "--tenants",
            "1",
            "--data-dir",
            data,
            "--admin-token-file",
            token.path(),
        ];
        let mut runner = Runner::start(&args);
        let admin = system_tests::admin::Admin::new(runner.admin, &token);
        let deployed = admin
            .put_tenant("app", serde_json::json!({ "component": "default" }))
            .await;
        assert_eq!(deployed.status, StatusCode::CREATED);
        let mut client = Client::connect(runner.addr).await;
        for i in 0..300 {
            let path = format!("/t/t0/kv/k{i}");
            let res = client.send(Method::PUT, &path, vec![b'v'; 512]).await;
            assert_eq!(res.status, StatusCode::NO_CONTENT);
        }
        // The last of them is recorded durable within a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        runner.kill();
        let kv = Path::new(data).join("kv");
        if damage == "kv" {
            std::fs::remove_dir_all(&kv).unwrap();
        } else {
            let journal = files_under(&kv)
                .into_iter()
                .filter(|f| f.extension().is_some_and(|e| e == "jnl"))
                .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
                .expect("a journal file");
            let mut bytes = std::fs::read(&journal).unwrap();
            // The journal is made long and filled from its start: a third
            // of the way into what was written.
            let written = bytes.iter().rposition(|b| *b != 0).unwrap_or(0);
            let third = written / 3;
            bytes
                .iter_mut()
                .skip(third)
                .take(4096)
                .for_each(|b| *b ^= 0xA5);
            std::fs::write(&journal, bytes).unwrap();
        }
        let exit = Runner::run_args_to_exit(&args);
        assert_eq!(exit.status.code(), Some(1), "{damage}: {}", exit.stderr);
        let expected = if damage == "kv" {
            format!(
                "error: the data directory {data} has deployments in {data}/fleet but no \
                 key-value data (kv/ is missing); it may be damaged, or partly restored \
                 (restore it whole from a backup, or move it aside to start empty)"
            )
        } else {
            format!("error: the data directory {data} ")
        };
        assert!(
            exit.stderr.trim_end().starts_with(&expected) && exit.stderr.contains("may be damaged"),
            "{damage}: {}",
            exit.stderr
        );
    }
}
