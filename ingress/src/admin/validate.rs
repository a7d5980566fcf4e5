//! Checking a planned change in full before it is committed: document
//! shapes, references, upstreams, Cedar parse and validation.

use super::*;

impl AdminApi {
    /// Checks everything a commit needs besides preconditions: references
    /// to tools, keys, and that the policies parse and validate.
    pub(super) fn validate(
        &self,
        src: &Sources,
        next: &Arc<State>,
        changes: &[Change],
    ) -> Result<(), ApiError> {
        let candidate = Sources {
            control: Arc::clone(next),
            ..src.clone()
        };
        let in_use: Vec<(String, String)> = changes
            .iter()
            .filter(|c| c.kind == Kind::Credentials && c.new.is_none())
            .flat_map(|c| {
                next.upstreams_using(&c.id)
                    .into_iter()
                    .map(move |u| (c.id.clone(), u))
            })
            .collect();
        if let Some((credential, _)) = in_use.first() {
            let upstreams: Vec<&str> = in_use.iter().map(|(_, u)| u.as_str()).collect();
            return Err(ApiError::new(
                409,
                "credential_in_use",
                format!(
                    "credential `{credential}` is named by upstream(s) `{}`: change or delete them first (in the same transaction, or before)",
                    upstreams.join("`, `")
                ),
            )
            .with("upstreams", json!(upstreams)));
        }
        let (eff, skipped) = next.overlay(&src.file);
        if changes.iter().any(|c| c.kind == Kind::Limits) {
            // A stored rule that does not even become one is left out of
            // the overlay: refuse the write that made it so.
            let mut problems: Vec<String> = skipped
                .iter()
                .filter(|s| s.starts_with("limit `"))
                .cloned()
                .collect();
            problems.extend(toolgate_core::config::check_limit_rules(&eff));
            if !problems.is_empty() {
                return Err(ApiError::new(422, "invalid_limit", problems.join("; "))
                    .with("problems", json!(problems)));
            }
        }
        if changes.iter().any(|c| c.kind == Kind::Labels) {
            let problems = toolgate_core::config::validate::check_tool_labels(&eff.config);
            if !problems.is_empty() {
                return Err(ApiError::new(422, "invalid_labels", problems.join("; "))
                    .with("problems", json!(problems)));
            }
        }
        let mut problems = check_upstream_changes(&src.file, next, &eff, &skipped, changes);
        if problems.is_empty() {
            // Read what the shards will build clients from, so an
            // unreadable credential or CA file is refused now.
            // Upstreams written, and those naming a credential written.
            let mut read: Vec<String> = Vec::new();
            for c in changes {
                match c.new.as_ref().map(|e| &e.spec) {
                    Some(Spec::Upstream(_)) => read.push(c.id.clone()),
                    Some(Spec::Credential(_)) => read.extend(next.upstreams_using(&c.id)),
                    _ => {}
                }
            }
            read.sort();
            read.dedup();
            for id in &read {
                let Some(Spec::Upstream(spec)) = next.get(Kind::Upstreams, id).map(|e| &e.spec)
                else {
                    continue;
                };
                let source = next.credential_of(spec);
                if let Some(Err(e)) = eff
                    .upstream(id)
                    .map(|(_, u)| crate::shared::stored_parts(u, spec, source))
                {
                    problems.push(e);
                }
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::new(422, "invalid_upstream", problems.join("; "))
                .with("problems", json!(problems)));
        }
        let before = src.effective();
        let dangling = dangling_tools(&before, &eff, changes);
        if !dangling.is_empty() {
            let mut agents: Vec<&str> = dangling.iter().map(|(a, _)| a.as_str()).collect();
            agents.dedup();
            let ids: Vec<&str> = changes
                .iter()
                .filter(|c| c.kind == Kind::Upstreams)
                .map(|c| c.id.as_str())
                .collect();
            return Err(ApiError::new(
                409,
                "upstream_in_use",
                format!(
                    "upstream `{}` has tools attached to agent(s) `{}`: detach them first (in the same transaction, or before)",
                    ids.join("`, `"),
                    agents.join("`, `")
                ),
            )
            .with("agents", json!(agents))
            .with(
                "tools",
                json!(dangling.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>()),
            ));
        }
        let mut problems = check_references(&eff, &src.file, changes);
        let catalogs = self.shared.catalogs_for(&eff);
        for c in changes {
            let Some(Spec::Agent(a)) = c.new.as_ref().map(|e| &e.spec) else {
                continue;
            };
            use toolgate_core::config::validate::Attachment;
            for (kind, patterns) in [
                (Attachment::Prompt, &a.prompts),
                (Attachment::Resource, &a.resources),
            ] {
                for p in patterns {
                    let why = kind.problem(p, &eff.namer, |u| eff.upstream(u).is_some());
                    if let Some(why) = why {
                        problems.push(format!("agent `{}`: {why}", c.id));
                    }
                }
            }
            for t in &a.tools {
                let Some((up, tool)) = eff.namer.route(t) else {
                    continue;
                };
                if let Some(cat) = catalogs.get(up).and_then(Option::as_ref) {
                    if cat
                        .get(tool)
                        .is_none_or(|d| d.exposed.as_deref() != Some(t.as_str()))
                    {
                        let name = eff.upstreams.get(up).map(|u| u.name()).unwrap_or("?");
                        problems.push(format!(
                            "agent `{}`: tool `{t}` is not in upstream `{name}`'s tool catalog",
                            c.id
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::new(422, "invalid_reference", problems.join("; "))
                .with("problems", json!(problems)));
        }
        let snap = candidate.compile(&eff, &catalogs).map_err(|errs| {
            ApiError::new(422, "invalid_policy", errs.join("; ")).with("problems", json!(errs))
        })?;
        let touched: Vec<String> = changes
            .iter()
            .filter(|c| c.kind == Kind::Policies && c.new.is_some())
            .map(|c| {
                toolgate_control::state::policy_path(&c.id)
                    .display()
                    .to_string()
            })
            .collect();
        if !touched.is_empty() && catalogs.iter().all(Option::is_some) {
            if let Some(engine) = snap.engine.as_ref() {
                let schema = snap.cedar_schema(&eff);
                let shadow = snap
                    .shadow
                    .as_ref()
                    .map(|s| s.bundle().validate(schema.clone()));
                let errs: Vec<String> = engine
                    .bundle()
                    .validate(schema)
                    .into_iter()
                    .chain(shadow.into_iter().flatten())
                    .filter(|e| touched.contains(&e.file.display().to_string()))
                    .map(|e| e.to_string())
                    .collect();
                if !errs.is_empty() {
                    return Err(ApiError::new(422, "invalid_policy", errs.join("; "))
                        .with("problems", json!(errs)));
                }
            }
        }
        Ok(())
    }
}
