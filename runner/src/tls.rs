//! TLS with rustls: the certificate each handshake gets, chosen by the name
//! the client asks for (SNI), and replaced at runtime without touching
//! open connections; and the client side of the admin API.
//!
//! A tenant's own certificate ([`TenantCert`]) answers for the hosts it
//! claims; the operator's (`--tls-cert`, `--tls-key`) for every other name.
//! A handshake takes the certificate current when it starts: a reload
//! (SIGHUP) or a deploy swaps what later handshakes get, and connections
//! already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::vars::Secret;

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl KeyPair {
    /// Reads and checks the pair: the chain parses, the key parses, and
    /// the key is the first certificate's. An error names the file, never
    /// the key's bytes.
    pub fn load(&self, provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading the certificate {}", self.cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!(
                "{} holds no certificate (a PEM file of BEGIN CERTIFICATE blocks)",
                self.cert.display()
            );
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading the private key {}", self.key.display()))?;
        let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
            anyhow::anyhow!(
                "{} and {} do not make a key pair: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        Ok(Arc::new(certified))
    }
}

/// A tenant's own certificate chain and key, PEM, for the hosts it
/// claims. The key is a secret: never shown, sealed where it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantCert {
    pub cert: String,
    pub key: Secret,
}

impl TenantCert {
    /// Checks the pair and that it answers for every host of `hosts`
    /// (one at least): the pair, ready to serve.
    pub fn load(&self, hosts: &[&str]) -> anyhow::Result<Arc<CertifiedKey>> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("tls.cert: {e}"))?;
        if chain.is_empty() {
            anyhow::bail!("tls.cert holds no certificate (PEM BEGIN CERTIFICATE blocks)");
        }
        // An error names the key's field, never a byte of it.
        let key = PrivateKeyDer::from_pem_slice(self.key.expose().as_bytes())
            .map_err(|_| anyhow::anyhow!("tls.key is not a PEM private key"))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| anyhow::anyhow!("tls.cert and tls.key do not make a key pair: {e}"))?;
        if hosts.is_empty() {
            anyhow::bail!(
                "tls: a tenant's certificate answers for the hosts it claims, and it claims \
                 none (set hosts)"
            );
        }
        let leaf = certified
            .end_entity_cert()
            .map_err(|e| anyhow::anyhow!("tls.cert: {e}"))?;
        let parsed = rustls::server::ParsedCertificate::try_from(leaf)
            .map_err(|e| anyhow::anyhow!("tls.cert: {e}"))?;
        for host in hosts {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| anyhow::anyhow!("host {host}: {e}"))?;
            rustls::client::verify_server_name(&parsed, &name).map_err(|_| {
                anyhow::anyhow!("tls.cert does not name host {host}, which the tenant claims")
            })?;
        }
        Ok(Arc::new(certified))
    }
}

/// Finds a tenant's certificate for a name a client asks for.
pub type Lookup = Box<dyn Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// The certificates a listener serves, by the name asked for.
pub struct Certs {
    provider: Arc<CryptoProvider>,
    /// The operator's: for every name without one of its own.
    default: RwLock<Arc<CertifiedKey>>,
    /// Tenants' own, by the name asked for (lowercase, no trailing dot).
    tenants: std::sync::OnceLock<Lookup>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").finish_non_exhaustive()
    }
}

impl Certs {
    /// The operator's pair, read now: a start with a bad one fails.
    pub fn load(pair: &KeyPair) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = pair.load(&provider)?;
        Ok(Self {
            provider,
            default: RwLock::new(certified),
            tenants: std::sync::OnceLock::new(),
        })
    }

    /// Where tenants' own certificates are found; set once.
    pub fn look_up_tenants(&self, lookup: Lookup) {
        let _ = self.tenants.set(lookup);
    }

    /// Reads `pair` (the same files again, or others) and serves it to
    /// every handshake from now on. A pair that does not load changes
    /// nothing.
    pub fn reload(&self, pair: &KeyPair) -> anyhow::Result<()> {
        let certified = pair.load(&self.provider)?;
        *self.default.write() = certified;
        Ok(())
    }

    /// The configuration a listener's handshakes use: TLS 1.2 and 1.3,
    /// HTTP/2 and HTTP/1.1 offered through ALPN, sessions resumed by
    /// tickets and by id.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = rustls::crypto::ring::Ticketer::new().context("a TLS ticketer")?;
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let own = hello
            .server_name()
            .zip(self.tenants.get())
            .and_then(|(name, lookup)| {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                lookup(&name)
            });
        Some(own.unwrap_or_else(|| self.default.read().clone()))
    }
}

/// The pair `{flag}-cert` and `{flag}-key` name, both or neither: `None`
/// leaves TLS off.
pub fn pair(
    flag: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<Option<KeyPair>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(KeyPair {
            cert: cert.to_owned(),
            key: key.to_owned(),
        })),
        (Some(_), None) => anyhow::bail!("{flag}-cert needs {flag}-key, the certificate's key"),
        (None, Some(_)) => anyhow::bail!("{flag}-key needs {flag}-cert, the key's certificate"),
    }
}

/// A client's configuration that trusts the CA certificates in `ca` (a
/// PEM file) alone, or, without one, the system's (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` honoured); HTTP/1.1 by ALPN.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(file) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| {
                    anyhow::anyhow!("reading the CA certificates {}: {e}", file.display())
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!("{} holds no CA certificate", file.display());
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                anyhow::bail!(
                    "no trusted certificates found on this system: name the runner's CA with \
                     --admin-ca FILE"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
