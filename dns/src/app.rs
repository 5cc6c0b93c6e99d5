//! The `svcnet-dns` process: flags, validation, client, watchers, listeners, admin server,
//! shutdown.
//!
//! [`Args::validate`] checks every flag without side effects (no socket, no API call), so that
//! `main` can reject a bad command line with exit code 64 before anything starts. [`run`]
//! then binds every socket (failing at once on a busy port), starts the watchers and serves
//! until SIGTERM or SIGINT; on either, readiness turns false and the process exits.
//! Every flag has a `SVCNET_DNS_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::Client;
use prometheus_client::registry::Registry;

use crate::answer::{Config, PodMode};
use crate::forward::{parse_resolv_conf, ForwardConfig, Forwarder};
use crate::index::Index;
use crate::listen;
use crate::metrics::Metrics;
use crate::server::Handler;
use crate::{admin, watch, Error, Result};

/// svcnet-dns's command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "svcnet-dns",
    version,
    about = "Cluster DNS for Kubernetes Services and Pods"
)]
pub struct Args {
    /// Path to a kubeconfig; in-cluster or $KUBECONFIG configuration when unset.
    #[arg(long, env = "SVCNET_DNS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The cluster domain served authoritatively.
    #[arg(long, env = "SVCNET_DNS_ZONE", default_value = "cluster.local")]
    pub zone: String,

    /// TTL in seconds of the records served from the cluster (0..=3600).
    #[arg(long, env = "SVCNET_DNS_TTL", default_value_t = 5)]
    pub ttl: u32,

    /// UDP and TCP listen addresses, comma-separated.
    #[arg(long, env = "SVCNET_DNS_LISTEN", default_value = "0.0.0.0:53")]
    pub listen: String,

    /// Upstream resolvers for other names, comma-separated `ip` or `ip:port`; default: the
    /// nameservers of /etc/resolv.conf.
    #[arg(long, env = "SVCNET_DNS_UPSTREAM")]
    pub upstream: Option<String>,

    /// Deadline of one upstream resolution (all upstreams together), e.g. `2s`, `500ms`.
    #[arg(long, env = "SVCNET_DNS_UPSTREAM_TIMEOUT", default_value = "2s", value_parser = runtime::duration::duration_flag)]
    pub upstream_timeout: Duration,

    /// Pod records `a-b-c-d.<ns>.pod.<zone>`: `disabled`, `insecure` or `verified`.
    #[arg(long, env = "SVCNET_DNS_PODS", default_value = "insecure")]
    pub pods: String,

    /// Admin address for /metrics, /healthz and /readyz (`0` disables it).
    #[arg(long, env = "SVCNET_DNS_ADMIN_LISTEN", default_value = "0.0.0.0:9153")]
    pub admin_listen: String,

    /// Forwarded answers cached at most (`0` disables the cache).
    #[arg(long, env = "SVCNET_DNS_CACHE_SIZE", default_value_t = 10_000)]
    pub cache_size: usize,

    /// Encoded cluster-zone answers cached per transport (`0` disables the cache). Any change
    /// to the cluster data empties it, so it never serves an outdated answer.
    #[arg(long, env = "SVCNET_DNS_ANSWER_CACHE_SIZE", default_value_t = crate::server::DEFAULT_ANSWER_CACHE)]
    pub answer_cache_size: usize,

    /// Log format: `text` or `json`.
    #[arg(long, env = "SVCNET_DNS_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Everything [`run`] needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// Zone, TTL, pod mode.
    pub answer: Config,
    /// `--listen`.
    pub listen: Vec<SocketAddr>,
    /// Upstreams, timeout, cache.
    pub forward: ForwardConfig,
    /// `--admin-listen` (`None`: disabled).
    pub admin: Option<SocketAddr>,
    /// `--answer-cache-size`.
    pub answer_cache: usize,
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses `ip`, `ip:port` or `[v6]:port` with `default_port` when none is given.
fn parse_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: std::net::IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, default_port))
}

