//! Tests of the pure mirroring computation.

use super::desired::*;
use crate::endpointslice::build::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

fn eps(ready: &[&str], not_ready: &[&str]) -> Endpoints {
    let addrs = |v: &[&str]| -> Option<Vec<EndpointAddress>> {
        (!v.is_empty()).then(|| {
            v.iter()
                .map(|ip| EndpointAddress {
                    ip: ip.to_string(),
                    ..Default::default()
                })
                .collect()
        })
    };
    Endpoints {
        metadata: ObjectMeta {
            name: Some("ext".into()),
            namespace: Some("default".into()),
            uid: Some("ep-uid".into()),
            labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            annotations: Some(BTreeMap::from([
                ("note".into(), "x".into()),
                (
                    "endpoints.kubernetes.io/last-change-trigger-time".into(),
                    "t".into(),
                ),
            ])),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: addrs(ready),
            not_ready_addresses: addrs(not_ready),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        }]),
    }
}

fn apply(slices: &mut Vec<EndpointSlice>, plan: &crate::writes::SlicePlan) {
    for (i, c) in plan.creates.iter().enumerate() {
        let mut c = c.clone();
        c.metadata.name = Some(format!("ext-{i}{}", slices.len()));
        slices.push(c);
    }
    for u in &plan.updates {
        if let Some(s) = slices
            .iter_mut()
            .find(|s| s.metadata.name == u.metadata.name)
        {
            *s = u.clone();
        }
    }
    for d in &plan.deletes {
        slices.retain(|s| s.metadata.name != d.metadata.name);
    }
}

#[test]
fn mirror_create_update_delete() {
    let cfg = MirrorConfig::default();
    let mut slices = Vec::new();
    let e = eps(&["10.0.0.1", "10.0.0.2"], &["10.0.0.3"]);
    let p = reconcile_mirror(&e, &slices, &cfg);
    assert_eq!(
        (p.creates.len(), p.updates.len(), p.deletes.len()),
        (1, 0, 0)
    );
    let s = &p.creates[0];
    let l = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get(LABEL_MANAGED_BY).map(String::as_str),
        Some(MIRRORING_CONTROLLER_NAME)
    );
    assert_eq!(l.get(LABEL_SERVICE_NAME).map(String::as_str), Some("ext"));
    assert_eq!(l.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        s.metadata.annotations.clone().unwrap_or_default(),
        BTreeMap::from([("note".to_string(), "x".to_string())])
    );
    assert_eq!(
        s.metadata.owner_references.clone().unwrap_or_default()[0].kind,
        "Endpoints"
    );
    let ready: Vec<Option<bool>> = s
        .endpoints
        .iter()
        .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
        .collect();
    assert_eq!(ready.iter().filter(|r| **r == Some(true)).count(), 2);
    assert_eq!(ready.iter().filter(|r| **r == Some(false)).count(), 1);
    assert!(s
        .endpoints
        .iter()
        .all(|e| e.conditions.as_ref().is_some_and(|c| c.serving.is_none())));
    apply(&mut slices, &p);
    assert!(reconcile_mirror(&e, &slices, &cfg).is_noop(), "idempotent");

    let e2 = eps(&["10.0.0.1"], &[]);
    let p = reconcile_mirror(&e2, &slices, &cfg);
    assert_eq!(
        (p.creates.len(), p.updates.len(), p.deletes.len()),
        (0, 1, 0)
    );
    apply(&mut slices, &p);
    assert_eq!(slices[0].endpoints.len(), 1);

    let empty = Endpoints {
        subsets: None,
        ..e2
    };
    let p = reconcile_mirror(&empty, &slices, &cfg);
    assert_eq!(
        (p.creates.len(), p.updates.len(), p.deletes.len()),
        (0, 0, 1),
        "no placeholder"
    );
}

#[test]
fn invalid_ips_and_cap_emit_events() {
    let cfg = MirrorConfig {
        max_endpoints_per_subset: 2,
        ..Default::default()
    };
    // Repacked order is by IP bytes: "1.2.3" (invalid) comes first.
    let e = eps(&["10.0.0.1", "1.2.3", "10.0.0.2", "10.0.0.3"], &[]);
    let p = reconcile_mirror(&e, &[], &cfg);
    assert_eq!(p.creates[0].endpoints.len(), 2);
    let reasons: Vec<&str> = p.events.iter().map(|e| e.reason.as_str()).collect();
    assert!(reasons.contains(&"InvalidIPAddress"), "{reasons:?}");
    assert!(reasons.contains(&"TooManyAddressesToMirror"), "{reasons:?}");
}

#[test]
fn dual_family_endpoints_yield_two_slices() {
    let e = eps(&["10.0.0.1", "fd00::1"], &[]);
    let p = reconcile_mirror(&e, &[], &MirrorConfig::default());
    let mut types: Vec<&str> = p.creates.iter().map(|s| s.address_type.as_str()).collect();
    types.sort();
    assert_eq!(types, vec!["IPv4", "IPv6"]);
}

#[test]
fn skip_rules() {
    let svc = |selector: Option<BTreeMap<String, String>>| Service {
        spec: Some(ServiceSpec {
            selector,
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = eps(&["10.0.0.1"], &[]);
    assert!(should_mirror(Some(&e), Some(&svc(None))));
    assert!(
        !should_mirror(Some(&e), Some(&svc(Some(BTreeMap::new())))),
        "selector set"
    );
    assert!(!should_mirror(Some(&e), None), "no service");
    assert!(!should_mirror(None, Some(&svc(None))));
    let mut skip = e.clone();
    skip.metadata.labels = Some(BTreeMap::from([(LABEL_SKIP_MIRROR.into(), "true".into())]));
    assert!(!should_mirror(Some(&skip), Some(&svc(None))));
    let mut leader = e.clone();
    leader.metadata.annotations = Some(BTreeMap::from([(
        "control-plane.alpha.kubernetes.io/leader".into(),
        "{}".into(),
    )]));
    assert!(!should_mirror(Some(&leader), Some(&svc(None))));
}

#[test]
fn port_change_recycles_slice() {
    let cfg = MirrorConfig::default();
    let mut slices = Vec::new();
    let e = eps(&["10.0.0.1"], &[]);
    let first = reconcile_mirror(&e, &slices, &cfg);
    apply(&mut slices, &first);
    let mut e2 = e.clone();
    if let Some(s) = e2.subsets.as_mut() {
        s[0].ports = Some(vec![EndpointPort {
            name: Some("http".into()),
            port: 81,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]);
    }
    let p = reconcile_mirror(&e2, &slices, &cfg);
    assert_eq!(
        (p.creates.len(), p.updates.len(), p.deletes.len()),
        (0, 1, 0)
    );
}
