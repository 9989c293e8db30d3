//! Semantic validation of a [`Task`]; every problem is collected.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ValidationErrors;
use crate::types::*;

/// Maximum length of a DNS label (namespace, task name).
pub const MAX_NAME_LEN: usize = 63;
const MAX_LABEL_PREFIX_LEN: usize = 253;
const MAX_DESCRIPTION_LEN: usize = 4096;

/// Checks a DNS-label-like name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, 1..=63 characters.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters (got {})", s.len()));
    }
    let ok_chars = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || s.starts_with('-') || s.ends_with('-') {
        return Err(format!(
            "{s:?} is not a valid name: use lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a task key `namespace/name`.
pub fn check_task_key(s: &str) -> Result<(), String> {
    let Some((ns, name)) = s.split_once('/') else {
        return Err(format!("{s:?} must be a task key of the form namespace/name"));
    };
    check_dns_label(ns).map_err(|e| format!("namespace of {s:?}: {e}"))?;
    check_dns_label(name).map_err(|e| format!("name of {s:?}: {e}"))?;
    Ok(())
}

/// Checks a label key: `[prefix/]name`, name 1..=63 of `[A-Za-z0-9._-]`, prefix up to 253.
pub fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let chars_ok = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() {
        return Err(format!("label key {k:?}: name part must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("label key {k:?}: name part must be at most {MAX_NAME_LEN} characters"));
    }
    if !chars_ok(name) {
        return Err(format!("label key {k:?}: use letters, digits, '.', '_', '-' (with an optional 'prefix/')"));
    }
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > MAX_LABEL_PREFIX_LEN || !chars_ok(p))
    {
        return Err(format!(
            "label key {k:?}: prefix must be 1..={MAX_LABEL_PREFIX_LEN} characters of letters, digits, '.', '_', '-'"
        ));
    }
    Ok(())
}

/// Checks a label value: at most 63 characters, no control characters.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.chars().count() > MAX_NAME_LEN {
        return Err(format!("label value must be at most {MAX_NAME_LEN} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err("label value must not contain control characters".into());
    }
    Ok(())
}

fn check_labels(errs: &mut ValidationErrors, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if let Err(e) = check_label_key(k) {
            errs.push(format!("{path}.{k}"), e);
        }
        if let Err(e) = check_label_value(v) {
            errs.push(format!("{path}.{k}"), e);
        }
    }
}

fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 128;

/// Checks a secret reference: 1..=128 of `[A-Za-z0-9_.-]`, starting with a letter or digit (so it is a safe
/// file name and maps to an environment variable).
pub fn check_secret_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SECRET_NAME_LEN
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid secret name: use 1 to {MAX_SECRET_NAME_LEN} letters, digits, '_', '-', '.', \
             starting with a letter or digit"
        ))
    }
}

/// Headers an `auth` may not name, and that `headers` may not set next to an `auth` that sets them.
const AUTH_RESERVED_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "upgrade", "host"];

fn check_http_auth(errs: &mut ValidationErrors, p: &str, auth: &HttpAuth, headers: &BTreeMap<String, String>) {
    let set = [auth.bearer.is_some(), auth.basic.is_some(), auth.header.is_some()].iter().filter(|b| **b).count();
    if set != 1 {
        errs.push(p, format!("exactly one of bearer, basic, header must be set (got {set})"));
    }
    let mut sent = Vec::new();
    if let Some(b) = &auth.bearer {
        if let Err(e) = check_secret_name(&b.secret_ref) {
            errs.push(format!("{p}.bearer.secretRef"), e);
        }
        sent.push(("bearer", "authorization".to_string()));
    }
    if let Some(b) = &auth.basic {
        if b.username.is_empty() {
            errs.push(format!("{p}.basic.username"), "must not be empty");
        } else if b.username.contains(':') || b.username.chars().any(char::is_control) {
            errs.push(format!("{p}.basic.username"), "must not contain ':' or control characters");
        }
        if let Err(e) = check_secret_name(&b.password_ref) {
            errs.push(format!("{p}.basic.passwordRef"), e);
        }
        sent.push(("basic", "authorization".to_string()));
    }
    if let Some(h) = &auth.header {
        if !is_header_token(&h.name) {
            errs.push(format!("{p}.header.name"), format!("{:?} is not a valid HTTP header name", h.name));
        } else if AUTH_RESERVED_HEADERS.contains(&h.name.to_ascii_lowercase().as_str()) {
            errs.push(format!("{p}.header.name"), format!("{:?} is managed by Rota and cannot be set", h.name));
        }
        if let Err(e) = check_secret_name(&h.value_ref) {
            errs.push(format!("{p}.header.valueRef"), e);
        }
        sent.push(("header", h.name.to_ascii_lowercase()));
    }
    let parent = p.trim_end_matches(".auth");
    for name in headers.keys() {
        if let Some((kind, _)) = sent.iter().find(|(_, h)| *h == name.to_ascii_lowercase()) {
            errs.push(
                format!("{parent}.headers.{name}"),
                format!("cannot be combined with auth.{kind}, which sets it"),
            );
        }
    }
}

