//! A Spin application's manifest (`spin.toml`, `spin_manifest_version =
//! 2`), read into what deploys it as one tenant: for each HTTP trigger, its
//! component, the settings the manifest gives it (`allowed_outbound_hosts`,
//! `key_value_stores`, the route), and its variables, rendered from the
//! application's, as configuration and secrets. The first trigger's
//! component is the tenant's own; the others are its further parts, and a
//! request goes to the one whose route matches it best, as in Spin.
//!
//! What the runner does not have is named, never dropped: a manifest
//! feature the component needs to work (files, environment, SQLite
//! databases, AI models, dependencies, other executors) is an error; one
//! that only another tool or trigger uses (build sections, other
//! triggers) is a warning the deploy answers with.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Where an HTTP component's Wasm comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file, relative to the manifest's directory.
    File(String),
    /// A digest the runner already holds (`source = { digest = "sha256:..."
    /// }`, as a remote source names it).
    Digest(String),
}

/// A parsed manifest.
#[derive(Debug)]
pub struct Manifest {
    variables: BTreeMap<String, Variable>,
    /// Its HTTP triggers, in the manifest's order.
    triggers: Vec<Http>,
    warnings: Vec<String>,
}

/// One HTTP trigger: its component's id, route (under the application's
/// base), source and settings.
#[derive(Debug)]
struct Http {
    component: String,
    route: String,
    source: Source,
    spec: Component,
}

/// What a manifest deploys for one of its HTTP triggers.
#[derive(Debug, PartialEq)]
pub struct App {
    /// The component's id in the manifest.
    pub id: String,
    /// Tenant settings, as a tenants file's table: `route`,
    /// `allowed-outbound-hosts`, `key-value-stores`.
    pub limits: toml::Table,
    /// The component's variables, rendered: the plain ones...
    pub config: BTreeMap<String, String>,
    /// ...and those made from a `secret = true` application variable.
    pub secrets: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Variable {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    #[allow(dead_code, reason = "read so that it is allowed")]
    description: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct Component {
    source: toml::Value,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(flatten)]
    rest: toml::Table,
}

#[derive(Debug, Deserialize)]
struct Raw {
    spin_manifest_version: toml::Value,
    #[serde(default)]
    application: toml::Table,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, Component>,
    #[serde(flatten)]
    rest: toml::Table,
}

/// Component keys that only build or authoring tools read.
const TOOLING: [&str; 5] = ["build", "tool", "description", "targets", "exclude_files"];

/// Component keys whose feature the runner does not have, with what a
/// component loses without it.
const MISSING: [(&str, &str); 6] = [
    ("files", "the runner mounts no files into components"),
    (
        "environment",
        "the runner sets no environment variables for components",
    ),
    ("sqlite_databases", "the runner serves no SQLite databases"),
    ("ai_models", "the runner serves no AI models"),
    (
        "dependencies",
        "the runner does not compose component dependencies",
    ),
    (
        "dependencies_inherit_configuration",
        "the runner does not compose component dependencies",
    ),
];

fn is_empty(value: &toml::Value) -> bool {
    match value {
        toml::Value::Array(items) => items.is_empty(),
        toml::Value::Table(table) => table.is_empty(),
        toml::Value::String(text) => text.is_empty(),
        toml::Value::Boolean(set) => !set,
        _ => false,
    }
}

impl Manifest {
    /// Reads a manifest's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| format!("spin.toml: {}", e.message()))?;
        if raw.spin_manifest_version != toml::Value::Integer(2) {
            return Err(format!(
                "spin.toml: spin_manifest_version is {}; the runner reads version 2, \
                 the version Spin 2 and later write",
                raw.spin_manifest_version
            ));
        }
        if let Some(key) = raw.rest.keys().next() {
            return Err(format!("spin.toml: unknown key {key:?}"));
        }
        let mut warnings = Vec::new();
        for name in raw.variables.keys() {
            crate::vars::check_name(name, 255).map_err(|why| format!("variables.{name}: {why}"))?;
        }
        for (name, variable) in &raw.variables {
            if variable.default.is_none() && !variable.required {
                return Err(format!(
                    "variables.{name}: a variable needs a default or required = true"
                ));
            }
        }

