//! The watches of Services, EndpointSlices and Nodes that feed the tracker of `run`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::Shared;
use crate::announce::inputs::SharedInputs;
use crate::types::{EndpointSliceInfo, ServiceKey};
use crate::watch::convert::{self, WATCH_LABEL_SELECTOR};

fn service_key(meta: &kube::api::ObjectMeta) -> Option<ServiceKey> {
    Some(ServiceKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    ))
}

pub(super) async fn watch_services(api: Api<Service>, shared: Arc<Shared>) {
    let cfg = watcher::Config::default().labels(WATCH_LABEL_SELECTOR);
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut buffer: Option<BTreeMap<ServiceKey, crate::types::ServiceInfo>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "service watch error");
                continue;
            }
        };
        let mut t = shared.tracker.lock().await;
        let changed = match ev {
            Event::Init => {
                buffer = Some(BTreeMap::new());
                false
            }
            Event::InitApply(s) => {
                if let (Some(b), Some(info)) = (buffer.as_mut(), convert::service(&s)) {
                    b.insert(info.key.clone(), info);
                }
                false
            }
            Event::InitDone => t.reset_services(buffer.take().unwrap_or_default()) || t.ready(),
            Event::Apply(s) => match service_key(&s.metadata) {
                Some(k) => {
                    let c = t.apply_service(k.clone(), convert::service(&s));
                    if c {
                        shared.count_change(k, false);
                    }
                    c
                }
                None => false,
            },
            Event::Delete(s) => match service_key(&s.metadata) {
                Some(k) => {
                    let c = t.apply_service(k.clone(), None);
                    if c {
                        shared.count_change(k, false);
                    }
                    c
                }
                None => false,
            },
        };
        shared.metrics.pending_changes.set(t.changed.len() as i64);
        drop(t);
        if changed {
            shared.changed();
        }
    }
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
fn owner(es: &EndpointSlice) -> Option<ServiceKey> {
    let name = es
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    Some(ServiceKey::new(
        es.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

pub(super) async fn watch_slices(api: Api<EndpointSlice>, shared: Arc<Shared>) {
    let cfg = watcher::Config::default().labels(WATCH_LABEL_SELECTOR);
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut buffer: Option<Vec<EndpointSliceInfo>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "endpointslice watch error");
                continue;
            }
        };
        let mut t = shared.tracker.lock().await;
        let id = |es: &EndpointSlice| {
            (
                es.metadata.namespace.clone().unwrap_or_default(),
                es.metadata.name.clone().unwrap_or_default(),
            )
        };
        let changed = match ev {
            Event::Init => {
                buffer = Some(vec![]);
                false
            }
            Event::InitApply(es) => {
                if let (Some(b), Some(info)) = (buffer.as_mut(), convert::endpoint_slice(&es)) {
                    b.push(info);
                }
                false
            }
            Event::InitDone => t.reset_slices(buffer.take().unwrap_or_default()) || t.ready(),
            Event::Apply(es) => {
                let (ns, name) = id(&es);
                let c = t.apply_slice(&ns, &name, convert::endpoint_slice(&es));
                if let (true, Some(svc)) = (c, owner(&es)) {
                    shared.count_change(svc, true);
                }
                c
            }
            Event::Delete(es) => {
                let (ns, name) = id(&es);
                let c = t.apply_slice(&ns, &name, None);
                if let (true, Some(svc)) = (c, owner(&es)) {
                    shared.count_change(svc, true);
                }
                c
            }
        };
        shared.metrics.pending_changes.set(t.changed.len() as i64);
        drop(t);
        if changed {
            shared.changed();
        }
    }
}

/// Watches this proxy's Node, or every Node when L2 announcement needs them all (`l2`): one Node
/// watch per process either way.
pub(super) async fn watch_node(
    api: Api<Node>,
    name: String,
    shared: Arc<Shared>,
    l2: Option<Arc<SharedInputs>>,
) {
    let cfg = match &l2 {
        Some(_) => watcher::Config::default(),
        None => watcher::Config::default().fields(&format!("metadata.name={name}")),
    };
    let mut stream = watcher::watcher(api, cfg)
        .default_backoff()
        .modify(|n: &mut Node| n.metadata.managed_fields = None)
        .boxed();
    let mut seen: Option<crate::watch::convert::NodeInfo> = None;
    let mut all: Option<BTreeMap<String, crate::watch::convert::NodeInfo>> = None;
    let ours = |n: &Node| n.metadata.name.as_deref() == Some(name.as_str());
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "node watch error");
                continue;
            }
        };
        if let Some(inputs) = &l2 {
            fold_node_for_l2(inputs, &ev, &mut all);
        }
        let mut t = shared.tracker.lock().await;
        let changed = match ev {
            Event::Init => {
                seen = None;
                false
            }
            Event::InitApply(n) => {
                if ours(&n) {
                    seen = Some(convert::node(&n));
                }
                false
            }
            Event::InitDone => {
                t.node_synced = true;
                t.apply_node(seen.take()) || t.ready()
            }
            Event::Apply(n) if ours(&n) => t.apply_node(Some(convert::node(&n))),
            Event::Delete(n) if ours(&n) => t.apply_node(None),
            Event::Apply(_) | Event::Delete(_) => false,
        };
        drop(t);
        if changed {
            shared.changed();
        }
    }
}

/// Folds a Node watch event into the L2 speaker's Node map.
fn fold_node_for_l2(
    inputs: &SharedInputs,
    ev: &Event<Node>,
    all: &mut Option<BTreeMap<String, crate::watch::convert::NodeInfo>>,
) {
    let mut i = inputs.lock();
    match ev {
        Event::Init => *all = Some(BTreeMap::new()),
        Event::InitApply(n) => {
            if let (Some(m), Some(name)) = (all.as_mut(), n.metadata.name.clone()) {
                m.insert(name, convert::node(n));
            }
        }
        Event::InitDone => {
            i.nodes = all.take().unwrap_or_default();
            i.synced.insert("nodes");
        }
        Event::Apply(n) => {
            if let Some(name) = n.metadata.name.clone() {
                i.nodes.insert(name, convert::node(n));
            }
        }
        Event::Delete(n) => {
            if let Some(name) = n.metadata.name.as_deref() {
                i.nodes.remove(name);
            }
        }
    }
    drop(i);
    inputs.changed.notify_one();
}
