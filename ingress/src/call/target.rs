//! Phase 6 for prompts and resources: admit a `prompts/get` or a
//! `resources/read` — or refuse it.
//!
//! The same model as a tool call: the prompt or resource must be attached
//! to the agent (a narrowed sub-token sees none), its name or URI well
//! formed, a prompt's arguments strings, the end user one the agent may
//! name, and policy must not deny it (action `prompts/get` on a
//! `Toolgate::Prompt`, `resources/read` on a `Toolgate::Resource`, with
//! the whole policy set). What is forwarded is rebuilt from the checked
//! view, under the upstream's own name or URI; the answer goes through the
//! output rules whose `tools` globs match the prompt's name or the
//! resource's URI. Rate limits and quotas count tool calls only.
//!
//! A `completion/complete` is admitted here too: its `ref` must be a
//! prompt or resource template the agent sees.

use std::collections::HashMap;
use std::sync::Arc;

use simd_json::prelude::*;
use toolgate_core::audit::{truncate, Reason, MAX_TOOL_LEN};
use toolgate_core::jsonrpc::{write_str, write_value, RpcRequest};
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_core::resource_uri;
use toolgate_decision::policy::{CallFacts, Target, Verdict};
use toolgate_decision::{Agent, OutputFilter, Snapshot};

use super::ctx::{Answer, CallCtx};
use super::decide;
use super::forward::Admitted;
use super::identify::user_of;
use super::Gateway;
use crate::http::server::Request;

/// Compiled output filters a shard keeps for prompts and resources, by the
/// rules they hold; emptied when the snapshot changes or it grows past
/// [`MAX_FILTERS`].
#[derive(Default)]
pub(super) struct TargetFilters {
    generation: u64,
    by_rules: HashMap<Vec<usize>, Arc<OutputFilter>>,
}

/// Most distinct rule sets a shard keeps compiled.
const MAX_FILTERS: usize = 256;

/// The kind of a request on a prompt or a resource.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prompt,
    Resource,
}

impl Kind {
    fn of(method: &str) -> Option<Self> {
        match method {
            "prompts/get" => Some(Kind::Prompt),
            "resources/read" => Some(Kind::Resource),
            _ => None,
        }
    }

    /// The method, the parameter naming the target, and its policy model.
    fn parts(self) -> (&'static str, &'static str, Target<'static>) {
        match self {
            Kind::Prompt => (
                "prompts/get",
                "name",
                Target {
                    action: "prompts/get",
                    kind: "Prompt",
                    attribute: "prompt",
                    id: "",
                },
            ),
            Kind::Resource => (
                "resources/read",
                "uri",
                Target {
                    action: "resources/read",
                    kind: "Resource",
                    attribute: "uri",
                    id: "",
                },
            ),
        }
    }
}

/// Whether `method` is admitted here ([`Gateway::admit_target`]).
pub(super) fn is_target(method: &str) -> bool {
    Kind::of(method).is_some()
}

/// The method [`Gateway::admit_completion`] admits.
pub(super) const COMPLETE: &str = "completion/complete";

