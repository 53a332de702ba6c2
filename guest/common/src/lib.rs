//! Code shared by the guest components: the WIT bindings for the
//! `runner:tenant/guest` world, request parsing, response writing, query and
//! percent-decoding, and the mapping from key-value store errors to HTTP
//! statuses.
//!
//! The bindings are generated once, here, and a guest crate exports its
//! handler with this crate's `export!` macro:
//!
//! ```ignore
//! use guest_common::exports::wasi::http::incoming_handler::Guest;
//! use guest_common::wasi::http::types::{IncomingRequest, ResponseOutparam};
//!
//! struct Component;
//!
//! impl Guest for Component {
//!     fn handle(request: IncomingRequest, out: ResponseOutparam) {
//!         guest_common::http::serve(request, out, route);
//!     }
//! }
//!
//! guest_common::export!(Component);
//! ```

// The generated `export!` macro and the generated code name this crate by its
// path (`guest_common::...`), both when expanded in a guest crate and here.
extern crate self as guest_common;

wit_bindgen::generate!({
    path: "../../wit",
    world: "runner:tenant/guest",
    generate_all,
    // Guest crates call `guest_common::export!(Component)`.
    pub_export_macro: true,
    default_bindings_module: "guest_common",
    // A guest crate does not depend on wit-bindgen itself: the runtime support
    // the expanded `export!` macro needs is reached through this crate.
    runtime_path: "guest_common::wit_bindgen::rt",
    // Imports take `&str`/`&[u8]` (and slices of them) instead of owned
    // `String`/`Vec<u8>`, so headers, keys and values are passed without
    // copying them first.
    ownership: Borrowing {
        duplicate_if_necessary: false
    },
});

#[doc(hidden)]
pub use wit_bindgen;

pub mod fetch;
pub mod http;
pub mod kv;
pub mod query;
