//! `svcnet-proxy run`: watches Services, EndpointSlices and the proxy's own Node (`watches`) and
//! the ServiceCIDRs where served ([`crate::watch::service_cidr_watch`]), and keeps nftables in
//! sync through a bounded-frequency sync loop (like kube-proxy's `BoundedFrequencyRunner`).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::{watch, Mutex, Notify};

use crate::announce::inputs::{self as l2_inputs, SharedInputs};
use crate::announce::leases::LeaseIo;
use crate::announce::metrics::L2Metrics;
use crate::announce::speaker::{HealthCheck, Speaker, SpeakerConfig, SpeakerIo};

use crate::apply::conntrack::{self, UdpEndpoints};
use crate::apply::conntrack_socket::Conntrack;
use crate::apply::nft::ExecNft;
use crate::compute::endpoints::local_ready_count;
use crate::error::{Error, Result};
use crate::node::config::{local_addresses, RunArgs};
use crate::node::health::{
    proxy_health_response, ProxyHealth, ServiceHealth, ServiceHealthServers,
};
use crate::node::kube_proxy_metrics::{no_local_endpoints, KubeProxyMetrics};
use crate::node::metrics::{CodeLabels, Metrics, ReasonLabels, SyncLabels};
use crate::sync::proxier::Proxier;
use crate::types::{EndpointSliceInfo, Family, ProxyState, ServiceKey};
use crate::watch::service_cidrs::ServiceCidrSource;
use crate::watch::tracker::Tracker;

mod watches;

struct Shared {
    tracker: Arc<Mutex<Tracker>>,
    notify: Notify,
    health: Arc<ProxyHealth>,
    metrics: Metrics,
    kube_proxy: KubeProxyMetrics,
    pending: std::sync::Mutex<PendingChanges>,
}

/// Services with changes not yet synced, by what changed (kube-proxy's `*_changes_pending`).
#[derive(Default)]
struct PendingChanges {
    services: BTreeSet<ServiceKey>,
    endpoints: BTreeSet<ServiceKey>,
}

impl Shared {
    fn changed(&self) {
        let now = SystemTime::now();
        self.health.queued(now);
        self.kube_proxy.queued(&Family::ALL, unix_seconds(now));
        self.notify.notify_one();
    }

    /// Counts a change of Service `key` (`endpoints`: through its EndpointSlices).
    fn count_change(&self, key: ServiceKey, endpoints: bool) {
        let m = &self.kube_proxy;
        // A poisoned lock only means a panic elsewhere mid-update; the sets stay usable.
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if endpoints {
            m.endpoint_changes.inc();
            p.endpoints.insert(key);
            m.endpoint_changes_pending.set(p.endpoints.len() as i64);
        } else {
            m.service_changes.inc();
            p.services.insert(key);
            m.service_changes_pending.set(p.services.len() as i64);
        }
    }

    /// Forgets the pending changes (a sync is taking them), as kube-proxy's change trackers do.
    fn take_changes(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p = PendingChanges::default();
        self.kube_proxy.endpoint_changes_pending.set(0);
        self.kube_proxy.service_changes_pending.set(0);
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

async fn client(args: &RunArgs) -> Result<Client> {
    runtime::client::client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| Error::Config(e.to_string()))
}

async fn healthz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let now = SystemTime::now();
    let (code, body) = proxy_health_response(&s.health.status(now), now, true);
    let labels = CodeLabels {
        code: code.as_u16().to_string(),
    };
    s.metrics.healthz.get_or_create(&labels).inc();
    s.kube_proxy.healthz.get_or_create(&labels).inc();
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn livez(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let now = SystemTime::now();
    let (code, body) = proxy_health_response(&s.health.status(now), now, false);
    let labels = CodeLabels {
        code: code.as_u16().to_string(),
    };
    s.metrics.livez.get_or_create(&labels).inc();
    s.kube_proxy.livez.get_or_create(&labels).inc();
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn serve(
    what: &'static str,
    addr: SocketAddr,
    app: Router,
) -> Result<tokio::task::JoinHandle<()>> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve {
            what,
            addr: addr.to_string(),
            source,
        })?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!(error = %e, what, "server stopped");
        }
    }))
}

fn wanted_health_servers(state: &ProxyState, node_name: &str) -> HashMap<u16, ServiceHealth> {
    let mut out = HashMap::new();
    for svc in state.services.values() {
        let Some(port) = svc.health_check_node_port else {
            continue;
        };
        if !svc.external_policy_local {
            continue;
        }
        let slices: Vec<&EndpointSliceInfo> = state.slices_for(&svc.key).collect();
        out.insert(
            port,
            ServiceHealth {
                service: svc.key.clone(),
                local_endpoints: local_ready_count(svc, &slices, node_name),
            },
        );
    }
    out
}

