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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    #[test]
    fn the_dashboard_and_local_command_lines() {
        let cli =
            Cli::try_parse_from(["taxi-pipeline", "dashboard", "--es-endpoint", "https://search.example", "--table", "taxi"]).unwrap();
        let Command::Dashboard(args) = cli.command else { panic!("dashboard") };
        assert_eq!((args.listen, args.table.as_deref()), (DEFAULT_LISTEN.parse().unwrap(), Some("taxi")));
        assert!(Cli::try_parse_from(["taxi-pipeline", "dashboard", "--listen", "8080"]).is_err(), "an address and a port");

        let local = |extra: &[&str]| Cli::try_parse_from(["taxi-pipeline", "local"].iter().chain(extra));
        let Command::Local(args) = local(&["--listen", "0.0.0.0:9000", "--keep-serving"]).unwrap().command else { panic!("local") };
        assert_eq!((args.listen, args.keep_serving, args.no_dashboard), (Some("0.0.0.0:9000".parse().unwrap()), true, false));
        let Command::Local(args) = local(&[]).unwrap().command else { panic!("local") };
        assert_eq!((args.listen, args.keep_serving), (None, false), "the default address, or any free port");
        assert!(local(&["--no-dashboard", "--keep-serving"]).is_err(), "nothing to keep serving");
    }

    #[tokio::test]
    async fn a_taken_default_port_falls_back_on_a_free_one_but_a_given_one_is_an_error() {
        let dashboard = || {
            let search = SearchConfig {
                endpoint: "http://127.0.0.1:9".into(),
                auth: taxi_aws::search::SearchAuth::None,
                documents: Default::default(),
                limits: Default::default(),
                gzip: false,
                tls_skip_verify: false,
                request_timeout: std::time::Duration::from_secs(1),
            };
            Dashboard::new(search, Areas::default(), None).unwrap()
        };
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = taken.local_addr().unwrap();
        let error = DashboardServer::bind(address, dashboard()).await.err().expect("the port is taken");
        assert!(format!("{error:#}").contains(&address.to_string()) && format!("{error:#}").contains("--listen"), "{error:#}");
        // Held here, unless something else holds it already: taken either way.
        let held = TcpListener::bind(DEFAULT_LISTEN).await.ok();
        let server = bind_given_or_default(None, dashboard()).await.unwrap();
        assert!(server.url().starts_with("http://127.0.0.1:"), "{}", server.url());
        if held.is_some() {
            assert_ne!(server.url(), format!("http://{DEFAULT_LISTEN}/"), "a free port instead");
        }
    }
}