        // The HTTP trigger's routes; other triggers are named and left.
        let mut routes = Vec::new();
        for (kind, triggers) in &raw.trigger {
            if kind != "http" {
                let components: Vec<String> = triggers
                    .iter()
                    .filter_map(|t| t.get("component").and_then(|c| c.as_str()))
                    .map(str::to_owned)
                    .collect();
                warnings.push(format!(
                    "trigger.{kind}: only HTTP triggers run here; not deployed for it: {}",
                    if components.is_empty() {
                        "its triggers".to_string()
                    } else {
                        components.join(", ")
                    }
                ));
                continue;
            }
            for trigger in triggers {
                routes.push(http_trigger(trigger)?);
            }
        }
        let base = raw
            .application
            .get("trigger")
            .and_then(|t| t.get("http"))
            .and_then(|h| h.get("base"))
            .and_then(|b| b.as_str())
            .unwrap_or("/");
        if routes.is_empty() {
            let others: Vec<String> = raw
                .trigger
                .keys()
                .filter(|kind| *kind != "http")
                .map(|kind| format!("trigger.{kind}"))
                .collect();
            return Err(if others.is_empty() {
                "spin.toml: no [[trigger.http]]: nothing to serve".into()
            } else {
                format!(
                    "spin.toml: {} but no [[trigger.http]]: the runner runs HTTP triggers \
                     alone, so nothing would serve",
                    others.join(", ")
                )
            });
        }
        // As Spin's router: of two triggers on one route, the later serves
        // it, and the earlier nothing.
        let mut kept: Vec<(String, String)> = Vec::new();
        for (component, route) in routes {
            let route = based(base, &route);
            if let Some(i) = kept.iter().position(|(_, r)| *r == route) {
                let (replaced, _) = kept.remove(i);
                warnings.push(format!(
                    "trigger.http: route {route:?} is named twice; component {component:?} \
                     serves it, not {replaced:?}, as in Spin"
                ));
            }
            kept.push((component, route));
        }
        let mut triggers = Vec::with_capacity(kept.len());
        for (component, route) in kept {
            let spec = raw.component.get(&component).ok_or_else(|| {
                format!("trigger.http: no [component.{component}] in the manifest")
            })?;
            let (source, spec_warnings) = check_component(&component, spec)?;
            if !triggers.iter().any(|t: &Http| t.component == component) {
                warnings.extend(spec_warnings);
            }
            triggers.push(Http {
                source,
                spec: spec.clone(),
                component,
                route,
            });
        }
        for other in raw.component.keys() {
            if !triggers.iter().any(|t| t.component == *other) {
                warnings.push(format!(
                    "component.{other}: no HTTP route names it; not deployed"
                ));
            }
        }
        Ok(Self {
            variables: raw.variables,
            triggers,
            warnings,
        })
    }

    /// The HTTP components to upload: each id once, with its source.
    pub fn components(&self) -> Vec<(&str, &Source)> {
        let mut seen = Vec::new();
        for t in &self.triggers {
            if !seen.iter().any(|(id, _)| *id == t.component) {
                seen.push((t.component.as_str(), &t.source));
            }
        }
        seen
    }

