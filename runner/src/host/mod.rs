//! The per-request host state and everything a guest can import.
//!
//! One [`Host`] lives in each instance's wasmtime `Store` and is dropped with
//! it: after one request, or after several of the same tenant's requests
//! with instance reuse, each begun with [`Host::begin_request`]. The tenant
//! is bound in here by the runner when the store is made; nothing a guest
//! passes can name another tenant.

mod config;
mod keyvalue;
mod limiter;
mod logging;
mod outgoing;
mod output;
mod spin;
mod wasmcloud;

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use self::keyvalue::{BucketHandle, CasHandle};
pub use self::limiter::Limiter;
pub(crate) use self::outgoing::DenyOutgoing;
use self::outgoing::Outgoing;
use self::output::{GuestLog, GuestOutput, Stream};

use crate::request_id::RequestId;
use crate::tenant::scope::Scope;

/// Host bindings for the `runner-host` world in `wit/world.wit`. Only
/// `wasi:keyvalue`, `wasmcloud:keyvalue`, `wasi:logging`, `wasi:config` and
/// Spin's variables are implemented here; every other WASI interface, 0.2
/// and 0.3, maps onto wasmtime-wasi and wasmtime-wasi-http.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "runner:tenant/runner-host",
        // Key-value calls are async so that a backend may wait on a disk
        // or a network; everything else the host does never waits.
        imports: {
            "wasi:keyvalue/store@0.2.0-draft": async | trappable,
            "wasi:keyvalue/atomics@0.2.0-draft": async | trappable,
            "wasi:keyvalue/batch@0.2.0-draft": async | trappable,
            "wasi:keyvalue/store@0.2.0-draft2": async | trappable,
            "wasi:keyvalue/atomics@0.2.0-draft2": async | trappable,
            "wasi:keyvalue/batch@0.2.0-draft2": async | trappable,
            "fermyon:spin/key-value": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue/store@0.2.0-draft.bucket": super::BucketHandle,
            "wasi:keyvalue/store@0.2.0-draft2.bucket": super::BucketHandle,
            "wasi:keyvalue/atomics@0.2.0-draft2.cas": super::CasHandle,
            "wasmcloud:keyvalue/types.bucket": super::BucketHandle,
            "fermyon:spin/key-value.store": super::BucketHandle,
            "spin:key-value/key-value.store": super::BucketHandle,
        },
    });
}

pub use bindings::{RunnerHost as Guest, RunnerHostPre as GuestPre};
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

/// The exports a tenant component serves requests through, by name
/// prefix, for the check made before compiling.
pub const HANDLERS: [&str; 2] = ["wasi:http/incoming-handler@0.2", "wasi:http/handler@0.3"];

/// The refusal of a component that exports neither handler.
pub const NO_HANDLER: &str = "the component exports neither wasi:http/incoming-handler@0.2.x \
                              (WASIp2) nor wasi:http/handler@0.3.0 (WASIp3)";

/// The packages [`add_to_linker`] defines interfaces of, and single
/// interfaces of packages it links only in part: an import from anything
/// else is refused before compiling. Keep in step with it.
const PACKAGES: [&str; 15] = [
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
    "wasi:http",
    "wasi:keyvalue",
    "wasi:logging",
    "wasmcloud:keyvalue",
    "wasi:config",
    "spin:variables",
    "spin:key-value",
    // Spin's WASIp2 package also holds llm, mysql, postgres, redis, sqlite
    // and mqtt, which the runner does not serve.
    "fermyon:spin/variables",
    "fermyon:spin/key-value",
];

/// Why import `name` (`namespace:package/interface@version`) cannot link,
/// if the runner links nothing of its package, or nothing of its
/// interface in a package it links in part; `None` when it may link.
pub fn unprovided(name: &str) -> Option<&'static str> {
    let unversioned = name.split('@').next().unwrap_or_default();
    let package = unversioned.split('/').next().unwrap_or_default();
    if PACKAGES.contains(&package) || PACKAGES.contains(&unversioned) {
        None
    } else if PACKAGES
        .iter()
        .any(|p| p.split('/').next() == Some(package))
    {
        Some("the runner provides no such interface")
    } else {
        Some("the runner provides no such package")
    }
}

