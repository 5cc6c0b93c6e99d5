//! Keeps the [`Index`] in step with the API server.
//!
//! One kube-runtime watcher per kind: Namespaces, Services, EndpointSlices, and Pods only in
//! `pods verified` mode. Each object is converted on arrival into the index's small types
//! (see [`service_from`], [`slice_from`], [`pod_from`]); the API object itself —
//! managedFields, annotations, status and every field DNS does not use — is dropped there and
//! then, so memory follows what DNS serves, not the size of the objects.
//!
//! Watch events are applied under the index's write lock one at a time (each a few map
//! operations). A (re-)list — at start, or after the watch expired (410) — is buffered until
//! the watcher reports it complete (`InitDone`) and only then replaces that kind in one step,
//! so the server never answers from a half-listed kind: until then it keeps serving the
//! previous state. The shared `synced` flag turns true once every kind has been listed once;
//! readiness and in-zone answers wait for it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod as KPod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice as KSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};

use crate::index::{Endpoint, EndpointSlice, Index, Pod, Port, Service, ServiceKind};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The index's view of a Service.
pub fn service_from(svc: &KService) -> Option<Service> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let ips = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.clone(),
            _ => spec.cluster_ip.iter().cloned().collect(),
        };
        ServiceKind::ClusterIp(ips.iter().filter_map(|s| s.parse().ok()).collect())
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some(Service {
        namespace: svc.namespace().unwrap_or_default(),
        name: svc.name_any(),
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    })
}

/// The index's view of an EndpointSlice; `None` without the service-name label.
pub fn slice_from(slice: &KSlice) -> Option<EndpointSlice> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?.clone();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.as_ref();
            Endpoint {
                // FQDN slices carry names, not addresses; DNS serves only addresses.
                addresses: e
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .collect(),
                ready: c.and_then(|c| c.ready),
                serving: c.and_then(|c| c.serving),
                terminating: c.and_then(|c| c.terminating),
                hostname: e.hostname.clone(),
                node_name: e.node_name.clone(),
            }
        })
        .collect();
    Some(EndpointSlice {
        namespace: slice.namespace().unwrap_or_default(),
        name: slice.name_any(),
        service,
        ports,
        endpoints,
    })
}

/// The index's view of a Pod (its IPs).
pub fn pod_from(pod: &KPod) -> Option<Pod> {
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse::<IpAddr>().ok()),
        );
    }
    Some(Pod {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        ips,
    })
}

/// Counts the kinds still to be listed once; sets `flag` when none is left.
#[derive(Clone)]
pub struct SyncTracker {
    remaining: Arc<AtomicUsize>,
    flag: Arc<AtomicBool>,
}

impl SyncTracker {
    /// A tracker for `kinds` kinds.
    pub fn new(kinds: usize, flag: Arc<AtomicBool>) -> Self {
        flag.store(kinds == 0, Ordering::Release);
        Self {
            remaining: Arc::new(AtomicUsize::new(kinds)),
            flag,
        }
    }

    fn done_once(&self, first: &mut bool) {
        if std::mem::take(first) && self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.flag.store(true, Ordering::Release);
        }
    }
}

/// How one kind maps onto the index.
struct Kind<K, T> {
    name: &'static str,
    convert: fn(&K) -> Option<T>,
    apply: fn(&mut Index, T),
    delete: fn(&mut Index, &K),
    reset: fn(&mut Index, Vec<T>),
}

fn write(index: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    // Every index method leaves the index whole, so a poisoned lock still guards a usable value.
    index.write().unwrap_or_else(|e| e.into_inner())
}

async fn run_kind<K, T>(api: Api<K>, kind: Kind<K, T>, index: Arc<RwLock<Index>>, sync: SyncTracker)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut first = true;
    let mut buffer: Vec<T> = Vec::new();
    let mut stream = watcher(api).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(obj)) => buffer.extend((kind.convert)(&obj)),
            Ok(Event::InitDone) => {
                let objects = std::mem::take(&mut buffer);
                let n = objects.len();
                (kind.reset)(&mut write(&index), objects);
                tracing::info!(kind = kind.name, objects = n, "listed");
                sync.done_once(&mut first);
            }
            Ok(Event::Apply(obj)) => match (kind.convert)(&obj) {
                Some(t) => (kind.apply)(&mut write(&index), t),
                // No longer something DNS serves (e.g. a slice that lost its label).
                None => (kind.delete)(&mut write(&index), &obj),
            },
            Ok(Event::Delete(obj)) => (kind.delete)(&mut write(&index), &obj),
            Err(err) => tracing::warn!(kind = kind.name, %err, "watch failed; retrying"),
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = watcher::Result<Event<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
}

