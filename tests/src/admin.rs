//! The admin API from a test's side: a token file, and requests that carry
//! the token (or a given one, or none).

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::TempDir;
use crate::http::{Reply, send};

/// An admin token in a file of its own, removed on drop.
pub struct Token {
    pub value: String,
    pub path: PathBuf,
    _dir: TempDir,
}

impl Token {
    pub fn new() -> Self {
        let dir = TempDir::new();
        let path = dir.path.join("admin-token");
        let value = format!("test-token-{}", std::process::id());
        // A trailing newline, as `echo` writes it: the runner trims it.
        std::fs::write(&path, format!("{value}\n")).expect("writing the token file");
        Self {
            value,
            path,
            _dir: dir,
        }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

impl Default for Token {
    fn default() -> Self {
        Self::new()
    }
}

/// Requests to a runner's admin listener with a bearer token.
#[derive(Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Admin {
    pub fn new(addr: SocketAddr, token: &Token) -> Self {
        Self {
            addr,
            token: Some(token.value.clone()),
        }
    }

    /// The same listener with another token, or none.
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            addr: self.addr,
            token: token.map(str::to_string),
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body.into())).expect("a valid request");
        send(self.addr, req).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Bytes::new()).await
    }

    /// Uploads a component; the runner's answer.
    pub async fn put_component(&self, bytes: Vec<u8>) -> Reply {
        self.send(Method::PUT, "/v1/components", bytes).await
    }

    /// Uploads the component at `path`, which must be accepted; its digest.
    pub async fn upload(&self, path: &std::path::Path) -> String {
        let bytes = std::fs::read(path).expect("reading a component");
        let res = self.put_component(bytes).await;
        assert!(res.status.is_success(), "{}", res.text());
        res.json()["digest"]
            .as_str()
            .expect("a digest in the answer")
            .to_string()
    }

    pub async fn put_tenant(&self, name: &str, document: serde_json::Value) -> Reply {
        self.send(
            Method::PUT,
            &format!("/v1/tenants/{name}"),
            document.to_string(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, Bytes::new()).await
    }
}
