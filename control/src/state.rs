//! The control state: resources with versions, planned changes, and the
//! overlay onto the configuration file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Spanned;
use toolgate_core::config::{
    check_upstream, is_upstream_name, AgentConfig, ResolvedUpstream, ToolScope, UpstreamConfig,
    UserConfig, ValidConfig,
};
use toolgate_core::toolname::ToolNamer;

use crate::model::{
    check_id, AgentSpec, CredentialRef, Kind, Spec, UpstreamCredentialSpec, UpstreamSpec,
};

/// Most operations in one transaction.
pub const MAX_OPS: usize = 256;

/// One stored resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Version: the revision of the transaction that last wrote it.
    pub version: u64,
    /// Its document.
    pub spec: Spec,
}

/// Every resource of the store, and the revision of the last transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Resources by (kind, id).
    pub entries: BTreeMap<(Kind, String), Entry>,
    /// Revision of the last committed transaction; versions come from it.
    pub revision: u64,
}

/// What a write requires of the resource's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: "N"`: the stored version is N; N = 0 means "not in the
    /// store" (a resource only the configuration file defines reads as 0).
    IfMatch(u64),
    /// `If-None-Match: *`: not in the store.
    IfNoneMatch,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Resource kind.
    pub kind: Kind,
    /// Resource id.
    pub id: String,
    /// Required current version.
    pub pre: Precondition,
    /// The new document, or `None` to delete.
    pub spec: Option<Spec>,
}

/// One planned (or committed) change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Resource kind.
    pub kind: Kind,
    /// Resource id.
    pub id: String,
    /// The entry before, when stored.
    pub old: Option<Entry>,
    /// The entry after; `None` when deleted.
    pub new: Option<Entry>,
}

/// Why a transaction cannot be applied; nothing of it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// A precondition does not hold.
    #[error("`{kind}/{id}` is at version {current}, not {expected}")]
    Stale {
        /// Index of the operation.
        op: usize,
        /// Resource kind.
        kind: &'static str,
        /// Resource id.
        id: String,
        /// The version the operation required (0: absent).
        expected: u64,
        /// The version it has (0: absent).
        current: u64,
    },
    /// The operation is malformed (bad id, the same resource twice, too many).
    #[error("{0}")]
    Invalid(String),
    /// Deleting what is not in the store.
    #[error("`{kind}/{id}` is not in the store{hint}")]
    NotFound {
        /// Resource kind.
        kind: &'static str,
        /// Resource id.
        id: String,
        /// Extra help.
        hint: &'static str,
    },
}

impl State {
    /// The stored version of a resource; 0 when not stored.
    pub fn version(&self, kind: Kind, id: &str) -> u64 {
        self.get(kind, id).map_or(0, |e| e.version)
    }