/// A tenant's component, linked and ready to instantiate: a WASIp2 handler
/// (`wasi:http/incoming-handler@0.2.x`) or a WASIp3 one
/// (`wasi:http/handler@0.3.0`), told apart by its exports when it is
/// loaded.
#[derive(Clone)]
pub enum HandlerPre {
    P2(GuestPre<Host>),
    P3(ServicePre<Host>),
}

/// A live instance of a tenant's component.
pub enum Handler {
    P2(Guest),
    P3(Service),
}

impl HandlerPre {
    /// The handler `pre` exports, WASIp3 first: a component exporting both
    /// is served through its WASIp3 handler, as `wasmtime serve` does.
    pub fn new(pre: wasmtime::component::InstancePre<Host>) -> wasmtime::Result<Self> {
        if let Ok(p3) = ServicePre::new(pre.clone()) {
            return Ok(HandlerPre::P3(p3));
        }
        GuestPre::new(pre)
            .map(HandlerPre::P2)
            .map_err(|_| wasmtime::format_err!(NO_HANDLER))
    }

    pub async fn instantiate_async(
        &self,
        store: &mut wasmtime::Store<Host>,
    ) -> wasmtime::Result<Handler> {
        Ok(match self {
            HandlerPre::P2(pre) => Handler::P2(pre.instantiate_async(store).await?),
            HandlerPre::P3(pre) => Handler::P3(pre.instantiate_async(store).await?),
        })
    }

    pub fn is_p3(&self) -> bool {
        matches!(self, HandlerPre::P3(_))
    }

    /// The bytes of its compiled code in memory.
    pub fn code_bytes(&self) -> usize {
        let component = match self {
            HandlerPre::P2(pre) => pre.instance_pre().component(),
            HandlerPre::P3(pre) => pre.instance_pre().component(),
        };
        let range = component.image_range();
        (range.end as usize).saturating_sub(range.start as usize)
    }

    /// The engine it was compiled for, which its stores must use.
    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            HandlerPre::P2(pre) => pre.instance_pre().engine(),
            HandlerPre::P3(pre) => pre.instance_pre().engine(),
        }
    }

    /// The handler interface it exports, as the admin API and logs name it.
    pub fn world(&self) -> &'static str {
        match self {
            HandlerPre::P2(_) => "wasi:http/incoming-handler@0.2",
            HandlerPre::P3(_) => "wasi:http/handler@0.3.0",
        }
    }
}

/// Everything one guest instance can reach.
pub struct Host {
    tenant: Arc<Scope>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Outgoing,
    log: GuestLog,
    pub(crate) limiter: Limiter,
    /// When the current request must end; the epoch callback reads it.
    pub(crate) deadline: Instant,
}

