//! Parsing and validation: good documents, and every class of bad input
//! rejected with the offending field named.

use rota_spec::*;

const BASE: &str = r#"
apiVersion: rota/v1
kind: Task
metadata:
  namespace: billing
  name: nightly-report
  labels: {team: finance}
spec:
  schedule:
    cron: "0 30 2 * * *"
    timezone: Asia/Shanghai
  target:
    http: {path: /jobs/nightly-report}
  candidates:
    service: billing-worker
"#;

/// BASE with one line replaced (the `old` text must occur exactly once).
fn base_with(old: &str, new: &str) -> String {
    assert_eq!(BASE.matches(old).count(), 1, "{old:?} must occur once in BASE");
    BASE.replace(old, new)
}

/// Asserts that parsing fails with a parse error at `path` whose message contains `needle`.
fn assert_parse_err(doc: &str, path: &str, needle: &str) {
    match parse_str(doc) {
        Err(SpecError::Parse { path: p, message }) => {
            assert_eq!(p, path, "wrong path; message: {message}");
            assert!(message.contains(needle), "message {message:?} should contain {needle:?}");
            let shown = SpecError::Parse { path: p.clone(), message: message.clone() }.to_string();
            assert!(shown.starts_with(&format!("{path}: ")), "{shown}");
        }
        other => panic!("expected a parse error at {path}, got {other:?}"),
    }
}

/// Asserts that validation fails with (among others) an error at `path` containing `needle`.
fn assert_invalid(doc: &str, path: &str, needle: &str) -> ValidationErrors {
    match parse_str(doc) {
        Err(SpecError::Invalid(errs)) => {
            assert!(
                errs.iter().any(|e| e.path == path && e.message.contains(needle)),
                "expected {path}: ...{needle}..., got: {errs}"
            );
            assert!(errs.to_string().contains(&format!("{path}: ")));
            errs
        }
        other => panic!("expected validation errors at {path}, got {other:?}"),
    }
}

#[test]
fn base_document_parses_with_defaults() {
    let t = parse_yaml(BASE).unwrap();
    assert_eq!(t.key(), "billing/nightly-report");
    assert_eq!(t.api_version, "rota/v1");
    let s = t.spec.schedule.as_ref().unwrap();
    assert_eq!(s.misfire, MisfirePolicy::RunOnce);
    assert_eq!(s.concurrency, ConcurrencyPolicy::Allow);
    assert_eq!(s.catch_up_limit, 100);
    let h = t.spec.target.http.as_ref().unwrap();
    assert_eq!(h.method, HttpMethod::Post);
    assert_eq!(h.protocol, HttpProtocol::Rota);
    assert_eq!(t.spec.target.kind(), Some(TargetKind::Http));
    assert_eq!(t.spec.dispatch.mode, DispatchMode::Unicast);
    assert_eq!(t.spec.dispatch.load_balance, LoadBalance::RoundRobin);
    assert_eq!(t.spec.retry.max_attempts, 1);
    assert_eq!(t.spec.retry.backoff.kind, BackoffKind::Exponential);
    assert_eq!(t.spec.retry.backoff.initial, Duration::from_secs(1));
    assert_eq!(t.spec.retry.backoff.max, Duration::from_secs(60));
    assert_eq!(t.spec.retry.backoff.multiplier, 2.0);
    assert!(t.spec.after.is_empty());
}

#[test]
fn namespace_defaults_to_default() {
    let t = parse_yaml(&base_with("  namespace: billing\n", "")).unwrap();
    assert_eq!(t.key(), "default/nightly-report");
}

