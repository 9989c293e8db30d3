//! The CLI against a real `rota server` process (embedded SQLite) and a real HTTP executor node.

mod common;

use std::time::Duration;

use common::{Executor, Server, eventually, rota, rota_offline, task_yaml, wait_finished, write};

#[tokio::test(flavor = "multi_thread")]
async fn cli_drives_tasks_and_runs_through_the_api() {
    let exec = Executor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    let url = server.url.as_str();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(data.join("rota.db").exists(), "the SQLite file lives in the data dir");
    assert!(server.stdout().contains(&format!("rota store: sqlite {}", data.join("rota.db").display())));

    // apply: a multi-document YAML file.
    let stream = format!(
        "# two tasks\n{}---\n{}",
        task_yaml("e2e", "echo", "{manual: true}", &exec.url(), "team: a"),
        task_yaml("e2e", "other", "{every: 1h}", &exec.url(), "team: b"),
    );
    let file = write(dir.path(), "tasks.yaml", &stream);
    let out = rota(url, &["apply", "-f", &file]).await;
    assert_eq!(out.ok(), "task e2e/echo created\ntask e2e/other created\n");
    let out = rota(url, &["apply", "-f", &file]).await;
    assert_eq!(out.ok(), "task e2e/echo configured\ntask e2e/other configured\n");

    // apply: a directory (JSON and YAML files; other files ignored).
    let specs = dir.path().join("specs");
    std::fs::create_dir(&specs).unwrap();
    let json = serde_json::to_string(
        &serde_yaml::from_str::<serde_json::Value>(&task_yaml("e2e", "from-json", "{manual: true}", &exec.url(), ""))
            .unwrap(),
    )
    .unwrap();
    write(&specs, "a.json", &json);
    write(&specs, "b.yml", &task_yaml("e2e", "from-yml", "{manual: true}", &exec.url(), ""));
    write(&specs, "notes.txt", "not a task");
    let out = rota(url, &["apply", "-f", specs.to_str().unwrap()]).await;
    assert_eq!(out.ok(), "task e2e/from-json created\ntask e2e/from-yml created\n");

    // get tasks: an aligned table, filters, JSON.
    let out = rota(url, &["get", "tasks"]).await;
    let table = out.ok();
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("NAMESPACE   NAME"), "{table}");
    // Columns are aligned: every row's schedule starts under the SCHEDULE header.
    let sched_col = header.find("SCHEDULE").unwrap();
    for line in table.lines().skip(1) {
        assert!(line.starts_with("e2e "), "{table}");
        let cell = &line[sched_col..];
        assert!(cell.starts_with("manual ") || cell.starts_with("every 1h "), "{table}");
    }
    assert!(table.contains("every 1h"), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");
    let out = rota(url, &["get", "tasks", "-l", "team=b"]).await;
    let rows: Vec<&str> = out.ok().lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert!(rows[0].contains("other"));
    let tasks = rota(url, &["get", "tasks", "-n", "e2e", "-o", "json"]).await.json();
    let mut names: Vec<&str> = tasks.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["echo", "from-json", "from-yml", "other"]);
    let none = rota(url, &["get", "tasks", "-n", "nothing-here", "-o", "json"]).await.json();
    assert_eq!(none, serde_json::json!([]));

    // get task: detail view and YAML.
    let out = rota(url, &["get", "task", "e2e/echo"]).await;
    let field =
        |name: &str| out.stdout.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_string()));
    assert_eq!(field("Task").as_deref(), Some("e2e/echo"), "{}", out.ok());
    assert_eq!(field("Schedule").as_deref(), Some("manual"), "{}", out.stdout);
    assert_eq!(field("Labels").as_deref(), Some("team=a"), "{}", out.stdout);
    let out = rota(url, &["get", "task", "e2e/echo", "-o", "yaml"]).await;
    let yaml: serde_yaml::Value = serde_yaml::from_str(out.ok()).unwrap();
    assert_eq!(yaml["spec"]["metadata"]["labels"]["team"].as_str(), Some("a"));

    // trigger with params: a JSON value when it parses, else a string.
    let run = rota(url, &["trigger", "e2e/echo", "--param", "who=me", "--param", "n=5", "-o", "json"]).await.json();
    let id = run["id"].as_i64().unwrap();
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["params"], serde_json::json!({"greeting": "hi", "who": "me", "n": 5}));
    let detail = wait_finished(url, id).await;
    assert_eq!(detail["run"]["state"], "succeeded", "{detail:#}");
    assert_eq!(detail["run"]["output"]["echo"]["n"], 5);
    assert_eq!(detail["attempts"][0]["node"], exec.url());
    let envelopes = exec.envelopes_of(id);
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].params["who"], "me");
    assert_eq!(envelopes[0].task, "e2e/echo");

    // A second run, table output of trigger.
    let out = rota(url, &["trigger", "e2e/echo"]).await;
    assert!(out.ok().starts_with("run ") && out.stdout.contains(" of e2e/echo created"), "{}", out.stdout);
    let second: i64 = out.stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    wait_finished(url, second).await;

    // runs: newest first, filters.
    let out = rota(url, &["runs", "e2e/echo"]).await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert!(lines[0].starts_with("ID   TASK"), "{}", out.stdout);
    assert!(lines[1].starts_with(&format!("{second} ")), "{}", out.stdout);
    assert!(lines[2].starts_with(&format!("{id} ")), "{}", out.stdout);
    assert!(lines[1].contains("succeeded") && lines[1].contains("manual"), "{}", out.stdout);
    let runs = rota(url, &["runs", "e2e/echo", "--limit", "1", "-o", "json"]).await.json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"].as_i64(), Some(second));
    let out = rota(url, &["runs", "e2e/echo", "--state", "failed"]).await;
    assert_eq!(out.ok(), "");
    assert!(out.stderr.contains("no runs"));
    let out = rota(url, &["runs", "e2e/echo", "--state", "bogus"]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("bogus"), "{}", out.stderr);

    // run: detail with attempts.
    let out = rota(url, &["run", &id.to_string()]).await;
    let text = out.ok();
    assert!(text.contains("State:") && text.contains("succeeded"), "{text}");
    assert!(text.contains("Attempts:\n  ATTEMPT"), "{text}");
    assert!(text.contains(&exec.url()), "{text}");

    // logs: the line the executor appended through the report URL.
    let out = rota(url, &["logs", &id.to_string()]).await;
    assert!(out.ok().contains(&format!("[stdout] test executor ran e2e/echo run {id}")), "{}", out.stdout);
    let lines = rota(url, &["logs", &id.to_string(), "-o", "json"]).await.json();
    assert_eq!(lines[0]["stream"], "stdout");

    // pause / resume.
    let out = rota(url, &["pause", "e2e/other"]).await;
    assert_eq!(out.ok(), "task e2e/other paused\n");
    let task = rota(url, &["get", "task", "e2e/other", "-o", "json"]).await.json();
    assert_eq!(task["paused"].as_bool(), Some(true));
    let out = rota(url, &["get", "tasks", "-n", "e2e", "--paused", "true"]).await;
    let rows: Vec<&str> = out.ok().lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert!(rows[0].contains(" other ") && rows[0].contains(" yes "), "{}", out.stdout);
    let out = rota(url, &["resume", "e2e/other"]).await;
    assert_eq!(out.ok(), "task e2e/other resumed\n");
    let task = rota(url, &["get", "task", "e2e/other", "-o", "json"]).await.json();
    assert_eq!(task["paused"], false);
    assert!(task["next_fire_at"].is_string());

    // cancel: a finished run cannot be cancelled; the API's error code is shown.
    let out = rota(url, &["cancel", &id.to_string()]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: conflict: "), "{}", out.stderr);
    let out = rota(url, &["run", "999999"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: not_found: "), "{}", out.stderr);

    // delete.
    let out = rota(url, &["delete", "task", "e2e/other"]).await;
    assert_eq!(out.ok(), "task e2e/other deleted\n");
    let out = rota(url, &["get", "task", "e2e/other"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.trim(), "error: not_found: task e2e/other not found");
    // History stays after the task is gone.
    let detail = rota(url, &["run", &id.to_string(), "-o", "json"]).await.json();
    assert_eq!(detail["run"]["id"].as_i64(), Some(id));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_are_rejected_with_field_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let url = server.url.as_str();
    let good = task_yaml("e2e", "good", "{manual: true}", "http://127.0.0.1:9", "");
    let bad = "apiVersion: rota/v1\nkind: Task\nmetadata: {namespace: e2e, name: Bad_Name}\nspec:\n  \
               schedule: {every: 5s}\n  target: {http: {path: /x}}\n  candidates: {static: [\"http://127.0.0.1:9\"]}\n  \
               retry: {maxAttempts: 0}\n";
    let file = write(dir.path(), "mixed.yaml", &format!("{good}---\n{bad}"));

    // The valid document is applied, the invalid one reported with every field path; the exit code says failure.
    let out = rota(url, &["apply", "-f", &file]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "task e2e/good created\n");
    let mut lines = out.stderr.lines();
    let first = lines.next().unwrap();
    assert!(first.starts_with("error: invalid_spec: ") && first.ends_with(&format!("(in {file})")), "{}", out.stderr);
    let details: Vec<&str> = lines.collect();
    assert!(details.iter().any(|l| l.starts_with("  documents[1].metadata.name: ")), "{}", out.stderr);
    assert!(
        details.iter().any(|l| l.starts_with("  documents[1].spec.retry.maxAttempts: must be >= 1")),
        "{}",
        out.stderr
    );

    // A single-document file: paths without the document prefix; nothing stored.
    let file = write(dir.path(), "bad.yaml", bad);
    let out = rota(url, &["apply", "-f", &file]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("\n  spec.retry.maxAttempts: must be >= 1"), "{}", out.stderr);
    let tasks = rota(url, &["get", "tasks", "-o", "json"]).await.json();
    assert_eq!(tasks.as_array().unwrap().len(), 1);

    // A document without a name cannot even be addressed.
    let file = write(dir.path(), "noname.yaml", "apiVersion: rota/v1\nkind: Task\nmetadata: {namespace: e2e}\n");
    let out = rota(url, &["apply", "-f", &file]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("  metadata.name: "), "{}", out.stderr);

    // Missing files and unreachable servers are errors too.
    let out = rota(url, &["apply", "-f", dir.path().join("missing.yaml").to_str().unwrap()]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no such file"), "{}", out.stderr);
    let out = rota("http://127.0.0.1:9", &["get", "tasks"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: cannot reach the rota server at http://127.0.0.1:9"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_works_offline() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", &task_yaml("e2e", "good", "{every: 5s}", "http://127.0.0.1:9", "a: b"));
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: rota/v1\nkind: Task\nmetadata: {name: Bad_Name}\nspec:\n  schedule: {every: 5s}\n  \
         target: {http: {path: /x}}\n  candidates: {static: [\"http://127.0.0.1:9\"]}\n  retry: {maxAttempts: 0}\n",
    );

    // No server anywhere: `validate` never talks to one.
    let out = rota_offline(&["--server", "http://127.0.0.1:9", "validate", "-f", &good]).await;
    assert_eq!(out.ok(), format!("{good}: valid (e2e/good)\n"));

    // Output into a pipe nobody reads (`rota … | head` after head has exited) ends the command quietly instead
    // of panicking.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(common::BIN)
        .args(["validate", "-f", &good])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.status.success(), "the write cannot have succeeded");

    let out = rota_offline(&["validate", "-f", &bad]).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.starts_with(&format!("{bad}: invalid (2 problems)\n")), "{}", out.stdout);
    assert!(out.stdout.contains("\n  metadata.name: "), "{}", out.stdout);
    assert!(out.stdout.contains("\n  spec.retry.maxAttempts: must be >= 1\n"), "{}", out.stdout);

    // A directory, JSON output.
    let out = rota_offline(&["validate", "-f", dir.path().to_str().unwrap(), "-o", "json"]).await;
    assert_eq!(out.code, 1);
    let reports: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(reports.as_array().unwrap().len(), 2);
    let bad_report = reports.as_array().unwrap().iter().find(|r| r["file"] == bad.as_str()).unwrap();
    assert_eq!(bad_report["valid"], false);
    assert_eq!(bad_report["problems"].as_array().unwrap().len(), 2);

    // The example tasks of the repository are valid.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tasks");
    let out = rota_offline(&["validate", "-f", examples]).await;
    assert!(out.ok().contains("echo.yaml: valid (default/echo)"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_runs_show_their_errors() {
    let exec = Executor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let url = server.url.as_str();
    let file = write(dir.path(), "t.yaml", &task_yaml("e2e", "flaky", "{manual: true}", &exec.url(), ""));
    rota(url, &["apply", "-f", &file]).await.ok();
    let run = rota(url, &["trigger", "e2e/flaky", "-p", "fail=true", "-o", "json"]).await.json();
    let id = run["id"].as_i64().unwrap();
    let detail = wait_finished(url, id).await;
    assert_eq!(detail["run"]["state"], "failed", "{detail:#}");
    let out = eventually("the failed run in `rota runs --state failed`", Duration::from_secs(10), || async {
        let out = rota(url, &["runs", "e2e/flaky", "--state", "failed"]).await;
        out.stdout.contains("asked to fail").then_some(out)
    })
    .await;
    assert!(out.stdout.lines().nth(1).unwrap().starts_with(&format!("{id} ")), "{}", out.stdout);
    let out = rota(url, &["run", &id.to_string()]).await;
    assert!(out.ok().contains("asked to fail"), "{}", out.stdout);
}

/// `rota get nodes --schedulers` against a real server. The server's node registers itself in the store's node
/// registry as the cluster contract says, so the test waits (10 s at most) until the API lists it as registered.
#[tokio::test(flavor = "multi_thread")]
async fn get_nodes_lists_the_scheduler_node_and_its_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap(), "--node-id", "cli-node", "--shards", "8"]);
    let url = server.url.as_str();

    let cluster =
        eventually("node cli-node registered in `rota get nodes -o json`", Duration::from_secs(10), || async {
            let cluster = rota(url, &["get", "nodes", "--schedulers", "-o", "json"]).await.json();
            let registered = cluster["nodes"]
                .as_array()
                .is_some_and(|nodes| nodes.iter().any(|n| n["id"] == "cli-node" && n["registered"] == true));
            registered.then_some(cluster)
        })
        .await;
    assert_eq!(cluster["backend"], "sqlite");
    assert_eq!(cluster["shard_count"], 8);
    assert_eq!(cluster["unowned_shards"], serde_json::json!([]), "{cluster:#}");
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{cluster:#}");
    let node = &nodes[0];
    assert_eq!(node["id"], "cli-node");
    assert_eq!(node["alive"], true);
    assert_eq!(node["address"], url);
    assert_eq!(node["shards"], serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(node["shards_held"], 8);
    assert!(node["lease_expires_at"].is_string(), "{node:#}");

    // The table: one row per node, then the unowned shards.
    let out = rota(url, &["get", "nodes", "--schedulers"]).await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let header = lines[0];
    assert!(header.starts_with("NODE       ALIVE   SHARDS    LEASE EXPIRES          LAG "), "{}", out.stdout);
    assert!(header.ends_with("   ADDRESS"), "{}", out.stdout);
    let row = lines[1];
    assert!(row.starts_with("cli-node   yes     8 (0-7)   20"), "{}", out.stdout);
    assert!(row.ends_with(&format!("   {url}")), "{}", out.stdout);
    assert_eq!(lines[2], "unowned shards: 0 of 8");

    // Without a flag: the scheduler table, then the executor nodes.
    let out = rota(url, &["get", "nodes"]).await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!((lines.len(), lines[0]), (5, header), "{}", out.stdout);
    assert!(lines[1].starts_with("cli-node   yes     8 (0-7)"), "{}", out.stdout);
    assert_eq!(lines[4], "no executor nodes", "{}", out.stdout);

    // An executor node registers through the API; `--executors` lists it, `--service` filters.
    let reg = serde_json::json!({"id": "w-1", "service": "billing", "address": "http://127.0.0.1:9", "labels": {"zone": "a"}, "capacity": 4});
    rota_tls::install_crypto_provider();
    let res = common::authed(reqwest::Client::new().post(format!("{url}/api/v1/executors")), url)
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let out = rota(url, &["get", "nodes", "--executors"]).await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].starts_with("EXECUTOR   SERVICE   STATE    ALIVE   PROTOCOL   ADDRESS"), "{}", out.stdout);
    assert!(
        lines[1].starts_with("w-1        billing   active   yes     http       http://127.0.0.1:9"),
        "{}",
        out.stdout
    );
    assert!(lines[1].ends_with("zone=a"), "{}", out.stdout);
    let json = rota(url, &["get", "nodes", "--service", "billing", "-o", "json"]).await.json();
    assert_eq!(json[0]["id"], "w-1", "{json:#}");
    let none = rota(url, &["get", "nodes", "--service", "other", "-o", "json"]).await.json();
    assert_eq!(none, serde_json::json!([]));
    let both = rota(url, &["get", "nodes", "-o", "json"]).await.json();
    assert_eq!(both["executors"][0]["service"], "billing", "{both:#}");
    assert_eq!(both["schedulers"]["nodes"][0]["id"], "cli-node", "{both:#}");
    let help = rota_offline(&["get", "nodes", "--help"]).await;
    assert!(help.ok().contains("Then the executor nodes registered with the cluster"), "{}", help.stdout);
}

/// First start writes a cluster-admin token to `DATA_DIR/admin.token` (mode 0600) and says where (not what);
/// the CLI finds it with `--data-dir`, refuses without credentials, and manages tokens and reads the audit log.
#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_token_tokens_and_audit_through_the_cli() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_string();
    let mut server = Server::start(&["--data-dir", &data_s]);
    let url = server.url.clone();
    let file = data.join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token is private");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("rota_"), "{token}");
    assert!(server.stdout().contains(&format!("rota admin token: created and written to {}", file.display())));
    assert!(!server.output().contains(&token), "the token itself is never printed or logged");

    // Without credentials: 401 with a hint; with --data-dir: the file's token.
    let out = common::rota_as(&url, None, &["get", "tasks"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("error: unauthenticated: "), "{}", out.stderr);
    assert!(out.stderr.contains("--data-dir"), "{}", out.stderr);
    let out = common::rota_as(&url, None, &["--data-dir", &data_s, "get", "tasks"]).await;
    assert_eq!((out.code, out.stderr.as_str()), (0, "no tasks\n"), "{out:?}");

    // Tokens: create (shown once), use, list, revoke.
    let out = rota(&url, &["token", "create", "ci", "--grant", "ci:editor", "--expires-in", "1h"]).await;
    let ci = out.ok().trim().to_string();
    assert!(ci.starts_with("rota_") && out.stderr.contains("shown only this once"), "{out:?}");
    let ci_id = ci.split('_').nth(1).unwrap().to_string();
    let exec = Executor::start().await;
    let task = write(dir.path(), "t.yaml", &task_yaml("ci", "job", "{manual: true}", &exec.url(), ""));
    let out = common::rota_as(&url, Some(&ci), &["apply", "-f", &task]).await;
    assert_eq!(out.ok(), "task ci/job created\n");
    let out = common::rota_as(&url, Some(&ci), &["get", "task", "other/job"]).await;
    assert!(out.stderr.contains("error: forbidden: "), "{out:?}");
    let list = rota(&url, &["token", "list", "-o", "json"]).await.json();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&ci_id.as_str()) && ids.len() == 2, "{list:#}");
    assert!(!list.to_string().contains(ci.splitn(3, '_').nth(2).unwrap()), "no secret in the list");
    let table = rota(&url, &["token", "list"]).await;
    assert!(table.ok().lines().next().unwrap().starts_with("ID "), "{}", table.stdout);
    assert!(table.stdout.contains("ci:editor"), "{}", table.stdout);
    assert_eq!(rota(&url, &["token", "revoke", &ci_id]).await.ok(), format!("token {ci_id} (ci) revoked\n"));
    let out = common::rota_as(&url, Some(&ci), &["get", "task", "ci/job"]).await;
    assert!(out.stderr.contains("error: unauthenticated: ") && out.stderr.contains("revoked"), "{out:?}");

    // The audit log: who created the task, from where; the denied request.
    let audit = rota(&url, &["audit", "--action", "put_task", "-o", "json"]).await.json();
    assert_eq!(audit[0]["actor"], format!("token:{ci_id}"), "{audit:#}");
    assert_eq!(audit[0]["resource"], "/api/v1/tasks/ci/job");
    assert!(audit[0]["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{audit:#}");
    let table = rota(&url, &["audit", "--limit", "5"]).await;
    assert!(table.ok().contains("revoke_token"), "{}", table.stdout);
    let denied = rota(&url, &["audit", "--actor", &format!("token:{ci_id}"), "-o", "json"]).await.json();
    assert!(denied.as_array().unwrap().iter().any(|e| e["detail"]["outcome"] == "denied"), "{denied:#}");

    // A restart keeps the token: nothing new is created or written.
    assert!(server.terminate(Duration::from_secs(30)).success());
    let server = Server::start(&["--data-dir", &data_s]);
    assert!(!server.stdout().contains("rota admin token"), "{}", server.output());
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let out = common::rota_as(&server.url, None, &["--data-dir", &data_s, "get", "task", "ci/job", "-o", "json"]).await;
    assert_eq!(out.json()["name"], "job");
}
