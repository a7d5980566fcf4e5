//! SIEM sinks over HTTP: Splunk HEC, Elasticsearch/OpenSearch `_bulk`, and a
//! generic NDJSON webhook. Each is a [`Sink`] under the shared
//! [`crate::sink::SinkRunner`], so cursors, retries and at-least-once
//! delivery are the same as for syslog.
//!
//! A runner batch (`batch_records`) is cut into requests of at most
//! `batch_bytes` (before gzip). The sink remembers which records of the
//! batch the collector has acknowledged, so a retry resends only what was
//! not: a request that failed, or (Elasticsearch) the items of a bulk
//! request that failed with 429 or 5xx. Duplicates therefore happen only
//! when an acknowledgement is lost (a response that never arrived, or a
//! restart between delivery and the cursor save); Elasticsearch refuses
//! those as 409 on the record's `_id` (its chain hash), which counts as
//! delivered.
//!
//! Status handling is [`crate::retry`]'s, shared with the SOAR sink: 2xx is
//! delivered; 408, 429, 5xx and connection errors are retried with jittered
//! backoff (429/503 honour `Retry-After`); any other 4xx (a bad token, a
//! malformed or oversized event, a mapping error) is a rejection: still
//! retried, never skipped, but logged as an error each time and counted,
//! since only an operator can fix it.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use toolgate_core::config::{SinkConfig, SinkFormat, SinkKind, SinkTarget};
use toolgate_core::secret::{Secret, SecretError};

use crate::http::{HttpClient, Response};
use crate::ocsf;
use crate::reader::Entry;
use crate::retry::{classify, snippet, Endpoint, Verdict};
use crate::sink::{Sink, SinkError};
use crate::tls::{client_config, server_name, TlsError, TlsFiles};

/// Why an HTTP sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkError {
    /// The token could not be read.
    #[error("sink `{sink}`: token: {source}")]
    Token {
        /// Sink name.
        sink: String,
        /// The cause (names the source, never the value).
        source: SecretError,
    },
    /// TLS could not be set up.
    #[error("sink `{sink}`: {source}")]
    Tls {
        /// Sink name.
        sink: String,
        /// The cause.
        source: TlsError,
    },
    /// Not an HTTP sink, or no URL.
    #[error("sink `{0}` is not an HTTP sink with a URL")]
    NotHttp(String),
}

/// Which collector API the sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Hec,
    Bulk,
    Webhook,
}

/// An HTTP SIEM sink.
pub struct HttpSink {
    name: String,
    api: Api,
    format: SinkFormat,
    gzip: bool,
    batch_bytes: usize,
    index: Option<String>,
    host: String,
    source: String,
    sourcetype: String,
    /// Where batches go; its auth header is `prefix` + token.
    endpoint: Endpoint,
    /// Records of the current runner batch the collector acknowledged.
    acked: HashSet<u64>,
    body: Vec<u8>,
    gz: Vec<u8>,
    one: Vec<u8>,
}

