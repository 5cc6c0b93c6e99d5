//! `svcnet-controller`: parses and validates flags, then runs [`controllers::app::run`].

use clap::Parser;
use controllers::app::{self, Args};

/// Exit status for bad flags (EX_USAGE), before anything binds or connects.
const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => err.exit(), // --help, --version
        Err(err) => {
            let _ = err.print();
            std::process::exit(EX_USAGE);
        }
    };
    if let Err(err) = args.validate() {
        eprintln!("svcnet-controller: {err}");
        std::process::exit(EX_USAGE);
    }
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
    app::run(args).await?;
    Ok(())
}
