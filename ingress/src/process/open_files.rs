//! The open-file limit: every agent connection and every upstream
//! connection is a descriptor, and a distribution's default soft limit
//! (often 1024) is far below what `max_connections_per_shard` promises.
//! toolgate raises its soft limit to the hard one at start, as servers
//! that hold many sockets do, and says when even that is short.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors toolgate needs besides connections: log segments, sinks,
/// stdio children's pipes, listeners, io_uring rings.
const BASE: u64 = 1024;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. `connections` is
/// how many agent connections the configuration allows at once (each may
/// hold an upstream connection too). Returns the limit now in force.
pub fn raise(connections: u64) -> u64 {
    let needed = connections.saturating_mul(2).saturating_add(BASE);
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return 0;
        }
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                soft
            }
        }
    } else {
        soft
    };
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            "the open-file limit is below what max_connections_per_shard allows: connections beyond about {} will be refused; raise the hard limit (systemd: LimitNOFILE=)",
            limit.saturating_sub(BASE) / 2
        );
    } else {
        tracing::debug!(limit, "open-file limit");
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let limit = raise(16);
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((limit, soft), (hard, hard));
    }
}
