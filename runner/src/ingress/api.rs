//! The admin API, `/v1` on the admin listener: deploy, update, list and
//! remove tenants while the runner serves. JSON in and out; every route
//! needs `Authorization: Bearer <token>`, and without a configured token
//! the API is off (404), as if it did not exist.
//!
//! - `PUT /v1/components`, the component's bytes as the body: compiled and
//!   checked once; 201 `{"digest": "sha256:<hex>"}` for new bytes, 200 for
//!   bytes already held.
//! - `GET /v1/components`: each component held, by digest, with the bytes
//!   of its compiled code, how many tenants run it, and, for one no tenant
//!   runs, for how long (it is released after `--component-grace`).
//! - `DELETE /v1/components/{digest}`: releases a component no tenant runs,
//!   and deletes its copies (data directory, the fleet's Redis, compiled
//!   cache); 409 naming the tenants that run it.
//! - `PUT /v1/tenants/{name}`, `{"component": "sha256:<hex>" | "default",
//!   "limits": {<keys of a [tenants.NAME] table>}, "config": {"name":
//!   "value"}}`: the tenant becomes exactly that (limits left out take the
//!   runner's defaults); 201 created, 200 updated or unchanged.
//!   `"secrets": {"name": "value"}` are sealed under `--secrets-key-file`
//!   where they are kept (400 without one), and never shown again.
//!   `"spin": {"manifest": "<spin.toml>", "components": {"id":
//!   "sha256:<hex>"}}` in place of `component` deploys a Spin application
//!   ([`crate::manifest`]): config and secrets are then its variables'
//!   values, and limits are laid over the manifest's settings; the answer
//!   lists what the manifest has that the runner leaves, as `warnings`.
//! - `GET /v1/tenants[?limit=N&cursor=C]`: names and components in name
//!   order, with the cursor of the next page.
//! - `GET /v1/tenants/{name}`: component, the handler it exports (WASIp2
//!   or WASIp3), effective limits, usage.
//! - `DELETE /v1/tenants/{name}[?purge=true]`.
//! - `POST /v1/secrets/reseal`: seals every kept tenant's secrets that an
//!   earlier key sealed anew under the current `--secrets-key-file`, in
//!   the data directory or the fleet's Redis; `{"resealed": N}` tenants.
//!
//! Errors are RFC 9457 problem details (`application/problem+json`): a
//! stable `type` per kind of error (`urn:runner:problem:<token>`, see
//! [`Problem`]), its `title`, the `status`, and a `detail` that says what
//! was wrong in this request.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use metrics::Counter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::{OutBody, full};
use crate::engine::component::Digest;
use crate::fleet::{Change, Fleet, Refused, Source, Version};
use crate::limits::{Limits, LimitsFile};
use crate::tenant::Tenant;
use crate::vars::Secret;

/// The admin API's settings.
#[derive(Clone, Debug)]
pub struct AdminApi {
    /// The SHA-256 of the bearer token, never the token itself, so that
    /// no debug print or log line can show it; `None`: the API is off.
    pub token: Option<Digest>,
    pub max_component_bytes: u64,
    /// How long a removal with purge waits for the tenant's requests in
    /// flight, and a client for the request body.
    pub grace: Duration,
    pub body_read_timeout: Duration,
    /// Whether a request over plain HTTP is refused (`admin-require-tls`,
    /// with `admin-tls-cert`).
    pub require_tls: bool,
}

/// The variable that can carry the admin token itself.
pub const ADMIN_TOKEN_VAR: &str = "RUNNER_ADMIN_TOKEN";

/// Tenants per page when the client does not say, and the most it may ask.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Largest tenant document (`PUT /v1/tenants/{name}`).
const MAX_TENANT_BODY: usize = 64 << 10;