impl Host {
    pub fn new(tenant: Arc<Scope>) -> Self {
        let limits = tenant.limits();
        let log = GuestLog::new(
            tenant.shared_name(),
            crate::limits::bytes(limits.max_log_bytes),
            tenant.log_rate().clone(),
        );
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestOutput::new(Stream::Stdout, log.clone()))
            .stderr(GuestOutput::new(Stream::Stderr, log.clone()))
            // Guests have no network: sockets are linked so that toolchains
            // that always import them load, and every use is refused before
            // the host opens a socket.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // Host memory a guest can make the runner hold is bounded per
        // request: so many resources, headers of so many bytes each.
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_host_resources);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(crate::limits::bytes(limits.max_header_field_bytes));
        Self {
            limiter: Limiter::new(limits),
            wasi: wasi.build(),
            http,
            table,
            hooks: Outgoing::new(tenant.egress().clone(), log.clone()),
            log,
            tenant,
            deadline: Instant::now(),
        }
    }

    /// Starts request `id` on this instance: its deadline, a whole log
    /// budget, its id on the guest's log lines, and no limit hit yet.
    /// Memory, tables and resources the guest holds stay as the last
    /// request left them.
    pub fn begin_request(&mut self, deadline: Instant, id: Option<RequestId>) {
        self.deadline = deadline;
        self.limiter.hit = None;
        self.hooks.begin(self.tenant.limits().max_outbound_requests);
        self.log
            .begin(crate::limits::bytes(self.tenant.limits().max_log_bytes), id);
    }

    /// Ends the current request: a line the guest left unfinished is
    /// written now, under its id.
    pub fn end_request(&mut self) {
        self.log.flush();
    }

    /// Starts one more request on an instance whose requests run
    /// concurrently: the instance lives until the latest deadline of its
    /// requests, and each request that starts refills the shared log
    /// budget. Its lines carry no request id: the instance serves several
    /// at once, and a line cannot tell whose it is.
    pub fn join_request(&mut self, deadline: Instant) {
        self.deadline = self.deadline.max(deadline);
        self.hooks.join(self.tenant.limits().max_outbound_requests);
        self.log.begin(
            crate::limits::bytes(self.tenant.limits().max_log_bytes),
            None,
        );
    }

    pub fn tenant(&self) -> &Arc<Scope> {
        &self.tenant
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Guest text made safe for a log line: control characters (newlines,
/// terminal escapes), the Unicode line and paragraph separators and the
/// bidirectional controls are escaped, so a guest cannot forge or hide
/// lines, or reorder what a terminal shows; everything else is kept as
/// written. Log lines carry the text as a quoted field after the tenant, so
/// it cannot pose as a field either.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}'
            )
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Selects the [`Host`] itself as the implementation of our own interfaces.
pub(crate) struct HostData;

impl HasData for HostData {
    type Data<'a> = &'a mut Host;
}

/// Links every import a tenant component may use: the whole of WASI 0.2 but
/// `wasi:cli/run` (an export) and the unstable interfaces, so components
/// from any toolchain load. Sockets are linked with every operation denied.
/// With `p3`, for WASIp3 components (on an engine with concurrency
/// support), also WASI 0.3 and `wasmcloud:keyvalue`, whose functions are
/// `async`. Anything else a component imports makes it fail to load,
/// naming it. A package added here goes in [`PACKAGES`] too.
pub fn add_to_linker(linker: &mut Linker<Host>, p3: bool) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random, sockets};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};

    struct Io;
    impl HasData for Io {
        type Data<'a> = &'a mut ResourceTable;
    }
    let l = linker;
    io::error::add_to_linker::<Host, Io>(l, |h| &mut h.table)?;
    io::poll::add_to_linker::<Host, Io>(l, |h| &mut h.table)?;
    io::streams::add_to_linker::<Host, Io>(l, |h| &mut h.table)?;
    clocks::wall_clock::add_to_linker::<Host, WasiClocks>(l, Host::clocks)?;
    clocks::monotonic_clock::add_to_linker::<Host, WasiClocks>(l, Host::clocks)?;
    random::random::add_to_linker::<Host, WasiRandom>(l, |h| h.wasi.random())?;
    random::insecure::add_to_linker::<Host, WasiRandom>(l, |h| h.wasi.random())?;
    random::insecure_seed::add_to_linker::<Host, WasiRandom>(l, |h| h.wasi.random())?;
    cli::exit::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::environment::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stdin::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stdout::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stderr::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_input::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_output::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stdin::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stdout::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stderr::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    // Toolchains import the filesystem even when a program never opens a
    // file; no directory is ever preopened, so there is nothing to reach.
    filesystem::types::add_to_linker::<Host, WasiFilesystem>(l, Host::filesystem)?;
    filesystem::preopens::add_to_linker::<Host, WasiFilesystem>(l, Host::filesystem)?;
    // CPython (componentize-py) imports all seven socket interfaces.
    sockets::network::add_to_linker::<Host, WasiSockets>(l, &Default::default(), Host::sockets)?;
    sockets::instance_network::add_to_linker::<Host, WasiSockets>(l, Host::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<Host, WasiSockets>(l, Host::sockets)?;
    sockets::tcp::add_to_linker::<Host, WasiSockets>(l, Host::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<Host, WasiSockets>(l, Host::sockets)?;
    sockets::udp::add_to_linker::<Host, WasiSockets>(l, Host::sockets)?;
    sockets::udp_create_socket::add_to_linker::<Host, WasiSockets>(l, Host::sockets)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)?;

    {
        use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
        store::add_to_linker::<Host, HostData>(l, |h| h)?;
        atomics::add_to_linker::<Host, HostData>(l, |h| h)?;
        batch::add_to_linker::<Host, HostData>(l, |h| h)?;
    }
    {
        use bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
        store::add_to_linker::<Host, HostData>(l, |h| h)?;
        atomics::add_to_linker::<Host, HostData>(l, |h| h)?;
        batch::add_to_linker::<Host, HostData>(l, |h| h)?;
    }
    bindings::wasi::logging::logging::add_to_linker::<Host, HostData>(l, |h| h)?;
    bindings::wasi::config0_2_0_rc_1::store::add_to_linker::<Host, HostData>(l, |h| h)?;
    bindings::wasi::config0_2_0_draft_2024_09_27::store::add_to_linker::<Host, HostData>(l, |h| h)?;
    bindings::fermyon::spin::variables::add_to_linker::<Host, HostData>(l, |h| h)?;
    bindings::fermyon::spin::key_value::add_to_linker::<Host, HostData>(l, |h| h)?;
    if !p3 {
        return Ok(());
    }
    // WASI 0.3 beside 0.2 (the versions differ, so both link): a WASIp3
    // component imports wasi:http@0.3.0 and, from Rust's std, WASI 0.2.
    // Sockets and the filesystem are denied and empty as above, and
    // outgoing requests go through the same hooks.
    wasmtime_wasi::p3::add_to_linker(l)?;
    wasmtime_wasi_http::p3::add_to_linker(l)?;
    {
        use bindings::wasmcloud::keyvalue::{atomics, batch, cas, store, types};
        types::add_to_linker::<Host, HostData>(l, |h| h)?;
        store::add_to_linker::<Host, HostData>(l, |h| h)?;
        atomics::add_to_linker::<Host, HostData>(l, |h| h)?;
        cas::add_to_linker::<Host, HostData>(l, |h| h)?;
        batch::add_to_linker::<Host, HostData>(l, |h| h)?;
    }
    bindings::spin::variables::variables::add_to_linker::<Host, HostData>(l, |h| h)?;
    bindings::spin::key_value::key_value::add_to_linker::<Host, HostData>(l, |h| h)?;
    Ok(())
}

