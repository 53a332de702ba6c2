//! What a component needs before it can run here, checked at load time so
//! that a component that cannot run is refused with every reason at once,
//! in words a user can act on, rather than with the first error wasmtime
//! meets.

use std::fmt::Write as _;

use bytesize::ByteSize;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceType};

/// The largest initial linear memory any core module in `bytes` defines, in
/// bytes: what an instance needs from its first instruction. Components
/// built from interpreters (CPython, SpiderMonkey) start with 10-13 MiB.
pub fn initial_memory(bytes: &[u8]) -> Result<u64, wasmparser::BinaryReaderError> {
    let mut largest = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::MemorySection(memories) = payload? {
            largest = largest.max(largest_memory(memories)?);
        }
    }
    Ok(largest)
}

/// The largest initial size of the memories of one section, in bytes.
fn largest_memory(
    memories: wasmparser::MemorySectionReader<'_>,
) -> Result<u64, wasmparser::BinaryReaderError> {
    let mut largest = 0u64;
    for memory in memories {
        let memory = memory?;
        let page = 1u64 << memory.page_size_log2.unwrap_or(16);
        largest = largest.max(memory.initial.saturating_mul(page));
    }
    Ok(largest)
}

/// What a component's bytes say of it, read without compiling them: enough
/// to refuse a component that cannot run here before spending a compile.
#[derive(Debug)]
pub struct Outline {
    /// It exports a WASIp3 handler (`wasi:http/handler@0.3.x`), which
    /// decides the engine it is compiled for (a component exporting both
    /// is served as WASIp3: see `HandlerPre::new`).
    pub p3: bool,
    /// Its initial linear memory (see [`initial_memory`]), in bytes.
    pub needed: u64,
    /// Why it cannot run whatever it is compiled to: imports from
    /// packages the runner does not provide, or no HTTP handler exported.
    pub refusal: Option<String>,
}