pub struct Api {
    settings: AdminApi,
    /// The token's digest; a reload (SIGHUP) may replace it.
    token: parking_lot::RwLock<Digest>,
    results: Results,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token, not even its digest.
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// `runner_admin_requests_total` by result.
struct Results {
    ok: Counter,
    refused: Counter,
    unauthorized: Counter,
    failed: Counter,
}

/// An answer that is not a success.
struct Failure(Problem, String);

/// Every kind of error the API answers, each with its stable token (the
/// end of its problem `type`), title and status. Clients branch on the
/// token; the `detail` beside it is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No token, or not the runner's.
    Unauthorized,
    /// Plain HTTP where the API takes HTTPS alone.
    TlsRequired,
    /// A request the API cannot read: a bad tenant name, JSON, limits,
    /// query parameter or body.
    BadRequest,
    /// No such tenant or component.
    NotFound,
    /// No such route.
    NoRoute,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// The body did not arrive within the body-read timeout.
    BodyTimeout,
    /// The body is larger than its limit.
    BodyTooLarge,
    /// The tenant changed under the request (removed meanwhile).
    Conflict,
    /// A component to remove that tenants run.
    InUse,
    /// A host name another tenant claims.
    HostClaimed,
    /// A component or limits that cannot run here.
    CannotRun,
    /// The change was made in part and a later step failed (the store).
    Failed,
}

impl Problem {
    /// The stable token, the last part of the problem's `type`.
    pub fn token(self) -> &'static str {
        match self {
            Problem::Unauthorized => "unauthorized",
            Problem::TlsRequired => "tls-required",
            Problem::BadRequest => "bad-request",
            Problem::NotFound => "not-found",
            Problem::NoRoute => "no-route",
            Problem::MethodNotAllowed => "method-not-allowed",
            Problem::BodyTimeout => "body-timeout",
            Problem::BodyTooLarge => "body-too-large",
            Problem::Conflict => "conflict",
            Problem::InUse => "in-use",
            Problem::HostClaimed => "host-claimed",
            Problem::CannotRun => "cannot-run",
            Problem::Failed => "failed",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Problem::Unauthorized => "missing or wrong admin token",
            Problem::TlsRequired => "the admin API takes HTTPS alone",
            Problem::BadRequest => "the request cannot be read",
            Problem::NotFound => "no such tenant or component",
            Problem::NoRoute => "no such route",
            Problem::MethodNotAllowed => "method not allowed on this route",
            Problem::BodyTimeout => "the request body did not arrive in time",
            Problem::BodyTooLarge => "the request body is too large",
            Problem::Conflict => "the tenant changed during the request",
            Problem::InUse => "the component is in use",
            Problem::HostClaimed => "a host is claimed by another tenant",
            Problem::CannotRun => "the component or limits cannot run on this runner",
            Problem::Failed => "the change failed part way",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Problem::Unauthorized => StatusCode::UNAUTHORIZED,
            Problem::TlsRequired => StatusCode::FORBIDDEN,
            Problem::BadRequest => StatusCode::BAD_REQUEST,
            Problem::NotFound | Problem::NoRoute => StatusCode::NOT_FOUND,
            Problem::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Problem::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Problem::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::Conflict | Problem::InUse | Problem::HostClaimed => StatusCode::CONFLICT,
            Problem::CannotRun => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document for one occurrence.
    fn document(self, detail: &str) -> Value {
        json!({
            "type": format!("{PROBLEM_TYPE}{}", self.token()),
            "title": self.title(),
            "status": self.status().as_u16(),
            "detail": detail,
        })
    }
}

/// What every problem `type` starts with.
pub const PROBLEM_TYPE: &str = "urn:runner:problem:";

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Failure(Problem::BadRequest, message.into())
    }
}

impl From<Refused> for Failure {
    fn from(refused: Refused) -> Self {
        let problem = match &refused {
            Refused::NotFound(_) => Problem::NotFound,
            Refused::InUse(_) => Problem::InUse,
            Refused::HostClaimed(_) => Problem::HostClaimed,
            Refused::Invalid(_) => Problem::CannotRun,
            Refused::Failed(_) => Problem::Failed,
        };
        Failure(problem, refused.to_string())
    }
}

type Answer = Result<(StatusCode, Value), Failure>;

/// The body of `PUT /v1/tenants/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDocument {
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    config: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    secrets: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    spin: Option<SpinDocument>,
    #[serde(default)]
    tls: Option<TlsDocument>,
}

/// A tenant's own certificate for the hosts it claims: the chain and its
/// key, PEM. The key is kept sealed, as a secret is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsDocument {
    cert: String,
    key: String,
}

