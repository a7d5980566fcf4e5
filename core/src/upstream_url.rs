//! Upstream endpoint URLs: `http[s]://host[:port]/path`.
//!
//! Deliberately narrow: only what toolgate can dial. No userinfo (credentials
//! belong in credential config, never in a URL that gets logged), no query
//! or fragment, and never a link-local address: that is where cloud
//! instance-metadata services answer (169.254.169.254, fd00:ec2::254), and a
//! tool, judge or sink URL pointing there would hand the host's cloud
//! credentials to whoever reads the answers. The same check runs again on
//! every address a name resolves to, at dial time ([`reachable`]).

use std::net::IpAddr;

/// Whether toolgate may dial `ip`: not link-local (IPv4 169.254.0.0/16, IPv6
/// fe80::/10, or either mapped into IPv6), not the unspecified address, and
/// not AWS's IPv6 instance-metadata address. Private and loopback ranges
/// are allowed: internal tools live there.
pub fn reachable(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if let Some(v4) = v4 {
        return !(v4.is_link_local() || v4.is_unspecified());
    }
    match ip {
        IpAddr::V6(v6) => {
            let metadata = v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254];
            !(v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80 || metadata)
        }
        IpAddr::V4(_) => true,
    }
}

/// A parsed upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Host as written (name, IPv4, or bracketed IPv6).
    pub host: String,
    /// TCP port (default 80).
    pub port: u16,
    /// Request target, starting with `/`.
    pub path: String,
    /// `Host` header value.
    pub authority: String,
    /// Whether the endpoint is `https://` (TLS, with the host as SNI and
    /// the name the certificate must carry).
    pub tls: bool,
}

impl UpstreamUrl {
    /// The stand-in endpoint of an upstream toolgate runs as a process
    /// (`kind = "stdio"`), never dialed: host `stdio.{name}`, port 0.
    pub fn process(name: &str) -> Self {
        Self {
            host: format!("stdio.{name}"),
            port: 0,
            path: "/".into(),
            authority: format!("stdio.{name}"),
            tls: false,
        }
    }

    /// Parses `http[s]://host[:port]/path`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rest, tls) = if let Some(r) = s.strip_prefix("http://") {
            (r, false)
        } else if let Some(r) = s.strip_prefix("https://") {
            (r, true)
        } else {
            return Err(format!("`{s}` is not an `http[s]://host:port/path` URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!("`{s}`: credentials in the URL are not allowed"));
        }
        if path.contains(['?', '#']) || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "`{s}`: the path must have no query, fragment, spaces or control characters"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: unclosed `[`"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("`{s}`: no host"));
        }
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if literal.parse::<IpAddr>().is_ok_and(|ip| !reachable(ip)) {
            return Err(format!(
                "`{s}`: link-local and cloud instance-metadata addresses are never dialled"
            ));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{s}`: bad port `{p}`"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            host,
            port,
            path: path.to_owned(),
            authority: authority.to_owned(),
            tls,
        })
    }

    /// The host without IPv6 brackets: the TLS server name (a DNS name or
    /// an IP address the certificate must carry).
    pub fn server_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// `host:port` for address resolution (IPv6 hosts keep their brackets).
    pub fn dial_target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url_parses() {
        let u = UpstreamUrl::parse("http://127.0.0.1:9101/mcp").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9101, "/mcp")
        );
        assert_eq!(u.dial_target(), "127.0.0.1:9101");
    }

    #[test]
    fn default_port_and_path() {
        let u = UpstreamUrl::parse("http://tools.internal").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
    }

    #[test]
    fn https_defaults_to_443_and_names_its_server() {
        let u = UpstreamUrl::parse("https://tools.internal/mcp").unwrap();
        assert!(u.tls);
        assert_eq!((u.port, u.server_name()), (443, "tools.internal"));
        let v6 = UpstreamUrl::parse("https://[::1]:8443/mcp").unwrap();
        assert_eq!((v6.port, v6.server_name()), (8443, "::1"));
        let plain = UpstreamUrl::parse("http://x/mcp").unwrap();
        assert!(!plain.tls);
    }

    #[test]
    fn private_and_loopback_addresses_are_reachable_link_local_is_not() {
        for ok in [
            "10.0.0.5",
            "192.168.1.1",
            "127.0.0.1",
            "::1",
            "fd00::1",
            "172.16.0.1",
        ] {
            let ip: IpAddr = ok.parse().unwrap();
            assert!(reachable(ip), "{ok}");
        }
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(!reachable(ip), "{bad}");
        }
    }

    #[test]
    fn ipv6_host() {
        let u = UpstreamUrl::parse("http://[::1]:9000/mcp").unwrap();
        assert_eq!(u.dial_target(), "[::1]:9000");
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "ftp://x",
            "https://u:p@x/mcp",
            "http://u:p@x/mcp",
            "http://x:0/",
            "http://x:99999/",
            "http:///mcp",
            "http://x/a?b",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]:80/mcp",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0:80/mcp",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
