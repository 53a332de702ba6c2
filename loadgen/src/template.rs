//! Request templates: the requests a run sends when it is not driving the
//! default guest's built-in ops. One comes from a URL on the command line
//! (with `-m`, `-H`, `-d`); several, drawn by weight, from a TOML file
//! (`--templates FILE`):
//!
//! ```toml
//! [[template]]
//! name = "read"                # default: "METHOD path"
//! weight = 80                  # default: 1
//! method = "GET"               # default: GET, or POST with a body
//! path = "kv/{key}"            # see below
//! headers = { accept = "text/plain" }
//! expect = [200, 404]          # or 200, or "2xx,404"; default: 2xx and 3xx
//!
//! [[template]]
//! name = "write"
//! weight = 20
//! method = "PUT"
//! path = "kv/{key}"
//! body = "a value"             # or body_file = "value.bin" (beside this file)
//! expect = 204
//! ```
//!
//! A `path` without a leading `/` is relative to the tenant's base,
//! `/t/{tenant}/` (`hello` is `/t/t3/hello`); one with a leading `/` is taken
//! as written. Either is appended to the target's base URL. Two placeholders
//! are filled in per request: `{tenant}`, a tenant of `--tenants`, and
//! `{key}`, `k0` … `k{N-1}` of `--keys` (the default guest's key names).
//! A response whose status is not expected counts as an error.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use rand::Rng;
use serde::Deserialize;

use crate::conn::Endpoint;
use crate::tenant::TenantSet;

/// Most templates in a file (each has its own latency histogram per
/// connection).
pub const MAX_TEMPLATES: usize = 256;

/// The statuses that count as success.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Bit `s` set: status `s` (100 … 599) is expected.
    bits: [u64; 10],
}

impl Expect {
    /// Any 2xx or 3xx status, as wrk and oha count success.
    pub fn success() -> Expect {
        let mut e = Expect { bits: [0; 10] };
        for s in 200..400 {
            e.insert(s);
        }
        e
    }

    fn insert(&mut self, status: u16) {
        self.bits[usize::from(status / 64)] |= 1 << (status % 64);
    }

    /// Whether `status` is one of the expected ones.
    #[inline]
    pub fn contains(&self, status: u16) -> bool {
        self.bits
            .get(usize::from(status / 64))
            .is_some_and(|word| word & (1 << (status % 64)) != 0)
    }

    fn from_codes(codes: &[u16]) -> anyhow::Result<Expect> {
        ensure!(!codes.is_empty(), "no status is expected");
        let mut e = Expect { bits: [0; 10] };
        for &code in codes {
            ensure!(
                (100..=599).contains(&code),
                "status {code} is not an HTTP status (100 to 599)"
            );
            e.insert(code);
        }
        Ok(e)
    }
}

/// `200,204,3xx`: statuses and classes.
impl FromStr for Expect {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Expect> {
        let mut codes = Vec::new();
        for item in s.split(',').map(str::trim) {
            match item.as_bytes() {
                [class @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                    let first = u16::from(class - b'0') * 100;
                    codes.extend(first..first + 100);
                }
                _ => codes.push(item.parse().ok().with_context(|| {
                    format!("{item:?} is not a status (such as 200) or a class (such as 2xx)")
                })?),
            }
        }
        Expect::from_codes(&codes)
    }
}

/// The statuses as ranges: `200-399`, `204`.
impl fmt::Debug for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut s = 100;
        while s < 600 {
            if !self.contains(s) {
                s += 1;
                continue;
            }
            let start = s;
            while s + 1 < 600 && self.contains(s + 1) {
                s += 1;
            }
            let sep = if first { "" } else { "," };
            first = false;
            if start == s {
                write!(f, "{sep}{s}")?;
            } else {
                write!(f, "{sep}{start}-{s}")?;
            }
            s += 1;
        }
        Ok(())
    }
}