const FULL_YAML: &str = r#"
apiVersion: rota/v1
kind: Task
metadata: {namespace: billing, name: nightly-report, labels: {team: finance, example.com/tier: gold}, description: "Nightly"}
spec:
  schedule:
    cron: "0 30 2 * * *"
    timezone: Asia/Shanghai
    misfire: run_all
    catchUpLimit: 5
    concurrency: forbid
  target:
    http: {path: /jobs/nightly-report, method: PUT, protocol: raw, headers: {X-Team: finance}, body: '{"a":1}'}
  candidates:
    static: ["https://10.0.0.5:8443", "worker-1.internal:7071"]
  dispatch: {mode: multicast, loadBalance: consistent_hash, selector: {zone: a}, count: 2, hashKey: report}
  retry: {maxAttempts: 3, backoff: {kind: exponential, initial: 500ms, max: 1m, multiplier: 3, jitter: true}, switchNode: true}
  timeout: 10m
  after: [{task: billing/ingest, required: true}, {task: billing/fx, required: false}]
  quota: finance/reports
  plugins: [{name: zone-aware-lb, hook: before_dispatch, endpoint: "http://127.0.0.1:9000/hook"}]
  params: {report: daily, depth: 3, ratio: 0.5, flags: [a, b], nested: {x: null, y: true}}
"#;

const FULL_JSON: &str = r#"{
  "apiVersion": "rota/v1",
  "kind": "Task",
  "metadata": {"namespace": "billing", "name": "nightly-report",
               "labels": {"team": "finance", "example.com/tier": "gold"}, "description": "Nightly"},
  "spec": {
    "schedule": {"cron": "0 30 2 * * *", "timezone": "Asia/Shanghai", "misfire": "run_all",
                 "catchUpLimit": 5, "concurrency": "forbid"},
    "target": {"http": {"path": "/jobs/nightly-report", "method": "PUT", "protocol": "raw",
                        "headers": {"X-Team": "finance"}, "body": "{\"a\":1}"}},
    "candidates": {"static": ["https://10.0.0.5:8443", "worker-1.internal:7071"]},
    "dispatch": {"mode": "multicast", "loadBalance": "consistent_hash", "selector": {"zone": "a"},
                 "count": 2, "hashKey": "report"},
    "retry": {"maxAttempts": 3, "backoff": {"kind": "exponential", "initial": "500ms", "max": "1m",
              "multiplier": 3, "jitter": true}, "switchNode": true},
    "timeout": "10m",
    "after": [{"task": "billing/ingest", "required": true}, {"task": "billing/fx", "required": false}],
    "quota": "finance/reports",
    "plugins": [{"name": "zone-aware-lb", "hook": "before_dispatch", "endpoint": "http://127.0.0.1:9000/hook"}],
    "params": {"report": "daily", "depth": 3, "ratio": 0.5, "flags": ["a", "b"], "nested": {"x": null, "y": true}}
  }
}"#;

#[test]
fn yaml_and_json_parse_to_identical_values() {
    let y = parse_yaml(FULL_YAML).unwrap();
    let j = parse_json(FULL_JSON).unwrap();
    assert_eq!(y, j);
    assert_eq!(parse_str(FULL_JSON).unwrap(), y);
    assert_eq!(parse_str(FULL_YAML).unwrap(), y);
    // Spot-check a few values so equality is not vacuous.
    assert_eq!(y.spec.retry.backoff.initial, Duration::from_millis(500));
    assert_eq!(y.spec.retry.backoff.multiplier, 3.0);
    assert_eq!(y.spec.params["depth"], serde_json::json!(3));
    assert_eq!(y.spec.params["ratio"], serde_json::json!(0.5));
    assert_eq!(y.spec.params["nested"]["x"], serde_json::Value::Null);
    assert!(!y.spec.after[1].required);
    assert_eq!(y.spec.target.http.as_ref().unwrap().method, HttpMethod::Put);
}

#[test]
fn serialization_round_trips_through_both_formats() {
    let t = parse_yaml(FULL_YAML).unwrap();
    assert_eq!(parse_json(&t.to_json_pretty()).unwrap(), t);
    assert_eq!(parse_yaml(&t.to_yaml()).unwrap(), t);
    // Canonical output uses the document's names.
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["apiVersion"], "rota/v1");
    assert_eq!(v["spec"]["retry"]["maxAttempts"], 3);
    assert_eq!(v["spec"]["retry"]["backoff"]["initial"], "500ms");
    assert_eq!(v["spec"]["candidates"]["static"][1], "worker-1.internal:7071");
    assert_eq!(v["spec"]["dispatch"]["loadBalance"], "consistent_hash");
    assert_eq!(v["spec"]["schedule"]["misfire"], "run_all");
}

