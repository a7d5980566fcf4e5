//! Phase: admit a `tools/call` — or refuse it.
//!
//! In order: the tool must be attached to the agent (and within a
//! sub-token's narrowing), its definition not quarantined, the agent under
//! its rate limit, the end user within the tool's scope, and policy must
//! not deny it ([`super::decide`]). What is forwarded is then rebuilt from
//! the checked view, so the upstream acts on exactly what was decided:
//! `name` as the upstream knows the tool, `arguments` as decided (or as
//! the data-loss rules filter them).

use std::sync::Arc;

use toolgate_core::audit::{truncate, Reason, MAX_TOOL_LEN};
use toolgate_core::jsonrpc::{write_str, write_value, RpcRequest, ToolCall};
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::{Agent, Route, Snapshot};

use super::ctx::CallCtx;
use super::decide::{self, OnBehalf};
use super::forward::Admitted;
use super::identify::user_of;
use super::{filter, params, Gateway};
use crate::http::server::Request;

impl Gateway {
    /// Admits the `tools/call` `rpc`; the record keeps its arguments as
    /// `[audit] arguments` says, admitted or not.
    pub(super) fn admit(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        rpc: &RpcRequest<'_>,
        stateless: bool,
        ctx: &mut CallCtx,
    ) -> Result<Admitted, Refusal> {
        let call = ToolCall::from_request(rpc)
            .map_err(|e| Refusal::with(RefusalKind::InvalidParams, e.to_string()))?;
        self.admit_tool(snap, agent, req, &call, stateless, ctx)
    }

    /// Admits the call of tool `call.name` with `call.arguments`, whichever
    /// door it came through; the record keeps its arguments as `[audit]
    /// arguments` says, admitted or not.
    pub(super) fn admit_tool(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        call: &ToolCall<'_>,
        stateless: bool,
        ctx: &mut CallCtx,
    ) -> Result<Admitted, Refusal> {
        ctx.tool = Some(truncate(call.name, MAX_TOOL_LEN).to_owned());
        let admitted = self.admit_call(snap, agent, req, call, stateless, ctx);
        if self.args_audit.is_on() {
            ctx.args = match &admitted {
                Ok(a) => self.args_audit.record(a.arguments()),
                // Not forwarded: the arguments as the agent sent them,
                // encoded as they would have been forwarded.
                Err(_) => {
                    let mut raw = Vec::new();
                    write_arguments(call, &mut raw);
                    self.args_audit.record(&raw)
                }
            };
        }
        admitted
    }