/// A request path with `{tenant}` and `{key}` placeholders, split once so a
/// request's path is written with no parsing and no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
    /// Whether a part is `{key}`, so a request draws a key only then.
    key: bool,
    /// As written, for names and messages.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    Tenant,
    Key,
}

impl PathTemplate {
    /// Parses a path that starts with `/`, placeholders and a query
    /// included. Bytes outside visible ASCII must be percent-encoded.
    pub fn absolute(text: &str) -> anyhow::Result<PathTemplate> {
        PathTemplate::parse(text, text)
    }

    /// Parses `full`; messages name the path as the user wrote it, `text`.
    fn parse(full: &str, text: &str) -> anyhow::Result<PathTemplate> {
        ensure!(full.starts_with('/'), "path {text:?} must start with '/'");
        let mut parts = Vec::new();
        let mut rest = full;
        while !rest.is_empty() {
            let literal_end = rest.find('{').unwrap_or(rest.len());
            let literal = &rest[..literal_end];
            if let Some(bad) = literal
                .bytes()
                .find(|b| !b.is_ascii_graphic() || *b == b'#' || *b == b'}')
            {
                bail!(
                    "path {text:?} has the byte {:?}; write spaces and non-ASCII \
                     percent-encoded, and no '#' or unpaired braces",
                    char::from(bad)
                );
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.as_bytes().into()));
            }
            rest = &rest[literal_end..];
            if rest.is_empty() {
                break;
            }
            let (part, len) = if rest.starts_with("{tenant}") {
                (Part::Tenant, "{tenant}".len())
            } else if rest.starts_with("{key}") {
                (Part::Key, "{key}".len())
            } else {
                let shown = rest.find('}').map_or(rest, |end| &rest[..=end]);
                bail!(
                    "path {text:?} has the placeholder {shown:?}; the known ones are \
                     {{tenant}} and {{key}}"
                );
            };
            parts.push(part);
            rest = &rest[len..];
        }
        Ok(PathTemplate {
            key: parts.contains(&Part::Key),
            parts,
            text: text.to_owned(),
        })
    }

    /// Parses a template file's `path`: with a leading `/` as written,
    /// otherwise relative to `/t/{tenant}/`.
    pub fn in_tenant(text: &str) -> anyhow::Result<PathTemplate> {
        ensure!(!text.is_empty(), "a path is needed");
        if text.starts_with('/') {
            return PathTemplate::absolute(text);
        }
        PathTemplate::parse(&format!("/t/{{tenant}}/{text}"), text)
    }

    pub fn uses_tenant(&self) -> bool {
        self.parts.contains(&Part::Tenant)
    }

    #[inline]
    pub fn uses_key(&self) -> bool {
        self.key
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Appends the path for tenant `tenant` (an index into `tenants`) and key
    /// `key` to `out`.
    #[inline]
    pub fn write(&self, out: &mut BytesMut, tenants: &TenantSet, tenant: usize, key: usize) {
        for part in &self.parts {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                Part::Tenant => tenants.write(tenant, out),
                // Writes into a BytesMut cannot fail.
                Part::Key => {
                    let _ = write!(out, "k{key}");
                }
            }
        }
    }
}

/// Splits a full URL, `http://host:port/path?query`, into the server it
/// names and the request path (`/` when it has none). The path may hold
/// placeholders, which `http::Uri` would refuse, so the split is done here.
pub fn split_url(url: &str) -> anyhow::Result<(Endpoint, PathTemplate)> {
    let Some(scheme_end) = url.find("://") else {
        bail!("URL {url:?} has no scheme; write it as http://host:port/path");
    };
    let after = scheme_end + "://".len();
    let authority_end = url[after..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after + i);
    let base = Endpoint::parse(&url[..authority_end])?;
    let rest = &url[authority_end..];
    let path = match rest.as_bytes().first() {
        None => "/".to_owned(),
        Some(b'/') => rest.to_owned(),
        Some(_) => format!("/{rest}"),
    };
    let path = PathTemplate::absolute(&path).with_context(|| format!("URL {url:?}"))?;
    Ok((base, path))
}

