//! Pure EndpointSlice mirroring (upstream `pkg/controller/endpointslicemirroring`):
//! a selectorless Service's user-written Endpoints → EndpointSlices.

use crate::endpoints::desired::{repack_subsets, ANNOTATION_LEADER};
use crate::endpointslice::build::{
    canonical_ip, endpoint_key, endpoints_equal_beyond_hash, port_map_key, ANNOTATION_TRIGGER_TIME,
    LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
};
use crate::writes::{EventSpec, SlicePlan};
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// svcnet's managed-by value for mirrored slices: upstream's shape with
/// svcnet's domain (upstream writes `endpointslicemirroring-controller.k8s.io`;
/// a label value cannot hold `/`).
pub const MIRRORING_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.svcnet.io";
/// `endpointslice.kubernetes.io/skip-mirror`.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// `kubectl.kubernetes.io/last-applied-configuration`.
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Mirroring settings.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// `--mirroring-max-endpoints-per-subset` (1..=1000, default 1000).
    pub max_endpoints_per_subset: usize,
    /// managed-by label value.
    pub controller_name: String,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            max_endpoints_per_subset: 1000,
            controller_name: MIRRORING_CONTROLLER_NAME.into(),
        }
    }
}

/// Whether an Endpoints object must be mirrored: it exists, its Service
/// exists with a nil selector, and it is neither `skip-mirror=true` nor a
/// leader-election record. Otherwise every mirrored slice is deleted.
pub fn should_mirror(endpoints: Option<&Endpoints>, service: Option<&Service>) -> bool {
    let (Some(ep), Some(svc)) = (endpoints, service) else {
        return false;
    };
    if svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some()
    {
        return false;
    }
    let skip = ep
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SKIP_MIRROR))
        .is_some_and(|v| v == "true");
    let leader = ep
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_LEADER));
    !skip && !leader
}

fn to_endpoint(a: &EndpointAddress, ready: bool) -> Option<(Endpoint, bool)> {
    let (ip, v6) = canonical_ip(&a.ip)?;
    Some((
        Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: None,
                terminating: None,
            }),
            target_ref: a.target_ref.clone(),
            node_name: a.node_name.clone(),
            hostname: a.hostname.clone().filter(|h| !h.is_empty()),
            ..Default::default()
        },
        v6,
    ))
}

fn mirrored_annotations(ep: &Endpoints) -> BTreeMap<String, String> {
    let mut a = ep.metadata.annotations.clone().unwrap_or_default();
    a.remove(ANNOTATION_TRIGGER_TIME);
    a.remove(ANNOTATION_LAST_APPLIED);
    a
}

