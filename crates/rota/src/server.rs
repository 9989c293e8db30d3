//! `rota server`: wiring (store, executors, scheduler, API), startup banner and graceful shutdown.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rota_core::{Scheduler, SchedulerConfig, StoreLogSink};
use rota_executor::{ContainerExecutor, ContainerExecutorConfig, DockerRuntime, Router};
use rota_spec::TargetKind;
use rota_store::Store;
use rota_store_sql::SqlStore;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{ADMIN_TOKEN_FILE, SQLITE_FILE, ServerArgs, Settings, StoreLocation, redact_url};

/// How long the API may take to finish its in-flight requests after the scheduler has stopped.
const API_DRAIN: Duration = Duration::from_secs(10);

pub fn main(args: ServerArgs) -> ExitCode {
    init_logging();
    let settings = match Settings::resolve(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(settings));
    // Background tasks that ignore cancellation (e.g. a stuck connection) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Structured logs on stderr; `RUST_LOG` filters (default `info`). Run outcomes are logged by the core under
/// the target `rota::events`.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn open_store(location: &StoreLocation) -> anyhow::Result<(SqlStore, String)> {
    match location {
        StoreLocation::DataDir(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
            let path = dir.join(SQLITE_FILE);
            let store = SqlStore::open_sqlite(&path)
                .await
                .with_context(|| format!("cannot open the SQLite store {}", path.display()))?;
            Ok((store, format!("sqlite {}", path.display())))
        }
        StoreLocation::Url(url) => {
            let shown = redact_url(url);
            let store = SqlStore::connect(url).await.with_context(|| format!("cannot open the store {shown}"))?;
            let desc = format!("{} {shown}", store.backend_name());
            Ok((store, desc))
        }
    }
}

fn executors(settings: &Settings, store: Arc<dyn Store>) -> anyhow::Result<(Router, Option<ContainerExecutor>)> {
    let mut router = crate::security::dispatch_router(&settings.security)?;
    let runtime = match &settings.container_runtime {
        Some(endpoint) => Some(
            DockerRuntime::new(endpoint).map_err(|e| anyhow::anyhow!("invalid container runtime {endpoint:?}: {e}"))?,
        ),
        None => match DockerRuntime::from_env() {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(error = %e, "container targets are disabled ($DOCKER_HOST is not usable)");
                None
            }
        },
    };
    let containers = runtime.map(|rt| {
        let config = ContainerExecutorConfig { owner: settings.node_id.clone(), ..ContainerExecutorConfig::default() };
        ContainerExecutor::new(Arc::new(rt), Arc::new(StoreLogSink::new(store)), config)
    });
    if let Some(c) = &containers {
        router = router.with(TargetKind::Container, Arc::new(c.clone()));
    }
    Ok((router, containers))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    // First, so a signal during start-up or right after the banner stops the server gracefully.
    let mut signals = Signals::register();
    let (store, store_desc) = open_store(&settings.store).await?;
    let shared: Arc<dyn Store> = Arc::new(store.clone());

    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr: SocketAddr = listener.local_addr().context("cannot read the bound address")?;
    let public_url = settings.public_url.clone().or_else(|| {
        if addr.ip().is_unspecified() {
            tracing::warn!(
                "listening on a wildcard address without --public-url: executor nodes get no report URL, so \
                 asynchronous results and log appends are unavailable"
            );
            None
        } else {
            Some(format!("{}://{addr}", crate::security::scheme(&settings.security)))
        }
    });

    let (router, containers) = executors(&settings, shared.clone())?;
    let config = SchedulerConfig {
        node_id: settings.node_id.clone(),
        shard_count: settings.shards,
        public_url: public_url.clone(),
        shutdown_grace: settings.shutdown_grace,
        scan_interval: settings.scan_interval,
        lease_ttl: settings.lease_ttl,
        default_timeout: settings.default_timeout,
        max_in_flight: settings.max_in_flight,
        executor_ttl: settings.executor_ttl,
        ..SchedulerConfig::default()
    };
    let discovery =
        rota_discovery::build(shared.clone(), &settings.discovery).context("invalid [discovery] settings")?;
    let scheduler = Scheduler::new(shared, Arc::new(router), config).with_discovery(discovery);
    scheduler.start().await.context("cannot start the scheduler")?;
    if !store.supports_cluster() {
        tracing::info!("the {} store supports a single scheduler node", store.backend_name());
    }
    if let Some(containers) = containers {
        tokio::spawn(async move {
            match containers.cleanup_orphans().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed containers left behind by a previous run"),
                Err(e) => tracing::debug!(error = %e, "container runtime not reachable; skipped the orphan sweep"),
            }
        });
    }

    let bootstrap = match bootstrap_admin_token(&*shared_store(&scheduler), &settings.data_dir).await {
        Ok(b) => b,
        Err(e) => {
            scheduler.shutdown().await;
            return Err(e);
        }
    };
    let auth = match api_auth(&settings, shared_store(&scheduler)) {
        Ok(a) => a,
        Err(e) => {
            scheduler.shutdown().await;
            return Err(e);
        }
    };
    let app = rota_api::router(rota_api::ApiState::new(scheduler.clone()).with_auth(auth));
    let stop = CancellationToken::new();
    let api = {
        let stop = stop.clone();
        let tls = settings.security.tls.clone();
        tokio::spawn(crate::security::serve_api(listener, tls, app, stop.cancelled_owned()))
    };

    let demo = if settings.demo {
        match crate::demo::start(&scheduler).await {
            Ok(d) => Some(d),
            Err(e) => {
                stop.cancel();
                scheduler.shutdown().await;
                return Err(e.context("cannot start the demo"));
            }
        }
    } else {
        None
    };

    // One write, the address last: whoever waits for `rota listening on` has seen the whole banner.
    let mut banner = format!("rota store: {store_desc}\n");
    if let Some(path) = &bootstrap {
        banner.push_str(&format!(
            "rota admin token: created and written to {} (mode 0600; the CLI reads it with --data-dir)\n",
            path.display()
        ));
    }
    banner.push_str(&format!(
        "rota node: {} ({} shards{})\n",
        settings.node_id,
        settings.shards,
        public_url.as_deref().map(|u| format!(", public URL {u}")).unwrap_or_default()
    ));
    if let Some(d) = &demo {
        banner.push_str(&format!(
            "rota demo: executor on {}, task demo/hello fires every 5s (try `rota runs demo/hello`)\n",
            d.url()
        ));
    }
    banner.push_str(&format!("rota listening on {}://{addr}\n", crate::security::scheme(&settings.security)));
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    tracing::info!(address = %addr, store = %store_desc, node = %settings.node_id, "rota server ready");

    // Run until a signal (or the API server failing).
    let mut api = api;
    let api_result = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down: no new requests or fires; waiting for in-flight dispatches");
            None
        }
        res = &mut api => Some(res),
    };
    stop.cancel();
    tokio::spawn(async move {
        // A second signal while draining ends the process at once.
        let signal = signals.recv().await;
        eprintln!("rota: second {signal}; exiting without waiting");
        std::process::exit(130);
    });

    scheduler.shutdown().await;
    let api_result = match api_result {
        Some(res) => Some(res),
        None => match tokio::time::timeout(API_DRAIN, &mut api).await {
            Ok(res) => Some(res),
            Err(_) => {
                tracing::warn!("API requests still open after {}s; closing them", API_DRAIN.as_secs());
                api.abort();
                None
            }
        },
    };
    if let Some(d) = demo {
        d.stop().await;
    }
    store.close().await;
    match api_result {
        Some(Ok(Ok(()))) | None => {}
        Some(Ok(Err(e))) => return Err(anyhow::Error::new(e).context("the API server failed")),
        Some(Err(e)) => return Err(anyhow::Error::new(e).context("the API server task failed")),
    }
    tracing::info!("rota server stopped");
    println!("rota stopped");
    Ok(())
}