/// `-m`, or a template's `method`: any HTTP method, case-insensitive.
pub fn parse_method(text: &str) -> anyhow::Result<Method> {
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .ok()
        .filter(|_| !text.trim().is_empty())
        .with_context(|| format!("{text:?} is not an HTTP method"))
}

/// `-H "Name: value"`.
pub fn parse_header(line: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = line
        .split_once(':')
        .with_context(|| format!("header {line:?} is not \"Name: value\""))?;
    header(name, value)
}

/// A header that loadgen may send as given: not one it writes itself to
/// frame the body.
fn header(name: &str, value: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let name: HeaderName = name
        .trim()
        .parse()
        .with_context(|| format!("{:?} is not a header name", name.trim()))?;
    ensure!(
        name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING,
        "header {name} is set by loadgen from the body"
    );
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("the value of header {name} is not a valid header value"))?;
    Ok((name, value))
}

/// Header lines as sent, `Name: value\r\n` each.
pub(crate) fn render_headers(headers: &[(HeaderName, HeaderValue)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One kind of request.
#[derive(Debug, Clone)]
pub struct Template {
    /// In the report; unique within a run.
    pub name: String,
    pub weight: f64,
    pub method: Method,
    pub path: PathTemplate,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `headers` as sent.
    pub(crate) header_lines: Vec<u8>,
    pub body: Bytes,
    pub expect: Expect,
}

impl Template {
    /// A template; the method defaults to GET, or POST with a body, and the
    /// name to `METHOD path`.
    pub fn new(
        name: Option<String>,
        method: Option<Method>,
        path: PathTemplate,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        expect: Expect,
    ) -> Template {
        let method = method.unwrap_or(if body.is_empty() {
            Method::GET
        } else {
            Method::POST
        });
        Template {
            name: name.unwrap_or_else(|| format!("{method} {}", path.as_str())),
            weight: 1.0,
            header_lines: render_headers(&headers),
            method,
            path,
            headers,
            body,
            expect,
        }
    }
}

/// Templates drawn by weight.
#[derive(Debug, Clone)]
pub struct Templates {
    templates: Vec<Template>,
    /// Cumulative weights; the last is the total.
    cumulative: Vec<f64>,
}

impl Templates {
    /// At least one template, each with a positive weight and its own name.
    pub fn new(templates: Vec<Template>) -> anyhow::Result<Templates> {
        ensure!(!templates.is_empty(), "no request template");
        ensure!(
            templates.len() <= MAX_TEMPLATES,
            "{} templates; at most {MAX_TEMPLATES}",
            templates.len()
        );
        let mut cumulative = Vec::with_capacity(templates.len());
        let mut total = 0.0;
        for (i, t) in templates.iter().enumerate() {
            ensure!(
                t.weight.is_finite() && t.weight > 0.0,
                "template {:?}: the weight must be a positive number, got {}",
                t.name,
                t.weight
            );
            ensure!(
                !templates[..i].iter().any(|other| other.name == t.name),
                "two templates are named {:?}; give each a name of its own",
                t.name
            );
            total += t.weight;
            cumulative.push(total);
        }
        Ok(Templates {
            templates,
            cumulative,
        })
    }

    /// Reads a templates file; `expect` is the default for templates that
    /// name no status, and a `body_file` is found beside the file.
    pub fn from_file(path: &Path, expect: Expect) -> anyhow::Result<Templates> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Templates::parse(&text, dir, expect).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a templates file.
    pub fn parse(text: &str, dir: &Path, expect: Expect) -> anyhow::Result<Templates> {
        let file: FileToml = toml::from_str(text)?;
        ensure!(!file.template.is_empty(), "no [[template]] in the file");
        let templates = file
            .template
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let label = match &raw.name {
                    Some(name) => format!("template {name:?}"),
                    None => format!("template {}", i + 1),
                };
                raw.build(dir, expect).context(label)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Templates::new(templates)
    }

    /// Draws one template's index.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let n = self.cumulative.len();
        if n == 1 {
            return 0;
        }
        let x = rng.random::<f64>() * self.cumulative[n - 1];
        self.cumulative.partition_point(|&c| c <= x).min(n - 1)
    }

    pub fn get(&self, index: usize) -> &Template {
        &self.templates[index]
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Always false: there is at least one template.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.templates.iter()
    }

    /// The share of requests expected for template `index`.
    pub fn fraction(&self, index: usize) -> f64 {
        let below = if index == 0 {
            0.0
        } else {
            self.cumulative[index - 1]
        };
        (self.cumulative[index] - below) / self.cumulative[self.cumulative.len() - 1]
    }
}

/// A templates file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    template: Vec<TemplateToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateToml {
    name: Option<String>,
    #[serde(default = "one")]
    weight: f64,
    method: Option<String>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    body_file: Option<PathBuf>,
    expect: Option<ExpectToml>,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a status (200), a list of statuses ([200, 404]) or a string (\"2xx,404\")"
)]
enum ExpectToml {
    One(u16),
    List(Vec<u16>),
    Text(String),
}

