//! `svcnet`: the user CLI.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "svcnet",
    version,
    about = "svcnet: Kubernetes Service networking in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded Kubernetes-API-compatible server on loopback; prints a kubeconfig path.
    Apiserver(apiserver::cli::ApiserverArgs),
    /// Run the demo: API server, controller, a 2-node netns cluster with svcnet-proxy, example Services, a report.
    Demo(cli::demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Apiserver(args) => args.run().await?,
        Command::Demo(args) => args.run().await?,
    }
    Ok(())
}
