//! Tools as a read-only resource, and their approval under tool pinning.

use super::*;

impl AdminApi {
    /// Every exposed tool (and prompt, as `prompt:{name}`: prompts are
    /// pinned beside tools) of the fetched catalogs, by name: its
    /// upstream, definition digest, pin and quarantine (as the running
    /// snapshot has them), and, with `definition`, the definition agents
    /// see.
    pub(super) fn tools(&self, definition: bool) -> std::collections::BTreeMap<String, Value> {
        let snap = self.shared.snapshot.load();
        let mut out = std::collections::BTreeMap::new();
        for (i, cat) in snap.catalogs.iter().enumerate() {
            let (Some(cat), Some(up)) = (cat, snap.upstreams.get(i)) else {
                continue;
            };
            for def in cat.pinned() {
                let (pinned, status) = match self.shared.pin_status(&def.key, def.sha256) {
                    None => (None, "unpinned"),
                    Some((p, PinStatus::Pinned)) => (p, "pinned"),
                    Some((p, PinStatus::Changed)) => (p, "changed"),
                    Some((p, PinStatus::New)) => (p, "new"),
                };
                let (kind, named) = if def.prompt {
                    ("prompts", "prompt")
                } else {
                    ("tools", "tool")
                };
                let mut v = json!({
                    "kind": kind,
                    "id": def.key,
                    "upstream": &*up.name,
                    named: def.name,
                    "digest": def.sha256,
                    "pinned_digest": pinned,
                    "status": status,
                    "quarantined": def.quarantined,
                });
                if definition {
                    v["definition"] = serde_json::from_str(def.json).unwrap_or(Value::Null);
                }
                out.insert(def.key, v);
            }
        }
        out
    }

    /// `POST /v1/tools/{name}/approve` with `If-Match: "<digest>"`: pins
    /// the definition with that digest (the one read), as `toolgate tools
    /// approve` does, and answers once every shard runs the snapshot with
    /// the tool's quarantine lifted.
    pub(super) async fn approve_tool(
        &self,
        actor: &Arc<str>,
        name: &str,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let wanted = match req.head.header(req.buf, "if-match") {
            None => {
                return Err(ApiError::new(
                    428,
                    "precondition_required",
                    "an approval must carry `If-Match: \"<digest>\"`: the ETag of the tool's definition as read",
                ))
            }
            Some(v) => {
                let v = v.trim_ascii();
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|x| x.strip_suffix(b"\""))
                    .unwrap_or(v);
                if v.len() != 64 || !v.iter().all(u8::is_ascii_hexdigit) {
                    return Err(ApiError::new(
                        400,
                        "invalid_precondition",
                        "`If-Match` of a tool is its definition digest (64 hex digits, from the ETag)",
                    ));
                }
                String::from_utf8_lossy(v).to_ascii_lowercase()
            }
        };
        let tool = self.tools(false).remove(name).ok_or_else(|| {
            ApiError::new(
                404,
                "not_found",
                format!("no tool `{}` in the fetched catalogs", truncate(name, 256)),
            )
        })?;
        if tool["status"] == "unpinned" {
            return Err(ApiError::new(
                409,
                "tool_pins_off",
                "tool pinning is off: configure `[tool_pins]`",
            ));
        }
        let digest = tool["digest"].as_str().unwrap_or_default().to_owned();
        if digest != wanted {
            return Err(ApiError::new(
                412,
                "version_conflict",
                format!(
                    "the definition of `{name}` is now `{digest}`, not `{wanted}`: read it again"
                ),
            )
            .with("kind", json!("tools"))
            .with("id", json!(name))
            .with("current_version", json!(digest)));
        }
        let admission = self.audit.borrow_mut().admit().map_err(|why| {
            ApiError::new(
                503,
                "audit_unavailable",
                format!("{why}: the tool was not approved"),
            )
        })?;
        let (previous, generation) = self.shared.approve_tool(name, &digest).map_err(|e| {
            tracing::error!(error = %e, "cannot approve a tool");
            ApiError::new(
                500,
                "pins_unwritable",
                format!("the tool pins cannot be written: {e}"),
            )
        })?;
        let record = AuditRecord {
            tool: Some(name.to_owned()),
            target: None,
            upstream: tool["upstream"].as_str().map(Arc::from),
            ..AuditRecord::admin(
                now_us(),
                req.started.elapsed().as_micros() as u64,
                req.peer,
                AdminChange {
                    actor: Some(actor.to_string()),
                    op: "approve",
                    kind: "tools".to_owned(),
                    id: name.to_owned(),
                    old_version: None,
                    new_version: None,
                    digest: Some(digest.clone()),
                    diff: json!({"pinned_digest": {"old": previous, "new": digest}}).to_string(),
                    generation,
                },
            )
        };
        let seq = self.audit.borrow_mut().commit(admission, record);
        tracing::info!(actor = %actor, tool = name, generation, "tool approved");
        let (pending, acked) = self.settle(generation, Some(seq)).await;
        let status = if pending.is_empty() { 200 } else { 202 };
        let body = json!({
            "generation": generation,
            "results": [{"kind": "tools", "id": name, "digest": digest, "previous_digest": previous}],
            "shards": {"total": self.shared.seen.len(), "pending": pending},
            "propagation_us": acked.map(|d| d.as_micros() as u64),
        })
        .to_string();
        let etag = format!("\"{digest}\"");
        response::write(
            out,
            status,
            &[("ETag", &etag)],
            Body::Json(body.as_bytes()),
            true,
        );
        Ok(())
    }
}
