//! One entry of a sandbox's `allow_hosts`: which host names (exact, or
//! every subdomain under a `*.`) and which port a confined stdio server
//! may reach through toolgate's egress proxy.
//!
//! Matching is on the name as the process asked for it, before any
//! resolution, so an entry means what it says: `api.github.com` allows that
//! name and nothing that merely resolves to the same address. An IP
//! address is allowed only when written as one.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The ports a rule without one allows: HTTPS and HTTP.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// The variables toolgate sets to its egress proxy in a process whose
/// sandbox has `allow_hosts`.
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "NODE_USE_ENV_PROXY",
];

/// A host (or every subdomain of one) and a port, as allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This name or address exactly (lowercase, no trailing dot; an IPv6
    /// address in its canonical text).
    Exact(String),
    /// Any name ending in this suffix, which starts with a dot:
    /// `*.example.com` is `.example.com` and does not allow `example.com`.
    Under(String),
}

/// Why an `allow_hosts` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRuleError {
    /// Nothing before the port.
    #[error("`{0}`: no host")]
    Empty(String),
    /// The port is not a number from 1 to 65535.
    #[error("`{0}`: the port must be a number from 1 to 65535")]
    Port(String),
    /// The host is neither a name, a `*.` pattern nor an IP address.
    #[error("`{0}`: write a host name (`api.example.com`), every subdomain of one (`*.example.com`) or an IP address (`10.0.0.5`, `[::1]`), with `:port` or without (ports 443 and 80)")]
    Host(String),
}

impl HostRule {
    /// Reads `host`, `host:port`, `*.domain[:port]`, `a.b.c.d[:port]` or
    /// `[v6][:port]`.
    pub fn parse(entry: &str) -> Result<Self, HostRuleError> {
        let e = entry.trim();
        let (host, port) = split_port(e).ok_or_else(|| HostRuleError::Port(entry.into()))?;
        if host.is_empty() {
            return Err(HostRuleError::Empty(entry.into()));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| HostRuleError::Port(entry.into()))?,
            ),
        };
        let host = if let Some(domain) = host.strip_prefix("*.") {
            let domain = normal_name(domain).ok_or_else(|| HostRuleError::Host(entry.into()))?;
            HostPattern::Under(format!(".{domain}"))
        } else {
            HostPattern::Exact(normal_host(host).ok_or_else(|| HostRuleError::Host(entry.into()))?)
        };
        Ok(Self { host, port })
    }

    /// Whether a request for `host` (as the process wrote it: a name, an
    /// IPv4 address or an IPv6 address without brackets) on `port` is
    /// allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        if !port_ok {
            return false;
        }
        let Some(host) = normal_host(host) else {
            return false;
        };
        match &self.host {
            HostPattern::Exact(h) => *h == host,
            HostPattern::Under(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, v6) = match &self.host {
            HostPattern::Exact(h) => (h.as_str(), h.contains(':')),
            HostPattern::Under(s) => return write_port(f, &format!("*{s}"), self.port),
        };
        if v6 {
            write_port(f, &format!("[{host}]"), self.port)
        } else {
            write_port(f, host, self.port)
        }
    }
}

fn write_port(f: &mut fmt::Formatter<'_>, host: &str, port: Option<u16>) -> fmt::Result {
    match port {
        Some(p) => write!(f, "{host}:{p}"),
        None => write!(f, "{host} (ports 443, 80)"),
    }
}

/// Splits `host[:port]` and `[v6][:port]`; `None` when the text around a
/// bracketed address is malformed. A bare IPv6 address (several colons,
/// no brackets) is taken whole as the host.
pub fn split_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.matches(':').count() {
        0 => Some((s, None)),
        1 => s.split_once(':').map(|(h, p)| (h, Some(p))),
        _ => Some((s, None)),
    }
}

/// A host as compared: an IP address in canonical text, or a DNS name in
/// lowercase without its trailing dot. `None` for anything else.
fn normal_host(host: &str) -> Option<String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(ip.to_string());
    }
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        return Some(ip.to_string());
    }
    normal_name(host)
}

/// A DNS name: labels of letters, digits, `-` and `_`, none empty, at most
/// 253 characters; lowercase, trailing dot dropped. All-digit names (which
/// resolvers may read as odd forms of an IPv4 address, `127.1`) are
/// refused.
fn normal_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> HostRule {
        HostRule::parse(s).unwrap()
    }

    #[test]
    fn a_name_without_port_allows_https_and_http_only() {
        let r = rule("API.GitHub.com");
        assert!(r.allows("api.github.com", 443));
        assert!(r.allows("api.github.com.", 80));
        assert!(!r.allows("api.github.com", 22));
        assert!(!r.allows("github.com", 443));
        assert!(!r.allows("evil-api.github.com", 443));
        assert_eq!(r.to_string(), "api.github.com (ports 443, 80)");
    }

    #[test]
    fn a_port_allows_that_port_only() {
        let r = rule("localhost:8080");
        assert!(r.allows("localhost", 8080));
        assert!(!r.allows("localhost", 443));
        assert_eq!(r.to_string(), "localhost:8080");
    }

    #[test]
    fn a_wildcard_allows_subdomains_not_the_domain_itself() {
        let r = rule("*.example.com:443");
        assert!(r.allows("a.example.com", 443));
        assert!(r.allows("a.b.example.com", 443));
        assert!(!r.allows("example.com", 443));
        assert!(!r.allows("badexample.com", 443));
        assert!(!r.allows("a.example.com.evil.net", 443));
    }

    #[test]
    fn addresses_match_as_addresses_and_odd_forms_do_not() {
        let r = rule("127.0.0.1:9000");
        assert!(r.allows("127.0.0.1", 9000));
        assert!(!r.allows("127.1", 9000));
        assert!(!r.allows("2130706433", 9000));
        assert!(!r.allows("localhost", 9000));
        let v6 = rule("[::1]:9000");
        assert!(v6.allows("::1", 9000));
        assert!(v6.allows("0:0:0:0:0:0:0:1", 9000));
        assert_eq!(v6.to_string(), "[::1]:9000");
    }

    #[test]
    fn malformed_entries_are_refused_with_the_entry() {
        for bad in [
            "",
            ":443",
            "host:0",
            "host:99999",
            "host:x",
            "a..b",
            "*.",
            "ex ample.com",
            "[::1",
            "[::1]x",
            "user@host",
            "http://host",
        ] {
            assert!(HostRule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = HostRule::parse("a b").unwrap_err().to_string();
        assert!(e.contains("`a b`"), "{e}");
    }

    #[test]
    fn requests_for_malformed_hosts_are_not_allowed() {
        let r = rule("*.example.com");
        assert!(!r.allows("", 443));
        assert!(!r.allows("a b.example.com", 443));
        assert!(!r.allows("..example.com", 443));
    }
}
