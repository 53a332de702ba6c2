//! The tenant's configuration and secrets ([`crate::vars`]), read-only,
//! through every interface that publishes them: `wasi:config/store` as
//! wasmtime and wasmCloud link it (`0.2.0-rc.1`) and as Spin does
//! (`0.2.0-draft-2024-09-27`), Spin's variables for its WASIp2 SDKs
//! (`fermyon:spin/variables@2.0.0`) and for SDK 7 (`spin:variables@3.0.0`,
//! an `async func`). Each answers as its publisher's host does: an
//! undefined or malformed name is `none` from `wasi:config`, and
//! `undefined` or `invalid-name` from Spin's. `get-all` returns config and
//! secrets alike, as Spin's and wasmtime's hosts do.

use wasmtime::component::Accessor;

use super::bindings::fermyon::spin::variables as spin2;
use super::bindings::spin::variables::variables as spin3;
use super::bindings::wasi::config0_2_0_draft_2024_09_27::store as draft;
use super::bindings::wasi::config0_2_0_rc_1::store as rc1;
use super::{Host, HostData};
use crate::vars;

/// Longest name looked up at all: longer cannot be defined.
const MAX_NAME: usize = 4096;

/// What a Spin variables call answers for `name`.
enum Found {
    Value(String),
    Invalid(String),
    Undefined,
}

impl Host {
    /// Looks `name` up, counting the read by kind (never by name).
    fn lookup(&self, name: &str) -> Found {
        let vars = self.tenant.vars();
        let metrics = self.tenant.metrics();
        if let Err(why) = vars::check_name(name, MAX_NAME) {
            metrics.config_read(None);
            return Found::Invalid(format!("{name:?}: {why}"));
        }
        match vars.get(name) {
            Some((value, kind)) => {
                metrics.config_read(Some(kind));
                Found::Value(value.to_owned())
            }
            None => {
                metrics.config_read(None);
                Found::Undefined
            }
        }
    }

    fn config_get(&self, name: &str) -> Option<String> {
        match self.lookup(name) {
            Found::Value(value) => Some(value),
            Found::Invalid(_) | Found::Undefined => None,
        }
    }

    fn config_all(&self) -> Vec<(String, String)> {
        let vars = self.tenant.vars();
        let metrics = self.tenant.metrics();
        let all = vars.all();
        for (name, _) in &all {
            metrics.config_read(vars.get(name).map(|(_, kind)| kind));
        }
        all
    }
}

type Answer<T, E> = wasmtime::Result<Result<T, E>>;

impl rc1::Host for Host {
    fn get(&mut self, key: String) -> Answer<Option<String>, rc1::Error> {
        Ok(Ok(self.config_get(&key)))
    }

    fn get_all(&mut self) -> Answer<Vec<(String, String)>, rc1::Error> {
        Ok(Ok(self.config_all()))
    }
}

impl draft::Host for Host {
    fn get(&mut self, key: String) -> Answer<Option<String>, draft::Error> {
        Ok(Ok(self.config_get(&key)))
    }

    fn get_all(&mut self) -> Answer<Vec<(String, String)>, draft::Error> {
        Ok(Ok(self.config_all()))
    }
}

impl spin2::Host for Host {
    fn get(&mut self, name: String) -> Answer<String, spin2::Error> {
        Ok(match self.lookup(&name) {
            Found::Value(value) => Ok(value),
            Found::Invalid(why) => Err(spin2::Error::InvalidName(why)),
            Found::Undefined => Err(spin2::Error::Undefined(format!("no variable for {name:?}"))),
        })
    }
}

impl<T: Send> spin3::HostWithStore<T> for HostData {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> Answer<String, spin3::Error> {
        Ok(
            accessor.with(|mut access| match access.get().lookup(&name) {
                Found::Value(value) => Ok(value),
                Found::Invalid(why) => Err(spin3::Error::InvalidName(why)),
                Found::Undefined => {
                    Err(spin3::Error::Undefined(format!("no variable for {name:?}")))
                }
            }),
        )
    }
}

impl spin3::Host for Host {}