/// A Spin manifest read for a deploy: what each HTTP trigger deploys with
/// the digest of its component, and what the manifest leaves out.
struct SpinApp {
    apps: Vec<(crate::manifest::App, String)>,
    warnings: Vec<String>,
}

impl SpinApp {
    fn read(
        spin: &SpinDocument,
        config: &std::collections::BTreeMap<String, String>,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, String> {
        use crate::manifest::{Manifest, Source};
        let manifest = Manifest::parse(&spin.manifest)?;
        let mut digests = std::collections::BTreeMap::new();
        for (id, source) in manifest.components() {
            let digest = match (spin.components.get(id), source) {
                (Some(digest), _) => digest.clone(),
                (None, Source::Digest(digest)) => digest.clone(),
                (None, Source::File(path)) => {
                    return Err(format!(
                        "spin.components: no digest for component {id:?} ({path}): upload it \
                         to /v1/components and name its digest here"
                    ));
                }
            };
            digests.insert(id.to_owned(), digest);
        }
        let apps = manifest
            .apps(config, secrets)?
            .into_iter()
            .map(|app| {
                let digest = digests[&app.id].clone();
                (app, digest)
            })
            .collect();
        Ok(Self {
            apps,
            warnings: manifest.warnings().to_vec(),
        })
    }
}

/// A Spin application to deploy: its manifest's text, and the digest of
/// each component it names that was uploaded.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinDocument {
    manifest: String,
    #[serde(default)]
    components: std::collections::BTreeMap<String, String>,
}

impl Api {
    /// The API, or `None` where no token is configured (then `/v1` is off).
    pub fn new(settings: AdminApi, recorder: &crate::metrics::Recorder) -> Option<Self> {
        let token = settings.token?;
        let results = recorder.scope(|| {
            let result =
                |r: &'static str| metrics::counter!(crate::metrics::ADMIN_REQUESTS, "result" => r);
            Results {
                ok: result("ok"),
                refused: result("refused"),
                unauthorized: result("unauthorized"),
                failed: result("failed"),
            }
        });
        Some(Self {
            settings,
            token: parking_lot::RwLock::new(token),
            results,
        })
    }

    /// Takes a new token (a reload read a changed token file): the old one
    /// is refused from now on.
    pub fn rotate(&self, token: Digest) {
        *self.token.write() = token;
    }

