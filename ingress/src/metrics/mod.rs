//! Prometheus metrics: counters written without locks by the shards and the
//! audit threads, rendered in the text exposition format on demand, served
//! on their own listener (`[metrics] listen`) so the agent-facing port never
//! exposes them.

pub mod bounded;
pub mod customers;
pub mod usage;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_sinks::latency;
use toolgate_sinks::sink::SinkStats;
use toolgate_sinks::{AuditHealth, AuditStats};

use crate::http::head::Method;
use crate::http::response::{self, Body};
use crate::http::server::{Handler, Request};

/// One shard's counters, on cache lines of their own: only that shard
/// writes them, so they never bounce between cores.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Requests on `/mcp` answered with decision `allow`.
    pub allowed: AtomicU64,
    /// Requests on `/mcp` refused (decision `deny`).
    pub denied: AtomicU64,
    /// Allowed calls whose upstream failed (unavailable, timeout, bad response).
    pub upstream_failures: AtomicU64,
    /// Requests refused because the audit pipeline could not take their record.
    pub audit_refused: AtomicU64,
    /// Records in the shard's audit ring not yet taken by the audit thread.
    pub ring_occupancy: AtomicU64,
    /// Policy decisions answered from the shard's cache.
    pub cache_hits: AtomicU64,
    /// Policy decisions evaluated.
    pub cache_misses: AtomicU64,
    /// Open agent connections.
    pub connections: AtomicU64,
    /// TLS handshakes that failed or timed out (including plain HTTP sent
    /// to the TLS listener).
    pub tls_handshake_failures: AtomicU64,
    /// Calls the shadow policies decided as the enforced ones did.
    pub shadow_agreements: AtomicU64,
    /// Calls the shadow policies decided otherwise.
    pub shadow_disagreements: AtomicU64,
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per shard, by shard index.
    pub shards: Vec<ShardCounters>,
    audit: OnceLock<(Arc<AuditStats>, Arc<AuditHealth>)>,
    sinks: OnceLock<Vec<(String, Arc<SinkStats>)>>,
    /// The stdio upstreams' processes, by name, in configuration order.
    stdio: OnceLock<Vec<(String, Arc<toolgate_upstream::stdio::Pool>)>>,
    limits: OnceLock<Arc<toolgate_limits::Sharing>>,
    /// Tool calls per customer (bounded).
    pub customers: customers::CustomerCalls,
    /// Tool calls per customer and tool, for `GET /v1/usage` (bounded).
    pub usage: usage::Usage,
}

