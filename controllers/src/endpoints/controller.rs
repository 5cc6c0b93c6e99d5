//! The Endpoints controller process.
//!
//! ```text
//! pub async fn run(client: kube::Client, cfg: Config, metrics: ControllerMetrics,
//!                  shutdown: impl Future<Output = ()> + Send) -> crate::Result<()>
//! ```
//! `metrics` comes from `ControllerMetrics::register(&mut registry, "svcnet_endpoints")`.
//! Writes are create / replace-with-resourceVersion / delete.

use super::desired::{reconcile_endpoints, EndpointsAction, ANNOTATION_LEADER};
use crate::apply::{is_namespace_terminating, is_not_found, reference_to, EventSink};
use crate::driver::{self, Feed, Spec, SyncGate};
use crate::error::in_range;
use crate::index::{fold_pod_change, Change, ObjKey, PodIndex, ServiceIndex};
use crate::metrics::ControllerMetrics;
use crate::trigger::TriggerTimeTracker;
use crate::views::{to_chrono, PodInfo};
use crate::watches::Watches;
use crate::writes::EventSpec;
use crate::{Error, Result};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use runtime::queue::{Backoff, WorkQueue};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, RwLock};

/// Endpoints controller settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--concurrent-endpoint-syncs`.
    pub concurrent_syncs: usize,
    /// `--endpoint-updates-batch-period`.
    pub batch_period: Duration,
    /// Reporting instance for Events.
    pub instance: Option<String>,
    /// Reported ready once the caches are synced and the workers run (`/readyz`).
    pub ready: Option<runtime::admin::ReadyFlag>,
}

impl driver::Settings for Config {
    const COMPONENT: &'static str = "svcnet-endpoint-controller";
    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_secs(1000),
        max_retries: 15,
    };

    fn validate(&self) -> Result<()> {
        in_range("--concurrent-endpoint-syncs", self.concurrent_syncs, 1, 50)?;
        Ok(())
    }

    fn instance(&self) -> Option<String> {
        self.instance.clone()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrent_syncs: 5,
            batch_period: Duration::ZERO,
            instance: None,
            ready: None,
        }
    }
}

#[derive(Default)]
struct Caches {
    services: ServiceIndex,
    pods: PodIndex,
    endpoints: HashMap<ObjKey, Arc<Endpoints>>,
}

struct Ctx {
    client: Client,
    cfg: Config,
    caches: RwLock<Caches>,
    trigger: Mutex<TriggerTimeTracker>,
    /// resourceVersions we replaced: a cache still showing one is stale.
    replaced: Mutex<HashMap<ObjKey, String>>,
    /// Objects we created that the cache has not shown yet.
    created: Mutex<HashSet<ObjKey>>,
    queue: WorkQueue<ObjKey>,
    metrics: ControllerMetrics,
    events: EventSink,
}

/// Runs the Endpoints controller until `shutdown` resolves, fed by the process's shared `watches` (one
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
        cfg,
        caches: RwLock::new(Caches::default()),
        trigger: Mutex::new(TriggerTimeTracker::default()),
        replaced: Mutex::new(HashMap::new()),
        created: Mutex::new(HashSet::new()),
        queue: queue.clone(),
        metrics,
        events,
    });
    let gate = SyncGate::default();
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
            watches.subscribe::<Endpoints, _>("", |o| o),
            &gate,
            &ctx,
            |ctx, c| async move { on_endpoints(&ctx, c).await },
        ),
    ];
    let spec = Spec {
        name: "endpoints",
        workers: ctx.cfg.concurrent_syncs,
        queue,
        metrics: ctx.metrics.clone(),
        ready: ctx.cfg.ready.clone(),
        stale_retry: None,
    };
    driver::run(
        spec,
        ctx,
        feeds,
        gate,
        initial_keys,
        |ctx, k| async move { sync(&ctx, &k).await },
        shutdown,
    )
    .await
}

/// Every Service, and Endpoints left over from a Service that no longer exists (not those
/// another component leads: they carry the leader annotation).
async fn initial_keys(ctx: Arc<Ctx>) -> Vec<ObjKey> {
    let c = ctx.caches.read().await;
    let leftovers = c.endpoints.iter().filter(|(_, e)| {
        !e.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_LEADER))
    });
    let mut keys = c.services.keys();
    keys.extend(leftovers.map(|(k, _)| k.clone()));
    keys
}

async fn on_service(ctx: &Ctx, c: Change<Service>) {
    let keys = ctx.caches.write().await.services.fold(c);
    for k in keys {
        ctx.queue.add(k).await;
    }
}

