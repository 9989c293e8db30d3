//! The dispatch seam without a transport: routing, failures, panics, admission.

use chrono::Utc;
use rota_proto::{ExecutorProtocol, ResultStatus, RunEnvelope, RunResult, ShardInfo};
use serde_json::{Map, Value, json};

use super::*;

fn envelope(task: &str, params: Value) -> RunEnvelope {
    let Value::Object(params) = params else { panic!("params must be an object") };
    RunEnvelope {
        run_id: "7".into(),
        task: task.into(),
        attempt: 1,
        scheduled_at: Utc::now(),
        params,
        shard: ShardInfo { index: 2, total: 4 },
        deadline: Utc::now() + chrono::Duration::seconds(30),
        report_url: None,
    }
}

fn node() -> ExecutorNode {
    ExecutorNode::builder("svc")
        .id("n1")
        .handler("by-path", |_ctx| async { Ok(json!("by-path")) })
        .handler("by-name", |_ctx| async { Ok(json!("by-name")) })
        .handler("ns/by-key", |_ctx| async { Ok(json!("by-key")) })
        .handler("ctx", |ctx: RunContext| async move {
            let n: Option<u64> = ctx.param("n")?;
            Ok(json!({
                "run": ctx.run_id(), "task": ctx.task(), "ns": ctx.namespace(), "name": ctx.task_name(),
                "shard": [ctx.shard_index(), ctx.shard_total()], "n": n, "node": ctx.node_id(),
            }))
        })
        .handler("fails", |_ctx| async {
            let e: Result<Value, std::io::Error> = Err(std::io::Error::other("disk full"));
            e?;
            Ok(Value::Null)
        })
        .handler("fails-with-output", |_ctx| async {
            Err(HandlerError::msg("partial").with_output(json!({"done": 3})))
        })
        .handler("panics", |_ctx| async { panic!("boom {}", 42) })
        .handler("nothing", |_ctx| async { Ok(Value::Null) })
        .build()
        .unwrap()
}

