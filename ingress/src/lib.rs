//! toolgate-ingress: the request path, from the agent's socket to the tool
//! and back, and the `toolgate` binary around it.
//!
//! Shards ([`shard`]) accept connections (TLS and mTLS through `toolgate-net`) and
//! run the HTTP/1.1 server loop ([`http::server`]); each request on `/mcp` goes through the call driver
//! ([`call`]): identity, the JSON-RPC view, the era's envelope, the
//! permission map, forwarding through this shard's upstream client
//! (the `toolgate-upstream` interface), and the audit record into the shard's ring. Tool
//! catalogs are kept current off the request path ([`catalog_sync`]).
//!
//! The admin API ([`admin`]) runs on an executor thread of its own: it
//! writes the control state, publishes the snapshot it compiles to, and
//! waits until every shard acknowledges the new generation.
//!
//! [`process`] wires all of it into a running gateway, in order, for the
//! `toolgate` binary; [`random`] draws the keys and seeds it needs.
//!
//! Nothing here blocks a shard: all I/O is io_uring through glommio, and
//! shared state is read through published snapshots, never under a lock.

#![warn(missing_docs)]

pub mod accounts;
pub mod admin;
#[cfg(test)]
mod alloc_count;
pub mod call;
pub mod catalog_sync;
pub mod demo;
pub mod http;
pub mod inflight;
pub mod jwks_sync;
pub mod metrics;
pub mod openapi_refresh;
pub mod port_owner;
pub mod process;
pub mod random;
pub mod ratelimit;
pub mod session;
pub mod session_sync;
pub mod shard;
pub mod shared;
pub mod subtokens;