/// Links the key-value reads that can answer at once as synchronous
/// imports, over the async ones [`add_to_linker`] defined, for a store
/// whose reads never wait (in memory, with or without a data directory;
/// not Redis): `get` and `exists` of both `wasi:keyvalue` drafts and of
/// `fermyon:spin/key-value@2.0.0`. wasmtime runs an async import through a
/// boxed future and a poll, about 40 ns a call when measured
/// (BENCHMARKS.md), and a key taken as a `WasmStr` is read in the guest's
/// memory rather than copied into a `String`. What the guest sees is the
/// same. (`spin:key-value@3.0.0`'s are `async` in WIT, and stay so.)
pub fn link_ready_reads(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    keyvalue::link_ready_reads(linker)?;
    spin::link_ready_reads(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The answer of a synchronous read on a store whose reads wait, which
/// the runner never links ([`link_ready_reads`] is for memory only).
fn waits<T>() -> Result<T, crate::store::Error> {
    debug_assert!(false, "synchronous key-value reads linked over Redis");
    Err(crate::store::Error::Unavailable(
        "this store's reads wait, and the runner linked them as if they did not".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::{printable, unprovided};

    #[test]
    fn an_import_links_by_package_or_by_interface_of_a_package_linked_in_part() {
        assert_eq!(unprovided("wasi:http/types@0.2.12"), None);
        assert_eq!(unprovided("spin:key-value/key-value@3.0.0"), None);
        assert_eq!(unprovided("fermyon:spin/key-value@2.0.0"), None);
        assert_eq!(unprovided("fermyon:spin/variables"), None);
        assert_eq!(
            unprovided("fermyon:spin/llm@2.0.0"),
            Some("the runner provides no such interface")
        );
        assert_eq!(
            unprovided("spin:sqlite/sqlite@3.1.0"),
            Some("the runner provides no such package")
        );
        assert_eq!(
            unprovided("fermyon:spinx/key-value@2.0.0"),
            Some("the runner provides no such package")
        );
    }

    #[test]
    fn guest_text_cannot_break_or_reorder_a_line() {
        assert_eq!(printable("plain tenant=t1"), "plain tenant=t1");
        assert_eq!(printable("a\nb\r\x1b[2J"), "a\\u{a}b\\u{d}\\u{1b}[2J");
        assert_eq!(printable("x\u{2028}y\u{202E}z"), "x\\u{2028}y\\u{202e}z");
        assert_eq!(printable("\u{2066}\u{200F}"), "\\u{2066}\\u{200f}");
    }
}
