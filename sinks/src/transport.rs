//! Syslog transports: UDP (RFC 5426), and TCP or TLS (RFC 5425) with
//! octet-counting framing (RFC 6587 §3.4.1 / RFC 5425 §4.3:
//! `MSG-LEN SP SYSLOG-MSG`, no delimiter to escape).
//!
//! UDP is fire-and-forget: a datagram the network drops is lost, which the
//! collector can see from gaps in `sequenceId`. TCP hands each batch to the
//! kernel; plain syslog has no acknowledgements, so after a broken
//! connection the batch is resent on a new one (duplicates carry the same
//! `sequenceId`), and bytes a collector had not read when it went away are
//! the one thing TCP syslog cannot vouch for.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::reader::Entry;
use crate::sink::{Sink, SinkError};
use crate::syslog::SyslogFormat;
use crate::tls::{connect_addr, Conn};

/// How a syslog sink reaches its collector.
#[derive(Clone)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// Octet-counted stream.
    Tcp,
    /// Octet-counted stream over TLS, checked against this name.
    Tls(Arc<ClientConfig>, ServerName<'static>),
}

/// A syslog collector.
pub struct SyslogSink {
    format: SyslogFormat,
    transport: Transport,
    address: SocketAddr,
    io_timeout: Duration,
    udp: Option<UdpSocket>,
    tcp: Option<Conn>,
    buf: Vec<u8>,
    msg: Vec<u8>,
}

impl SyslogSink {
    /// A sink sending `format`ted messages to `address` over `transport`.
    pub fn new(
        format: SyslogFormat,
        transport: Transport,
        address: SocketAddr,
        io_timeout: Duration,
    ) -> Self {
        Self {
            format,
            transport,
            address,
            io_timeout,
            udp: None,
            tcp: None,
            buf: Vec::new(),
            msg: Vec::new(),
        }
    }

    fn err(&self, what: &str, e: &std::io::Error) -> SinkError {
        SinkError::new(format!("syslog {what} `{}`: {e}", self.address))
    }

    fn deliver_udp(&mut self, batch: &[Entry]) -> Result<(), SinkError> {
        if self.udp.is_none() {
            let bind: SocketAddr = if self.address.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let s = UdpSocket::bind(bind).map_err(|e| self.err("socket for", &e))?;
            s.connect(self.address)
                .map_err(|e| self.err("connect to", &e))?;
            self.udp = Some(s);
        }
        for e in batch {
            self.msg.clear();
            self.format.encode(&e.line, &mut self.msg);
            let sent = match &self.udp {
                Some(s) => s.send(&self.msg),
                None => continue,
            };
            if let Err(err) = sent {
                // e.g. ECONNREFUSED from an earlier ICMP: start afresh next time.
                self.udp = None;
                return Err(self.err("send to", &err));
            }
        }
        Ok(())
    }

    fn deliver_tcp(&mut self, batch: &[Entry]) -> Result<(), SinkError> {
        self.buf.clear();
        for e in batch {
            self.msg.clear();
            self.format.encode(&e.line, &mut self.msg);
            let _ = write!(self.buf, "{} ", self.msg.len());
            self.buf.extend_from_slice(&self.msg);
        }
        if self.tcp.is_none() {
            let tls = match &self.transport {
                Transport::Tls(config, name) => Some((config, name)),
                _ => None,
            };
            let s = connect_addr(self.address, tls, self.io_timeout)
                .map_err(|e| self.err("connect to", &e))?;
            self.tcp = Some(s);
        }
        let res = match &mut self.tcp {
            Some(s) => s.write_all(&self.buf).and_then(|()| s.flush()),
            None => Ok(()),
        };
        if let Err(e) = res {
            self.tcp = None;
            return Err(self.err("send to", &e));
        }
        Ok(())
    }
}

impl Sink for SyslogSink {
    fn deliver(&mut self, batch: &[Entry]) -> Result<(), SinkError> {
        match self.transport {
            Transport::Udp => self.deliver_udp(batch),
            Transport::Tcp | Transport::Tls(..) => self.deliver_tcp(batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Position;
    use std::io::Read;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            line: format!(
                r#"{{"time":"2026-01-01T00:00:00.000000Z","decision":"allow","log_seq":{seq}}}"#
            )
            .into_bytes(),
            after: Position::START,
        }
    }

    fn format() -> SyslogFormat {
        SyslogFormat {
            facility: 13,
            app_name: "toolgate".into(),
            hostname: "h".into(),
            max_message_bytes: 8192,
        }
    }

    #[test]
    fn tcp_frames_are_octet_counted() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut sink = SyslogSink::new(format(), Transport::Tcp, addr, Duration::from_secs(2));
        assert!(sink.deliver(&[entry(1), entry(2)]).is_ok());
        drop(sink);
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        let mut rest = &got[..];
        let mut seqs = Vec::new();
        while !rest.is_empty() {
            let sp = rest.iter().position(|&b| b == b' ').unwrap_or(0);
            let n: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let msg = String::from_utf8_lossy(&rest[sp + 1..sp + 1 + n]).to_string();
            assert!(msg.starts_with("<110>1 "), "{msg}");
            seqs.push(msg.contains(&format!("sequenceId=\"{}\"", seqs.len() + 1)));
            rest = &rest[sp + 1 + n..];
        }
        assert_eq!(seqs, vec![true, true]);
    }

    #[test]
    fn tcp_to_nobody_is_an_error_then_recovers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut sink = SyslogSink::new(format(), Transport::Tcp, addr, Duration::from_secs(1));
        assert!(sink.deliver(&[entry(1)]).is_err());
    }

    #[test]
    fn udp_sends_one_datagram_per_record() {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = r.set_read_timeout(Some(Duration::from_secs(2)));
        let addr = r.local_addr().unwrap();
        let mut sink = SyslogSink::new(format(), Transport::Udp, addr, Duration::from_secs(1));
        assert!(sink.deliver(&[entry(1), entry(2)]).is_ok());
        let mut buf = [0u8; 9000];
        for seq in 1..=2 {
            let n = r.recv(&mut buf).unwrap_or(0);
            let msg = String::from_utf8_lossy(&buf[..n]);
            assert!(msg.contains(&format!("sequenceId=\"{seq}\"")), "{msg}");
        }
    }
}
