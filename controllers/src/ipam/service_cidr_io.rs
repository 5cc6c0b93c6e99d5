//! ServiceCIDR and IPAddress I/O: the watches that feed the allocator's ranges and the ledger
//! index, the ServiceCIDR lifecycle loop (finalizer, `Ready` condition, deletion), the default
//! ServiceCIDR made from `--service-cluster-ip-range`, and the one-time migration of ClusterIP
//! `ServiceIPClaim`s to IPAddresses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crds::{IpPurpose, ServiceIPClaim};
use futures::StreamExt;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR, ServiceCIDRSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};

use crate::ipam::addresses::info_of;
use crate::ipam::claims::Created;
use crate::ipam::cluster_ranges::RangeSpec;
use crate::ipam::context::Ipam;
use crate::ipam::service_cidrs::{self, CidrStep, WantedCondition};
use crate::Result;

fn watch<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// Keeps only what the allocator and the lifecycle loop read.
fn strip_cidr(mut c: ServiceCIDR) -> ServiceCIDR {
    c.metadata.managed_fields = None;
    c.metadata.annotations = None;
    c
}

/// Folds the IPAddress watch into the ledger index.
pub(super) async fn watch_addresses(
    ipam: Arc<Ipam>,
    synced: tokio::sync::mpsc::Sender<&'static str>,
) {
    let mut stream = std::pin::pin!(watch(ipam.addresses.api().clone()));
    let mut buffer: Vec<IPAddress> = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(a)) => buffer.push(a),
            Ok(Event::InitDone) => {
                let list: Vec<_> = buffer.drain(..).filter_map(|a| info_of(&a)).collect();
                ipam.state.lock().await.reset_addresses(list);
                ipam.cidr_kick.notify_one();
                let _ = synced.send("ipaddresses").await;
            }
            Ok(Event::Apply(a)) => {
                if let Some((ip, info)) = info_of(&a) {
                    ipam.state.lock().await.record(ip, info);
                }
            }
            Ok(Event::Delete(a)) => {
                if let Ok(ip) = a.name_any().parse::<IpAddr>() {
                    ipam.state.lock().await.remove_address(ip);
                }
                // A terminating ServiceCIDR may be free to go now.
                ipam.cidr_kick.notify_one();
            }
            Err(err) => tracing::warn!(%err, "ipaddress watch error"),
        }
    }
}

/// Folds the ServiceCIDR watch into the allocator's ranges.
pub(super) async fn watch_service_cidrs(
    ipam: Arc<Ipam>,
    synced: tokio::sync::mpsc::Sender<&'static str>,
) {
    let api: Api<ServiceCIDR> = Api::all(ipam.client.clone());
    let mut stream = std::pin::pin!(watch(api));
    let mut buffer = BTreeMap::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(c)) => {
                buffer.insert(c.name_any(), strip_cidr(c));
            }
            Ok(Event::InitDone) => {
                *ipam.service_cidrs.write().await = std::mem::take(&mut buffer);
                refresh_ranges(&ipam).await;
                let _ = synced.send("servicecidrs").await;
            }
            Ok(Event::Apply(c)) => {
                ipam.service_cidrs
                    .write()
                    .await
                    .insert(c.name_any(), strip_cidr(c));
                refresh_ranges(&ipam).await;
            }
            Ok(Event::Delete(c)) => {
                ipam.service_cidrs.write().await.remove(&c.name_any());
                refresh_ranges(&ipam).await;
            }
            Err(err) => tracing::warn!(%err, "servicecidr watch error"),
        }
    }
}

/// The ranges from the ServiceCIDRs, or from the flag while there is none (the default one
/// not created yet).
fn specs_or_flag(ipam: &Ipam, all: &[ServiceCIDR]) -> Vec<RangeSpec> {
    let specs = service_cidrs::range_specs(all);
    if !specs.is_empty() {
        return specs;
    }
    ipam.cfg
        .service_cidrs
        .iter()
        .map(|c| RangeSpec {
            cidr: *c,
            ready: true,
        })
        .collect()
}