    fn admit_call(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        call: &ToolCall<'_>,
        stateless: bool,
        ctx: &mut CallCtx,
    ) -> Result<Admitted, Refusal> {
        let unknown = || {
            let mut shown = String::with_capacity(call.name.len() + 2);
            shown.push('`');
            shown.push_str(truncate(call.name, MAX_TOOL_LEN));
            shown.push('`');
            Refusal::with(RefusalKind::UnknownTool, shown)
        };
        // A sub-token narrowed to some tools sees the others as unattached.
        let in_scope = ctx
            .scope
            .as_ref()
            .is_none_or(|tools| tools.iter().any(|t| t == call.name));
        let Some(route) = snap.route(agent, call.name).filter(|_| in_scope) else {
            return Err(unknown());
        };
        ctx.upstream = Some(Arc::clone(&snap.upstreams[route.upstream].name));
        if route.quarantined {
            return Err(Refusal::new(RefusalKind::ToolQuarantined));
        }
        // Before any policy work: an agent over its limit costs little.
        let limits = self.rate_limits.borrow_mut().current();
        if let Some(limit) = limits.get(&*agent.id) {
            if let Err(wait) = limit.check(crate::ratelimit::now_ns()) {
                ctx.retry_after_s = Some(wait.as_secs() + 1);
                return Err(Refusal::new(RefusalKind::RateLimited));
            }
        }
        ctx.user = user_of(agent, req, ctx.user.take())?;
        let groups = ctx.groups.as_deref().filter(|_| ctx.user.is_some());
        if let Some(scope) = &route.scope {
            if !snap.in_scope(scope, ctx.user.as_deref(), groups) {
                // Answered like an unattached tool: a caller out of
                // scope learns nothing more; the audit record tells.
                ctx.reason = Reason::ToolOutOfScope;
                return Err(unknown());
            }
        }
        ctx.session = self.enter_session(
            snap,
            agent,
            req,
            route.labels,
            &route.exposed,
            call.arguments,
            ctx,
        );
        let who = OnBehalf {
            user: ctx.user.as_deref(),
            groups,
            customer: ctx.customer.as_deref().unwrap_or(&agent.customer),
            session: ctx.session.as_ref().map(|s| s.view()),
        };
        let (verdict, shadow) = self.decide(snap, agent, route, &who, call.arguments);
        if let Some(shadow) = shadow {
            if let Some(c) = self.shared.metrics.shards.get(usize::from(self.shard)) {
                let counter = if shadow.as_str() == verdict.as_str() {
                    &c.shadow_agreements
                } else {
                    &c.shadow_disagreements
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            ctx.shadow = Some(shadow);
        }
        let escalation = decide::settle(verdict, call.arguments, ctx)?;
        let mut headers = Vec::new();
        if let Some(def) = snap.tool_def(route) {
            if stateless {
                params::check(def, call.arguments, req.head, req.buf)?;
            }
            headers = params::for_upstream(def, call.arguments);
        }
        headers.push((
            "Mcp-Name".to_owned(),
            protocol::encode_header_value(&route.tool).into_owned(),
        ));
        let (params, args_at) = self.forwarded_params(route, call, req.body.len(), ctx)?;
        ctx.reason = if ctx.policies.is_some() {
            Reason::AllowedByPolicy
        } else {
            Reason::Attached
        };
        Ok(Admitted {
            method: "tools/call",
            upstream: route.upstream,
            tool: Arc::clone(&route.tool),
            params,
            args_at,
            headers,
            escalation,
            filter: route.filter.clone(),
            progress: None,
        })
    }

    /// The `params` members forwarded, `"name":…,"arguments":…`, and where
    /// the arguments start in them.
    fn forwarded_params(
        &self,
        route: &Route,
        call: &ToolCall<'_>,
        size_hint: usize,
        ctx: &mut CallCtx,
    ) -> Result<(Vec<u8>, usize), Refusal> {
        let mut body = Vec::with_capacity(size_hint + 32);
        body.extend_from_slice(br#""name":"#);
        write_str(&route.tool, &mut body);
        body.extend_from_slice(br#","arguments":"#);
        let args_at = body.len();
        match (call.arguments, &route.args_filter) {
            // Data-loss rules: policy and the judge decided on the
            // arguments as sent; the upstream gets them filtered.
            (Some(a), Some(f)) => filter::apply_arguments(
                f,
                a,
                &mut self.inner_parser.borrow_mut(),
                &mut body,
                &mut ctx.redactions,
            )?,
            _ => write_arguments(call, &mut body),
        }
        Ok((body, args_at))
    }
}

/// The call's arguments as JSON (`{}` when it has none).
fn write_arguments(call: &ToolCall<'_>, out: &mut Vec<u8>) {
    match call.arguments {
        Some(a) => write_value(a, out),
        None => out.extend_from_slice(b"{}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use toolgate_core::audit::Reason;
    use toolgate_core::refusal::RefusalKind;

    use super::super::testing::{bot_key, gateway, with_request};
    use super::super::{CallCtx, Gateway, Plan};

    /// Runs phases 2 and 4–6 on a `tools/call` body; returns the forwarded
    /// params, or the refusal, and the record's reason.
    fn call(gw: &Gateway, extra_head: &str, body: &str) -> (Result<String, RefusalKind>, Reason) {
        let (snap, _) = gw.current();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             MCP-Protocol-Version: 2025-06-18{extra_head}",
            bot_key()
        );
        with_request(&head, body, |req| {
            let mut ctx = CallCtx::new(Instant::now(), None, false, Reason::Answered);
            let caller = gw.identify(&snap, req).unwrap();
            ctx.user = caller.user;
            ctx.customer = Some(caller.customer);
            // Handshake era: a live session of the agent.
            let sid = gw.new_session(caller.agent, 0);
            let head = format!("{head}\r\nMcp-Session-Id: {sid}");
            let planned = with_request(&head, body, |req| {
                gw.plan(&snap, caller.agent, req, &mut ctx)
            });
            let out = match planned {
                Ok(Plan::Forward(a)) => Ok(String::from_utf8(a.params).unwrap()),
                Ok(Plan::Answer(_)) => panic!("a tools/call is never answered by toolgate"),
                Err(r) => Err(r.kind),
            };
            (out, ctx.reason)
        })
    }

    fn body(tool: &str, args: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    }

    #[test]
    fn attached_tool_is_forwarded_under_its_upstream_name_with_the_checked_arguments() {
        let gw = gateway("", &[]);
        let (out, reason) = call(&gw, "", &body("crm__lookup", r#"{"id":"c-42"}"#));
        assert_eq!(
            out,
            Ok(r#""name":"lookup","arguments":{"id":"c-42"}"#.to_owned())
        );
        assert_eq!(reason, Reason::Attached);
    }

    #[test]
    fn unattached_and_unknown_tools_are_refused_alike() {
        let gw = gateway("", &[]);
        let (out, _) = call(&gw, "", &body("crm__delete", "{}"));
        assert_eq!(out, Err(RefusalKind::UnknownTool));
        let (out, _) = call(&gw, "", &body("nope", "{}"));
        assert_eq!(out, Err(RefusalKind::UnknownTool));
    }

    #[test]
    fn policy_decides_on_the_arguments_and_a_deny_keeps_the_engines_reason() {
        let gw = gateway(
            "[policies]\nfiles = []",
            &[r#"
                permit(principal, action, resource);
                @id("no-big-ids")
                forbid(principal, action == Toolgate::Action::"crm__lookup", resource)
                when { context.args.id == "c-big" };
            "#],
        );
        let (out, reason) = call(&gw, "", &body("crm__lookup", r#"{"id":"c-1"}"#));
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(reason, Reason::AllowedByPolicy);
        let (out, reason) = call(&gw, "", &body("crm__lookup", r#"{"id":"c-big"}"#));
        assert_eq!(out, Err(RefusalKind::PolicyDenied));
        assert_eq!(reason, Reason::ForbiddenByPolicy);
    }

    #[test]
    fn a_user_named_by_an_agent_not_acting_for_users_is_refused_before_policy() {
        let gw = gateway("", &[]);
        let (out, _) = call(
            &gw,
            "\r\nToolgate-On-Behalf-Of: alice",
            &body("crm__lookup", "{}"),
        );
        assert_eq!(out, Err(RefusalKind::UserAssertionRefused));
    }

    /// Allocations per `tools/call` in phases 2 and 4–6 once its decision
    /// is cached (the default audit of arguments, a redacted copy,
    /// included): a guard against the steady path growing more, counted on
    /// this thread only. Where they are (2026-12-07): the arguments'
    /// redacted copy for the record 10 (a parse, the detectors' walk), the
    /// admission 6 (among them the forwarded params), the decision cache's
    /// key 2, the JSON-RPC view and the request id 3.
    #[test]
    fn a_cached_decision_call_makes_a_bounded_number_of_allocations() {
        let gw = gateway(
            "[policies]\nfiles = []",
            &["permit(principal, action, resource) when { context.args.id != \"c-big\" };"],
        );
        let body = body("crm__lookup", r#"{"id":"c-42"}"#);
        let (snap, _) = gw.current();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             MCP-Protocol-Version: 2025-06-18",
            bot_key()
        );
        let caller = with_request(&head, &body, |req| gw.identify(&snap, req).unwrap().agent);
        let sid = gw.new_session(caller, 0);
        let head = format!("{head}\r\nMcp-Session-Id: {sid}");
        let run = || {
            with_request(&head, &body, |req| {
                let (planned, n) = crate::alloc_count::allocations(|| {
                    let mut ctx = CallCtx::new(Instant::now(), None, false, Reason::Answered);
                    let caller = gw.identify(&snap, req).unwrap();
                    ctx.user = caller.user;
                    ctx.customer = Some(caller.customer);
                    matches!(
                        gw.plan(&snap, caller.agent, req, &mut ctx),
                        Ok(Plan::Forward(_))
                    )
                });
                assert!(planned);
                n
            })
        };
        // The first call is decided by Cedar; the next ones find the
        // decision cached.
        let deciding = run();
        let steady = run();
        assert_eq!(
            run(),
            steady,
            "the steady path allocates the same every call"
        );
        assert!(
            deciding > steady + 20,
            "{deciding} then {steady}: the cache saves Cedar's allocations"
        );
        assert!(
            steady <= 21,
            "{steady} allocations per cached-decision call"
        );
    }
}
