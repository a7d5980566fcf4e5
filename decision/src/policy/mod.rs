//! Cedar policies over the full call: agent, end user, tool and arguments.
//!
//! Model (namespace `Toolgate`): the principal is the `Agent`, the action is
//! the tool's exposed name (`Action::"crm__lookup_customer"`), the resource
//! the `Tool` (a member of its `Upstream`); `context.args` holds the call's
//! arguments, `context.user` the end user (a `User` in its `Group`s) when
//! known, `context.tool` and `context.upstream` the names.
//!
//! Outcomes: allow, deny, or judge — a call allowed by a permit carrying the
//! `@judge` annotation is escalated to the configured judge, which has the
//! final word. Any evaluation error is a deny: a forbid that failed to
//! evaluate must never let a call through.
//!
//! Precompilation: for every (agent, attached tool) pair the policies whose
//! scope can match are found once, at snapshot build. A pair whose outcome
//! cannot depend on the call (no matching permit, an unconditional forbid,
//! or an unconditional permit with no forbid or judge in sight) is decided
//! there and then; only the rest evaluate Cedar per call, over just their
//! slice of the policy set.

mod args;
mod cache;
pub mod cases;
mod load;
pub mod promote;
mod schema;
pub mod simulate;

pub use cache::DecisionCache;
pub use load::{from_sources, load, read_sources, PolicyBundle, PolicyError};
pub use schema::{schema_json, Vocabulary};

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity,
    EntityUid, PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint,
    RestrictedExpression,
};
use simd_json::tape::Value;
use toolgate_core::audit::Reason;

/// Cedar namespace of toolgate's entity types and actions.
pub const NAMESPACE: &str = "Toolgate";

/// The outcome for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let through.
    Allow {
        /// Policies that determined it (empty when no policy set is loaded).
        policies: Arc<[Arc<str>]>,
    },
    /// Refused.
    Deny {
        /// Policies that determined it (forbids), if any.
        policies: Arc<[Arc<str>]>,
        /// Why: a forbid, no permit, or an evaluation error.
        reason: Reason,
    },
    /// Allowed by a `@judge` permit: the judge decides.
    Judge {
        /// Policies that determined it.
        policies: Arc<[Arc<str>]>,
    },
}

impl Verdict {
    /// `allow`, `deny` or `judge`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allow",
            Verdict::Deny { .. } => "deny",
            Verdict::Judge { .. } => "judge",
        }
    }

    /// The policies that determined it.
    pub fn policies(&self) -> &Arc<[Arc<str>]> {
        match self {
            Verdict::Allow { policies }
            | Verdict::Deny { policies, .. }
            | Verdict::Judge { policies } => policies,
        }
    }
}

/// What is known about a (agent, tool) pair before any call.
#[derive(Debug, Clone)]
pub enum PairDecision {
    /// Decided at snapshot build.
    Fixed(Verdict),
    /// Depends on the user or the arguments: evaluate this slice per call.
    Evaluate(Arc<Slice>),
}

/// The policies that can apply to one or more pairs.
#[derive(Debug)]
pub struct Slice {
    set: PolicySet,
    names: HashMap<PolicyId, Arc<str>>,
    judged: Vec<PolicyId>,
    /// The `context.session` attributes its policies read.
    session: u16,
    /// The labels (bits) its policies name.
    labels: u32,
}

impl Slice {
    /// Whether a policy of the slice reads `context.session`: its verdicts
    /// change from call to call, so they are not cached.
    pub fn reads_session(&self) -> bool {
        self.session != 0
    }

    /// The `context.session` attributes its policies read (bits of
    /// [`crate::session::FIELDS`]).
    pub fn session_fields(&self) -> (u16, u32) {
        (self.session, self.labels)
    }
}

/// The `context.session` attributes a policy reads (a word-level test that
/// can only err towards more: such a slice is evaluated uncached).
fn session_fields(p: &cedar_policy::Policy) -> u16 {
    crate::session::fields_read(&p.to_string())
}

