//! Sub-tokens through the API: minting (the token answered once, only its
//! claims stored) and revocation.

use super::*;

/// How sub-tokens are written: not by PUT, DELETE or in a transaction.
pub(super) const SUBTOKEN_WRITES: &str = "a sub-token is minted with `POST /v1/subtokens` and revoked with `POST /v1/subtokens/{id}/revoke` (`If-Match`)";

/// The body of `POST /v1/subtokens`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MintRequest {
    /// The agent the token acts as.
    agent: String,
    /// Narrow it to this end user.
    #[serde(default)]
    user: Option<String>,
    /// Narrow it to these tools (each attached to the agent).
    #[serde(default)]
    tools: Option<Vec<String>>,
    /// Attribute its calls to this customer (else the agent's).
    #[serde(default)]
    customer: Option<String>,
    /// Lifetime, seconds (at most `auth.subtokens.max_ttl_s`).
    #[serde(default = "default_mint_ttl_s")]
    ttl_s: u64,
}

pub(super) fn default_mint_ttl_s() -> u64 {
    3600
}

impl AdminApi {
    /// `POST /v1/subtokens`: mints a sub-token under `[auth.subtokens]`'s
    /// key, stores its claims (never the token), and answers the token —
    /// once — with the write's usual body.
    pub(super) async fn mint(
        &self,
        actor: &Arc<str>,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let off = || {
            ApiError::new(
                409,
                "subtokens_off",
                "sub-tokens are off: configure `[auth.subtokens]`",
            )
        };
        let verifier = self.shared.subtoken_verifier().ok_or_else(off)?;
        let m: MintRequest = serde_json::from_slice(req.body)
            .map_err(|e| ApiError::new(400, "invalid_document", e.to_string()))?;
        let src = self.fresh()?;
        let max_ttl = src
            .file
            .config
            .auth
            .subtokens
            .as_ref()
            .map(|s| s.max_ttl_s)
            .ok_or_else(off)?;
        if m.ttl_s == 0 || m.ttl_s > max_ttl {
            return Err(ApiError::new(
                422,
                "invalid_document",
                format!(
                    "`ttl_s = {}` must be between 1 and `auth.subtokens.max_ttl_s` ({max_ttl})",
                    m.ttl_s
                ),
            ));
        }
        let (eff, _) = src.control.overlay(&src.file);
        let agent = eff
            .config
            .agents
            .iter()
            .find(|a| *a.id.get_ref() == m.agent)
            .ok_or_else(|| {
                ApiError::new(
                    422,
                    "invalid_reference",
                    format!(
                        "no agent `{}` in the store or the configuration file",
                        truncate(&m.agent, 128)
                    ),
                )
            })?;
        let mut narrowed: Vec<String> = Vec::new();
        for t in m.tools.unwrap_or_default() {
            if !agent.tools.iter().any(|x| *x.get_ref() == t) {
                return Err(ApiError::new(
                    422,
                    "invalid_reference",
                    format!(
                        "tool `{}` is not attached to agent `{}`: a sub-token cannot widen its agent",
                        truncate(&t, 256),
                        m.agent
                    ),
                ));
            }
            if !narrowed.contains(&t) {
                narrowed.push(t);
            }
        }
        if let Some(c) = &m.customer {
            if let Err(why) = toolgate_core::identity::check_customer(c) {
                return Err(ApiError::new(
                    422,
                    "invalid_document",
                    format!("`customer`: {why}"),
                ));
            }
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|_| ApiError::new(500, "no_randomness", "the OS gave no randomness"))?;
        let now = now_us() / 1_000_000;
        let spec = SubtokenSpec {
            agent: m.agent,
            user: m.user,
            tools: (!narrowed.is_empty()).then_some(narrowed),
            customer: m.customer,
            iat: now,
            exp: now + m.ttl_s,
            revoked: false,
        };
        let spec = parse_spec(
            Kind::Subtokens,
            &serde_json::to_vec(&spec).unwrap_or_default(),
        )?;
        let Spec::Subtoken(t) = &spec else {
            return Err(ApiError::new(500, "internal", "not a sub-token document"));
        };
        let claims = Claims {
            jti: hex::encode(id),
            agent: t.agent.clone(),
            user: t.user.clone(),
            tools: t.tools.clone(),
            customer: t.customer.clone(),
            iat: t.iat,
            exp: t.exp,
        };
        let token = verifier.mint(&claims);
        let mut extra = serde_json::Map::new();
        extra.insert("id".into(), json!(claims.jti));
        extra.insert("token".into(), json!(token));
        extra.insert("expires_at".into(), json!(claims.exp));
        let ops = vec![Op {
            kind: Kind::Subtokens,
            id: claims.jti,
            pre: Precondition::IfNoneMatch,
            spec: Some(spec),
        }];
        self.write(actor, ops, req, out, true, Some(extra)).await
    }

    /// `POST /v1/subtokens/{id}/revoke` with `If-Match`: marks the token
    /// revoked; answers once every shard refuses it.
    pub(super) async fn revoke_subtoken(
        &self,
        actor: &Arc<str>,
        id: &str,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let pre = match precondition(req)? {
            Precondition::IfNoneMatch => {
                return Err(ApiError::new(
                    400,
                    "invalid_precondition",
                    "a revoke needs `If-Match: \"<version>\"` (from the sub-token's ETag)",
                ))
            }
            p => p,
        };
        let src = self.fresh()?;
        let entry = src.control.get(Kind::Subtokens, id).ok_or_else(|| {
            ApiError::new(
                404,
                "not_found",
                format!(
                    "no `subtokens/{}` (a token minted by `toolgate token mint` is revoked with `toolgate token revoke`)",
                    truncate(id, 128)
                ),
            )
        })?;
        let Spec::Subtoken(t) = &entry.spec else {
            return Err(ApiError::new(500, "internal", "not a sub-token document"));
        };
        if t.revoked && pre == Precondition::IfMatch(entry.version) {
            return Err(ApiError::new(
                409,
                "already_revoked",
                format!("`subtokens/{id}` is revoked already"),
            )
            .with("current_version", json!(entry.version)));
        }
        let spec = Spec::Subtoken(SubtokenSpec {
            revoked: true,
            ..t.clone()
        });
        let ops = vec![Op {
            kind: Kind::Subtokens,
            id: id.to_owned(),
            pre,
            spec: Some(spec),
        }];
        self.write(actor, ops, req, out, true, None).await
    }
}
