//! `wasi:logging@0.1.0-draft`: guest log calls become `tracing` events that
//! carry the tenant, so an operator can always tell whose line it is.

use super::Host;
use super::bindings::wasi::logging::logging::{self, Level};

impl logging::Host for Host {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        // The guest's text goes in string fields after the tenant (quoted
        // on a text line), never in the message, so it cannot pose as a
        // field of the runner's.
        let log = &self.log;
        let context = super::printable(&context);
        let text = super::printable(&message);
        if !log.take_line(context.len() + text.len()) {
            return Ok(());
        }
        let (tenant, context, text) = (log.tenant(), &*context, &*text);
        log.with_request(|request_id| {
            let request_id = request_id.map(tracing::field::display);
            match level {
            Level::Trace => {
                tracing::trace!(target: "guest", %tenant, request_id, context, text)
            }
            Level::Debug => {
                tracing::debug!(target: "guest", %tenant, request_id, context, text)
            }
            Level::Info => tracing::info!(target: "guest", %tenant, request_id, context, text),
            Level::Warn => tracing::warn!(target: "guest", %tenant, request_id, context, text),
            Level::Error => {
                tracing::error!(target: "guest", %tenant, request_id, context, text)
            }
            Level::Critical => {
                tracing::error!(target: "guest", %tenant, request_id, context, text, critical = true)
            }
        }});
        Ok(())
    }
}
