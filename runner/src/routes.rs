//! How a request finds its tenant and component.
//!
//! - Host names: a tenant may claim hosts (`hosts`), and the runner may
//!   map the subdomains of a suffix to tenants (`--host-suffix`); a request
//!   whose host is one of them reaches that tenant with its path unchanged.
//! - HTTP routes in Spin's syntax, matched as Spin matches them: `/hello`
//!   is that path alone, `/api/...` is `/api` and everything below it,
//!   `/users/:id` names a segment, and the most specific route wins. A
//!   tenant with a route (`route`, or a Spin manifest's `[[trigger.http]]`)
//!   serves only the paths it matches, and its component gets Spin's
//!   `spin-*` headers saying how the request matched.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::outbound::policy::{normalize_host, valid_name};
use crate::settings::{Item, List, Setting};

/// A host name as requests are matched against it: lowercase, without a
/// trailing dot or a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Hash)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Item for HostName {
    const EXPECTED: &'static str = "a list of host names such as [\"shop.example.com\"]";

    fn parse(text: &str) -> Result<Self, String> {
        let name = normalize_host(text.trim());
        if name.contains(':') {
            return Err(format!(
                "{text:?} is not a host name: a host is named without a port"
            ));
        }
        if !valid_name(&name) || name.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "{text:?} is not a host name such as shop.example.com"
            ));
        }
        Ok(HostName(name))
    }
}

/// Host names: a tenant's `hosts`, or the runner's `host-suffix`es.
pub type HostNames = List<HostName>;

/// The host a request names, as claims are compared: its `Host` header
/// (HTTP/1.1) or its URI's authority (HTTP/2's `:authority`), lowercase,
/// without a port or a trailing dot.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let authority = match headers.get(http::header::HOST) {
        Some(host) => host.to_str().ok()?,
        None => uri.authority()?.as_str(),
    };
    // A bracketed IPv6 literal keeps its colons; anything else loses its
    // port.
    let host = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    };
    Some(normalize_host(host))
}

/// The tenant a subdomain of one of `suffixes` names: `alice` for
/// `alice.apps.example.com` under `apps.example.com`; one label only.
pub fn suffix_tenant<'a>(host: &'a str, suffixes: &HostNames) -> Option<&'a str> {
    suffixes.0.iter().find_map(|suffix| {
        let label = host.strip_suffix(suffix.as_str())?.strip_suffix('.')?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    })
}

/// A route, as written; parsed when a tenant is made with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd)]
pub struct Route(Option<String>);

impl Route {
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Spin's route syntax in routefinder's: a trailing `/...` is `/*`.
    fn spec(text: &str) -> Result<routefinder::RouteSpec, String> {
        let spec = match text.strip_suffix("/...") {
            Some(prefix) => format!("{prefix}/*"),
            None => text.to_owned(),
        };
        if !spec.starts_with('/') {
            return Err(format!("{text:?} is not a route: it must start with /"));
        }
        spec.as_str()
            .try_into()
            .map_err(|e| format!("{text:?} is not a route: {e}"))
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or(""))
    }
}

impl Setting for Route {
    fn parse_flag(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Route(None));
        }
        Route::spec(text)?;
        Ok(Route(Some(text.to_owned())))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        crate::settings::from_toml_string(value, "a route such as \"/...\" or \"/api/...\"")
    }

    fn show(&self) -> String {
        self.to_string()
    }

    fn is_zero(&self) -> bool {
        self.0.is_none()
    }
}

/// A tenant's routes, ready to match: each leads to one of its
/// components, by index.
pub struct Routes {
    router: routefinder::Router<(String, usize)>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<&(String, usize)> = self.router.iter().map(|(_, raw)| raw).collect();
        f.debug_struct("Routes").field("routes", &routes).finish()
    }
}

