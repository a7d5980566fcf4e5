//! toolgate-net: sockets and TLS for the shards, on both sides.
//!
//! Where it sits: below the agent-facing server (`ingress`) and the
//! upstream clients (`toolgate-upstream`), above `core`. It holds what both
//! sides share and nothing of the request path's decisions: TLS
//! configurations for listeners and clients ([`tls`]), reads that take
//! what a socket already holds before arming an io_uring poll
//! ([`queued`]), the chunked transfer-coding decoder ([`chunked`]), and the
//! HTTP/1.1 client pool toward upstreams, judges and identity providers
//! ([`client`]).
//!
//! Everything here runs on a glommio shard: I/O is io_uring, nothing
//! blocks, and a pool belongs to one shard.

#![warn(missing_docs)]

pub mod chunked;
pub mod client;
pub mod queued;
pub mod tls;
