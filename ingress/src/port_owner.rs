//! Whether some socket already listens on a TCP address, read from the
//! kernel's socket tables (`/proc/net/tcp`, `/proc/net/tcp6`) before the
//! shards bind.
//!
//! Shards bind with `SO_REUSEPORT`, which lets any process of the same user
//! join the port; checking for a listener first keeps a second gateway from
//! silently sharing ours. A test bind cannot do this job: without
//! `SO_REUSEPORT` it also fails on the connections a previous run left in
//! `TIME_WAIT` or `FIN_WAIT` on the port, which must not stop a restart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The state column of a listening socket.
const LISTEN: &str = "0A";

/// Whether a listening socket anywhere on this host (network namespace)
/// would take connections meant for `addr`: one on the same address and
/// port, or a wildcard on either side. `false` when the tables cannot be
/// read (no `/proc`): the bind goes ahead as before.
pub fn listened_on(addr: SocketAddr) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .map(|text| listeners(&text).any(|l| overlaps(l, addr)))
            .unwrap_or(false)
    })
}

/// The listening addresses of one table's text.
fn listeners(text: &str) -> impl Iterator<Item = SocketAddr> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1)?;
        let state = cols.nth(1)?;
        if state != LISTEN {
            return None;
        }
        parse_local(local)
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word of the address as the kernel prints it, in host byte order.
fn parse_local(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| {
            let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
            // The word's bytes as they lie in memory: the address's own.
            Some(w.to_ne_bytes())
        })
        .collect::<Option<Vec<[u8; 4]>>>()?;
    let ip = match words.as_slice() {
        [a] => IpAddr::V4(Ipv4Addr::from(*a)),
        [a, b, c, d] => {
            let mut octets = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&w[..]);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a listener on `l` would take connections for `addr`.
fn overlaps(l: SocketAddr, addr: SocketAddr) -> bool {
    if l.port() != addr.port() {
        return false;
    }
    let (a, b) = (canonical(l.ip()), canonical(addr.ip()));
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// An IPv4-mapped IPv6 address as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_hex_addresses() {
        assert_eq!(
            parse_local("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_local("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_local("0000000000000000FFFF00000100007F:01BB"),
            Some("[::ffff:127.0.0.1]:443".parse().unwrap())
        );
        assert_eq!(parse_local("zz:1"), None);
    }

    #[test]
    fn only_listeners_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:1F91 0100007F:D431 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0\n";
        let found: Vec<SocketAddr> = listeners(table).collect();
        assert_eq!(found, vec!["127.0.0.1:8080".parse().unwrap()]);
    }

    #[test]
    fn a_wildcard_on_either_side_overlaps() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(at("0.0.0.0:80"), at("127.0.0.1:80")));
        assert!(overlaps(at("127.0.0.1:80"), at("0.0.0.0:80")));
        assert!(overlaps(at("[::]:80"), at("127.0.0.1:80")));
        assert!(overlaps(at("[::ffff:127.0.0.1]:80"), at("127.0.0.1:80")));
        assert!(!overlaps(at("127.0.0.2:80"), at("127.0.0.1:80")));
        assert!(!overlaps(at("127.0.0.1:81"), at("127.0.0.1:80")));
    }

    #[test]
    fn sees_a_real_listener_and_not_a_closed_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listened_on(addr));
        drop(l);
        assert!(!listened_on(addr));
    }
}
