//! The executor side against the real scheduler stack (rota-api + rota-core over a fresh SQLite store, served on
//! 127.0.0.1:0): registration, heartbeats, re-registration after the registration is lost, the declared task, a
//! dispatch answered asynchronously and reported, drain and deregistration; the same over gRPC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rota_core::{Scheduler, SchedulerConfig};
use rota_discovery::RegistryDiscovery;
use rota_executor::{HttpExecutorConfig, Router};
use rota_proto::RunResult;
use rota_proto::grpc::v1;
use rota_proto::grpc::v1::executor_client::ExecutorClient;
use rota_sdk::executor::{ExecutorNode, RunContext};
use rota_sdk::{Client, RunState};
use serde_json::{Map, json};
use tokio::sync::{Notify, oneshot};

struct Api {
    url: String,
    _scheduler: Scheduler,
}

async fn start_api() -> Api {
    let store = rota_store_sql::testing::fresh_sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = SchedulerConfig {
        public_url: Some(url.clone()),
        // Heartbeats every 200 ms, so the test sees several.
        executor_ttl: Duration::from_millis(600),
        ..SchedulerConfig::default()
    };
    let router = Router::standard(HttpExecutorConfig::default()).unwrap();
    let store = Arc::new(store);
    // Tasks naming `candidates.service` get the live nodes of the registry the SDK registers in.
    let discovery = RegistryDiscovery::new(store.clone()).with_cache_ttl(Duration::ZERO);
    let scheduler = Scheduler::new(store, Arc::new(router), config).with_discovery(Arc::new(discovery));
    scheduler.start().await.unwrap();
    let app = rota_api::router(rota_api::ApiState::new(scheduler.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Api { url, _scheduler: scheduler }
}

/// Polls `check` until it returns `Some`, failing after 20 s with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_reports_and_drains_against_the_real_scheduler() {
    let api = start_api().await;
    let rota = Client::new(&api.url).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_url = format!("http://{}", listener.local_addr().unwrap());
    let release = Arc::new(Notify::new());
    let released = release.clone();
    // Candidates (the service) and path (the handler) are left to the SDK.
    let task = "metadata: {namespace: sdk, name: export}\nspec: {schedule: {manual: true}, timeout: 20s}\n";
    let node = ExecutorNode::builder("billing")
        .scheduler(&api.url)
        .id("sdk-1")
        .labels([("zone", "a")])
        .capacity(4)
        .async_handler("export", move |ctx: RunContext| {
            let released = released.clone();
            async move {
                ctx.log(format!("export of run {} started", ctx.run_id())).await;
                let rows: u64 = ctx.param("rows")?.unwrap_or(0);
                released.notified().await;
                ctx.log("export done").await;
                Ok(json!({"rows": rows}))
            }
        })
        .task(task)
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn({
        let node = node.clone();
        async move {
            node.serve_http(listener, async {
                let _ = stopped.await;
            })
            .await
        }
    });

    // Registered, with what the builder said; heartbeats keep extending it.
    let registered = eventually("registration", || async {
        rota.executors(Some("billing")).await.unwrap().into_iter().find(|n| n.id == "sdk-1")
    })
    .await;
    assert_eq!((registered.address.as_str(), registered.protocol.as_str()), (node_url.as_str(), "http"));
    assert_eq!((registered.state.as_str(), registered.alive, registered.capacity), ("active", true, 4));
    assert_eq!(registered.labels["zone"], "a");
    let first_beat = registered.last_heartbeat_at;
    eventually("a heartbeat", || async {
        let n = rota.executors(Some("billing")).await.unwrap().pop()?;
        (n.last_heartbeat_at > first_beat).then_some(())
    })
    .await;

    // A lost registration (heartbeat answered 404) is made again.
    rota.deregister_executor("sdk-1").await.unwrap();
    eventually("re-registration", || async {
        rota.executors(Some("billing")).await.unwrap().into_iter().find(|n| n.id == "sdk-1")
    })
    .await;

    // The declared task, with the path filled in.
    let stored = eventually("the declared task", || async { rota.get_task("sdk", "export").await.ok() }).await;
    assert_eq!(stored.spec["spec"]["target"]["http"]["path"], "/export");
    assert_eq!(stored.spec["spec"]["candidates"], json!({"service": "billing"}));

    // A dispatch answered 202, reported later; the run is still running while the handler waits.
    let mut params = Map::new();
    params.insert("rows".into(), json!(42));
    let run = rota.trigger("sdk", "export", params).await.unwrap();
    eventually("the handler started", || async { (node.in_flight() == 1).then_some(()) }).await;
    let detail = rota.get_run(run.id).await.unwrap();
    assert_eq!(detail.run.state, RunState::Running);

    // Shutdown drains: the scheduler marks the node draining while the handler still runs.
    stop.send(()).unwrap();
    eventually("draining", || async {
        let n = rota.executors(Some("billing")).await.unwrap().pop()?;
        (n.state == "draining").then_some(())
    })
    .await;
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(20), serving).await.unwrap().unwrap().unwrap();

    // The report made it before the node left; its log lines are on the run.
    let detail = rota.get_run(run.id).await.unwrap();
    assert_eq!(detail.run.state, RunState::Succeeded, "{detail:?}");
    assert_eq!(detail.run.output, Some(json!({"rows": 42})));
    assert_eq!(detail.attempts.iter().map(|a| a.node.as_str()).collect::<Vec<_>>(), ["sdk-1"]);
    let logs = rota.logs(run.id, 0, None).await.unwrap();
    let lines: Vec<&str> = logs.items.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(lines, [format!("export of run {} started", run.id).as_str(), "export done"]);
    assert!(rota.executors(Some("billing")).await.unwrap().is_empty(), "deregistered");

    // A restart (same port, same declaration) finds the same task and leaves it alone.
    let listener = tokio::net::TcpListener::bind(node_url.trim_start_matches("http://")).await.unwrap();
    let node = ExecutorNode::builder("billing")
        .scheduler(&api.url)
        .id("sdk-1")
        .async_handler("export", |_| async { Ok(serde_json::Value::Null) })
        .task(task)
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        node.serve_http(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    eventually("registration after the restart", || async {
        rota.executors(Some("billing")).await.unwrap().into_iter().find(|n| n.id == "sdk-1")
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), serving).await.unwrap().unwrap().unwrap();
    let versions = rota.task_versions("sdk", "export").await.unwrap();
    assert_eq!(versions.items.len(), 1, "the identical declaration was not applied again");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_node_of_a_sharded_run_reports_its_slice() {
    let api = start_api().await;
    let rota = Client::new(&api.url).unwrap();
    let mut running = Vec::new();
    for id in ["shard-a", "shard-b"] {
        let node = ExecutorNode::builder("workers")
            .scheduler(&api.url)
            .id(id)
            .async_handler("slice", |ctx: RunContext| async move {
                ctx.log(format!("slice {}/{} on {}", ctx.shard_index(), ctx.shard_total(), ctx.node_id())).await;
                Ok(json!({"index": ctx.shard_index(), "node": ctx.node_id()}))
            })
            .task("metadata: {namespace: sdk, name: slice}\nspec: {schedule: {manual: true}, dispatch: {mode: sharded}}\n")
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            node.serve_http(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        running.push((stop, serving));
    }
    eventually("both nodes and the task", || async {
        let nodes = rota.executors(Some("workers")).await.unwrap();
        (nodes.len() == 2 && rota.get_task("sdk", "slice").await.is_ok()).then_some(())
    })
    .await;

    let run = rota.trigger("sdk", "slice", Map::new()).await.unwrap();
    let detail = eventually("the run to finish", || async {
        let d = rota.get_run(run.id).await.unwrap();
        d.run.state.is_terminal().then_some(d)
    })
    .await;
    assert_eq!(detail.run.state, RunState::Succeeded, "{detail:?}");
    let mut nodes: Vec<(&str, String)> =
        detail.attempts.iter().map(|a| (a.node.as_str(), format!("{:?}", a.state))).collect();
    nodes.sort();
    assert_eq!(nodes, [("shard-a", "Succeeded".to_string()), ("shard-b", "Succeeded".to_string())]);
    let logs = rota.logs(run.id, 0, None).await.unwrap();
    let mut lines: Vec<&str> = logs.items.iter().map(|l| l.line.as_str()).collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("slice ") && l.contains("/2 on shard-")), "{lines:?}");

    for (stop, serving) in running {
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), serving).await.unwrap().unwrap().unwrap();
    }
    assert!(rota.executors(Some("workers")).await.unwrap().is_empty());
}

