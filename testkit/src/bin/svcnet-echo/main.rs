//! `svcnet-echo`: a small TCP/UDP/SCTP echo server and client for network-namespace tests, with
//! an HTTP probe and a byte relay.
//!
//! ```text
//! svcnet-echo serve --name web-0 --tcp 8080 --udp 5353 --sctp 9999 [--bind 10.244.1.2 …]
//! svcnet-echo client --tcp 10.96.0.10:80 [--timeout-ms 500] [--count 5] [--source 192.168.200.101]
//! svcnet-echo client --udp [fd00:96::a]:53
//! svcnet-echo client --sctp 10.96.0.10:9999
//! svcnet-echo client --tcp 10.96.0.10:80 --interactive   # long-lived: one reply per stdin line
//! svcnet-echo http-get 192.168.200.11:30256 --path /healthz  # e.g. a health-check node port
//! svcnet-echo relay --listen tcp:127.0.0.1:6443 --connect unix:/tmp/api.sock  # byte relay
//! ```
//!
//! The server answers every TCP connection (a greeting on accept, then one reply per line
//! received), every UDP datagram and every SCTP INIT with one JSON line,
//! `{"pod":…,"peer":…,"local":…,"proto":…}`, where `peer` is the source address it saw.
//! Without `--bind` it listens on `[::]`, dual-stack; UDP replies then report `local` as the
//! wildcard address, so the harness binds the pod IPs explicitly. Once every socket is bound it
//! prints one `{"ready":true,…}` line on stdout.
//!
//! The client prints one line per attempt (see `testkit::netns::wire::ClientLine`) and exits 0 when
//! every attempt got a reply, otherwise with the code of the first attempt that did not:
//! 2 = refused (TCP reset / ICMP unreachable), 3 = timeout (dropped), 1 = other error, 64 = usage.
//!
//! SCTP: the CI kernel has no in-kernel SCTP (`CONFIG_IP_SCTP` off), so SCTP is spoken over raw
//! IP sockets: INIT → INIT-ACK carrying the JSON in its State Cookie, or ABORT for a port that is
//! not served (see `testkit::netns::sctp`). Conntrack and NAT treat these as real SCTP packets.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use testkit::netns::wire::{self};

mod client;
mod raw_sctp;
mod relay;
mod serve;

use client::{client, http_get};
use raw_sctp::{nonzero_tag, raw_payload, raw_sctp_socket};
use relay::relay;
use serve::serve;

#[derive(Parser, Debug)]
#[command(
    name = "svcnet-echo",
    about = "Echo server and client for svcnet network-namespace tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Listen and answer every connection / datagram with a JSON line.
    Serve(ServeArgs),
    /// Connect (or send) and print the outcome of each attempt as a JSON line.
    Client(ClientArgs),
    /// One HTTP/1.1 GET; prints the status, headers and body (or the failure) as a JSON line.
    HttpGet(HttpArgs),
    /// Relays byte streams between a TCP or Unix listener and a TCP or Unix target. A Unix socket
    /// is a file, visible from every network namespace, so two relays carry a connection from a
    /// node namespace to a service on the host's loopback (e.g. the embedded API server).
    Relay(RelayArgs),
}

#[derive(Args, Debug)]
struct RelayArgs {
    /// Where to accept connections: `tcp:ADDR:PORT` or `unix:PATH`.
    #[arg(long)]
    listen: Endpoint,
    /// Where to connect for each accepted connection: `tcp:ADDR:PORT` or `unix:PATH`.
    #[arg(long)]
    connect: Endpoint,
}

/// A stream endpoint of the relay.
#[derive(Clone, Debug)]
enum Endpoint {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            addr.parse()
                .map(Endpoint::Tcp)
                .map_err(|e| format!("bad address {addr:?}: {e}"))
        } else if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("empty unix socket path".into());
            }
            Ok(Endpoint::Unix(path.into()))
        } else {
            Err(format!("expected tcp:ADDR:PORT or unix:PATH, got {s:?}"))
        }
    }
}

#[derive(Args, Debug)]
struct HttpArgs {
    /// Server address.
    #[arg(value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Timeout for connecting and reading the whole response.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Source address to bind before connecting.
    #[arg(long, value_name = "ADDR")]
    source: Option<IpAddr>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Name reported in every reply (the pod name).
    #[arg(long)]
    name: String,
    /// TCP port to listen on (repeatable; 0 picks a free port).
    #[arg(long = "tcp", value_name = "PORT")]
    tcp: Vec<u16>,
    /// UDP port to listen on (repeatable; 0 picks a free port).
    #[arg(long = "udp", value_name = "PORT")]
    udp: Vec<u16>,
    /// SCTP port to answer on (repeatable; raw-socket SCTP, see the module docs).
    #[arg(long = "sctp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    sctp: Vec<u16>,
    /// Address to bind (repeatable). Default: `::`, which is dual-stack.
    #[arg(long = "bind", value_name = "ADDR")]
    bind: Vec<IpAddr>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["tcp", "udp", "sctp"])))]
struct ClientArgs {
    /// Connect over TCP to HOST:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    tcp: Option<SocketAddr>,
    /// Send a UDP datagram to HOST:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    udp: Option<SocketAddr>,
    /// Send an SCTP INIT to HOST:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    sctp: Option<SocketAddr>,
    /// Per-attempt timeout (connect + reply).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Number of attempts, each on a new socket (new source port).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Source address to bind before connecting / sending.
    #[arg(long, value_name = "ADDR")]
    source: Option<IpAddr>,
    /// Fixed source port for every attempt (default: a new one each time). With UDP this reuses
    /// one conntrack entry across attempts, which is how stale-entry cleanup is observed.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    source_port: Option<u16>,
    /// TCP only: keep one connection open, send each stdin line and print each reply.
    #[arg(long, conflicts_with = "count")]
    interactive: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { wire::EXIT_USAGE } else { 0 };
            // Printing help/usage can only fail if stdout/stderr are closed; nothing to do then.
            let _ = e.print();
            return exit(code);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SVCNET_ECHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("svcnet-echo: cannot start runtime: {e}");
            return exit(wire::EXIT_ERROR);
        }
    };
    let result = match cli.cmd {
        Cmd::Serve(args) => rt.block_on(serve(args)).map(|()| wire::EXIT_REPLIED),
        Cmd::Client(args) => rt.block_on(client(args)),
        Cmd::HttpGet(args) => rt.block_on(http_get(args)),
        Cmd::Relay(args) => rt.block_on(relay(args)).map(|()| wire::EXIT_REPLIED),
    };
    match result {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("svcnet-echo: {e:#}");
            exit(wire::EXIT_ERROR)
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