    pub async fn handle(
        &self,
        fleet: &Fleet,
        req: Request<Incoming>,
        secure: bool,
    ) -> Response<OutBody> {
        // Refused before the token is looked at: it crossed the network in
        // clear already, and must not be taken as if it had not.
        let answer = if self.settings.require_tls && !secure {
            Err(Failure(
                Problem::TlsRequired,
                "the admin API takes requests over HTTPS alone (admin-require-tls): send it to \
                 https:// on the same port, and replace the token if it crossed a network"
                    .into(),
            ))
        } else if self.authorized(&req) {
            self.route(fleet, req).await
        } else {
            Err(Failure(
                Problem::Unauthorized,
                "unauthorized: send the admin token as Authorization: Bearer <token>".into(),
            ))
        };
        let (status, body, content_type) = match answer {
            Ok((status, body)) => {
                self.results.ok.increment(1);
                (status, body, "application/json")
            }
            Err(Failure(problem, detail)) => {
                let status = problem.status();
                match status {
                    StatusCode::UNAUTHORIZED => &self.results.unauthorized,
                    s if s.is_server_error() => &self.results.failed,
                    _ => &self.results.refused,
                }
                .increment(1);
                let body = problem.document(&detail);
                (status, body, "application/problem+json")
            }
        };
        let mut text = body.to_string();
        text.push('\n');
        let mut response = Response::new(full(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runner admin\""),
            );
        }
        response
    }

    /// Compares digests of the tokens, so the time taken says nothing of
    /// where a guess differs, nor of the token's length.
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let expected = *self.token.read();
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| Digest::of(given.trim().as_bytes()).matches(&expected))
    }

    async fn route(&self, fleet: &Fleet, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
        match (req.method().clone(), segments.as_slice()) {
            (Method::PUT, ["components"]) => self.put_component(fleet, req).await,
            (Method::GET, ["components"]) => Ok((StatusCode::OK, components(fleet))),
            (Method::DELETE, ["components", digest]) => {
                let digest = Digest::parse(digest).map_err(Failure::bad)?;
                fleet.remove_component(&digest).await?;
                Ok((StatusCode::OK, json!({ "removed": digest.to_string() })))
            }
            (Method::POST, ["secrets", "reseal"]) => {
                if fleet.sealer().is_none() {
                    return Err(Failure::bad(
                        "this runner has no --secrets-key-file to seal secrets with",
                    ));
                }
                let resealed = fleet
                    .reseal()
                    .await
                    .map_err(|e| Failure(Problem::Failed, format!("{e:#}")))?;
                Ok((StatusCode::OK, json!({ "resealed": resealed })))
            }
            (Method::GET, ["tenants"]) => list(fleet, &query),
            (Method::GET, ["tenants", name]) => {
                let tenant = fleet
                    .get(name)
                    .ok_or_else(|| Refused::NotFound(format!("no tenant {name:?}")))?;
                Ok((StatusCode::OK, describe(&tenant)))
            }
            (Method::PUT, ["tenants", name]) => {
                let name = name.to_string();
                self.put_tenant(fleet, &name, req).await
            }
            (Method::DELETE, ["tenants", name]) => {
                let purge = match param(&query, "purge") {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return Err(Failure::bad(format!(
                            "purge must be true or false, not {other:?}"
                        )));
                    }
                };
                fleet
                    .remove(name, purge, self.settings.grace, Source::Api)
                    .await?;
                Ok((StatusCode::OK, json!({ "removed": name, "purged": purge })))
            }
            (
                _,
                ["components"]
                | ["components", _]
                | ["tenants"]
                | ["tenants", _]
                | ["secrets", "reseal"],
            ) => Err(Failure(
                Problem::MethodNotAllowed,
                format!("{} is not allowed on {path}", req.method()),
            )),
            _ => Err(Failure(
                Problem::NoRoute,
                format!(
                    "no route {path}: the API has /v1/components[/{{digest}}], \
                     /v1/tenants[/{{name}}] and /v1/secrets/reseal"
                ),
            )),
        }
    }

    async fn put_component(&self, fleet: &Fleet, req: Request<Incoming>) -> Answer {
        let max = self.settings.max_component_bytes;
        let bytes = self.body(req, max).await?;
        let (loaded, new) = fleet.upload(bytes.clone()).await?;
        if new {
            tracing::info!(
                component = %loaded.digest,
                bytes = bytes.len(),
                "component added through the admin API"
            );
        }
        let status = if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, json!({ "digest": loaded.digest.to_string() })))
    }

    async fn put_tenant(&self, fleet: &Fleet, name: &str, req: Request<Incoming>) -> Answer {
        crate::tenant::validate_name(name).map_err(Failure::bad)?;
        let body = self.body(req, MAX_TENANT_BODY as u64).await?;
        let document: Value = serde_json::from_slice(&body)
            .map_err(|e| Failure::bad(format!("the tenant document: {e}")))?;
        // serde would take a struct from an array too, by position.
        for (what, value) in [
            ("the tenant document", Some(&document)),
            ("limits", document.get("limits")),
        ] {
            if value.is_some_and(|v| !v.is_object()) {
                return Err(Failure::bad(format!(
                    "{what} must be a JSON object, as in {{\"component\": \"default\", \"limits\": {{\"fuel\": 1000000}}}}"
                )));
            }
        }
        let document: TenantDocument = serde_json::from_value(document)
            .map_err(|e| Failure::bad(format!("the tenant document: {e}")))?;
        let mut warnings = Vec::new();
        let mut config = document.config;
        if document.spin.is_some() && document.component.is_some() {
            return Err(Failure::bad(
                "the tenant document names a component and a Spin manifest; the manifest \
                 names its component",
            ));
        }
        let mut component = document.component.unwrap_or_else(|| "default".into());
        let secrets = match document.secrets {
            Some(_) if fleet.sealer().is_none() => {
                return Err(Failure::bad(
                    "secrets: the admin API takes secrets only to keep them encrypted, under a \
                     key from --secrets-key-file, which this runner has not; give them in the \
                     tenants file by reference ({ file = \"...\" } or { env = \"...\" })",
                ));
            }
            Some(given) => given
                .into_iter()
                .map(|(name, value)| match value {
                    Value::String(value) => Ok((name, value)),
                    _ => Err(Failure::bad(format!("secrets.{name}: expected a string"))),
                })
                .collect::<Result<_, _>>()?,
            None => std::collections::BTreeMap::new(),
        };
        let mut secrets = secrets;
        // The manifest's settings first, then the document's own.
        let settle = |manifest: Option<toml::Table>| -> Result<Limits, Failure> {
            let mut limits = fleet.defaults();
            if let Some(set) = manifest {
                let file: LimitsFile = set
                    .try_into()
                    .map_err(|e| Failure::bad(format!("spin.manifest: {e}")))?;
                limits
                    .overlay(&file, "spin.manifest: ", &|_| false)
                    .map_err(|e| Failure::bad(format!("{e:#}")))?;
            }
            limits
                .overlay(&document.limits, "limits: ", &|_| false)
                .map_err(|e| Failure::bad(format!("{e:#}")))?;
            limits
                .validate("limits: ")
                .map_err(|e| Failure::bad(format!("{e:#}")))?;
            Ok(limits)
        };
        let vars_of = |config,
                       secrets: std::collections::BTreeMap<String, String>,
                       limits: &Limits| {
            if !secrets.is_empty() && fleet.sealer().is_none() {
                return Err(Failure::bad(
                    "spin.manifest: its secret variables are secrets, which the admin API keeps \
                     only encrypted, under a key from --secrets-key-file, which this runner has \
                     not",
                ));
            }
            let secrets = secrets
                .into_iter()
                .map(|(name, value)| (name, Secret::new(value)))
                .collect();
            let vars = fleet.default_vars().under(config, secrets);
            vars.check(limits.var_limits()).map_err(Failure::bad)?;
            Ok(vars)
        };
        let mut parts = Vec::new();
        let mut id = String::new();
        let limits = match document.spin {
            None => settle(None)?,
            Some(spin) => {
                let app = SpinApp::read(&spin, &config, &secrets).map_err(Failure::bad)?;
                warnings = app.warnings;
                let mut apps = app.apps.into_iter();
                let Some((first, digest)) = apps.next() else {
                    return Err(Failure::bad("spin.manifest: no HTTP component"));
                };
                for (app, digest) in apps {
                    let limits = settle(Some(app.limits))?;
                    parts.push(crate::fleet::Part {
                        id: app.id,
                        component: fleet.component(&digest).await?,
                        vars: vars_of(app.config, app.secrets, &limits)?,
                        limits,
                    });
                }
                (config, secrets) = (first.config, first.secrets);
                component = digest;
                id = first.id;
                settle(Some(first.limits))?
            }
        };
        let vars = vars_of(config, secrets, &limits)?;
        let component = fleet.component(&component).await?;
        let mut version = Version::new(component, limits, vars).with_parts(parts);
        version.id = id;
        if let Some(tls) = document.tls {
            if fleet.sealer().is_none() {
                return Err(Failure::bad(
                    "tls: the admin API takes a certificate's key only to keep it encrypted, \
                     under a key from --secrets-key-file, which this runner has not; give it in \
                     the tenants file by reference ([tenants.NAME.tls] key = { file = \"...\" })",
                ));
            }
            version.tls = Some(crate::tls::TenantCert {
                cert: tls.cert,
                key: Secret::new(tls.key),
            });
        }
        let change = fleet.put(name, version, Source::Api).await?;
        let tenant = fleet.get(name).ok_or_else(|| {
            Failure(
                Problem::Conflict,
                format!("tenant {name:?} was removed meanwhile"),
            )
        })?;
        let status = match change {
            Change::Created => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        let mut body = describe(&tenant);
        body["change"] = change.as_str().into();
        if !warnings.is_empty() {
            body["warnings"] = warnings.into();
        }
        Ok((status, body))
    }

    /// The whole request body, up to `max` bytes and within the body-read
    /// timeout.
    async fn body(&self, req: Request<Incoming>, max: u64) -> Result<Bytes, Failure> {
        let too_large = || {
            Failure(
                Problem::BodyTooLarge,
                format!("the body is larger than the limit of {max} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(too_large());
        }
        let limited = http_body_util::Limited::new(req.into_body(), max as usize);
        let timeout: Duration = self.settings.body_read_timeout;
        match tokio::time::timeout(timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(Failure::bad(format!("the body could not be read: {e}"))),
            Err(_) => Err(Failure(
                Problem::BodyTimeout,
                format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }
}

/// `GET /v1/tenants`: a page of tenants in name order. The cursor is the
/// last name of the page before, so a tenant that exists throughout a walk
/// is listed exactly once, whatever else is added or removed meanwhile.
fn list(fleet: &Fleet, query: &str) -> Answer {
    let limit = match param(query, "limit") {
        None => PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(Failure::bad(format!(
                    "limit must be a whole number from 1 to {MAX_PAGE}, not {text:?}"
                )));
            }
        },
    };
    let cursor = param(query, "cursor").map(decode);
    let (page, more) = fleet.page(cursor.as_deref(), limit);
    let next = more.then(|| page.last().map(|t| t.name().to_string()));
    let tenants: Vec<Value> = page
        .iter()
        .map(|t| json!({ "name": t.name(), "component": t.component().to_string() }))
        .collect();
    Ok((
        StatusCode::OK,
        json!({ "tenants": tenants, "next": next.flatten(), "total": fleet.len() }),
    ))
}

/// `GET /v1/components`: every component held, by digest.
fn components(fleet: &Fleet) -> Value {
    let held: Vec<Value> = fleet
        .held()
        .into_iter()
        .map(|held| {
            let mut entry = json!({
                "digest": held.digest.to_string(),
                "code_bytes": held.code_bytes,
                "tenants": held.tenants,
            });
            if let Some(unused) = held.unused_for {
                entry["unused_seconds"] = json!(unused.as_secs());
            }
            entry
        })
        .collect();
    json!({ "components": held })
}

/// A tenant as the API shows it.
fn describe(tenant: &Tenant) -> Value {
    let usage = tenant.namespace().usage();
    let limits = tenant.limits();
    let in_flight = limits
        .max_tenant_in_flight
        .saturating_sub(tenant.permits().available_permits());
    let mut described = json!({
        "name": tenant.name(),
        "component": tenant.component().to_string(),
        "handler": tenant.pre().world(),
        "limits": limits.to_json(),
        "config": tenant.vars().config().collect::<std::collections::BTreeMap<_, _>>(),
        // Names only: a secret's value is never shown.
        "secrets": tenant.vars().secret_names().collect::<Vec<_>>(),
        "usage": {
            "keys": usage.keys,
            "bytes": usage.bytes,
            "requests_in_flight": in_flight,
        },
    });
    if !tenant.id().is_empty() {
        described["id"] = tenant.id().into();
    }
    // The certificate by its fingerprint; its key never.
    if let Some(leaf) = tenant.certified().and_then(|c| c.end_entity_cert().ok()) {
        described["tls"] = json!({ "sha256": Digest::of(leaf).to_string() });
    }
    if !tenant.parts().is_empty() {
        let parts: Vec<Value> = tenant
            .parts()
            .iter()
            .map(|part| {
                let mut own = part.limits().to_json();
                own.retain(|key, _| crate::fleet::PART_LIMITS.contains(&key.as_str()));
                json!({
                    "id": part.id(),
                    "component": part.component().to_string(),
                    "handler": part.pre().world(),
                    "limits": own,
                    "config": part.vars().config().collect::<std::collections::BTreeMap<_, _>>(),
                    "secrets": part.vars().secret_names().collect::<Vec<_>>(),
                })
            })
            .collect();
        described["parts"] = parts.into();
    }
    described
}

/// The value of query parameter `name`, still percent-encoded.
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Percent-decoding for a cursor (a tenant name, which needs none, but a
/// client library may encode `-` or `_` all the same).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{decode, param};

    #[test]
    fn query_parameters_are_found_by_name() {
        assert_eq!(param("limit=5&cursor=t9", "cursor"), Some("t9"));
        assert_eq!(param("limit=5&cursor=t9", "limit"), Some("5"));
        assert_eq!(param("purge", "purge"), Some(""));
        assert_eq!(param("", "purge"), None);
        assert_eq!(decode("team%2Da_1"), "team-a_1");
        assert_eq!(decode("100%"), "100%");
    }
}
