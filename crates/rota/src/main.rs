//! `rota`: the Rota server (`rota server`) and the command-line client of its management API.
//!
//! The CLI commands talk to a running server only through the public API (via `rota-sdk`); `rota validate` is
//! the one offline command.

mod cli;
mod config;
mod demo;
mod output;
mod security;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "rota",
    version,
    about = "Rota: a distributed task scheduler — the server and its command-line client",
    long_about = "Rota: a distributed task scheduler.\n\n\
        `rota server` runs a scheduler node (embedded SQLite by default, PostgreSQL or MySQL with --database-url).\n\
        Every other command is a client of a server's management API (--server, env ROTA_SERVER), except\n\
        `rota validate`, which checks task documents offline.",
    propagate_version = true
)]
pub struct Cli {
    /// Base URL of the Rota server the CLI commands talk to.
    #[arg(long, global = true, env = "ROTA_SERVER", default_value = "http://127.0.0.1:7070", value_name = "URL")]
    pub server: String,
    /// API token (or OIDC bearer token) the CLI commands send. Default: the bootstrap admin token in
    /// `<data-dir>/admin.token`, when that file exists.
    #[arg(long, global = true, env = "ROTA_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Data directory of a local server, where the CLI looks for `admin.token` when no token is given.
    #[arg(long = "data-dir", env = "ROTA_DATA_DIR", default_value = config::DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// PEM CA bundle trusted for an https:// server (in addition to the system's roots).
    #[arg(long, global = true, env = "ROTA_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Output format of the CLI commands.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scheduler node: store, scheduler, executors and the management API.
    Server(Box<config::ServerArgs>),
    /// Create or replace tasks from YAML (multi-document) or JSON files, or every such file in a directory.
    Apply(ApplyArgs),
    /// List tasks, or show one.
    #[command(subcommand)]
    Get(GetCommand),
    /// Delete a task (its runs stay as history).
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Fire a task now.
    Trigger(TriggerArgs),
    /// List the runs of a task (or of every task), newest first.
    Runs(RunsArgs),
    /// Show one run with its attempts.
    Run(RunArgs),
    /// Print the log lines of a run.
    Logs(LogsArgs),
    /// Pause a task: it stops firing until resumed.
    Pause(TaskKeyArg),
    /// Resume a paused task (the paused time is not replayed).
    Resume(TaskKeyArg),
    /// Cancel a run that has not finished.
    Cancel(CancelArgs),
    /// Check task documents offline (parse and validate); prints every problem with its field path.
    Validate(ValidateArgs),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit log (cluster admin): successful mutations and denied requests, newest first.
    Audit(AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create(TokenCreateArgs),
    /// List the tokens you may manage.
    List,
    /// Revoke a token by id.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name to recognise the token by.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A role in a namespace: `NAMESPACE:ROLE` (`billing:editor`, `*:viewer`); roles: viewer, operator, editor,
    /// admin. Repeatable.
    #[arg(short = 'g', long = "grant", value_name = "NS:ROLE", required_unless_present = "executor_service")]
    pub grants: Vec<String>,
    /// An executor node credential for this service instead of grants.
    #[arg(long, value_name = "SERVICE", conflicts_with = "grants")]
    pub executor_service: Option<String>,
    /// Lifetime (e.g. `720h`); default: no expiry.
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token id (`rota token list`).
    #[arg(value_name = "ID")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries of this actor (`token:<id>`, `oidc:<subject>`, `anonymous`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries of this operation (`put_task`, `cancel_run`, …).
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries whose path starts with this prefix.
    #[arg(long, value_name = "PREFIX")]
    pub resource: Option<String>,
    /// Only entries at or after this RFC 3339 instant.
    #[arg(long, value_name = "INSTANT")]
    pub from: Option<String>,
    /// Only entries before this RFC 3339 instant.
    #[arg(long, value_name = "INSTANT")]
    pub to: Option<String>,
    /// At most this many entries (1..=1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A task file (.yaml, .yml, .json), a directory of them, or `-` for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// List tasks.
    Tasks(GetTasksArgs),
    /// Show one task and its document.
    Task(TaskKeyArg),
    /// List the nodes of the cluster: the scheduler nodes sharing the store, the shards each holds (lease expiry,
    /// lag) and the shards nobody holds.
    #[command(long_about = "List the nodes of the cluster.\n\n\
        First the scheduler nodes sharing the server's store: whether each is alive, the shards it holds, when its \
        earliest lease expires, how far behind it is (the oldest overdue task of its shards) and its address, then \
        the shards nobody holds. A node that holds leases without a registry row is shown as `(not registered)`.\n\n\
        Then the executor nodes registered with the cluster: their service, state (active or draining), whether \
        their registration is alive, protocol, address, weight, capacity and labels. `--schedulers` or \
        `--executors` shows only one of the two; `--service` only the executor nodes of one service. With \
        `-o json`, `--schedulers` prints the cluster view, `--executors` the list of executor nodes, and neither \
        an object with both (`schedulers`, `executors`).")]
    Nodes(GetNodesArgs),
}

#[derive(Debug, Args)]
pub struct GetNodesArgs {
    /// Only scheduler nodes.
    #[arg(long, conflicts_with = "executors")]
    pub schedulers: bool,
    /// Only executor nodes.
    #[arg(long)]
    pub executors: bool,
    /// Only executor nodes of this service.
    #[arg(long, value_name = "SERVICE", conflicts_with = "schedulers")]
    pub service: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetTasksArgs {
    /// Only tasks of this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only tasks with this label (`key=value`; repeatable or comma-separated; all must match).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Only paused (`true`) or running (`false`) tasks.
    #[arg(long)]
    pub paused: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum DeleteCommand {
    /// Delete a task.
    Task(TaskKeyArg),
}

#[derive(Debug, Args)]
pub struct TaskKeyArg {
    /// The task: `NAMESPACE/NAME` (a bare `NAME` means namespace `default`).
    #[arg(value_name = "NS/NAME")]
    pub task: String,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The task: `NAMESPACE/NAME`.
    #[arg(value_name = "NS/NAME")]
    pub task: String,
    /// A parameter for this run, merged over the task's params (`key=value`; the value is parsed as JSON when it
    /// is valid JSON, else taken as a string). Repeatable.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The task: `NAMESPACE/NAME`; omitted: runs of every task.
    #[arg(value_name = "NS/NAME")]
    pub task: Option<String>,
    /// Only runs of tasks in this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only runs in this state (scheduled, dispatching, running, succeeded, failed, timed_out, skipped,
    /// cancelled; repeatable or comma-separated).
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// At most this many runs (1..=1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run id.
    #[arg(value_name = "RUN_ID")]
    pub id: i64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run id.
    #[arg(value_name = "RUN_ID")]
    pub id: i64,
    /// Keep printing new lines until the run has finished.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The run id.
    #[arg(value_name = "RUN_ID")]
    pub id: i64,
    /// Recorded as the run's reason.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A task file (.yaml, .yml, .json), a directory of them, or `-` for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true)]
    pub files: Vec<PathBuf>,
}

/// CLI commands end quietly when their output pipe closes (`rota runs | head`), like other command-line tools:
/// the default action of SIGPIPE. (Rust ignores SIGPIPE, and then every `print!` to a closed pipe panics.) The
/// server keeps ignoring it: a closed stdout must not stop a scheduler.
fn exit_on_closed_pipe() {
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Server(_)) {
        exit_on_closed_pipe();
    }
    match cli.command {
        Command::Server(args) => server::main(*args),
        Command::Validate(args) => cli::validate(&args, cli.output),
        command => {
            let token = cli::resolve_token(cli.token, &cli.data_dir);
            cli::run(&cli.server, cli.ca_cert.as_deref(), token.as_deref(), cli.output, command)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["rota", "get", "tasks", "-o", "json", "--server", "http://h:1"]).unwrap();
        assert_eq!((cli.output, cli.server.as_str()), (Format::Json, "http://h:1"));
        let cli = Cli::try_parse_from(["rota", "-o", "yaml", "trigger", "a/b", "--param", "x=1", "-p", "y=z"]).unwrap();
        match cli.command {
            Command::Trigger(t) => assert_eq!(t.params, ["x=1", "y=z"]),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "rota",
            "--data-dir",
            "/d",
            "token",
            "create",
            "ci",
            "-g",
            "a:viewer",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!((cli.data_dir.to_str(), cli.token.as_deref()), (Some("/d"), Some("t")));
        match cli.command {
            Command::Token(TokenCommand::Create(c)) => assert_eq!(c.grants, ["a:viewer"]),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["rota", "token", "create", "ci"]).is_err(), "a grant or a service is needed");
        let cli = Cli::try_parse_from(["rota", "get", "nodes", "--schedulers", "-o", "json"]).unwrap();
        match cli.command {
            Command::Get(GetCommand::Nodes(n)) => assert!(n.schedulers),
            other => panic!("{other:?}"),
        }
    }
}
