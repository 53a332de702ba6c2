//! `runner tenant ...`: a client for a running runner's admin API, in the
//! same binary, as `spin` and `wash` ship theirs.
//!
//! Each subcommand is one or two requests to `/v1` (see
//! [`crate::ingress::api`]); what the API refuses is printed as it says it,
//! and the exit code is 1.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::ingress::api::ADMIN_TOKEN_VAR;
use crate::limits::Limits;

/// Deploy, list, show and remove tenants of a running runner, through its
/// admin API.
#[derive(Debug, Clone, Args)]
pub struct TenantCommand {
    /// The runner's admin listener (its --metrics-listen).
    #[arg(
        long,
        env = "RUNNER_ADMIN",
        default_value = "http://127.0.0.1:9095",
        global = true
    )]
    pub admin: String,

    /// File holding the admin token; or pass the token itself in
    /// RUNNER_ADMIN_TOKEN.
    // An id of its own: the server's `admin_token_file` setting (a path or
    // "none") has the same name, and clap hands a parent's value of a
    // same-named argument down to a subcommand, where it has another type.
    #[arg(
        id = "client_admin_token_file",
        long = "admin-token-file",
        env = "RUNNER_ADMIN_TOKEN_FILE",
        global = true
    )]
    pub admin_token_file: Option<PathBuf>,

    /// The CA certificate (PEM) that an https:// --admin's certificate is
    /// checked against, in place of the system's trusted ones.
    #[arg(
        long = "admin-ca",
        env = "RUNNER_ADMIN_CA",
        global = true,
        value_name = "FILE"
    )]
    pub admin_ca: Option<PathBuf>,

    #[command(subcommand)]
    pub action: TenantAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TenantAction {
    /// Upload COMPONENT (or a Spin application's HTTP component, with
    /// --spin) and create or update tenant NAME to run it. The tenant gets
    /// exactly the limits given here (over the manifest's); the rest are
    /// the runner's defaults (its flags and its file's [defaults]).
    Deploy {
        /// The tenant: 1 to 64 ASCII letters, digits, '-' or '_'.
        name: String,
        /// A .wasm component, or `default` for the runner's embedded guest.
        #[arg(required_unless_present = "spin", conflicts_with = "spin")]
        component: Option<String>,
        /// A Spin application's manifest (spin.toml, version 2): its HTTP
        /// component, route, variables, allowed_outbound_hosts and
        /// key_value_stores. --var and --secret give its variables' values.
        #[arg(long, value_name = "SPIN_TOML")]
        spin: Option<PathBuf>,
        /// The tenant's own certificate (PEM chain) for the hosts it
        /// claims, served by SNI; with --tls-key. Needs the runner's
        /// --secrets-key-file, which seals the key.
        #[arg(
            id = "deploy_tls_cert",
            long = "tls-cert",
            value_name = "FILE",
            requires = "deploy_tls_key"
        )]
        tls_cert: Option<PathBuf>,
        /// The key of --tls-cert (PEM).
        #[arg(
            id = "deploy_tls_key",
            long = "tls-key",
            value_name = "FILE",
            requires = "deploy_tls_cert"
        )]
        tls_key: Option<PathBuf>,
        /// A host the tenant's guests may call, in Spin's syntax
        /// (`https://api.example.com`, `https://*.example.com`,
        /// `http://svc:8080`); repeat for more. Added to any
        /// --allowed-outbound-hosts.
        #[arg(long = "allow-outbound", value_name = "URL")]
        allow_outbound: Vec<String>,
        /// A configuration value its guests read (`wasi:config`, Spin's
        /// variables); repeat for more. The tenant gets exactly these.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = name_value)]
        vars: Vec<(String, String)>,
        /// A secret its guests read, from a file (`NAME=@FILE`) or an
        /// environment variable (`NAME=env:VARIABLE`), never from the
        /// command line itself; sent to the runner, which seals it under
        /// its --secrets-key-file. Repeat for more.
        #[arg(long = "secret", value_name = "NAME=@FILE|NAME=env:VAR", value_parser = name_value)]
        secrets: Vec<(String, String)>,
        #[command(flatten)]
        limits: Box<Limits>,
    },
    /// List every tenant with the digest of its component.
    List,
    /// After a key rotation (the new key as --secrets-key-file, the old as
    /// --secrets-previous-key-file), seal every kept tenant's secrets anew
    /// under the new key, so that the old one can be retired.
    Reseal,
    /// Show a tenant: its component, effective limits and usage.
    Show {
        /// The tenant.
        name: String,
    },
    /// Remove a tenant: new requests get 404 at once; requests in flight
    /// finish. Its key-value data is kept for a tenant of the same name
    /// later, unless --purge.
    Remove {
        /// The tenant.
        name: String,
        /// Delete the tenant's key-value data too.
        #[arg(long)]
        purge: bool,
    },
}