/// Watches every kind DNS needs and keeps `index` current; runs until the process ends.
/// `pods` adds the Pod watch (for `pods verified`).
pub async fn run(client: Client, index: Arc<RwLock<Index>>, synced: Arc<AtomicBool>, pods: bool) {
    let sync = SyncTracker::new(if pods { 4 } else { 3 }, synced);
    let namespaces = run_kind(
        Api::<Namespace>::all(client.clone()),
        Kind {
            name: "Namespace",
            convert: |ns: &Namespace| Some(ns.name_any()),
            apply: |idx, name| idx.apply_namespace(&name),
            delete: |idx, ns| idx.delete_namespace(&ns.name_any()),
            reset: |idx, names| idx.reset_namespaces(names),
        },
        index.clone(),
        sync.clone(),
    );
    let services = run_kind(
        Api::<KService>::all(client.clone()),
        Kind {
            name: "Service",
            convert: service_from,
            apply: Index::apply_service,
            delete: |idx, s| idx.delete_service(&s.namespace().unwrap_or_default(), &s.name_any()),
            reset: |idx, all| idx.reset_services(all),
        },
        index.clone(),
        sync.clone(),
    );
    let slices = run_kind(
        Api::<KSlice>::all(client.clone()),
        Kind {
            name: "EndpointSlice",
            convert: slice_from,
            apply: Index::apply_slice,
            delete: |idx, s| idx.delete_slice(&s.namespace().unwrap_or_default(), &s.name_any()),
            reset: |idx, all| idx.reset_slices(all),
        },
        index.clone(),
        sync.clone(),
    );
    let pod_watch = async {
        if pods {
            run_kind(
                Api::<KPod>::all(client.clone()),
                Kind {
                    name: "Pod",
                    convert: pod_from,
                    apply: Index::apply_pod,
                    delete: |idx, p| {
                        idx.delete_pod(&p.namespace().unwrap_or_default(), &p.name_any())
                    },
                    reset: |idx, all| idx.reset_pods(all),
                },
                index.clone(),
                sync.clone(),
            )
            .await;
        }
    };
    tokio::join!(namespaces, services, slices, pod_watch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_services() {
        let svc: KService = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "annotations": {"a": "b"}},
            "spec": {
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                "ports": [{"name": "http", "port": 80}, {"port": 53, "protocol": "UDP"}],
            }
        }))
        .expect("service");
        let s = service_from(&svc).expect("converted");
        assert_eq!(
            s.kind,
            ServiceKind::ClusterIp(vec![
                "10.96.0.10".parse().expect("ip"),
                "fd00::10".parse().expect("ip")
            ])
        );
        assert_eq!(s.ports[0].protocol, "TCP");
        assert_eq!(s.ports[1].name, "");
        let headless: KService = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}
        }))
        .expect("service");
        let h = service_from(&headless).expect("converted");
        assert_eq!(h.kind, ServiceKind::Headless);
        assert!(h.publish_not_ready);
        let ext: KService = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "ns"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        }))
        .expect("service");
        assert_eq!(
            service_from(&ext).expect("converted").kind,
            ServiceKind::ExternalName("example.com".into())
        );
    }

    #[test]
    fn converts_slices_and_pods() {
        let slice: KSlice = serde_json::from_value(json!({
            "metadata": {"name": "db-x", "namespace": "ns",
                         "labels": {SERVICE_NAME_LABEL: "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}, {"name": "none"}],
            "endpoints": [
                {"addresses": ["10.1.0.1"], "hostname": "db-0", "nodeName": "n",
                 "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["not-an-ip"]},
            ]
        }))
        .expect("slice");
        let s = slice_from(&slice).expect("converted");
        assert_eq!(s.service, "db");
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.endpoints[0].ready, Some(false));
        assert_eq!(s.endpoints[0].terminating, Some(true));
        assert_eq!(s.endpoints[0].hostname.as_deref(), Some("db-0"));
        assert!(s.endpoints[1].addresses.is_empty());
        let unlabelled: KSlice = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "ns"}, "addressType": "IPv4", "endpoints": []
        }))
        .expect("slice");
        assert!(slice_from(&unlabelled).is_none());
        let pod: KPod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}]}
        }))
        .expect("pod");
        assert_eq!(pod_from(&pod).expect("converted").ips.len(), 2);
    }

    #[test]
    fn sync_tracker_waits_for_every_kind_once() {
        let flag = Arc::new(AtomicBool::new(false));
        let t = SyncTracker::new(2, flag.clone());
        let (mut a, mut b) = (true, true);
        t.done_once(&mut a);
        t.done_once(&mut a);
        assert!(
            !flag.load(Ordering::Acquire),
            "one kind listed twice is not two"
        );
        t.done_once(&mut b);
        assert!(flag.load(Ordering::Acquire));
    }
}
