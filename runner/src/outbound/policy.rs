//! Who a tenant may call: its allow-list of hosts, in Spin's
//! `allowed_outbound_hosts` syntax, and the runner-wide address policy that
//! every resolved address must pass as well.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::settings::{Item, List};

/// The schemes a pattern may name: the ones the runner sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd)]
enum Hosts {
    /// `*`: any host.
    Any,
    /// `*.example.com`: any name under the domain, not the domain itself.
    Under(String),
    /// A name (lowercase, no trailing dot) or an IP literal, exactly.
    Exactly(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd)]
enum Ports {
    /// No port written: the scheme's own (80, 443).
    Default,
    /// `:*`.
    Any,
    /// `:8080` (8080 to 8080), or a range `:8000..8010` (end excluded, as
    /// Spin reads it: 8000 to 8009), bounds included here.
    Range(u16, u16),
}

/// One entry of an allow-list: `scheme://host[:port]`, where the scheme may
/// be `*`, the host `*` or `*.domain`, and the port `*` or a range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd)]
pub struct HostPattern {
    /// `None`: `*`, http and https.
    scheme: Option<Scheme>,
    hosts: Hosts,
    ports: Ports,
    text: String,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "{text:?} is not an outbound host ({why}); write scheme://host[:port], as https://api.example.com, https://*.example.com or http://10.0.0.5:8080"
            ))
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad("no scheme");
        };
        let scheme = match scheme {
            "*" => None,
            s => match Scheme::parse(s) {
                Some(s) => Some(s),
                None => return bad("the scheme is neither http, https nor *"),
            },
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return bad("only a scheme, a host and a port");
        }
        // An IPv6 literal is bracketed; the port follows the last colon.
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let Some((ip, tail)) = after.split_once(']') else {
                return bad("an unclosed [");
            };
            match tail {
                "" => (format!("[{ip}]"), None),
                t => match t.strip_prefix(':') {
                    Some(p) => (format!("[{ip}]"), Some(p)),
                    None => return bad("text after the ]"),
                },
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        let host = normalize_host(&host);
        let hosts = if host == "*" {
            Hosts::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') || !valid_name(domain) {
                return bad("a wildcard is * or *.domain");
            }
            Hosts::Under(domain.to_owned())
        } else if host.contains('*') {
            return bad("a wildcard is * or *.domain");
        } else if parse_ip(&host).is_some() || valid_name(&host) {
            Hosts::Exactly(host)
        } else {
            return bad("not a host name or an IP address");
        };
        let ports = match port {
            None if scheme.is_none() => return bad("*:// needs a port, or :*"),
            None => Ports::Default,
            Some("*") => Ports::Any,
            Some(p) => {
                let range = match p.split_once("..") {
                    Some((a, b)) => a
                        .parse::<u16>()
                        .ok()
                        .zip(b.parse::<u16>().ok())
                        .filter(|(a, b)| a < b)
                        .map(|(a, b)| (a, b - 1)),
                    None => p.parse::<u16>().ok().map(|n| (n, n)),
                };
                match range {
                    Some((a, b)) if a > 0 => Ports::Range(a, b),
                    _ => return bad("the port is a number from 1 to 65535, a range a..b or *"),
                }
            }
        };
        Ok(Self {
            scheme,
            hosts,
            ports,
            text: text.to_owned(),
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry;
    /// `host` as [`normalize_host`] leaves it.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if self.scheme.is_some_and(|s| s != scheme) {
            return false;
        }
        let port_ok = match self.ports {
            Ports::Default => self.scheme.map(Scheme::default_port) == Some(port),
            Ports::Any => true,
            Ports::Range(a, b) => (a..=b).contains(&port),
        };
        port_ok
            && match &self.hosts {
                Hosts::Any => true,
                Hosts::Exactly(h) => h == host,
                Hosts::Under(domain) => host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A host as compared: lowercase, without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

/// An IP literal, IPv6 bracketed or not.
pub fn parse_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A DNS name of letters, digits, hyphens and underscores in dot-separated
/// labels.
pub fn valid_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Item for HostPattern {
    const EXPECTED: &'static str = "a list of URLs such as [\"https://api.example.com\"]";

    fn parse(text: &str) -> Result<Self, String> {
        HostPattern::parse(text)
    }
}

impl Item for IpNet {
    const EXPECTED: &'static str = "a list of networks such as [\"127.0.0.0/8\"]";

    fn parse(text: &str) -> Result<Self, String> {
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(|n| n.trunc())
            .map_err(|_| {
                format!("{text:?} is not a network such as 127.0.0.0/8, 10.1.2.0/24 or ::1/128")
            })
    }
}

/// A tenant's allow-list (`allowed-outbound-hosts`): empty, the default,
/// refuses every outgoing request.
pub type AllowedHosts = List<HostPattern>;

impl AllowedHosts {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.0.iter().any(|p| p.allows(scheme, host, port))
    }
}

/// Networks outgoing requests may reach although the address policy
/// refuses them (`allowed-outbound-networks`): CIDRs.
pub type Networks = List<IpNet>;

/// Why the address policy refuses an address: the rule, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    Loopback,
    Private,
    LinkLocal,
    Unspecified,
    Multicast,
    Reserved,
    /// One of the runner's own listening addresses: never allowed, so a
    /// guest cannot call the runner (itself, a neighbour, the admin API).
    Runner,
}

