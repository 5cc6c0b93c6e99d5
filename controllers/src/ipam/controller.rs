//! The running controller: watches feeding the [`Ipam`] context's stores, worker tasks running
//! [`Ipam::reconcile`] off its queue, the repair loop and the pool-status / metrics loop.

use std::collections::HashMap;
use std::sync::Arc;

use crds::{LoadBalancerIPPool, NodePortClaim, ServiceIPClaim};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use std::sync::atomic::Ordering;

use crate::index::{Change, TaskGuard};
use crate::ipam::addresses::api_serves_addresses;
use crate::ipam::config::LedgerChoice;
use crate::ipam::context::Ipam;
use crate::ipam::plan::load_balancer::PoolView;
use crate::ipam::service_cidr_io::{
    cidr_loop, migrate_claims, watch_addresses, watch_service_cidrs,
};
use crate::watches::Watches;
use crate::{Error, Result};
use runtime::admin::ReadyFlag;

fn svc_key(s: &Service) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

/// A watch stream with the default backoff; relists are delivered as Init/InitApply/InitDone.
fn watch<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// Folds the process's shared Service watch into the IPAM store: every change enqueues the
/// Service; a Service that disappeared (or was recreated under another uid) is tombstoned so
/// its claims are released.
async fn watch_services(
    ipam: Arc<Ipam>,
    mut changes: tokio::sync::mpsc::Receiver<Change<Service>>,
    synced: tokio::sync::mpsc::Sender<&'static str>,
) {
    while let Some(change) = changes.recv().await {
        match change {
            Change::Relist(list) => {
                let fresh: HashMap<String, Arc<Service>> = list
                    .into_iter()
                    .map(|s| (svc_key(&s), Arc::new(s)))
                    .collect();
                let removed: Vec<(String, Option<String>)> = {
                    let mut store = ipam.services.write().await;
                    let removed = store
                        .iter()
                        .filter(|(k, old)| {
                            fresh.get(*k).map(|n| n.metadata.uid.clone())
                                != Some(old.metadata.uid.clone())
                        })
                        .map(|(k, old)| (k.clone(), old.metadata.uid.clone()))
                        .collect();
                    *store = fresh;
                    removed
                };
                for (k, uid) in removed {
                    ipam.tombstone(k, uid).await;
                }
                let keys: Vec<String> = ipam.services.read().await.keys().cloned().collect();
                for k in keys {
                    ipam.queue.add(k).await;
                }
                let _ = synced.send("services").await;
            }
            Change::Apply(s) => {
                let key = svc_key(&s);
                let uid = s.metadata.uid.clone();
                let prev = ipam.services.write().await.insert(key.clone(), Arc::new(s));
                if let Some(prev) = prev {
                    if prev.metadata.uid != uid {
                        ipam.tombstone(key.clone(), prev.metadata.uid.clone()).await;
                    }
                }
                ipam.queue.add(key).await;
            }
            Change::Delete(s) => {
                let key = svc_key(&s);
                {
                    let mut store = ipam.services.write().await;
                    if store.get(&key).map(|o| o.metadata.uid.clone())
                        == Some(s.metadata.uid.clone())
                    {
                        store.remove(&key);
                    }
                }
                ipam.tombstone(key.clone(), s.metadata.uid.clone()).await;
                ipam.queue.add(key).await;
            }
        }
    }
}

async fn watch_ip_claims(ipam: Arc<Ipam>, synced: tokio::sync::mpsc::Sender<&'static str>) {
    let mut stream = std::pin::pin!(watch(ipam.claims.ip_api().clone()));
    let mut buffer = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(c)) => buffer.push(c),
            Ok(Event::InitDone) => {
                let list = std::mem::take(&mut buffer);
                ipam.state.lock().await.reset_ip_claims(&list);
                let _ = synced.send("serviceipclaims").await;
            }
            Ok(Event::Apply(c)) => ipam.state.lock().await.apply_ip_claim(&c),
            Ok(Event::Delete(c)) => {
                if let Some(ip) = ServiceIPClaim::ip_from_name(&c.name_any()) {
                    ipam.state.lock().await.remove_ip_claim(ip);
                }
            }
            Err(err) => tracing::warn!(%err, "serviceipclaim watch error"),
        }
    }
}

async fn watch_port_claims(ipam: Arc<Ipam>, synced: tokio::sync::mpsc::Sender<&'static str>) {
    let mut stream = std::pin::pin!(watch(ipam.claims.port_api().clone()));
    let mut buffer: Vec<NodePortClaim> = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(c)) => buffer.push(c),
            Ok(Event::InitDone) => {
                let list = std::mem::take(&mut buffer);
                ipam.state.lock().await.reset_port_claims(&list);
                let _ = synced.send("nodeportclaims").await;
            }
            Ok(Event::Apply(c)) => ipam.state.lock().await.apply_port_claim(&c),
            Ok(Event::Delete(c)) => {
                if let Some(p) = NodePortClaim::port_from_name(&c.name_any()) {
                    ipam.state.lock().await.remove_port(p);
                }
            }
            Err(err) => tracing::warn!(%err, "nodeportclaim watch error"),
        }
    }
}

