//! toolgate-core: the shared vocabulary of the gateway.
//!
//! Every other crate speaks these types: the operator's configuration as
//! written ([`config`]), the zero-copy view of one MCP JSON-RPC request
//! ([`jsonrpc`]), the vocabulary of output rules ([`output`]), the MCP protocol constants ([`protocol`]), API-key identity
//! ([`identity`]), exposed resource URIs ([`resource_uri`]), the keyed MAC ([`mac`]), the single refusal type and its mapping to the wire
//! ([`refusal`]), the audit record ([`audit`]) and the hosts a sandboxed
//! server may reach ([`host_rule`]).
//!
//! Nothing here opens a socket or runs on the request path with I/O: the
//! request-path types (the JSON-RPC view, refusals, the audit record,
//! identity, sub-token verification) are pure functions of what a caller
//! passes in, clocks included. Two modules read the host, at start and on
//! reload only: [`config`] checks the files a configuration names (so a
//! configuration that cannot run is refused with its line), and [`secret`]
//! reads a secret from its source (an environment variable, a file, or a
//! command's output), so every crate resolves secrets the same way.

#![warn(missing_docs)]

pub mod audit;
pub mod config;
pub mod document;
pub mod host_rule;
pub mod identity;
pub mod jsonrpc;
pub mod jwt;
pub mod mac;
pub mod output;
pub mod protocol;
pub mod refusal;
pub mod reply_id;
pub mod resource_uri;
pub mod secret;
pub mod subtoken;
pub mod toolname;
pub mod upstream_url;