/// Runs the agent until the process is stopped.
pub async fn run(mut args: RunArgs) -> Result<()> {
    if args.node.node_name.is_empty() {
        args.node.node_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
    }
    // Validate the flags before binding anything.
    args.node.resolve(None, vec![])?;
    args.l2.validate()?;
    let detect = args.node.detect_local();
    for unused in detect.unused() {
        tracing::warn!(mode = ?detect.mode, "{unused} is not used by this --detect-local-mode");
    }
    let client = client(&args).await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let kube_proxy = KubeProxyMetrics::register(&mut registry);
    let l2_metrics = args.l2.enabled.then(|| L2Metrics::register(&mut registry));
    let registry = Arc::new(registry);
    let health = Arc::new(ProxyHealth::new(args.sync_period * 2));
    let shared = Arc::new(Shared {
        // No sync before discovery has said where the Service CIDRs come from.
        tracker: Arc::new(Mutex::new(Tracker::with_service_cidrs(
            ServiceCidrSource::Undecided,
        ))),
        notify: Notify::new(),
        health,
        metrics,
        kube_proxy,
        pending: Default::default(),
    });

    let health_app = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(shared.clone());
    let _health_srv = serve("healthz", args.healthz_bind_address, health_app).await?;
    let reg = registry.clone();
    let metrics_app = Router::new().route(
        "/metrics",
        get(move || {
            let reg = reg.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &reg) {
                    Ok(()) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain")],
                        String::new(),
                    ),
                }
            }
        }),
    );
    let _metrics_srv = serve("metrics", args.metrics_bind_address, metrics_app).await?;

    tokio::spawn(watches::watch_services(
        Api::all(client.clone()),
        shared.clone(),
    ));
    tokio::spawn(watches::watch_slices(
        Api::all(client.clone()),
        shared.clone(),
    ));
    let woken = shared.clone();
    tokio::spawn(crate::watch::service_cidr_watch::follow(
        client.clone(),
        shared.tracker.clone(),
        args.node.service_cidrs.clone(),
        move || woken.changed(),
    ));
    let l2_inputs = args.l2.enabled.then(|| Arc::new(SharedInputs::default()));
    tokio::spawn(watches::watch_node(
        Api::all(client.clone()),
        args.node.node_name.clone(),
        shared.clone(),
        l2_inputs.clone(),
    ));
    let (stop, stopped) = watch::channel(false);
    let speaker = match (l2_inputs, l2_metrics) {
        (Some(inputs), Some(m)) => Some(start_speaker(&args, &client, &shared, inputs, m, stopped)),
        _ => None,
    };
    tracing::info!(node = %args.node.node_name, l2 = args.l2.enabled, "svcnet-proxy started");
    let recorder =
        runtime::events::EventRecorder::new(client.clone(), "svcnet-proxy", &args.node.node_name);
    let result = tokio::select! {
        r = sync_loop(args, shared, recorder) => r,
        _ = terminated() => {
            tracing::info!("terminating");
            Ok(())
        }
    };
    // The speaker hands its addresses over before the process ends.
    let _ = stop.send(true);
    if let Some(s) = speaker {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    result
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Starts the L2 speaker's watches and loop.
fn start_speaker(
    args: &RunArgs,
    client: &Client,
    shared: &Arc<Shared>,
    inputs: Arc<SharedInputs>,
    metrics: L2Metrics,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let l2 = &args.l2;
    l2_inputs::spawn_watches(client.clone(), &l2.lease_namespace, inputs.clone());
    let health = shared.health.clone();
    // Announce only from a proxy that has programmed its rules and keeps them in sync.
    let healthy: HealthCheck = Arc::new(move || {
        let s = health.status(SystemTime::now());
        s.healthy && s.node_eligible && s.last_updated.is_some()
    });
    let cfg = SpeakerConfig {
        node: args.node.node_name.clone(),
        lease_namespace: l2.lease_namespace.clone(),
        lease_duration: l2.lease_duration,
        renew_interval: l2.renew_interval,
        announce_count: l2.announce_count,
        announce_interval: l2.announce_interval,
        node_ips: args.node.node_ips.clone(),
    };
    let io = LeaseIo::new(
        Api::namespaced(client.clone(), &l2.lease_namespace),
        l2.lease_duration,
    );
    let events = Arc::new(runtime::events::EventRecorder::new(
        client.clone(),
        "svcnet-l2-speaker",
        &args.node.node_name,
    ));
    let io = SpeakerIo {
        leases: io,
        policies: Api::all(client.clone()),
        events,
    };
    let speaker = Speaker::new(cfg, io, inputs, shared.tracker.clone(), healthy, metrics);
    tokio::spawn(speaker.run(stopped))
}

/// Records the Events of health-check servers that could not listen (failures to record are logged:
/// an Event is a diagnostic, never a reason to stop syncing).
async fn report_listen_failures(
    recorder: &runtime::events::EventRecorder,
    node_name: &str,
    failures: Vec<crate::node::health::ListenFailure>,
) {
    for f in failures {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(f.service.namespace.clone()),
            name: Some(f.service.name.clone()),
            ..Default::default()
        };
        recorder
            .record(
                &reference,
                runtime::events::EventType::Warning,
                crate::node::health::ListenFailure::REASON,
                crate::node::health::ListenFailure::ACTION,
                &f.message(node_name),
            )
            .await;
    }
}