impl Outline {
    /// Reads `bytes`' outline, or refuses them as no component. What it
    /// imports from packages the runner does not provide at all, or the
    /// lack of an HTTP handler, is its `refusal` (an import from a package
    /// it provides is checked item by item once compiled:
    /// [`missing_imports`]).
    pub fn read(bytes: &[u8]) -> Result<Self, String> {
        if !bytes.starts_with(b"\0asm") {
            return Err(
                "reading the component: not a WebAssembly binary (it does not start with \\0asm)"
                    .into(),
            );
        }
        // One pass over what may be 128 MiB: the memories of every module,
        // the outer component's imports and exports.
        let unreadable = |e: wasmparser::BinaryReaderError| format!("reading the component: {e}");
        let (mut imports, mut handler, mut p3, mut needed) = (Vec::new(), false, false, 0u64);
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload.map_err(unreadable)? {
                wasmparser::Payload::Version { .. } => depth += 1,
                wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
                wasmparser::Payload::MemorySection(memories) => {
                    needed = needed.max(largest_memory(memories).map_err(unreadable)?);
                }
                wasmparser::Payload::ComponentExportSection(exports) if depth == 1 => {
                    for export in exports.into_iter().flatten() {
                        let name = export.name.name;
                        handler |= crate::host::HANDLERS
                            .iter()
                            .any(|prefix| name.starts_with(prefix));
                        p3 |= name.starts_with("wasi:http/handler@0.3");
                    }
                }
                wasmparser::Payload::ComponentImportSection(section) if depth == 1 => {
                    for import in section {
                        let name = import.map_err(unreadable)?.name.name;
                        if let Some(why) = crate::host::unprovided(name) {
                            imports.push((name.to_string(), why.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        let refusal = if !imports.is_empty() {
            Some(describe_missing(&imports))
        } else if !handler {
            Some(crate::host::NO_HANDLER.into())
        } else {
            None
        };
        Ok(Self {
            p3,
            needed,
            refusal,
        })
    }
}

/// The refusal for a component whose initial memory is over `limit`.
pub fn memory_too_small(needed: u64, limit: u64) -> String {
    format!(
        "the component needs {needed} bytes ({}) of linear memory from its start, over the \
         tenant's memory limit of {limit} bytes ({}); raise it with --max-memory, or \
         max-memory in the tenants file",
        ByteSize(needed).display().iec(),
        ByteSize(limit).display().iec(),
    )
}

/// Every import of `component` that the runner cannot satisfy, each with
/// wasmtime's reason for the first item in it that did not match, in the order the
/// component imports them. Empty when the component links.
///
/// wasmtime stops at the first unsatisfied import, so this links the
/// component again and again against a scratch linker (made by `link`),
/// stubbing each import it reports until the rest link.
pub fn missing_imports(
    engine: &Engine,
    component: &Component,
    p3: bool,
) -> wasmtime::Result<Vec<(String, String)>> {
    let imports: Vec<(String, ComponentItem)> = component
        .component_type()
        .imports(engine)
        .map(|(name, item)| (name.to_owned(), item.ty))
        .collect();
    let mut scratch = Linker::new(engine);
    crate::host::add_to_linker(&mut scratch, p3)?;
    scratch.allow_shadowing(true);
    let mut missing = Vec::new();
    // Each round stubs one import, so there are at most that many rounds.
    for _ in 0..=imports.len() {
        let Err(error) = scratch.instantiate_pre(component) else {
            break;
        };
        let named = format!("{error}");
        let Some((name, item)) = imports
            .iter()
            .find(|(name, _)| named.contains(&format!("`{name}`")))
        else {
            // Not an import by name (a wasmtime message we do not know):
            // give it as it is.
            missing.push((String::new(), format!("{error:#}")));
            break;
        };
        // The first link of the chain is wasmtime's "component imports
        // ...": the name says that; the rest says what did not match.
        let reason: Vec<String> = error.chain().skip(1).map(|e| e.to_string()).collect();
        missing.push((name.clone(), reason.join(": ")));
        stub(&mut scratch.root(), name, item, engine)?;
    }
    Ok(missing)
}

/// The refusal for a component with unsatisfied imports.
pub fn describe_missing(missing: &[(String, String)]) -> String {
    let mut text = format!(
        "the component imports {} the runner does not provide: ",
        match missing.len() {
            1 => "one interface".to_owned(),
            n => format!("{n} interfaces"),
        }
    );
    for (i, (name, reason)) in missing.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        if name.is_empty() {
            text.push_str(reason);
        } else {
            let _ = write!(text, "{name} ({reason})");
        }
    }
    // A WASIp2 component reaches only what WASIp2 components are linked
    // with; say so, or the refusal reads as if these did not exist.
    let p3_only = |name: &str| name.starts_with("wasmcloud:keyvalue/") || name.contains("@0.3.");
    if missing.iter().any(|(name, _)| p3_only(name)) {
        text.push_str(
            ". wasmcloud:keyvalue and WASI 0.3 are linked for WASIp3 components only (those \
             exporting wasi:http/handler@0.3.0)",
        );
    }
    text
}

/// Marks the resources of stubbed imports.
struct Stub;

/// Defines `item` under `name` with functions that trap, so that linking can
/// go on past it. Only a scratch linker ever holds these.
fn stub<T>(
    linker: &mut LinkerInstance<'_, T>,
    name: &str,
    item: &ComponentItem,
    engine: &Engine,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            linker.func_new(name, |_, _, _, _| wasmtime::bail!("not linked"))
        }
        ComponentItem::Resource(_) => {
            linker.resource(name, ResourceType::host::<Stub>(), |_, _| Ok(()))
        }
        ComponentItem::ComponentInstance(instance) => {
            let mut inner = linker.instance(name)?;
            for (export, item) in instance.exports(engine) {
                stub(&mut inner, export, &item.ty, engine)?;
            }
            Ok(())
        }
        // Types, modules and components: nothing a host defines by name here.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose one core module has a memory of `pages` 64 KiB pages.
    fn with_memory(pages: u64) -> Vec<u8> {
        wat_component(&format!("(component (core module (memory {pages})))"))
    }

    fn wat_component(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("the test component parses")
    }

    #[test]
    fn a_wasip2_component_missing_wasip3_imports_is_told_why() {
        let missing = [(
            "wasmcloud:keyvalue/store@0.2.0".to_string(),
            "instance export `open` has the wrong type".to_string(),
        )];
        assert_eq!(
            describe_missing(&missing),
            "the component imports one interface the runner does not provide: \
             wasmcloud:keyvalue/store@0.2.0 (instance export `open` has the wrong type). \
             wasmcloud:keyvalue and WASI 0.3 are linked for WASIp3 components only (those \
             exporting wasi:http/handler@0.3.0)"
        );
    }

    #[test]
    fn digests_show_and_parse_as_sha256_hex() {
        let digest = Digest::of(b"abc");
        let shown = digest.to_string();
        assert_eq!(
            shown,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&shown), Ok(digest));
        assert!(digest.matches(&Digest::of(b"abc")));
        assert!(!digest.matches(&Digest::of(b"abd")));
        for bad in [
            "ba7816bf",
            "sha256:ba78",
            "sha256:",
            &shown.replace('b', "g"),
        ] {
            assert_eq!(
                Digest::parse(bad),
                Err(format!(
                    "{bad:?} is not a component digest (sha256:<64 hex digits>)"
                )),
            );
        }
    }

    #[test]
    fn initial_memory_is_the_largest_module_memory() {
        assert_eq!(initial_memory(&with_memory(205)).unwrap(), 205 * 65536);
        let two = wat_component(
            "(component (core module (memory 3)) (core module (memory 7) (memory 2)))",
        );
        assert_eq!(initial_memory(&two).unwrap(), 7 * 65536);
        assert_eq!(initial_memory(&wat_component("(component)")).unwrap(), 0);
        assert!(initial_memory(b"not wasm").is_err());
    }

    #[test]
    fn a_memory_refusal_names_the_limit_in_one_unit() {
        assert_eq!(
            memory_too_small(13434880, 8 << 20),
            "the component needs 13434880 bytes (12.8 MiB) of linear memory from its start, \
             over the tenant's memory limit of 8388608 bytes (8.0 MiB); raise it with \
             --max-memory, or max-memory in the tenants file"
        );
    }
}

#[cfg(test)]
mod linking {
    use super::*;

    #[test]
    fn every_missing_import_is_named_in_import_order() {
        let bytes = wat::parse_str(
            r#"(component
                (import "wasi:random/random@0.2.3" (instance
                    (export "get-random-u64" (func (result u64)))))
                (import "acme:missing/one@1.0.0" (instance
                    (export "f" (func))))
                (import "wasi:cli/environment@0.2.0" (instance
                    (export "get-arguments" (func (result (list string))))
                    (export "no-such-function" (func))))
                (import "acme:missing/two" (instance
                    (export "handle" (type (sub resource)))))
            )"#,
        )
        .unwrap();
        let engine = Engine::default();
        let component = Component::new(&engine, &bytes).unwrap();
        let missing = missing_imports(&engine, &component, false).unwrap();
        let names: Vec<&str> = missing.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "acme:missing/one@1.0.0",
                "wasi:cli/environment@0.2.0",
                "acme:missing/two"
            ]
        );
        assert_eq!(
            describe_missing(&missing),
            "the component imports 3 interfaces the runner does not provide: \
             acme:missing/one@1.0.0 (instance export `f` has the wrong type: function \
             implementation is missing); wasi:cli/environment@0.2.0 (instance export \
             `no-such-function` has the wrong type: function implementation is missing); \
             acme:missing/two (instance export `handle` has the wrong type: resource \
             implementation is missing)"
        );
    }

    #[test]
    fn a_component_that_links_has_nothing_missing() {
        let engine = Engine::default();
        let component = Component::new(&engine, crate::engine::DEFAULT_GUEST).unwrap();
        let missing = missing_imports(&engine, &component, false).unwrap();
        assert!(missing.is_empty(), "{missing:?}");
    }
}

/// A component's identity: the SHA-256 of its bytes. Tenants name the
/// component they run by it, so the same bytes deployed twice are compiled
/// once and two tenants on them share one compilation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<64 lowercase hex digits>`, the form [`Digest`]
    /// displays.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a component digest (sha256:<64 hex digits>)");
        let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }

    /// The 32 bytes of the SHA-256.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits alone, as file names spell a digest.
    pub fn hex(&self) -> String {
        self.0
            .iter()
            .fold(String::with_capacity(64), |mut out, byte| {
                let _ = write!(out, "{byte:02x}");
                out
            })
    }

    /// Compares in time that does not depend on where the two differ, for
    /// secrets compared through their digests.
    pub fn matches(&self, other: &Digest) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
