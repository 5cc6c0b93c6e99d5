//! The EndpointSlice mirroring controller process.
//!
//! ```text
//! pub async fn run(client: kube::Client, cfg: Config, metrics: ControllerMetrics,
//!                  shutdown: impl Future<Output = ()> + Send) -> crate::Result<()>
//! ```
//! `metrics` comes from `ControllerMetrics::register(&mut registry, "svcnet_endpointslice_mirroring")`.

use super::desired::{reconcile_mirror, should_mirror, MirrorConfig, MIRRORING_CONTROLLER_NAME};
use crate::apply::{apply_slice_plan, reference_to, EventSink};
use crate::driver::{self, Feed, Spec, SyncGate};
use crate::endpointslice::build::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};
use crate::error::in_range;
use crate::index::{Change, ObjKey};
use crate::metrics::ControllerMetrics;
use crate::tracker::{SliceTracker, SliceVersion};
use crate::watches::Watches;
use crate::writes::SlicePlan;
use crate::{Error, Result};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use runtime::queue::{Backoff, WorkQueue};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, RwLock};

/// Mirroring controller settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--mirroring-max-endpoints-per-subset` (1..=1000).
    pub max_endpoints_per_subset: usize,
    /// `--mirroring-concurrent-service-endpoint-syncs`.
    pub concurrent_syncs: usize,
    /// `--mirroring-endpointslice-updates-batch-period`.
    pub batch_period: Duration,
    /// managed-by value.
    pub controller_name: String,
    /// Reporting instance for Events.
    pub instance: Option<String>,
    /// Reported ready once the caches are synced and the workers run (`/readyz`).
    pub ready: Option<runtime::admin::ReadyFlag>,
}

impl driver::Settings for Config {
    const COMPONENT: &'static str = "svcnet-endpointslice-mirroring-controller";
    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(100),
        max_retries: 15,
    };

    fn validate(&self) -> Result<()> {
        in_range(
            "--mirroring-max-endpoints-per-subset",
            self.max_endpoints_per_subset,
            1,
            1000,
        )?;
        Ok(())
    }

    fn instance(&self) -> Option<String> {
        self.instance.clone()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_endpoints_per_subset: 1000,
            concurrent_syncs: 5,
            batch_period: Duration::ZERO,
            controller_name: MIRRORING_CONTROLLER_NAME.into(),
            instance: None,
            ready: None,
        }
    }
}

#[derive(Default)]
struct Caches {
    services: HashMap<ObjKey, Arc<Service>>,
    endpoints: HashMap<ObjKey, Arc<Endpoints>>,
    slices: HashMap<ObjKey, BTreeMap<String, Arc<EndpointSlice>>>,
}

struct Ctx {
    client: Client,
    cfg: Config,
    mcfg: MirrorConfig,
    caches: RwLock<Caches>,
    tracker: Mutex<SliceTracker>,
    queue: WorkQueue<ObjKey>,
    metrics: ControllerMetrics,
    events: EventSink,
}

/// Runs the mirroring controller until `shutdown` resolves, fed by the process's shared `watches` (one
/// watch per kind; a standalone caller passes `Watches::new(client.clone())`).
pub async fn run(
    watches: &Watches,
    client: Client,
    cfg: Config,
    metrics: ControllerMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (queue, events) = driver::prepare(&client, &cfg, &metrics)?;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        mcfg: MirrorConfig {
            max_endpoints_per_subset: cfg.max_endpoints_per_subset,
            controller_name: cfg.controller_name.clone(),
        },
        cfg,
        caches: RwLock::new(Caches::default()),
        tracker: Mutex::new(SliceTracker::default()),
        queue: queue.clone(),
        metrics,
        events,
    });
    // The shared watches deliver objects without managedFields; nothing else is dropped here.
    let gate = SyncGate::default();
    let ours = format!("{LABEL_MANAGED_BY}={}", ctx.cfg.controller_name);
    let feeds = vec![
        Feed::new(
            watches.subscribe::<Service, _>("", |s| s),
            &gate,
            &ctx,
            |ctx, c| async move { on_keyed(&ctx, c, |c| &mut c.services).await },
        ),
        Feed::new(
            watches.subscribe::<Endpoints, _>("", |e| e),
            &gate,
            &ctx,
            |ctx, c| async move { on_keyed(&ctx, c, |c| &mut c.endpoints).await },
        ),
        Feed::new(
            watches.subscribe::<EndpointSlice, _>(&ours, |s| s),
            &gate,
            &ctx,
            |ctx, c| async move { on_slice(&ctx, c).await },
        ),
    ];
    let spec = Spec {
        name: "endpointslicemirroring",
        workers: ctx.cfg.concurrent_syncs,
        queue,
        metrics: ctx.metrics.clone(),
        ready: ctx.cfg.ready.clone(),
        stale_retry: None,
    };
    // Every Endpoints, and every key we still hold slices for.
    let initial = |ctx: Arc<Ctx>| async move {
        let c = ctx.caches.read().await;
        c.endpoints.keys().chain(c.slices.keys()).cloned().collect()
    };
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

