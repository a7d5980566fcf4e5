//! A small blocking Redis client for the quota sync thread: RESP2 over TCP
//! or TLS (the one rustls setup of [`toolgate_sinks::tls`]), `AUTH` and
//! `SELECT` on connect, then one command at a time, every exchange bounded
//! in time and size. Only what the syncs need: status, integer and bulk
//! string replies (at most [`MAX_BULK`] bytes), nil.

use std::io::{BufRead, BufReader, Read as _, Write};
use std::time::Duration;

use toolgate_core::config::RedisSetup;
use toolgate_core::secret::Secret;
use toolgate_sinks::tls::{connect, Conn};

/// Longest reply line read.
const MAX_LINE: usize = 4096;
/// Largest bulk string read.
pub const MAX_BULK: usize = 1 << 20;

/// Why an exchange with Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// TLS toward Redis cannot be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// Redis answered with an error.
    #[error("Redis: {0}")]
    Server(String),
    /// The answer is not what the command returns.
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    /// The `AUTH` password cannot be read from its source.
    #[error("cannot read the Redis password: {0}")]
    Password(String),
}

/// A reply the sync uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and the like.
    Status(String),
    /// `:n`.
    Int(i64),
    /// `$n` and its bytes.
    Bulk(Vec<u8>),
    /// `$-1`: no value.
    Nil,
}

/// One connection.
pub struct Client {
    conn: BufReader<Conn>,
}

impl Client {
    /// Connects to `setup`'s Redis with the password its source holds now
    /// (read at every connection, so a rotated password is picked up).
    pub fn open(setup: &RedisSetup) -> Result<Self, RedisError> {
        let password = setup
            .password
            .as_ref()
            .map(|s| s.read())
            .transpose()
            .map_err(|e| RedisError::Password(e.to_string()))?;
        Self::connect(setup, password.as_ref())
    }

    /// Connects to `setup`'s Redis, authenticates with `password` and
    /// selects its database.
    pub fn connect(setup: &RedisSetup, password: Option<&Secret>) -> Result<Self, RedisError> {
        let target = format!("{}:{}", setup.host, setup.port);
        let tls = if setup.tls {
            let files = toolgate_sinks::tls::TlsFiles {
                ca_file: setup.ca_file.clone(),
                ..Default::default()
            };
            let config = toolgate_sinks::tls::client_config(&files)
                .map_err(|e| RedisError::Tls(e.to_string()))?;
            let name = toolgate_sinks::tls::server_name(
                setup.host.trim_start_matches('[').trim_end_matches(']'),
            )
            .map_err(|e| RedisError::Tls(e.to_string()))?;
            Some((config, name))
        } else {
            None
        };
        let conn = connect(&target, tls.as_ref().map(|(c, n)| (c, n)), setup.timeout)?;
        let mut client = Self {
            conn: BufReader::with_capacity(4096, conn),
        };
        client.set_timeout(setup.timeout)?;
        if let Some(p) = password {
            client.expect_ok(&[b"AUTH", p.expose()])?;
        }
        if setup.db != 0 {
            client.expect_ok(&[b"SELECT", setup.db.to_string().as_bytes()])?;
        }
        Ok(client)
    }

    fn set_timeout(&mut self, t: Duration) -> std::io::Result<()> {
        let tcp = self.conn.get_ref().tcp();
        tcp.set_read_timeout(Some(t))?;
        tcp.set_write_timeout(Some(t))
    }

