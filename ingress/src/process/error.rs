//! Why the gateway did not start.

use toolgate_control::StoreError;
use toolgate_decision::pins::PinsError;
use toolgate_sinks::key::KeyError;
use toolgate_sinks::writer::WriterError;
use toolgate_sinks::BuildError;

use super::load::{InvalidPolicies, TlsLoadError};
use crate::admin::AdminError;
use crate::random::NoRandomness;
use crate::shard::ShardError;
use crate::subtokens::SubtokenError;
use toolgate_upstream::credential::CredentialError;

/// Why [`run`](super::run) could not start the gateway; each message names
/// the step that failed, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The audit checkpoint key could not be read or generated.
    #[error("loading the audit checkpoint key")]
    Key(#[source] KeyError),
    /// The audit log could not be opened, or its thread not started.
    #[error("starting the audit log")]
    AuditLog(#[source] WriterError),
    /// An audit sink could not be built or started.
    #[error(transparent)]
    Sink(#[from] BuildError),
    /// The audit retention thread could not start.
    #[error("starting audit retention")]
    Retention(#[source] std::io::Error),
    /// The configured policies do not parse.
    #[error(transparent)]
    Policies(#[from] InvalidPolicies),
    /// An upstream credential (or an OAuth client's secret) cannot be read.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// A certificate, key or CA bundle cannot be read.
    #[error(transparent)]
    Tls(#[from] TlsLoadError),

    /// An `openapi` upstream's document does not load.
    #[error(transparent)]
    OpenApi(#[from] toolgate_upstream::openapi::LoadError),
    /// The end-user assertion keys cannot be read.
    #[error(transparent)]
    Assertions(#[from] toolgate_upstream::assertion::AssertionError),
    /// Connected accounts cannot start (their key, a provider's secret,
    /// the store).
    #[error(transparent)]
    Accounts(#[from] crate::accounts::AccountsError),
    /// A `token_exchange` upstream's client secret or CA bundle cannot be read.
    #[error(transparent)]
    Exchange(#[from] toolgate_upstream::exchange::SetupError),
    /// A `stdio` upstream's process cannot be started as configured (its
    /// sandbox unavailable here).
    #[error(transparent)]
    Stdio(#[from] toolgate_upstream::stdio::StartError),
    /// The sub-token signing key or revocation list cannot be read.
    #[error("[auth.subtokens]")]
    Subtokens(#[source] SubtokenError),
    /// The tool pins file cannot be read.
    #[error(transparent)]
    Pins(#[from] PinsError),
    /// The control state's store cannot be opened or read.
    #[error(transparent)]
    ControlState(#[from] StoreError),
    /// The session key cannot be drawn.
    #[error(transparent)]
    Randomness(#[from] NoRandomness),
    /// The control state's policies do not compile (one line per error).
    #[error("the control state's policies do not compile\n{}", .0.join("\n"))]
    ControlPolicies(Vec<String>),
    /// The shards could not start (listen, executors).
    #[error("starting shards")]
    Shards(#[source] ShardError),
    /// The admin API could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The thread following the PostgreSQL control state could not start.
    #[error("starting the control-state follower")]
    Follower(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// The OpenAPI document refresher thread could not be started.
    #[error("starting the OpenAPI document refresher")]
    Refresher(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_failed_step_is_named_first_and_its_cause_is_the_source() {
        let e = StartError::Signals(std::io::Error::other("no signalfd"));
        assert_eq!(e.to_string(), "installing signal handlers");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("no signalfd")
        );
    }

    #[test]
    fn control_policy_errors_are_listed_one_per_line() {
        let e = StartError::ControlPolicies(vec!["a: bad".into(), "b: worse".into()]);
        assert_eq!(
            e.to_string(),
            "the control state's policies do not compile\na: bad\nb: worse"
        );
        assert!(e.source().is_none());
    }

    #[test]
    fn a_passed_through_error_keeps_its_own_message_and_source() {
        let tls = TlsLoadError("`server.tls` cert_file `x.pem`: not found".into());
        let e = StartError::from(tls);
        assert_eq!(
            e.to_string(),
            "TLS: `server.tls` cert_file `x.pem`: not found"
        );
        assert!(e.source().is_none());
    }
}
