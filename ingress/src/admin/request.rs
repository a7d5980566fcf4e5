//! What an admin request says beyond its path: preconditions (`If-Match`,
//! `If-None-Match`), resource kinds and documents, and transactions.

use super::*;

/// `If-Match` / `If-None-Match` of a write.
pub(super) fn precondition(req: &Request<'_>) -> Result<Precondition, ApiError> {
    let if_match = req.head.header(req.buf, "if-match");
    let if_none = req.head.header(req.buf, "if-none-match");
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::new(
            400,
            "invalid_precondition",
            "send either `If-Match` or `If-None-Match`, not both",
        )),
        (None, None) => Err(ApiError::new(
            428,
            "precondition_required",
            "a write must carry `If-Match: \"<version>\"` (from the resource's ETag), or `If-None-Match: *` to create",
        )),
        (None, Some(v)) if v.trim_ascii() == b"*" => Ok(Precondition::IfNoneMatch),
        (None, Some(_)) => Err(ApiError::new(
            400,
            "invalid_precondition",
            "`If-None-Match` must be `*`",
        )),
        (Some(v), None) => parse_etag(v).map(Precondition::IfMatch).ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_precondition",
                format!(
                    "`If-Match: {}` is not a version: use the ETag of a read, such as `\"3\"`",
                    String::from_utf8_lossy(&v[..v.len().min(64)])
                ),
            )
        }),
    }
}

/// `"N"` (or a bare `N`) to N.
pub(super) fn parse_etag(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    let v = v
        .strip_prefix(b"\"")
        .and_then(|x| x.strip_suffix(b"\""))
        .unwrap_or(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

pub(super) fn parse_kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).ok_or_else(|| {
        ApiError::new(
            404,
            "unknown_kind",
            format!(
                "`{}` is not a kind of resource: use `agents`, `users`, `policies`, `upstreams`, `credentials`, `limits`, `labels` or `subtokens`",
                s.chars().take(64).collect::<String>()
            ),
        )
    })
}

pub(super) fn parse_spec(kind: Kind, v: &[u8]) -> Result<Spec, ApiError> {
    Spec::parse(kind, v).map_err(|e| match e {
        toolgate_control::SpecError::Invalid(m) => ApiError::new(400, "invalid_document", m),
        toolgate_control::SpecError::Value(m) => ApiError::new(422, "invalid_document", m),
    })
}

/// One operation of `POST /v1/transaction`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TxOp {
    op: String,
    kind: String,
    id: String,
    #[serde(default)]
    if_match: Option<u64>,
    #[serde(default)]
    if_none_match: Option<bool>,
    #[serde(default)]
    spec: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tx {
    operations: Vec<TxOp>,
}

pub(super) fn tx_ops(body: &[u8]) -> Result<Vec<Op>, ApiError> {
    let tx: Tx = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "invalid_document", e.to_string()))?;
    let mut ops = Vec::with_capacity(tx.operations.len());
    for (i, o) in tx.operations.into_iter().enumerate() {
        let at = |e: ApiError| {
            ApiError {
                message: format!("operation {i}: {}", e.message),
                ..e
            }
            .with("operation", json!(i))
        };
        let kind = parse_kind(&o.kind).map_err(|e| ApiError {
            status: 400,
            ..at(e)
        })?;
        if kind == Kind::Subtokens {
            return Err(at(ApiError::new(400, "invalid_request", SUBTOKEN_WRITES)));
        }
        let pre = match (o.if_match, o.if_none_match) {
            (Some(v), None) => Precondition::IfMatch(v),
            (None, Some(true)) => Precondition::IfNoneMatch,
            (None, None | Some(false)) => {
                return Err(at(ApiError::new(
                    428,
                    "precondition_required",
                    "every operation needs `if_match` (a version) or `if_none_match: true`",
                )))
            }
            (Some(_), Some(_)) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_precondition",
                    "give either `if_match` or `if_none_match`, not both",
                )))
            }
        };
        let spec = match (o.op.as_str(), o.spec) {
            ("put", Some(v)) => {
                let bytes = serde_json::to_vec(&v).unwrap_or_default();
                Some(parse_spec(kind, &bytes).map_err(at)?)
            }
            ("put", None) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_document",
                    "a `put` needs a `spec`",
                )))
            }
            ("delete", None) => None,
            ("delete", Some(_)) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_document",
                    "a `delete` takes no `spec`",
                )))
            }
            (other, _) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_document",
                    format!(
                        "`op` is `{}`: use `put` or `delete`",
                        other.chars().take(32).collect::<String>()
                    ),
                )))
            }
        };
        ops.push(Op {
            kind,
            id: o.id,
            pre,
            spec,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_parse_quoted_or_bare_and_nothing_else() {
        assert_eq!(parse_etag(b"\"12\""), Some(12));
        assert_eq!(parse_etag(b" 7 "), Some(7));
        for bad in [
            &b"\"\""[..],
            b"W/\"1\"",
            b"abc",
            b"-1",
            b"99999999999999999999",
            b"*",
        ] {
            assert_eq!(parse_etag(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn transaction_operations_need_a_precondition_and_a_known_shape() {
        let e = tx_ops(
            br#"{"operations":[{"op":"put","kind":"users","id":"a","spec":{"groups":[]}}]}"#,
        )
        .err()
        .map(|e| (e.status, e.code));
        assert_eq!(e, Some((428, "precondition_required")));
        let e = tx_ops(br#"{"operations":[],"extra":1}"#)
            .err()
            .map(|e| e.code);
        assert_eq!(e, Some("invalid_document"));
        let e = tx_ops(br#"{"operations":[{"op":"put","kind":"users","id":"a","if_none_match":true,"spec":{"grups":[]}}]}"#)
            .err()
            .map(|e| (e.status, e.message));
        assert!(matches!(e, Some((400, m)) if m.contains("unknown field `grups`")));
        let ok =
            tx_ops(br#"{"operations":[{"op":"delete","kind":"agents","id":"b","if_match":3}]}"#)
                .unwrap();
        assert_eq!(ok[0].pre, Precondition::IfMatch(3));
        assert!(ok[0].spec.is_none());
    }
}