#[test]
fn lower_case_http_method_is_accepted() {
    let t =
        parse_yaml(&base_with("http: {path: /jobs/nightly-report}", "http: {path: /jobs/nightly-report, method: get}"))
            .unwrap();
    assert_eq!(t.spec.target.http.unwrap().method, HttpMethod::Get);
}

// ---------- malformed input ----------

#[test]
fn malformed_yaml_is_rejected_with_location() {
    let doc = base_with("kind: Task", "kind: [Task");
    match parse_yaml(&doc) {
        Err(SpecError::Parse { message, .. }) => {
            assert!(message.contains("line"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse_yaml(""), Err(SpecError::Parse { .. })));
    assert!(matches!(parse_yaml("just a string"), Err(SpecError::Parse { .. })));
}

#[test]
fn malformed_json_is_rejected_with_location() {
    match parse_str("{\"apiVersion\": \"rota/v1\",") {
        Err(SpecError::Parse { message, .. }) => {
            assert!(message.contains("line 1"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Trailing garbage after a complete document.
    let doc = format!("{FULL_JSON} xyz");
    assert!(matches!(parse_json(&doc), Err(SpecError::Parse { .. })));
}

#[test]
fn wrong_types_name_the_field() {
    assert_parse_err(
        &base_with("service: billing-worker", "service: billing-worker\n  retry: {maxAttempts: x}"),
        "spec.retry.maxAttempts",
        "invalid type: string \"x\", expected u32",
    );
    assert_parse_err(&base_with("labels: {team: finance}", "labels: [team]"), "metadata.labels", "invalid type");
    assert_parse_err(
        &base_with("service: billing-worker", "service: billing-worker\n  after: [{task: a/b, required: maybe}]"),
        "spec.after[0].required",
        "invalid type",
    );
    let json = FULL_JSON.replace("\"count\": 2", "\"count\": \"two\"");
    assert_parse_err(&json, "spec.dispatch.count", "invalid type");
    assert_parse_err(
        &base_with("timezone: Asia/Shanghai", "timezone: Asia/Shanghai\n    misfire: sometimes"),
        "spec.schedule.misfire",
        "unknown variant `sometimes`",
    );
}

#[test]
fn unknown_fields_are_rejected_top_level_and_nested() {
    assert_parse_err(&format!("{BASE}extra: 1\n"), "extra", "unknown field `extra`");
    assert_parse_err(
        &base_with("name: nightly-report", "name: nightly-report\n  nmae: x"),
        "metadata.nmae",
        "unknown field `nmae`",
    );
    assert_parse_err(
        &base_with("timezone: Asia/Shanghai", "timezone: Asia/Shanghai\n    jitter: 5s"),
        "spec.schedule.jitter",
        "unknown field `jitter`",
    );
    assert_parse_err(
        &base_with("http: {path: /jobs/nightly-report}", "http: {path: /jobs/nightly-report, verb: GET}"),
        "spec.target.http.verb",
        "unknown field `verb`",
    );
    let json = FULL_JSON.replace("\"switchNode\": true", "\"switchNode\": true, \"maxTries\": 2");
    assert_parse_err(&json, "spec.retry.maxTries", "unknown field `maxTries`");
    let json = FULL_JSON.replace("\"required\": false}", "\"required\": false, \"optional\": true}");
    assert_parse_err(&json, "spec.after[1].optional", "unknown field `optional`");
}

#[test]
fn missing_required_fields_are_named() {
    assert_parse_err(&base_with("kind: Task\n", ""), ROOT_PATH, "missing field `kind`");
    assert_parse_err(&base_with("  name: nightly-report\n", ""), "metadata", "missing field `name`");
    assert_parse_err(
        &base_with("http: {path: /jobs/nightly-report}", "container: {command: [x]}"),
        "spec.target.container",
        "missing field `image`",
    );
}

// ---------- durations ----------

#[test]
fn bad_durations_are_rejected_with_the_field() {
    for (bad, needle) in [
        ("0s", "greater than zero"),
        ("-5s", "negative"),
        ("soon", "expected a number"),
        ("10", "missing unit"),
        ("5y", "unknown unit"),
        ("\"\"", "empty"),
    ] {
        assert_parse_err(
            &base_with("service: billing-worker", &format!("service: billing-worker\n  timeout: {bad}")),
            "spec.timeout",
            needle,
        );
    }
    assert_parse_err(&base_with("cron: \"0 30 2 * * *\"", "every: 0ms"), "spec.schedule.every", "greater than zero");
    assert_parse_err(
        &base_with("service: billing-worker", "service: billing-worker\n  retry: {backoff: {initial: 1.5s}}"),
        "spec.retry.backoff.initial",
        "fractional",
    );
    // A number where a duration string is expected.
    assert_parse_err(
        &base_with("service: billing-worker", "service: billing-worker\n  timeout: 30"),
        "spec.timeout",
        "missing unit",
    );
    let json = FULL_JSON.replace("\"timeout\": \"10m\"", "\"timeout\": 30");
    assert_parse_err(&json, "spec.timeout", "invalid type: integer `30`");
}

// ---------- validation ----------

#[test]
fn api_version_kind_and_names() {
    assert_invalid(&base_with("rota/v1", "rota/v2"), "apiVersion", "rota/v1");
    assert_invalid(&base_with("kind: Task", "kind: Job"), "kind", "\"Task\"");
    assert_invalid(&base_with("name: nightly-report", "name: Nightly_Report"), "metadata.name", "not a valid name");
    assert_invalid(
        &base_with("name: nightly-report", &format!("name: {}", "a".repeat(64))),
        "metadata.name",
        "at most 63",
    );
    assert_invalid(&base_with("namespace: billing", "namespace: -billing"), "metadata.namespace", "not a valid name");
    assert_invalid(&base_with("name: nightly-report", "name: \"\""), "metadata.name", "must not be empty");
}

#[test]
fn labels_are_checked() {
    assert_invalid(&base_with("{team: finance}", "{\"bad key\": x}"), "metadata.labels.bad key", "label key");
    assert_invalid(
        &base_with("{team: finance}", &format!("{{team: {}}}", "v".repeat(64))),
        "metadata.labels.team",
        "at most 63",
    );
    assert_invalid(
        &base_with("{team: finance}", &format!("{{{}: x}}", "k".repeat(64))),
        &format!("metadata.labels.{}", "k".repeat(64)),
        "at most 63",
    );
    parse_yaml(&base_with("{team: finance}", "{rota.dev/tier: gold, a_b.c-d: \"\"}")).unwrap();
}

#[test]
fn invalid_cron_is_rejected() {
    assert_invalid(&base_with("0 30 2 * * *", "0 61 2 * * *"), "spec.schedule.cron", "invalid cron expression");
    assert_invalid(&base_with("0 30 2 * * *", "every day"), "spec.schedule.cron", "invalid cron expression");
    assert_invalid(&base_with("0 30 2 * * *", "* *"), "spec.schedule.cron", "got 2");
    assert_invalid(&base_with("0 30 2 * * *", "0 0 0 30 2 *"), "spec.schedule.cron", "never fires");
    // 5 and 7 field forms are accepted.
    parse_yaml(&base_with("0 30 2 * * *", "30 2 * * *")).unwrap();
    parse_yaml(&base_with("0 30 2 * * *", "0 30 2 * * * 2030")).unwrap();
}

#[test]
fn unknown_time_zone_is_rejected() {
    let errs = assert_invalid(
        &base_with("Asia/Shanghai", "Mars/Base"),
        "spec.schedule.timezone",
        "unknown time zone \"Mars/Base\"",
    );
    assert!(errs.to_string().contains("spec.schedule.timezone: unknown time zone \"Mars/Base\""), "{errs}");
}

#[test]
fn two_schedule_kinds_are_rejected() {
    assert_invalid(
        &base_with("cron: \"0 30 2 * * *\"", "cron: \"0 30 2 * * *\"\n    every: 5s"),
        "spec.schedule",
        "got cron, every",
    );
    assert_invalid(
        &base_with("cron: \"0 30 2 * * *\"", "manual: true\n    once: 2030-01-01T00:00:00Z"),
        "spec.schedule",
        "got once, manual",
    );
    assert_invalid(&base_with("cron: \"0 30 2 * * *\"", "manual: false"), "spec.schedule", "none is set");
    assert_invalid(
        &base_with("cron: \"0 30 2 * * *\"", "cron: \"0 30 2 * * *\"\n    startAt: 2030-01-01T00:00:00Z"),
        "spec.schedule.startAt",
        "only allowed together with every",
    );
    assert_invalid(
        &base_with("cron: \"0 30 2 * * *\"", "cron: \"0 30 2 * * *\"\n    catchUpLimit: 0"),
        "spec.schedule.catchUpLimit",
        "between 1 and",
    );
}

#[test]
fn schedule_required_unless_dependencies() {
    let no_schedule = base_with("  schedule:\n    cron: \"0 30 2 * * *\"\n    timezone: Asia/Shanghai\n", "");
    assert_invalid(&no_schedule, "spec.schedule", "required unless spec.after");
    let t = parse_yaml(&format!("{no_schedule}  after: [{{task: billing/ingest}}]\n")).unwrap();
    assert!(t.compiled_schedule().unwrap().is_none());
    assert!(t.spec.after[0].required);
}

#[test]
fn target_must_be_exactly_one() {
    assert_invalid(&base_with("    http: {path: /jobs/nightly-report}", "    {}"), "spec.target", "none is set").len();
    let two = base_with(
        "    http: {path: /jobs/nightly-report}",
        "    http: {path: /jobs/nightly-report}\n    container: {image: alpine}",
    );
    assert_invalid(&two, "spec.target", "got http, container");
    let t: Task = from_yaml(&two).unwrap();
    assert_eq!(t.spec.target.kind(), None);
}

#[test]
fn candidates_rules() {
    // Missing for http without url.
    assert_invalid(
        &base_with("  candidates:\n    service: billing-worker\n", ""),
        "spec.candidates",
        "required for an http target",
    );
    // Missing for grpc.
    let grpc = base_with("  candidates:\n    service: billing-worker\n", "")
        .replace("http: {path: /jobs/nightly-report}", "grpc: {}");
    assert_invalid(&grpc, "spec.candidates", "required for a grpc target");
    // Not needed with url.
    let with_url = base_with("  candidates:\n    service: billing-worker\n", "")
        .replace("http: {path: /jobs/nightly-report}", "http: {url: \"https://api.example.com/hook\", protocol: raw}");
    parse_yaml(&with_url).unwrap();
    // Forbidden for containers.
    assert_invalid(
        &base_with("http: {path: /jobs/nightly-report}", "container: {image: alpine}"),
        "spec.candidates",
        "not allowed for a container target",
    );
    // Exactly one of service/static.
    assert_invalid(
        &base_with("service: billing-worker", "service: billing-worker\n    static: [\"http://a:1\"]"),
        "spec.candidates",
        "got both",
    );
    assert_invalid(&base_with("service: billing-worker", "{}"), "spec.candidates", "none is set");
    // Static entries must be http(s) URLs or host:port.
    let errs = assert_invalid(
        &base_with(
            "service: billing-worker",
            "static: [\"http://127.0.0.1:7071\", \"ftp://x\", \"no-port\", \"host:99999\", \"[::1]:80\"]",
        ),
        "spec.candidates.static[1]",
        "http or https",
    );
    assert!(errs.has_path("spec.candidates.static[2]"), "{errs}");
    assert!(errs.has_path("spec.candidates.static[3]"), "{errs}");
    assert!(!errs.has_path("spec.candidates.static[0]"), "{errs}");
    assert!(!errs.has_path("spec.candidates.static[4]"), "{errs}");
}

#[test]
fn dependencies_self_and_duplicates() {
    let doc = format!(
        "{BASE}  after: [{{task: billing/nightly-report}}, {{task: billing/ingest}}, {{task: billing/ingest}}, {{task: nonamespace}}]\n"
    );
    let errs = assert_invalid(&doc, "spec.after[0].task", "cannot depend on itself");
    assert!(errs.iter().any(|e| e.path == "spec.after[2].task" && e.message.contains("duplicate")), "{errs}");
    assert!(errs.has_path("spec.after[3].task"), "{errs}");
    assert!(!errs.has_path("spec.after[1].task"), "{errs}");
}

#[test]
fn dispatch_and_plugins_rules() {
    let svc = "service: billing-worker";
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  dispatch: {{mode: multicast}}")),
        "spec.dispatch.mode",
        "selector or a count",
    );
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  dispatch: {{loadBalance: consistent_hash}}")),
        "spec.dispatch.hashKey",
        "required",
    );
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  dispatch: {{loadBalance: plugin}}")),
        "spec.dispatch.loadBalance",
        "select_nodes",
    );
    parse_yaml(&base_with(
        svc,
        &format!("{svc}\n  dispatch: {{loadBalance: plugin}}\n  plugins: [{{name: zone-lb, hook: select_nodes}}]"),
    ))
    .unwrap();
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  plugins: [{{name: \"\", hook: after_run}}]")),
        "spec.plugins[0].name",
        "must not be empty",
    );
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  dispatch: {{mode: broadcast, count: 0}}")),
        "spec.dispatch.count",
        ">= 1",
    );
    assert_invalid(&base_with(svc, &format!("{svc}\n  quota: \"\"")), "spec.quota", "must not be empty");
}

#[test]
fn retry_bounds() {
    let svc = "service: billing-worker";
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  retry: {{maxAttempts: 0}}")),
        "spec.retry.maxAttempts",
        "must be >= 1",
    );
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  retry: {{maxAttempts: 101}}")),
        "spec.retry.maxAttempts",
        "must be <= 100",
    );
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  retry: {{backoff: {{initial: 2m, max: 1m}}}}")),
        "spec.retry.backoff.max",
        "must be >= initial (2m)",
    );
    assert_invalid(
        &base_with(svc, &format!("{svc}\n  retry: {{backoff: {{multiplier: 0.5}}}}")),
        "spec.retry.backoff.multiplier",
        "must be >= 1",
    );
}

