//! `svcnet-proxy`: an nftables kube-proxy replacement.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dataplane::apply::nft::{ExecNft, Nft as _};
use dataplane::node::config::{local_addresses, NodeArgs, RunArgs};
use dataplane::sync::proxier::Proxier;
use dataplane::watch::manifests::Manifests;

#[derive(Parser)]
#[command(
    name = "svcnet-proxy",
    version,
    about = "nftables Service proxy for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the nft script that would program the given manifests (Services, EndpointSlices, a Node).
    Render {
        /// Manifest files (multi-document YAML or JSON).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Program the given manifests into the current network namespace once (a full sync).
    Apply {
        /// Manifest files (multi-document YAML or JSON).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run the agent: watch the API server and keep nftables in sync.
    Run {
        #[command(flatten)]
        args: Box<RunArgs>,
    },
    /// Delete svcnet-proxy's tables from the current network namespace.
    Cleanup,
}

fn node_config(
    m: &Manifests,
    args: &NodeArgs,
    with_local_addrs: bool,
) -> anyhow::Result<dataplane::types::NodeConfig> {
    let node = m
        .nodes
        .iter()
        .find(|n| {
            args.node_name.is_empty() || n.metadata.name.as_deref() == Some(args.node_name.as_str())
        })
        .map(dataplane::watch::convert::node);
    let mut args = args.clone();
    if args.node_name.is_empty() {
        if let Some(n) = m.nodes.first().and_then(|n| n.metadata.name.clone()) {
            args.node_name = n;
        }
    }
    let local = if with_local_addrs {
        local_addresses().context("listing local addresses")?
    } else {
        vec![]
    };
    let mut cfg = args.resolve(node.as_ref(), local)?;
    cfg.service_cidrs = m.service_cidr_source().effective(&cfg.service_cidrs);
    Ok(cfg)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Bad flags exit 64 (EX_USAGE) like every other configuration error; --help and --version 0.
    let usage = |e: clap::Error| -> ExitCode {
        if !e.use_stderr() {
            e.exit();
        }
        let _ = e.print();
        ExitCode::from(EX_USAGE)
    };
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let cli = match with_config_file(cli, &matches) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("svcnet-proxy: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // The local-traffic detector's settings, for every subcommand that renders.
    let detect = match &cli.command {
        Cmd::Render { node, .. } | Cmd::Apply { node, .. } => Some(node.detect_local().validate()),
        Cmd::Run { args } => Some(args.node.detect_local().validate()),
        Cmd::Cleanup => None,
    };
    if let Some(Err(e)) = detect {
        eprintln!("svcnet-proxy: {e}");
        return ExitCode::from(EX_USAGE);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svcnet-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Applies `run --config` (a kube-proxy `KubeProxyConfiguration`): flags given on the command
/// line or in the environment win over the file; what the file sets but svcnet-proxy does not
/// implement is reported.
fn with_config_file(mut cli: Cli, matches: &clap::ArgMatches) -> Result<Cli, dataplane::Error> {
    let Cmd::Run { args } = &mut cli.command else {
        return Ok(cli);
    };
    let Some(path) = args.config.clone() else {
        return Ok(cli);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| dataplane::Error::Config(format!("--config {}: {e}", path.display())))?;
    let run = matches.subcommand_matches("run");
    let explicit = |id: &str| {
        run.and_then(|m| m.value_source(id)).is_some_and(|s| {
            matches!(
                s,
                clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable
            )
        })
    };
    for report in dataplane::node::kube_proxy_config::apply(args, &text, &explicit)? {
        tracing::warn!(file = %path.display(), "{report}");
    }
    Ok(cli)
}

/// Exit status for bad configuration (EX_USAGE).
const EX_USAGE: u8 = 64;

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Run { args } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            if let Err(e) = rt.block_on(dataplane::sync::daemon::run(*args)) {
                if matches!(e, dataplane::Error::Config(_)) {
                    eprintln!("svcnet-proxy: {e}");
                    std::process::exit(EX_USAGE.into());
                }
                return Err(e.into());
            }
        }
        Cmd::Render { files, node } => {
            let m = Manifests::read(&files)?;
            let cfg = node_config(&m, &node, false)?;
            let model = dataplane::compute::render::render(&m.to_state(), &cfg);
            print!("{}", model.dump());
        }
        Cmd::Apply { files, node } => {
            let m = Manifests::read(&files)?;
            let cfg = node_config(&m, &node, true)?;
            let mut p = Proxier::new(ExecNft::new(), cfg);
            let out = p.sync(&m.to_state(), None, true)?;
            println!(
                "{}",
                serde_json::json!({
                    "full": out.full, "ops": out.ops, "chains": out.counts.chains, "rules": out.counts.rules,
                    "sets": out.counts.sets, "elements": out.counts.elements,
                    "seconds": out.duration.as_secs_f64(),
                })
            );
        }
        Cmd::Cleanup => {
            ExecNft::new().delete_tables()?;
            let _ = ExecNft::new().existing()?;
        }
    }
    Ok(())
}