/// The compiled policy engine of a snapshot.
pub struct Engine {
    bundle: Arc<PolicyBundle>,
    entities: Entities,
    agent_groups: HashMap<String, Vec<String>>,
    slices: std::sync::Mutex<HashMap<Vec<PolicyId>, Arc<Slice>>>,
    /// The `context.session` attributes and labels any policy reads: what
    /// a decision on the whole set ([`Engine::decide_target`]) needs.
    session: (u16, u32),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policies", &self.bundle.names.len())
            .finish()
    }
}

fn uid(kind: &str, id: &str) -> Option<EntityUid> {
    let ty = format!("{NAMESPACE}::{kind}").parse().ok()?;
    let eid = id.parse().ok()?;
    Some(EntityUid::from_type_name_and_id(ty, eid))
}

/// The facts about one call a policy may look at.
pub struct CallFacts<'a, 't> {
    /// Agent id.
    pub agent: &'a str,
    /// End user, when known.
    pub user: Option<&'a str>,
    /// The end user's groups as the IdP's token gives them; they replace the
    /// user's `[[users]]` groups. `None`: the configured groups apply.
    pub groups: Option<&'a [Arc<str>]>,
    /// Exposed tool name.
    pub tool: &'a str,
    /// Upstream name.
    pub upstream: &'a str,
    /// The customer (tenant) the call is attributed to.
    pub customer: &'a str,
    /// `params.arguments`.
    pub args: Option<Value<'t, 't>>,
    /// The call's session, when policies read it.
    pub session: Option<crate::session::SessionView<'a>>,
}

/// What a request other than `tools/call` acts on, for policy: a prompt
/// (`prompts/get`) or a resource (`resources/read`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The action: `prompts/get` or `resources/read`.
    pub action: &'a str,
    /// The resource's entity type: `Prompt` or `Resource`.
    pub kind: &'a str,
    /// The context attribute naming it: `prompt` or `uri`.
    pub attribute: &'a str,
    /// The exposed prompt name or resource URI.
    pub id: &'a str,
}

impl Engine {
    /// The policies the engine evaluates.
    pub fn bundle(&self) -> &PolicyBundle {
        &self.bundle
    }

    /// Whether any policy reads `context.session`.
    pub fn uses_sessions(&self) -> bool {
        self.bundle.set.policies().any(|p| session_fields(p) != 0)
    }

    /// Builds the engine: entity store from agents, users, groups, tools
    /// (exposed name, upstream, labels) and upstreams.
    pub fn new(
        bundle: Arc<PolicyBundle>,
        agents: &[(String, Vec<String>)],
        users: &[(String, Vec<String>)],
        tools: &[(String, String, Vec<String>)],
    ) -> Self {
        let mut list = Vec::new();
        let mut groups = std::collections::BTreeSet::new();
        let mut member =
            |kind: &str,
             id: &str,
             parents: &[String],
             groups: &mut std::collections::BTreeSet<String>| {
                let parents: std::collections::HashSet<EntityUid> = parents
                    .iter()
                    .filter_map(|g| {
                        groups.insert(g.clone());
                        uid("Group", g)
                    })
                    .collect();
                if let Some(u) = uid(kind, id) {
                    list.push(Entity::new_no_attrs(u, parents));
                }
            };
        for (id, g) in agents {
            member("Agent", id, g, &mut groups);
        }
        for (id, g) in users {
            member("User", id, g, &mut groups);
        }
        let mut upstreams = std::collections::BTreeSet::new();
        for (tool, upstream, labels) in tools {
            upstreams.insert(upstream.clone());
            if let (Some(t), Some(u)) = (uid("Tool", tool), uid("Upstream", upstream)) {
                list.push(labelled(t, labels, u));
            }
        }
        for g in &groups {
            if let Some(u) = uid("Group", g) {
                list.push(Entity::new_no_attrs(u, Default::default()));
            }
        }
        for u in &upstreams {
            if let Some(u) = uid("Upstream", u) {
                list.push(Entity::new_no_attrs(u, Default::default()));
            }
        }
        let entities = Entities::from_entities(list, None).unwrap_or_else(|_| Entities::empty());
        let agent_groups = agents.iter().cloned().collect();
        let session = bundle.set.policies().fold((0, 0), |(f, l), p| {
            let text = p.to_string();
            (
                f | crate::session::fields_read(&text),
                l | crate::session::labels_read(&text),
            )
        });
        Self {
            bundle,
            entities,
            agent_groups,
            slices: Default::default(),
            session,
        }
    }