#[test]
fn container_fields_are_checked() {
    let doc = base_with("  candidates:\n    service: billing-worker\n", "").replace(
        "http: {path: /jobs/nightly-report}",
        "container: {image: \"\", env: {\"1BAD\": x}, workingDir: rel, resources: {cpu: 0, memory: 12Q}}",
    );
    let errs = parse_yaml(&doc).unwrap_err();
    let SpecError::Invalid(errs) = errs else { panic!("{errs:?}") };
    for p in [
        "spec.target.container.image",
        "spec.target.container.env.1BAD",
        "spec.target.container.workingDir",
        "spec.target.container.resources.cpu",
        "spec.target.container.resources.memory",
    ] {
        assert!(errs.has_path(p), "missing {p} in {errs}");
    }
}

#[test]
fn http_target_rules() {
    let errs = assert_invalid(
        &base_with("http: {path: /jobs/nightly-report}", "http: {path: jobs, body: x, headers: {\"bad header\": v}}"),
        "spec.target.http.path",
        "must start with '/'",
    );
    assert!(errs.has_path("spec.target.http.body"), "{errs}");
    assert!(errs.has_path("spec.target.http.headers.bad header"), "{errs}");
    assert_invalid(
        &base_with("  candidates:\n    service: billing-worker\n", "")
            .replace("http: {path: /jobs/nightly-report}", "http: {url: \"not a url\"}"),
        "spec.target.http.url",
        "not a valid URL",
    );
}