impl Gateway {
    /// Admits the `prompts/get` or `resources/read` `rpc`.
    pub(super) fn admit_target(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        rpc: &RpcRequest<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Admitted, Refusal> {
        let kind = Kind::of(rpc.method).ok_or(Refusal::new(RefusalKind::MethodNotFound))?;
        let (method, key, model) = kind.parts();
        let exposed = rpc.param_str(key).ok_or_else(|| {
            Refusal::with(
                RefusalKind::InvalidParams,
                format!("`params.{key}` must be a string"),
            )
        })?;
        ctx.target = Some(truncate(exposed, MAX_TOOL_LEN * 4).to_owned());
        let args = rpc.params.and_then(|p| p.get("arguments"));
        if kind == Kind::Prompt {
            check_prompt_arguments(args)?;
        }
        let unknown = || match kind {
            Kind::Prompt => Refusal::new(RefusalKind::UnknownPrompt),
            Kind::Resource => Refusal::new(RefusalKind::UnknownResource),
        };
        // A sub-token narrowed to some tools reaches no prompt or resource.
        if ctx.scope.is_some() {
            return Err(unknown());
        }
        let route = match kind {
            Kind::Prompt => snap.prompt_route(agent, exposed),
            Kind::Resource => snap
                .resource_route(agent, exposed)
                .map_err(|e| Refusal::with(RefusalKind::InvalidParams, e.to_string()))?,
        }
        .ok_or_else(unknown)?;
        let upstream_name = &snap.upstreams[route.upstream].name;
        ctx.upstream = Some(Arc::clone(upstream_name));
        if route.quarantined {
            return Err(Refusal::new(RefusalKind::PromptQuarantined));
        }
        ctx.user = user_of(agent, req, ctx.user.take())?;
        // In its session like a tool call without labels: policies read
        // the session's facts, and the request counts among its calls.
        // What policy sees as `context.args`: a prompt's arguments, or the
        // variables of the template a resource URI was made from.
        let vars = match kind {
            Kind::Prompt => None,
            Kind::Resource => snap.template_args(route.upstream, route.name).map(|vars| {
                let obj: serde_json::Map<String, serde_json::Value> = vars
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                serde_json::to_vec(&obj).unwrap_or_default()
            }),
        };
        let mut inner = self.inner_parser.borrow_mut();
        let vars_tape = match &vars {
            Some(json) => inner.parse(json).ok(),
            None => None,
        };
        let policy_args = match kind {
            Kind::Prompt => args,
            Kind::Resource => vars_tape.as_ref().map(|t| t.as_value()),
        };
        let name: Arc<str> = Arc::from(exposed);
        ctx.session = self.enter_session(snap, agent, req, 0, &name, policy_args, ctx);
        let groups = ctx.groups.as_deref().filter(|_| ctx.user.is_some());
        let verdict = match &snap.engine {
            None => Verdict::Allow {
                policies: Arc::from([]),
            },
            Some(engine) => {
                let facts = CallFacts {
                    agent: &agent.id,
                    user: ctx.user.as_deref(),
                    groups,
                    tool: "",
                    upstream: upstream_name,
                    customer: ctx.customer.as_deref().unwrap_or(&agent.customer),
                    args: policy_args,
                    session: ctx.session.as_ref().map(|s| s.view()),
                };
                engine.decide_target(
                    &Target {
                        id: exposed,
                        ..model
                    },
                    &facts,
                )
            }
        };
        let escalation = decide::settle(verdict, policy_args, ctx)?;
        let mut params = Vec::with_capacity(exposed.len() + 64);
        write_str(key, &mut params);
        params.push(b':');
        write_str(route.name, &mut params);
        let args_at = params.len();
        if kind == Kind::Prompt {
            params.extend_from_slice(br#","arguments":"#);
            match args {
                Some(a) => write_value(a, &mut params),
                None => params.extend_from_slice(b"{}"),
            }
        }
        ctx.reason = if ctx.policies.is_some() {
            Reason::AllowedByPolicy
        } else {
            Reason::Attached
        };
        Ok(Admitted {
            method,
            upstream: route.upstream,
            tool: Arc::from(route.name),
            params,
            args_at,
            headers: vec![(
                "Mcp-Name".to_owned(),
                protocol::encode_header_value(route.name).into_owned(),
            )],
            escalation,
            filter: self.target_filter(snap, agent, exposed),
            progress: None,
        })
    }

    /// Admits a `completion/complete`: its `ref` must be a prompt or a
    /// resource template the agent sees (attachment alone decides: a
    /// completion offers argument values, not contents); it is forwarded
    /// with the upstream's own name or template, `argument` and `context`
    /// as sent, and its values go through the output rules of the prompt
    /// or template.
    pub(super) fn admit_completion(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        rpc: &RpcRequest<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Admitted, Refusal> {
        let bad = |why: &'static str| Refusal::with(RefusalKind::InvalidParams, why);
        let params = rpc.params.ok_or_else(|| bad("`params` is required"))?;
        let reference = params
            .get("ref")
            .filter(|r| r.is_object())
            .ok_or_else(|| bad("`params.ref` must be an object"))?;
        let argument = params
            .get("argument")
            .filter(|a| a.get("name").and_then(|n| n.into_string()).is_some())
            .ok_or_else(|| bad("`params.argument` must be an object with a `name`"))?;
        let context = params.get("context");
        if context.is_some_and(|c| !c.is_object()) {
            return Err(bad("`params.context` must be an object"));
        }
        let (kind, key) = match reference.get("type").and_then(|t| t.into_string()) {
            Some("ref/prompt") => (Kind::Prompt, "name"),
            Some("ref/resource") => (Kind::Resource, "uri"),
            _ => {
                return Err(bad(
                    "`params.ref.type` must be `ref/prompt` or `ref/resource`",
                ))
            }
        };
        let exposed = reference
            .get(key)
            .and_then(|n| n.into_string())
            .ok_or_else(|| bad("`params.ref` names no prompt or template"))?;
        ctx.target = Some(truncate(exposed, MAX_TOOL_LEN * 4).to_owned());
        let route = if ctx.scope.is_some() {
            None
        } else {
            match kind {
                Kind::Prompt => snap.prompt_route(agent, exposed),
                Kind::Resource => snap.template_route(agent, exposed),
            }
        };
        let route = route.ok_or_else(|| match kind {
            Kind::Prompt => Refusal::new(RefusalKind::UnknownPrompt),
            Kind::Resource => Refusal::new(RefusalKind::UnknownResource),
        })?;
        ctx.upstream = Some(Arc::clone(&snap.upstreams[route.upstream].name));
        if route.quarantined {
            return Err(Refusal::new(RefusalKind::PromptQuarantined));
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#""ref":{"type":"#);
        write_str(
            if kind == Kind::Prompt {
                "ref/prompt"
            } else {
                "ref/resource"
            },
            &mut out,
        );
        out.push(b',');
        write_str(key, &mut out);
        out.push(b':');
        write_str(route.name, &mut out);
        out.extend_from_slice(br#"},"argument":"#);
        write_value(argument, &mut out);
        if let Some(c) = context {
            out.extend_from_slice(br#","context":"#);
            write_value(c, &mut out);
        }
        let args_at = out.len();
        ctx.reason = Reason::Attached;
        Ok(Admitted {
            method: "completion/complete",
            upstream: route.upstream,
            tool: Arc::from(route.name),
            params: out,
            args_at,
            headers: Vec::new(),
            escalation: None,
            filter: self.target_filter(snap, agent, exposed),
            progress: None,
        })
    }

    /// The output rules for `agent`'s results from `exposed`, compiled
    /// once per shard and snapshot.
    fn target_filter(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        exposed: &str,
    ) -> Option<Arc<OutputFilter>> {
        let picked = snap.result_rules(&agent.id, exposed);
        if picked.is_empty() {
            return None;
        }
        let generation = self.snapshot.borrow().generation();
        let mut cache = self.target_filters.borrow_mut();
        if cache.generation != generation || cache.by_rules.len() >= MAX_FILTERS {
            cache.generation = generation;
            cache.by_rules.clear();
        }
        let filter = cache
            .by_rules
            .entry(picked)
            .or_insert_with_key(|p| Arc::new(snap.compile_rules(p)));
        Some(Arc::clone(filter))
    }
}

/// A `resources/read` answer with each `contents[].uri` in toolgate's
/// namespace, as the agent asked for it: the upstream's own URIs never
/// reach the agent.
pub(super) fn expose_contents(answer: &mut Answer, upstream: &str) {
    let Answer::Message { body, .. } = answer else {
        return;
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let Some(contents) = v
        .pointer_mut("/result/contents")
        .and_then(|c| c.as_array_mut())
    else {
        return;
    };
    for c in contents {
        if let Some(u) = c.get_mut("uri") {
            if let Some(s) = u.as_str() {
                *u = serde_json::Value::String(resource_uri::expose(upstream, s));
            }
        }
    }
    if let Ok(b) = serde_json::to_vec(&v) {
        *body = b;
    }
}

/// A prompt's `arguments`, when given, must be an object of strings (MCP:
/// prompt arguments are strings).
fn check_prompt_arguments(args: Option<simd_json::tape::Value<'_, '_>>) -> Result<(), Refusal> {
    let Some(args) = args else {
        return Ok(());
    };
    let bad = |why: String| Refusal::with(RefusalKind::InvalidParams, why);
    let obj = args
        .as_object()
        .ok_or_else(|| bad("`params.arguments` must be an object".to_owned()))?;
    for (k, v) in obj.iter() {
        if v.into_string().is_none() {
            return Err(bad(format!(
                "prompt argument `{}` must be a string",
                truncate(k, MAX_TOOL_LEN)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use toolgate_core::audit::Reason;
    use toolgate_core::refusal::RefusalKind;

    use super::super::testing::{bot_key, gateway_with, with_request};
    use super::super::{CallCtx, Gateway, Plan};

    /// Runs phases 2 and 4–6 on `body`; the forwarded method and params,
    /// or the refusal, and the record's reason and target.
    fn plan(
        gw: &Gateway,
        body: &str,
    ) -> (
        Result<(String, String), RefusalKind>,
        Reason,
        Option<String>,
    ) {
        let (snap, _) = gw.current();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             MCP-Protocol-Version: 2025-06-18",
            bot_key()
        );
        with_request(&head, body, |req| {
            let mut ctx = CallCtx::new(Instant::now(), None, false, Reason::Answered);
            let caller = gw.identify(&snap, req).unwrap();
            ctx.customer = Some(caller.customer);
            let sid = gw.new_session(caller.agent, 0);
            let head = format!("{head}\r\nMcp-Session-Id: {sid}");
            let planned = with_request(&head, body, |req| {
                gw.plan(&snap, caller.agent, req, &mut ctx)
            });
            let out = match planned {
                Ok(Plan::Forward(a)) => {
                    Ok((a.method.to_owned(), String::from_utf8(a.params).unwrap()))
                }
                Ok(Plan::Answer(_)) => panic!("forwarded, not answered"),
                Err(r) => Err(r.kind),
            };
            (out, ctx.reason, ctx.target)
        })
    }

    fn read(uri: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
        )
    }

    fn get(name: &str, args: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{name}","arguments":{args}}}}}"#
        )
    }

    const ATTACHED: &str = r#"prompts = ["crm__greet*"]
resources = ["toolgate://crm/file:///public/*"]"#;

    #[test]
    fn attached_resources_are_read_under_the_upstreams_own_uri() {
        let gw = gateway_with(ATTACHED, "", &[]);
        let (out, reason, target) = plan(&gw, &read("toolgate://crm/file:///public/a.md"));
        assert_eq!(
            out,
            Ok((
                "resources/read".into(),
                r#""uri":"file:///public/a.md""#.into()
            ))
        );
        assert_eq!(reason, Reason::Attached);
        assert_eq!(
            target.as_deref(),
            Some("toolgate://crm/file:///public/a.md")
        );
    }

    #[test]
    fn unattached_foreign_and_smuggling_uris_are_refused() {
        let gw = gateway_with(ATTACHED, "", &[]);
        let refused = |uri: &str| plan(&gw, &read(uri)).0.err();
        assert_eq!(
            refused("toolgate://crm/file:///secret/key"),
            Some(RefusalKind::UnknownResource)
        );
        assert_eq!(
            refused("toolgate://nope/file:///public/a"),
            Some(RefusalKind::UnknownResource)
        );
        assert_eq!(
            refused("file:///public/a"),
            Some(RefusalKind::InvalidParams)
        );
        assert_eq!(
            refused("toolgate://crm/file:///public/../secret/key"),
            Some(RefusalKind::InvalidParams)
        );
        assert_eq!(
            refused("toolgate://crm/file:///public/%2e%2e/secret"),
            Some(RefusalKind::InvalidParams)
        );
    }

    #[test]
    fn prompts_are_attached_by_pattern_and_take_string_arguments_only() {
        let gw = gateway_with(ATTACHED, "", &[]);
        let (out, _, _) = plan(&gw, &get("crm__greeting", r#"{"who":"ada"}"#));
        assert_eq!(
            out,
            Ok((
                "prompts/get".into(),
                r#""name":"greeting","arguments":{"who":"ada"}"#.into()
            ))
        );
        assert_eq!(
            plan(&gw, &get("crm__other", "{}")).0.err(),
            Some(RefusalKind::UnknownPrompt)
        );
        assert_eq!(
            plan(&gw, &get("crm__greeting", r#"{"n":1}"#)).0.err(),
            Some(RefusalKind::InvalidParams)
        );
    }

    #[test]
    fn policy_decides_reads_by_uri_and_prompts_by_argument() {
        let gw = gateway_with(
            ATTACHED,
            "[policies]\nfiles = []",
            &[r#"
                @id("reads")
                permit(principal, action == Toolgate::Action::"resources/read", resource)
                unless { context.uri like "*/drafts/*" };
                @id("prompts")
                permit(principal, action == Toolgate::Action::"prompts/get", resource in Toolgate::Upstream::"crm");
                @id("no-ceo")
                forbid(principal, action == Toolgate::Action::"prompts/get", resource)
                when { context.args has who && context.args.who == "ceo" };
            "#],
        );
        let (out, reason, _) = plan(&gw, &read("toolgate://crm/file:///public/a.md"));
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(reason, Reason::AllowedByPolicy);
        let (out, reason, _) = plan(&gw, &read("toolgate://crm/file:///public/drafts/b.md"));
        assert_eq!(
            (out.err(), reason),
            (Some(RefusalKind::PolicyDenied), Reason::NoPermit)
        );
        assert!(plan(&gw, &get("crm__greeting", r#"{"who":"ada"}"#))
            .0
            .is_ok());
        let (out, reason, _) = plan(&gw, &get("crm__greeting", r#"{"who":"ceo"}"#));
        assert_eq!(
            (out.err(), reason),
            (Some(RefusalKind::PolicyDenied), Reason::ForbiddenByPolicy)
        );
    }

    #[test]
    fn a_policy_on_every_action_reading_tool_labels_does_not_fail_reads() {
        let gw = gateway_with(
            ATTACHED,
            "[policies]\nfiles = []",
            &[r#"
                permit(principal, action, resource);
                @id("toxic")
                forbid(principal, action, resource) when { resource.labels.contains("external_send") };
            "#],
        );
        let (out, reason, _) = plan(&gw, &read("toolgate://crm/file:///public/a.md"));
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(reason, Reason::AllowedByPolicy);
    }

    #[test]
    fn completions_reach_only_attached_prompts_and_templates() {
        let gw = gateway_with(ATTACHED, "", &[]);
        let complete = |reference: &str| {
            plan(
                &gw,
                &format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{reference},"argument":{{"name":"who","value":"a"}}}}}}"#
                ),
            )
            .0
        };
        assert_eq!(
            complete(r#"{"type":"ref/prompt","name":"crm__greeting"}"#),
            Ok((
                "completion/complete".into(),
                r#""ref":{"type":"ref/prompt","name":"greeting"},"argument":{"name":"who","value":"a"}"#
                    .into()
            ))
        );
        assert_eq!(
            complete(r#"{"type":"ref/resource","uri":"toolgate://crm/file:///public/{name}"}"#)
                .map(|(_, p)| p),
            Ok(r#""ref":{"type":"ref/resource","uri":"file:///public/{name}"},"argument":{"name":"who","value":"a"}"#.into())
        );
        assert_eq!(
            complete(r#"{"type":"ref/resource","uri":"toolgate://crm/file:///secret/{name}"}"#)
                .err(),
            Some(RefusalKind::UnknownResource)
        );
        assert_eq!(
            complete(r#"{"type":"ref/prompt","name":"crm__other"}"#).err(),
            Some(RefusalKind::UnknownPrompt)
        );
        assert_eq!(
            complete(r#"{"type":"ref/tool","name":"crm__lookup"}"#).err(),
            Some(RefusalKind::InvalidParams)
        );
    }

    #[test]
    fn session_policies_on_every_action_evaluate_for_reads() {
        let gw = gateway_with(
            ATTACHED,
            "[policies]\nfiles = []",
            &[r#"
                permit(principal, action, resource);
                @id("after-destructive") @judge("after-destructive")
                permit(principal, action, resource)
                when { context.session.last_labels.contains("destructive") };
                @id("busy")
                forbid(principal, action == Toolgate::Action::"resources/read", resource)
                when { context.session.in_flight > 5 };
            "#],
        );
        let (out, reason, _) = plan(&gw, &read("toolgate://crm/file:///public/a.md"));
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(reason, Reason::AllowedByPolicy);
    }
}
