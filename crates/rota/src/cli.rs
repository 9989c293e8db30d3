//! The CLI commands: clients of the management API (through `rota-sdk`), plus the offline `validate`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use rota_sdk::{
    Applied, AuditFilter, Client, ClientError, ClusterView, ErrorDetail, ExecutorNodeView, LogLine, NewToken, Params,
    RunFilter, RunState, RunView, TaskDocument, TaskFilter, TaskView, TokenView, split_documents,
};
use serde::Serialize;
use serde_json::Value;

use crate::output::{self, Fields, Format, Table, cut, opt_time, time};
use crate::{
    ApplyArgs, AuditArgs, Command, DeleteCommand, GetCommand, GetNodesArgs, LogsArgs, RunsArgs, TokenCommand,
    ValidateArgs,
};

/// An error that has been printed already; only the exit code is left to set.
#[derive(Debug)]
struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(reported)")
    }
}

impl std::error::Error for Reported {}

/// The token the CLI sends: `--token`/`ROTA_TOKEN`, else the bootstrap admin token in `<data_dir>/admin.token`
/// when that file exists (a local server's data directory).
pub fn resolve_token(explicit: Option<String>, data_dir: &Path) -> Option<String> {
    if let Some(t) = explicit.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        return Some(t);
    }
    let path = data_dir.join(crate::config::ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("warning: cannot read {}: {e}", path.display());
            None
        }
    }
}

