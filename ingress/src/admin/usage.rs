//! `GET /v1/usage`: the live counters of calls per customer and tool since
//! the process started — calls, allowed, denied, refused by a limit, tool
//! errors — as JSON or CSV (`?format=csv`), one customer with
//! `?customer=…`. The same counts `toolgate usage` reads from the audit
//! log, counted the same way.

use super::*;
use crate::metrics::usage::csv_field;

impl AdminApi {
    /// Answers `GET /v1/usage`.
    pub(super) fn usage(&self, req: &Request<'_>, out: &mut Vec<u8>) -> Result<(), ApiError> {
        let path = req.head.path(req.buf);
        let query = path
            .iter()
            .position(|&b| b == b'?')
            .map(|i| String::from_utf8_lossy(&path[i + 1..]).into_owned())
            .unwrap_or_default();
        let mut customer = None;
        let mut csv = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("customer", c)) => customer = Some(c.to_owned()),
                Some(("format", "csv")) => csv = true,
                Some(("format", "json")) => csv = false,
                _ => {
                    return Err(ApiError::new(
                        400,
                        "invalid_query",
                        format!(
                            "`{}`: use `customer=…` and `format=json|csv`",
                            truncate(pair, 128)
                        ),
                    ))
                }
            }
        }
        let usage = &self.shared.metrics.usage;
        let rows: Vec<_> = usage
            .rows()
            .into_iter()
            .filter(|(c, _, _)| customer.as_deref().is_none_or(|want| want == c))
            .collect();
        if csv {
            let mut body = String::from("customer,tool,calls,allowed,denied,limited,tool_errors\n");
            for (c, t, [calls, allowed, denied, limited, errors]) in &rows {
                body.push_str(&format!(
                    "{},{},{calls},{allowed},{denied},{limited},{errors}\n",
                    csv_field(c),
                    csv_field(t)
                ));
            }
            response::write(out, 200, &[], Body::Plain(body.as_bytes()), true);
            return Ok(());
        }
        let items: Vec<Value> = rows
            .iter()
            .map(|(c, t, [calls, allowed, denied, limited, errors])| {
                json!({"customer": c, "tool": t, "calls": calls, "allowed": allowed,
                       "denied": denied, "limited": limited, "tool_errors": errors})
            })
            .collect();
        let body = json!({ "since_us": usage.since_us, "items": items }).to_string();
        response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
        Ok(())
    }
}