/// Runs `command`; `matches` are the subcommand's own, to tell the limits
/// given on the command line from defaults.
pub async fn run(command: &TenantCommand, matches: &ArgMatches) -> anyhow::Result<()> {
    let client = Client::new(command)?;
    match &command.action {
        TenantAction::Deploy {
            name,
            component,
            spin,
            tls_cert,
            tls_key,
            allow_outbound,
            vars,
            secrets,
            limits,
        } => {
            let (digest, spin) = match (component.as_deref(), spin) {
                (Some("default"), _) => ("default".to_string(), None),
                (Some(component), _) => (client.upload(Path::new(component)).await?, None),
                (None, Some(manifest)) => {
                    let (digest, document) = client.upload_spin(manifest).await?;
                    (digest, Some(document))
                }
                (None, None) => anyhow::bail!("deploy needs a COMPONENT or --spin"),
            };
            let given = matches
                .subcommand_matches("deploy")
                .context("deploy's arguments")?;
            let mut sent = serde_json::Map::new();
            for (key, value) in limits.to_json() {
                let id = key.replace('-', "_");
                if given.value_source(&id) == Some(ValueSource::CommandLine) {
                    sent.insert(key, value);
                }
            }
            if !allow_outbound.is_empty() {
                let hosts = sent
                    .entry("allowed-outbound-hosts")
                    .or_insert_with(|| json!([]));
                if let Some(list) = hosts.as_array_mut() {
                    list.extend(allow_outbound.iter().map(|url| json!(url)));
                }
            }
            let config: serde_json::Map<String, serde_json::Value> =
                vars.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let mut document = json!({ "limits": sent, "config": config });
            match spin {
                Some(spin) => document["spin"] = spin,
                None => document["component"] = json!(digest),
            }
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                let read = |path: &PathBuf| {
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))
                };
                document["tls"] = json!({ "cert": read(cert)?, "key": read(key)? });
            }
            if !secrets.is_empty() {
                let mut read = serde_json::Map::new();
                for (name, source) in secrets {
                    read.insert(name.clone(), json!(read_secret(name, source)?));
                }
                document["secrets"] = serde_json::Value::Object(read);
            }
            let path = format!("/v1/tenants/{name}");
            let reply = client
                .send(Method::PUT, &path, Bytes::from(document.to_string()))
                .await?;
            println!(
                "tenant {name} {}: component {}",
                reply["change"].as_str().unwrap_or("deployed"),
                reply["component"].as_str().unwrap_or(&digest)
            );
            // A Spin application's further components, each on its route.
            for part in reply["parts"].as_array().into_iter().flatten() {
                println!(
                    "  and component {} {} on route {}",
                    part["id"].as_str().unwrap_or_default(),
                    part["component"].as_str().unwrap_or_default(),
                    part["limits"]["route"].as_str().unwrap_or_default()
                );
            }
            for warning in reply["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", warning.as_str().unwrap_or_default());
            }
        }
        TenantAction::Reseal => {
            let reply = client
                .send(Method::POST, "/v1/secrets/reseal", Bytes::new())
                .await?;
            println!(
                "secrets sealed anew: {} tenants",
                reply["resealed"].as_u64().unwrap_or(0)
            );
        }
        TenantAction::List => {
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/tenants?limit=1000&cursor={c}"),
                    None => "/v1/tenants?limit=1000".to_string(),
                };
                let reply = client.send(Method::GET, &path, Bytes::new()).await?;
                for tenant in reply["tenants"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}",
                        tenant["name"].as_str().unwrap_or("?"),
                        tenant["component"].as_str().unwrap_or("?")
                    );
                }
                match reply["next"].as_str() {
                    Some(next) => cursor = Some(next.to_string()),
                    None => break,
                }
            }
        }
        TenantAction::Show { name } => {
            let path = format!("/v1/tenants/{name}");
            let reply = client.send(Method::GET, &path, Bytes::new()).await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
        }
        TenantAction::Remove { name, purge } => {
            let path = format!("/v1/tenants/{name}?purge={purge}");
            client.send(Method::DELETE, &path, Bytes::new()).await?;
            let purged = if *purge { ", its data purged" } else { "" };
            println!("tenant {name} removed{purged}");
        }
    }
    Ok(())
}

