//! The stdio kind of upstream: an MCP server toolgate runs itself, as a
//! sandboxed child process speaking JSON-RPC over its stdin and stdout.
//!
//! [`Process`] is one supervised process all shards share (started,
//! handshaken, restarted); [`Pool`] the processes of one upstream (one, or
//! one per end user); [`StdioClient`] a shard's handle on them, the kind
//! behind [`crate::Upstream`]; [`sandbox`] is what confines each process,
//! and [`egress`] the proxy through which a confined process reaches the
//! hosts its sandbox names.

pub mod egress;
pub mod pool;
pub mod process;
pub mod sandbox;

use std::sync::Arc;

use toolgate_decision::UpstreamInfo;

pub use pool::Pool;
pub use process::{Health, Process, StartError};

use crate::{Reply, UpstreamError, Watch};

/// One stdio upstream as one shard calls it.
pub struct StdioClient {
    info: UpstreamInfo,
    pool: Arc<Pool>,
}

impl StdioClient {
    /// How many list changes its server has announced.
    pub fn list_changes(&self) -> u64 {
        self.pool.list_changes()
    }

    /// A handle on `pool`, serving `info`.
    pub fn new(info: UpstreamInfo, pool: Arc<Pool>) -> Self {
        Self { info, pool }
    }

    /// Sends `method` with `params` (the inside of the params object) to
    /// the process serving `user` and returns the server's answer, within
    /// the upstream's timeout, relaying progress and cancellation through
    /// `watch`.
    pub async fn call(
        &self,
        method: &str,
        params: &[u8],
        user: Option<&str>,
        watch: &Watch<'_>,
    ) -> Result<Reply, UpstreamError> {
        let message = self
            .pool
            .process_for(user)?
            .request(method, params, self.info.timeout, watch)
            .await?;
        Ok(Reply {
            message,
            http: None,
        })
    }
}
