//! The EndpointSlice controller process: watches → indexes → work queue →
//! pure [`reconcile_service`] → [`apply_slice_plan`].
//!
//! ```text
//! pub async fn run(client: kube::Client, cfg: Config, metrics: ControllerMetrics,
//!                  shutdown: impl Future<Output = ()> + Send) -> crate::Result<()>
//! ```
//! `metrics` comes from `ControllerMetrics::register(&mut registry, "svcnet_endpointslice")`.
//! The future ends when `shutdown` resolves (or a watch channel closes).
//!
//! Behaviour beyond upstream: when a Service is deleted, its slices that
//! carry our managed-by value are deleted here too (clusters without a
//! garbage collector); slices with another managed-by are never listed,
//! so never touched.

use super::build::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};
use super::desired::{reconcile_service, ReconcilerConfig, ServiceInput};
use super::topology::TopologyCache;
use crate::apply::{apply_slice_plan, reference_to, EventSink};
use crate::diagnostics::{diagnose, DiagnosticsState};
use crate::driver::{self, Feed, Spec, SyncGate};
use crate::error::in_range;
use crate::index::{fold_pod_change, Change, ObjKey, PodIndex, ServiceIndex};
use crate::metrics::ControllerMetrics;
use crate::tracker::{SliceTracker, SliceVersion};
use crate::trigger::TriggerTimeTracker;
use crate::views::{to_chrono, NodeInfo, PodInfo};
use crate::watches::Watches;
use crate::writes::{EventSpec, SlicePlan};
use crate::{Error, Result};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use runtime::queue::{Backoff, WorkQueue};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// EndpointSlice controller settings (flags keep upstream's names).
#[derive(Clone, Debug)]
pub struct Config {
    /// `--max-endpoints-per-slice` (1..=1000).
    pub max_endpoints_per_slice: usize,
    /// `--concurrent-service-endpoint-syncs` (1..=50).
    pub concurrent_syncs: usize,
    /// `--endpointslice-updates-batch-period`: delay of Pod-triggered syncs.
    pub batch_period: Duration,
    /// managed-by value.
    pub controller_name: String,
    /// Accept PreferSameZone / PreferSameNode.
    pub prefer_same_traffic_distribution: bool,
    /// Support `service.kubernetes.io/topology-mode: Auto`.
    pub topology_aware_hints: bool,
    /// Emit svcnet's "why no backends" Events.
    pub diagnostics: bool,
    /// How long a diagnostic finding must last before its first Warning.
    pub diagnostics_grace: Duration,
    /// Reporting instance for Events (pod name).
    pub instance: Option<String>,
    /// Reported ready once the caches are synced and the workers run (`/readyz`).
    pub ready: Option<runtime::admin::ReadyFlag>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_endpoints_per_slice: 100,
            concurrent_syncs: 5,
            batch_period: Duration::ZERO,
            controller_name: super::build::CONTROLLER_NAME.into(),
            prefer_same_traffic_distribution: true,
            topology_aware_hints: true,
            diagnostics: true,
            diagnostics_grace: crate::diagnostics::DEFAULT_GRACE,
            instance: None,
            ready: None,
        }
    }
}

impl driver::Settings for Config {
    const COMPONENT: &'static str = "svcnet-endpointslice-controller";
    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(1000),
        max_retries: 15,
    };

    fn validate(&self) -> Result<()> {
        in_range(
            "--max-endpoints-per-slice",
            self.max_endpoints_per_slice,
            1,
            1000,
        )?;
        in_range(
            "--concurrent-service-endpoint-syncs",
            self.concurrent_syncs,
            1,
            50,
        )?;
        Ok(())
    }

    fn instance(&self) -> Option<String> {
        self.instance.clone()
    }
}

impl Config {
    fn reconciler(&self) -> ReconcilerConfig {
        ReconcilerConfig {
            max_endpoints_per_slice: self.max_endpoints_per_slice,
            controller_name: self.controller_name.clone(),
            prefer_same_traffic_distribution: self.prefer_same_traffic_distribution,
            topology_aware_hints: self.topology_aware_hints,
        }
    }
}

#[derive(Default)]
struct Caches {
    services: ServiceIndex,
    pods: PodIndex,
    nodes: HashMap<String, NodeInfo>,
    slices: HashMap<ObjKey, BTreeMap<String, Arc<EndpointSlice>>>,
    /// Owner (Service) each cached slice is filed under, so a slice whose
    /// `service-name` label changes moves (and both Services resync).
    slice_owner: HashMap<ObjKey, ObjKey>,
}