    /// A stored resource.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Entry> {
        self.entries.get(&(kind, id.to_owned()))
    }

    /// Stored resources of a kind, by id.
    pub fn list(&self, kind: Kind) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|((_, id), e)| (id.as_str(), e))
    }

    /// Ids of revoked sub-tokens that have not expired at `now` (Unix
    /// seconds): an expired token is refused anyway, so the set the
    /// verifier holds stays as small as the tokens still in circulation.
    pub fn revoked_subtokens(&self, now: u64) -> Vec<String> {
        self.list(Kind::Subtokens)
            .filter_map(|(id, e)| match &e.spec {
                Spec::Subtoken(t) if t.revoked && t.exp > now => Some(id.to_owned()),
                _ => None,
            })
            .collect()
    }

    /// Checks every operation against the state and returns the changes,
    /// each new entry at version `revision + 1`; all or nothing.
    pub fn plan(&self, ops: &[Op]) -> Result<Vec<Change>, OpError> {
        if ops.is_empty() {
            return Err(OpError::Invalid(
                "a transaction needs at least one operation".into(),
            ));
        }
        if ops.len() > MAX_OPS {
            return Err(OpError::Invalid(format!(
                "a transaction holds at most {MAX_OPS} operations, not {}",
                ops.len()
            )));
        }
        let version = self.revision + 1;
        let mut changes = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            check_id(&op.id).map_err(|e| OpError::Invalid(format!("operation {i}: {e}")))?;
            if let Some(s) = &op.spec {
                if s.kind() != op.kind {
                    return Err(OpError::Invalid(format!(
                        "operation {i}: document is not a {}",
                        op.kind.as_str()
                    )));
                }
            }
            if ops[..i].iter().any(|o| o.kind == op.kind && o.id == op.id) {
                return Err(OpError::Invalid(format!(
                    "operation {i}: `{}/{}` appears twice in one transaction",
                    op.kind.as_str(),
                    op.id
                )));
            }
            let old = self.get(op.kind, &op.id).cloned();
            let current = old.as_ref().map_or(0, |e| e.version);
            let expected = match op.pre {
                Precondition::IfMatch(v) => v,
                Precondition::IfNoneMatch => 0,
            };
            if current != expected {
                return Err(OpError::Stale {
                    op: i,
                    kind: op.kind.as_str(),
                    id: op.id.clone(),
                    expected,
                    current,
                });
            }
            if op.spec.is_none() && old.is_none() {
                return Err(OpError::NotFound {
                    kind: op.kind.as_str(),
                    id: op.id.clone(),
                    hint: "",
                });
            }
            changes.push(Change {
                kind: op.kind,
                id: op.id.clone(),
                old,
                new: op.spec.clone().map(|spec| Entry { version, spec }),
            });
        }
        Ok(changes)
    }

    /// The state after `changes` (from [`State::plan`] on this state).
    pub fn applied(&self, changes: &[Change]) -> State {
        let mut next = self.clone();
        for c in changes {
            let key = (c.kind, c.id.clone());
            match &c.new {
                Some(e) => {
                    next.revision = next.revision.max(e.version);
                    next.entries.insert(key, e.clone());
                }
                None => {
                    next.entries.remove(&key);
                }
            }
        }
        next.revision = next.revision.max(self.revision + 1);
        next
    }

    /// The configuration file's agents and users with the store's laid over
    /// them: a stored agent or user replaces the file's of the same id (an
    /// agent keeps the file's API key unless it gives one), or is added.
    /// Returns the effective configuration and, for stored agents that
    /// cannot be used, why (they are left out).
    pub fn overlay(&self, file: &ValidConfig) -> (ValidConfig, Vec<String>) {
        let mut cfg = file.clone();
        let mut skipped = Vec::new();
        self.overlay_upstreams(&mut cfg, &mut skipped);
        for (id, e) in self.list(Kind::Agents) {
            let Spec::Agent(a) = &e.spec else { continue };
            let spanned = |s: &str| Spanned::new(0..0, s.to_owned());
            let tools = a.tools.iter().map(|t| spanned(t)).collect();
            let prompts: Vec<Spanned<String>> = a.prompts.iter().map(|t| spanned(t)).collect();
            let resources: Vec<Spanned<String>> = a.resources.iter().map(|t| spanned(t)).collect();
            let scopes: Vec<(String, ToolScope)> = a
                .scopes
                .iter()
                .map(|(t, s)| {
                    let scope = ToolScope {
                        users: s.users.clone(),
                        groups: s.groups.clone(),
                    };
                    (t.clone(), scope)
                })
                .collect();
            match cfg.config.agents.iter_mut().find(|x| x.id.get_ref() == id) {
                Some(x) => {
                    x.tools = tools;
                    x.prompts = prompts;
                    x.resources = resources;
                    x.scopes = scopes;
                    x.groups = a.groups.clone();
                    x.act_for_users = a.act_for_users;
                    if a.customer.is_some() {
                        x.customer = a.customer.clone();
                    }
                    if let Some(h) = &a.api_key_sha256 {
                        x.api_key_sha256 = Some(spanned(h));
                    }
                }
                None => match &a.api_key_sha256 {
                    Some(h) => cfg.config.agents.push(AgentConfig {
                        id: spanned(id),
                        api_key_sha256: Some(spanned(h)),
                        client_cert_names: Vec::new(),
                        rate_limit: None,
                        tools,
                        prompts,
                        resources,
                        groups: a.groups.clone(),
                        act_for_users: a.act_for_users,
                        customer: a.customer.clone(),
                        scopes,
                    }),
                    None => skipped.push(format!(
                        "agent `{id}` has no `api_key_sha256` and the configuration file does not define it"
                    )),
                },
            }
        }
        for (id, e) in self.list(Kind::Limits) {
            let Spec::Limit(l) = &e.spec else { continue };
            match l.to_rule(id) {
                Ok(rule) => match cfg
                    .config
                    .limits
                    .rules
                    .iter_mut()
                    .find(|r| r.id.get_ref() == id)
                {
                    Some(r) => *r = rule,
                    None => cfg.config.limits.rules.push(rule),
                },
                Err(why) => skipped.push(format!("limit `{id}`: {why}")),
            }
        }
        for (tool, e) in self.list(Kind::Labels) {
            let Spec::Labels(l) = &e.spec else { continue };
            cfg.config
                .tool_labels
                .insert(tool.to_owned(), l.labels.clone());
        }
        for (id, e) in self.list(Kind::Users) {
            let Spec::User(u) = &e.spec else { continue };
            match cfg.config.users.iter_mut().find(|x| x.id.get_ref() == id) {
                Some(x) => x.groups = u.groups.clone(),
                None => cfg.config.users.push(UserConfig {
                    id: Spanned::new(0..0, id.to_owned()),
                    groups: u.groups.clone(),
                }),
            }
        }
        (cfg, skipped)
    }

    /// Lays the stored upstreams over `cfg`'s: a stored upstream replaces the
    /// file's of the same name in place (file upstreams keep their order),
    /// or is added after them (in name order); the tool namer is rebuilt.
    /// A stored upstream that no longer passes the configuration's checks
    /// (its `ca_file` gone, a prefix taken) is left out, with why in `skipped`.
    fn overlay_upstreams(&self, cfg: &mut ValidConfig, skipped: &mut Vec<String>) {
        let mut any = false;
        for (id, e) in self.list(Kind::Upstreams) {
            let Spec::Upstream(spec) = &e.spec else {
                continue;
            };
            let checked = upstream_config(id, spec, self).and_then(|u| {
                let c = check_upstream(&u, &cfg.config, &cfg.base).map_err(|e| e.join("; "))?;
                Ok((u, c))
            });
            let upstream = match checked {
                Ok((entry, c)) => match c.resolve(entry) {
                    Some(u) => u,
                    None => continue,
                },
                Err(why) => {
                    skipped.push(format!("upstream `{id}`: {why}"));
                    continue;
                }
            };
            match cfg.upstreams.iter().position(|x| x.name() == id) {
                Some(i) => cfg.upstreams[i] = upstream,
                None => cfg.upstreams.push(upstream),
            }
            any = true;
        }
        if !any {
            return;
        }
        // Leave out an upstream whose prefix an earlier one took (the
        // admin API refuses such a write; a file edited since may cause it).
        loop {
            let (namer, clash) = namer_of(&cfg.upstreams);
            match clash {
                Some(i) => {
                    let gone = cfg.upstreams.remove(i);
                    skipped.push(format!(
                        "upstream `{}`: its prefix is used by another upstream",
                        gone.name()
                    ));
                }
                None => {
                    cfg.namer = namer;
                    return;
                }
            }
        }
    }

    /// The credential source `spec` names: its own, or the
    /// `credentials/{name}` resource it refers to (`None` when none, or
    /// that resource does not exist).
    pub fn credential_of(&self, spec: &UpstreamSpec) -> Option<UpstreamCredentialSpec> {
        match spec.credential.as_ref()? {
            CredentialRef::Inline(c) => Some(c.clone()),
            CredentialRef::Named(n) => match &self.get(Kind::Credentials, n)?.spec {
                Spec::Credential(c) => Some(c.clone()),
                _ => None,
            },
        }
    }

    /// The version of the `credentials/{name}` resource `spec` names; 0
    /// when it names none.
    pub fn credential_version(&self, spec: &UpstreamSpec) -> u64 {
        match &spec.credential {
            Some(CredentialRef::Named(n)) => self.version(Kind::Credentials, n),
            _ => 0,
        }
    }

    /// Stored upstreams naming credential `name`.
    pub fn upstreams_using(&self, name: &str) -> Vec<String> {
        self.list(Kind::Upstreams)
            .filter(|(_, e)| {
                matches!(&e.spec, Spec::Upstream(u) if matches!(&u.credential, Some(CredentialRef::Named(n)) if n == name))
            })
            .map(|(id, _)| id.to_owned())
            .collect()
    }

    /// The Cedar sources to compile: the configuration's policy files, where
    /// a stored policy `NAME` replaces the file named `NAME.cedar` or is
    /// added (under the path `admin:policies/NAME.cedar`).
    pub fn policy_sources(&self, files: &[(PathBuf, String)]) -> Vec<(PathBuf, String)> {
        let stored: Vec<(&str, &str)> = self
            .list(Kind::Policies)
            .filter_map(|(id, e)| match &e.spec {
                Spec::Policy(p) => Some((id, p.text.as_str())),
                _ => None,
            })
            .collect();
        let mut out: Vec<(PathBuf, String)> = files
            .iter()
            .filter(|(path, _)| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                !stored
                    .iter()
                    .any(|(id, _)| name.as_deref() == Some(&format!("{id}.cedar")))
            })
            .cloned()
            .collect();
        out.extend(
            stored
                .into_iter()
                .map(|(id, text)| (policy_path(id), text.to_owned())),
        );
        out
    }
}

