//! toolgate-decision: what a shard consults to decide a call.
//!
//! Configuration and the upstream tool catalogs compile into one immutable
//! [`Snapshot`]: API-key digests to agents, each agent's permission map
//! (attached tool → upstream route) and its pre-rendered `tools/list`. A
//! snapshot is published through [`Published`]; each shard holds a
//! [`Reader`] that picks up a new generation between requests with one
//! atomic load, so nothing on the request path takes a lock or waits for a
//! rebuild, and a call in flight keeps the snapshot it started with.
//!
//! Output rules compile here too: per (agent, tool), one [`OutputFilter`]
//! holding the detectors, patterns, field paths and conditions of every rule
//! that applies, hung on the route so the call driver finds it with the
//! permission lookup.
//!
//! This crate does no I/O: ingress fetches catalogs and hands them here.

#![warn(missing_docs)]

pub mod catalog;
pub mod filter;
pub mod pins;
pub mod policy;
pub mod published;
pub mod session;
pub mod snapshot;
pub mod surface;

pub use catalog::{Catalog, CatalogError, ToolDef};
pub use filter::OutputFilter;
pub use published::{Published, Reader};
pub use snapshot::{Agent, Route, Snapshot, UpstreamInfo};
pub use surface::Listing;