fn completed(answer: Answer) -> RunResult {
    match answer {
        Answer::Completed(r) => r,
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test]
async fn routes_by_path_segment_then_task_name_then_key() {
    let node = node();
    let out = |a: Answer| completed(a).output.unwrap();
    assert_eq!(out(node.handle(envelope("x/by-name", json!({})), Some("/jobs/by-path")).await), json!("by-path"));
    assert_eq!(out(node.handle(envelope("x/by-name", json!({})), Some("/jobs/by-path/?q=1")).await), json!("by-path"));
    assert_eq!(out(node.handle(envelope("x/by-name", json!({})), Some("/jobs/unknown")).await), json!("by-name"));
    assert_eq!(out(node.handle(envelope("x/by-name", json!({})), Some("/")).await), json!("by-name"));
    assert_eq!(out(node.handle(envelope("x/by-name", json!({})), None).await), json!("by-name"));
    assert_eq!(out(node.handle(envelope("ns/by-key", json!({})), None).await), json!("by-key"));

    let r = completed(node.handle(envelope("x/missing", json!({})), Some("/jobs/nope")).await);
    assert_eq!(r.status, ResultStatus::Failed);
    let error = r.error.unwrap();
    assert!(error.starts_with(r#"no handler "nope" on executor node n1 (service svc; handlers: by-name,"#), "{error}");
}

#[tokio::test]
async fn the_context_carries_the_envelope() {
    let node = node();
    let r = completed(node.handle(envelope("team/ctx", json!({"n": 5})), None).await);
    assert_eq!(
        r,
        RunResult::succeeded(Some(json!({
            "run": "7", "task": "team/ctx", "ns": "team", "name": "ctx", "shard": [2, 4], "n": 5, "node": "n1"
        })))
    );
    let r = completed(node.handle(envelope("team/ctx", json!({"n": "five"})), None).await);
    assert_eq!(r.status, ResultStatus::Failed);
    assert!(r.error.unwrap().starts_with("param `n`: invalid type: string \"five\""));
}

#[tokio::test]
async fn errors_and_panics_are_failed_results_and_the_node_survives() {
    let node = node();
    let r = completed(node.handle(envelope("a/fails", json!({})), None).await);
    assert_eq!(r, RunResult::failed("disk full"));
    let r = completed(node.handle(envelope("a/fails-with-output", json!({})), None).await);
    assert_eq!((r.error.as_deref(), r.output), (Some("partial"), Some(json!({"done": 3}))));
    let r = completed(node.handle(envelope("a/panics", json!({})), None).await);
    assert_eq!(r, RunResult::failed(r#"handler "panics" panicked: boom 42"#));
    let r = completed(node.handle(envelope("a/nothing", json!({})), None).await);
    assert_eq!(r, RunResult::succeeded(None));
    assert_eq!(node.in_flight(), 0);
}

#[tokio::test]
async fn a_draining_node_refuses_new_runs() {
    let node = node();
    node.inner.draining.store(true, Ordering::SeqCst);
    assert_eq!(node.handle(envelope("a/nothing", json!({})), None).await, Answer::Draining);
    assert_eq!(node.in_flight(), 0);
    // What a gRPC transport makes of each answer.
    assert_eq!(Answer::Draining.into_run_answer(), None);
    assert_eq!(Answer::Accepted.into_run_answer(), Some(RunAnswer::Accepted));
    let done = RunResult::succeeded(None);
    assert_eq!(Answer::Completed(done.clone()).into_run_answer(), Some(RunAnswer::Completed(done)));
}

#[tokio::test]
async fn async_handlers_without_a_report_url_answer_synchronously() {
    let node =
        ExecutorNode::builder("svc").id("n1").async_handler("later", |_| async { Ok(json!(1)) }).build().unwrap();
    assert_eq!(
        completed(node.handle(envelope("a/later", json!({})), None).await),
        RunResult::succeeded(Some(json!(1)))
    );
}

#[test]
fn declared_tasks_get_candidates_and_path_filled_in() {
    let handlers = |names: &[&str]| -> HashMap<String, Handler> {
        names
            .iter()
            .map(|n| {
                let run: HandlerFn = Arc::new(|_| Box::pin(async { Ok(Value::Null) }));
                (n.to_string(), Handler { run, mode: Mode::Sync })
            })
            .collect()
    };
    let doc = TaskDocument::from("metadata: {name: report}\nspec: {schedule: {every: 10s}}\n");
    let t = declare_task("svc", None, &doc, &handlers(&["report"])).unwrap();
    assert_eq!(t.key, "default/report");
    assert_eq!(t.document["spec"]["target"], json!({"http": {"path": "/report"}}));
    assert_eq!(t.document["spec"]["candidates"], json!({"service": "svc"}));
    let typed: rota_spec::Task = serde_json::from_value(t.document).unwrap();
    typed.validate().unwrap();

    // What the document says stays; a given handler names the path.
    let doc = TaskDocument::from(json!({
        "metadata": {"namespace": "b", "name": "x"},
        "spec": {"target": {"http": {"protocol": "rota"}}, "candidates": {"static": ["http://h:1"]}}
    }));
    let t = declare_task("svc", Some("h"), &doc, &handlers(&["h"])).unwrap();
    assert_eq!(t.document["spec"]["target"], json!({"http": {"protocol": "rota", "path": "/h"}}));
    assert_eq!(t.document["spec"]["candidates"], json!({"static": ["http://h:1"]}));
    let doc =
        TaskDocument::from("metadata: {name: x}\nspec: {target: {http: {path: /jobs/y}}, candidates: {service: s}}");
    let t = declare_task("svc", None, &doc, &handlers(&["y"])).unwrap();
    assert_eq!(t.document["spec"]["target"]["http"]["path"], "/jobs/y");
    assert_eq!(t.document["spec"]["candidates"]["service"], "s");

    // A task no handler would serve is a build error.
    let doc = TaskDocument::from("metadata: {name: report}\nspec: {}\n");
    let err = declare_task("svc", None, &doc, &handlers(&["other"])).unwrap_err();
    assert!(err.contains("task default/report: no handler serves it"), "{err}");
    let err = declare_task("svc", None, &TaskDocument::from("spec: {}"), &handlers(&[])).unwrap_err();
    assert!(err.contains("metadata"), "{err}");

    // Over gRPC a left-out target becomes `grpc: {}`; the handler is remembered for routing by key.
    let doc = TaskDocument::from("metadata: {namespace: b, name: x}\nspec: {schedule: {every: 10s}}\n");
    let t = declare_task("svc", Some("h"), &doc, &handlers(&["h"])).unwrap();
    assert_eq!(t.handler.as_deref(), Some("h"));
    assert_eq!(t.document_for(ExecutorProtocol::Http)["spec"]["target"], json!({"http": {"path": "/h"}}));
    let grpc = t.document_for(ExecutorProtocol::Grpc);
    assert_eq!(grpc["spec"]["target"], json!({"grpc": {}}));
    assert_eq!(grpc["spec"]["candidates"], json!({"service": "svc"}));
    let typed: rota_spec::Task = serde_json::from_value(grpc).unwrap();
    typed.validate().unwrap();
    // A target the document gives stays, whatever the transport.
    let doc = TaskDocument::from("metadata: {name: x}\nspec: {target: {http: {path: /jobs/y}}}");
    let t = declare_task("svc", None, &doc, &handlers(&["y"])).unwrap();
    assert_eq!(t.document_for(ExecutorProtocol::Grpc)["spec"]["target"], json!({"http": {"path": "/jobs/y"}}));
    let doc = TaskDocument::from("metadata: {name: x}\nspec: {target: {grpc: {method: Run}}}");
    let t = declare_task("svc", None, &doc, &handlers(&["x"])).unwrap();
    assert_eq!(t.document_for(ExecutorProtocol::Http)["spec"]["target"], json!({"grpc": {"method": "Run"}}));
    // A gRPC target needs a handler reachable by the task's key.
    let err = declare_task("svc", Some("h"), &doc, &handlers(&["other"])).unwrap_err();
    assert!(err.contains("task default/x: no handler serves it"), "{err}");
}

#[tokio::test]
async fn declared_tasks_route_to_their_handler_without_a_path() {
    let node = ExecutorNode::builder("svc")
        .id("n1")
        .scheduler("http://127.0.0.1:9")
        .handler("export", |ctx: RunContext| async move { Ok(json!({"task": ctx.task()})) })
        .handler("x", |_| async { Ok(json!("by-name")) })
        .task_for("export", "metadata: {namespace: b, name: x}\nspec: {schedule: {manual: true}}\n")
        .build()
        .unwrap();
    let out = completed(node.handle(envelope("b/x", json!({})), None).await);
    assert_eq!(out.output, Some(json!({"task": "b/x"})), "the declared handler, not the one named like the task");
    // Another namespace is another task: routed by name.
    let out = completed(node.handle(envelope("c/x", json!({})), None).await);
    assert_eq!(out.output, Some(json!("by-name")));
    // A path still wins over HTTP.
    let out = completed(node.handle(envelope("b/x", json!({})), Some("/x")).await);
    assert_eq!(out.output, Some(json!("by-name")));
}

#[test]
fn builder_checks_its_input() {
    let err = |b: ExecutorNodeBuilder| b.build().unwrap_err().to_string();
    assert!(err(ExecutorNode::builder("")).contains("service name"));
    assert!(err(ExecutorNode::builder("s").id("bad id")).contains("node id"));
    assert!(err(ExecutorNode::builder("s").weight(0)).contains("weight"));
    assert!(err(ExecutorNode::builder("s").advertise("ftp://x")).contains("advertise"));
    assert!(err(ExecutorNode::builder("s").scheduler("not a url")).contains("invalid server URL"));
    let twice = ExecutorNode::builder("s").handler("a", |_| async { Ok(Value::Null) });
    assert!(err(twice.handler("a", |_| async { Ok(Value::Null) })).contains("registered twice"));
    assert!(err(ExecutorNode::builder("s").task("metadata: {name: a}")).contains("needs a scheduler"));

    let node = ExecutorNode::builder("s").build().unwrap();
    let id = node.id().to_string();
    assert!(check_node_id(&id).is_ok(), "{id}");
    assert_eq!(node.id(), id, "stable for the process");
    assert_eq!(sanitize_id("my host!.local-8080"), "my-host-.local-8080");
    let _: Map<String, Value> = Map::new();
}

#[tokio::test]
async fn deferrable_handlers_choose_per_run() {
    let node = ExecutorNode::builder("svc")
        .id("n1")
        .deferrable_handler(
            "d",
            |ctx: &RunContext| ctx.param::<bool>("async").ok().flatten() == Some(true),
            |_| async { Ok(json!("done")) },
        )
        .build()
        .unwrap();
    let mut env = envelope("a/d", json!({"async": true}));
    // A report URL nobody listens on: the report is tried until the (short) deadline, then given up.
    env.report_url = Some("http://127.0.0.1:9/api/v1/runs/7".into());
    env.deadline = Utc::now() + chrono::Duration::milliseconds(300);
    assert_eq!(node.handle(env, None).await, Answer::Accepted);
    let env = envelope("a/d", json!({"async": false}));
    assert_eq!(completed(node.handle(env, None).await), RunResult::succeeded(Some(json!("done"))));
}
