//! Writing: one store transaction, published as a snapshot, recorded in
//! the audit log, and answered once every shard runs it.

use super::*;

/// Most times a write plans again after another replica's commit got in
/// first (each time, a precondition that no longer holds ends it in 412).
pub(super) const MAX_ATTEMPTS: u32 = 16;

/// Before planning again, a write waits a random time up to this many
/// milliseconds per attempt so far: replicas writing at once stop meeting
/// in lockstep, and one of them gets in.
const BACKOFF_STEP_MS: u64 = 2;

/// A random wait before attempt `attempt + 1`, up to
/// `attempt * BACKOFF_STEP_MS` milliseconds (microsecond resolution).
fn backoff(attempt: u32) -> std::time::Duration {
    let limit_us = u64::from(attempt) * BACKOFF_STEP_MS * 1000;
    let seed = crate::random::bytes32().map_or(0, |b| {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    });
    std::time::Duration::from_micros(seed % limit_us.max(1))
}

impl AdminApi {
    /// Plans, validates, commits, publishes and audits `ops`; answers once
    /// every shard runs the result (or the time limit passes).
    pub(super) async fn write(
        &self,
        actor: &Arc<str>,
        ops: Vec<Op>,
        req: &Request<'_>,
        out: &mut Vec<u8>,
        single: bool,
        extra: Option<serde_json::Map<String, Value>>,
    ) -> Result<(), ApiError> {
        // Everything from plan to publish is synchronous: on this one
        // executor no other write can interleave. A shared backend may have
        // moved on through another replica: plan against its newest state,
        // and plan again when a commit finds it moved meanwhile.
        let mut attempt = 0;
        let (changes, next, admissions) = loop {
            attempt += 1;
            let src = self.fresh()?;
            let changes = src.control.plan(&ops).map_err(|e| match e {
            OpError::Stale {
                op,
                kind,
                ref id,
                current,
                ..
            } => ApiError::new(412, "version_conflict", e.to_string())
                .with("kind", json!(kind))
                .with("id", json!(id))
                .with("current_version", json!(current))
                .with("operation", json!(op)),
            OpError::Invalid(m) => ApiError::new(400, "invalid_request", m),
            OpError::NotFound { kind, ref id, .. } => {
                let k = Kind::parse(kind).unwrap_or(Kind::Agents);
                if effective(&src, k, id).is_some() {
                    ApiError::new(
                        409,
                        "defined_in_config_file",
                        format!("`{kind}/{id}` is defined in the configuration file, not the store: edit the file to remove it"),
                    )
                } else {
                    ApiError::new(404, "not_found", e.to_string())
                }
            }
        })?;
            let next = Arc::new(src.control.applied(&changes));
            self.validate(&src, &next, &changes)?;
            let admissions = {
                let mut audit = self.audit.borrow_mut();
                let mut v = Vec::with_capacity(changes.len());
                for _ in &changes {
                    match audit.admit() {
                        Ok(a) => v.push(a),
                        Err(why) => {
                            return Err(ApiError::new(
                                503,
                                "audit_unavailable",
                                format!("{why}: the change was not applied"),
                            ))
                        }
                    }
                }
                v
            };
            match self.store.commit(next.revision, &changes) {
                Ok(()) => break (changes, next, admissions),
                Err(toolgate_control::StoreError::Conflict { base }) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        base,
                        attempt,
                        "control state moved meanwhile; planning again"
                    );
                    // Nothing is held across the wait: the next attempt
                    // plans from the store's state afresh.
                    drop(admissions);
                    glommio::timer::sleep(backoff(attempt)).await;
                }
                Err(toolgate_control::StoreError::Conflict { .. }) => {
                    return Err(ApiError::new(
                        503,
                        "store_busy",
                        "other replicas kept changing the control state meanwhile; nothing was applied, try again",
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, "control state commit failed");
                    return Err(ApiError::new(
                        500,
                        "store_failed",
                        "the control state could not be written; nothing was applied",
                    ));
                }
            }
        };
        let published = self.shared.set_control(Arc::clone(&next));
        let generation = published.unwrap_or(0);
        let mut last_seq = None;
        {
            let mut audit = self.audit.borrow_mut();
            for (admission, c) in admissions.into_iter().zip(&changes) {
                let op = match (c.kind, &c.old, &c.new) {
                    (Kind::Subtokens, None, Some(_)) => "mint",
                    (Kind::Subtokens, Some(_), Some(_)) => "revoke",
                    (_, _, Some(_)) => "put",
                    (_, _, None) => "delete",
                };
                let record = AuditRecord::admin(
                    now_us(),
                    req.started.elapsed().as_micros() as u64,
                    req.peer,
                    AdminChange {
                        actor: Some(actor.to_string()),
                        op,
                        kind: c.kind.as_str().to_owned(),
                        id: c.id.clone(),
                        old_version: c.old.as_ref().map(|e| e.version),
                        new_version: c.new.as_ref().map(|e| e.version),
                        digest: c.new.as_ref().map(|e| e.spec.digest()),
                        diff: diff(
                            c.old.as_ref().map(|e| &e.spec),
                            c.new.as_ref().map(|e| &e.spec),
                        )
                        .to_string(),
                        generation,
                    },
                );
                last_seq = Some(audit.commit(admission, record));
            }
        }
        if published.is_none() {
            // Only a configuration file reloaded between the check above and
            // now can get here: the store holds the change, the running
            // snapshot does not.
            tracing::error!(
                "committed control state does not compile with the reloaded configuration file"
            );
            return Err(ApiError::new(
                500,
                "publish_failed",
                "the change is committed but does not compile with the configuration file reloaded meanwhile; the running snapshot stays (see the log)",
            ));
        }
        tracing::info!(actor = %actor, changes = changes.len(), generation, "control state changed");
        let (pending, acked) = self.settle(generation, last_seq).await;
        let results: Vec<Value> = changes
            .iter()
            .map(|c| json!({"kind": c.kind.as_str(), "id": c.id, "version": c.new.as_ref().map(|e| e.version)}))
            .collect();
        let status = if pending.is_empty() { 200 } else { 202 };
        let mut body = json!({
            "generation": generation,
            "results": results,
            "shards": {"total": self.shared.seen.len(), "pending": pending},
            // From publication to every shard running it; null if some did not.
            "propagation_us": acked.map(|d| d.as_micros() as u64),
        });
        if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra) {
            obj.extend(extra);
        }
        let body = body.to_string();
        let etag = match changes.first().and_then(|c| c.new.as_ref()) {
            Some(e) if single => Some(format!("\"{}\"", e.version)),
            _ => None,
        };
        let headers: Vec<(&str, &str)> = etag.iter().map(|e| ("ETag", e.as_str())).collect();
        response::write(out, status, &headers, Body::Json(body.as_bytes()), true);
        Ok(())
    }

    /// Waits for every shard to run `generation` and the audit record
    /// `last_seq` to be in the log, each at most its time limit. Returns
    /// the shards still behind, and how long until none was.
    pub(super) async fn settle(
        &self,
        generation: u64,
        last_seq: Option<u64>,
    ) -> (Vec<usize>, Option<Duration>) {
        let started = Instant::now();
        let mut acked: Option<Duration> = None;
        loop {
            let pending: Vec<usize> = self
                .shared
                .seen
                .iter()
                .enumerate()
                .filter(|(_, s)| s.load(Ordering::Acquire) < generation)
                .map(|(i, _)| i)
                .collect();
            let audited = last_seq.is_none_or(|s| self.audit.borrow().recorded(s));
            let waited = started.elapsed();
            if pending.is_empty() && acked.is_none() {
                acked = Some(waited);
            }
            if (pending.is_empty() || waited >= self.publish_timeout)
                && (audited || waited >= self.audit_timeout)
            {
                if !audited {
                    tracing::warn!("admin change records not yet in the audit log");
                }
                return (pending, acked);
            }
            glommio::timer::sleep(Duration::from_micros(100)).await;
        }
    }
}
