//! Users' connected accounts, for operators: `GET /v1/connections` lists
//! them (upstream, user, scope, when, status — never a token), and
//! `DELETE /v1/connections/{upstream}/{user}` removes one, so that user's
//! calls to that upstream are refused until they connect again. A removal
//! is an audit record like every other admin change.

use super::*;

impl AdminApi {
    fn accounts(&self) -> Result<&Arc<crate::accounts::Accounts>, ApiError> {
        self.shared.accounts.as_ref().ok_or_else(|| {
            ApiError::new(
                404,
                "not_found",
                "connected accounts are not configured (`[connected_accounts]`)",
            )
        })
    }

    /// Answers `GET /v1/connections`.
    pub(super) fn list_connections(&self, out: &mut Vec<u8>) -> Result<(), ApiError> {
        let items = self.accounts()?.list();
        let body = json!({ "items": items }).to_string();
        response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
        Ok(())
    }

    /// Answers `DELETE /v1/connections/{upstream}/{user}`.
    pub(super) fn remove_connection(
        &self,
        actor: &Arc<str>,
        upstream: &str,
        user: &str,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let accounts = self.accounts()?;
        let removed = accounts.disconnect(upstream, user).map_err(|e| {
            tracing::error!(error = %e, "connected account could not be removed");
            ApiError::new(
                503,
                "store_unavailable",
                "the control store cannot be written; nothing was removed",
            )
        })?;
        if !removed {
            return Err(ApiError::new(
                404,
                "not_found",
                format!(
                    "`{}` has no connected account for `{}`",
                    truncate(user, 256),
                    truncate(upstream, 128)
                ),
            ));
        }
        let admitted = self.audit.borrow_mut().admit();
        match admitted {
            Ok(admission) => {
                let record = AuditRecord {
                    user: Some(Arc::from(user)),
                    upstream: Some(Arc::from(upstream)),
                    ..AuditRecord::admin(
                        now_us(),
                        req.started.elapsed().as_micros() as u64,
                        req.peer,
                        AdminChange {
                            actor: Some(actor.to_string()),
                            op: "delete",
                            kind: "connections".to_owned(),
                            id: format!("{}/{}", truncate(upstream, 128), truncate(user, 256)),
                            old_version: None,
                            new_version: None,
                            digest: None,
                            diff: "{}".to_owned(),
                            generation: 0,
                        },
                    )
                };
                self.audit.borrow_mut().commit(admission, record);
            }
            Err(_) => tracing::warn!(
                "connected account removal not audited: the audit ring is full or the log is down"
            ),
        }
        tracing::info!(actor = %actor, upstream, user, "connected account removed");
        let body = json!({"upstream": upstream, "user": user, "disconnected": true}).to_string();
        response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
        Ok(())
    }
}
