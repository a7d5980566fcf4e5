//! Resource documents as the API shows them: items, the configuration
//! file's resources, and the effective document of one resource.

use super::*;

/// A resource as reads show it.
pub(super) fn item(kind: Kind, id: &str, version: u64, source: &str, spec: Value) -> Value {
    json!({"kind": kind.as_str(), "id": id, "version": version, "source": source, "spec": spec})
}

/// Resources the configuration file defines, of `kind`: (id, document).
pub(super) fn file_resources(src: &Sources, kind: Kind) -> Vec<(String, Value)> {
    match kind {
        Kind::Agents => src
            .file
            .config
            .agents
            .iter()
            .map(|a| {
                let tools: Vec<&String> = a.tools.iter().map(|t| t.get_ref()).collect();
                let mut doc =
                    json!({"tools": tools, "groups": a.groups, "act_for_users": a.act_for_users});
                if let Some(c) = &a.customer {
                    doc["customer"] = json!(c);
                }
                (a.id.get_ref().clone(), doc)
            })
            .collect(),
        Kind::Users => src
            .file
            .config
            .users
            .iter()
            .map(|u| (u.id.get_ref().clone(), json!({"groups": u.groups})))
            .collect(),
        Kind::Policies => src
            .policies
            .iter()
            .filter_map(|(path, text)| {
                let name = path.file_name()?.to_str()?.strip_suffix(".cedar")?;
                check_id(name).ok()?;
                Some((name.to_owned(), json!({ "text": text })))
            })
            .collect(),
        // Tokens minted by `toolgate token mint` are in its ledger file,
        // listed by `toolgate token list`.
        Kind::Subtokens => Vec::new(),
        Kind::Upstreams => src
            .file
            .upstreams
            .iter()
            .map(|u| (u.name().to_owned(), upstream_document(&u.entry)))
            .collect(),
        // The file's credentials belong to its upstreams; none is named.
        Kind::Credentials => Vec::new(),
        Kind::Limits => src
            .file
            .config
            .limits
            .rules
            .iter()
            .map(|r| (r.id.get_ref().clone(), limit_document(r)))
            .collect(),
        // Entries naming one tool; globs are the file's own.
        Kind::Labels => src
            .file
            .config
            .tool_labels
            .iter()
            .filter(|(tool, _)| !tool.contains('*'))
            .map(|(tool, labels)| (tool.clone(), json!({ "labels": labels })))
            .collect(),
    }
}

