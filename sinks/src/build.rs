//! Sink construction: from the `[[audit.sinks]]` entries of a validated
//! configuration to running delivery threads, one per entry.
//!
//! [`build_sink`] makes the [`Sink`] of one entry: syslog over UDP, TCP or
//! TLS ([`SyslogSink`]), a SOAR webhook ([`SoarSink`]), or a SIEM HTTP sink
//! ([`HttpSink`]); it reads the entry's token and TLS files but sends
//! nothing, so `toolgate check` calls it too. [`start_sinks`] builds every
//! entry and starts its [`SinkRunner`] from its saved cursor.

use std::path::Path;
use std::time::Duration;

use toolgate_core::config::{SinkConfig, SinkKind, SinkTarget, SinkTransport, ValidConfig};

use crate::siem::{HttpSink, HttpSinkError};
use crate::sink::{RunnerOptions, Sink, SinkRunner, StartError};
use crate::soar::SoarSink;
use crate::syslog::{local_hostname, SyslogFormat};
use crate::tls::{client_config, server_name, TlsError, TlsFiles};
use crate::transport::{SyslogSink, Transport};

/// Why a sink could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A syslog sink without a collector address.
    #[error("sink `{0}` has no address")]
    NoAddress(String),
    /// A syslog sink's TLS files or server name were refused.
    #[error("sink `{name}`")]
    Tls {
        /// Sink name.
        name: String,
        /// The cause.
        #[source]
        source: TlsError,
    },
    /// An HTTP or SOAR sink could not be set up (token, TLS, URL).
    #[error(transparent)]
    Http(#[from] HttpSinkError),
    /// The sink's delivery thread could not start.
    #[error("starting audit sink `{name}`")]
    Start {
        /// Sink name.
        name: String,
        /// The cause.
        #[source]
        source: StartError,
    },
}

/// A built sink and where it delivers (for the log).
pub struct BuiltSink {
    /// The sink, ready for a [`SinkRunner`].
    pub sink: Box<dyn Sink>,
    /// The collector: an address for syslog, a URL otherwise.
    pub target: String,
}

/// Builds the sink of one `[[audit.sinks]]` entry `s` (validated into `t`)
/// of the log in `audit_dir`, reading its token and TLS files.
pub fn build_sink(
    s: &SinkConfig,
    t: &SinkTarget,
    audit_dir: &Path,
) -> Result<BuiltSink, BuildError> {
    let name = s.name.get_ref();
    let hostname = s.hostname.clone().unwrap_or_else(local_hostname);
    let url = || {
        s.url
            .as_ref()
            .map(|u| u.get_ref().clone())
            .unwrap_or_default()
    };
    Ok(match s.kind {
        SinkKind::Syslog => {
            let Some(addr) = t.address else {
                return Err(BuildError::NoAddress(name.clone()));
            };
            let tls = |source| BuildError::Tls {
                name: name.clone(),
                source,
            };
            let transport = match s.transport.as_ref().map(|t| *t.get_ref()) {
                Some(SinkTransport::Udp) => Transport::Udp,
                Some(SinkTransport::Tcp) | None => Transport::Tcp,
                Some(SinkTransport::Tls) => {
                    let config = client_config(&TlsFiles {
                        ca_file: t.ca_file.clone(),
                        cert_file: t.cert_file.clone(),
                        key_file: t.key_file.clone(),
                    })
                    .map_err(tls)?;
                    let sni = server_name(&t.server_name).map_err(tls)?;
                    Transport::Tls(config, sni)
                }
            };
            let format = SyslogFormat {
                facility: s.facility,
                app_name: s.app_name.clone(),
                hostname,
                max_message_bytes: s.max_message_bytes,
            };
            let sink = SyslogSink::new(
                format,
                transport,
                addr,
                Duration::from_millis(s.io_timeout_ms),
            );
            BuiltSink {
                sink: Box::new(sink),
                target: addr.to_string(),
            }
        }
        SinkKind::Soar => BuiltSink {
            sink: Box::new(SoarSink::from_config(s, t, audit_dir, hostname)?),
            target: url(),
        },
        SinkKind::SplunkHec | SinkKind::Elasticsearch | SinkKind::Webhook => BuiltSink {
            sink: Box::new(HttpSink::from_config(s, t, hostname)?),
            target: url(),
        },
    })
}