impl HttpSink {
    /// Builds the sink for `[[audit.sinks]]` entry `s` (validated into `t`):
    /// reads its token and sets up TLS for `https://`.
    pub fn from_config(
        s: &SinkConfig,
        t: &SinkTarget,
        hostname: String,
    ) -> Result<Self, HttpSinkError> {
        let name = s.name.get_ref().clone();
        let (api, default_prefix) = match s.kind {
            SinkKind::SplunkHec => (Api::Hec, "Splunk "),
            SinkKind::Elasticsearch => (Api::Bulk, "ApiKey "),
            SinkKind::Webhook | SinkKind::Soar => (Api::Webhook, "Bearer "),
            SinkKind::Syslog => return Err(HttpSinkError::NotHttp(name)),
        };
        let Some(url) = &t.url else {
            return Err(HttpSinkError::NotHttp(name));
        };
        let auth = match (&t.token, &s.token) {
            (Some(src), Some(tok)) => {
                let secret = src.read().map_err(|source| HttpSinkError::Token {
                    sink: name.clone(),
                    source,
                })?;
                let prefix = tok.value_prefix.as_deref().unwrap_or(default_prefix);
                let mut v = Vec::with_capacity(prefix.len() + secret.expose().len());
                v.extend_from_slice(prefix.as_bytes());
                v.extend_from_slice(secret.expose());
                let header = tok.header.clone().unwrap_or_else(|| "Authorization".into());
                Some((header, Secret::new(v)))
            }
            _ => None,
        };
        let tls = if url.https {
            let tls_err = |source| HttpSinkError::Tls {
                sink: name.clone(),
                source,
            };
            let config = client_config(&TlsFiles {
                ca_file: t.ca_file.clone(),
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            })
            .map_err(tls_err)?;
            let sni = server_name(&t.server_name).map_err(tls_err)?;
            Some((config, sni))
        } else {
            None
        };
        let mut path = url.url.path.clone();
        if api == Api::Bulk {
            path = format!("{}/_bulk", path.trim_end_matches('/'));
        }
        let index = match api {
            Api::Bulk => Some(s.index.clone().unwrap_or_else(|| "toolgate-audit".into())),
            _ => s.index.clone(),
        };
        Ok(Self {
            name,
            api,
            format: s.format,
            gzip: s.gzip,
            batch_bytes: s.batch_bytes,
            index,
            host: hostname,
            source: s.source.clone(),
            sourcetype: s.sourcetype.clone(),
            endpoint: Endpoint {
                client: HttpClient::new(
                    url.url.dial_target(),
                    url.url.authority.clone(),
                    tls,
                    Duration::from_millis(s.io_timeout_ms),
                ),
                path,
                auth,
                headers: s
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            acked: HashSet::new(),
            body: Vec::new(),
            gz: Vec::new(),
            one: Vec::new(),
        })
    }

    /// The endpoint (connection, URL path, auth header and extra headers),
    /// for a sink that POSTs its own bodies (SOAR alerts) to the same kind of
    /// collector.
    pub(crate) fn into_endpoint(self) -> Endpoint {
        self.endpoint
    }

    /// Appends one record, as this sink's API wants it, to `self.one`.
    fn encode(&mut self, e: &Entry) {
        let out = &mut self.one;
        out.clear();
        let r = ocsf::Record::parse(&e.line);
        let doc = |out: &mut Vec<u8>, es: bool| match self.format {
            SinkFormat::Ocsf => ocsf::write_ocsf(&r, es, out),
            SinkFormat::Toolgate => {
                if es && e.line.first() == Some(&b'{') && e.line.len() > 2 {
                    out.extend_from_slice(b"{\"@timestamp\":");
                    let _ = serde_json::to_writer(&mut *out, &r.time);
                    out.push(b',');
                    out.extend_from_slice(&e.line[1..]);
                } else {
                    out.extend_from_slice(&e.line);
                }
            }
        };
        match self.api {
            Api::Hec => {
                let ms = r.time_ms().unwrap_or(0);
                let _ = write!(out, "{{\"time\":{}.{:03},\"host\":", ms / 1000, ms % 1000);
                let _ = serde_json::to_writer(&mut *out, &self.host);
                out.extend_from_slice(b",\"source\":");
                let _ = serde_json::to_writer(&mut *out, &self.source);
                out.extend_from_slice(b",\"sourcetype\":");
                let _ = serde_json::to_writer(&mut *out, &self.sourcetype);
                if let Some(i) = &self.index {
                    out.extend_from_slice(b",\"index\":");
                    let _ = serde_json::to_writer(&mut *out, i);
                }
                out.extend_from_slice(b",\"event\":");
                doc(out, false);
                out.extend_from_slice(b"}\n");
            }
            Api::Bulk => {
                out.extend_from_slice(b"{\"create\":{\"_index\":");
                let _ = serde_json::to_writer(&mut *out, self.index.as_deref().unwrap_or(""));
                out.extend_from_slice(b",\"_id\":");
                match r.hash.as_deref() {
                    Some(h) => {
                        let _ = serde_json::to_writer(&mut *out, h);
                    }
                    None => {
                        let _ = write!(out, "\"{}\"", e.seq);
                    }
                }
                out.extend_from_slice(b"}}\n");
                doc(out, true);
                out.push(b'\n');
            }
            Api::Webhook => {
                doc(out, false);
                out.push(b'\n');
            }
        }
    }

    /// Sends `self.body` (holding `chunk`) and interprets the answer.
    fn send(&mut self, chunk: &[u64]) -> Result<(), SinkError> {
        let content_type: &[u8] = match self.api {
            Api::Hec => b"application/json",
            _ => b"application/x-ndjson",
        };
        let payload: &[u8] = if self.gzip {
            self.gz.clear();
            let mut enc = flate2::write::GzEncoder::new(&mut self.gz, flate2::Compression::fast());
            let done = enc
                .write_all(&self.body)
                .and_then(|()| enc.finish().map(|_| ()));
            if let Err(e) = done {
                return Err(SinkError::new(format!("gzip: {e}")));
            }
            &self.gz
        } else {
            &self.body
        };
        let content: [(&str, &[u8]); 2] = [
            ("Content-Type", content_type),
            ("Content-Encoding", b"gzip"),
        ];
        let content = if self.gzip {
            &content[..]
        } else {
            &content[..1]
        };
        let resp = self.endpoint.post(content, payload)?;
        if self.api == Api::Bulk && (200..300).contains(&resp.status) {
            return self.bulk_items(chunk, &resp);
        }
        self.endpoint
            .outcome(&resp, format_args!("{} records", chunk.len()))?;
        self.acked.extend(chunk.iter().copied());
        Ok(())
    }

    /// Reads a `_bulk` response item by item.
    fn bulk_items(&mut self, chunk: &[u64], resp: &Response) -> Result<(), SinkError> {
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        if v["errors"] == Value::Bool(false) {
            self.acked.extend(chunk.iter().copied());
            return Ok(());
        }
        let items = v["items"].as_array().filter(|i| i.len() == chunk.len());
        let Some(items) = items else {
            // Cannot tell which records made it: resend them all (the
            // `_id`s turn any that did into 409s).
            return Err(SinkError::new(format!(
                "bulk response without one item per record: {}",
                snippet(&resp.body)
            )));
        };
        let (mut retry, mut rejected) = (0usize, 0usize);
        let mut example = String::new();
        for (seq, item) in chunk.iter().zip(items) {
            let status = item
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|r| r["status"].as_u64())
                .unwrap_or(0) as u16;
            match classify(status) {
                Verdict::Delivered => {
                    self.acked.insert(*seq);
                }
                v => {
                    if v == Verdict::Rejected {
                        rejected += 1;
                    } else {
                        retry += 1;
                    }
                    if example.is_empty() {
                        let err = item
                            .as_object()
                            .and_then(|o| o.values().next())
                            .map(|r| r["error"].to_string())
                            .unwrap_or_default();
                        example = format!("record {seq}: {status} {}", cut(&err, 300));
                    }
                }
            }
        }
        if retry + rejected == 0 {
            return Ok(());
        }
        let msg = format!("bulk: {retry} records to retry, {rejected} refused (e.g. {example})");
        Err(if rejected > 0 {
            SinkError::rejected(msg)
        } else {
            SinkError::retry_after(msg, resp.retry_after)
        })
    }
}

