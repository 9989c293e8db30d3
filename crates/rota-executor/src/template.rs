//! Request body templates for `protocol: raw` (see the crate docs for the rules).

use chrono::{DateTime, SecondsFormat, Utc};
use rota_core::Dispatch;
use serde_json::Value;

/// The placeholder names a template may use, besides `params.KEY`.
pub const PLACEHOLDERS: &[&str] =
    &["run_id", "task", "attempt", "scheduled_at", "deadline", "shard.index", "shard.total", "report_url", "params"];

const KNOWN_LIST: &str = "run_id, task, attempt, scheduled_at, deadline, shard.index, shard.total, report_url, \
                          params, params.KEY";

/// Why a template cannot be rendered. Messages name the placeholder (never a param's value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{name}}` with a name that is not a known placeholder.
    #[error("unknown placeholder {{{{{0}}}}} (known: {KNOWN_LIST}; write \\{{{{ for a literal {{{{)")]
    UnknownPlaceholder(String),
    /// `{{params.KEY}}` where the run's params have no `KEY`.
    #[error("placeholder {{{{params.{0}}}}}: the run's params have no key {0:?}")]
    MissingParam(String),
    /// `{{` without a closing `}}`.
    #[error("unclosed placeholder at byte {0}: {{{{ without }}}} (write \\{{{{ for a literal {{{{)")]
    Unclosed(usize),
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a str),
    /// The trimmed text between `{{` and `}}`.
    Placeholder(&'a str),
}

fn parse(template: &str) -> Result<Vec<Segment<'_>>, TemplateError> {
    let mut segments = Vec::new();
    let mut pos = 0;
    while let Some(found) = template[pos..].find("{{") {
        let open = pos + found;
        if open > pos && template.as_bytes()[open - 1] == b'\\' {
            // `\{{` is a literal `{{`: keep the text before the backslash, then the braces.
            segments.push(Segment::Literal(&template[pos..open - 1]));
            segments.push(Segment::Literal("{{"));
            pos = open + 2;
            continue;
        }
        segments.push(Segment::Literal(&template[pos..open]));
        let inner_start = open + 2;
        let Some(len) = template[inner_start..].find("}}") else {
            return Err(TemplateError::Unclosed(open));
        };
        segments.push(Segment::Placeholder(template[inner_start..inner_start + len].trim()));
        pos = inner_start + len + 2;
    }
    segments.push(Segment::Literal(&template[pos..]));
    segments.retain(|s| *s != Segment::Literal(""));
    Ok(segments)
}

fn param_key(name: &str) -> Option<&str> {
    name.strip_prefix("params.").filter(|k| !k.is_empty())
}

/// Checks a template's syntax and placeholder names without a run (e.g. when a task is submitted). Any
/// `params.KEY` is accepted, since the params are only known per run.
pub fn check(template: &str) -> Result<(), TemplateError> {
    for segment in parse(template)? {
        if let Segment::Placeholder(name) = segment
            && param_key(name).is_none()
            && !PLACEHOLDERS.contains(&name)
        {
            return Err(TemplateError::UnknownPlaceholder(name.to_string()));
        }
    }
    Ok(())
}

