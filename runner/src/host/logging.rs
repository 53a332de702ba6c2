//! `wasi:logging@0.1.0-draft`: guest log calls become `tracing` events that
//! carry the tenant, so an operator can always tell whose line it is.

use super::Host;
use super::bindings::wasi::logging::logging::{self, Level};

impl logging::Host for Host {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        // The guest's text goes in quoted fields after the tenant, never in
        // the message, so it cannot pose as a field of the runner's.
        let tenant = self.tenant.name();
        let context = super::printable(&context);
        let text = super::printable(&message);
        if !self.take_log_budget(context.len() + text.len()) {
            return Ok(());
        }
        match level {
            Level::Trace => {
                tracing::trace!(target: "guest", tenant = %tenant, ?context, ?text)
            }
            Level::Debug => {
                tracing::debug!(target: "guest", tenant = %tenant, ?context, ?text)
            }
            Level::Info => tracing::info!(target: "guest", tenant = %tenant, ?context, ?text),
            Level::Warn => tracing::warn!(target: "guest", tenant = %tenant, ?context, ?text),
            Level::Error => {
                tracing::error!(target: "guest", tenant = %tenant, ?context, ?text)
            }
            Level::Critical => {
                tracing::error!(target: "guest", tenant = %tenant, ?context, ?text, critical = true)
            }
        }
        Ok(())
    }
}
