//! A real runner on loopback, and one HTTP/1.1 request to it, for the
//! targets that drive one (not a target of its own: included with
//! `#[path]`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Starts a runner with `args` (after the program name) on a thread of its
/// own, serving until the process ends; its tenant and admin listeners.
pub fn start(args: Vec<String>) -> (SocketAddr, SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let args = std::iter::once("runner".to_string()).chain(args);
            let (_, config) = runner::config::Config::try_from_args(args).unwrap();
            let built = runner::Runner::build(config).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((listener.local_addr().unwrap(), admin.local_addr().unwrap()))
                .unwrap();
            built
                .serve(listener, admin, std::future::pending())
                .await
                .unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Every byte percent-encoded, for a path or query.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Sends one request, with `headers` (each a whole `name: value` line
/// without its end), on its own connection; the status and body. Panics
/// where no response came: the connection was dropped.
pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: fuzz\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no response to {method} {target}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}