/// A `[[upstreams]]` entry as an `upstreams/{name}` document. A credential
/// shows where it is read from (never a value); a `command` or `oauth` one
/// only its kind, as `source` (the API does not write those).
/// `[upstreams.identity]` as a document: the mode and where things go
/// and are read from (a client secret's variable or file, never a value).
fn identity_document(i: &toolgate_core::config::UpstreamIdentityConfig) -> Value {
    let endpoint = |o: &toolgate_core::config::OAuthConfig| {
        let mut e = json!({"token_url": o.token_url.get_ref(), "client_id": o.client_id});
        if let Some(m) = e.as_object_mut() {
            let opt = |v: Option<&String>| v.map(|s| json!(s));
            for (k, v) in [
                (
                    "client_secret_env",
                    opt(o.client_secret_env.as_ref().map(|v| v.get_ref())),
                ),
                (
                    "client_secret_file",
                    opt(o.client_secret_file.as_ref().map(|v| v.get_ref())),
                ),
                ("scope", opt(o.scope.as_ref())),
                ("resource", opt(o.resource.as_ref())),
                ("ca_file", opt(o.ca_file.as_ref().map(|v| v.get_ref()))),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
        }
        e
    };
    let mut doc = json!({ "mode": i.mode.as_str() });
    if let Some(d) = doc.as_object_mut() {
        if let Some(h) = &i.header {
            d.insert("header".into(), json!(h));
        }
        if let Some(a) = &i.audience {
            d.insert("audience".into(), json!(a));
        }
        if i.actor {
            d.insert("actor".into(), json!(true));
        }
        if i.fallback == toolgate_core::config::ExchangeFallback::Credential {
            d.insert("fallback".into(), json!("credential"));
        }
        if let Some(o) = &i.exchange {
            d.insert("exchange".into(), endpoint(o));
        }
        if let Some(c) = &i.connect {
            let mut e = endpoint(&c.token_endpoint());
            if let Some(m) = e.as_object_mut() {
                m.insert("authorize_url".into(), json!(c.authorize_url.get_ref()));
            }
            d.insert("connect".into(), e);
        }
    }
    doc
}

pub(super) fn upstream_document(u: &toolgate_core::config::UpstreamConfig) -> Value {
    use toolgate_core::config::UpstreamProtocol;
    let mut doc = json!({
        "url": u.url.get_ref(),
        "timeout_ms": u.timeout_ms,
        "max_response_bytes": u.max_response_bytes,
        "pool_size": u.pool_size,
        "protocol": match u.protocol {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Handshake => "handshake",
            UpstreamProtocol::Stateless => "stateless",
        },
        "catalog_refresh_s": u.catalog_refresh_s,
        "client_requests": u.client_requests,
    });
    if let (Some(i), Some(d)) = (&u.identity, doc.as_object_mut()) {
        d.insert("identity".into(), identity_document(i));
    }
    if u.kind == toolgate_core::config::UpstreamKind::Stdio {
        if let Some(d) = doc.as_object_mut() {
            d.remove("url");
            d.remove("pool_size");
            d.remove("protocol");
        }
        // The program only: arguments may carry what only the file's
        // readers should see.
        doc["kind"] = json!("stdio");
        if let Some(program) = u.command.as_ref().and_then(|c| c.get_ref().first()) {
            doc["program"] = json!(program);
        }
    }
    if u.kind == toolgate_core::config::UpstreamKind::Openapi {
        if let Some(d) = doc.as_object_mut() {
            d.remove("url");
        }
        doc["kind"] = json!("openapi");
        if let Some(s) = &u.spec {
            doc["spec"] = json!(s.get_ref());
        }
        if let Some(b) = &u.base_url {
            doc["base_url"] = json!(b.get_ref());
        }
        if !u.include.is_empty() {
            doc["include"] = json!(u.include);
        }
        if !u.exclude.is_empty() {
            doc["exclude"] = json!(u.exclude);
        }
    }
    if !u.routes.is_empty() {
        doc["routes"] = json!(u.routes);
    }
    if let Some(p) = &u.prefix {
        doc["prefix"] = json!(p.get_ref());
    }
    if let Some(ca) = &u.ca_file {
        doc["ca_file"] = json!(ca.get_ref());
    }
    if let Some(c) = &u.credential {
        let mut cred = json!({"header": c.header.get_ref()});
        if !c.value_prefix.is_empty() {
            cred["value_prefix"] = json!(c.value_prefix);
        }
        match (&c.env, &c.file, &c.command) {
            (Some(v), _, _) => cred["env"] = json!(v.get_ref()),
            (None, Some(f), _) => cred["file"] = json!(f.get_ref()),
            (None, None, Some(_)) => cred["source"] = json!("command"),
            (None, None, None) => cred["source"] = json!("oauth"),
        }
        doc["credential"] = cred;
    }
    doc
}

/// The effective resource: the store's, else the configuration file's
/// (version 0).
pub(super) fn effective(src: &Sources, kind: Kind, id: &str) -> Option<Value> {
    if let Some(e) = src.control.get(kind, id) {
        return Some(item(kind, id, e.version, "store", e.spec.to_value()));
    }
    file_resources(src, kind)
        .into_iter()
        .find(|(fid, _)| fid == id)
        .map(|(fid, spec)| item(kind, &fid, 0, "config", spec))
}

/// A `[[limits.rules]]` entry as a `limits/{id}` document.
pub(super) fn limit_document(r: &toolgate_core::config::LimitRuleConfig) -> Value {
    let mut doc = serde_json::Map::new();
    for (k, v) in [
        ("customer", &r.customer),
        ("agent", &r.agent),
        ("user", &r.user),
        ("tool", &r.tool),
        ("upstream", &r.upstream),
    ] {
        if let Some(v) = v {
            doc.insert(k.into(), json!(v));
        }
    }
    if let Some(rate) = &r.rate {
        let mut m = json!({"calls_per_s": rate.calls_per_s});
        if let Some(b) = rate.burst {
            m["burst"] = json!(b);
        }
        doc.insert("rate".into(), m);
    }
    if let Some(q) = &r.quota {
        let mut m = json!({"units": q.units, "per": q.per.as_str()});
        if let Some(z) = &q.time_zone {
            m["time_zone"] = json!(z);
        }
        doc.insert("quota".into(), m);
    }
    if !r.cost.is_empty() {
        doc.insert("cost".into(), json!(r.cost));
    }
    Value::Object(doc)
}