/// Starts one delivery thread per `[[audit.sinks]]` entry of `cfg`, in
/// order; the first entry that cannot be built or started stops the rest.
pub fn start_sinks(cfg: &ValidConfig) -> Result<Vec<SinkRunner>, BuildError> {
    let mut out = Vec::new();
    for (s, t) in cfg.config.audit.sinks.iter().zip(&cfg.sink_targets) {
        let name = s.name.get_ref();
        let built = build_sink(s, t, &cfg.audit_dir)?;
        let opts = RunnerOptions {
            batch_records: s.batch_records,
            poll_interval: Duration::from_millis(s.poll_interval_ms),
            retry_initial: Duration::from_millis(s.retry_initial_ms),
            retry_max: Duration::from_millis(s.retry_max_ms.max(s.retry_initial_ms)),
        };
        let runner =
            SinkRunner::spawn(name, &cfg.audit_dir, built.sink, opts).map_err(|source| {
                BuildError::Start {
                    name: name.clone(),
                    source,
                }
            })?;
        // Logged under the binary's name, as when this lived in its `main.rs`.
        tracing::info!(target: "toolgate", sink = %name, target = %built.target, "audit sink started");
        out.push(runner);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::Path;

    use super::*;

    /// A validated configuration whose `[audit]` section ends with `sinks`.
    fn config(dir: &Path, sinks: &str) -> ValidConfig {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[audit]\ndir = \"{}\"\n{sinks}",
            dir.display()
        );
        toolgate_core::config::parse(&text, "test.toml", dir).unwrap()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("toolgate-build-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn build_first(cfg: &ValidConfig) -> Result<BuiltSink, BuildError> {
        let s = &cfg.config.audit.sinks[0];
        build_sink(s, &cfg.sink_targets[0], &cfg.audit_dir)
    }

    #[test]
    fn syslog_sink_targets_its_address() {
        let dir = scratch("syslog");
        let cfg = config(
            &dir,
            "[[audit.sinks]]\nname = \"udp\"\nkind = \"syslog\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5514\"\n",
        );
        let built = build_first(&cfg).unwrap();
        assert_eq!(built.target, "127.0.0.1:5514");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn http_sink_targets_its_url() {
        let dir = scratch("http");
        let cfg = config(
            &dir,
            "[[audit.sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:8089/hooks\"\n",
        );
        let built = build_first(&cfg).unwrap();
        assert_eq!(built.target, "http://127.0.0.1:8089/hooks");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn syslog_tls_error_names_the_sink_then_the_file() {
        let dir = scratch("tls");
        std::fs::write(dir.join("ca.pem"), "not a pem\n").unwrap();
        let cfg = config(
            &dir,
            "[[audit.sinks]]\nname = \"rsyslog-tls\"\nkind = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:6514\"\nserver_name = \"logs.corp\"\nca_file = \"ca.pem\"\n",
        );
        let Err(e) = build_first(&cfg) else {
            panic!("an unusable CA file was accepted");
        };
        assert!(matches!(e, BuildError::Tls { .. }), "{e:?}");
        assert_eq!(e.to_string(), "sink `rsyslog-tls`");
        let cause = e.source().map(ToString::to_string).unwrap_or_default();
        assert!(cause.starts_with("ca_file `"), "{cause}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unset_token_is_the_http_sinks_own_error() {
        let dir = scratch("token");
        let cfg = config(
            &dir,
            "[[audit.sinks]]\nname = \"splunk\"\nkind = \"splunk_hec\"\nurl = \"https://127.0.0.1:8088/services/collector/event\"\n[audit.sinks.token]\nenv = \"TOOLGATE_BUILD_TEST_UNSET_TOKEN\"\n",
        );
        let Err(e) = build_first(&cfg) else {
            panic!("an unset token was accepted");
        };
        assert!(
            matches!(e, BuildError::Http(HttpSinkError::Token { .. })),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("sink `splunk`: token: "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn start_sinks_starts_one_runner_per_entry_in_order() {
        let dir = scratch("start");
        let cfg = config(
            &dir,
            "[[audit.sinks]]\nname = \"a\"\nkind = \"syslog\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5514\"\n\n[[audit.sinks]]\nname = \"b\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:8089/hooks\"\n",
        );
        let runners = start_sinks(&cfg).unwrap();
        let names: Vec<&str> = runners.iter().map(SinkRunner::name).collect();
        assert_eq!(names, ["a", "b"]);
        for r in runners {
            r.shutdown();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