impl Args {
    /// Checks every flag (reads /etc/resolv.conf when `--upstream` is unset; nothing else).
    pub fn validate(&self) -> Result<Settings> {
        if self.ttl > 3600 {
            return Err(invalid("--ttl", &self.ttl.to_string(), "must be 0..=3600"));
        }
        let pods: PodMode = self
            .pods
            .parse()
            .map_err(|e: String| invalid("--pods", &self.pods, e))?;
        let answer = Config::new(&self.zone, self.ttl, pods)?;
        let mut listen = Vec::new();
        for part in self
            .listen
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            listen.push(
                parse_addr(part, 53)
                    .ok_or_else(|| invalid("--listen", &self.listen, "not an ip:port list"))?,
            );
        }
        if listen.is_empty() {
            return Err(invalid("--listen", &self.listen, "no address given"));
        }
        let upstreams = match &self.upstream {
            Some(list) => {
                let mut v = Vec::new();
                for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    v.push(parse_addr(part, 53).ok_or_else(|| {
                        invalid(
                            "--upstream",
                            list,
                            format!("{part:?} is not an ip or ip:port"),
                        )
                    })?);
                }
                if v.is_empty() {
                    return Err(invalid("--upstream", list, "no address given"));
                }
                v
            }
            None => {
                let text = std::fs::read_to_string("/etc/resolv.conf").map_err(|e| {
                    invalid(
                        "--upstream",
                        "",
                        format!("unset, and /etc/resolv.conf cannot be read: {e}"),
                    )
                })?;
                let v = parse_resolv_conf(&text);
                if v.is_empty() {
                    return Err(invalid(
                        "--upstream",
                        "",
                        "unset, and /etc/resolv.conf names no nameserver",
                    ));
                }
                v
            }
        };
        if self.upstream_timeout.is_zero() || self.upstream_timeout > Duration::from_secs(30) {
            return Err(invalid(
                "--upstream-timeout",
                &format!("{:?}", self.upstream_timeout),
                "must be between 1ms and 30s",
            ));
        }
        if self.cache_size > 10_000_000 {
            return Err(invalid(
                "--cache-size",
                &self.cache_size.to_string(),
                "at most 10000000",
            ));
        }
        if self.answer_cache_size > 10_000_000 {
            return Err(invalid(
                "--answer-cache-size",
                &self.answer_cache_size.to_string(),
                "at most 10000000",
            ));
        }
        let admin = match self.admin_listen.as_str() {
            "" | "0" => None,
            s => Some(
                s.parse()
                    .map_err(|e| invalid("--admin-listen", s, format!("{e}")))?,
            ),
        };
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(invalid(
                "--log-format",
                &self.log_format,
                "use text or json",
            ));
        }
        if let Some(path) = &self.kubeconfig {
            if !path.is_file() {
                return Err(invalid(
                    "--kubeconfig",
                    &path.display().to_string(),
                    "no such file",
                ));
            }
        }
        let mut forward = ForwardConfig::new(upstreams);
        forward.timeout = self.upstream_timeout;
        forward.cache_size = self.cache_size;
        Ok(Settings {
            kubeconfig: self.kubeconfig.clone(),
            answer,
            listen,
            forward,
            admin,
            answer_cache: self.answer_cache_size,
        })
    }
}