    fn scope_matches(
        &self,
        policy: &cedar_policy::Policy,
        agent: &str,
        tool: &str,
        upstream: &str,
    ) -> bool {
        let agent_uid = uid("Agent", agent);
        let groups = self
            .agent_groups
            .get(agent)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let agent_in = |target: &EntityUid| {
            Some(target) == agent_uid.as_ref()
                || groups
                    .iter()
                    .any(|g| uid("Group", g).as_ref() == Some(target))
        };
        let agent_type =
            |t: &cedar_policy::EntityTypeName| t.to_string() == format!("{NAMESPACE}::Agent");
        let principal = match policy.principal_constraint() {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(u) => Some(&u) == agent_uid.as_ref(),
            PrincipalConstraint::In(u) => agent_in(&u),
            PrincipalConstraint::Is(t) => agent_type(&t),
            PrincipalConstraint::IsIn(t, u) => agent_type(&t) && agent_in(&u),
        };
        let action_uid = uid("Action", tool);
        let action = match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(u) => Some(&u) == action_uid.as_ref(),
            ActionConstraint::In(list) => list.iter().any(|u| Some(u) == action_uid.as_ref()),
        };
        let tool_uid = uid("Tool", tool);
        let up_uid = uid("Upstream", upstream);
        let tool_in = |u: &EntityUid| Some(u) == tool_uid.as_ref() || Some(u) == up_uid.as_ref();
        let tool_type =
            |t: &cedar_policy::EntityTypeName| t.to_string() == format!("{NAMESPACE}::Tool");
        let resource = match policy.resource_constraint() {
            ResourceConstraint::Any => true,
            ResourceConstraint::Eq(u) => Some(&u) == tool_uid.as_ref(),
            ResourceConstraint::In(u) => tool_in(&u),
            ResourceConstraint::Is(t) => tool_type(&t),
            ResourceConstraint::IsIn(t, u) => tool_type(&t) && tool_in(&u),
        };
        principal && action && resource
    }

    /// What can be known about `agent` calling `tool` (of `upstream`) before any call.
    pub fn precompile(&self, agent: &str, tool: &str, upstream: &str) -> PairDecision {
        let mut ids = Vec::new();
        let (mut permits, mut forbids) = (Vec::new(), Vec::new());
        for p in self.bundle.set.policies() {
            if !self.scope_matches(p, agent, tool, upstream) {
                continue;
            }
            ids.push(p.id().clone());
            let conditional = p.has_non_scope_constraint();
            let judged = p.annotation("judge").is_some();
            match p.effect() {
                Effect::Permit => permits.push((p.id().clone(), conditional, judged)),
                Effect::Forbid => forbids.push((p.id().clone(), conditional)),
            }
        }
        let name = |id: &PolicyId| named(&self.bundle.names, id);
        if let Some((id, _)) = forbids.iter().find(|(_, c)| !c) {
            return PairDecision::Fixed(Verdict::Deny {
                policies: Arc::from([name(id)]),
                reason: Reason::ForbiddenByPolicy,
            });
        }
        if permits.is_empty() {
            return PairDecision::Fixed(Verdict::Deny {
                policies: Arc::from([]),
                reason: Reason::NoPermit,
            });
        }
        if forbids.is_empty() && permits.iter().all(|(_, _, j)| !j) {
            if let Some((id, _, _)) = permits.iter().find(|(_, c, _)| !c) {
                return PairDecision::Fixed(Verdict::Allow {
                    policies: Arc::from([name(id)]),
                });
            }
        }
        ids.sort_by_key(|i| i.to_string());
        let mut slices = self.slices.lock().unwrap_or_else(|p| p.into_inner());
        let slice = slices
            .entry(ids.clone())
            .or_insert_with(|| {
                let mut set = PolicySet::new();
                let mut names = HashMap::new();
                let mut judged = Vec::new();
                let mut session = 0;
                let mut labels = 0;
                for id in &ids {
                    if let Some(p) = self.bundle.set.policy(id) {
                        let text = p.to_string();
                        session |= crate::session::fields_read(&text);
                        labels |= crate::session::labels_read(&text);
                        let _ = set.add(p.clone());
                        names.insert(id.clone(), name(id));
                        if p.annotation("judge").is_some() {
                            judged.push(id.clone());
                        }
                    }
                }
                Arc::new(Slice {
                    set,
                    names,
                    judged,
                    session,
                    labels,
                })
            })
            .clone();
        PairDecision::Evaluate(slice)
    }

    /// Decides a request on `target` (a prompt or a resource) with the
    /// whole policy set: such requests are rare beside tool calls, and
    /// their resources (URIs) are not known before the request, so there
    /// is nothing to precompile. `facts.tool` is not used; the context
    /// carries the target under its attribute instead, and the session's
    /// facts when `facts` has them. The target is an
    /// entity of `facts.upstream`, so `resource in Toolgate::Upstream::"…"`
    /// works.
    pub fn decide_target(&self, target: &Target<'_>, facts: &CallFacts<'_, '_>) -> Verdict {
        let deny = |reason| Verdict::Deny {
            policies: Arc::from([]),
            reason,
        };
        let (Some(principal), Some(action), Some(resource), Some(upstream)) = (
            uid("Agent", facts.agent),
            uid("Action", target.action),
            uid(target.kind, target.id),
            uid("Upstream", facts.upstream),
        ) else {
            return deny(Reason::PolicyError);
        };
        let context = match context(facts, (target.attribute, target.id), self.session) {
            Ok(c) => c,
            Err(reason) => return deny(reason),
        };
        let Ok(request) = Request::new(principal, action, resource.clone(), context, None) else {
            return deny(Reason::PolicyError);
        };
        // `labels` (empty) as tools have it, so a policy on every action
        // that reads `resource.labels` evaluates rather than errs.
        let mut added = vec![labelled(resource, &[], upstream)];
        match token_user(facts) {
            Ok(Some(user)) => added.push(user),
            Ok(None) => {}
            Err(reason) => return deny(reason),
        }
        let Ok(entities) = self.entities.clone().upsert_entities(added, None) else {
            return deny(Reason::PolicyError);
        };
        let response = Authorizer::new().is_authorized(&request, &self.bundle.set, &entities);
        let name = |id: &PolicyId| named(&self.bundle.names, id);
        let judged = |id: &PolicyId| {
            self.bundle
                .set
                .policy(id)
                .is_some_and(|p| p.annotation("judge").is_some())
        };
        verdict_of(&response, name, judged)
    }

    /// Evaluates one call against its pair's slice.
    pub fn evaluate(&self, slice: &Slice, facts: &CallFacts<'_, '_>) -> Verdict {
        let deny = |reason| Verdict::Deny {
            policies: Arc::from([]),
            reason,
        };
        let (Some(principal), Some(action), Some(resource)) = (
            uid("Agent", facts.agent),
            uid("Action", facts.tool),
            uid("Tool", facts.tool),
        ) else {
            return deny(Reason::PolicyError);
        };
        let context = match context(facts, ("tool", facts.tool), (slice.session, slice.labels)) {
            Ok(c) => c,
            Err(reason) => return deny(reason),
        };
        let Ok(request) = Request::new(principal, action, resource, context, None) else {
            return deny(Reason::PolicyError);
        };
        // The user entity must be in the store for `in Group` checks; known
        // users are, unknown ones belong to no group.
        // A token's groups are the user's for this call only: the store is
        // copied with the user re-parented (rare: only slices that depend on
        // the user reach here, and their verdicts are cached).
        let scoped;
        let entities = match token_user(facts) {
            Ok(None) => &self.entities,
            Ok(Some(user)) => match self.entities.clone().upsert_entities([user], None) {
                Ok(e) => {
                    scoped = e;
                    &scoped
                }
                Err(_) => return deny(Reason::PolicyError),
            },
            Err(reason) => return deny(reason),
        };
        let response = Authorizer::new().is_authorized(&request, &slice.set, entities);
        let name = |id: &PolicyId| named(&slice.names, id);
        verdict_of(&response, name, |id| slice.judged.contains(id))
    }
}