#[test]
fn http_auth_takes_secret_references() {
    let task = parse_str(&base_with(
        "http: {path: /jobs/nightly-report}",
        "http: {path: /x, protocol: raw, auth: {bearer: {secretRef: billing-token}}}",
    ))
    .unwrap();
    let auth = task.spec.target.http.as_ref().unwrap().auth.clone().unwrap();
    assert_eq!(auth.bearer, Some(BearerAuth { secret_ref: "billing-token".into() }));
    assert_eq!(auth.secret_refs(), vec!["billing-token"]);
    // Round trip keeps the camelCase shape.
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(json["spec"]["target"]["http"]["auth"], serde_json::json!({"bearer": {"secretRef": "billing-token"}}));

    let task = parse_str(&base_with(
        "http: {path: /jobs/nightly-report}",
        "http: {path: /x, auth: {basic: {username: svc, passwordRef: svc.pw}}}",
    ))
    .unwrap();
    assert_eq!(task.spec.target.http.unwrap().auth.unwrap().basic.unwrap().username, "svc");
    let task = parse_str(&base_with(
        "http: {path: /jobs/nightly-report}",
        "http: {path: /x, auth: {header: {name: X-Api-Key, valueRef: KEY_1}}}",
    ))
    .unwrap();
    assert_eq!(task.spec.target.http.unwrap().auth.unwrap().header.unwrap().name, "X-Api-Key");
}

