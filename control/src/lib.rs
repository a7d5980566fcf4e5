//! toolgate-control: the run-time control state, and where it is kept.
//!
//! Operators change agents (attached tools, groups, `act_for_users`), users
//! (groups), upstreams and Cedar policies, and mint and revoke sub-tokens, at run time
//! through the admin API. Those
//! changes are *resources* ([`model`]) in a [`State`]: each with a version,
//! a monotonic integer taken from one global revision counter, so a
//! resource deleted and created again never reuses a version (no ABA for
//! `If-Match`). A change is a list of operations, each guarded by a
//! precondition, planned all-or-nothing against the state ([`State::plan`])
//! and then committed in one transaction of a [`Backend`]: [`store::Store`]
//! is the embedded one (a single redb file), [`postgres::PgStore`] the one
//! several gateway replicas share.
//!
//! The effective configuration is the configuration file overlaid with the
//! state ([`State::overlay`]): a store resource replaces the file's resource
//! of the same id (an upstream: of the same name), or adds one; it never
//! hides one. Compiling that into a
//! snapshot and publishing it is the decision crate's and ingress's job.
//!
//! Never here: HTTP, Cedar evaluation, or anything on a shard's thread.

#![warn(missing_docs)]

pub mod connections;
pub mod model;
pub mod postgres;
pub mod state;
pub mod store;

pub use connections::{Connection, ConnectionStore};
pub use model::{
    AgentSpec, CredentialRef, Kind, PolicySpec, ScopeSpec, Spec, SpecError, SubtokenSpec,
    UpstreamCredentialSpec, UpstreamSpec, UserSpec,
};
pub use postgres::{PgOptions, PgStore};
pub use state::{Change, Entry, Op, OpError, Precondition, State};
pub use store::{Backend, Store, StoreError};