#[derive(Default)]
struct Book {
    trigger: TriggerTimeTracker,
    topo: TopologyCache,
    diag: DiagnosticsState,
    /// Desired (endpoints, slices) per Service, and their sums (kept up to date per sync so
    /// that a sync costs O(1) here, not O(Services)).
    totals: HashMap<ObjKey, (i64, i64)>,
    totals_sum: (i64, i64),
    /// Services whose selector matched no Pod at their last sync, by
    /// namespace: any Pod change there re-evaluates them (the diagnostic
    /// names near-miss Pods, which the selector index cannot map back).
    no_pods: HashMap<String, std::collections::HashSet<ObjKey>>,
}

impl Book {
    /// Records (or, with `None`, forgets) a Service's desired totals; returns the sums.
    fn set_totals(&mut self, key: &ObjKey, now: Option<(i64, i64)>) -> (i64, i64) {
        let before = match now {
            Some(t) => self.totals.insert(key.clone(), t),
            None => self.totals.remove(key),
        }
        .unwrap_or_default();
        let now = now.unwrap_or_default();
        self.totals_sum.0 += now.0 - before.0;
        self.totals_sum.1 += now.1 - before.1;
        self.totals_sum
    }
}

struct Ctx {
    client: Client,
    cfg: Config,
    rcfg: ReconcilerConfig,
    caches: RwLock<Caches>,
    book: Mutex<Book>,
    tracker: Mutex<SliceTracker>,
    /// Services whose last sync found the slice cache behind our writes;
    /// the next slice event for them requeues them at once.
    waiting: Mutex<std::collections::HashSet<ObjKey>>,
    queue: WorkQueue<ObjKey>,
    metrics: ControllerMetrics,
    events: EventSink,
}