fn cut(s: &str, max: usize) -> &str {
    toolgate_core::audit::truncate(s, max)
}

impl Sink for HttpSink {
    fn deliver(&mut self, batch: &[Entry]) -> Result<(), SinkError> {
        let mut chunk: Vec<u64> = Vec::new();
        let mut i = 0;
        while i < batch.len() {
            self.body.clear();
            chunk.clear();
            while i < batch.len() {
                let e = &batch[i];
                if self.acked.contains(&e.seq) {
                    i += 1;
                    continue;
                }
                self.encode(e);
                if !self.body.is_empty() && self.body.len() + self.one.len() > self.batch_bytes {
                    break;
                }
                self.body.extend_from_slice(&self.one);
                chunk.push(e.seq);
                i += 1;
            }
            if chunk.is_empty() {
                break;
            }
            self.send(&chunk)?;
        }
        tracing::trace!(sink = %self.name, records = batch.len(), "batch delivered");
        self.acked.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::server;
    use crate::reader::Position;
    use std::io::Read;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            line: format!(
                r#"{{"time":"2026-11-25T01:46:34.451682Z","agent":"a","decision":"allow","outcome":"success","status":200,"log_seq":{seq},"hash":"h{seq}"}}"#
            )
            .into_bytes(),
            after: Position::START,
        }
    }

    fn sink(addr: &str, kind: &str, extra: &str) -> HttpSink {
        let text = format!(
            "[[audit.sinks]]\nname = \"s\"\nkind = \"{kind}\"\nurl = \"http://{addr}/base\"\n{extra}\n"
        );
        let v = toolgate_core::config::parse(&text, "t", std::path::Path::new(".")).unwrap();
        HttpSink::from_config(&v.config.audit.sinks[0], &v.sink_targets[0], "gw".into()).unwrap()
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn body_of(req: &[u8]) -> &[u8] {
        let at = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
        &req[at + 4..]
    }

    #[test]
    fn bulk_resends_only_items_that_failed_and_409_counts_as_delivered() {
        let first = r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},{"create":{"status":409}}]}"#;
        let (addr, t) = server(vec![vec![ok(first), ok(r#"{"errors":false,"items":[]}"#)]]);
        let mut s = sink(
            &addr,
            "elasticsearch",
            "format = \"toolgate\"\nindex = \"audit-x\"",
        );
        let batch = [entry(1), entry(2), entry(3)];
        let e = s.deliver(&batch).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| !e.rejected && e.message.contains("1 records to retry")),
            "{e:?}"
        );
        assert!(s.deliver(&batch).is_ok());
        drop(s);
        let got = t.join().unwrap_or_default();
        assert_eq!(got.len(), 2);
        assert!(String::from_utf8_lossy(&got[0]).starts_with("POST /base/_bulk HTTP/1.1\r\n"));
        let lines: Vec<&[u8]> = body_of(&got[0])
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], br#"{"create":{"_index":"audit-x","_id":"h1"}}"#);
        assert!(lines[1].starts_with(br#"{"@timestamp":"2026-11-25T01:46:34.451682Z","time":"#));
        let again = String::from_utf8_lossy(body_of(&got[1])).to_string();
        assert_eq!(again.lines().count(), 2, "{again}");
        assert!(again.contains(r#""_id":"h2""#), "{again}");
    }

    #[test]
    fn hec_sends_gzipped_events_with_the_token_and_splits_by_bytes() {
        let (addr, t) = server(vec![vec![
            ok(r#"{"text":"Success","code":0}"#),
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 38\r\n\r\n{\"text\":\"Invalid data format\",\"code\":6}".to_vec(),
        ]]);
        let mut s = sink(
            &addr,
            "splunk_hec",
            "gzip = true\nbatch_bytes = 1024\n[audit.sinks.token]\ncommand = [\"echo\", \"tok-123\"]",
        );
        let batch: Vec<Entry> = (1..=8).map(entry).collect();
        let e = s.deliver(&batch).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.rejected && e.message.contains("400")),
            "{e:?}"
        );
        drop(s);
        let got = t.join().unwrap_or_default();
        assert_eq!(got.len(), 2, "8 events of ~500 bytes do not fit 1 KiB");
        let head =
            String::from_utf8_lossy(&got[0][..got[0].len() - body_of(&got[0]).len()]).to_string();
        assert!(
            head.contains("\r\nAuthorization: Splunk tok-123\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nContent-Encoding: gzip\r\n"), "{head}");
        let mut plain = String::new();
        let _ = flate2::read::GzDecoder::new(body_of(&got[0])).read_to_string(&mut plain);
        let events: Vec<Value> = plain
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        assert!(!events.is_empty() && events.len() < 8, "{plain}");
        assert_eq!(events[0]["time"], json_f(1_795_571_194.451));
        assert_eq!(events[0]["host"], "gw");
        assert_eq!(events[0]["sourcetype"], "toolgate:audit");
        assert_eq!(events[0]["event"]["class_uid"], 6003);
        assert_eq!(events[0]["event"]["metadata"]["sequence"], 1);
    }

    fn json_f(f: f64) -> Value {
        serde_json::json!(f)
    }
}