#[test]
fn http_auth_is_checked_with_field_paths() {
    let with =
        |auth: &str| base_with("http: {path: /jobs/nightly-report}", &format!("http: {{path: /x, auth: {auth}}}"));
    assert_parse_err(&with("{bearer: {secret: x}}"), "spec.target.http.auth.bearer.secret", "unknown field `secret`");
    assert_parse_err(&with("{token: {secretRef: x}}"), "spec.target.http.auth.token", "unknown field `token`");
    assert_invalid(
        &with("{bearer: {secretRef: x}, basic: {username: u, passwordRef: p}}"),
        "spec.target.http.auth",
        "exactly one of bearer, basic, header must be set (got 2)",
    );
    assert_invalid(&with("{}"), "spec.target.http.auth", "(got 0)");
    assert_invalid(
        &with("{bearer: {secretRef: \"../etc/passwd\"}}"),
        "spec.target.http.auth.bearer.secretRef",
        "not a valid secret name",
    );
    assert_invalid(
        &with("{basic: {username: \"a:b\", passwordRef: p}}"),
        "spec.target.http.auth.basic.username",
        "':'",
    );
    assert_invalid(
        &with("{basic: {username: u, passwordRef: \"\"}}"),
        "spec.target.http.auth.basic.passwordRef",
        "secret name",
    );
    assert_invalid(
        &with("{header: {name: \"bad name\", valueRef: k}}"),
        "spec.target.http.auth.header.name",
        "header name",
    );
    assert_invalid(
        &with("{header: {name: Content-Length, valueRef: k}}"),
        "spec.target.http.auth.header.name",
        "managed by Rota",
    );
    assert_invalid(
        &base_with(
            "http: {path: /jobs/nightly-report}",
            "http: {path: /x, headers: {Authorization: inline}, auth: {bearer: {secretRef: t}}}",
        ),
        "spec.target.http.headers.Authorization",
        "cannot be combined with auth.bearer",
    );
}