impl Blocked {
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Loopback => "loopback",
            Blocked::Private => "private",
            Blocked::LinkLocal => "link-local",
            Blocked::Unspecified => "unspecified",
            Blocked::Multicast => "multicast",
            Blocked::Reserved => "reserved",
            Blocked::Runner => "the runner's own listener",
        }
    }
}

/// Which resolved addresses a connection may go to.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
    own: Vec<SocketAddr>,
}

impl AddressPolicy {
    pub fn new(allowed: Networks) -> Self {
        Self {
            allowed: allowed.0,
            own: Vec::new(),
        }
    }

    /// The runner's listening addresses, refused whatever is allowed.
    pub fn with_own(mut self, own: Vec<SocketAddr>) -> Self {
        self.own = own;
        self
    }

    /// `None` when `addr` may be connected to, else the rule refusing it.
    pub fn check(&self, addr: SocketAddr) -> Option<Blocked> {
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is that IPv4
        // address to the kernel, so it is judged as one.
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let own = self.own.iter().any(|o| {
            o.port() == addr.port() && (o.ip() == ip || (o.ip().is_unspecified() && is_local(ip)))
        });
        if own {
            return Some(Blocked::Runner);
        }
        let blocked = classify(ip)?;
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        Some(blocked)
    }
}

/// Addresses a listener on 0.0.0.0 or :: can be reached at from here.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || classify(ip) == Some(Blocked::Private)
}

/// The rule refusing `ip` by default, if any.
fn classify(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Blocked> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        Blocked::Loopback
    } else if ip.is_unspecified() || a == 0 {
        Blocked::Unspecified
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // RFC 1918, and RFC 6598's carrier-grade NAT space.
        Blocked::Private
    } else if ip.is_link_local() {
        // 169.254.0.0/16: cloud metadata (169.254.169.254) lives here.
        Blocked::LinkLocal
    } else if ip.is_multicast() {
        Blocked::Multicast
    } else if ip.is_broadcast() || a >= 240 || (a == 192 && b == 0 && ip.octets()[2] == 0) {
        Blocked::Reserved
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Blocked> {
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        Blocked::Loopback
    } else if ip.is_unspecified() {
        Blocked::Unspecified
    } else if first & 0xfe00 == 0xfc00 {
        // RFC 4193 unique local, fd00:ec2::254 (AWS metadata) among them.
        Blocked::Private
    } else if first & 0xffc0 == 0xfe80 {
        Blocked::LinkLocal
    } else if ip.is_multicast() {
        Blocked::Multicast
    } else if let Some(v4) = embedded_v4(ip) {
        // NAT64 and the deprecated IPv4-compatible form reach IPv4 hosts.
        return classify_v4(v4);
    } else {
        return None;
    })
}