struct Client {
    host: String,
    port: u16,
    authority: String,
    token: String,
    /// With an https:// --admin, what its certificate is checked against.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Client {
    /// Uploads the component at `path`; its digest.
    async fn upload(&self, path: &Path) -> anyhow::Result<String> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
        let reply = self
            .send(Method::PUT, "/v1/components", Bytes::from(bytes))
            .await?;
        Ok(reply["digest"]
            .as_str()
            .context("the runner's answer has no digest")?
            .to_string())
    }

    /// Reads the Spin manifest at `path` and uploads its HTTP components
    /// (files named relative to the manifest, as Spin reads them; one
    /// file once): the first one's digest, and the document's `spin` part.
    async fn upload_spin(&self, path: &Path) -> anyhow::Result<(String, Value)> {
        use crate::manifest::{Manifest, Source};
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let manifest =
            Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut components = serde_json::Map::new();
        let mut uploaded: Vec<(&str, String)> = Vec::new();
        for (id, source) in manifest.components() {
            let digest = match source {
                Source::Digest(digest) => digest.clone(),
                Source::File(file) => match uploaded.iter().find(|(f, _)| f == file) {
                    Some((_, digest)) => digest.clone(),
                    None => {
                        let digest = self.upload(&dir.join(file)).await?;
                        uploaded.push((file, digest.clone()));
                        digest
                    }
                },
            };
            components.insert(id.to_owned(), json!(digest));
        }
        // The tenant's own component: the first trigger's.
        let first = manifest
            .components()
            .first()
            .and_then(|(id, _)| components.get(*id))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok((first, json!({ "manifest": text, "components": components })))
    }

    fn new(command: &TenantCommand) -> anyhow::Result<Self> {
        let uri: Uri = command
            .admin
            .parse()
            .with_context(|| format!("--admin {:?} is not a URL", command.admin))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(crate::tls::client_config(command.admin_ca.as_deref())?),
            _ => bail!(
                "--admin {:?}: give the admin listener as http://HOST:PORT or https://HOST:PORT",
                command.admin
            ),
        };
        let host = uri
            .host()
            .with_context(|| format!("--admin {:?} has no host", command.admin))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let token = match &command.admin_token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading --admin-token-file {}", path.display()))?,
            None => std::env::var(ADMIN_TOKEN_VAR).map_err(|_| {
                anyhow::anyhow!("no admin token: pass --admin-token-file or set {ADMIN_TOKEN_VAR}")
            })?,
        };
        Ok(Self {
            authority: uri
                .authority()
                .map_or_else(|| host.clone(), ToString::to_string),
            host,
            port,
            token: token.trim().to_string(),
            tls,
        })
    }

    /// One request; the API's JSON answer, or its error as the error.
    async fn send(&self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Value> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to the runner at {}", self.authority))?;
        let mut sender = match &self.tls {
            None => http1(stream).await?,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .with_context(|| format!("{:?} is not a host name", self.host))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .with_context(|| {
                        format!(
                            "connecting to the runner at {} over TLS (an untrusted certificate? \
                             name its CA with --admin-ca FILE)",
                            self.authority
                        )
                    })?;
                http1(stream).await?
            }
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Full::new(body))
            .context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).trim().to_string()));
        if status.is_success() {
            return Ok(value);
        }
        // A problem document's `detail` (`error` from runners before it).
        let message = value["detail"]
            .as_str()
            .or_else(|| value["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        if status == StatusCode::NOT_FOUND
            && value.get("type").is_none()
            && value.get("error").is_none()
        {
            bail!("{method} {path}: 404: {message} (is the runner's admin API on?)");
        }
        bail!("{method} {path}: {}: {message}", status.as_u16())
    }
}

/// An HTTP/1.1 connection over `io`, driven in the background.
async fn http1<I>(io: I) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("talking to the runner")?;
    tokio::spawn(connection);
    Ok(sender)
}

/// `NAME=VALUE`, split at the first `=`.
fn name_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

/// A `--secret`'s value, from the file or the variable its source names.
fn read_secret(name: &str, source: &str) -> anyhow::Result<String> {
    if let Some(path) = source.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--secret {name}: reading {path}"))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        return Ok(text.strip_suffix('\r').unwrap_or(text).to_owned());
    }
    if let Some(var) = source.strip_prefix("env:") {
        return std::env::var(var).with_context(|| {
            format!("--secret {name}: the environment variable {var} is not set")
        });
    }
    anyhow::bail!(
        "--secret {name}: give NAME=@FILE or NAME=env:VARIABLE; a secret on the command line \
         is seen by every user of the machine"
    )
}