/// Formats an instant exactly as it appears in the JSON run envelope (RFC 3339, UTC, `Z`).
fn instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A param's text: strings as they are, anything else JSON-encoded.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders `template` for one dispatch.
pub fn render(template: &str, dispatch: &Dispatch) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    for segment in parse(template)? {
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Placeholder(name) => {
                let text = match name {
                    "run_id" => dispatch.run_id.to_string(),
                    "task" => dispatch.task_key(),
                    "attempt" => dispatch.attempt.to_string(),
                    "scheduled_at" => instant(&dispatch.scheduled_at),
                    "deadline" => instant(&dispatch.deadline),
                    "shard.index" => dispatch.shard.index.to_string(),
                    "shard.total" => dispatch.shard.total.to_string(),
                    "report_url" => dispatch.report_url.clone().unwrap_or_default(),
                    "params" => Value::Object(dispatch.params.clone()).to_string(),
                    other => match param_key(other) {
                        Some(key) => match dispatch.params.get(key) {
                            Some(v) => value_text(v),
                            None => return Err(TemplateError::MissingParam(key.to_string())),
                        },
                        None => return Err(TemplateError::UnknownPlaceholder(other.to_string())),
                    },
                };
                out.push_str(&text);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rota_core::NodeEndpoint;
    use rota_proto::ShardInfo;
    use std::time::Duration;

    fn dispatch() -> Dispatch {
        Dispatch {
            run_id: 9_007_199_254_740_993,
            attempt: 3,
            namespace: "billing".into(),
            name: "nightly".into(),
            scheduled_at: "2026-11-25T02:30:00Z".parse().unwrap(),
            params: serde_json::from_str(r#"{"s":"a \"q\"","n":5,"b":true,"z":null,"o":{"k":[1,2]},"dotted.key":"d"}"#)
                .unwrap(),
            shard: ShardInfo { index: 2, total: 4 },
            deadline: "2026-11-25T02:40:00.250Z".parse().unwrap(),
            timeout: Duration::from_secs(1),
            target: rota_spec::Target::default(),
            node: Some(NodeEndpoint { id: "n".into(), address: "h:1".into() }),
            report_url: None,
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let d = dispatch();
        let t = "{{run_id}}|{{task}}|{{attempt}}|{{scheduled_at}}|{{deadline}}|{{shard.index}}/{{shard.total}}|\
                 [{{report_url}}]|{{params.s}}|{{params.n}}|{{params.b}}|{{params.z}}|{{params.o}}|{{params.dotted.key}}";
        assert_eq!(
            render(t, &d).unwrap(),
            "9007199254740993|billing/nightly|3|2026-11-25T02:30:00Z|2026-11-25T02:40:00.250Z|2/4|[]|a \"q\"|5|true|\
             null|{\"k\":[1,2]}|d"
        );
    }

    #[test]
    fn instants_match_the_envelope_format() {
        let d = dispatch();
        for t in [d.scheduled_at, d.deadline] {
            assert_eq!(Value::String(instant(&t)), serde_json::to_value(t).unwrap());
        }
    }

    #[test]
    fn whole_params_and_whitespace() {
        let mut d = dispatch();
        d.params = serde_json::from_str(r#"{"a":1}"#).unwrap();
        d.report_url = Some("http://s/api/v1/runs/1".into());
        assert_eq!(render("{{ params }} {{  report_url }}", &d).unwrap(), r#"{"a":1} http://s/api/v1/runs/1"#);
    }

    #[test]
    fn escapes_and_literals() {
        let d = dispatch();
        assert_eq!(render(r"\{{run_id}} {{attempt}}", &d).unwrap(), "{{run_id}} 3");
        assert_eq!(render("a } b { c }}", &d).unwrap(), "a } b { c }}");
        assert_eq!(render("", &d).unwrap(), "");
        assert_eq!(render("no placeholders", &d).unwrap(), "no placeholders");
        assert_eq!(render("{{attempt}}{{attempt}}", &d).unwrap(), "33");
    }

    #[test]
    fn rejects_unknown_missing_and_unclosed() {
        let d = dispatch();
        assert_eq!(render("x {{parms.s}}", &d), Err(TemplateError::UnknownPlaceholder("parms.s".into())));
        assert_eq!(render("{{}}", &d), Err(TemplateError::UnknownPlaceholder(String::new())));
        assert_eq!(render("{{params.}}", &d), Err(TemplateError::UnknownPlaceholder("params.".into())));
        assert_eq!(render("{{params.nope}}", &d), Err(TemplateError::MissingParam("nope".into())));
        assert_eq!(render("ab {{run_id", &d), Err(TemplateError::Unclosed(3)));
        let msg = render("{{shard}}", &d).unwrap_err().to_string();
        assert!(msg.starts_with("unknown placeholder {{shard}} (known: run_id"), "{msg}");
        assert_eq!(
            render("{{params.nope}}", &d).unwrap_err().to_string(),
            "placeholder {{params.nope}}: the run's params have no key \"nope\""
        );
    }

    #[test]
    fn check_accepts_any_param_key() {
        assert_eq!(check("{{params.anything}} {{task}} \\{{literal}}"), Ok(()));
        assert_eq!(check("{{tsk}}"), Err(TemplateError::UnknownPlaceholder("tsk".into())));
        assert_eq!(check("{{task"), Err(TemplateError::Unclosed(0)));
    }
}