impl TemplateToml {
    fn build(self, dir: &Path, default_expect: Expect) -> anyhow::Result<Template> {
        if let Some(name) = &self.name {
            ensure!(
                !name.trim().is_empty() && !name.chars().any(char::is_control),
                "a name must be non-empty and printable"
            );
        }
        let path = PathTemplate::in_tenant(&self.path).context("path")?;
        let method = self
            .method
            .as_deref()
            .map(parse_method)
            .transpose()
            .context("method")?;
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let (name, value) = header(name, value).context("headers")?;
            ensure!(
                name != http::header::HOST,
                "headers: set Host for every request with -H, not per template"
            );
            headers.push((name, value));
        }
        let body = match (self.body, self.body_file) {
            (Some(_), Some(_)) => bail!("give body or body_file, not both"),
            (Some(text), None) => Bytes::from(text),
            (None, Some(file)) => {
                let file = dir.join(file);
                Bytes::from(
                    std::fs::read(&file)
                        .with_context(|| format!("body_file: reading {}", file.display()))?,
                )
            }
            (None, None) => Bytes::new(),
        };
        let expect = match self.expect {
            None => Ok(default_expect),
            Some(ExpectToml::One(code)) => Expect::from_codes(&[code]),
            Some(ExpectToml::List(codes)) => Expect::from_codes(&codes),
            Some(ExpectToml::Text(text)) => text.parse(),
        }
        .context("expect")?;
        let mut template = Template::new(self.name, method, path, headers, body, expect);
        template.weight = self.weight;
        Ok(template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn render(path: &PathTemplate, tenants: &TenantSet, tenant: usize, key: usize) -> String {
        let mut out = BytesMut::new();
        path.write(&mut out, tenants, tenant, key);
        String::from_utf8(out.to_vec()).expect("ASCII")
    }

    fn parse(text: &str) -> anyhow::Result<Templates> {
        Templates::parse(text, Path::new("/nonexistent"), Expect::success())
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("should be rejected"))
    }

