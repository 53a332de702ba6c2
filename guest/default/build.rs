//! Links the default guest with a 64 KiB shadow stack instead of Rust's
//! 1 MiB: it needs little, and every page a guest touches is a page the host
//! must reset after each request. (The hostile guest keeps the default.)
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=65536");
    }
}