/// An upstream's tool prefix: `prefix`, else its name.
pub fn prefix_of(u: &UpstreamConfig) -> &str {
    u.prefix.as_ref().unwrap_or(&u.name).get_ref()
}

/// The tool namer of `upstreams`, and the index of the first whose prefix
/// clashes with an earlier one's.
fn namer_of(upstreams: &[ResolvedUpstream]) -> (ToolNamer, Option<usize>) {
    let mut namer = ToolNamer::default();
    for (i, u) in upstreams.iter().enumerate() {
        if namer.add(prefix_of(&u.entry)).is_err() {
            return (namer, Some(i));
        }
    }
    (namer, None)
}

/// The `[[upstreams]]` entry a stored upstream stands for: its keys with
/// `name` set to its id, read by the configuration's own parser (so the
/// defaults and types are the file's), a named credential taken from
/// `state`. Errors: why it is not one.
pub fn upstream_config(
    id: &str,
    spec: &UpstreamSpec,
    state: &State,
) -> Result<UpstreamConfig, String> {
    if !is_upstream_name(id) {
        return Err(format!(
            "upstream name `{id}` must be non-empty letters, digits, `_`, `-` or `.`"
        ));
    }
    if spec.kind.as_deref() == Some("stdio") {
        return Err("a `stdio` upstream runs a command on the gateway's host: it can only be declared in the configuration file, not through the admin API".into());
    }
    if spec
        .identity
        .as_ref()
        .and_then(|i| i.get("mode"))
        .and_then(|m| m.as_str())
        == Some("connected_account")
    {
        return Err("a `connected_account` upstream's provider and consent flow are declared in the configuration file, not through the admin API".into());
    }
    let resolved;
    let spec = match &spec.credential {
        Some(CredentialRef::Named(n)) => {
            let Some(c) = state.credential_of(spec) else {
                return Err(format!(
                    "credential `{n}` does not exist: create `credentials/{n}` first"
                ));
            };
            resolved = UpstreamSpec {
                credential: Some(CredentialRef::Inline(c)),
                ..spec.clone()
            };
            &resolved
        }
        _ => spec,
    };
    let toml::Value::Table(mut table) = toml::Value::try_from(spec).map_err(|e| e.to_string())?
    else {
        return Err("not a table".into());
    };
    table.insert("name".into(), toml::Value::String(id.to_owned()));
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    toml::from_str(&text).map_err(|e| e.message().trim().to_owned())
}

