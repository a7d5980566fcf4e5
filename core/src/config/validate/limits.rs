//! `[limits]`: each rule a rate or a quota, with selectors that name
//! tools and upstreams the configuration knows.

use super::super::*;
use crate::toolname::ToolNamer;

/// Checks `[limits]` against the upstreams' tool namer; the Redis the
/// replicas share, with `backend = "redis"`.
pub(crate) fn validate_limits(
    config: &Config,
    namer: &ToolNamer,
    base: &std::path::Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<RedisSetup> {
    let limits = &config.limits;
    if limits.max_counters < 16 {
        err(None, "`limits.max_counters` must be at least 16".to_owned());
    }
    let upstreams: Vec<&str> = config
        .upstream_entries
        .iter()
        .map(|u| u.name.get_ref().as_str())
        .collect();
    let agents: Vec<&str> = config
        .agents
        .iter()
        .map(|a| a.id.get_ref().as_str())
        .collect();
    if let Some(why) = limits.time_zone.as_deref().and_then(time_zone_problem) {
        err(None, format!("`limits.time_zone`: {why}"));
    }
    check_rules(&limits.rules, namer, &upstreams, &agents, err, at);
    let redis = match (limits.backend, &limits.redis) {
        (LimitsBackend::Local, None) => return None,
        (LimitsBackend::Local, Some(_)) => {
            err(
                None,
                "`[limits.redis]` is set but `limits.backend` is not `\"redis\"`".to_owned(),
            );
            return None;
        }
        (LimitsBackend::Redis, None) => {
            err(
                None,
                "`limits.backend = \"redis\"` needs `[limits.redis]` with its `url`".to_owned(),
            );
            return None;
        }
        (LimitsBackend::Redis, Some(r)) => r,
    };
    let line = at(&redis.url.span());
    let (host, port, tls, db) = match RedisSetup::parse_url(redis.url.get_ref()) {
        Ok(u) => u,
        Err(e) => {
            err(line, format!("`limits.redis.url`: {e}"));
            return None;
        }
    };
    if redis.lease == 0 || redis.replicas == 0 || redis.timeout_ms == 0 {
        err(
            line,
            "`limits.redis`: `lease`, `replicas` and `timeout_ms` must be above 0".to_owned(),
        );
    }
    let ca_file = redis.ca_file.as_ref().map(|c| base.join(c.get_ref()));
    if ca_file.is_some() && !tls {
        err(
            line,
            "`limits.redis.ca_file` is for a `rediss://` (TLS) URL".to_owned(),
        );
    }
    let password = redis
        .password
        .as_ref()
        .and_then(|p| super::admin::secret_source(p, base, "limits.redis.password", err));
    Some(RedisSetup {
        host,
        port,
        tls,
        db,
        ca_file,
        password,
        lease: redis.lease,
        replicas: redis.replicas,
        timeout: std::time::Duration::from_millis(redis.timeout_ms),
    })
}

/// What is wrong with the limit rules of a checked configuration (the
/// file's with the admin API's laid over them), one message per problem.
pub fn check_limit_rules(cfg: &ValidConfig) -> Vec<String> {
    let upstreams: Vec<&str> = cfg.upstreams.iter().map(|u| u.name()).collect();
    let agents: Vec<&str> = cfg
        .config
        .agents
        .iter()
        .map(|a| a.id.get_ref().as_str())
        .collect();
    let mut problems = Vec::new();
    check_rules(
        &cfg.config.limits.rules,
        &cfg.namer,
        &upstreams,
        &agents,
        &mut |_, m| problems.push(m),
        &|_: &std::ops::Range<usize>| None,
    );
    problems
}

fn check_rules(
    rules: &[LimitRuleConfig],
    namer: &ToolNamer,
    upstreams: &[&str],
    agents: &[&str],
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) {
    let mut seen: Vec<&str> = Vec::new();
    for r in rules {
        let id = r.id.get_ref();
        let line = at(&r.id.span());
        let mut bad = |m: String| err(line, format!("limit `{id}`: {m}"));
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            bad("the id must be letters, digits, `_`, `-` or `.`".into());
        }
        if seen.contains(&id.as_str()) {
            bad("the id is used twice".into());
        }
        seen.push(id);
        match (&r.rate, &r.quota) {
            (Some(rate), None) => {
                if !(rate.calls_per_s.is_finite() && rate.calls_per_s > 0.0) {
                    bad("`rate.calls_per_s` must be above 0".into());
                }
                if rate.burst == Some(0) {
                    bad("`rate.burst` must be above 0".into());
                }
                if !r.cost.is_empty() {
                    bad("`cost` weighs quota units; a rate counts calls".into());
                }
            }
            (None, Some(q)) => {
                if q.units == 0 {
                    bad("`quota.units` must be above 0".into());
                }
                if let Some(why) = q.time_zone.as_deref().and_then(time_zone_problem) {
                    bad(format!("`quota.time_zone`: {why}"));
                }
            }
            _ => bad("give exactly one of `rate` and `quota`".into()),
        }
        for (tool, units) in &r.cost {
            if *units == 0 {
                bad(format!("`cost` of `{tool}` must be above 0"));
            }
            if namer.route(tool).is_none() {
                bad(format!(
                    "`cost` names `{tool}`, which no upstream's prefix exposes"
                ));
            }
        }
        if let Some(t) = r.tool.as_deref().filter(|t| *t != "*") {
            if namer.route(t).is_none() {
                bad(format!(
                    "`tool = \"{t}\"` is no tool any upstream's prefix exposes"
                ));
            }
        }
        if let Some(u) = r.upstream.as_deref().filter(|u| *u != "*") {
            if !upstreams.contains(&u) {
                bad(format!("`upstream = \"{u}\"` is no configured upstream"));
            }
        }
        if let Some(a) = r.agent.as_deref().filter(|a| *a != "*") {
            if !agents.contains(&a) {
                bad(format!("`agent = \"{a}\"` is no configured agent"));
            }
        }
        for (key, v) in [("customer", &r.customer), ("user", &r.user)] {
            if let Some(why) = v
                .as_deref()
                .filter(|v| *v != "*")
                .and_then(|v| crate::identity::check_customer(v).err())
            {
                bad(format!("`{key}`: {why}"));
            }
        }
    }
}

/// Why `name` is not a time zone quota windows can follow: not an IANA
/// name the host's tz database (`/usr/share/zoneinfo`) has.
fn time_zone_problem(name: &str) -> Option<String> {
    if name == "UTC" {
        return None;
    }
    jiff::tz::TimeZone::get(name).err().map(|_| {
        format!("`{name}` is no time zone of this host's tz database (an IANA name such as `Europe/Paris`; Debian: `apt-get install tzdata`)")
    })
}