/// Checks an absolute http(s) URL with a host.
pub fn check_http_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("{s:?} must use http or https"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(u)
}

/// Checks a static candidate: an http(s) URL or `host:port`.
pub fn check_candidate_address(s: &str) -> Result<(), String> {
    if s.contains("://") {
        return check_http_url(s).map(|_| ());
    }
    let bad = || format!("{s:?} must be an http(s) URL or host:port");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() {
        return Err(bad());
    }
    // Reuse the URL parser for the host syntax (IPv6 must be bracketed).
    check_http_url(&format!("http://{host}:{port}")).map(|_| ()).map_err(|_| bad())
}

fn non_blank(errs: &mut ValidationErrors, path: &str, s: &str) {
    if s.trim().is_empty() {
        errs.push(path, "must not be empty");
    }
}

impl Task {
    /// Checks every rule of the v1 spec and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if self.api_version != API_VERSION {
            errs.push("apiVersion", format!("must be {API_VERSION:?} (got {:?})", self.api_version));
        }
        if self.kind != KIND {
            errs.push("kind", format!("must be {KIND:?} (got {:?})", self.kind));
        }
        validate_metadata(&mut errs, &self.metadata);
        validate_spec(&mut errs, &self.spec, &self.key());
        errs.into_result()
    }
}

fn validate_metadata(errs: &mut ValidationErrors, m: &Metadata) {
    if let Err(e) = check_dns_label(&m.namespace) {
        errs.push("metadata.namespace", e);
    }
    if let Err(e) = check_dns_label(&m.name) {
        errs.push("metadata.name", e);
    }
    check_labels(errs, "metadata.labels", &m.labels);
    if let Some(d) = &m.description
        && d.len() > MAX_DESCRIPTION_LEN
    {
        errs.push("metadata.description", format!("must be at most {MAX_DESCRIPTION_LEN} bytes"));
    }
}

fn validate_spec(errs: &mut ValidationErrors, s: &TaskSpec, self_key: &str) {
    match &s.schedule {
        Some(schedule) => {
            if let Err(e) = schedule.compile() {
                errs.extend(e);
            }
        }
        None if s.after.is_empty() => {
            errs.push("spec.schedule", "required unless spec.after lists at least one dependency")
        }
        None => {}
    }
    validate_target(errs, s);
    validate_dispatch(errs, s);
    validate_retry(errs, &s.retry);
    if let Some(t) = s.timeout
        && t.is_zero()
    {
        errs.push("spec.timeout", "must be greater than zero");
    }
    let mut seen = BTreeSet::new();
    for (i, dep) in s.after.iter().enumerate() {
        let path = format!("spec.after[{i}].task");
        if let Err(e) = check_task_key(&dep.task) {
            errs.push(path, e);
        } else if dep.task == self_key {
            errs.push(path, format!("a task cannot depend on itself ({self_key})"));
        } else if !seen.insert(dep.task.as_str()) {
            errs.push(path, format!("duplicate dependency on {}", dep.task));
        }
    }
    if let Some(q) = &s.quota {
        if q.trim().is_empty() {
            errs.push("spec.quota", "must not be empty");
        } else if q.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errs.push("spec.quota", "must not contain whitespace");
        }
    }
    let mut select_nodes = 0;
    for (i, p) in s.plugins.iter().enumerate() {
        non_blank(errs, &format!("spec.plugins[{i}].name"), &p.name);
        if let Some(ep) = &p.endpoint
            && let Err(e) = check_http_url(ep)
        {
            errs.push(format!("spec.plugins[{i}].endpoint"), e);
        }
        if p.hook == PluginHook::SelectNodes {
            select_nodes += 1;
            if select_nodes == 2 {
                errs.push(format!("spec.plugins[{i}].hook"), "at most one plugin may use hook select_nodes");
            }
        }
    }
}