/// The context every request has: `args`, `upstream`, `customer`, and
/// `user` when known.
fn base_context(facts: &CallFacts<'_, '_>) -> Result<Vec<(String, RestrictedExpression)>, Reason> {
    let empty =
        || RestrictedExpression::new_record(std::iter::empty()).map_err(|_| Reason::PolicyError);
    let args = match facts.args {
        Some(a) => match args::to_cedar(a, 0)? {
            Some(r) => r,
            None => empty()?,
        },
        None => empty()?,
    };
    let mut pairs = vec![
        ("args".to_owned(), args),
        (
            "upstream".to_owned(),
            RestrictedExpression::new_string(facts.upstream.to_owned()),
        ),
        (
            "customer".to_owned(),
            RestrictedExpression::new_string(facts.customer.to_owned()),
        ),
    ];
    if let Some(u) = facts.user.and_then(|u| uid("User", u)) {
        pairs.push(("user".to_owned(), RestrictedExpression::new_entity_uid(u)));
    }
    Ok(pairs)
}

/// The request's context: [`base_context`], the attribute naming what is
/// acted on (`tool`, `prompt` or `uri`), and the session's facts (the
/// attributes and labels in the `session` bits) when `facts` has them.
fn context(
    facts: &CallFacts<'_, '_>,
    (attribute, value): (&str, &str),
    session: (u16, u32),
) -> Result<Context, Reason> {
    let mut pairs = base_context(facts)?;
    pairs.push((
        attribute.to_owned(),
        RestrictedExpression::new_string(value.to_owned()),
    ));
    if let Some(view) = &facts.session {
        let s = view
            .to_cedar(session.0, session.1)
            .map_err(|_| Reason::PolicyError)?;
        pairs.push(("session".to_owned(), s));
    }
    Context::from_pairs(pairs).map_err(|_| Reason::PolicyError)
}