async fn sync_loop(
    args: RunArgs,
    shared: Arc<Shared>,
    recorder: runtime::events::EventRecorder,
) -> Result<()> {
    let initial = args.node.resolve(None, vec![])?;
    let mut proxier = Proxier::new(ExecNft::new(), initial);
    let mut health_servers = ServiceHealthServers::new(
        crate::node::health::health_check_addresses(proxier.node()),
        shared.health.clone(),
    );
    let mut last_sync: Option<Instant> = None;
    let mut next_full = Instant::now();
    // Unknown before the first sync: a restart must not flush live UDP flows as "new endpoints".
    let mut udp_prev: Option<UdpEndpoints> = None;
    let mut ct: Option<Conntrack> = None;
    let mut retry: Option<Duration> = None;
    let mut ready = false;
    let mut waiting_logged = false;
    let mut mirror: Option<ProxyState> = None;
    loop {
        let wait = if ready {
            retry
                .unwrap_or(args.sync_period)
                .min(next_full.saturating_duration_since(Instant::now()))
        } else {
            // Until every initial list is done only watcher notifications matter.
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = shared.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if let Some(last) = last_sync {
            let since = last.elapsed();
            if since < args.min_sync_period {
                tokio::time::sleep(args.min_sync_period - since).await;
            }
        }
        let mut t = shared.tracker.lock().await;
        // NodeCIDR detects pod traffic by the Node's podCIDRs: no sync before they are known
        // (a ruleset without them would masquerade every pod), as kube-proxy waits for them.
        let detector_known = args.node.detect_local().known(t.node.as_ref());
        if t.ready() && !detector_known && !waiting_logged {
            tracing::info!("--detect-local-mode=NodeCIDR: waiting for the Node's spec.podCIDRs");
            waiting_logged = true;
        }
        ready = t.ready() && detector_known;
        if !ready {
            continue;
        }
        let full = Instant::now() >= next_full || proxier.needs_full_sync();
        if t.node_changed || t.service_cidrs_changed || full {
            let local = match local_addresses() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list local addresses");
                    vec![]
                }
            };
            match args.node.resolve(t.node.as_ref(), local) {
                Ok(mut cfg) => {
                    cfg.service_cidrs = t.service_cidrs.effective(&cfg.service_cidrs);
                    health_servers.set_bind(crate::node::health::health_check_addresses(&cfg));
                    proxier.set_node(cfg);
                }
                Err(e) => tracing::error!(error = %e, "bad node configuration"),
            }
            shared
                .health
                .set_node_eligible(!t.node.as_ref().is_some_and(|n| n.being_deleted));
            t.node_changed = false;
            t.service_cidrs_changed = false;
        }
        let changed = std::mem::take(&mut t.changed);
        let triggers = std::mem::take(&mut t.triggers);
        // The sync works on its own copy, so the watchers keep folding events into the
        // tracker while nft runs: the copy takes only the changed Services (all of them once).
        match &mut mirror {
            Some(m) => m.copy_keys_from(&t.state, &changed),
            None => mirror = Some(t.state.clone()),
        }
        drop(t);
        let Some(state) = mirror.as_ref() else {
            continue;
        };
        shared.metrics.pending_changes.set(0);
        shared.take_changes();
        let started = SystemTime::now();
        last_sync = Some(Instant::now());
        let span = tracing::info_span!("sync", full, services = changed.len());
        let result = span
            .in_scope(|| tokio::task::block_in_place(|| proxier.sync(state, Some(&changed), full)));
        match result {
            Ok(out) => {
                retry = None;
                let kind = if out.full { "full" } else { "partial" };
                let m = &shared.metrics;
                m.sync_duration
                    .get_or_create(&SyncLabels { kind: kind.into() })
                    .observe(out.duration.as_secs_f64());
                m.sync_ops
                    .get_or_create(&SyncLabels { kind: kind.into() })
                    .inc_by(out.ops as u64);
                m.chains.set(out.counts.chains as i64);
                m.rules.set(out.counts.rules as i64);
                m.sets.set(out.counts.sets as i64);
                m.elements.set(out.counts.elements as i64);
                let now = SystemTime::now();
                let now_s = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                m.last_sync_timestamp.set(now_s);
                let programming: Vec<f64> = triggers
                    .iter()
                    .filter(|t| now_s >= **t)
                    .map(|t| now_s - t)
                    .collect();
                for p in &programming {
                    m.network_programming.observe(*p);
                }
                let families = proxier.node().families.clone();
                let kp = &shared.kube_proxy;
                kp.synced(
                    &families,
                    out.full,
                    out.duration.as_secs_f64(),
                    now_s,
                    &programming,
                );
                kp.set_no_local(&families, &no_local_endpoints(state, &args.node.node_name));
                shared.health.updated(started, now);
                if out.full {
                    next_full = Instant::now() + args.full_sync_period;
                }
                let secs = out.duration.as_secs_f64();
                if out.full {
                    tracing::info!(kind, ops = out.ops, seconds = secs, "synced");
                } else {
                    tracing::debug!(kind, ops = out.ops, seconds = secs, "synced");
                }
                let wanted = wanted_health_servers(state, &args.node.node_name);
                let udp_now = conntrack::udp_endpoints(state, proxier.node());
                let failures = health_servers.sync(wanted).await;
                report_listen_failures(&recorder, &args.node.node_name, failures).await;
                // The whole UDP table is compared with the endpoints at start-up (flows left
                // from before), whenever a UDP Service's endpoints changed, and on full syncs.
                let reconcile = udp_prev.as_ref() != Some(&udp_now) || out.full;
                if args.conntrack_cleanup && reconcile {
                    let node = proxier.node();
                    let families = node.families.clone();
                    let addresses: BTreeSet<IpAddr> = node
                        .node_ips
                        .iter()
                        .chain(node.local_addresses.iter())
                        .copied()
                        .collect();
                    let result = tokio::task::block_in_place(|| {
                        if ct.is_none() {
                            ct = Some(Conntrack::open()?);
                        }
                        match ct.as_mut() {
                            Some(c) => conntrack::reconcile(c, &families, &udp_now, &addresses),
                            None => Ok(vec![]),
                        }
                    });
                    match result {
                        Ok(done) => {
                            for r in done {
                                m.conntrack_deleted.inc_by(r.deleted as u64);
                                shared.kube_proxy.conntrack_reconciled(
                                    r.family,
                                    r.deleted,
                                    r.took.as_secs_f64(),
                                );
                                if r.deleted > 0 {
                                    tracing::info!(family = ?r.family, seen = r.seen, deleted = r.deleted, "deleted stale UDP conntrack entries");
                                }
                            }
                            udp_prev = Some(udp_now);
                        }
                        Err(e) => {
                            // Reopen next time; `udp_prev` stays, so the next sync retries.
                            ct = None;
                            m.conntrack_failures.inc();
                            tracing::warn!(error = %e, "conntrack cleanup failed");
                        }
                    }
                } else {
                    udp_prev = Some(udp_now);
                }
            }
            Err(e) => {
                // Everything will be re-rendered by the forced full sync; keep the change list anyway.
                {
                    let mut t = shared.tracker.lock().await;
                    t.changed.extend(changed);
                    t.triggers.extend(triggers);
                }
                shared
                    .kube_proxy
                    .sync_failed(&proxier.node().families.clone());
                shared
                    .metrics
                    .sync_failures
                    .get_or_create(&ReasonLabels {
                        reason: e.metric_label().into(),
                    })
                    .inc();
                tracing::error!(error = %e, "sync failed; next sync is a full one");
                retry = Some(
                    args.min_sync_period
                        .max(Duration::from_secs(1))
                        .min(args.sync_period),
                );
            }
        }
    }
}