    /// What the manifest has that the runner leaves, each in a sentence.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// What each HTTP trigger deploys, in the manifest's order, with the
    /// application variables' values given at the deploy over the
    /// manifest's defaults. A value given as a secret stays one, whatever
    /// the manifest says of it.
    pub fn apps(
        &self,
        config: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Vec<App>, String> {
        let values = self.values(config, secrets)?;
        self.triggers.iter().map(|t| t.app(&values)).collect()
    }

    /// The application variables' values, each with whether it is secret.
    fn values<'a>(
        &'a self,
        config: &'a BTreeMap<String, String>,
        secrets: &'a BTreeMap<String, String>,
    ) -> Result<BTreeMap<&'a str, (&'a str, bool)>, String> {
        for name in config.keys().chain(secrets.keys()) {
            if !self.variables.contains_key(name) {
                return Err(format!(
                    "variable {name:?} was given, but the manifest declares no such variable"
                ));
            }
        }
        let mut values = BTreeMap::new();
        for (name, variable) in &self.variables {
            let value = match (secrets.get(name), config.get(name)) {
                (Some(secret), _) => Some((secret, true)),
                (None, Some(value)) => Some((value, variable.secret)),
                (None, None) => variable.default.as_ref().map(|d| (d, variable.secret)),
            };
            match value {
                Some((value, secret)) => {
                    values.insert(name.as_str(), (value.as_str(), secret));
                }
                None => {
                    return Err(format!(
                        "variable {name:?} is required and was not given: give it with \
                         --var {name}=VALUE{}",
                        if variable.secret {
                            format!(" or --secret {name}=@FILE")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
        Ok(values)
    }
}

/// Checks a component's keys: its source, and warnings for what is
/// ignored; an error for what it needs and the runner lacks.
fn check_component(component: &str, spec: &Component) -> Result<(Source, Vec<String>), String> {
    let mut warnings = Vec::new();
    for (key, value) in &spec.rest {
        if let Some((_, why)) = MISSING.iter().find(|(k, _)| k == key) {
            if !is_empty(value) {
                return Err(format!("component.{component}.{key}: {why}"));
            }
        } else if TOOLING.contains(&key.as_str()) {
            if key == "build" || key == "tool" {
                warnings.push(format!(
                    "component.{component}.{key}: ignored; the runner runs the built \
                     component"
                ));
            }
        } else {
            return Err(format!("component.{component}: unknown key {key:?}"));
        }
    }
    if !spec.allowed_http_hosts.is_empty() {
        return Err(format!(
            "component.{component}.allowed_http_hosts: replaced by allowed_outbound_hosts \
             in Spin 2 (`spin doctor` rewrites it)"
        ));
    }
    let source = match &spec.source {
        toml::Value::String(path) => Source::File(path.clone()),
        toml::Value::Table(remote) => match remote.get("digest").and_then(|d| d.as_str()) {
            Some(digest) => Source::Digest(digest.to_owned()),
            None => {
                return Err(format!(
                    "component.{component}.source: a registry source cannot be fetched \
                     here; build or pull the component and name its file"
                ));
            }
        },
        other => {
            return Err(format!(
                "component.{component}.source: expected a file name, found {}",
                other.type_str()
            ));
        }
    };
    for name in spec.variables.keys() {
        crate::vars::check_name(name, 255)
            .map_err(|why| format!("component.{component}.variables.{name}: {why}"))?;
    }
    Ok((source, warnings))
}

impl Http {
    /// What this trigger deploys: the settings its component has, and
    /// its variables rendered from the application's `values`.
    fn app(&self, values: &BTreeMap<&str, (&str, bool)>) -> Result<App, String> {
        let (mut config, mut secrets) = (BTreeMap::new(), BTreeMap::new());
        for (name, template) in &self.spec.variables {
            let (value, secret) = render(template, values)
                .map_err(|why| format!("component.{}.variables.{name}: {why}", self.component))?;
            if secret {
                secrets.insert(name.clone(), value);
            } else {
                config.insert(name.clone(), value);
            }
        }
        let list = |items: &[String]| {
            toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect())
        };
        let mut limits = toml::Table::new();
        limits.insert("route".into(), toml::Value::String(self.route.clone()));
        limits.insert(
            "allowed-outbound-hosts".into(),
            list(&self.spec.allowed_outbound_hosts),
        );
        limits.insert("key-value-stores".into(), list(&self.spec.key_value_stores));
        Ok(App {
            id: self.component.clone(),
            limits,
            config,
            secrets,
        })
    }
}

/// One `[[trigger.http]]`: its component's id and its route.
fn http_trigger(trigger: &toml::Table) -> Result<(String, String), String> {
    let component = match trigger.get("component") {
        Some(toml::Value::String(id)) => id.clone(),
        Some(_) => {
            return Err(
                "trigger.http: an inline component table is not read here; name a \
                 [component.ID] instead"
                    .into(),
            );
        }
        None => return Err("trigger.http: a trigger needs a component".into()),
    };
    let route = match trigger.get("route") {
        Some(toml::Value::String(route)) => route.clone(),
        Some(_) => {
            return Err(format!(
                "trigger.http ({component}): a private route serves only other components, \
                 which the runner does not chain"
            ));
        }
        None => {
            return Err(format!(
                "trigger.http ({component}): a trigger needs a route"
            ));
        }
    };
    for (key, value) in trigger {
        match key.as_str() {
            "component" | "route" | "id" => {}
            "executor" => {
                let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
                if kind != "spin" {
                    return Err(format!(
                        "trigger.http ({component}): the {kind:?} executor does not run here; \
                         components run as Spin's \"spin\" executor runs them"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "trigger.http ({component}): {other:?} is not read here"
                ));
            }
        }
    }
    Ok((component, route))
}

/// `route` under the application's HTTP base path, as Spin joins them.
fn based(base: &str, route: &str) -> String {
    let base = base.trim_end_matches('/');
    let route = route.trim_start_matches('/');
    format!("{base}/{route}")
}

/// A component variable's value: `template` with each `{{ name }}` replaced
/// by the application variable's value; secret if any it names is.
fn render(template: &str, values: &BTreeMap<&str, (&str, bool)>) -> Result<(String, bool), String> {
    let (mut out, mut secret) = (String::new(), false);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("{template:?} opens {{{{ without closing it"))?;
        let name = after[..close].trim();
        let (value, is_secret) = values.get(name).ok_or_else(|| {
            format!("{template:?} names {name:?}, which [variables] does not declare")
        })?;
        out.push_str(value);
        secret |= is_secret;
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok((out, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
spin_manifest_version = 2

[application]
name = "todo"
version = "0.1.0"

[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }

[[trigger.http]]
route = "/api/..."
component = "api"

[[trigger.redis]]
channel = "jobs"
component = "worker"

[component.api]
source = "target/wasm32-wasip2/release/api.wasm"
allowed_outbound_hosts = ["https://api.example.com"]
key_value_stores = ["default"]
variables = { greeting = "{{ greeting }}, world", key = "Bearer {{api_key}}" }
[component.api.build]
command = "cargo build --target wasm32-wasip2 --release"

[component.worker]
source = "worker.wasm"
"#;

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_manifest_deploys_its_http_component_with_its_settings_and_variables() {
        let manifest = Manifest::parse(APP).unwrap();
        assert_eq!(
            manifest.components(),
            [(
                "api",
                &Source::File("target/wasm32-wasip2/release/api.wasm".into())
            )]
        );
        assert_eq!(
            manifest.warnings(),
            [
                "trigger.redis: only HTTP triggers run here; not deployed for it: worker",
                "component.api.build: ignored; the runner runs the built component",
                "component.worker: no HTTP route names it; not deployed",
            ]
        );
        let app = manifest
            .apps(&BTreeMap::new(), &given(&[("api_key", "k3y")]))
            .unwrap()
            .remove(0);
        assert_eq!(app.id, "api");
        assert_eq!(app.config, given(&[("greeting", "hello, world")]));
        assert_eq!(app.secrets, given(&[("key", "Bearer k3y")]));
        let limits: toml::Table = toml::from_str(
            r#"route = "/api/..."
allowed-outbound-hosts = ["https://api.example.com"]
key-value-stores = ["default"]"#,
        )
        .unwrap();
        assert_eq!(app.limits, limits);
        let app = manifest
            .apps(
                &given(&[("api_key", "k"), ("greeting", "hi")]),
                &BTreeMap::new(),
            )
            .unwrap()
            .remove(0);
        assert_eq!(app.config, given(&[("greeting", "hi, world")]));
        // A secret variable given as plain configuration is still secret;
        // a plain one given as a secret is kept as one.
        assert_eq!(app.secrets, given(&[("key", "Bearer k")]));
        let app = manifest
            .apps(
                &BTreeMap::new(),
                &given(&[("api_key", "k"), ("greeting", "hi")]),
            )
            .unwrap()
            .remove(0);
        assert!(app.config.is_empty());
        assert_eq!(
            app.secrets,
            given(&[("greeting", "hi, world"), ("key", "Bearer k")])
        );
    }

    #[test]
    fn what_a_deploy_lacks_is_named() {
        let manifest = Manifest::parse(APP).unwrap();
        assert_eq!(
            manifest
                .apps(&BTreeMap::new(), &BTreeMap::new())
                .unwrap_err(),
            "variable \"api_key\" is required and was not given: give it with --var \
             api_key=VALUE or --secret api_key=@FILE"
        );
        assert_eq!(
            manifest
                .apps(&given(&[("typo", "x")]), &given(&[("api_key", "k")]))
                .unwrap_err(),
            "variable \"typo\" was given, but the manifest declares no such variable"
        );
    }

    #[test]
    fn what_the_runner_does_not_have_is_an_error_naming_it() {
        let with = |extra: &str| Manifest::parse(&format!("{APP}{extra}")).unwrap_err();
        assert_eq!(
            Manifest::parse(&APP.replace(
                "key_value_stores",
                "files = [\"assets/**\"]\nkey_value_stores"
            ))
            .unwrap_err(),
            "component.api.files: the runner mounts no files into components"
        );
        assert_eq!(
            Manifest::parse(&APP.replace(
                "key_value_stores",
                "sqlite_databases = [\"default\"]\nkey_value_stores"
            ))
            .unwrap_err(),
            "component.api.sqlite_databases: the runner serves no SQLite databases"
        );
        let http = "[[trigger.http]]\nroute = \"/api/...\"\ncomponent = \"api\"\n";
        assert_eq!(
            Manifest::parse(&APP.replace(http, "")).unwrap_err(),
            "spin.toml: trigger.redis but no [[trigger.http]]: the runner runs HTTP triggers \
             alone, so nothing would serve"
        );
        assert_eq!(
            with("\n[[trigger.http]]\nroute = \"/web/...\"\ncomponent = \"nowhere\"\n"),
            "trigger.http: no [component.nowhere] in the manifest"
        );
        assert_eq!(
            Manifest::parse(&APP.replace("spin_manifest_version = 2", "spin_manifest_version = 1"))
                .unwrap_err(),
            "spin.toml: spin_manifest_version is 1; the runner reads version 2, the version \
             Spin 2 and later write"
        );
        assert_eq!(
            Manifest::parse(&APP.replace(
                "component = \"api\"",
                "component = \"api\"\nexecutor = { type = \"wagi\" }"
            ))
            .unwrap_err(),
            "trigger.http (api): the \"wagi\" executor does not run here; components run as \
             Spin's \"spin\" executor runs them"
        );
        assert_eq!(
            Manifest::parse(&APP.replace("{{ greeting }}", "{{ nope }}"))
                .unwrap()
                .apps(&BTreeMap::new(), &given(&[("api_key", "k")]))
                .unwrap_err(),
            "component.api.variables.greeting: \"{{ nope }}, world\" names \"nope\", which \
             [variables] does not declare"
        );
    }

    #[test]
    fn the_example_guests_manifest_reads() {
        let manifest = Manifest::parse(include_str!("../../guest/spin/spin.toml")).unwrap();
        assert_eq!(
            manifest.components(),
            [(
                "guest",
                &Source::File("../target/wasm32-wasip2/release/guest_spin.wasm".into())
            )]
        );
        let app = manifest
            .apps(&BTreeMap::new(), &given(&[("api_key", "k")]))
            .unwrap()
            .remove(0);
        assert_eq!(app.config, given(&[("greeting", "hello")]));
        assert_eq!(app.secrets, given(&[("api_key", "k")]));
    }

    #[test]
    fn each_http_trigger_deploys_its_component_with_its_own_settings() {
        let manifest = Manifest::parse(include_str!("../../guest/spin-app/spin.toml")).unwrap();
        let wasm = Source::File("../target/wasm32-wasip2/release/guest_spin.wasm".into());
        assert_eq!(manifest.components(), [("site", &wasm), ("api", &wasm)]);
        assert!(manifest.warnings().is_empty(), "{:?}", manifest.warnings());
        let apps = manifest
            .apps(&BTreeMap::new(), &given(&[("api_key", "k")]))
            .unwrap();
        let summary: Vec<_> = apps
            .iter()
            .map(|a| (a.id.as_str(), a.limits["route"].as_str().unwrap()))
            .collect();
        assert_eq!(summary, [("site", "/..."), ("api", "/api/...")]);
        assert_eq!(
            apps[0].config,
            given(&[("greeting", "hello from the site")])
        );
        assert!(apps[0].secrets.is_empty());
        assert_eq!(apps[1].config, given(&[("greeting", "hello from the api")]));
        assert_eq!(apps[1].secrets, given(&[("api_key", "k")]));
        assert_eq!(
            apps[1].limits["key-value-stores"],
            toml::Value::Array(vec!["default".into(), "cache".into()])
        );
        // Two triggers on one route: the later serves it, as in Spin.
        let twice = include_str!("../../guest/spin-app/spin.toml")
            .replace("route = \"/api/...\"", "route = \"/...\"");
        let manifest = Manifest::parse(&twice).unwrap();
        assert_eq!(
            manifest.warnings(),
            [
                "trigger.http: route \"/...\" is named twice; component \"api\" serves it, \
                 not \"site\", as in Spin",
                "component.site: no HTTP route names it; not deployed",
            ]
        );
        assert_eq!(manifest.components(), [("api", &wasm)]);
    }

    #[test]
    fn routes_join_the_applications_base() {
        assert_eq!(based("/", "/..."), "/...");
        assert_eq!(based("/shop", "/api/..."), "/shop/api/...");
        assert_eq!(based("/shop/", "/"), "/shop/");
    }
}
