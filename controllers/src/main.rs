//! `svcnet-controller`: parses flags and runs [`controllers::runtime::app::run`].

use clap::Parser;
use controllers::runtime::app::{self, Args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    // Bad configuration exits 64 (EX_USAGE) before anything binds.
    if let Err(err) = args
        .ipam_config(String::new())
        .and_then(|_| args.admin_addr())
    {
        eprintln!("svcnet-controller: {err}");
        std::process::exit(64);
    }
    app::run(args).await?;
    Ok(())
}
