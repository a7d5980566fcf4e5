//! `GET /v1/usage`: the live counters of calls per customer and tool since
//! the process started — calls, allowed, denied, refused by a limit, tool
//! errors, quota units charged — as JSON or CSV (`?format=csv`), one customer with
//! `?customer=…`. The same counts `toolgate usage` reads from the audit
//! log, counted the same way. `GET /v1/usage/quotas`: every quota counter
//! in its current window — units used and remaining, when it resets.

use super::*;
use crate::metrics::usage::{self, csv_field};

impl AdminApi {
    /// Answers `GET /v1/usage`.
    pub(super) fn usage(&self, req: &Request<'_>, out: &mut Vec<u8>) -> Result<(), ApiError> {
        let (customer, csv) = usage_query(req)?;
        let usage = &self.shared.metrics.usage;
        let rows: Vec<_> = usage
            .rows()
            .into_iter()
            .filter(|(c, _, _)| customer.as_deref().is_none_or(|want| want == c))
            .collect();
        if csv {
            let mut body = String::from(usage::CSV_HEADER);
            for (c, t, n) in &rows {
                n.csv(c, t, &mut body);
            }
            response::write(out, 200, &[], Body::Plain(body.as_bytes()), true);
            return Ok(());
        }
        let items: Vec<Value> = rows.iter().map(|(c, t, n)| n.json(c, t)).collect();
        let body = json!({ "since_us": usage.since_us, "items": items }).to_string();
        response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
        Ok(())
    }

    /// Answers `GET /v1/usage/quotas`: each quota counter this process has
    /// placed, in its current window.
    pub(super) fn quota_usage(&self, req: &Request<'_>, out: &mut Vec<u8>) -> Result<(), ApiError> {
        let (customer, csv) = usage_query(req)?;
        let now_ns = now_us().saturating_mul(1_000);
        let counters: Vec<_> = self
            .shared
            .limits
            .load()
            .quota_counters(now_ns)
            .into_iter()
            .filter(|q| {
                customer
                    .as_deref()
                    .is_none_or(|want| q.key.iter().any(|(k, v)| *k == "customer" && v == want))
            })
            .collect();
        let value = |q: &toolgate_limits::QuotaCounter, sel: &str| {
            q.key
                .iter()
                .find(|(k, _)| *k == sel)
                .map(|(_, v)| v.clone())
        };
        if csv {
            let mut body = format!(
                "limit,{},per,units,used,remaining,window_start_s,reset_s,shared\n",
                toolgate_limits::SELECTORS.join(",")
            );
            for q in &counters {
                let sels: Vec<String> = toolgate_limits::SELECTORS
                    .iter()
                    .map(|s| csv_field(&value(q, s).unwrap_or_default()))
                    .collect();
                body.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    csv_field(&q.rule),
                    sels.join(","),
                    q.per.as_str(),
                    q.units,
                    q.used,
                    q.remaining,
                    q.window_start_s,
                    q.reset_s,
                    q.shared,
                ));
            }
            response::write(out, 200, &[], Body::Plain(body.as_bytes()), true);
            return Ok(());
        }
        let items: Vec<Value> = counters
            .iter()
            .map(|q| {
                let key: serde_json::Map<String, Value> = q
                    .key
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect();
                json!({"limit": &*q.rule, "key": key, "per": q.per.as_str(), "units": q.units,
                       "used": q.used, "remaining": q.remaining,
                       "window_start_s": q.window_start_s, "reset_s": q.reset_s, "shared": q.shared})
            })
            .collect();
        let body = json!({ "items": items }).to_string();
        response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
        Ok(())
    }
}

/// `?customer=…&format=json|csv` of a usage request.
fn usage_query(req: &Request<'_>) -> Result<(Option<String>, bool), ApiError> {
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
    Ok((customer, csv))
}