/// Checks the upstreams `changes` write, against the effective
/// configuration after them (`effective`, from [`State::overlay`] of the
/// next state) and the file's base directory: each passes the checks a
/// `[[upstreams]]` entry does, and its prefix is its own. Returns one
/// message per problem.
pub fn check_upstream_changes(
    file: &ValidConfig,
    next: &State,
    effective: &ValidConfig,
    skipped: &[String],
    changes: &[Change],
) -> Vec<String> {
    let mut problems = Vec::new();
    // Every upstream but the one written: the effective ones, and the
    // file's that no stored upstream replaces (one left out of the
    // effective set for a clash still holds its prefix).
    let others = |id: &str| -> Vec<(String, String)> {
        effective
            .upstreams
            .iter()
            .chain(
                file.upstreams
                    .iter()
                    .filter(|u| next.get(Kind::Upstreams, u.name()).is_none()),
            )
            .filter(|u| u.name() != id)
            .map(|u| (u.name().to_owned(), prefix_of(&u.entry).to_owned()))
            .collect()
    };
    for c in changes {
        let Some(Entry {
            spec: Spec::Upstream(spec),
            ..
        }) = &c.new
        else {
            continue;
        };
        let found = problems.len();
        match upstream_config(&c.id, spec, next) {
            Err(why) => problems.push(format!("upstream `{}`: {why}", c.id)),
            Ok(u) => {
                if let Err(errs) = check_upstream(&u, &effective.config, &effective.base) {
                    problems.extend(errs);
                }
                let prefix = prefix_of(&u);
                if let Some((other, _)) = others(&c.id).into_iter().find(|(_, p)| p == prefix) {
                    problems.push(if prefix.is_empty() {
                        format!("upstream `{}`: upstream `{other}` has the empty prefix already; only one may", c.id)
                    } else {
                        format!("upstream `{}`: prefix `{prefix}` is used by upstream `{other}`: give it `prefix`", c.id)
                    });
                }
            }
        }
        if problems.len() == found {
            // Anything else that kept it out of the effective configuration.
            let marker = format!("upstream `{}`:", c.id);
            problems.extend(skipped.iter().filter(|s| s.starts_with(&marker)).cloned());
        }
    }
    problems.dedup();
    problems
}

