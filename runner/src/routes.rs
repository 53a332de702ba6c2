//! HTTP routes in Spin's syntax, matched as Spin matches them: `/hello`
//! is that path alone, `/api/...` is `/api` and everything below it,
//! `/users/:id` names a segment, and the most specific route wins. A
//! tenant with a route (`route`, or a Spin manifest's `[[trigger.http]]`)
//! serves only the paths it matches, and its component gets Spin's
//! `spin-*` headers saying how the request matched.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::settings::Setting;

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

/// A tenant's routes, ready to match.
pub struct Routes {
    router: routefinder::Router<String>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<&String> = self.router.iter().map(|(_, raw)| raw).collect();
        f.debug_struct("Routes").field("routes", &routes).finish()
    }
}

impl Routes {
    /// The routes of `route`; `None` when it is not set.
    pub fn new(route: &Route) -> Option<Self> {
        let text = route.0.as_deref()?;
        let mut router = routefinder::Router::new();
        // Checked when the setting was read.
        let spec = Route::spec(text).ok()?;
        router.add(spec, text.to_owned()).ok()?;
        Some(Self { router })
    }

    /// How `path` (the path below the tenant's mount point, `/` at least)
    /// matches, as the `spin-*` headers Spin gives a component; `None`
    /// when no route matches it.
    pub fn headers(&self, path: &str, full_url: &str) -> Option<HeaderMap> {
        let best = self.router.best_match(path)?;
        let raw = best.handler().as_str();
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
        Some(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(text: &str) -> Routes {
        Routes::new(&Route::parse_flag(text).unwrap()).unwrap()
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
            let headers = r.headers(path, "http://h/x").expect(path);
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
        let headers = all.headers("/a/b", "u").unwrap();
        assert_eq!(header(&headers, "spin-path-info"), "/a/b");
        assert_eq!(header(&headers, "spin-component-route"), "");
    }

    #[test]
    fn an_exact_route_takes_its_path_alone_and_named_segments_are_headers() {
        let r = routes("/hello");
        let headers = r.headers("/hello", "u").unwrap();
        assert_eq!(header(&headers, "spin-path-info"), "");
        assert!(r.headers("/hello/there", "u").is_none());
        let r = routes("/users/:id");
        let headers = r.headers("/users/42", "u").unwrap();
        assert_eq!(header(&headers, "spin-path-match-id"), "42");
        assert!(r.headers("/users", "u").is_none());
    }

    #[test]
    fn a_route_is_checked_when_it_is_read() {
        assert_eq!(Route::parse_flag("").unwrap(), Route::default());
        assert!(Routes::new(&Route::default()).is_none());
        assert_eq!(
            Route::parse_flag("api/...").unwrap_err(),
            "\"api/...\" is not a route: it must start with /"
        );
        assert_eq!(Route::parse_flag(" /x ").unwrap().show(), "/x");
    }
}