/// The end user in the groups the token gives (they replace the
/// configured ones for this call), when the token gives groups.
fn token_user(facts: &CallFacts<'_, '_>) -> Result<Option<Entity>, Reason> {
    let (Some(u), Some(groups)) = (facts.user, facts.groups) else {
        return Ok(None);
    };
    let user = uid("User", u).ok_or(Reason::PolicyError)?;
    let parents = groups.iter().filter_map(|g| uid("Group", g)).collect();
    Ok(Some(Entity::new_no_attrs(user, parents)))
}

/// Entity `id`, a member of `parent`, with the `labels` attribute.
fn labelled(id: EntityUid, labels: &[String], parent: EntityUid) -> Entity {
    let attrs = [(
        "labels".to_owned(),
        RestrictedExpression::new_set(
            labels
                .iter()
                .map(|l| RestrictedExpression::new_string(l.clone())),
        ),
    )];
    let parents: std::collections::HashSet<EntityUid> = [parent].into_iter().collect();
    match Entity::new(id.clone(), attrs.into_iter().collect(), parents.clone()) {
        Ok(e) => e,
        Err(_) => Entity::new_no_attrs(id, parents),
    }
}

/// A policy's name as records show it: the bundle's (`@id`, else
/// `file.cedar#n`), else its Cedar id.
fn named(names: &HashMap<PolicyId, Arc<str>>, id: &PolicyId) -> Arc<str> {
    names
        .get(id)
        .cloned()
        .unwrap_or_else(|| Arc::from(id.to_string()))
}

/// The verdict of an authorization `response`: any evaluation error is a
/// deny (a policy that could not be evaluated may have been a forbid); an
/// allow through a `judged` policy is escalated.
fn verdict_of(
    response: &cedar_policy::Response,
    name: impl Fn(&PolicyId) -> Arc<str>,
    judged: impl Fn(&PolicyId) -> bool,
) -> Verdict {
    let policies: Arc<[Arc<str>]> = response.diagnostics().reason().map(&name).collect();
    if response.diagnostics().errors().next().is_some() {
        return Verdict::Deny {
            policies,
            reason: Reason::PolicyError,
        };
    }
    match response.decision() {
        CedarDecision::Allow => {
            if response.diagnostics().reason().any(judged) {
                Verdict::Judge { policies }
            } else {
                Verdict::Allow { policies }
            }
        }
        CedarDecision::Deny => {
            let reason = if policies.is_empty() {
                Reason::NoPermit
            } else {
                Reason::ForbiddenByPolicy
            };
            Verdict::Deny { policies, reason }
        }
    }
}

#[cfg(test)]
mod tests;