    fn expect_ok(&mut self, args: &[&[u8]]) -> Result<(), RedisError> {
        match self.command(args)? {
            Reply::Status(_) => Ok(()),
            other => Err(RedisError::Protocol(format!("{other:?}"))),
        }
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let conn = self.conn.get_mut();
        conn.write_all(&out)?;
        conn.flush()?;
        let mut line = Vec::with_capacity(32);
        let n = (&mut self.conn)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 || !line.ends_with(b"\r\n") {
            return Err(RedisError::Protocol("a cut or overlong reply".into()));
        }
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b'$' => {
                let n: i64 = text.parse().map_err(|_| RedisError::Protocol(text))?;
                let Ok(n) = usize::try_from(n) else {
                    return Ok(Reply::Nil);
                };
                if n > MAX_BULK {
                    return Err(RedisError::Protocol(format!("a value of {n} bytes")));
                }
                let mut bulk = vec![0u8; n + 2];
                self.conn.read_exact(&mut bulk)?;
                if !bulk.ends_with(b"\r\n") {
                    return Err(RedisError::Protocol("a cut value".into()));
                }
                bulk.truncate(n);
                Ok(Reply::Bulk(bulk))
            }
            b'+' => Ok(Reply::Status(text)),
            b'-' => Err(RedisError::Server(text)),
            b':' => text
                .parse()
                .map(Reply::Int)
                .map_err(|_| RedisError::Protocol(text)),
            _ => Err(RedisError::Protocol(text)),
        }
    }

    /// `INCRBY key by`: the new value.
    pub fn incr_by(&mut self, key: &str, by: u64) -> Result<i64, RedisError> {
        match self.command(&[b"INCRBY", key.as_bytes(), by.to_string().as_bytes()])? {
            Reply::Int(n) => Ok(n),
            other => Err(RedisError::Protocol(format!("{other:?}"))),
        }
    }

    /// `GET key`: its value, if any.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        match self.command(&[b"GET", key.as_bytes()])? {
            Reply::Bulk(b) => Ok(Some(b)),
            Reply::Nil => Ok(None),
            other => Err(RedisError::Protocol(format!("{other:?}"))),
        }
    }

    /// `EVAL script` with `keys` and `args` (the script text goes with
    /// every call: scripts here are short, and Redis caches them).
    pub fn eval(
        &mut self,
        script: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Reply, RedisError> {
        let count = keys.len().to_string();
        let mut cmd: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), count.as_bytes()];
        cmd.extend_from_slice(keys);
        cmd.extend_from_slice(args);
        self.command(&cmd)
    }

    /// `EXPIREAT key at` (Unix seconds).
    pub fn expire_at(&mut self, key: &str, at: u64) -> Result<(), RedisError> {
        match self.command(&[b"EXPIREAT", key.as_bytes(), at.to_string().as_bytes()])? {
            Reply::Int(_) => Ok(()),
            other => Err(RedisError::Protocol(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A server that answers each command with the next of `replies`
    /// and keeps what it was sent.
    fn server(replies: Vec<&'static str>) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            for r in replies {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
                s.write_all(r.as_bytes()).unwrap();
            }
            seen
        });
        (port, h)
    }

    fn setup(port: u16, db: u32) -> RedisSetup {
        RedisSetup {
            host: "127.0.0.1".into(),
            port,
            tls: false,
            db,
            ca_file: None,
            password: None,
            lease: 10,
            replicas: 2,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn authenticates_selects_and_counts() {
        let (port, h) = server(vec!["+OK\r\n", "+OK\r\n", ":30\r\n", ":1\r\n"]);
        let secret = Secret::new(b"s3cret".to_vec());
        let mut c = Client::connect(&setup(port, 2), Some(&secret)).unwrap();
        assert_eq!(c.incr_by("k", 10).unwrap(), 30);
        c.expire_at("k", 99).unwrap();
        let sent = String::from_utf8(h.join().unwrap()).unwrap();
        assert_eq!(
            sent,
            "*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n\
             *3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$2\r\n10\r\n*3\r\n$8\r\nEXPIREAT\r\n$1\r\nk\r\n$2\r\n99\r\n"
        );
    }

    #[test]
    fn a_server_error_is_reported_not_taken_for_a_count() {
        let (port, _h) = server(vec!["-WRONGPASS invalid password\r\n"]);
        let secret = Secret::new(b"bad".to_vec());
        let e = Client::connect(&setup(port, 0), Some(&secret))
            .err()
            .unwrap();
        assert!(e.to_string().contains("WRONGPASS"), "{e}");
    }
}