async fn watch_pools(ipam: Arc<Ipam>, synced: tokio::sync::mpsc::Sender<&'static str>) {
    let api: Api<LoadBalancerIPPool> = Api::all(ipam.client.clone());
    let mut stream = std::pin::pin!(watch(api).applied_objects_or_init(&ipam).boxed());
    while let Some(item) = stream.next().await {
        match item {
            Ok(PoolEvent::Synced) => {
                let _ = synced.send("loadbalancerippools").await;
            }
            Ok(PoolEvent::Changed) => {
                // Pools changed: Services waiting for an address may now get one.
                let waiting: Vec<String> = ipam.services.read().await.keys().cloned().collect();
                for k in waiting {
                    ipam.queue.add(k).await;
                }
            }
            Err(err) => tracing::warn!(%err, "pool watch error"),
        }
    }
}

/// What the pool watch reports.
enum PoolEvent {
    Synced,
    Changed,
}

trait PoolStreamExt {
    fn applied_objects_or_init(
        self,
        ipam: &Arc<Ipam>,
    ) -> futures::stream::BoxStream<'static, Result<PoolEvent, watcher::Error>>;
}

impl<S> PoolStreamExt for S
where
    S: futures::Stream<Item = Result<Event<LoadBalancerIPPool>, watcher::Error>> + Send + 'static,
{
    fn applied_objects_or_init(
        self,
        ipam: &Arc<Ipam>,
    ) -> futures::stream::BoxStream<'static, Result<PoolEvent, watcher::Error>> {
        let ipam = ipam.clone();
        let buffer = Arc::new(Mutex::new(HashMap::<String, LoadBalancerIPPool>::new()));
        self.and_then(move |ev| {
            let ipam = ipam.clone();
            let buffer = buffer.clone();
            async move {
                let mut raw = ipam.raw_pools.write().await;
                let out = match ev {
                    Event::Init => {
                        buffer.lock().await.clear();
                        return Ok(None);
                    }
                    Event::InitApply(p) => {
                        buffer.lock().await.insert(p.name_any(), p);
                        return Ok(None);
                    }
                    Event::InitDone => {
                        *raw = std::mem::take(&mut *buffer.lock().await);
                        PoolEvent::Synced
                    }
                    Event::Apply(p) => {
                        raw.insert(p.name_any(), p);
                        PoolEvent::Changed
                    }
                    Event::Delete(p) => {
                        raw.remove(&p.name_any());
                        PoolEvent::Changed
                    }
                };
                let mut views: Vec<PoolView> = raw.values().map(PoolView::from_pool).collect();
                views.sort_by(|a, b| a.name.cmp(&b.name));
                *ipam.pools.write().await = views;
                Ok(Some(out))
            }
        })
        .try_filter_map(|x| async move { Ok(x) })
        .boxed()
    }
}

async fn watch_namespaces(ipam: Arc<Ipam>, synced: tokio::sync::mpsc::Sender<&'static str>) {
    let api: Api<Namespace> = Api::all(ipam.client.clone());
    let mut stream = std::pin::pin!(watch(api));
    let mut buffer = HashMap::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(n)) => {
                buffer.insert(n.name_any(), n.labels().clone());
            }
            Ok(Event::InitDone) => {
                *ipam.namespaces.write().await = std::mem::take(&mut buffer);
                let _ = synced.send("namespaces").await;
            }
            Ok(Event::Apply(n)) => {
                let changed = ipam
                    .namespaces
                    .write()
                    .await
                    .insert(n.name_any(), n.labels().clone())
                    .as_ref()
                    != Some(n.labels());
                if changed {
                    let keys: Vec<String> = ipam
                        .services
                        .read()
                        .await
                        .keys()
                        .filter(|k| k.starts_with(&format!("{}/", n.name_any())))
                        .cloned()
                        .collect();
                    for k in keys {
                        ipam.queue.add(k).await;
                    }
                }
            }
            Ok(Event::Delete(n)) => {
                ipam.namespaces.write().await.remove(&n.name_any());
            }
            Err(err) => tracing::warn!(%err, "namespace watch error"),
        }
    }
}