/// Runs a client command against the server at `server`, authenticating with `token`.
pub fn run(
    server: &str,
    ca_cert: Option<&std::path::Path>,
    token: Option<&str>,
    format: Format,
    command: Command,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let client = Client::with_ca_cert(server, ca_cert)?.with_token(token)?;
        execute(&client, format, command).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error: `error: <code>: <message>` and one `  <path>: <message>` line per detail.
fn report(e: &anyhow::Error) {
    if e.downcast_ref::<Reported>().is_some() {
        return;
    }
    if let Some(ce) = e.downcast_ref::<ClientError>() {
        print_client_error(ce, None, "");
        if ce.code() == Some("unauthenticated") {
            eprintln!("hint: pass --token (or ROTA_TOKEN), or --data-dir of a local server (its admin.token is read)");
        }
    } else {
        eprintln!("error: {e:#}");
    }
}

/// Prints a client error; `context` (a file name) is appended to the message, `prefix` to every detail path.
fn print_client_error(e: &ClientError, context: Option<&str>, prefix: &str) {
    let context = context.map(|c| format!(" (in {c})")).unwrap_or_default();
    match e.code() {
        Some(code) => eprintln!("error: {code}: {}{context}", e.message()),
        None => eprintln!("error: {e}{context}"),
    }
    for ErrorDetail { path, message } in e.details() {
        let path = if path == "(root)" && !prefix.is_empty() {
            prefix.trim_end_matches('.').to_string()
        } else {
            format!("{prefix}{path}")
        };
        eprintln!("  {path}: {message}");
    }
}

async fn execute(client: &Client, format: Format, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Apply(args) => apply(client, format, &args).await,
        Command::Get(GetCommand::Tasks(args)) => {
            let mut filter = TaskFilter { namespace: args.namespace, paused: args.paused, ..TaskFilter::default() };
            for l in args.labels.iter().flat_map(|l| l.split(',')).map(str::trim).filter(|l| !l.is_empty()) {
                let (k, v) = l.split_once('=').with_context(|| format!("invalid label {l:?}: expected key=value"))?;
                filter.labels.push((k.trim().to_string(), v.trim().to_string()));
            }
            let tasks = client.list_all_tasks(&filter).await?;
            if format != Format::Table {
                return output::print_data(format, &tasks);
            }
            if tasks.is_empty() {
                eprintln!("no tasks");
                return Ok(());
            }
            let mut table = Table::new(["NAMESPACE", "NAME", "SCHEDULE", "PAUSED", "NEXT FIRE", "VERSION", "LABELS"]);
            for t in &tasks {
                let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                table.row(vec![
                    t.namespace.clone(),
                    t.name.clone(),
                    cut(&t.schedule_summary(), 40),
                    yes_no(t.paused),
                    opt_time(t.next_fire_at.filter(|_| !t.paused)),
                    t.version.to_string(),
                    cut(&labels.join(","), 60),
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        Command::Get(GetCommand::Task(key)) => {
            let (ns, name) = task_key(&key.task)?;
            let task = client.get_task(&ns, &name).await?;
            if format != Format::Table {
                return output::print_data(format, &task);
            }
            print_task(&task)
        }
        Command::Get(GetCommand::Nodes(args)) => nodes(client, format, &args).await,
        Command::Delete(DeleteCommand::Task(key)) => {
            let (ns, name) = task_key(&key.task)?;
            client.delete_task(&ns, &name).await?;
            if format != Format::Table {
                return output::print_data(format, &serde_json::json!({"deleted": format!("{ns}/{name}")}));
            }
            println!("task {ns}/{name} deleted");
            Ok(())
        }
        Command::Trigger(args) => {
            let (ns, name) = task_key(&args.task)?;
            let params = parse_params(&args.params)?;
            let run = client.trigger(&ns, &name, params).await?;
            if format != Format::Table {
                return output::print_data(format, &run);
            }
            match run.state {
                RunState::Skipped => println!(
                    "run {} of {} skipped: {}",
                    run.id,
                    run.task,
                    run.reason.as_deref().unwrap_or("(no reason given)")
                ),
                state => println!("run {} of {} created ({state})", run.id, run.task),
            }
            Ok(())
        }
        Command::Runs(args) => runs(client, format, args).await,
        Command::Run(args) => {
            let detail = client.get_run(args.id).await?;
            if format != Format::Table {
                return output::print_data(format, &detail);
            }
            print_run(&detail.run);
            println!();
            if detail.attempts.is_empty() {
                println!("Attempts: none");
            } else {
                println!("Attempts:");
                let mut table = Table::new(["ATTEMPT", "NODE", "STATE", "STARTED", "DURATION", "ERROR"]);
                for a in &detail.attempts {
                    table.row(vec![
                        a.attempt.to_string(),
                        a.node.clone(),
                        a.state.to_string(),
                        time(a.started_at),
                        a.finished_at.map(|f| output::duration(a.started_at, f)).unwrap_or_else(|| "-".into()),
                        cut(a.error.as_deref().unwrap_or(""), 80),
                    ]);
                }
                for line in table.render().lines() {
                    println!("  {line}");
                }
            }
            Ok(())
        }
        Command::Logs(args) => logs(client, format, &args).await,
        Command::Pause(key) => pause_resume(client, format, &key.task, true).await,
        Command::Resume(key) => pause_resume(client, format, &key.task, false).await,
        Command::Cancel(args) => {
            let run = client.cancel_run(args.id, args.reason.as_deref()).await?;
            if format != Format::Table {
                return output::print_data(format, &run);
            }
            println!("run {} of {} cancelled", run.id, run.task);
            Ok(())
        }
        Command::Token(cmd) => token(client, format, cmd).await,
        Command::Audit(args) => audit(client, format, &args).await,
        Command::Server(_) | Command::Validate(_) => bail!("internal error: not a client command"),
    }
}

/// `rota token create|list|revoke`.
async fn token(client: &Client, format: Format, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => {
            let created = client
                .create_token(&NewToken {
                    name: args.name,
                    grants: args.grants,
                    executor_service: args.executor_service,
                    expires_in: args.expires_in,
                })
                .await?;
            if format != Format::Table {
                return output::print_data(format, &created);
            }
            eprintln!("token {} created; it is shown only this once:", created.info.id);
            println!("{}", created.token);
            Ok(())
        }
        TokenCommand::List => {
            let tokens = client.list_all_tokens().await?;
            if format != Format::Table {
                return output::print_data(format, &tokens);
            }
            if tokens.is_empty() {
                eprintln!("no tokens");
                return Ok(());
            }
            print!("{}", tokens_table(&tokens, chrono::Utc::now()));
            Ok(())
        }
        TokenCommand::Revoke(args) => {
            let t = client.revoke_token(&args.id).await?;
            if format != Format::Table {
                return output::print_data(format, &t);
            }
            println!("token {} ({}) revoked", t.id, t.name);
            Ok(())
        }
    }
}

fn tokens_table(tokens: &[TokenView], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut table = Table::new(["ID", "NAME", "SCOPE", "STATE", "EXPIRES", "CREATED", "CREATED BY"]);
    for t in tokens {
        let scope = match &t.executor_service {
            Some(s) => format!("executor:{s}"),
            None => t.grants.join(","),
        };
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        table.row(vec![
            t.id.clone(),
            cut(&t.name, 40),
            cut(&scope, 60),
            state.to_string(),
            opt_time(t.expires_at),
            time(t.created_at),
            t.created_by.clone(),
        ]);
    }
    table.render()
}

/// `rota audit`.
async fn audit(client: &Client, format: Format, args: &AuditArgs) -> anyhow::Result<()> {
    let instant = |name: &str, v: &Option<String>| -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
        v.as_deref()
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .with_context(|| format!("invalid --{name} {s:?}: expected an RFC 3339 instant"))
            })
            .transpose()
    };
    let filter = AuditFilter {
        actor: args.actor.clone(),
        action: args.action.clone(),
        resource: args.resource.clone(),
        from: instant("from", &args.from)?,
        to: instant("to", &args.to)?,
    };
    let page = client.audit(&filter, None, Some(args.limit)).await?;
    if format != Format::Table {
        return output::print_data(format, &page.items);
    }
    if page.items.is_empty() {
        eprintln!("no audit entries");
        return Ok(());
    }
    let mut table = Table::new(["ID", "AT", "ACTOR", "ACTION", "OUTCOME", "RESOURCE", "SOURCE"]);
    for e in &page.items {
        let outcome = match (e.detail["outcome"].as_str(), e.detail["reason"].as_str()) {
            (Some("denied"), Some(reason)) => format!("denied ({reason})"),
            (Some(o), _) => o.to_string(),
            (None, _) => "-".to_string(),
        };
        table.row(vec![
            e.id.to_string(),
            time(e.at),
            e.actor.clone(),
            e.action.clone(),
            outcome,
            cut(&e.resource, 60),
            e.source.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{}", table.render());
    if page.next_cursor.is_some() {
        eprintln!("(showing the newest {}; use --limit for more)", page.items.len());
    }
    Ok(())
}

async fn pause_resume(client: &Client, format: Format, key: &str, pause: bool) -> anyhow::Result<()> {
    let (ns, name) = task_key(key)?;
    let task = if pause { client.pause(&ns, &name).await? } else { client.resume(&ns, &name).await? };
    if format != Format::Table {
        return output::print_data(format, &task);
    }
    println!("task {} {}", task.key(), if pause { "paused" } else { "resumed" });
    Ok(())
}

/// `rota get nodes [--schedulers | --executors] [--service S]`: the scheduler cluster, then the executor nodes.
async fn nodes(client: &Client, format: Format, args: &GetNodesArgs) -> anyhow::Result<()> {
    let schedulers = !args.executors && args.service.is_none();
    let executors = !args.schedulers;
    let cluster = if schedulers { Some(client.cluster().await?) } else { None };
    let nodes = if executors { Some(client.executors(args.service.as_deref()).await?) } else { None };
    if format != Format::Table {
        return match (cluster, nodes) {
            (Some(c), None) => output::print_data(format, &c),
            (None, Some(n)) => output::print_data(format, &n),
            (c, n) => output::print_data(format, &serde_json::json!({"schedulers": c, "executors": n})),
        };
    }
    let mut out = String::new();
    if let Some(c) = &cluster {
        out.push_str(&nodes_table(c));
    }
    if let Some(n) = &nodes {
        if cluster.is_some() {
            out.push('\n');
        }
        out.push_str(&executors_table(n));
    }
    print!("{out}");
    Ok(())
}

/// The table of executor nodes.
fn executors_table(nodes: &[ExecutorNodeView]) -> String {
    if nodes.is_empty() {
        return "no executor nodes\n".to_string();
    }
    let mut table =
        Table::new(["EXECUTOR", "SERVICE", "STATE", "ALIVE", "PROTOCOL", "ADDRESS", "WEIGHT", "CAPACITY", "LABELS"]);
    for n in nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        table.row(vec![
            n.id.clone(),
            n.service.clone(),
            n.state.clone(),
            yes_no(n.alive),
            n.protocol.clone(),
            n.address.clone(),
            n.weight.to_string(),
            if n.capacity == 0 { "-".to_string() } else { n.capacity.to_string() },
            cut(&labels.join(","), 40),
        ]);
    }
    table.render()
}

/// The table of scheduler nodes and the line of unowned shards.
fn nodes_table(cluster: &ClusterView) -> String {
    let mut out = String::new();
    if cluster.nodes.is_empty() {
        out.push_str("no scheduler nodes\n");
    } else {
        let mut table = Table::new(["NODE", "ALIVE", "SHARDS", "LEASE EXPIRES", "LAG", "ADDRESS"]);
        for n in &cluster.nodes {
            let shards = if n.shards.is_empty() {
                "0".to_string()
            } else {
                format!("{} ({})", n.shards_held, shard_ranges(&n.shards))
            };
            let address = match (n.registered, n.address.is_empty()) {
                (false, _) => "(not registered)".to_string(),
                (true, true) => "-".to_string(),
                (true, false) => n.address.clone(),
            };
            table.row(vec![
                n.id.clone(),
                yes_no(n.alive),
                cut(&shards, 40),
                opt_time(n.lease_expires_at),
                output::millis(n.lag_ms),
                address,
            ]);
        }
        out.push_str(&table.render());
    }
    let unowned = &cluster.unowned_shards;
    out.push_str(&format!("unowned shards: {} of {}", unowned.len(), cluster.shard_count));
    if !unowned.is_empty() {
        out.push_str(&format!(" ({})", cut(&shard_ranges(unowned), 80)));
    }
    out.push('\n');
    out
}

/// Ascending shard numbers as ranges: `0-3,7,9-10`.
fn shard_ranges(shards: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        let mut end = start;
        while i + 1 < shards.len() && shards[i + 1] == end + 1 {
            end = shards[i + 1];
            i += 1;
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

/// `NS/NAME`, or a bare `NAME` in namespace `default`.
fn task_key(s: &str) -> anyhow::Result<(String, String)> {
    let s = s.trim();
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        None if !s.is_empty() => Ok(("default".to_string(), s.to_string())),
        _ => bail!("invalid task {s:?}: expected NAMESPACE/NAME"),
    }
}

/// `key=value` pairs; each value is JSON when it parses as JSON, else a string.
fn parse_params(pairs: &[String]) -> anyhow::Result<Params> {
    let mut params = Params::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').with_context(|| format!("invalid --param {pair:?}: expected key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            bail!("invalid --param {pair:?}: the key is empty");
        }
        let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        params.insert(k.to_string(), value);
    }
    Ok(params)
}

fn print_task(t: &TaskView) -> anyhow::Result<()> {
    let mut f = Fields::default();
    f.add("Task", t.key());
    f.add("Version", t.version.to_string());
    let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    f.add("Labels", if labels.is_empty() { "-".into() } else { labels.join(", ") });
    if let Some(d) = t.spec["metadata"]["description"].as_str() {
        f.add("Description", d);
    }
    f.add("Schedule", t.schedule_summary());
    f.add("Paused", yes_no(t.paused));
    f.add("Next fire", opt_time(t.next_fire_at.filter(|_| !t.paused)));
    f.add("Created", time(t.created_at));
    f.add("Updated", time(t.updated_at));
    print!("{}", f.render());
    println!("Document:");
    for line in serde_yaml::to_string(&t.spec)?.lines() {
        println!("  {line}");
    }
    Ok(())
}

fn print_run(r: &RunView) {
    let mut f = Fields::default();
    f.add("Run", r.id.to_string());
    f.add("Task", format!("{} (version {})", r.task, r.task_version));
    f.add("State", r.state.to_string());
    f.add("Trigger", r.trigger.to_string());
    f.add("Scheduled", time(r.scheduled_at));
    f.add("Started", opt_time(r.started_at));
    f.add("Finished", opt_time(r.finished_at));
    if let (Some(s), Some(e)) = (r.started_at, r.finished_at) {
        f.add("Duration", output::duration(s, e));
    }
    if let Some(next) = r.next_attempt_at.filter(|_| !r.state.is_terminal()) {
        let label = if r.state == RunState::Scheduled { "Next attempt" } else { "Deadline" };
        f.add(label, time(next));
    }
    f.add("Attempts", r.attempts.to_string());
    if let Some(owner) = &r.owner {
        f.add("Node", owner.clone());
    }
    if r.params.as_object().is_some_and(|p| !p.is_empty()) {
        f.add("Params", r.params.to_string());
    }
    if let Some(out) = &r.output {
        f.add("Output", serde_json::to_string_pretty(out).unwrap_or_default());
    }
    if let Some(e) = &r.error {
        f.add("Error", e.clone());
    }
    if let Some(reason) = &r.reason {
        f.add("Reason", reason.clone());
    }
    print!("{}", f.render());
}

async fn runs(client: &Client, format: Format, args: RunsArgs) -> anyhow::Result<()> {
    let mut filter = RunFilter { namespace: args.namespace, ..RunFilter::default() };
    if let Some(t) = &args.task {
        filter.task = Some(task_key(t)?);
    }
    for s in args.states.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let state: RunState = s.parse().map_err(|e| anyhow::anyhow!("invalid --state: {e}"))?;
        filter.states.push(state);
    }
    let page = client.list_runs(&filter, None, Some(args.limit)).await?;
    if format != Format::Table {
        return output::print_data(format, &page.items);
    }
    if page.items.is_empty() {
        eprintln!("no runs");
        return Ok(());
    }
    let mut table = Table::new(["ID", "TASK", "STATE", "TRIGGER", "SCHEDULED", "ATTEMPTS", "DURATION", "MESSAGE"]);
    for r in &page.items {
        let duration = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => output::duration(s, f),
            _ => "-".into(),
        };
        let message = r.error.as_deref().or(r.reason.as_deref()).unwrap_or("");
        table.row(vec![
            r.id.to_string(),
            r.task.clone(),
            r.state.to_string(),
            r.trigger.to_string(),
            time(r.scheduled_at),
            r.attempts.to_string(),
            duration,
            cut(message, 60),
        ]);
    }
    print!("{}", table.render());
    if page.next_cursor.is_some() {
        eprintln!("(showing the newest {}; use --limit for more)", page.items.len());
    }
    Ok(())
}

