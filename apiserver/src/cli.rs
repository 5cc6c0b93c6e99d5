//! `svcnet apiserver`: run the embedded server until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{ApiServer, ServerConfig};

/// Arguments of `svcnet apiserver`.
#[derive(Debug, clap::Args)]
pub struct ApiserverArgs {
    /// Listen address (loopback only is recommended: there is no authentication).
    #[arg(long, env = "SVCNET_APISERVER_BIND", default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// Where to write the kubeconfig (default: a file in the temp directory).
    #[arg(long, env = "SVCNET_APISERVER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Events retained for resuming watches.
    #[arg(
        long,
        env = "SVCNET_APISERVER_WATCH_HISTORY",
        default_value_t = 100_000
    )]
    pub watch_history: usize,
}

impl ApiserverArgs {
    /// Start the server, write the kubeconfig, print its path and serve until Ctrl-C.
    pub async fn run(self) -> Result<(), super::Error> {
        let server = ApiServer::start(ServerConfig {
            bind: self.bind,
            watch_history: self.watch_history,
            ..ServerConfig::default()
        })
        .await?;
        let path = self.kubeconfig.unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "svcnet-apiserver-{}.kubeconfig",
                server.addr().port()
            ))
        });
        server.write_kubeconfig(&path)?;
        println!("{}", path.display());
        eprintln!(
            "svcnet embedded apiserver at {}; export KUBECONFIG={}; Ctrl-C to stop",
            server.url(),
            path.display()
        );
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "waiting for Ctrl-C failed; stopping");
        }
        server.shutdown().await;
        Ok(())
    }
}