fn validate_target(errs: &mut ValidationErrors, s: &TaskSpec) {
    let kinds = s.target.kinds_set();
    match kinds.len() {
        0 => errs.push("spec.target", "exactly one of http, grpc, container must be set (none is set)"),
        1 => {}
        _ => errs.push(
            "spec.target",
            format!(
                "exactly one of http, grpc, container must be set (got {})",
                kinds.iter().map(TargetKind::as_str).collect::<Vec<_>>().join(", ")
            ),
        ),
    }

    let mut needs_candidates = false;
    let mut forbids_candidates = None;
    if let Some(h) = &s.target.http {
        let p = "spec.target.http";
        if let Some(path) = &h.path
            && !path.starts_with('/')
        {
            errs.push(format!("{p}.path"), "must start with '/'");
        }
        match &h.url {
            Some(url) => {
                if let Err(e) = check_http_url(url) {
                    errs.push(format!("{p}.url"), e);
                }
                if h.path.is_some() {
                    errs.push(format!("{p}.path"), "cannot be combined with url");
                }
                forbids_candidates = Some("an http target with url");
            }
            None => needs_candidates = true,
        }
        if h.body.is_some() && h.protocol != HttpProtocol::Raw {
            errs.push(format!("{p}.body"), "only allowed with protocol: raw");
        }
        for name in h.headers.keys() {
            if !is_header_token(name) {
                errs.push(format!("{p}.headers.{name}"), format!("{name:?} is not a valid HTTP header name"));
            }
        }
        if let Some(auth) = &h.auth {
            check_http_auth(errs, &format!("{p}.auth"), auth, &h.headers);
        }
    }
    if let Some(g) = &s.target.grpc {
        needs_candidates = true;
        if let Some(svc) = &g.service {
            non_blank(errs, "spec.target.grpc.service", svc);
        }
        if let Some(m) = &g.method {
            non_blank(errs, "spec.target.grpc.method", m);
        }
    }
    if let Some(c) = &s.target.container {
        let p = "spec.target.container";
        forbids_candidates = Some("a container target");
        non_blank(errs, &format!("{p}.image"), &c.image);
        if c.image.chars().any(char::is_whitespace) {
            errs.push(format!("{p}.image"), "must not contain whitespace");
        }
        for k in c.env.keys() {
            let ok = k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                errs.push(
                    format!("{p}.env.{k}"),
                    format!("{k:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
                );
            }
        }
        if let Some(wd) = &c.working_dir
            && !wd.starts_with('/')
        {
            errs.push(format!("{p}.workingDir"), "must be an absolute path");
        }
        if let Some(r) = &c.resources {
            if let Some(cpu) = r.cpu
                && cpu.millicores() == 0
            {
                errs.push(format!("{p}.resources.cpu"), "must be greater than zero");
            }
            if let Some(m) = &r.memory
                && let Err(e) = crate::quantity::parse_memory(m)
            {
                errs.push(format!("{p}.resources.memory"), e);
            }
        }
        if let Some(n) = &c.network {
            non_blank(errs, &format!("{p}.network"), n);
        }
        check_labels(errs, &format!("{p}.labels"), &c.labels);
    }

    match &s.candidates {
        None => {
            if needs_candidates && kinds.len() == 1 {
                let what = if s.target.http.is_some() { "an http target without url" } else { "a grpc target" };
                errs.push("spec.candidates", format!("required for {what} (set service or static)"));
            }
        }
        Some(c) => {
            if let Some(what) = forbids_candidates {
                errs.push("spec.candidates", format!("not allowed for {what}"));
            }
            match (&c.service, &c.r#static) {
                (Some(_), Some(_)) => {
                    errs.push("spec.candidates", "exactly one of service, static must be set (got both)")
                }
                (None, None) => {
                    errs.push("spec.candidates", "exactly one of service, static must be set (none is set)")
                }
                _ => {}
            }
            if let Some(svc) = &c.service
                && let Err(e) = check_dns_label(svc)
            {
                errs.push("spec.candidates.service", e);
            }
            if let Some(list) = &c.r#static {
                if list.is_empty() {
                    errs.push("spec.candidates.static", "must list at least one node");
                }
                for (i, addr) in list.iter().enumerate() {
                    if let Err(e) = check_candidate_address(addr) {
                        errs.push(format!("spec.candidates.static[{i}]"), e);
                    }
                }
            }
        }
    }
}

