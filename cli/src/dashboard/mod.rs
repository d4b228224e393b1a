//! `taxi-pipeline dashboard`: the live dashboard in a browser. One page and a
//! small JSON API, served by this process, which reads the indices with the
//! report's [`SearchReader`] (so the close-windows function's three ways to
//! authenticate; credentials stay here, the browser only sees the API).
//!
//! - [`api`]: the JSON endpoints, their parameters and errors.
//! - [`progress`]: the closer's progress (global watermark, dead letters)
//!   from the pipeline's DynamoDB table, when one is given.
//! - [`assets`]: the page, its script and Leaflet, embedded in the binary.
//!
//! `taxi-pipeline local` serves the same dashboard during its run.

pub mod api;
pub mod assets;
pub mod progress;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use aws_config::BehaviorVersion;
use taxi_aws::dynamo::DynamoStore;
use taxi_aws::search::SearchConfig;
use taxi_core::geo::Areas;
use tokio::net::TcpListener;

use self::progress::TableProgress;
use crate::report::query::SearchReader;
use crate::report::{ReportError, SearchArgs};

/// Where the dashboard listens unless told otherwise: loopback only, since
/// the page shows whatever the indices hold to anyone who reaches it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub search: SearchArgs,
    /// Address and port to serve the page on (port 0: any free one).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The pipeline's DynamoDB table: the status strip then shows the global
    /// watermark and the dead letters (AWS credentials and region from the SDK's chain).
    #[arg(long, env = "TABLE_NAME")]
    pub table: Option<String>,
}

/// What the API serves from: the indices, the areas drawn, and optionally
/// the closer's progress.
pub struct Dashboard {
    pub(crate) reader: SearchReader,
    pub(crate) search: SearchConfig,
    pub(crate) areas: Areas,
    pub(crate) progress: Option<TableProgress>,
}

impl Dashboard {
    pub fn new(search: SearchConfig, areas: Areas, progress: Option<TableProgress>) -> Result<Dashboard, ReportError> {
        Ok(Dashboard { reader: SearchReader::new(&search)?, search, areas, progress })
    }
}

/// A dashboard bound to its address, not serving yet.
pub struct DashboardServer {
    listener: TcpListener,
    dashboard: Arc<Dashboard>,
}

impl DashboardServer {
    /// Binds `address`; a port in use is an error that says so.
    pub async fn bind(address: SocketAddr, dashboard: Dashboard) -> anyhow::Result<DashboardServer> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot serve the dashboard on {address} (is another one running? choose another with --listen)"))?;
        Ok(DashboardServer { listener, dashboard: Arc::new(dashboard) })
    }

    /// `http://host:port/`, the page's address.
    pub fn url(&self) -> String {
        match self.listener.local_addr() {
            Ok(address) => format!("http://{address}/"),
            Err(_) => "(unknown address)".to_owned(),
        }
    }

    /// Serves until the future is dropped (or the listener fails).
    pub async fn serve(self) -> std::io::Result<()> {
        axum::serve(self.listener, api::router(self.dashboard)).await
    }
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let (search, areas) = args.search.search_config().await?;
    let progress = match &args.table {
        Some(table) => {
            let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
            let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
            Some(TableProgress::new(store, &search.documents))
        }
        None => None,
    };
    let server = DashboardServer::bind(args.listen, Dashboard::new(search.clone(), areas, progress)?).await?;
    println!("dashboard of {} at {} (Ctrl-C stops it)", search.endpoint, server.url());
    tokio::select! {
        served = server.serve() => served.context("serving the dashboard")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Binds `listen` if given (an error if that fails); else [`DEFAULT_LISTEN`],
/// or any free loopback port when that one is taken (a second run, say).
pub async fn bind_given_or_default(listen: Option<SocketAddr>, dashboard: Dashboard) -> anyhow::Result<DashboardServer> {
    if let Some(address) = listen {
        return DashboardServer::bind(address, dashboard).await;
    }
    let default: SocketAddr = DEFAULT_LISTEN.parse().expect("a socket address");
    match TcpListener::bind(default).await {
        Ok(listener) => Ok(DashboardServer { listener, dashboard: Arc::new(dashboard) }),
        Err(_) => DashboardServer::bind(SocketAddr::new(default.ip(), 0), dashboard).await,
    }
}