/// The agents of `after` (the effective configuration after a change)
/// attaching a tool that, before the change (`before`), went to one of the
/// upstreams `changes` write, and after it goes nowhere: deleting an
/// upstream (or changing its prefix) must not leave attached tools
/// dangling. Returns (agent, tool) pairs.
pub fn dangling_tools(
    before: &ValidConfig,
    after: &ValidConfig,
    changes: &[Change],
) -> Vec<(String, String)> {
    let changed: Vec<&str> = changes
        .iter()
        .filter(|c| c.kind == Kind::Upstreams)
        .map(|c| c.id.as_str())
        .collect();
    if changed.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for a in &after.config.agents {
        for t in &a.tools {
            let t = t.get_ref();
            let went = before
                .namer
                .route(t)
                .and_then(|(i, _)| before.upstreams.get(i))
                .is_some_and(|u| changed.contains(&u.name()));
            if went && after.namer.route(t).is_none() {
                out.push((a.id.get_ref().clone(), t.clone()));
            }
        }
    }
    out
}

/// The path a stored policy's errors and unnamed policies are reported with.
pub fn policy_path(name: &str) -> PathBuf {
    PathBuf::from(format!("admin:policies/{name}.cedar"))
}

/// Checks what the configuration alone can tell about the agents `changes`
/// write: every attached tool routes to a configured upstream, a new agent
/// has a key, no key is shared. Returns one message per problem.
pub fn check_references(
    effective: &ValidConfig,
    file: &ValidConfig,
    changes: &[Change],
) -> Vec<String> {
    let mut problems = Vec::new();
    for c in changes {
        let Some(Entry {
            spec:
                Spec::Agent(AgentSpec {
                    tools,
                    api_key_sha256,
                    scopes,
                    ..
                }),
            ..
        }) = &c.new
        else {
            continue;
        };
        for (tool, scope) in scopes {
            for u in &scope.users {
                if !effective.config.users.iter().any(|x| x.id.get_ref() == u) {
                    problems.push(format!(
                        "agent `{}`: the scope of `{tool}` names user `{u}`, who is neither in the store nor in `[[users]]`",
                        c.id
                    ));
                }
            }
        }
        for t in tools {
            if effective.namer.route(t).is_none() {
                problems.push(format!(
                    "agent `{}`: tool `{t}` names no configured upstream (expected `{{prefix}}__{{tool}}`)",
                    c.id
                ));
            }
        }
        let in_file = file.config.agents.iter().any(|a| a.id.get_ref() == &c.id);
        if api_key_sha256.is_none() && !in_file {
            problems.push(format!(
                "agent `{}`: `api_key_sha256` is required for an agent the configuration file does not define",
                c.id
            ));
        }
        if let Some(h) = api_key_sha256 {
            let shared = effective
                .config
                .agents
                .iter()
                .filter(|a| {
                    a.api_key_sha256
                        .as_ref()
                        .is_some_and(|k| k.get_ref().eq_ignore_ascii_case(h))
                })
                .count();
            if shared > 1 {
                problems.push(format!(
                    "agent `{}`: the same API key hash is given to another agent",
                    c.id
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PolicySpec, UserSpec};

    fn agent(tools: &[&str]) -> Spec {
        Spec::Agent(AgentSpec {
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            prompts: vec![],
            resources: vec![],
            groups: vec![],
            act_for_users: false,
            api_key_sha256: None,
            customer: None,
            scopes: Default::default(),
        })
    }

    fn put(id: &str, pre: Precondition, spec: Spec) -> Op {
        Op {
            kind: spec.kind(),
            id: id.into(),
            pre,
            spec: Some(spec),
        }
    }

    #[test]
    fn versions_grow_and_stale_writes_are_refused() {
        let s = State::default();
        let c = s
            .plan(&[put("bot", Precondition::IfNoneMatch, agent(&["a"]))])
            .unwrap();
        let s1 = s.applied(&c);
        assert_eq!(s1.version(Kind::Agents, "bot"), 1);
        // Creating again: it exists now.
        let again = s1.plan(&[put("bot", Precondition::IfNoneMatch, agent(&[]))]);
        assert!(matches!(
            again,
            Err(OpError::Stale {
                current: 1,
                expected: 0,
                ..
            })
        ));
        // Two writers read version 1; the first wins, the second is stale.
        let w1 = s1
            .plan(&[put("bot", Precondition::IfMatch(1), agent(&["b"]))])
            .unwrap();
        let s2 = s1.applied(&w1);
        let w2 = s2.plan(&[put("bot", Precondition::IfMatch(1), agent(&["c"]))]);
        assert!(matches!(w2, Err(OpError::Stale { current: 2, .. })));
        // Delete and re-create: the version never goes back.
        let d = s2
            .plan(&[Op {
                kind: Kind::Agents,
                id: "bot".into(),
                pre: Precondition::IfMatch(2),
                spec: None,
            }])
            .unwrap();
        let s3 = s2.applied(&d);
        assert_eq!(s3.version(Kind::Agents, "bot"), 0);
        let r = s3
            .plan(&[put("bot", Precondition::IfNoneMatch, agent(&[]))])
            .unwrap();
        assert_eq!(s3.applied(&r).version(Kind::Agents, "bot"), 4);
    }

    #[test]
    fn revoked_subtokens_are_those_revoked_and_unexpired() {
        use crate::model::SubtokenSpec;
        let tok = |exp: u64, revoked: bool| {
            Spec::Subtoken(SubtokenSpec {
                agent: "bot".into(),
                user: None,
                tools: None,
                customer: None,
                iat: 1,
                exp,
                revoked,
            })
        };
        let s = State::default();
        let c = s
            .plan(&[
                put("aa", Precondition::IfNoneMatch, tok(100, true)),
                put("bb", Precondition::IfNoneMatch, tok(100, false)),
                put("cc", Precondition::IfNoneMatch, tok(50, true)),
            ])
            .unwrap();
        let s = s.applied(&c);
        assert_eq!(s.revoked_subtokens(10), vec!["aa", "cc"]);
        assert_eq!(s.revoked_subtokens(50), vec!["aa"]);
        assert!(s.revoked_subtokens(100).is_empty());
    }

    #[test]
    fn a_transaction_is_all_or_nothing() {
        let s = State::default();
        let ops = [
            put("a", Precondition::IfNoneMatch, agent(&[])),
            put("b", Precondition::IfMatch(7), agent(&[])),
        ];
        assert!(matches!(s.plan(&ops), Err(OpError::Stale { op: 1, .. })));
        let dup = [
            put("a", Precondition::IfNoneMatch, agent(&[])),
            put("a", Precondition::IfNoneMatch, agent(&[])),
        ];
        assert!(matches!(s.plan(&dup), Err(OpError::Invalid(_))));
        assert!(matches!(s.plan(&[]), Err(OpError::Invalid(_))));
        let del = [Op {
            kind: Kind::Users,
            id: "nobody".into(),
            pre: Precondition::IfMatch(0),
            spec: None,
        }];
        assert!(matches!(s.plan(&del), Err(OpError::NotFound { .. })));
    }

    #[test]
    fn overlay_replaces_or_adds_and_policies_replace_files_by_name() {
        let h = "ab".repeat(32);
        let file = toolgate_core::config::parse(
            &format!(
                "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[agents]]\nid = \"bot\"\napi_key_sha256 = \"{h}\"\ntools = [\"crm__a\"]\n[[users]]\nid = \"alice\"\ngroups = [\"x\"]\n"
            ),
            "t",
            std::path::Path::new("."),
        )
        .unwrap();
        let mut s = State::default();
        let ops = [
            put("bot", Precondition::IfMatch(0), agent(&["crm__b"])),
            put("ghost", Precondition::IfNoneMatch, agent(&["crm__c"])),
            put(
                "alice",
                Precondition::IfNoneMatch,
                Spec::User(UserSpec {
                    groups: vec!["admins".into()],
                }),
            ),
            put(
                "main",
                Precondition::IfNoneMatch,
                Spec::Policy(PolicySpec {
                    text: "forbid(principal, action, resource);".into(),
                }),
            ),
        ];
        let c = s.plan(&ops).unwrap();
        s = s.applied(&c);
        let (eff, skipped) = s.overlay(&file);
        assert_eq!(eff.config.agents.len(), 1, "ghost has no key: left out");
        assert_eq!(skipped.len(), 1);
        assert_eq!(eff.config.agents[0].tools[0].get_ref(), "crm__b");
        assert_eq!(
            eff.config.agents[0]
                .api_key_sha256
                .as_ref()
                .map(|k| k.get_ref()),
            Some(&h)
        );
        assert_eq!(eff.config.users[0].groups, vec!["admins".to_owned()]);
        let problems = check_references(&eff, &file, &c);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`api_key_sha256` is required"));
        let files = vec![
            (
                PathBuf::from("p/main.cedar"),
                "permit(principal, action, resource);".to_owned(),
            ),
            (PathBuf::from("p/other.cedar"), String::new()),
        ];
        let srcs = s.policy_sources(&files);
        assert_eq!(
            srcs.iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>(),
            vec!["p/other.cedar", "admin:policies/main.cedar"]
        );
    }

    fn upstream(url: &str, prefix: Option<&str>) -> Spec {
        Spec::Upstream(Box::new(crate::model::UpstreamSpec {
            kind: None,
            spec: None,
            base_url: None,
            include: Vec::new(),
            exclude: Vec::new(),
            routes: Vec::new(),
            url: url.into(),
            prefix: prefix.map(Into::into),
            timeout_ms: None,
            max_response_bytes: None,
            pool_size: None,
            protocol: None,
            ca_file: None,
            catalog_refresh_s: None,
            client_requests: None,
            identity: None,
            credential: None,
        }))
    }

    fn file_with_crm() -> ValidConfig {
        let h = "ab".repeat(32);
        toolgate_core::config::parse(
            &format!(
                "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\ntimeout_ms = 7\n[[agents]]\nid = \"bot\"\napi_key_sha256 = \"{h}\"\ntools = [\"crm__a\"]\n"
            ),
            "t",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn stored_upstreams_are_added_or_replace_the_files_and_route() {
        let file = file_with_crm();
        let s = State::default();
        let c = s
            .plan(&[
                put(
                    "ops",
                    Precondition::IfNoneMatch,
                    upstream("http://127.0.0.1:2/mcp", None),
                ),
                put(
                    "bot",
                    Precondition::IfMatch(0),
                    agent(&["crm__a", "ops__refund"]),
                ),
            ])
            .unwrap();
        let s = s.applied(&c);
        let (eff, skipped) = s.overlay(&file);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(eff.upstreams.len(), 2);
        assert_eq!(
            eff.upstreams[1].entry.timeout_ms, 30_000,
            "the file's default"
        );
        assert_eq!(eff.namer.route("ops__refund"), Some((1, "refund")));
        assert_eq!(eff.upstreams[1].url.port, 2);
        assert!(check_upstream_changes(&file, &s, &eff, &skipped, &c).is_empty());
        assert!(check_references(&eff, &file, &c).is_empty());

        // Replacing the file's upstream of the same name: in place, all of it.
        let r = s
            .plan(&[put(
                "crm",
                Precondition::IfMatch(0),
                upstream("http://127.0.0.1:3/mcp", None),
            )])
            .unwrap();
        let (eff2, _) = s.applied(&r).overlay(&file);
        assert_eq!(eff2.upstreams[0].url.port, 3);
        assert_eq!(eff2.upstreams[0].entry.timeout_ms, 30_000);

        // Deleting `ops` while `bot` attaches `ops__refund` leaves it dangling.
        let d = s
            .plan(&[Op {
                kind: Kind::Upstreams,
                id: "ops".into(),
                pre: Precondition::IfMatch(1),
                spec: None,
            }])
            .unwrap();
        let (after, _) = s.applied(&d).overlay(&file);
        assert_eq!(
            dangling_tools(&eff, &after, &d),
            vec![("bot".to_owned(), "ops__refund".to_owned())]
        );
    }

    #[test]
    fn bad_stored_upstreams_are_refused_and_left_out() {
        let file = file_with_crm();
        let s = State::default();
        for (spec, why) in [
            (upstream("ftp://127.0.0.1:2/mcp", None), "is not an"),
            (
                upstream("http://u:p@127.0.0.1:2/mcp", None),
                "credentials in the URL",
            ),
            (
                upstream("http://127.0.0.1:2/mcp", Some("crm")),
                "prefix `crm` is used by upstream `crm`",
            ),
            (
                upstream("http://127.0.0.1:2/mcp", Some("a__b")),
                "must not contain `__`",
            ),
        ] {
            let c = s
                .plan(&[put("ops", Precondition::IfNoneMatch, spec)])
                .unwrap();
            let next = s.applied(&c);
            let (eff, skipped) = next.overlay(&file);
            let problems = check_upstream_changes(&file, &next, &eff, &skipped, &c);
            assert!(
                problems.iter().any(|p| p.contains(why)),
                "{why}: {problems:?}"
            );
            assert_eq!(eff.upstreams.len(), 1, "left out: {why}");
        }
        let bad_name = upstream_config(
            "bad name",
            &crate::model::UpstreamSpec {
                url: "http://127.0.0.1:2/mcp".into(),
                ..match upstream("x", None) {
                    Spec::Upstream(u) => *u,
                    _ => unreachable!(),
                }
            },
            &State::default(),
        );
        assert!(bad_name.is_err());
        // A stdio upstream would run a command on the gateway's host: the
        // configuration file's to declare, never the API's.
        let stdio = upstream_config(
            "local",
            &crate::model::UpstreamSpec {
                kind: Some("stdio".into()),
                ..match upstream("x", None) {
                    Spec::Upstream(u) => *u,
                    _ => unreachable!(),
                }
            },
            &State::default(),
        );
        assert!(
            stdio
                .as_ref()
                .is_err_and(|e| e.contains("configuration file")),
            "{stdio:?}"
        );
        // What an upstream may ask agents' clients: the file's default
        // unless the document says otherwise.
        let spec = |json: &[u8]| match Spec::parse(Kind::Upstreams, json).unwrap() {
            Spec::Upstream(u) => *u,
            _ => unreachable!(),
        };
        let asks = |json: &[u8]| {
            upstream_config("tools", &spec(json), &State::default())
                .unwrap()
                .client_requests
        };
        use toolgate_core::config::ClientRequest;
        assert_eq!(
            asks(br#"{"url":"http://127.0.0.1:2/mcp"}"#),
            [ClientRequest::Elicitation]
        );
        assert_eq!(
            asks(br#"{"url":"http://127.0.0.1:2/mcp","client_requests":["sampling","roots"]}"#),
            [ClientRequest::Sampling, ClientRequest::Roots]
        );
        assert!(Spec::parse(
            Kind::Upstreams,
            br#"{"url":"http://127.0.0.1:2/mcp","client_requests":["email"]}"#
        )
        .is_err());
    }

    #[test]
    fn named_credentials_resolve_and_their_users_are_known() {
        let cred = Spec::parse(
            Kind::Credentials,
            br#"{"env":"OPS_TOKEN","value_prefix":"Bearer "}"#,
        )
        .unwrap();
        assert!(Spec::parse(Kind::Credentials, br#"{"env":"A","file":"b"}"#).is_err());
        assert!(Spec::parse(Kind::Credentials, br#"{"value":"secret"}"#).is_err());
        let named = Spec::parse(
            Kind::Upstreams,
            br#"{"url":"http://127.0.0.1:2/mcp","credential":"ops-token"}"#,
        )
        .unwrap();
        let Spec::Upstream(spec) = &named else {
            unreachable!()
        };
        let s = State::default();
        let missing = upstream_config("ops", spec, &s);
        assert!(matches!(missing, Err(m) if m.contains("credentials/ops-token")));
        let c = s
            .plan(&[
                put("ops-token", Precondition::IfNoneMatch, cred),
                put("ops", Precondition::IfNoneMatch, named.clone()),
            ])
            .unwrap();
        let s = s.applied(&c);
        let u = upstream_config("ops", spec, &s).unwrap();
        let cfg = u.credential.unwrap();
        assert_eq!(
            cfg.env.map(|v| v.into_inner()),
            Some("OPS_TOKEN".to_owned())
        );
        assert_eq!(cfg.value_prefix, "Bearer ");
        assert_eq!(s.upstreams_using("ops-token"), vec!["ops".to_owned()]);
        assert!(s.upstreams_using("other").is_empty());
    }
}