/// A direct gRPC client of a node (what the scheduler sends, without the scheduler).
async fn grpc_client(url: &str) -> ExecutorClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    ExecutorClient::new(channel)
}

fn grpc_request(task: &str, params_json: &str) -> v1::RunRequest {
    let now = chrono::Utc::now();
    v1::RunRequest {
        run_id: "1".into(),
        task: task.into(),
        attempt: 1,
        scheduled_at: rota_proto::grpc::format_instant(&now),
        params_json: params_json.into(),
        shard: Some(v1::Shard { index: 0, total: 1 }),
        deadline: rota_proto::grpc::format_instant(&(now + chrono::Duration::seconds(10))),
        report_url: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_node_registers_runs_sync_and_async_refuses_bad_requests_and_drains() {
    let api = start_api().await;
    let rota = Client::new(&api.url).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_url = format!("http://{}", listener.local_addr().unwrap());
    let release = Arc::new(Notify::new());
    let released = release.clone();
    let node = ExecutorNode::builder("grpc-workers")
        .scheduler(&api.url)
        .id("grpc-1")
        .handler("sum", |ctx: RunContext| async move {
            let xs: Vec<i64> = ctx.param("xs")?.unwrap_or_default();
            Ok(json!({"sum": xs.iter().sum::<i64>(), "node": ctx.node_id()}))
        })
        .async_handler("export", move |ctx: RunContext| {
            let released = released.clone();
            async move {
                ctx.log(format!("export of run {} started", ctx.run_id())).await;
                if ctx.param::<bool>("wait")? == Some(true) {
                    released.notified().await;
                }
                Ok(json!({"exported": true}))
            }
        })
        // The target is left out: a gRPC node declares `target: {grpc: {}}`, and a name other than the handler's.
        .task_for("sum", "metadata: {namespace: sdk, name: grpc-sum}\nspec: {schedule: {manual: true}}\n")
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn({
        let node = node.clone();
        async move {
            node.serve_grpc(listener, async {
                let _ = stopped.await;
            })
            .await
        }
    });

    // Registered as a gRPC node at http://host:port.
    let registered = eventually("registration", || async {
        rota.executors(Some("grpc-workers")).await.unwrap().into_iter().find(|n| n.id == "grpc-1")
    })
    .await;
    assert_eq!((registered.address.as_str(), registered.protocol.as_str()), (node_url.as_str(), "grpc"));
    assert_eq!(registered.state, "active");

    // The declared task targets the gRPC service; a sync run of it goes to the declared handler.
    let stored = eventually("the declared task", || async { rota.get_task("sdk", "grpc-sum").await.ok() }).await;
    assert_eq!(stored.spec["spec"]["target"], json!({"grpc": {}}));
    assert_eq!(stored.spec["spec"]["candidates"], json!({"service": "grpc-workers"}));
    let mut params = Map::new();
    params.insert("xs".into(), json!([1, 2, 39]));
    let run = rota.trigger("sdk", "grpc-sum", params).await.unwrap();
    let detail = eventually("the sync run to finish", || async {
        let d = rota.get_run(run.id).await.unwrap();
        d.run.state.is_terminal().then_some(d)
    })
    .await;
    assert_eq!(detail.run.state, RunState::Succeeded, "{detail:?}");
    assert_eq!(detail.run.output, Some(json!({"sum": 42, "node": "grpc-1"})));
    assert_eq!(detail.attempts.iter().map(|a| a.node.as_str()).collect::<Vec<_>>(), ["grpc-1"]);

    // A task applied with `target.grpc` naming the service, answered `accepted` and reported over HTTP.
    rota.apply(
        "apiVersion: rota/v1\nkind: Task\nmetadata: {namespace: sdk, name: export}\nspec:\n  schedule: {manual: true}\n  \
         target: {grpc: {service: rota.executor.v1.Executor, method: Run}}\n  candidates: {service: grpc-workers}\n  \
         timeout: 20s\n",
    )
    .await
    .unwrap();
    let run = rota.trigger("sdk", "export", Map::new()).await.unwrap();
    let detail = eventually("the async run to be reported", || async {
        let d = rota.get_run(run.id).await.unwrap();
        d.run.state.is_terminal().then_some(d)
    })
    .await;
    assert_eq!(detail.run.state, RunState::Succeeded, "{detail:?}");
    assert_eq!(detail.run.output, Some(json!({"exported": true})));
    assert_eq!(detail.attempts.iter().map(|a| a.node.as_str()).collect::<Vec<_>>(), ["grpc-1"]);
    let logs = rota.logs(run.id, 0, None).await.unwrap();
    assert_eq!(
        logs.items.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        [format!("export of run {} started", run.id)]
    );

    // A request that is not a run envelope is INVALID_ARGUMENT, naming the field; the node keeps serving.
    let mut client = grpc_client(&node_url).await;
    let status = client.run(grpc_request("sdk/grpc-sum", "{oops")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("the request is not a valid run envelope: params_json is not valid JSON"),
        "{status:?}"
    );
    let mut no_shard = grpc_request("sdk/grpc-sum", "");
    no_shard.shard = None;
    let status = client.run(no_shard).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::InvalidArgument, "the request is not a valid run envelope: shard is missing")
    );
    let answer = client.run(grpc_request("sdk/grpc-sum", r#"{"xs":[2,3]}"#)).await.unwrap().into_inner();
    let answer = rota_proto::grpc::RunAnswer::try_from(answer).unwrap();
    assert_eq!(
        answer,
        rota_proto::grpc::RunAnswer::Completed(RunResult::succeeded(Some(json!({"sum": 5, "node": "grpc-1"}))))
    );
    // An unknown handler is a failed result, not a transport error.
    let answer = client.run(grpc_request("sdk/nope", "")).await.unwrap().into_inner();
    match rota_proto::grpc::RunAnswer::try_from(answer).unwrap() {
        rota_proto::grpc::RunAnswer::Completed(r) => {
            assert_eq!(r.status, rota_proto::ResultStatus::Failed);
            assert!(r.error.as_deref().unwrap_or_default().starts_with("no handler \"nope\""), "{r:?}");
        }
        other => panic!("expected a failed result, got {other:?}"),
    }

    // Draining: an async run holds the node in flight; new dispatches are UNAVAILABLE meanwhile.
    let mut params = Map::new();
    params.insert("wait".into(), json!(true));
    let run = rota.trigger("sdk", "export", params).await.unwrap();
    eventually("the handler started", || async { (node.in_flight() == 1).then_some(()) }).await;
    stop.send(()).unwrap();
    eventually("draining", || async {
        let n = rota.executors(Some("grpc-workers")).await.unwrap().pop()?;
        (n.state == "draining").then_some(())
    })
    .await;
    let status = client.run(grpc_request("sdk/grpc-sum", "")).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "executor node grpc-1 is draining and takes no new runs")
    );
    drop(client);
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(20), serving).await.unwrap().unwrap().unwrap();
    let detail = rota.get_run(run.id).await.unwrap();
    assert_eq!(detail.run.state, RunState::Succeeded, "reported before the node left: {detail:?}");
    assert!(rota.executors(Some("grpc-workers")).await.unwrap().is_empty(), "deregistered");
}