async fn refresh_ranges(ipam: &Arc<Ipam>) {
    let all: Vec<ServiceCIDR> = ipam.service_cidrs.read().await.values().cloned().collect();
    let specs = specs_or_flag(ipam, &all);
    let changed = {
        let mut st = ipam.state.lock().await;
        let before = st.ranges().specs();
        match st.set_ranges(&specs) {
            Ok(()) => before != st.ranges().specs(),
            Err(err) => {
                tracing::warn!(%err, "ServiceCIDR ranges not applied");
                false
            }
        }
    };
    ipam.cidr_kick.notify_one();
    if changed {
        tracing::info!(ranges = ?specs, "ClusterIP ranges changed");
        // Services refused for lack of a range may fit now.
        let keys: Vec<String> = ipam.services.read().await.keys().cloned().collect();
        for k in keys {
            ipam.queue.add(k).await;
        }
    }
}

/// Creates the default ServiceCIDR from `--service-cluster-ip-range` when none of that name
/// exists (as kube-apiserver does for its own flag). An existing one is used as it is.
async fn ensure_default(ipam: &Ipam) -> Result<()> {
    let existing = ipam
        .service_cidrs
        .read()
        .await
        .get(service_cidrs::DEFAULT_NAME)
        .cloned();
    if let Some(c) = existing {
        let flag: Vec<String> = ipam
            .cfg
            .service_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        let have: Vec<String> = service_cidrs::cidrs_of(&c)
            .iter()
            .map(ToString::to_string)
            .collect();
        if have != flag
            && !ipam
                .default_mismatch_logged
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                ?have,
                ?flag,
                "the default ServiceCIDR differs from --service-cluster-ip-range; using the ServiceCIDR"
            );
        }
        return Ok(());
    }
    let obj = ServiceCIDR {
        metadata: ObjectMeta {
            name: Some(service_cidrs::DEFAULT_NAME.to_string()),
            ..Default::default()
        },
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(
                ipam.cfg
                    .service_cidrs
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            ),
        }),
        status: None,
    };
    let api: Api<ServiceCIDR> = Api::all(ipam.client.clone());
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {
            tracing::info!(cidrs = ?ipam.cfg.service_cidrs, "created the default ServiceCIDR");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The addresses every ServiceCIDR decision counts as held: ClusterIPs of either ledger.
async fn held_cluster_ips(ipam: &Ipam) -> Vec<IpAddr> {
    let st = ipam.state.lock().await;
    st.all_ips()
        .filter(|(_, i)| i.purpose == IpPurpose::ClusterIP)
        .map(|(ip, _)| *ip)
        .collect()
}

/// The ServiceCIDR lifecycle: runs whenever a ServiceCIDR or IPAddress changed, and every few
/// seconds.
pub(super) async fn cidr_loop(ipam: Arc<Ipam>) {
    loop {
        let mut next = Duration::from_secs(5);
        if let Err(err) = ensure_default(&ipam).await {
            tracing::warn!(%err, "default ServiceCIDR not created");
        }
        let all: Vec<ServiceCIDR> = ipam.service_cidrs.read().await.values().cloned().collect();
        // The held addresses matter only to a ServiceCIDR being deleted.
        let held = if all.iter().any(|c| c.metadata.deletion_timestamp.is_some()) {
            held_cluster_ips(&ipam).await
        } else {
            Vec::new()
        };
        for c in &all {
            let deleted_for = c.metadata.deletion_timestamp.as_ref().map(|t| {
                let since = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
                Duration::try_from(since).unwrap_or(Duration::ZERO)
            });
            for step in service_cidrs::steps(c, &all, held.iter().copied(), deleted_for) {
                if let CidrStep::RecheckAfter(d) = step {
                    next = next.min(d);
                    continue;
                }
                if let Err(err) = apply_step(&ipam, c, &step).await {
                    tracing::warn!(%err, cidr = %c.name_any(), ?step, "ServiceCIDR step failed");
                    next = next.min(Duration::from_secs(1));
                }
            }
        }
        let _ = tokio::time::timeout(next, ipam.cidr_kick.notified()).await;
    }
}

async fn apply_step(ipam: &Ipam, c: &ServiceCIDR, step: &CidrStep) -> Result<()> {
    let api: Api<ServiceCIDR> = Api::all(ipam.client.clone());
    let name = c.name_any();
    let rv = c.metadata.resource_version.clone();
    let pp = PatchParams::default();
    let res = match step {
        CidrStep::AddFinalizer | CidrStep::RemoveFinalizer => {
            let mut fins: Vec<String> = c.finalizers().to_vec();
            fins.retain(|f| f != service_cidrs::FINALIZER);
            if *step == CidrStep::AddFinalizer {
                fins.push(service_cidrs::FINALIZER.to_string());
            }
            // Conditional on the version read, so another writer's finalizer is never lost.
            let patch =
                serde_json::json!({"metadata": {"resourceVersion": rv, "finalizers": fins}});
            api.patch(&name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        CidrStep::SetCondition(want) => {
            let patch = condition_patch(c, want);
            api.patch_status(&name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        CidrStep::RecheckAfter(_) => Ok(()),
    };
    match res {
        Ok(()) => {
            tracing::info!(cidr = %name, ?step, "ServiceCIDR updated");
            Ok(())
        }
        // Changed or gone meanwhile: the watch brings the new version and the loop runs again.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A status merge patch setting the `Ready` condition, keeping every other condition.
fn condition_patch(c: &ServiceCIDR, want: &WantedCondition) -> serde_json::Value {
    let mut conditions: Vec<serde_json::Value> = c
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|x| x.type_ != service_cidrs::READY)
        .filter_map(|x| serde_json::to_value(x).ok())
        .collect();
    conditions.push(serde_json::json!({
        "type": service_cidrs::READY,
        "status": want.status,
        "reason": want.reason,
        "message": want.message,
        "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
    }));
    serde_json::json!({
        "metadata": {"resourceVersion": c.metadata.resource_version},
        "status": {"conditions": conditions},
    })
}

/// Moves every ClusterIP `ServiceIPClaim` to an IPAddress: the IPAddress is created first
/// and the claim deleted only once it exists for the same Service, so the address is held by
/// one object or the other at every moment. Runs before any allocation. A claim whose address
/// another Service's IPAddress already holds is left (and reported) for an operator to sort
/// out; it keeps its address held meanwhile.
pub(super) async fn migrate_claims(ipam: &Ipam) -> Result<usize> {
    let list = ipam
        .claims
        .ip_api()
        .list(&kube::api::ListParams::default())
        .await?;
    let mut moved = 0;
    for claim in list
        .items
        .iter()
        .filter(|c| c.spec.purpose == IpPurpose::ClusterIP)
    {
        let Some(ip) = ServiceIPClaim::ip_from_name(&claim.name_any()) else {
            continue;
        };
        let Some(parent) = claim.spec.parent_refs.first() else {
            continue;
        };
        let same = match ipam.addresses.create(ip, parent).await? {
            Created::New(info) => {
                ipam.state.lock().await.record(ip, info);
                true
            }
            Created::Existing(info) => {
                let same = info.held_by(&parent.namespace, &parent.name, &parent.uid);
                ipam.state.lock().await.record(ip, info);
                same
            }
        };
        if !same {
            tracing::warn!(%ip, holder = %format!("{}/{}", parent.namespace, parent.name),
                "ClusterIP claim not migrated: an IPAddress of another Service holds the address");
            continue;
        }
        ipam.claims.delete_ip_if_unchanged(claim).await?;
        ipam.state.lock().await.remove_ip_claim(ip);
        moved += 1;
    }
    if moved > 0 {
        tracing::info!(moved, "migrated ClusterIP claims to IPAddress objects");
    }
    Ok(moved)
}