/// The IPv4 address inside a NAT64 (64:ff9b::/96) or IPv4-compatible
/// (::/96) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0; 6] {
        Some(low())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Setting;

    fn p(text: &str) -> HostPattern {
        HostPattern::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn patterns_match_as_spin_reads_them() {
        let exact = p("https://api.example.com");
        assert!(exact.allows(Scheme::Https, "api.example.com", 443));
        assert!(!exact.allows(Scheme::Https, "api.example.com", 8443));
        assert!(!exact.allows(Scheme::Http, "api.example.com", 443));
        assert!(!exact.allows(Scheme::Https, "x.api.example.com", 443));
        assert!(!exact.allows(Scheme::Https, "evilapi.example.com", 443));

        let under = p("https://*.example.com");
        assert!(under.allows(Scheme::Https, "a.example.com", 443));
        assert!(under.allows(Scheme::Https, "a.b.example.com", 443));
        assert!(!under.allows(Scheme::Https, "example.com", 443));
        assert!(!under.allows(Scheme::Https, "badexample.com", 443));

        let port = p("http://svc.internal:8080");
        assert!(port.allows(Scheme::Http, "svc.internal", 8080));
        assert!(!port.allows(Scheme::Http, "svc.internal", 80));

        let any_port = p("https://api.example.com:*");
        assert!(any_port.allows(Scheme::Https, "api.example.com", 1));
        let range = p("http://127.0.0.1:8000..8002");
        assert!(range.allows(Scheme::Http, "127.0.0.1", 8001));
        assert!(!range.allows(Scheme::Http, "127.0.0.1", 8002));
        let v6 = p("http://[::1]:8080");
        assert!(v6.allows(Scheme::Http, "[::1]", 8080));
        let star = p("*://*:*");
        assert!(star.allows(Scheme::Http, "anything", 9));
        assert!(p("HTTPS://API.Example.COM./").allows(Scheme::Https, "api.example.com", 443));
    }

    #[test]
    fn malformed_patterns_are_refused_saying_why() {
        for (text, why) in [
            ("api.example.com", "no scheme"),
            ("ftp://x", "neither http"),
            ("https://x/path", "only a scheme"),
            ("https://user@x", "only a scheme"),
            ("https://a.*.com", "a wildcard"),
            ("https://x:0", "the port"),
            ("https://x:70000", "the port"),
            ("*://x", "needs a port"),
            ("https://ex ample.com", "not a host name"),
        ] {
            let e = HostPattern::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn the_address_policy_refuses_internal_addresses_unless_allowed() {
        let policy = AddressPolicy::default();
        let at = |ip: &str| SocketAddr::new(ip.parse().expect("an ip"), 80);
        for (ip, rule) in [
            ("127.0.0.1", Blocked::Loopback),
            ("::1", Blocked::Loopback),
            ("::ffff:127.0.0.1", Blocked::Loopback),
            ("10.1.2.3", Blocked::Private),
            ("172.16.0.1", Blocked::Private),
            ("192.168.1.1", Blocked::Private),
            ("100.64.0.1", Blocked::Private),
            ("fd12::1", Blocked::Private),
            ("fd00:ec2::254", Blocked::Private),
            ("169.254.169.254", Blocked::LinkLocal),
            ("fe80::1", Blocked::LinkLocal),
            ("0.0.0.0", Blocked::Unspecified),
            ("::", Blocked::Unspecified),
            ("224.0.0.1", Blocked::Multicast),
            ("ff02::1", Blocked::Multicast),
            ("255.255.255.255", Blocked::Reserved),
            ("64:ff9b::a9fe:a9fe", Blocked::LinkLocal),
        ] {
            assert_eq!(policy.check(at(ip)), Some(rule), "{ip}");
        }
        assert_eq!(policy.check(at("93.184.215.14")), None);
        assert_eq!(policy.check(at("2606:2800:21f:cb07::1")), None);

        let allowed = Networks::parse_flag("127.0.0.0/8, ::1").expect("networks");
        let own: SocketAddr = "0.0.0.0:8080".parse().expect("an address");
        let policy = AddressPolicy::new(allowed).with_own(vec![own]);
        assert_eq!(policy.check(at("127.0.0.1")), None);
        assert_eq!(policy.check(at("10.0.0.1")), Some(Blocked::Private));
        assert_eq!(
            policy.check("127.0.0.1:8080".parse().expect("an address")),
            Some(Blocked::Runner)
        );
    }

    #[test]
    fn lists_read_from_flags_and_files_and_show_back() {
        let list = AllowedHosts::parse_flag("https://a.com, http://b.com:81").expect("a list");
        assert_eq!(list.show(), "https://a.com,http://b.com:81");
        let toml: toml::Value =
            toml::from_str::<toml::Table>("x = [\"https://a.com\"]").expect("toml")["x"].clone();
        assert_eq!(
            AllowedHosts::from_toml(&toml).expect("a list").to_json(),
            serde_json::json!(["https://a.com"])
        );
        assert_eq!(
            AllowedHosts::parse_flag("").expect("empty"),
            AllowedHosts::default()
        );
        assert!(Networks::parse_flag("10.0.0.0/33").is_err());
    }
}
