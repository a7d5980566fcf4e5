//! Talking to the admin API: the client from the command line's
//! arguments, replies turned into values or errors, versions read before a
//! write, and resource documents read from files.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use toolgate_ingress::admin::client::{Client, Reply, TlsOptions};

use super::AdminApiArgs;

/// A client of the admin API at `--url`, with its TLS files and token.
pub fn client(api: &AdminApiArgs) -> anyhow::Result<Client> {
    let tls = TlsOptions {
        ca_file: api.ca_file.clone(),
        client_cert: api.client_cert.clone(),
        client_key: api.client_key.clone(),
    };
    Ok(Client::new(&api.url, api.token.clone(), &tls)?)
}

/// The reply's body if 2xx; else its error, as the API put it.
pub fn ok(r: Reply) -> anyhow::Result<Value> {
    if (200..300).contains(&r.status) {
        return Ok(r.json());
    }
    let v = r.json();
    let e = &v["error"];
    // The TLS listener's answer to plain HTTP has a string `error`.
    let message = e["message"].as_str().or(e.as_str()).unwrap_or("");
    let mut msg = format!(
        "{} ({}): {message}",
        r.status,
        e["code"].as_str().unwrap_or("error"),
    );
    if let Some(cur) = e.get("current_version") {
        msg.push_str(&format!("\ncurrent version: {cur}"));
    }
    bail!(msg)
}

/// Prints a value as pretty JSON.
pub fn print(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// The stored version of a resource: 0 when only the configuration file
/// defines it, `None` when it does not exist.
pub fn current(c: &Client, target: &str) -> anyhow::Result<Option<(u64, Value)>> {
    let r = c.request("GET", &format!("/v1/{target}"), &[], None)?;
    if r.status == 404 {
        return Ok(None);
    }
    let v = ok(r)?;
    Ok(Some((v["version"].as_u64().unwrap_or(0), v)))
}

/// Writes `target` with `method` under `version` (`If-Match`; none:
/// `If-None-Match: *`); warns when some shards did not run it in time.
pub fn write(
    c: &Client,
    method: &str,
    target: &str,
    version: Option<u64>,
    body: Option<&[u8]>,
) -> anyhow::Result<Value> {
    let (k, v) = match version {
        Some(v) => ("If-Match", format!("\"{v}\"")),
        None => ("If-None-Match", "*".to_owned()),
    };
    let r = c.request(method, &format!("/v1/{target}"), &[(k, &v)], body)?;
    let status = r.status;
    let v = ok(r)?;
    if status == 202 {
        eprintln!(
            "warning: committed, but shards {} did not run it within the time limit",
            v["shards"]["pending"]
        );
    }
    Ok(v)
}

/// A resource document from a file: Cedar text for policies (or JSON
/// `{"text":…}`), JSON otherwise.
pub fn document(kind: &str, text: &str, file: &Path) -> anyhow::Result<Value> {
    if kind == "policies" && file.extension().is_some_and(|e| e == "cedar") {
        return Ok(json!({ "text": text }));
    }
    serde_json::from_str(text).with_context(|| format!("{} is not JSON", file.display()))
}