async fn worker(ipam: Arc<Ipam>) {
    while let Some(key) = ipam.queue.get().await {
        let span = tracing::info_span!("reconcile", service = %key);
        let res = tracing::Instrument::instrument(ipam.reconcile(&key), span).await;
        match res {
            Ok(()) => ipam.queue.forget(&key).await,
            Err(err) => {
                if !matches!(err, Error::Retry(_)) {
                    ipam.metrics.error(err.metric_label());
                }
                match &err {
                    Error::Retry(_) => tracing::debug!(%err, "retrying"),
                    Error::Allocation { .. } => tracing::info!(%err, "allocation failed"),
                    _ => tracing::warn!(%err, "reconcile failed"),
                }
                ipam.queue.add_rate_limited(key.clone()).await;
            }
        }
        ipam.queue.done(&key).await;
    }
}

/// [`run_with`] on watches of its own.
pub async fn run(ipam: Arc<Ipam>, ready: ReadyFlag) -> Result<()> {
    let watches = Watches::new(ipam.client.clone());
    run_with(&watches, ipam, ready).await
}

/// Runs the IPAM controller until the future is dropped (on losing leadership) or a watch
/// stream ends. Services come from the process's shared `watches` (the endpoint controllers
/// watch them too); its claims, pools and Namespaces only IPAM reads. `ready` is set once all
/// caches are synced and workers run.
pub async fn run_with(watches: &Watches, ipam: Arc<Ipam>, ready: ReadyFlag) -> Result<()> {
    // Where the API serves IPAddress / ServiceCIDR, those are the ClusterIP ledger and ranges;
    // otherwise ServiceIPClaims and the flag.
    let addresses = match ipam.cfg.ledger {
        LedgerChoice::ServiceIpClaim => false,
        LedgerChoice::Auto => api_serves_addresses(&ipam.client).await?,
        LedgerChoice::IpAddress => {
            if !api_serves_addresses(&ipam.client).await? {
                // Retried by the caller: the API server may be upgraded meanwhile.
                return Err(Error::InvalidConfig {
                    flag: "--cluster-ip-ledger",
                    value: "ipaddress".to_string(),
                    reason: "the API server does not serve networking.k8s.io/v1 ipaddresses \
                             and servicecidrs"
                        .to_string(),
                });
            }
            true
        }
    };
    ipam.use_addresses.store(addresses, Ordering::Relaxed);
    tracing::info!(
        ledger = if addresses {
            "IPAddress"
        } else {
            "ServiceIPClaim"
        },
        ranges = if addresses {
            "ServiceCIDR objects"
        } else {
            "--service-cluster-ip-range"
        },
        "ClusterIP allocation"
    );
    let mut tasks = JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut expected = 5;
    if addresses {
        tasks.spawn(watch_addresses(ipam.clone(), tx.clone()));
        tasks.spawn(watch_service_cidrs(ipam.clone(), tx.clone()));
        expected += 2;
    }
    tasks.spawn(watch_ip_claims(ipam.clone(), tx.clone()));
    tasks.spawn(watch_port_claims(ipam.clone(), tx.clone()));
    tasks.spawn(watch_pools(ipam.clone(), tx.clone()));
    tasks.spawn(watch_namespaces(ipam.clone(), tx.clone()));
    // Subscribed together with the other controllers of the process, so that they share one
    // list. Services seen before the claims are synced only wait in the queue: no worker runs
    // before every cache is synced, so the first reconciles see the claims.
    let (services, feed) = watches.subscribe::<Service, _>("", |s| s);
    let _feed = TaskGuard(vec![feed]);
    tasks.spawn(watch_services(ipam.clone(), services, tx.clone()));
    let mut synced = std::collections::HashSet::new();
    while synced.len() < expected {
        match rx.recv().await {
            Some(what) => {
                synced.insert(what);
            }
            None => return Err(Error::Retry("watches ended before syncing".to_string())),
        }
    }
    if addresses {
        // Before any allocation, so no address is ever recorded only in the old ledger while
        // a worker allocates from the new one.
        migrate_claims(&ipam).await?;
        tasks.spawn(cidr_loop(ipam.clone()));
    }
    tracing::info!("IPAM caches synced; starting workers");
    tasks.spawn(ipam.queue.clone().run_timer());
    for _ in 0..ipam.cfg.workers.max(1) {
        tasks.spawn(worker(ipam.clone()));
    }
    tasks.spawn(crate::ipam::repair::repair_loop(ipam.clone()));
    tasks.spawn(crate::ipam::repair::status_loop(ipam.clone()));
    ready.set_ready(true);
    // Drain later sync notifications (relists) so senders never block.
    tasks.spawn(async move { while rx.recv().await.is_some() {} });
    // Any task ending is unexpected: report it (the caller restarts us).
    let res = tasks.join_next().await;
    ready.set_ready(false);
    Err(Error::Retry(format!("IPAM task ended: {res:?}")))
}