impl Routes {
    /// The routes of a tenant's components, in order: the route of
    /// component `i` leads to `i`. `None` when none is set. Of two
    /// components on the same route the later serves it, as in Spin.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a Route>) -> Option<Self> {
        let mut kept: Vec<(&str, usize)> = Vec::new();
        for (i, route) in routes.into_iter().enumerate() {
            let Some(text) = route.0.as_deref() else {
                continue;
            };
            kept.retain(|(other, _)| *other != text);
            kept.push((text, i));
        }
        if kept.is_empty() {
            return None;
        }
        let mut router = routefinder::Router::new();
        for (text, i) in kept {
            // Checked when the setting was read.
            let spec = Route::spec(text).ok()?;
            router.add(spec, (text.to_owned(), i)).ok()?;
        }
        Some(Self { router })
    }

    /// The component `path` (the path below the tenant's mount point, `/`
    /// at least) goes to, and how it matches, as the `spin-*` headers Spin
    /// gives a component; `None` when no route matches it.
    pub fn headers(&self, path: &str, full_url: &str) -> Option<(usize, HeaderMap)> {
        let best = self.router.best_match(path)?;
        let (raw, index) = best.handler();
        let raw = raw.as_str();
        let captures = best.captures();
        // The part of the path the wildcard took, with the slashes Spin
        // keeps around it.
        let info = match captures.wildcard() {
            None => String::new(),
            Some(tail) => match (tail.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".into(),
                (false, false) => format!("/{tail}"),
                (false, true) => format!("/{tail}/"),
            },
        };
        let prefix = raw.strip_suffix("/...").unwrap_or(raw);
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
            {
                headers.insert(name, value);
            }
        };
        put("spin-full-url", full_url);
        put("spin-path-info", &info);
        put("spin-matched-route", raw);
        put("spin-base-path", "/");
        put("spin-raw-component-route", raw);
        put("spin-component-route", prefix);
        for (name, value) in captures.iter() {
            let name = format!("spin-path-match-{}", name.to_ascii_lowercase());
            put(&name, value);
        }
        Some((*index, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(text: &str) -> Routes {
        Routes::new([&Route::parse_flag(text).unwrap()]).unwrap()
    }

    #[test]
    fn the_most_specific_route_picks_the_component() {
        let parsed: Vec<Route> = ["/...", "/api/...", "/api/items", "", "/api/items"]
            .iter()
            .map(|t| Route::parse_flag(t).unwrap())
            .collect();
        let r = Routes::new(&parsed).unwrap();
        let to = |path: &str| r.headers(path, "u").map(|(i, _)| i);
        assert_eq!(to("/"), Some(0));
        assert_eq!(to("/apix"), Some(0));
        assert_eq!(to("/api"), Some(1));
        assert_eq!(to("/api/other"), Some(1));
        // Named twice: the later component serves it.
        assert_eq!(to("/api/items"), Some(4));
        assert!(Routes::new(&[Route::default(), Route::default()]).is_none());
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers.get(name).map_or("<none>", |v| v.to_str().unwrap())
    }

    #[test]
    fn a_wildcard_route_takes_its_prefix_and_everything_below() {
        let r = routes("/api/...");
        for (path, info) in [
            ("/api", ""),
            ("/api/", "/"),
            ("/api/items", "/items"),
            ("/api/items/7/", "/items/7/"),
        ] {
            let (_, headers) = r.headers(path, "http://h/x").expect(path);
            assert_eq!(header(&headers, "spin-path-info"), info, "{path}");
            assert_eq!(header(&headers, "spin-matched-route"), "/api/...");
            assert_eq!(header(&headers, "spin-component-route"), "/api");
            assert_eq!(header(&headers, "spin-raw-component-route"), "/api/...");
            assert_eq!(header(&headers, "spin-base-path"), "/");
            assert_eq!(header(&headers, "spin-full-url"), "http://h/x");
        }
        assert!(r.headers("/apix", "u").is_none());
        assert!(r.headers("/", "u").is_none());
        let all = routes("/...");
        let (_, headers) = all.headers("/a/b", "u").unwrap();
        assert_eq!(header(&headers, "spin-path-info"), "/a/b");
        assert_eq!(header(&headers, "spin-component-route"), "");
    }

    #[test]
    fn an_exact_route_takes_its_path_alone_and_named_segments_are_headers() {
        let r = routes("/hello");
        let (_, headers) = r.headers("/hello", "u").unwrap();
        assert_eq!(header(&headers, "spin-path-info"), "");
        assert!(r.headers("/hello/there", "u").is_none());
        let r = routes("/users/:id");
        let (_, headers) = r.headers("/users/42", "u").unwrap();
        assert_eq!(header(&headers, "spin-path-match-id"), "42");
        assert!(r.headers("/users", "u").is_none());
    }

    #[test]
    fn hosts_compare_without_case_port_or_trailing_dot() {
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::HOST, value.parse().unwrap());
            request_host(&Uri::from_static("/x"), &headers)
        };
        assert_eq!(host("Shop.Example.COM"), Some("shop.example.com".into()));
        assert_eq!(
            host("shop.example.com.:8443"),
            Some("shop.example.com".into())
        );
        assert_eq!(host("[::1]:80"), Some("[::1]".into()));
        assert_eq!(
            request_host(
                &Uri::from_static("https://h2.example.com:443/x"),
                &HeaderMap::new()
            ),
            Some("h2.example.com".into())
        );
        let suffixes = HostNames::parse_flag("apps.example.com").unwrap();
        assert_eq!(
            suffix_tenant("alice.apps.example.com", &suffixes),
            Some("alice")
        );
        assert_eq!(suffix_tenant("a.b.apps.example.com", &suffixes), None);
        assert_eq!(suffix_tenant("apps.example.com", &suffixes), None);
        assert_eq!(suffix_tenant("xapps.example.com", &suffixes), None);
        assert_eq!(
            HostNames::parse_flag("Shop.Example.com., b.example.com")
                .unwrap()
                .show(),
            "shop.example.com,b.example.com"
        );
        assert_eq!(
            HostNames::parse_flag("shop.example.com:443").unwrap_err(),
            "\"shop.example.com:443\" is not a host name: a host is named without a port"
        );
        assert!(HostNames::parse_flag("10.0.0.1").is_err());
    }

    #[test]
    fn a_route_is_checked_when_it_is_read() {
        assert_eq!(Route::parse_flag("").unwrap(), Route::default());
        assert!(Routes::new([&Route::default()]).is_none());
        assert_eq!(
            Route::parse_flag("api/...").unwrap_err(),
            "\"api/...\" is not a route: it must start with /"
        );
        assert_eq!(Route::parse_flag(" /x ").unwrap().show(), "/x");
    }
}
