//! Builds the guest components (guest/) for wasm32-wasip2 so the runner can
//! embed the default guest and tests and benchmarks can load the others.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("runner/ sits in the workspace")
        .to_path_buf();
    let guest = root.join("guest");
    // Its own target dir: the outer cargo holds the lock on target/<profile>.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");

    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "bench",
        "common",
        "default",
        "hostile",
        "p3",
        "bench-p3",
        "spin",
        "spin-unsupported",
    ] {
        println!("cargo:rerun-if-changed={}", guest.join(path).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the guests");
    assert!(
        status.success(),
        "building the guest components failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let out = target_dir.join("wasm32-wasip2").join("release");
    for (var, file) in [
        ("RUNNER_DEFAULT_GUEST", "guest_default.wasm"),
        ("RUNNER_HOSTILE_GUEST", "guest_hostile.wasm"),
        ("RUNNER_BENCH_GUEST", "guest_bench.wasm"),
        ("RUNNER_P3_GUEST", "guest_p3.wasm"),
        ("RUNNER_BENCH_P3_GUEST", "guest_bench_p3.wasm"),
        ("RUNNER_SPIN_GUEST", "guest_spin.wasm"),
        (
            "RUNNER_SPIN_UNSUPPORTED_GUEST",
            "guest_spin_unsupported.wasm",
        ),
    ] {
        let path = out.join(file);
        assert!(path.is_file(), "{} was not built", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
