//! The objects the speaker reads besides the proxy's Services and EndpointSlices: the
//! `L2Announcement` policies, the LoadBalancer pools, the Nodes and the L2 Leases, each from one
//! watch (managed fields dropped), folded into [`Inputs`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crds::{L2Announcement, LoadBalancerIPPool};

use super::leases::{self, KIND_LABEL};
use crate::watch::convert::NodeInfo;

/// Everything watched for the speaker, by object name.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `L2Announcement` objects.
    pub policies: BTreeMap<String, L2Announcement>,
    /// `LoadBalancerIPPool` objects.
    pub pools: BTreeMap<String, LoadBalancerIPPool>,
    /// Nodes, converted.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// L2 Leases (heartbeats and addresses) of the lease namespace.
    pub leases: BTreeMap<String, Lease>,
    /// Kinds whose initial list has been folded in.
    pub synced: BTreeSet<&'static str>,
}

/// The kinds the speaker waits for before its first decision.
pub const KINDS: [&str; 4] = ["l2announcements", "loadbalancerippools", "nodes", "leases"];

impl Inputs {
    /// Whether every kind has been listed once.
    pub fn synced(&self) -> bool {
        KINDS.iter().all(|k| self.synced.contains(k))
    }

    /// Stores a Lease this node just wrote, unless the watch already delivered a newer version.
    pub fn store_lease(&mut self, lease: Lease) {
        let Some(name) = lease.metadata.name.clone() else {
            return;
        };
        match self.leases.get(&name) {
            Some(old) if !leases::not_older(&lease, old) => {}
            _ => {
                self.leases.insert(name, lease);
            }
        }
    }
}

/// [`Inputs`] shared between the watches and the speaker.
#[derive(Debug, Default)]
pub struct SharedInputs {
    inputs: Mutex<Inputs>,
    /// Signalled on every change.
    pub changed: Notify,
}

impl SharedInputs {
    /// Locks the inputs (a poisoned lock only means a panic elsewhere; the maps stay whole).
    pub fn lock(&self) -> MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Folds one kind's watch into a map of [`Inputs`], converting each object with `convert`.
pub async fn watch_into<K, V>(
    api: Api<K>,
    cfg: watcher::Config,
    kind: &'static str,
    shared: Arc<SharedInputs>,
    convert: fn(&K) -> V,
    map: fn(&mut Inputs) -> &mut BTreeMap<String, V>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    V: Send,
{
    let mut stream = watcher::watcher(api, cfg)
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .boxed();
    let mut buffer: Option<BTreeMap<String, V>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch error");
                continue;
            }
        };
        let mut inputs = shared.lock();
        match ev {
            Event::Init => buffer = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                if let (Some(b), Some(name)) = (buffer.as_mut(), o.meta().name.clone()) {
                    b.insert(name, convert(&o));
                }
            }
            Event::InitDone => {
                *map(&mut inputs) = buffer.take().unwrap_or_default();
                inputs.synced.insert(kind);
            }
            Event::Apply(o) => {
                if let Some(name) = o.meta().name.clone() {
                    map(&mut inputs).insert(name, convert(&o));
                }
            }
            Event::Delete(o) => {
                if let Some(name) = o.meta().name.as_deref() {
                    map(&mut inputs).remove(name);
                }
            }
        }
        drop(inputs);
        shared.changed.notify_one();
    }
}

/// Starts the policy, pool and Lease watches (Nodes come from the proxy's own Node watch, which
/// watches every Node when L2 announcement is on).
pub fn spawn_watches(client: kube::Client, lease_namespace: &str, shared: Arc<SharedInputs>) {
    tokio::spawn(watch_into(
        Api::<L2Announcement>::all(client.clone()),
        watcher::Config::default(),
        "l2announcements",
        shared.clone(),
        Clone::clone,
        |i| &mut i.policies,
    ));
    tokio::spawn(watch_into(
        Api::<LoadBalancerIPPool>::all(client.clone()),
        watcher::Config::default(),
        "loadbalancerippools",
        shared.clone(),
        Clone::clone,
        |i| &mut i.pools,
    ));
    tokio::spawn(watch_into(
        Api::<Lease>::namespaced(client, lease_namespace),
        watcher::Config::default().labels(KIND_LABEL),
        "leases",
        shared,
        Clone::clone,
        |i| &mut i.leases,
    ));
}