fn slice_owner(s: &EndpointSlice) -> Option<ObjKey> {
    let name = s.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(ObjKey::new(
        s.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

/// Runs the EndpointSlice controller until `shutdown` resolves, fed by the process's shared `watches` (one
/// watch per kind; a standalone caller passes `Watches::new(client.clone())`).
pub async fn run(
    watches: &Watches,
    client: Client,
    cfg: Config,
    metrics: ControllerMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (queue, events) = driver::prepare(&client, &cfg, &metrics)?;
    let grace = cfg.diagnostics_grace;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        rcfg: cfg.reconciler(),
        cfg,
        caches: RwLock::new(Caches::default()),
        book: Mutex::new(Book {
            diag: DiagnosticsState::with_grace(grace),
            ..Book::default()
        }),
        tracker: Mutex::new(SliceTracker::default()),
        waiting: Mutex::new(std::collections::HashSet::new()),
        queue: queue.clone(),
        metrics,
        events,
    });
    let gate = SyncGate::default();
    let ours = format!("{LABEL_MANAGED_BY}={}", ctx.cfg.controller_name);
    let feeds = vec![
        Feed::new(
            watches.subscribe::<Service, _>("", |s| s),
            &gate,
            &ctx,
            |ctx, c| async move { on_service(&ctx, c).await },
        ),
        Feed::new(
            watches.subscribe::<Pod, _>("", |p| PodInfo::from_pod(&p)),
            &gate,
            &ctx,
            |ctx, c| async move { on_pod(&ctx, c).await },
        ),
        Feed::new(
            watches.subscribe::<Node, _>("", |n| NodeInfo::from_node(&n)),
            &gate,
            &ctx,
            |ctx, c| async move { on_node(&ctx, c).await },
        ),
        Feed::new(
            watches.subscribe::<EndpointSlice, _>(&ours, |o| o),
            &gate,
            &ctx,
            |ctx, c| async move { on_slice(&ctx, c).await },
        ),
    ];
    let spec = Spec {
        name: "endpointslice",
        workers: ctx.cfg.concurrent_syncs,
        queue,
        metrics: ctx.metrics.clone(),
        ready: ctx.cfg.ready.clone(),
        // The slice event the sync waits for queues the key at once; this is a safety net.
        stale_retry: Some(Duration::from_secs(1)),
    };
    let initial = |ctx: Arc<Ctx>| async move { ctx.caches.read().await.services.keys() };
    driver::run(
        spec,
        ctx,
        feeds,
        gate,
        initial,
        |ctx, k| async move { sync(&ctx, &k).await },
        shutdown,
    )
    .await
}

async fn on_service(ctx: &Ctx, c: Change<Service>) {
    let keys = ctx.caches.write().await.services.fold(c);
    for k in keys {
        ctx.queue.add(k).await;
    }
}

async fn on_pod(ctx: &Ctx, c: Change<PodInfo>) {
    let namespaces: std::collections::HashSet<String> = match &c {
        Change::Apply(p) | Change::Delete(p) => [p.namespace.clone()].into(),
        Change::Relist(l) => l.iter().map(|p| p.namespace.clone()).collect(),
    };
    let keys = {
        let mut guard = ctx.caches.write().await;
        let caches = &mut *guard;
        fold_pod_change(&mut caches.pods, &caches.services, c)
    };
    for k in keys {
        ctx.queue.add_after(k, ctx.cfg.batch_period).await;
    }
    if ctx.cfg.diagnostics {
        let waiting: Vec<ObjKey> = {
            let book = ctx.book.lock().await;
            namespaces
                .iter()
                .flat_map(|ns| book.no_pods.get(ns).into_iter().flatten().cloned())
                .collect()
        };
        for k in waiting {
            ctx.queue
                .add_after(k, ctx.cfg.batch_period.max(Duration::from_secs(1)))
                .await;
        }
    }
}

async fn on_node(ctx: &Ctx, c: Change<NodeInfo>) {
    let mut caches = ctx.caches.write().await;
    let changed = match c {
        Change::Apply(n) => caches.nodes.insert(n.name.clone(), n.clone()).as_ref() != Some(&n),
        Change::Delete(n) => caches.nodes.remove(&n.name).is_some(),
        Change::Relist(list) => {
            caches.nodes = list.into_iter().map(|n| (n.name.clone(), n)).collect();
            true
        }
    };
    if !changed || !ctx.cfg.topology_aware_hints {
        return;
    }
    let overloaded = {
        let mut book = ctx.book.lock().await;
        book.topo.set_nodes(caches.nodes.values());
        book.topo.overloaded_services()
    };
    drop(caches);
    for k in overloaded {
        if let Some((ns, name)) = k.split_once('/') {
            ctx.queue.add(ObjKey::new(ns, name)).await;
        }
    }
}

async fn on_slice(ctx: &Ctx, c: Change<EndpointSlice>) {
    let mut requeue = Vec::new();
    let mut now: Vec<ObjKey> = Vec::new();
    {
        let mut caches = ctx.caches.write().await;
        let tracker = ctx.tracker.lock().await;
        let mut waiting = ctx.waiting.lock().await;
        let mut handle =
            |caches: &mut Caches, s: EndpointSlice, deleted: bool, requeue: &mut Vec<ObjKey>| {
                let slice_key = ObjKey::of(&s);
                let owner = slice_owner(&s);
                if let Some(prev) = caches.slice_owner.get(&slice_key).cloned() {
                    if deleted || owner.as_ref() != Some(&prev) {
                        caches.slice_owner.remove(&slice_key);
                        if let Some(m) = caches.slices.get_mut(&prev) {
                            m.remove(&slice_key.name);
                            if m.is_empty() {
                                caches.slices.remove(&prev);
                            }
                        }
                        if owner.as_ref() != Some(&prev) {
                            requeue.push(prev);
                        }
                    }
                }
                let Some(owner) = owner else { return };
                if !deleted {
                    caches.slice_owner.insert(slice_key, owner.clone());
                }
                if waiting.remove(&owner) {
                    now.push(owner.clone());
                }
                let name = s.metadata.name.clone().unwrap_or_default();
                let uid = s.metadata.uid.clone().unwrap_or_default();
                let own = tracker.is_own_write(
                    &owner.to_string(),
                    &uid,
                    if deleted {
                        None
                    } else {
                        s.metadata.resource_version.as_deref()
                    },
                );
                let entry = caches.slices.entry(owner.clone()).or_default();
                if deleted {
                    entry.remove(&name);
                    if entry.is_empty() {
                        caches.slices.remove(&owner);
                    }
                } else {
                    entry.insert(name, Arc::new(s));
                }
                if !own {
                    requeue.push(owner);
                }
            };
        match c {
            Change::Apply(s) => handle(&mut caches, s, false, &mut requeue),
            Change::Delete(s) => handle(&mut caches, s, true, &mut requeue),
            Change::Relist(list) => {
                let old: Vec<ObjKey> = caches.slices.keys().cloned().collect();
                caches.slices.clear();
                caches.slice_owner.clear();
                requeue.extend(old);
                for s in list {
                    handle(&mut caches, s, false, &mut requeue);
                }
            }
        }
    }
    for k in now {
        ctx.queue.add(k).await;
    }
    let delay = ctx.cfg.batch_period.max(Duration::from_secs(1));
    for k in requeue {
        ctx.queue.add_after(k, delay).await;
    }
}

/// Deletes every slice we manage for a Service that no longer exists.
async fn cleanup_deleted(ctx: &Ctx, key: &ObjKey) -> Result<()> {
    let slices: Vec<Arc<EndpointSlice>> = ctx
        .caches
        .read()
        .await
        .slices
        .get(key)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    {
        let mut book = ctx.book.lock().await;
        book.trigger.delete_service(&key.namespace, &key.name);
        book.topo.delete_service(&key.to_string());
        book.diag.forget(&key.to_string());
        if let Some(set) = book.no_pods.get_mut(&key.namespace) {
            set.remove(key);
        }
        let (e, s) = book.set_totals(key, None);
        ctx.metrics.endpoints_desired.set(e);
        ctx.metrics.desired_slices.set(s);
    }
    if slices.is_empty() {
        return Ok(());
    }
    let plan = SlicePlan {
        deletes: slices.iter().map(|s| (**s).clone()).collect(),
        ..Default::default()
    };
    apply_slice_plan(
        &ctx.client,
        &key.namespace,
        &key.to_string(),
        &plan,
        &ctx.tracker,
        &ctx.metrics,
    )
    .await
}

async fn sync(ctx: &Ctx, key: &ObjKey) -> Result<()> {
    let owner = key.to_string();
    let (svc, plan, diag_events) = {
        let caches = ctx.caches.read().await;
        let Some(svc) = caches.services.get(key) else {
            drop(caches);
            return cleanup_deleted(ctx, key).await;
        };
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") || spec.selector.is_none() {
            return Ok(());
        }
        let selector = spec.selector.clone().unwrap_or_default();
        let pods = caches.pods.select(&key.namespace, &selector);
        let pod_refs: Vec<&PodInfo> = pods.iter().map(|p| p.as_ref()).collect();
        let existing: Vec<EndpointSlice> = caches
            .slices
            .get(key)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| (**s).clone())
            .collect();
        let versions: Vec<SliceVersion> = existing
            .iter()
            .map(|s| SliceVersion {
                uid: s.metadata.uid.clone().unwrap_or_default(),
                resource_version: s.metadata.resource_version.clone().unwrap_or_default(),
            })
            .collect();
        if ctx.tracker.lock().await.is_stale(&owner, &versions) {
            ctx.waiting.lock().await.insert(key.clone());
            return Err(Error::Stale(format!(
                "EndpointSlice cache for Service {owner}"
            )));
        }
        let mut book = ctx.book.lock().await;
        let created = svc.metadata.creation_timestamp.as_ref().and_then(to_chrono);
        let trigger_time = book
            .trigger
            .compute(&key.namespace, &key.name, created, &pod_refs);
        let input = ServiceInput {
            service: &svc,
            pods: &pod_refs,
            nodes: &caches.nodes,
            existing: &existing,
            trigger_time,
        };
        let plan = reconcile_service(&input, &ctx.rcfg, &mut book.topo);
        let now = (plan.endpoints_desired as i64, plan.slices_desired as i64);
        let (e, s) = book.set_totals(key, Some(now));
        ctx.metrics.endpoints_desired.set(e);
        ctx.metrics.desired_slices.set(s);
        let diag_events = if ctx.cfg.diagnostics {
            let findings = if pods.is_empty() {
                let all = caches.pods.in_namespace(&key.namespace);
                let refs: Vec<&PodInfo> = all.iter().map(|p| p.as_ref()).collect();
                diagnose(&svc, &refs)
            } else {
                diagnose(&svc, &pod_refs)
            };
            let (events, recheck) = book
                .diag
                .update_with_recheck(&owner, findings, Instant::now());
            let no_pods = book.diag.has(&owner, crate::diagnostics::REASON_NO_PODS);
            let set = book.no_pods.entry(key.namespace.clone()).or_default();
            if no_pods {
                set.insert(key.clone());
            } else {
                set.remove(key);
            }
            if let Some(d) = recheck {
                ctx.queue
                    .add_after(key.clone(), d + Duration::from_millis(10))
                    .await;
            }
            events
        } else {
            Vec::new()
        };
        (svc, plan, diag_events)
    };

    ctx.metrics
        .endpoints_added
        .observe(plan.endpoints_added as f64);
    ctx.metrics
        .endpoints_removed
        .observe(plan.endpoints_removed as f64);
    if !plan.is_noop() {
        tracing::debug!(service = %owner, creates = plan.creates.len(), updates = plan.updates.len(), deletes = plan.deletes.len(), "applying EndpointSlice changes");
    }
    let reference = reference_to(svc.as_ref());
    let applied = apply_slice_plan(
        &ctx.client,
        &key.namespace,
        &owner,
        &plan,
        &ctx.tracker,
        &ctx.metrics,
    )
    .await;
    for ev in plan.events.iter().chain(diag_events.iter()) {
        ctx.events.emit(&reference, ev).await;
    }
    if let Err(e) = applied {
        ctx.events
            .emit(
                &reference,
                &EventSpec::warning(
                    "FailedToUpdateEndpointSlices",
                    format!("Error updating Endpoint Slices for Service {owner}: {e}"),
                ),
            )
            .await;
        return Err(e);
    }
    if !plan.errors.is_empty() {
        return Err(Error::Retry(plan.errors.join("; ")));
    }
    Ok(())
}