fn new_mirrored_slice(
    ep: &Endpoints,
    ports: &[EndpointPort],
    address_type: &str,
    name: Option<&EndpointSlice>,
    cfg: &MirrorConfig,
) -> EndpointSlice {
    let ep_name = ep.metadata.name.clone().unwrap_or_default();
    let mut labels = ep.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.into(), ep_name.clone());
    labels.insert(LABEL_MANAGED_BY.into(), cfg.controller_name.clone());
    let ann = mirrored_annotations(ep);
    let mut meta = ObjectMeta {
        namespace: ep.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: (!ann.is_empty()).then_some(ann),
        owner_references: Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Endpoints".into(),
            name: ep_name.clone(),
            uid: ep.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    };
    match name {
        Some(existing) => {
            meta.name = existing.metadata.name.clone();
            meta.resource_version = existing.metadata.resource_version.clone();
        }
        None => meta.generate_name = Some(format!("{ep_name}-")),
    }
    EndpointSlice {
        metadata: meta,
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

struct Desired {
    ports: Vec<EndpointPort>,
    address_type: &'static str,
    set: BTreeMap<String, Endpoint>,
}

/// Computes the writes that mirror `endpoints` into slices; `existing` are
/// the slices with our mirroring managed-by and the Endpoints' name.
pub fn reconcile_mirror(
    endpoints: &Endpoints,
    existing: &[EndpointSlice],
    cfg: &MirrorConfig,
) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let max = cfg.max_endpoints_per_subset.max(1);
    let subsets = repack_subsets(endpoints.subsets.as_deref().unwrap_or(&[]));
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    let mut invalid = 0usize;
    let mut skipped = 0usize;
    for subset in &subsets {
        let mut ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let pk = port_map_key(&mut ports);
        for at in ["IPv4", "IPv6"] {
            desired
                .entry(format!("{at}-{pk}"))
                .or_insert_with(|| Desired {
                    ports: ports.clone(),
                    address_type: at,
                    set: BTreeMap::new(),
                });
        }
        let total = subset.addresses.as_ref().map_or(0, Vec::len)
            + subset.not_ready_addresses.as_ref().map_or(0, Vec::len);
        let mut added = 0usize;
        let all = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        for (a, ready) in all {
            if added >= max {
                break;
            }
            match to_endpoint(a, ready) {
                Some((ep, v6)) => {
                    let key = format!("{}-{pk}", if v6 { "IPv6" } else { "IPv4" });
                    if let Some(d) = desired.get_mut(&key) {
                        d.set.insert(endpoint_key(&ep), ep);
                    }
                    added += 1;
                }
                None => {
                    invalid += 1;
                    tracing::warn!(ip = %a.ip, "address in Endpoints is not a valid IP; not mirrored");
                }
            }
        }
        skipped += total - added;
    }
    if invalid > 0 {
        plan.events.push(EventSpec::warning(
            "InvalidIPAddress",
            format!("Skipped {invalid} invalid IP addresses when mirroring to EndpointSlices"),
        ));
    }
    if skipped > invalid {
        plan.events.push(EventSpec::warning(
            "TooManyAddressesToMirror",
            format!(
                "A max of {max} addresses can be mirrored to EndpointSlices per Endpoints subset. {skipped} addresses were skipped"
            ),
        ));
    }

    let mut existing_by_key: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        let mut ports = s.ports.clone().unwrap_or_default();
        let key = format!("{}-{}", s.address_type, port_map_key(&mut ports));
        existing_by_key.entry(key).or_default().push(s);
    }

    let want_ann = mirrored_annotations(endpoints);
    let want_labels = endpoints.metadata.labels.clone().unwrap_or_default();
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    let mut deletes: Vec<EndpointSlice> = Vec::new();
    for (key, d) in &desired {
        let ex = existing_by_key.get(key).cloned().unwrap_or_default();
        plan.endpoints_desired += d.set.len();
        if d.set.is_empty() {
            deletes.extend(ex.into_iter().cloned());
            continue;
        }
        if let Some(first) = ex.first() {
            deletes.extend(ex[1..].iter().map(|s| (*s).clone()));
            let mut matches = 0;
            let mut changed = false;
            for ep in &first.endpoints {
                match d.set.get(&endpoint_key(ep)) {
                    None => changed = true,
                    Some(got) => {
                        matches += 1;
                        if !endpoints_equal_beyond_hash(got, ep) {
                            changed = true;
                        }
                    }
                }
            }
            if d.set.len() != matches {
                changed = true;
            }
            let mut labels = first.metadata.labels.clone().unwrap_or_default();
            labels.remove(LABEL_MANAGED_BY);
            labels.remove(LABEL_SERVICE_NAME);
            let ann = first.metadata.annotations.clone().unwrap_or_default();
            if !changed && labels == want_labels && ann == want_ann {
                plan.slices_desired += 1;
                continue;
            }
        } else {
            plan.endpoints_added += d.set.len();
        }
        let mut s = new_mirrored_slice(
            endpoints,
            &d.ports,
            d.address_type,
            ex.first().copied(),
            cfg,
        );
        s.endpoints = d.set.values().take(max).cloned().collect();
        plan.slices_desired += 1;
        if s.metadata.name.is_some() {
            updates.push(s);
        } else {
            creates.push(s);
        }
    }
    for (key, ex) in &existing_by_key {
        if !desired.contains_key(key) {
            deletes.extend(ex.iter().map(|s| (*s).clone()));
        }
    }

    // Recycle creates into deletes of the same address type.
    let mut kept_creates = Vec::new();
    for mut c in creates {
        match deletes
            .iter()
            .position(|d| d.address_type == c.address_type)
        {
            Some(i) => {
                let old = deletes.remove(i);
                c.metadata.generate_name = None;
                c.metadata.name = old.metadata.name.clone();
                c.metadata.resource_version = old.metadata.resource_version.clone();
                updates.push(c);
            }
            None => kept_creates.push(c),
        }
    }
    if endpoints.metadata.deletion_timestamp.is_some() {
        kept_creates.clear();
    }
    plan.endpoints_removed = deletes.iter().map(|s| s.endpoints.len()).sum();
    plan.creates = kept_creates;
    plan.updates = updates;
    plan.deletes = deletes;
    plan
}