async fn logs(client: &Client, format: Format, args: &LogsArgs) -> anyhow::Result<()> {
    let mut after = args.after;
    let mut all: Vec<LogLine> = Vec::new();
    loop {
        let page = client.logs(args.id, after, Some(1000)).await?;
        let got = page.items.len();
        after = page.next_after;
        if format == Format::Table {
            for l in &page.items {
                println!("{} [{}] {}", time(l.at), l.stream, l.line);
            }
        } else {
            all.extend(page.items);
        }
        if got > 0 {
            continue;
        }
        if !args.follow || client.get_run(args.id).await?.run.state.is_terminal() {
            // One last read: lines appended between the previous read and the run finishing.
            if args.follow {
                let page = client.logs(args.id, after, Some(1000)).await?;
                if format == Format::Table {
                    for l in &page.items {
                        println!("{} [{}] {}", time(l.at), l.stream, l.line);
                    }
                } else {
                    all.extend(page.items);
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if format != Format::Table {
        return output::print_data(format, &all);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// apply
// ---------------------------------------------------------------------------------------------------------------

/// One task document read from a file.
struct SourceDocument {
    /// The file (or `-`).
    file: String,
    /// Index in the file's YAML stream, when the file holds more than one document.
    index: Option<usize>,
    text: String,
}

impl SourceDocument {
    fn path_prefix(&self) -> String {
        self.index.map(|i| format!("documents[{i}].")).unwrap_or_default()
    }
}

/// The files named by `-f` arguments: files as given, directories expanded to their `.yaml`, `.yml` and `.json`
/// files (sorted, not recursive).
fn expand_files(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in args {
        if p.as_os_str() == "-" {
            out.push(p.clone());
        } else if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && has_task_extension(f))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{}: no .yaml, .yml or .json files in the directory", p.display());
            }
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

fn has_task_extension(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
        Some("yaml" | "yml" | "json")
    )
}

fn read_source(path: &Path) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        return Ok(("-".into(), text));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

/// The documents of one file: JSON files (by extension or a leading `{`) are one document; YAML is split at `---`.
fn documents_of(file: &str, text: &str) -> Vec<SourceDocument> {
    let is_json = file.to_ascii_lowercase().ends_with(".json") || text.trim_start().starts_with('{');
    if is_json {
        return vec![SourceDocument { file: file.to_string(), index: None, text: text.to_string() }];
    }
    let docs = split_documents(text);
    let multi = docs.len() > 1 || docs.iter().any(|d| d.index > 0);
    docs.into_iter()
        .map(|d| SourceDocument { file: file.to_string(), index: multi.then_some(d.index), text: d.text })
        .collect()
}

#[derive(Serialize)]
struct ApplyResult<'a> {
    action: &'static str,
    task: &'a TaskView,
}

async fn apply(client: &Client, format: Format, args: &ApplyArgs) -> anyhow::Result<()> {
    let files = expand_files(&args.files)?;
    let mut applied: Vec<Applied> = Vec::new();
    let mut failures = 0;
    for path in files {
        let (file, text) = read_source(&path)?;
        let docs = documents_of(&file, &text);
        if docs.is_empty() {
            eprintln!("error: {file}: no task documents");
            failures += 1;
            continue;
        }
        for doc in docs {
            match client.apply(TaskDocument::Text(doc.text.clone())).await {
                Ok(a) => {
                    if format == Format::Table {
                        println!("task {} {}", a.task.key(), a.action());
                    }
                    applied.push(a);
                }
                Err(e @ (ClientError::Api { .. } | ClientError::InvalidDocument { .. })) => {
                    print_client_error(&e, Some(&doc.file), &doc.path_prefix());
                    failures += 1;
                }
                // The server is unreachable or broken: stop at once.
                Err(e) => return Err(e.into()),
            }
        }
    }
    if format != Format::Table {
        let results: Vec<ApplyResult> =
            applied.iter().map(|a| ApplyResult { action: a.action(), task: &a.task }).collect();
        output::print_data(format, &results)?;
    }
    if failures > 0 { Err(Reported.into()) } else { Ok(()) }
}

// ---------------------------------------------------------------------------------------------------------------
// validate (offline)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    valid: bool,
    /// `namespace/name` of every valid task.
    tasks: Vec<String>,
    problems: Vec<ErrorDetail>,
}

fn validate_file(file: &str, text: &str) -> FileReport {
    let mut report = FileReport { file: file.to_string(), valid: true, tasks: Vec::new(), problems: Vec::new() };
    let docs = documents_of(file, text);
    if docs.is_empty() {
        report.problems.push(ErrorDetail { path: "(root)".into(), message: "no task documents".into() });
    }
    let mut tasks: Vec<(String, rota_spec::Task)> = Vec::new();
    for doc in &docs {
        let prefix = doc.path_prefix();
        match rota_spec::parse_str(&doc.text) {
            Ok(task) => {
                if let Some((other, _)) = tasks.iter().find(|(_, t)| t.key() == task.key()) {
                    report.problems.push(ErrorDetail {
                        path: format!("{prefix}metadata.name"),
                        message: format!("task {} is defined twice in this file (also at {other})", task.key()),
                    });
                }
                let at =
                    if prefix.is_empty() { "(root)".to_string() } else { prefix.trim_end_matches('.').to_string() };
                tasks.push((at, task));
            }
            Err(e) => {
                for fe in e.field_errors() {
                    let path = if fe.path == rota_spec::ROOT_PATH && !prefix.is_empty() {
                        prefix.trim_end_matches('.').to_string()
                    } else {
                        format!("{prefix}{}", fe.path)
                    };
                    report.problems.push(ErrorDetail { path, message: fe.message });
                }
            }
        }
    }
    let all: Vec<rota_spec::Task> = tasks.iter().map(|(_, t)| t.clone()).collect();
    if let Err(cycle) = rota_spec::check_tasks_acyclic(&all) {
        report.problems.push(ErrorDetail { path: "spec.after".into(), message: cycle.to_string() });
    }
    report.tasks = all.iter().map(rota_spec::Task::key).collect();
    report.valid = report.problems.is_empty();
    report
}

/// `rota validate -f FILE|DIR`: exit code 0 when every document is valid, 1 otherwise.
pub fn validate(args: &ValidateArgs, format: Format) -> ExitCode {
    let files = match expand_files(&args.files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut reports = Vec::new();
    for path in files {
        match read_source(&path) {
            Ok((file, text)) => reports.push(validate_file(&file, &text)),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let valid = reports.iter().all(|r| r.valid);
    if format == Format::Table {
        for r in &reports {
            if r.valid {
                println!("{}: valid ({})", r.file, r.tasks.join(", "));
            } else {
                let n = r.problems.len();
                println!("{}: invalid ({n} problem{})", r.file, if n == 1 { "" } else { "s" });
                for p in &r.problems {
                    println!("  {}: {}", p.path, p.message);
                }
            }
        }
    } else if let Err(e) = output::print_data(format, &reports) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    if valid { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tables_show_shards_lag_and_unowned_shards() {
        assert_eq!(shard_ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(shard_ranges(&[]), "");
        let cluster: ClusterView = serde_json::from_value(serde_json::json!({
            "backend": "postgres", "supports_cluster": true, "shard_count": 8, "now": "2026-01-01T00:00:00Z",
            "nodes": [
                {"id": "a", "address": "http://a:7070", "registered": true, "state": "active", "alive": true,
                 "shards": [0, 1, 2, 4], "shards_held": 4, "lease_expires_at": "2026-01-01T00:00:05Z",
                 "lag_ms": 1500},
                {"id": "b", "address": "", "registered": true, "state": "active", "alive": false,
                 "shards": [], "shards_held": 0, "lease_expires_at": null, "lag_ms": 0},
                {"id": "c", "address": "", "registered": false, "state": null, "alive": true,
                 "shards": [3], "shards_held": 1, "lease_expires_at": "2026-01-01T00:00:07Z", "lag_ms": 0}
            ],
            "unowned_shards": [5, 6, 7]
        }))
        .unwrap();
        assert_eq!(
            nodes_table(&cluster),
            "NODE   ALIVE   SHARDS      LEASE EXPIRES          LAG    ADDRESS\n\
             a      yes     4 (0-2,4)   2026-01-01T00:00:05Z   1.5s   http://a:7070\n\
             b      no      0           -                      0ms    -\n\
             c      yes     1 (3)       2026-01-01T00:00:07Z   0ms    (not registered)\n\
             unowned shards: 3 of 8 (5-7)\n"
        );
        let empty = ClusterView { nodes: Vec::new(), unowned_shards: (0..8).collect(), ..cluster };
        assert_eq!(nodes_table(&empty), "no scheduler nodes\nunowned shards: 8 of 8 (0-7)\n");
    }

    #[test]
    fn task_keys() {
        assert_eq!(task_key("a/b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(task_key("b").unwrap(), ("default".into(), "b".into()));
        assert!(task_key("a/").is_err());
        assert!(task_key("a/b/c").is_err());
        assert!(task_key("").is_err());
    }

    #[test]
    fn params_are_json_when_they_parse() {
        let p = parse_params(&["n=5".into(), "s=hello".into(), "b=true".into(), "o={\"a\":1}".into(), "e=".into()])
            .unwrap();
        assert_eq!(Value::Object(p), serde_json::json!({"n": 5, "s": "hello", "b": true, "o": {"a": 1}, "e": ""}));
        assert!(parse_params(&["novalue".into()]).is_err());
        assert!(parse_params(&["=x".into()]).is_err());
    }

    #[test]
    fn validation_reports_every_problem_with_document_paths() {
        let good = "apiVersion: rota/v1\nkind: Task\nmetadata: {name: a}\nspec:\n  schedule: {every: 5s}\n  target: {http: {path: /x}}\n  candidates: {static: [\"http://127.0.0.1:1\"]}\n";
        let r = validate_file("one.yaml", good);
        assert!(r.valid, "{:?}", r.problems);
        assert_eq!(r.tasks, ["default/a"]);

        let bad = format!(
            "{good}---\napiVersion: rota/v1\nkind: Task\nmetadata: {{name: b}}\nspec:\n  schedule: {{every: 5s}}\n  target: {{http: {{path: /x}}}}\n  candidates: {{static: [\"http://127.0.0.1:1\"]}}\n  tagret: 1\n"
        );
        let r = validate_file("two.yaml", &bad);
        assert!(!r.valid);
        assert!(r.problems.iter().any(|p| p.path.starts_with("documents[1].spec.tagret")), "{:?}", r.problems);

        let r = validate_file("dup.yaml", &format!("{good}---\n{good}"));
        assert!(r.problems.iter().any(|p| p.path == "documents[1].metadata.name"), "{:?}", r.problems);
        assert!(!validate_file("empty.yaml", "# nothing\n").valid);
    }
}
