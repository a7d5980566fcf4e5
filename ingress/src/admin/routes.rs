//! Routing: authentication of the admin token, the endpoints, and the
//! audit record of a refused request.

use super::*;

impl AdminApi {
    /// The sources, with the newest control state of a shared backend
    /// (which another replica may have moved on) loaded and published
    /// first: reads and the preconditions of writes see every committed
    /// change, not only what this replica's follower has caught up with.
    pub(super) fn fresh(&self) -> Result<Sources, ApiError> {
        match self.store.newer(self.shared.sources().control.revision) {
            Ok(Some(newer)) => {
                let _ = self.shared.set_control(Arc::new(newer));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "control state cannot be read");
                return Err(ApiError::new(
                    503,
                    "store_unavailable",
                    "the control state cannot be read; nothing was applied",
                ));
            }
        }
        Ok(self.shared.sources())
    }

    pub(super) fn authenticate(&self, req: &Request<'_>) -> Result<Arc<str>, ApiError> {
        let token = bearer(req.head.header(req.buf, "authorization")).map_err(|_| {
            ApiError::new(
                401,
                "unauthorized",
                "send an admin token as `Authorization: Bearer <token>`",
            )
        })?;
        self.tokens
            .get(&key_hash(token))
            .cloned()
            .ok_or_else(|| ApiError::new(401, "unauthorized", "unknown admin token"))
    }

    pub(super) async fn route(
        &self,
        actor: &Arc<str>,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let path = req.head.path(req.buf);
        let path = path.split(|&b| b == b'?').next().unwrap_or(path);
        let path = std::str::from_utf8(path)
            .map_err(|_| ApiError::new(404, "not_found", "no such endpoint"))?;
        let segs: Vec<&str> = path
            .strip_prefix("/v1/")
            .ok_or_else(|| ApiError::new(404, "not_found", "endpoints are under `/v1/`"))?
            .split('/')
            .collect();
        let method = req.head.method;
        match (method, segs.as_slice()) {
            (Method::Get, ["usage"]) => self.usage(req, out),
            (Method::Get, ["usage", "quotas"]) => self.quota_usage(req, out),
            (_, ["usage"] | ["usage", "quotas"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "usage is read with `GET`",
            )),
            (Method::Get, ["tools"]) => {
                let items: Vec<Value> = self.tools(false).into_values().collect();
                let body = json!({ "items": items }).to_string();
                response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
                Ok(())
            }
            (Method::Get, ["tools", name]) => {
                let v = self.tools(true).remove(*name).ok_or_else(|| {
                    ApiError::new(
                        404,
                        "not_found",
                        format!("no tool `{}` in the fetched catalogs", truncate(name, 256)),
                    )
                })?;
                let etag = format!("\"{}\"", v["digest"].as_str().unwrap_or_default());
                let body = v.to_string();
                response::write(out, 200, &[("ETag", &etag)], Body::Json(body.as_bytes()), true);
                Ok(())
            }
            (Method::Post, ["tools", name, "approve"]) => {
                self.approve_tool(actor, name, req, out).await
            }
            (_, ["tools", _, "approve"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "an approval is a `POST`",
            )),
            (_, ["tools", ..]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "tools are read-only: they come from the upstreams' catalogs; approve one with `POST /v1/tools/{name}/approve`",
            )),
            (Method::Get, ["connections"]) => self.list_connections(out),
            (Method::Delete, ["connections", upstream, user]) => {
                self.remove_connection(actor, upstream, user, req, out)
            }
            (_, ["connections", ..]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "connections are listed with `GET /v1/connections` and removed with `DELETE /v1/connections/{upstream}/{user}`; users connect their own",
            )),
            (Method::Post, ["subtokens"]) => self.mint(actor, req, out).await,
            (Method::Post, ["subtokens", id, "revoke"]) => {
                self.revoke_subtoken(actor, id, req, out).await
            }
            (Method::Put | Method::Delete, ["subtokens", _]) => {
                Err(ApiError::new(405, "method_not_allowed", SUBTOKEN_WRITES))
            }
            (_, ["subtokens", _, "revoke"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "a revoke is a `POST`",
            )),
            (Method::Post, ["transaction"]) => {
                let ops = tx_ops(req.body)?;
                self.write(actor, ops, req, out, false, None).await
            }
            (_, ["transaction"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "a transaction is a `POST`",
            )),
            (Method::Get, [kind]) => {
                let kind = parse_kind(kind)?;
                let src = self.fresh()?;
                let mut items: std::collections::BTreeMap<String, Value> =
                    file_resources(&src, kind)
                        .into_iter()
                        .map(|(id, spec)| (id.clone(), item(kind, &id, 0, "config", spec)))
                        .collect();
                for (id, e) in src.control.list(kind) {
                    items.insert(
                        id.to_owned(),
                        item(kind, id, e.version, "store", e.spec.to_value()),
                    );
                }
                let body = json!({"items": items.into_values().collect::<Vec<_>>()}).to_string();
                response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
                Ok(())
            }
            (Method::Get, [kind, id]) => {
                let kind = parse_kind(kind)?;
                let src = self.fresh()?;
                let v = effective(&src, kind, id).ok_or_else(|| {
                    ApiError::new(404, "not_found", format!("no `{}/{id}`", kind.as_str()))
                })?;
                let etag = format!("\"{}\"", v["version"]);
                let body = v.to_string();
                response::write(
                    out,
                    200,
                    &[("ETag", &etag)],
                    Body::Json(body.as_bytes()),
                    true,
                );
                Ok(())
            }
            (Method::Put, [kind, id]) => {
                let kind = parse_kind(kind)?;
                let pre = precondition(req)?;
                let spec = parse_spec(kind, req.body)?;
                let ops = vec![Op {
                    kind,
                    id: (*id).to_owned(),
                    pre,
                    spec: Some(spec),
                }];
                self.write(actor, ops, req, out, true, None).await
            }
            (Method::Delete, [kind, id]) => {
                let kind = parse_kind(kind)?;
                let pre = precondition(req)?;
                let ops = vec![Op {
                    kind,
                    id: (*id).to_owned(),
                    pre,
                    spec: None,
                }];
                self.write(actor, ops, req, out, true, None).await
            }
            (_, [_] | [_, _]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "use GET on a kind; GET, PUT or DELETE on a resource",
            )),
            _ => Err(ApiError::new(404, "not_found", "no such endpoint")),
        }
    }

    /// Records a refused write, or a request without a valid admin
    /// credential, in the audit log (best effort: with no ring slot free
    /// the refusal is only logged; nothing was changed either way).
    pub(super) fn audit_refusal(&self, req: &Request<'_>, actor: Option<&str>, e: &ApiError) {
        let path = String::from_utf8_lossy(req.head.path(req.buf));
        let path = path.split('?').next().unwrap_or("");
        let mut segs = path.strip_prefix("/v1/").unwrap_or("").split('/');
        let (kind, first) = (segs.next().unwrap_or(""), segs.next().unwrap_or(""));
        // A connection is named by its upstream and its user.
        let id = match (kind, segs.next()) {
            ("connections", Some(user)) => format!("{first}/{user}"),
            _ => first.to_owned(),
        };
        let id = id.as_str();
        let op = match req.head.method {
            Method::Put => "put",
            Method::Delete => "delete",
            Method::Post if kind == "subtokens" && id.is_empty() => "mint",
            Method::Post if kind == "subtokens" => "revoke",
            Method::Post if kind == "tools" => "approve",
            Method::Post => "transaction",
            Method::Get => "get",
            Method::Patch | Method::Other => "other",
        };
        let Ok(admission) = self.audit.borrow_mut().admit() else {
            tracing::warn!(
                code = e.code,
                "refused admin request not audited: the audit ring is full or the log is down"
            );
            return;
        };
        let record = AuditRecord {
            decision: Decision::Deny,
            reason: Reason::AdminRefused(e.code),
            status: e.status,
            outcome: Outcome::Failure,
            ..AuditRecord::admin(
                now_us(),
                req.started.elapsed().as_micros() as u64,
                req.peer,
                AdminChange {
                    actor: actor.map(str::to_owned),
                    op,
                    kind: truncate(kind, 64).to_owned(),
                    id: truncate(id, 128).to_owned(),
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
}