impl Metrics {
    /// Counters for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| ShardCounters::default()).collect(),
            ..Self::default()
        }
    }

    /// Attaches the audit thread's counters.
    pub fn set_audit(&self, stats: Arc<AuditStats>, health: Arc<AuditHealth>) {
        let _ = self.audit.set((stats, health));
    }

    /// Attaches the quota sharing through Redis (`limits.backend = "redis"`).
    pub fn set_limits(&self, sharing: Arc<toolgate_limits::Sharing>) {
        let _ = self.limits.set(sharing);
    }

    /// Attaches the stdio upstreams' processes.
    pub fn set_stdio(&self, processes: Vec<(String, Arc<toolgate_upstream::stdio::Pool>)>) {
        let _ = self.stdio.set(processes);
    }

    /// Attaches the sinks' counters.
    pub fn set_sinks(&self, sinks: Vec<(String, Arc<SinkStats>)>) {
        let _ = self.sinks.set(sinks);
    }

    /// The text exposition of every metric.
    pub fn render(&self, generation: u64) -> String {
        let mut out = String::with_capacity(4096);
        let per_shard = |out: &mut String,
                         name: &str,
                         kind: &str,
                         help: &str,
                         f: &dyn Fn(&ShardCounters) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", f(s));
            }
        };
        let _ = writeln!(
            out,
            "# HELP toolgate_requests_total Requests answered on /mcp, by decision."
        );
        let _ = writeln!(out, "# TYPE toolgate_requests_total counter");
        for (i, s) in self.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "toolgate_requests_total{{shard=\"{i}\",decision=\"allow\"}} {}",
                s.allowed.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "toolgate_requests_total{{shard=\"{i}\",decision=\"deny\"}} {}",
                s.denied.load(Ordering::Relaxed)
            );
        }
        per_shard(
            &mut out,
            "toolgate_shadow_agreements_total",
            "counter",
            "Calls the shadow policies (@shadow) decided as the enforced policies did.",
            &|s| s.shadow_agreements.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_shadow_disagreements_total",
            "counter",
            "Calls the shadow policies (@shadow) decided otherwise than the enforced policies.",
            &|s| s.shadow_disagreements.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_upstream_failures_total",
            "counter",
            "Allowed calls whose upstream failed.",
            &|s| s.upstream_failures.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_audit_refusals_total",
            "counter",
            "Calls refused because the audit pipeline could not take their record.",
            &|s| s.audit_refused.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_audit_ring_occupancy",
            "gauge",
            "Records waiting in the shard's audit ring.",
            &|s| s.ring_occupancy.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_decision_cache_hits_total",
            "counter",
            "Policy decisions answered from the shard's cache.",
            &|s| s.cache_hits.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_decision_cache_misses_total",
            "counter",
            "Policy decisions evaluated by Cedar.",
            &|s| s.cache_misses.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_connections_open",
            "gauge",
            "Open agent connections.",
            &|s| s.connections.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "toolgate_tls_handshake_failures_total",
            "counter",
            "TLS handshakes on the agent listener that failed or timed out.",
            &|s| s.tls_handshake_failures.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP toolgate_snapshot_generation Generation of the published decision snapshot.\n# TYPE toolgate_snapshot_generation gauge\ntoolgate_snapshot_generation {generation}");
        let mut head = 0;
        if let Some((stats, health)) = self.audit.get() {
            head = stats.next_log_seq.load(Ordering::Relaxed);
            for (name, kind, help, v) in [
                (
                    "toolgate_audit_records_written_total",
                    "counter",
                    "Records appended to the audit log.",
                    stats.records_written.load(Ordering::Relaxed),
                ),
                (
                    "toolgate_audit_shard_writes_total",
                    "counter",
                    "Audit log writes made by a shard itself ([audit] writer = \"shards\"); the rest are the audit thread's.",
                    stats.shard_writes.load(Ordering::Relaxed),
                ),
                (
                    "toolgate_audit_write_errors_total",
                    "counter",
                    "Failed audit log writes, syncs or seals.",
                    stats.write_errors.load(Ordering::Relaxed),
                ),
                (
                    "toolgate_audit_syncs_total",
                    "counter",
                    "fdatasync calls on the audit log.",
                    stats.syncs.load(Ordering::Relaxed),
                ),
                (
                    "toolgate_audit_log_ok",
                    "gauge",
                    "1 while the audit log accepts writes; 0 means calls are refused.",
                    u64::from(health.log_ok()),
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            }
            render_histogram(
                &mut out,
                "toolgate_audit_fsync_seconds",
                "How long each fdatasync of the audit log took.",
                &stats.fsync.snapshot(),
            );
        }
        if let Some(processes) = self.stdio.get().filter(|p| !p.is_empty()) {
            let health: Vec<_> = processes.iter().map(|(n, p)| (n, p.health())).collect();
            let _ = writeln!(out, "# HELP toolgate_stdio_up Whether each stdio upstream's process runs and answered its handshake.\n# TYPE toolgate_stdio_up gauge");
            for (n, h) in &health {
                let _ = writeln!(
                    out,
                    "toolgate_stdio_up{{upstream=\"{n}\"}} {}",
                    u8::from(h.up)
                );
            }
            let _ = writeln!(out, "# HELP toolgate_stdio_unhealthy Whether each stdio upstream is crash-looping.\n# TYPE toolgate_stdio_unhealthy gauge");
            for (n, h) in &health {
                let _ = writeln!(
                    out,
                    "toolgate_stdio_unhealthy{{upstream=\"{n}\"}} {}",
                    u8::from(h.unhealthy)
                );
            }
            let _ = writeln!(out, "# HELP toolgate_stdio_processes Processes each stdio upstream runs (with `instances = \"per_user\"`, one per active end user besides the shared one).\n# TYPE toolgate_stdio_processes gauge");
            for (n, p) in processes {
                let _ = writeln!(
                    out,
                    "toolgate_stdio_processes{{upstream=\"{n}\"}} {}",
                    p.instances()
                );
            }
            let _ = writeln!(out, "# HELP toolgate_stdio_egress_total Connections each stdio upstream's egress proxy let through (`allowed`) and refused (`refused`: a host not in `sandbox.allow_hosts`, or a request it does not take).\n# TYPE toolgate_stdio_egress_total counter");
            for (n, p) in processes {
                let e = p.egress();
                for (outcome, v) in [("allowed", &e.allowed), ("refused", &e.refused)] {
                    let _ = writeln!(
                        out,
                        "toolgate_stdio_egress_total{{upstream=\"{n}\",outcome=\"{outcome}\"}} {}",
                        v.load(Ordering::Relaxed)
                    );
                }
            }
            let _ = writeln!(out, "# HELP toolgate_stdio_restarts_total Restarts of each stdio upstream's process.\n# TYPE toolgate_stdio_restarts_total counter");
            for (n, h) in &health {
                let _ = writeln!(
                    out,
                    "toolgate_stdio_restarts_total{{upstream=\"{n}\"}} {}",
                    h.restarts
                );
            }
        }
        if let Some(sinks) = self.sinks.get() {
            let _ = writeln!(out, "# HELP toolgate_sink_delivered_total Records delivered by each sink (resends included).\n# TYPE toolgate_sink_delivered_total counter");
            for (n, s) in sinks {
                let _ = writeln!(
                    out,
                    "toolgate_sink_delivered_total{{sink=\"{n}\"}} {}",
                    s.delivered.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(out, "# HELP toolgate_sink_failures_total Failed deliveries of each sink.\n# TYPE toolgate_sink_failures_total counter");
            for (n, s) in sinks {
                let _ = writeln!(
                    out,
                    "toolgate_sink_failures_total{{sink=\"{n}\"}} {}",
                    s.failures.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(out, "# HELP toolgate_sink_rejected_total Failed deliveries where the collector refused the records as they are (bad token, malformed or oversized event, mapping error); retried, never skipped.\n# TYPE toolgate_sink_rejected_total counter");
            for (n, s) in sinks {
                let _ = writeln!(
                    out,
                    "toolgate_sink_rejected_total{{sink=\"{n}\"}} {}",
                    s.rejected.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(out, "# HELP toolgate_sink_lag_records Records written to the log and not yet delivered by each sink.\n# TYPE toolgate_sink_lag_records gauge");
            for (n, s) in sinks {
                let lag = head.saturating_sub(s.next_seq.load(Ordering::Relaxed).max(1));
                let _ = writeln!(out, "toolgate_sink_lag_records{{sink=\"{n}\"}} {lag}");
            }
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            let _ = writeln!(out, "# HELP toolgate_sink_lag_seconds How long the oldest record each sink is delivering has waited since it was recorded (0 when the sink is not held up).\n# TYPE toolgate_sink_lag_seconds gauge");
            for (n, s) in sinks {
                let lag = s.lag_us(now_us) as f64 / 1e6;
                let _ = writeln!(out, "toolgate_sink_lag_seconds{{sink=\"{n}\"}} {lag:.3}");
            }
        }
        let _ = writeln!(out, "# HELP toolgate_customer_calls_total Tool calls per customer, by decision (the first {} customers seen; later ones as `_other`).\n# TYPE toolgate_customer_calls_total counter", customers::CAP);
        for (c, allowed, denied) in self.customers.series() {
            let c = c.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "toolgate_customer_calls_total{{customer=\"{c}\",decision=\"allow\"}} {allowed}\ntoolgate_customer_calls_total{{customer=\"{c}\",decision=\"deny\"}} {denied}"
            );
        }
        if let Some(sharing) = self.limits.get() {
            let _ = writeln!(out, "# HELP toolgate_limits_redis_up Whether Redis answered the last exchange (0: each quota is held to this replica's share).\n# TYPE toolgate_limits_redis_up gauge\ntoolgate_limits_redis_up {}", u8::from(sharing.redis_up()));
        }
        out
    }
}

/// Writes a histogram of µs observations in seconds.
fn render_histogram(out: &mut String, name: &str, help: &str, h: &latency::Snapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in latency::BOUNDS_US.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", *bound as f64 / 1e6);
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
        h.count(),
        h.sum_us as f64 / 1e6,
        h.count()
    );
}

/// Serves `GET /metrics` on the metrics listener.
pub struct MetricsHandler {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Reads the current snapshot generation.
    pub generation: Box<dyn Fn() -> u64>,
}

impl Handler for MetricsHandler {
    async fn handle(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        let path = req.head.path(req.buf);
        if req.head.method == Method::Get && (path == b"/metrics" || path.starts_with(b"/metrics?"))
        {
            let text = self.metrics.render((self.generation)());
            response::write(out, 200, &[], Body::Text(text.as_bytes()), true);
        } else {
            response::write(
                out,
                404,
                &[],
                Body::Text(b"not found: metrics are at /metrics\n"),
                true,
            );
        }
    }

    fn refuse(
        &self,
        refusal: &Refusal,
        _peer: Option<SocketAddr>,
        _started: Instant,
        out: &mut Vec<u8>,
    ) {
        let status = refusal.wire().status;
        let text: &[u8] = if refusal.kind == RefusalKind::RequestTimeout {
            b"request timeout\n"
        } else {
            b"bad request\n"
        };
        response::write(out, status, &[], Body::Text(text), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_shard_and_parses_as_name_value_lines() {
        let m = Metrics::new(2);
        m.shards[1].allowed.fetch_add(3, Ordering::Relaxed);
        m.shards[0].denied.fetch_add(1, Ordering::Relaxed);
        m.set_sinks(vec![("rsyslog".into(), Arc::new(SinkStats::default()))]);
        let text = m.render(7);
        assert!(text.contains("toolgate_requests_total{shard=\"1\",decision=\"allow\"} 3\n"));
        assert!(text.contains("toolgate_requests_total{shard=\"0\",decision=\"deny\"} 1\n"));
        assert!(text.contains("toolgate_snapshot_generation 7\n"));
        assert!(text.contains("toolgate_sink_lag_records{sink=\"rsyslog\"} 0\n"));
        assert!(text.contains("toolgate_sink_rejected_total{sink=\"rsyslog\"} 0\n"));
        assert!(text.contains("toolgate_sink_lag_seconds{sink=\"rsyslog\"} 0.000\n"));
        assert!(
            !text.contains("toolgate_audit_fsync_seconds"),
            "only with the audit thread"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap_or(("", "x"));
            assert!(!name.is_empty() && value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn fsync_latency_is_a_prometheus_histogram() {
        let m = Metrics::new(1);
        let stats = Arc::new(AuditStats::default());
        stats.fsync.observe(std::time::Duration::from_micros(80));
        stats.fsync.observe(std::time::Duration::from_millis(4));
        stats.fsync.observe(std::time::Duration::from_secs(3));
        m.set_audit(
            Arc::clone(&stats),
            AuditHealth::new(1, toolgate_core::config::Durability::Batch),
        );
        let text = m.render(1);
        assert!(text.contains("# TYPE toolgate_audit_fsync_seconds histogram\n"));
        for line in [
            "toolgate_audit_fsync_seconds_bucket{le=\"0.0001\"} 1",
            "toolgate_audit_fsync_seconds_bucket{le=\"0.0025\"} 1",
            "toolgate_audit_fsync_seconds_bucket{le=\"0.005\"} 2",
            "toolgate_audit_fsync_seconds_bucket{le=\"1\"} 2",
            "toolgate_audit_fsync_seconds_bucket{le=\"+Inf\"} 3",
            "toolgate_audit_fsync_seconds_sum 3.00408",
            "toolgate_audit_fsync_seconds_count 3",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in:\n{text}");
        }
    }
}