/// A client from `--kubeconfig`, else in-cluster / `$KUBECONFIG`.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client> {
    runtime::client::client(kubeconfig).await.map_err(|e| {
        invalid(
            "--kubeconfig",
            &kubeconfig
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            e.to_string(),
        )
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot watch SIGTERM; only SIGINT stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the DNS server until SIGTERM / SIGINT.
pub async fn run(settings: Settings) -> Result<()> {
    // Bind first: a busy port fails before anything else starts.
    let mut sockets = Vec::new();
    for addr in &settings.listen {
        sockets.push(listen::bind(*addr).await?);
    }
    let admin_listener = match settings.admin {
        Some(addr) => Some(admin::bind(addr).await?),
        None => None,
    };
    let client = client(settings.kubeconfig.as_deref()).await?;

    let mut registry = Registry::default();
    let server_label = format!("dns://{}", settings.listen[0]);
    let metrics = Metrics::register(&mut registry, &server_label);
    let registry = Arc::new(registry);
    let index = Arc::new(RwLock::new(Index::new()));
    let synced = Arc::new(AtomicBool::new(false));
    let readiness = admin::Readiness::default();
    let ready = readiness.component("index");
    let handler = Arc::new(Handler::new(
        index.clone(),
        settings.answer.clone(),
        Forwarder::new(settings.forward.clone(), metrics.clone()),
        metrics,
        synced.clone(),
        settings.answer_cache,
    ));
    let udp_loops = listen::default_udp_loops();

    let mut tasks = tokio::task::JoinSet::new();
    for (udp, tcp) in sockets {
        let local = udp.local_addr().map_err(|source| Error::Io {
            what: "listen address".into(),
            source,
        })?;
        tracing::info!(addr = %local, "DNS listening (UDP and TCP)");
        tasks.spawn(listen::serve_udp(handler.clone(), udp, udp_loops));
        tasks.spawn(listen::serve_tcp(handler.clone(), tcp));
    }
    if let Some(listener) = admin_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin server listening");
        }
        let (registry, readiness) = (registry.clone(), readiness.clone());
        tasks.spawn(async move {
            if let Err(err) = admin::serve(listener, registry, readiness).await {
                tracing::error!(%err, "admin server failed");
            }
        });
    }
    let verified = settings.answer.pods == PodMode::Verified;
    tasks.spawn(watch::run(client, index, synced.clone(), verified));
    {
        // Readiness follows the first complete listing of every kind.
        let (synced, ready) = (synced.clone(), ready.clone());
        tasks.spawn(async move {
            while !synced.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::info!("every watched kind listed; ready");
            ready.set_ready(true);
        });
    }

    shutdown_signal().await;
    tracing::info!("shutting down");
    ready.set_ready(false);
    tasks.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["svcnet-dns"];
        if !extra.contains(&"--upstream") {
            v.extend_from_slice(&["--upstream", "10.0.0.2"]);
        }
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn defaults_validate() {
        let s = args(&[]).validate().expect("valid");
        assert_eq!(s.answer.zone.to_ascii(), "cluster.local.");
        assert_eq!(s.answer.ttl, 5);
        assert_eq!(s.answer.pods, PodMode::Insecure);
        assert_eq!(s.listen, vec!["0.0.0.0:53".parse().expect("addr")]);
        assert_eq!(
            s.forward.upstreams,
            vec!["10.0.0.2:53".parse().expect("addr")]
        );
        assert_eq!(s.forward.timeout, Duration::from_secs(2));
        assert_eq!(s.admin, Some("0.0.0.0:9153".parse().expect("addr")));
    }

    #[test]
    fn bad_flags_are_rejected() {
        for bad in [
            &["--ttl", "100000"][..],
            &["--pods", "maybe"],
            &["--zone", "bad..zone"],
            &["--listen", "nope"],
            &["--upstream", "1.2.3.4,x"],
            &["--upstream-timeout", "0s"],
            &["--admin-listen", "x:y"],
            &["--log-format", "xml"],
            &["--kubeconfig", "/nonexistent/kubeconfig"],
        ] {
            let err = args(bad).validate().expect_err("invalid");
            assert!(matches!(err, Error::InvalidConfig { .. }), "{bad:?}: {err}");
        }
        let s = args(&[
            "--listen",
            "127.0.0.1:5353,[::1]:5353",
            "--admin-listen",
            "0",
        ])
        .validate()
        .expect("valid");
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.admin, None);
    }
}