async fn on_pod(ctx: &Ctx, c: Change<PodInfo>) {
    let keys = {
        let mut guard = ctx.caches.write().await;
        let caches = &mut *guard;
        fold_pod_change(&mut caches.pods, &caches.services, c)
    };
    for k in keys {
        ctx.queue.add_after(k, ctx.cfg.batch_period).await;
    }
}

async fn on_endpoints(ctx: &Ctx, c: Change<Endpoints>) {
    let mut keys = Vec::new();
    {
        let mut caches = ctx.caches.write().await;
        match c {
            Change::Apply(e) => {
                caches.endpoints.insert(ObjKey::of(&e), Arc::new(e));
            }
            Change::Delete(e) => {
                let k = ObjKey::of(&e);
                caches.endpoints.remove(&k);
                keys.push(k);
            }
            Change::Relist(list) => {
                let new: HashMap<ObjKey, Arc<Endpoints>> = list
                    .into_iter()
                    .map(|e| (ObjKey::of(&e), Arc::new(e)))
                    .collect();
                keys.extend(
                    caches
                        .endpoints
                        .keys()
                        .filter(|k| !new.contains_key(*k))
                        .cloned(),
                );
                caches.endpoints = new;
            }
        }
    }
    for k in keys {
        ctx.queue.add(k).await;
    }
}

async fn sync(ctx: &Ctx, key: &ObjKey) -> Result<()> {
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let (svc, pods, existing) = {
        let caches = ctx.caches.read().await;
        let svc = caches.services.get(key);
        let pods = match svc
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.as_ref())
        {
            Some(sel) => caches.pods.select(&key.namespace, sel),
            None => Vec::new(),
        };
        (svc, pods, caches.endpoints.get(key).cloned())
    };
    let Some(svc) = svc else {
        ctx.trigger
            .lock()
            .await
            .delete_service(&key.namespace, &key.name);
        ctx.replaced.lock().await.remove(key);
        ctx.created.lock().await.remove(key);
        return match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.metrics.change("delete");
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::Kube(e)),
        };
    };
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") || spec.selector.is_none() {
        return Ok(());
    }
    {
        let mut created = ctx.created.lock().await;
        if existing.is_some() {
            created.remove(key);
        } else if created.contains(key) {
            return Err(Error::Stale(format!(
                "Endpoints cache for {key}: created object not seen yet"
            )));
        }
    }
    if let Some(cur) = &existing {
        let mut replaced = ctx.replaced.lock().await;
        match (replaced.get(key), cur.metadata.resource_version.as_ref()) {
            (Some(old), Some(rv)) if old == rv => {
                return Err(Error::Stale(format!(
                    "Endpoints cache for {key}: resourceVersion {rv} already replaced"
                )));
            }
            (Some(_), _) => {
                replaced.remove(key);
            }
            _ => {}
        }
    }
    let refs: Vec<&PodInfo> = pods.iter().map(|p| p.as_ref()).collect();
    let created = svc.metadata.creation_timestamp.as_ref().and_then(to_chrono);
    let trigger = ctx
        .trigger
        .lock()
        .await
        .compute(&key.namespace, &key.name, created, &refs);
    let action = reconcile_endpoints(&svc, &refs, existing.as_deref(), trigger);
    let pp = PostParams::default();
    let result = match &action {
        EndpointsAction::None => return Ok(()),
        EndpointsAction::Create(e) => match api.create(&pp, e).await {
            Ok(_) => {
                ctx.metrics.change("create");
                ctx.created.lock().await.insert(key.clone());
                Ok(())
            }
            Err(err) if is_namespace_terminating(&err) => return Ok(()),
            Err(err) => Err((
                "FailedToCreateEndpoint",
                format!("Failed to create endpoint for service {key}: {err}"),
                err,
            )),
        },
        EndpointsAction::Update(e) => match api.replace(&key.name, &pp, e).await {
            Ok(updated) => {
                ctx.metrics.change("update");
                let old = existing
                    .as_ref()
                    .and_then(|x| x.metadata.resource_version.clone());
                if let Some(old) = old {
                    if updated.metadata.resource_version.as_ref() != Some(&old) {
                        ctx.replaced.lock().await.insert(key.clone(), old);
                    }
                }
                Ok(())
            }
            Err(err) => Err((
                "FailedToUpdateEndpoint",
                format!("Failed to update endpoint {key}: {err}"),
                err,
            )),
        },
    };
    match result {
        Ok(()) => Ok(()),
        Err((reason, msg, err)) => {
            if let EndpointsAction::Create(e) | EndpointsAction::Update(e) = &action {
                let mut r = reference_to(e);
                r.namespace = Some(key.namespace.clone());
                ctx.events.emit(&r, &EventSpec::warning(reason, msg)).await;
            }
            Err(Error::Kube(err))
        }
    }
}
