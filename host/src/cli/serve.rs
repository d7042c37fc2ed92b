//! `host serve`: the shared, multi-tenant host; and `host hash-token`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sluice_host::engine::{Core, CoreConfig};
use sluice_host::server::{self, ServerState, Tenants};
use sluice_host::udf::UdfRuntime;

/// How long stopping the host waits for its jobs' batches in flight.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `host serve`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on (the API and the ingest routes of submitted jobs).
    #[arg(long, value_name = "ADDR", default_value = server::DEFAULT_LISTEN)]
    pub listen: String,

    /// Where the host keeps its UDF registry, job table, checkpoints and state, and the default
    /// tenant's token. [default: $SLUICE_DATA_DIR, else $XDG_DATA_HOME/sluice, else
    /// ~/.local/share/sluice]
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// A config file declaring the tenants, their token hashes and quotas (see
    /// docs/architecture.md, "The shared host"). Without it there is one tenant, `default`,
    /// whose token is in `<data-dir>/default.token`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The data directory used when none is given.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sluice");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/sluice"),
        None => PathBuf::from(".sluice"),
    }
}

/// Run the host until Ctrl-C or SIGTERM.
pub fn run(args: &ServeArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    // Keep each job's lines for `host logs`.
    sluice_host::server::logs::JobLogs::global().enable();
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| {
        format!(
            "creating the data directory {}; choose another with --data-dir",
            data_dir.display()
        )
    })?;
    let tenants = match &args.config {
        Some(path) => Tenants::from_config(path)?,
        None => {
            let (tenants, created) = Tenants::default_in(&data_dir)?;
            if let Some(path) = &tenants.token_file {
                eprintln!(
                    "the default tenant's token is in {}{}",
                    path.display(),
                    if created {
                        " (created now, mode 0600)"
                    } else {
                        ""
                    }
                );
            }
            tenants
        }
    };
    // A worker pool per tenant: the OS shares the cores between tenants' busy threads.
    let core = Core::new(CoreConfig {
        pool_per_tenant: true,
        ..CoreConfig::default()
    })?;
    let state = ServerState::open(&data_dir, tenants, Arc::new(runtime), core.clone())?;
    // The jobs part of the API: the job table, and every job that was running resumed from its
    // checkpoint (once the registry is restored, so their UDFs resolve).
    let manager =
        server::jobs_api::manager(&state, Arc::new(sluice_host::metrics::Registry::default()))?;
    let (resumed, failed) = manager.resume_all();
    if !resumed.is_empty() || !failed.is_empty() {
        eprintln!(
            "jobs resumed: {}; failed to resume: {}",
            resumed.len(),
            failed.len()
        );
    }
    let routes = server::jobs_api::routes(manager.clone())
        .merge(server::rollout::routes(&state, manager.clone()));
    let app = server::with_routes(state, routes);
    let listen = args.listen.clone();
    core.handle().block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| {
            format!(
                "cannot listen on {listen}; is another host serving there? choose another address with --listen"
            )
        })?;
        let addr = listener.local_addr()?;
        eprintln!(
            "sluice host serving on http://{addr} (data in {})",
            data_dir.display()
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving the API")
    })?;
    manager.shutdown(SHUTDOWN_WAIT);
    eprintln!("sluice host stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// `host hash-token`: print the SHA-256 of the token read from stdin, as a config file's
/// `token_sha256` takes it.
pub fn hash_token() -> anyhow::Result<()> {
    let mut token = String::new();
    std::io::stdin()
        .read_line(&mut token)
        .context("reading the token from stdin")?;
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "no token on stdin; e.g. `openssl rand -hex 32 | tee acme.token | host hash-token`"
    );
    println!("{}", server::tenants::hash_token(token));
    Ok(())
}