/// Folds a Service or Endpoints change into its map of the caches (`map` picks which) and
/// queues every key it touched.
async fn on_keyed<T: kube::Resource>(
    ctx: &Ctx,
    c: Change<T>,
    map: impl Fn(&mut Caches) -> &mut HashMap<ObjKey, Arc<T>>,
) {
    let mut queued = Vec::new();
    {
        let mut caches = ctx.caches.write().await;
        let m = map(&mut caches);
        match c {
            Change::Apply(o) => {
                let k = ObjKey::of(&o);
                queued.push(k.clone());
                m.insert(k, Arc::new(o));
            }
            Change::Delete(o) => {
                let k = ObjKey::of(&o);
                m.remove(&k);
                queued.push(k);
            }
            Change::Relist(list) => {
                let new: HashMap<ObjKey, Arc<T>> = list
                    .into_iter()
                    .map(|o| (ObjKey::of(&o), Arc::new(o)))
                    .collect();
                queued.extend(m.keys().filter(|k| !new.contains_key(*k)).cloned());
                queued.extend(new.keys().cloned());
                *m = new;
            }
        }
    }
    for k in queued {
        ctx.queue.add(k).await;
    }
}

async fn on_slice(ctx: &Ctx, c: Change<EndpointSlice>) {
    let mut requeue = Vec::new();
    {
        let mut caches = ctx.caches.write().await;
        let tracker = ctx.tracker.lock().await;
        let handle = |caches: &mut Caches,
                      s: EndpointSlice,
                      deleted: bool,
                      requeue: &mut Vec<ObjKey>| {
            let Some(owner) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_NAME))
                .map(|n| ObjKey::new(s.metadata.namespace.clone().unwrap_or_default(), n.clone()))
            else {
                return;
            };
            let name = s.metadata.name.clone().unwrap_or_default();
            let uid = s.metadata.uid.clone().unwrap_or_default();
            let rv = if deleted {
                None
            } else {
                s.metadata.resource_version.as_deref()
            };
            if !tracker.is_own_write(&owner.to_string(), &uid, rv) {
                requeue.push(owner.clone());
            }
            let entry = caches.slices.entry(owner.clone()).or_default();
            if deleted {
                entry.remove(&name);
                if entry.is_empty() {
                    caches.slices.remove(&owner);
                }
            } else {
                entry.insert(name, Arc::new(s));
            }
        };
        match c {
            Change::Apply(s) => handle(&mut caches, s, false, &mut requeue),
            Change::Delete(s) => handle(&mut caches, s, true, &mut requeue),
            Change::Relist(list) => {
                requeue.extend(caches.slices.keys().cloned());
                caches.slices.clear();
                for s in list {
                    handle(&mut caches, s, false, &mut requeue);
                }
            }
        }
    }
    for k in requeue {
        ctx.queue
            .add_after(k, ctx.cfg.batch_period.max(Duration::from_secs(1)))
            .await;
    }
}

async fn sync(ctx: &Ctx, key: &ObjKey) -> Result<()> {
    let owner = key.to_string();
    let (svc, ep, slices) = {
        let c = ctx.caches.read().await;
        let slices: Vec<EndpointSlice> = c
            .slices
            .get(key)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| (**s).clone())
            .collect();
        (
            c.services.get(key).cloned(),
            c.endpoints.get(key).cloned(),
            slices,
        )
    };
    let plan = if should_mirror(ep.as_deref(), svc.as_deref()) {
        let versions: Vec<SliceVersion> = slices
            .iter()
            .map(|s| SliceVersion {
                uid: s.metadata.uid.clone().unwrap_or_default(),
                resource_version: s.metadata.resource_version.clone().unwrap_or_default(),
            })
            .collect();
        if ctx.tracker.lock().await.is_stale(&owner, &versions) {
            return Err(Error::Stale(format!(
                "EndpointSlice cache for Endpoints {owner}"
            )));
        }
        let Some(ep) = ep.as_deref() else {
            return Ok(());
        };
        reconcile_mirror(ep, &slices, &ctx.mcfg)
    } else {
        SlicePlan {
            deletes: slices,
            ..Default::default()
        }
    };
    apply_slice_plan(
        &ctx.client,
        &key.namespace,
        &owner,
        &plan,
        &ctx.tracker,
        &ctx.metrics,
    )
    .await?;
    if let Some(ep) = ep.as_deref() {
        let reference = reference_to(ep);
        for ev in &plan.events {
            ctx.events.emit(&reference, ev).await;
        }
    }
    Ok(())
}