#[test]
fn multiple_errors_are_reported_together() {
    let doc = r#"
apiVersion: rota/v2
kind: Task
metadata: {namespace: Bad_NS, name: x}
spec:
  schedule: {cron: "nope", every: 5s, timezone: Mars/Base}
  target: {}
  retry: {maxAttempts: 0, backoff: {initial: 1m, max: 1s}}
  after: [{task: Bad_NS/x}, {task: a/b}, {task: a/b}]
"#;
    let Err(SpecError::Invalid(errs)) = parse_yaml(doc) else { panic!("expected validation errors") };
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "apiVersion",
        "metadata.namespace",
        "spec.schedule",
        "spec.schedule.cron",
        "spec.schedule.timezone",
        "spec.target",
        "spec.retry.maxAttempts",
        "spec.retry.backoff.max",
        "spec.after[0].task",
        "spec.after[2].task",
    ] {
        assert!(paths.contains(&p), "missing {p} in {paths:?}");
    }
    let shown = SpecError::Invalid(errs.clone()).to_string();
    assert!(shown.contains("spec.retry.maxAttempts: must be >= 1"), "{shown}");
    assert!(shown.contains("; "), "{shown}");
}

#[test]
fn validate_can_be_called_on_constructed_tasks() {
    let mut t = parse_yaml(BASE).unwrap();
    assert!(t.validate().is_ok());
    t.spec.timeout = Some(Duration::new(std::time::Duration::ZERO));
    t.spec.retry.max_attempts = 0;
    let errs = t.validate().unwrap_err();
    assert!(errs.has_path("spec.timeout"));
    assert!(errs.has_path("spec.retry.maxAttempts"));
    assert_eq!(
        errs.iter().find(|e| e.path == "spec.retry.maxAttempts").unwrap().to_string(),
        "spec.retry.maxAttempts: must be >= 1"
    );
}

