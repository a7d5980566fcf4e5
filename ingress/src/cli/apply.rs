//! `toolgate apply -f DIR` and `toolgate admin diff -f DIR`: the plan
//! that makes the live control state equal to a directory of resource
//! files, printed, and applied in one transaction.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use toolgate_ingress::admin::client::Client;

use super::admin::api::{client, current, document, ok};
use super::admin::AdminApiArgs;

/// `toolgate admin diff -f DIR`: prints the plan; returns whether it
/// changes anything.
pub fn diff(c: &Client, dir: &Path, prune: bool) -> anyhow::Result<bool> {
    let (plan, ops) = plan_dir(c, dir, prune)?;
    print_plan(&plan, &ops);
    Ok(!ops.is_empty())
}

/// Prints the plan, or that there is nothing to change.
fn print_plan(plan: &[String], ops: &[Value]) {
    println!("plan:");
    for line in plan {
        println!("{line}");
    }
    if ops.is_empty() {
        println!("nothing to change");
    }
}

/// `toolgate apply -f DIR`: prints the plan, then applies it in one
/// transaction unless `dry_run` or it changes nothing.
pub fn run(api: &AdminApiArgs, dir: &Path, dry_run: bool, prune: bool) -> anyhow::Result<()> {
    let c = client(api)?;
    let (plan, ops) = plan_dir(&c, dir, prune)?;
    print_plan(&plan, &ops);
    if ops.is_empty() {
        return Ok(());
    }
    if dry_run {
        println!("{} change(s) not applied (--dry-run)", ops.len());
        return Ok(());
    }
    let body = json!({ "operations": ops }).to_string();
    let r = c.request("POST", "/v1/transaction", &[], Some(body.as_bytes()))?;
    if r.status == 412 {
        let v = r.json();
        bail!(
            "refused: `{}/{}` changed since the plan was made (now version {}); nothing was applied, run again",
            v["error"]["kind"].as_str().unwrap_or("?"),
            v["error"]["id"].as_str().unwrap_or("?"),
            v["error"]["current_version"]
        );
    }
    let v = ok(r)?;
    println!(
        "applied {} change(s) as generation {}",
        ops.len(),
        v["generation"]
    );
    Ok(())
}

/// The plan for `dir` against the live state: one line per file (and,
/// with `prune`, per resource to delete), and the transaction's
/// operations (each guarded by the version read). Deletions come last,
/// in the reverse order of kinds, so that what refers to a resource goes
/// before it; the transaction is checked as a whole either way.
fn plan_dir(c: &Client, dir: &Path, prune: bool) -> anyhow::Result<(Vec<String>, Vec<Value>)> {
    if !dir.is_dir() {
        bail!("`{}` is not a directory", dir.display());
    }
    let mut ops = Vec::new();
    let mut plan = Vec::new();
    let mut deletions: Vec<(String, Value)> = Vec::new();
    for kind in ["credentials", "upstreams", "agents", "users", "policies"] {
        let sub = dir.join(kind);
        if !sub.is_dir() {
            continue;
        }
        let mut in_files = std::collections::BTreeSet::new();
        let mut files: Vec<_> = std::fs::read_dir(&sub)
            .with_context(|| format!("reading {}", sub.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "json" || (kind == "policies" && e == "cedar"))
            })
            .collect();
        files.sort();
        for file in files {
            let Some(id) = file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            in_files.insert(id.to_owned());
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let want = document(kind, &text, &file)?;
            let target = format!("{kind}/{id}");
            let (version, have) = match current(c, &target)? {
                Some((v, item)) => (v, Some(item)),
                None => (0, None),
            };
            let same = have
                .as_ref()
                .is_some_and(|h| h["source"] == "store" && same_doc(&h["spec"], &want));
            if same {
                plan.push(format!("  = {target} (version {version}, unchanged)"));
                continue;
            }
            plan.push(match &have {
                None => format!("  + {target} (create)"),
                Some(h) if h["source"] == "config" => {
                    format!("  ~ {target} (replace the configuration file's)")
                }
                Some(_) => format!("  ~ {target} (update version {version})"),
            });
            ops.push(
                json!({"op": "put", "kind": kind, "id": id, "if_match": version, "spec": want}),
            );
        }
        if prune {
            let r = c.request("GET", &format!("/v1/{kind}"), &[], None)?;
            let listed = ok(r)?;
            for item in listed["items"].as_array().into_iter().flatten() {
                let Some(id) = item["id"].as_str() else {
                    continue;
                };
                if item["source"] != "store" || in_files.contains(id) {
                    continue;
                }
                let version = item["version"].as_u64().unwrap_or(0);
                deletions.push((
                    format!("  - {kind}/{id} (delete version {version})"),
                    json!({"op": "delete", "kind": kind, "id": id, "if_match": version}),
                ));
            }
        }
    }
    for (line, op) in deletions.into_iter().rev() {
        plan.push(line);
        ops.push(op);
    }
    Ok((plan, ops))
}

/// Whether two documents say the same, defaults filled in (a missing
/// list is empty, a missing flag false).
fn same_doc(have: &Value, want: &Value) -> bool {
    let (Some(h), Some(w)) = (have.as_object(), want.as_object()) else {
        return have == want;
    };
    let keys: std::collections::BTreeSet<&String> = h.keys().chain(w.keys()).collect();
    keys.into_iter().all(|k| {
        let dflt = |v: Option<&Value>| match v {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(Value::Bool(false)) => None,
            Some(v) => Some(v.clone()),
        };
        dflt(h.get(k)) == dflt(w.get(k))
    })
}
