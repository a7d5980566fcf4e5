//! Syslog transports: UDP (RFC 5426), and TCP or TLS (RFC 5425) with
//! octet-counting framing (RFC 6587 §3.4.1 / RFC 5425 §4.3:
//! `MSG-LEN SP SYSLOG-MSG`, no delimiter to escape).
//!
//! UDP is fire-and-forget: a datagram the network drops is lost, which the
//! collector can see from gaps in `sequenceId`. TCP hands each batch to the
//! kernel; plain syslog has no acknowledgements, so a write that succeeded
//! says nothing about whether the collector read it: bytes still in its
//! socket buffer or its own queue when it went away are gone. So the sink
//! keeps what it wrote last on the connection (up to [`RESEND_BYTES`]) and,
//! after a broken connection, writes that again on the new one before the
//! batch that failed. Duplicates carry the same `sequenceId`; only a
//! collector that lost more than that window unread can still lose records.

use std::collections::VecDeque;
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

/// How much of what was last written on a TCP/TLS connection is written
/// again after the connection breaks: more than a collector's socket
/// buffer usually holds unread, so a collector that dies or restarts loses
/// nothing it had been sent.
pub const RESEND_BYTES: usize = 4 << 20;

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
    /// Batches written on the current connection, newest last, at most
    /// [`RESEND_BYTES`] in all beyond the newest.
    recent: VecDeque<Vec<u8>>,
    recent_bytes: usize,
    /// The connection broke: `recent` goes out again first.
    resend: bool,
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
            recent: VecDeque::new(),
            recent_bytes: 0,
            resend: false,
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
            Some(s) => {
                let again = if self.resend {
                    self.recent.iter().try_for_each(|b| s.write_all(b))
                } else {
                    Ok(())
                };
                again
                    .and_then(|()| s.write_all(&self.buf))
                    .and_then(|()| s.flush())
            }
            None => Ok(()),
        };
        if let Err(e) = res {
            self.tcp = None;
            self.resend = !self.recent.is_empty();
            return Err(self.err("send to", &e));
        }
        self.resend = false;
        self.remember();
        Ok(())
    }

    /// Keeps the batch just written for a resend, dropping the oldest
    /// beyond [`RESEND_BYTES`]; the emptied buffer is reused.
    fn remember(&mut self) {
        let kept = std::mem::take(&mut self.buf);
        self.recent_bytes += kept.len();
        self.recent.push_back(kept);
        while self.recent_bytes > RESEND_BYTES && self.recent.len() > 1 {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
                self.buf = old;
            }
        }
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

    /// A collector's listener and a TCP sink sending to it.
    fn tcp_sink() -> (std::net::TcpListener, SyslogSink) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let sink = SyslogSink::new(format(), Transport::Tcp, addr, Duration::from_secs(2));
        (l, sink)
    }

    /// The messages in octet-counted `bytes`.
    fn framed(bytes: &[u8]) -> Vec<String> {
        let mut rest = bytes;
        let mut msgs = Vec::new();
        while let Some(sp) = rest.iter().position(|&b| b == b' ') {
            let n: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
            msgs.push(String::from_utf8_lossy(&rest[sp + 1..sp + 1 + n]).to_string());
            rest = &rest[sp + 1 + n..];
        }
        assert!(rest.is_empty(), "a partial frame");
        msgs
    }

    /// The `sequenceId` of each message in octet-counted `bytes`.
    fn framed_seqs(bytes: &[u8]) -> Vec<u64> {
        framed(bytes)
            .iter()
            .map(|msg| {
                let id = msg.split("sequenceId=\"").nth(1).unwrap();
                id[..id.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    /// Everything the collector's next connection receives.
    fn read_next(l: &std::net::TcpListener) -> Vec<u8> {
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        got
    }

    #[test]
    fn tcp_frames_are_octet_counted() {
        let (l, mut sink) = tcp_sink();
        assert!(sink.deliver(&[entry(1), entry(2)]).is_ok());
        drop(sink);
        let got = read_next(&l);
        for msg in framed(&got) {
            assert!(msg.starts_with("<110>1 "), "{msg}");
        }
        assert_eq!(framed_seqs(&got), vec![1, 2]);
    }

    #[test]
    fn after_a_broken_connection_what_was_sent_last_goes_again() {
        let (l, mut sink) = tcp_sink();
        assert!(sink.deliver(&[entry(1), entry(2)]).is_ok());
        assert!(sink.deliver(&[entry(3)]).is_ok());
        // The collector goes away without reading a byte.
        let (c, _) = l.accept().unwrap();
        drop(c);
        let mut failed = false;
        for _ in 0..50 {
            if sink.deliver(&[entry(4)]).is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(failed, "a write to a closed collector never failed");
        // Back: the new connection gets what the old one may have lost,
        // then the batch that failed.
        assert!(sink.deliver(&[entry(4)]).is_ok());
        drop(sink);
        let seqs = framed_seqs(&read_next(&l));
        for seq in 1..=4 {
            assert!(seqs.contains(&seq), "{seq} missing from {seqs:?}");
        }
        assert_eq!(seqs.last(), Some(&4));
    }

    #[test]
    fn the_resend_window_is_bounded() {
        let (l, mut sink) = tcp_sink();
        let reader = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            std::io::copy(&mut c, &mut std::io::sink()).unwrap();
        });
        let batch: Vec<Entry> = (1..=64).map(entry).collect();
        for _ in 0..2_000 {
            assert!(sink.deliver(&batch).is_ok());
        }
        assert!(sink.recent_bytes <= RESEND_BYTES + sink.recent.back().map_or(0, Vec::len));
        assert!(sink.recent_bytes > RESEND_BYTES / 2);
        drop(sink);
        reader.join().unwrap();
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