fn shared_store(scheduler: &Scheduler) -> Arc<dyn Store> {
    scheduler.store().clone()
}

/// The authentication of the API: Rota's API tokens, then (when `[auth.oidc]` is configured) OIDC bearer JWTs;
/// the role policy decides.
fn api_auth(settings: &Settings, store: Arc<dyn Store>) -> anyhow::Result<rota_api::Auth> {
    use rota_api::auth::{Auth, AuthChain, OidcAuthenticator, RolePolicy, TokenAuthenticator};
    let mut chain = AuthChain::new().with(Arc::new(TokenAuthenticator::new(store.clone())));
    if let Some(oidc) = &settings.oidc {
        tracing::info!(issuer = %oidc.issuer, audience = %oidc.audience, "accepting OIDC bearer tokens");
        let authenticator =
            OidcAuthenticator::new(oidc.clone(), store).map_err(|e| anyhow::anyhow!("invalid [auth.oidc]: {e}"))?;
        chain = chain.with(Arc::new(authenticator));
    }
    Ok(Auth::new(Arc::new(chain), Arc::new(RolePolicy)))
}

/// On first start (no usable cluster-admin token in the store), creates one and writes it to
/// `DATA_DIR/admin.token` with mode 0600. Returns the file's path when it did.
async fn bootstrap_admin_token(store: &dyn Store, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    use rota_store::{ALL_NAMESPACES, Grant, PageRequest, Role, TokenScope};
    let now = chrono::Utc::now();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_tokens(&PageRequest { cursor: cursor.clone(), limit: 1000 })
            .await
            .context("cannot read the API tokens")?;
        if page.items.iter().any(|t| t.scope.is_cluster_admin() && t.is_usable(now)) {
            return Ok(None);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let scope = TokenScope::User { grants: vec![Grant::new(ALL_NAMESPACES, Role::Admin)] };
    let issued = rota_api::auth::issue_token(store, "bootstrap admin", scope, "system", None, now)
        .await
        .context("cannot create the bootstrap admin token")?;
    if let Err(e) = write_secret_file(&path, &format!("{}\n", issued.token)) {
        // Do not leave a usable admin token nobody can read.
        let _ = store.revoke_token(&issued.record.id, chrono::Utc::now()).await;
        return Err(e).with_context(|| format!("cannot write the admin token to {}", path.display()));
    }
    tracing::info!(path = %path.display(), token_id = %issued.record.id, "created the bootstrap cluster-admin token");
    Ok(Some(path))
}

/// Writes `text` to `path`, readable and writable by the owner only (mode 0600, also when the file existed).
fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut f = options.open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut f = options.open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, registered when created: a signal that arrives at any later point (even before
/// anyone waits for it, e.g. right after the banner is printed) is kept, never left to its default action.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server"))
                .ok();
            let int = signal(SignalKind::interrupt())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGINT"))
                .ok();
            Signals { term, int }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Resolves on the next SIGINT or SIGTERM, naming it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.int) => "SIGINT",
                _ = next(&mut self.term) => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