fn validate_dispatch(errs: &mut ValidationErrors, s: &TaskSpec) {
    let d = &s.dispatch;
    if d.count == Some(0) {
        errs.push("spec.dispatch.count", "must be >= 1");
    }
    if d.success != crate::SuccessPolicy::All && d.mode == DispatchMode::Unicast {
        errs.push("spec.dispatch.success", "only meaningful with mode multicast, broadcast or sharded");
    }
    if d.mode == DispatchMode::Multicast && d.selector.is_empty() && d.count.is_none() {
        errs.push("spec.dispatch.mode", "multicast needs a selector or a count");
    }
    check_labels(errs, "spec.dispatch.selector", &d.selector);
    match d.load_balance {
        LoadBalance::ConsistentHash => match &d.hash_key {
            None => errs.push("spec.dispatch.hashKey", "required with loadBalance: consistent_hash"),
            Some(k) => non_blank(errs, "spec.dispatch.hashKey", k),
        },
        LoadBalance::Plugin => {
            if !s.plugins.iter().any(|p| p.hook == PluginHook::SelectNodes) {
                errs.push("spec.dispatch.loadBalance", "plugin needs an entry in spec.plugins with hook: select_nodes");
            }
        }
        _ => {
            if d.hash_key.is_some() {
                errs.push("spec.dispatch.hashKey", "only allowed with loadBalance: consistent_hash");
            }
        }
    }
}

fn validate_retry(errs: &mut ValidationErrors, r: &Retry) {
    if r.max_attempts < 1 {
        errs.push("spec.retry.maxAttempts", "must be >= 1");
    } else if r.max_attempts > Retry::MAX_ATTEMPTS {
        errs.push("spec.retry.maxAttempts", format!("must be <= {}", Retry::MAX_ATTEMPTS));
    }
    let b = &r.backoff;
    if b.initial.is_zero() {
        errs.push("spec.retry.backoff.initial", "must be greater than zero");
    }
    if b.max.is_zero() {
        errs.push("spec.retry.backoff.max", "must be greater than zero");
    } else if b.max < b.initial {
        errs.push("spec.retry.backoff.max", format!("must be >= initial ({})", b.initial));
    }
    if !b.multiplier.is_finite() || b.multiplier < 1.0 {
        errs.push("spec.retry.backoff.multiplier", "must be >= 1");
    } else if b.multiplier > 100.0 {
        errs.push("spec.retry.backoff.multiplier", "must be <= 100");
    }
}

impl Retry {
    /// Delay to wait before attempt number `attempt` (1-based; attempt 1 is the
    /// first run and gets no delay).
    ///
    /// * `fixed`: `initial`.
    /// * `exponential`: `initial * multiplier^(attempt - 2)`.
    ///
    /// Both are capped at `max`. With `jitter: true` the delay is scaled into
    /// `[delay/2, delay]` by `jitter_unit` (a caller-supplied random number in
    /// `0..=1`, clamped; NaN counts as 0), so the crate stays deterministic.
    pub fn delay_before_attempt(&self, attempt: u32, jitter_unit: f64) -> std::time::Duration {
        if attempt <= 1 {
            return std::time::Duration::ZERO;
        }
        let b = &self.backoff;
        let initial = b.initial.as_std();
        let max = b.max.as_std().max(initial);
        let base = match b.kind {
            BackoffKind::Fixed => initial,
            BackoffKind::Exponential => {
                let mult = if b.multiplier.is_finite() && b.multiplier >= 1.0 { b.multiplier } else { 1.0 };
                let exp = i32::try_from(attempt - 2).unwrap_or(i32::MAX);
                let secs = initial.as_secs_f64() * mult.powi(exp);
                if !secs.is_finite() || secs >= max.as_secs_f64() {
                    max
                } else {
                    std::time::Duration::from_secs_f64(secs).min(max)
                }
            }
        }
        .min(max);
        if !b.jitter {
            return base;
        }
        let u = if jitter_unit.is_nan() { 0.0 } else { jitter_unit.clamp(0.0, 1.0) };
        base.mul_f64(0.5 + 0.5 * u)
    }
}
