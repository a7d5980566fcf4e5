//! The stdio kind of upstream: an MCP server toolgate runs itself, as a
//! sandboxed child process speaking JSON-RPC over its stdin and stdout.
//!
//! [`Process`] is the one process all shards share (started at boot,
//! supervised, restarted); [`StdioClient`] is a shard's handle on it, the
//! kind behind [`crate::Upstream`]; [`sandbox`] is what confines it.

pub mod process;
pub mod sandbox;

use std::sync::Arc;

use toolgate_decision::UpstreamInfo;

pub use process::{Health, Process, StartError};

use crate::{Reply, UpstreamError};

/// One stdio upstream as one shard calls it.
pub struct StdioClient {
    info: UpstreamInfo,
    process: Arc<Process>,
}

impl StdioClient {
    /// A handle on `process`, serving `info`.
    pub fn new(info: UpstreamInfo, process: Arc<Process>) -> Self {
        Self { info, process }
    }

    /// Sends `method` with `params` (the inside of the params object) and
    /// returns the server's answer, within the upstream's timeout.
    pub async fn call(&self, method: &str, params: &[u8]) -> Result<Reply, UpstreamError> {
        let message = self
            .process
            .request(method, params, self.info.timeout)
            .await?;
        Ok(Reply {
            message,
            http: None,
        })
    }
}
