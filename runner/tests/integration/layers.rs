//! The runner's modules import only downward: each module may name only
//! itself and the modules listed before it in [`LAYERS`]. This reads every
//! file of `runner/src` and checks every `crate::`, `super::` and `self::`
//! path outside comments and unit-test modules, so an import that points
//! back up fails here with the file, the line and the two modules.

use std::path::{Path, PathBuf};

/// Every module of the crate, bottom first. A file belongs to the longest
/// entry its module path starts with; `""` is the crate root.
const LAYERS: &[&str] = &[
    // Leaves.
    "settings",
    "request_id",
    "periodic",
    "metrics::names",
    "store",
    "outbound::policy",
    "vars",
    "seal",
    "tls",
    "routes",
    "limits",
    "manifest",
    "metrics",
    "body",
    "outbound",
    "tenant::scope",
    "outcome",
    "admission",
    // Process, tenant and request lifetimes.
    "host",
    "engine::component",
    "engine::compile",
    "engine::compiled",
    "engine::kept",
    "engine",
    "tenant::workers",
    "tenant",
    "call::handoff",
    "call::timed",
    "call::shared",
    "call",
    // What runs the fleet and takes requests.
    "fleet::deployed",
    "fleet",
    "fleet::follow",
    "fleet::components",
    "ingress::idle",
    "ingress::server",
    "ingress",
    "ingress::api",
    "ingress::admin",
    "client",
    "config",
    "",
];

/// The layer `path` (module segments joined by `::`) belongs to.
fn layer(path: &str) -> usize {
    LAYERS
        .iter()
        .enumerate()
        .filter(|(_, unit)| {
            unit.is_empty()
                || path == **unit
                || path
                    .strip_prefix(**unit)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
        .max_by_key(|(_, unit)| unit.len())
        .map(|(rank, _)| rank)
        .expect("the crate root matches every path")
}

/// The module path of a source file, from its path under `src/`.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The paths a line names after `crate::`, `super::` or `self::`, resolved
/// to module paths from the crate root (a brace group gives several).
fn named_paths(line: &str, module: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (anchor, base) in [
        ("crate::", String::new()),
        (
            "super::",
            module
                .rsplit_once("::")
                .map_or(String::new(), |(parent, _)| parent.into()),
        ),
        ("self::", module.to_string()),
    ] {
        let mut rest = line;
        while let Some(at) = rest.find(anchor) {
            // `crate::` inside `self::crate::` or an identifier is no path.
            let before = rest[..at].chars().next_back();
            rest = &rest[at + anchor.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for tail in expand(rest) {
                let joined = if base.is_empty() {
                    tail
                } else {
                    format!("{base}::{tail}")
                };
                found.push(joined);
            }
        }
    }
    found
}

/// `a::b::C`, or each member of `{a::X, b}`, as written after an anchor.
fn expand(rest: &str) -> Vec<String> {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut members = Vec::new();
        let mut current = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    members.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        members.push(current);
        return members
            .iter()
            .map(|m| path_of(m.trim()))
            .filter(|m| !m.is_empty())
            .collect();
    }
    vec![path_of(rest)]
}

/// The leading `a::b::c` of `text`, without a trailing `::`.
fn path_of(text: &str) -> String {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end].trim_end_matches(':').to_string()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading runner/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_point_only_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = module_of(relative);
        let own = layer(&module);
        let text = std::fs::read_to_string(file).expect("reading a source file");
        let mut lines = text.lines().enumerate().peekable();
        // Inline modules (`mod bindings { ... }`) open inside the file's:
        // their name and the brace depth they opened at.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        while let Some((number, line)) = lines.next() {
            let code = line.trim_start();
            let here = std::iter::once(module.clone())
                .chain(inline.iter().map(|(name, _)| name.clone()))
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join("::");
            let opened = code
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix('{'))
                .map(str::trim);
            if let Some(name) = opened {
                inline.push((name.to_string(), depth));
            }
            if !code.starts_with("//") {
                depth += code.matches('{').count();
                depth = depth.saturating_sub(code.matches('}').count());
                while inline.last().is_some_and(|(_, at)| depth <= *at) {
                    inline.pop();
                }
            }
            // Unit tests may reach anywhere; they sit at the end of a file.
            if code.starts_with("#[cfg(test)]")
                && lines
                    .peek()
                    .is_some_and(|(_, next)| next.trim_start().starts_with("mod tests"))
            {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for path in named_paths(code, &here) {
                let target = layer(&path);
                if target > own {
                    upward.push(format!(
                        "{}:{}: {} ({}) names {} ({})",
                        relative.display(),
                        number + 1,
                        if module.is_empty() { "crate" } else { &module },
                        LAYERS[own],
                        path,
                        LAYERS[target],
                    ));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers:\n{}",
        upward.join("\n")
    );
    // Every module has a place: a new one must be put in the list.
    for file in &files {
        let module = module_of(file.strip_prefix(&src).expect("under src"));
        let placed = module.is_empty()
            || LAYERS.iter().any(|unit| {
                !unit.is_empty()
                    && (module == *unit
                        || module
                            .strip_prefix(unit)
                            .is_some_and(|rest| rest.starts_with("::")))
            });
        assert!(placed, "module {module} is in no layer: add it to LAYERS");
    }
}
