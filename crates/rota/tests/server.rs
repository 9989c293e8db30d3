//! `rota server` as a process: the demo, graceful shutdown on SIGTERM, restart durability, the config file, and
//! PostgreSQL through `--database-url`.

mod common;

use std::time::Duration;

use common::{Executor, Server, eventually, rota, task_yaml, wait_finished, write};

#[tokio::test(flavor = "multi_thread")]
async fn demo_shows_succeeded_runs_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&["--demo", "--data-dir", dir.path().to_str().unwrap()]);
    let url = server.url.clone();
    assert!(server.stdout().contains("rota demo: executor on http://127.0.0.1:"), "{}", server.output());

    // The log shows a succeeded run of demo/hello in one readable line (every 5 s; allow for a slow machine).
    let line = eventually("a succeeded demo run in the log", Duration::from_secs(20), || {
        let err = server.stderr();
        async move { err.lines().find(|l| l.contains("run succeeded") && l.contains("demo/hello")).map(str::to_string) }
    })
    .await;
    assert!(line.contains("INFO") && line.contains("rota::events"), "{line}");

    // The same through the API.
    let runs = rota(&url, &["runs", "demo/hello", "--state", "succeeded", "-o", "json"]).await.json();
    let run = &runs[0];
    let id = run["id"].as_i64().unwrap();
    assert_eq!(run["output"]["greeting"], format!("hello from run {id}"));
    let logs = rota(&url, &["logs", &id.to_string()]).await;
    assert!(logs.ok().contains(&format!("hello from run {id}")), "{}", logs.stdout);
    // The demo executor joined the execution cluster: the run went to node demo-1 of service demo.
    let detail = rota(&url, &["run", &id.to_string(), "-o", "json"]).await.json();
    assert_eq!(detail["attempts"][0]["node"], "demo-1", "{detail:#}");
    let executors = rota(&url, &["get", "nodes", "--executors", "-o", "json"]).await.json();
    assert_eq!((executors[0]["id"].as_str(), executors[0]["service"].as_str()), (Some("demo-1"), Some("demo")));

    let status = server.terminate(Duration::from_secs(40));
    assert!(status.success(), "exit status {status}:\n{}", server.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_a_restart_keeps_tasks_and_history() {
    let exec = Executor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let mut server = Server::start(&["--data-dir", data]);
    let url = server.url.clone();
    let file = write(dir.path(), "t.yaml", &task_yaml("keep", "me", "{every: 1h}", &exec.url(), "k: v"));
    rota(&url, &["apply", "-f", &file]).await.ok();
    rota(&url, &["pause", "keep/me"]).await.ok();
    let run = rota(&url, &["trigger", "keep/me", "-p", "x=1", "-o", "json"]).await.json();
    let id = run["id"].as_i64().unwrap();
    assert_eq!(wait_finished(&url, id).await["run"]["state"], "succeeded");

    // A dispatch in flight when SIGTERM arrives is waited for: its result is recorded before the process exits.
    let slow = rota(&url, &["trigger", "keep/me", "-p", "sleep_ms=1500", "-o", "json"]).await.json();
    let slow = slow["id"].as_i64().unwrap();
    eventually("the slow dispatch to reach the executor", Duration::from_secs(20), || async {
        (!exec.envelopes_of(slow).is_empty()).then_some(())
    })
    .await;

    let status = server.terminate(Duration::from_secs(40));
    assert!(status.success(), "exit status {status}:\n{}", server.output());
    assert!(server.stderr().contains("signal=\"SIGTERM\""), "{}", server.output());
    assert!(server.stdout().ends_with("rota stopped\n"), "{}", server.output());
    drop(server);

    // Same data dir, new process (new port): the task (still paused), its run and the run's attempts and logs.
    let server = Server::start(&["--data-dir", data]);
    let url = server.url.clone();
    let task = rota(&url, &["get", "task", "keep/me", "-o", "json"]).await.json();
    assert_eq!((task["paused"].as_bool(), task["labels"]["k"].as_str()), (Some(true), Some("v")));
    let detail = rota(&url, &["run", &id.to_string(), "-o", "json"]).await.json();
    assert_eq!(detail["run"]["state"], "succeeded");
    assert_eq!(detail["run"]["params"]["x"], 1);
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 1);
    let runs = rota(&url, &["runs", "keep/me", "-o", "json"]).await.json();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    let detail = rota(&url, &["run", &slow.to_string(), "-o", "json"]).await.json();
    assert_eq!(detail["run"]["state"], "succeeded", "the in-flight dispatch finished before exit: {detail:#}");
    let logs = rota(&url, &["logs", &id.to_string()]).await;
    assert!(logs.ok().contains("test executor ran keep/me"), "{}", logs.stdout);
    // And it keeps working.
    let run = rota(&url, &["trigger", "keep/me", "-o", "json"]).await.json();
    let second = run["id"].as_i64().unwrap();
    assert!(second > id);
    assert_eq!(wait_finished(&url, second).await["run"]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_file_sets_defaults_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("from-file");
    let config = write(
        dir.path(),
        "rota.toml",
        &format!(
            "listen = \"127.0.0.1:1\"  # overridden by the --listen the helper passes\n\
             data-dir = \"{}\"\nnode-id = \"node-from-file\"\nshards = 8\nshutdown-grace = \"5s\"\n",
            from_file.display()
        ),
    );
    let mut server = Server::start(&["--config", &config]);
    assert!(from_file.join("rota.db").exists(), "{}", server.output());
    assert!(server.stdout().contains("rota node: node-from-file (8 shards"), "{}", server.output());
    assert!(server.terminate(Duration::from_secs(30)).success());

    // ROTA_* variables override the file; flags override both.
    let mut server =
        Server::start_with_env(&["--config", &config, "--shards", "4"], &[("ROTA_NODE_ID", "node-from-env")]);
    assert!(server.stdout().contains("rota node: node-from-env (4 shards"), "{}", server.output());
    assert!(server.terminate(Duration::from_secs(30)).success());

    // Unknown keys are errors that name the key.
    let bad = write(dir.path(), "bad.toml", "listne = \"127.0.0.1:0\"\n");
    let out = std::process::Command::new(common::BIN)
        .args(["server", "--config", &bad])
        .env_remove("ROTA_LISTEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listne"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_store_via_database_url() {
    let db = rota_store_sql::testing::fresh_postgres_url().await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for this test (set ROTA_TEST_POSTGRES_URL or start it): {e}")
    });
    let exec = Executor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("unused");
    let mut server = Server::start(&["--database-url", &db, "--data-dir", data.to_str().unwrap()]);
    let url = server.url.clone();
    assert!(server.stdout().contains("rota store: postgres postgres://"), "{}", server.output());
    assert!(!data.exists(), "--database-url overrides --data-dir");

    let file = write(dir.path(), "t.yaml", &task_yaml("pg", "echo", "{manual: true}", &exec.url(), ""));
    assert_eq!(rota(&url, &["apply", "-f", &file]).await.ok(), "task pg/echo created\n");
    let run = rota(&url, &["trigger", "pg/echo", "-p", "db=pg", "-o", "json"]).await.json();
    let id = run["id"].as_i64().unwrap();
    let detail = wait_finished(&url, id).await;
    assert_eq!(detail["run"]["state"], "succeeded", "{detail:#}");
    assert_eq!(detail["run"]["output"]["echo"]["db"], "pg");
    assert!(server.terminate(Duration::from_secs(40)).success(), "{}", server.output());
    drop(server);

    // A second process on the same database sees everything.
    let server = Server::start(&["--database-url", &db]);
    let runs = rota(&server.url, &["runs", "pg/echo", "-o", "json"]).await.json();
    assert_eq!(runs[0]["id"].as_i64(), Some(id));
    assert_eq!(runs[0]["state"], "succeeded");
}
