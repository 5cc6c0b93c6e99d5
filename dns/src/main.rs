//! `svcnet-dns`: parses and checks the flags, then runs [`dns::app::run`].

use clap::Parser;
use dns::app::{self, Args};

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
    // A bad command line exits 64 (EX_USAGE) before anything binds or connects.
    let settings = match args.validate() {
        Ok(s) => s,
        Err(err) => {
            eprintln!("svcnet-dns: {err}");
            std::process::exit(64);
        }
    };
    app::run(settings).await?;
    Ok(())
}