    #[test]
    fn expected_statuses() {
        let e = Expect::success();
        assert!(e.contains(200) && e.contains(204) && e.contains(399));
        assert!(!e.contains(199) && !e.contains(404) && !e.contains(0) && !e.contains(9999));
        assert_eq!(format!("{e:?}"), "200-399");
        let e: Expect = "204, 404,5xx".parse().expect("valid");
        assert_eq!(format!("{e:?}"), "204,404,500-599");
        assert!(e.contains(503) && !e.contains(200));
        for bad in ["", "20", "600", "2yy", "ok", "6xx"] {
            assert!(bad.parse::<Expect>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_relative_to_the_tenant_or_absolute() {
        let tenants: TenantSet = "shop-{0..9}".parse().expect("valid");
        let p = PathTemplate::in_tenant("kv/{key}?bucket=b").expect("valid");
        assert_eq!(render(&p, &tenants, 3, 42), "/t/shop-3/kv/k42?bucket=b");
        assert!(p.uses_tenant() && p.uses_key());
        assert_eq!(p.as_str(), "kv/{key}?bucket=b");
        let p = PathTemplate::in_tenant("/t/{tenant}/hello").expect("valid");
        assert_eq!(render(&p, &tenants, 9, 0), "/t/shop-9/hello");
        let p = PathTemplate::in_tenant("/healthz").expect("valid");
        assert_eq!(render(&p, &tenants, 1, 1), "/healthz");
        assert!(!p.uses_tenant() && !p.uses_key());
        let e = |t: &str| format!("{:#}", PathTemplate::in_tenant(t).expect_err("bad"));
        assert!(e("a b").contains("percent-encoded"));
        assert!(e("kv/{id}").contains("placeholder \"{id}\""));
        assert!(e("kv/{key").contains("placeholder"));
        assert!(e("a}b").contains("unpaired"));
        assert!(e("").contains("needed"));
    }

    #[test]
    fn urls_split_into_server_and_path() {
        let (base, path) = split_url("http://127.0.0.1:8080/t/app/hello?x=1").expect("valid");
        assert_eq!(base.to_string(), "http://127.0.0.1:8080");
        assert_eq!(path.as_str(), "/t/app/hello?x=1");
        let (base, path) = split_url("http://localhost").expect("valid");
        assert_eq!((base.port, path.as_str()), (80, "/"));
        let (_, path) = split_url("http://h:1?q").expect("valid");
        assert_eq!(path.as_str(), "/?q");
        let (_, path) = split_url("http://h:1/t/{tenant}/kv/{key}").expect("valid");
        assert!(path.uses_tenant() && path.uses_key());
        let e = |u: &str| format!("{:#}", split_url(u).expect_err("bad"));
        assert!(e("127.0.0.1:8080/hello").contains("no scheme"));
        assert!(e("ftp://h/x").contains("http and https are supported"));
        assert!(e("http://h:1/a b").contains("percent-encoded"));
        assert!(e("http:///x").contains("invalid URL"));
    }

    #[test]
    fn methods_and_headers() {
        assert_eq!(parse_method("post").expect("valid"), Method::POST);
        assert_eq!(parse_method("PURGE").expect("valid").as_str(), "PURGE");
        assert!(parse_method("").is_err());
        assert!(parse_method("GE T").is_err());
        let (name, value) = parse_header("X-Api-Key:  secret ").expect("valid");
        assert_eq!(
            (name.as_str(), value.to_str().ok()),
            ("x-api-key", Some("secret"))
        );
        let (name, value) = parse_header("Host: example.com:80").expect("valid");
        assert_eq!(
            (name.as_str(), value.as_bytes()),
            ("host", &b"example.com:80"[..])
        );
        let e = |h: &str| format!("{:#}", parse_header(h).expect_err("bad"));
        assert!(e("no colon").contains("Name: value"));
        assert!(e("bad name: x").contains("not a header name"));
        assert!(e("x: a\nb").contains("not a valid header value"));
        assert!(e("Content-Length: 5").contains("set by loadgen"));
        assert!(e("transfer-encoding: chunked").contains("set by loadgen"));
        let lines = render_headers(&[
            parse_header("a: 1").expect("valid"),
            parse_header("b: two").expect("valid"),
        ]);
        assert_eq!(lines, b"a: 1\r\nb: two\r\n");
    }

    #[test]
    fn a_templates_file() {
        let dir = std::env::temp_dir().join(format!("loadgen-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("value.bin"), b"\x00\x01bytes").expect("write");
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            r#"
            [[template]]
            name = "read"
            weight = 3
            path = "kv/{key}"
            expect = [200, 404]

            [[template]]
            weight = 1.5
            method = "put"
            path = "kv/{key}"
            headers = { "Content-Type" = "application/octet-stream", x-n = "1" }
            body_file = "value.bin"
            expect = 204

            [[template]]
            name = "post"
            path = "/t/{tenant}/incr/n"
            body = "x"
            expect = "2xx"

            [[template]]
            name = "health"
            path = "/healthz"
            "#,
        )
        .expect("write");
        let t = Templates::from_file(&file, Expect::success()).expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(t.len(), 4);
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["read", "PUT kv/{key}", "post", "health"]);
        let read = t.get(0);
        assert_eq!((read.method.as_str(), read.weight), ("GET", 3.0));
        assert_eq!(format!("{:?}", read.expect), "200,404");
        assert!(read.body.is_empty() && read.header_lines.is_empty());
        let put = t.get(1);
        assert_eq!(put.method, Method::PUT);
        assert_eq!(&put.body[..], b"\x00\x01bytes");
        assert_eq!(
            put.header_lines,
            b"content-type: application/octet-stream\r\nx-n: 1\r\n"
        );
        assert_eq!(format!("{:?}", put.expect), "204");
        // A body without a method is a POST.
        let post = t.get(2);
        assert_eq!((post.method.as_str(), &post.body[..]), ("POST", &b"x"[..]));
        assert_eq!(format!("{:?}", post.expect), "200-299");
        assert_eq!(format!("{:?}", t.get(3).expect), "200-399");
        assert!((t.fraction(0) - 3.0 / 6.5).abs() < 1e-12);
        assert!((t.fraction(3) - 1.0 / 6.5).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_files() {
        assert!(err("").contains("no [[template]]"));
        assert!(err("[[template]]\npath = \"a\"\nwieght = 2").contains("unknown field `wieght`"));
        assert!(err("[[template]]\nname = \"x\"").contains("missing field `path`"));
        assert!(err("[[template]]\npath = \"a\"\nweight = 0").contains("positive"));
        assert!(
            err("[[template]]\npath = \"a\"\n[[template]]\npath = \"a\"")
                .contains("two templates are named \"GET a\"")
        );
        assert!(
            err("[[template]]\nname = \"h\"\npath = \"a\"\nheaders = { host = \"x\" }")
                .contains("template \"h\": headers: set Host")
        );
        assert!(
            err("[[template]]\npath = \"a\"\nbody = \"x\"\nbody_file = \"f\"").contains("not both")
        );
        assert!(
            err("[[template]]\npath = \"a\"\nbody_file = \"missing\"")
                .contains("reading /nonexistent/missing")
        );
        assert!(err("[[template]]\npath = \"a\"\nexpect = 700").contains("not an HTTP status"));
        assert!(err("[[template]]\npath = \"a\"\nexpect = true").contains("a list of statuses"));
        assert!(err("[[template]]\npath = \"a\"\nmethod = \"\"").contains("template 1: method"));
        assert!(err("[other]").contains("unknown field `other`"));
    }

    #[test]
    fn samples_by_weight() {
        let t =
            parse("[[template]]\npath = \"a\"\nweight = 3\n[[template]]\npath = \"b\"\nweight = 1")
                .expect("valid");
        let mut rng = SmallRng::seed_from_u64(5);
        let n = 10_000;
        let a = (0..n).filter(|_| t.sample(&mut rng) == 0).count();
        // Binomial(10 000, 0.75): σ ≈ 43; five σ is 217.
        assert!((a as i64 - 7500).abs() < 217, "{a}");
        let single = parse("[[template]]\npath = \"a\"").expect("valid");
        assert!((0..100).all(|_| single.sample(&mut rng) == 0));
    }
}