// ---------- multi-document YAML ----------

#[test]
fn multi_document_yaml() {
    let a = BASE;
    let b = base_with("name: nightly-report", "name: second");
    let stream = format!("---{a}---\n{b}---\n");
    let tasks = parse_yaml_documents(&stream).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].key(), "billing/nightly-report");
    assert_eq!(tasks[1].key(), "billing/second");

    let bad = format!("{a}---\n{}", base_with("rota/v1", "rota/v9"));
    match parse_yaml_documents(&bad) {
        Err(SpecError::Invalid(errs)) => {
            assert!(errs.has_path("documents[1].apiVersion"), "{errs}")
        }
        other => panic!("{other:?}"),
    }
    let bad = format!("{a}---\n{}", base_with("kind: Task", "kind: Task\nextra: 1"));
    match parse_yaml_documents(&bad) {
        Err(SpecError::Parse { path, .. }) => assert_eq!(path, "documents[1].extra"),
        other => panic!("{other:?}"),
    }
    let bad = format!("{a}---\nkind: [\n");
    match parse_yaml_documents(&bad) {
        Err(SpecError::Parse { path, .. }) => assert_eq!(path, "documents[1]"),
        other => panic!("{other:?}"),
    }
}

// ---------- DAG ----------

#[test]
fn cycles_across_tasks_are_found() {
    let mk = |name: &str, deps: &[&str]| {
        let mut t = parse_yaml(&base_with("name: nightly-report", &format!("name: {name}"))).unwrap();
        t.spec.after = deps.iter().map(|d| Dependency { task: d.to_string(), required: true }).collect();
        t.validate().unwrap();
        t
    };
    let ok = [mk("a", &["billing/b"]), mk("b", &["billing/c"]), mk("c", &[])];
    assert!(check_tasks_acyclic(&ok).is_ok());
    let order = dag::topological_order(&ok).unwrap();
    let pos = |k: &str| order.iter().position(|x| x == k).unwrap();
    assert!(pos("billing/c") < pos("billing/b") && pos("billing/b") < pos("billing/a"));

    let cyclic = [mk("a", &["billing/b"]), mk("b", &["billing/c"]), mk("c", &["billing/a"])];
    let e = check_tasks_acyclic(&cyclic).unwrap_err();
    assert_eq!(e.to_string(), "dependency cycle: billing/a -> billing/b -> billing/c -> billing/a");
}

// ---------- examples ----------

#[test]
fn every_example_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tasks");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let task = parse_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(task.compiled_schedule().unwrap().is_some(), "{}", path.display());
        n += 1;
    }
    assert!(n >= 3, "expected at least 3 examples in {}", dir.display());
}
