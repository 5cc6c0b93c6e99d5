//! The per-Service reconcile: plan (pure: `plan::cluster_ip`, `plan::node_port`, then
//! `plan::steps`) → apply the steps (`apply`: claims, the Service write, confirm-then-release).

use std::net::IpAddr;
use std::sync::Arc;

use crds::{IpPurpose, ServiceRef};
use k8s_openapi::api::core::v1::Service;

use crate::ipam::context::Ipam;
use crate::ipam::plan::cluster_ip::{plan_cluster_ips, ClusterIpPlan};
use crate::ipam::plan::load_balancer as lb;
use crate::ipam::plan::node_port::plan_node_ports;
use crate::ipam::plan::steps::{steps, LbScope};
use crate::ipam::state::AllocState;
use crate::ipam::svc_view::{family_of, SvcType, SvcView};
use crate::{Error, Result};
use runtime::events::EventRecorder;

pub(super) fn alloc_err(reason: &'static str, message: impl Into<String>) -> Error {
    Error::Allocation {
        reason,
        message: message.into(),
    }
}

pub(super) fn fam_tag(ip: IpAddr) -> String {
    format!("[{}]:{ip}", family_of(ip))
}

/// The "before" a Service is planned against when we have no record of its last successful
/// reconcile (first sight, or after a restart): the Service itself if its spec already uses a
/// value it holds a claim for (we processed it before), so it is planned as an update; otherwise
/// `None`, a create — also for Services a real apiserver filled in, whose values are then simply
/// adopted (create-time planning keeps every value that is set).
pub fn baseline(view: &SvcView, held_ips: &[IpAddr], held_ports: &[u16]) -> Option<SvcView> {
    if view.type_ == SvcType::ExternalName {
        return None;
    }
    let uses_ip = view
        .cluster_ips
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .any(|ip| held_ips.contains(&ip));
    let uses_port = view
        .ports
        .iter()
        .map(|p| p.node_port)
        .chain(std::iter::once(view.health_check_node_port))
        .filter_map(|p| u16::try_from(p).ok())
        .any(|p| p != 0 && held_ports.contains(&p));
    (uses_ip || uses_port).then(|| view.clone())
}

impl Ipam {
    pub(super) fn svc_ref(view: &SvcView) -> ServiceRef {
        ServiceRef {
            namespace: view.namespace.clone(),
            name: view.name.clone(),
            uid: view.uid.clone(),
        }
    }

    /// Counts an allocation failure under `label`, reports it on the Service as a Warning
    /// `reason`, and returns it as the allocation error the worker retries.
    pub(super) async fn refuse(
        &self,
        svc: &Service,
        label: &'static str,
        reason: &str,
        message: String,
    ) -> Error {
        self.metrics.error(label);
        self.warn(svc, reason, &message).await;
        alloc_err(label, message)
    }

    pub(super) async fn warn(&self, svc: &Service, reason: &str, message: &str) {
        self.recorder
            .warning(&EventRecorder::reference(svc), reason, message)
            .await;
    }

    /// Reconciles one Service key (`namespace/name`).
    pub async fn reconcile(&self, key: &str) -> Result<()> {
        self.metrics.reconciles.inc();
        let svc = self.services.read().await.get(key).cloned();
        let live_uid = svc
            .as_ref()
            .and_then(|s| s.metadata.uid.clone())
            .unwrap_or_default();
        // Release whatever earlier incarnations of this Service (deleted, recreated) held.
        let gone: Vec<String> = {
            let mut t = self.tombstones.lock().await;
            let uids = t.remove(key).unwrap_or_default();
            uids.into_iter().filter(|u| *u != live_uid).collect()
        };
        for uid in gone {
            self.release_all(&uid).await?;
            self.last.lock().await.remove(&uid);
        }
        let Some(svc) = svc else {
            return Ok(());
        };
        let Some(view) = SvcView::from_service(&svc) else {
            return Ok(());
        };
        if view.deleting || view.uid.is_empty() {
            return Ok(());
        }
        self.reconcile_service(&svc, &view).await
    }

    async fn reconcile_service(&self, svc: &Arc<Service>, view: &SvcView) -> Result<()> {
        let uid = view.uid.clone();
        let cached = self.last.lock().await.get(&uid).cloned();
        // We reconciled this Service before in this process: values it uses that have no claim
        // now were lost (claim deleted by hand, or by another component) and are repaired.
        let reconciled_before = cached.is_some();
        let old = match cached {
            Some(o) => Some(o),
            None => {
                let st = self.state.lock().await;
                let ips: Vec<IpAddr> = st.ips_of(&uid).into_iter().map(|(ip, _)| ip).collect();
                let ports: Vec<u16> = st.ports_of(&uid).into_iter().map(|(p, _)| p).collect();
                baseline(view, &ips, &ports)
            }
        };
        let cip = match plan_cluster_ips(view, old.as_ref(), &self.families) {
            Ok(p) => p,
            Err(e) => {
                self.warn(svc, e.reason(), &e.to_string()).await;
                return Err(alloc_err("invalid_spec", e.to_string()));
            }
        };
        let npp = match plan_node_ports(view, old.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                self.warn(svc, e.reason(), &e.to_string()).await;
                return Err(alloc_err("invalid_spec", e.to_string()));
            }
        };
        let plan = {
            let st = self.state.lock().await;
            let scope = LbScope {
                handles: lb::handles(view, self.cfg.default_lb_class),
                has_ours_in_status: !ours_in_status(&st, view).is_empty(),
            };
            steps(&cip, &npp, &st, &uid, reconciled_before, scope)
        };
        self.apply(svc, view, &cip, &npp, plan).await
    }
}

/// The addresses in the Service's `status.loadBalancer.ingress` that it holds LoadBalancer
/// claims for.
pub fn ours_in_status(st: &AllocState, view: &SvcView) -> Vec<IpAddr> {
    view.lb_ingress_ips
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|ip| {
            st.ip(*ip).is_some_and(|i| {
                i.purpose == IpPurpose::LoadBalancer && i.parents.iter().any(|p| p.uid == view.uid)
            })
        })
        .collect()
}

/// Writes the planned fields into `svc`; returns whether anything changed.
pub fn apply_spec(
    svc: &mut Service,
    cip: &ClusterIpPlan,
    cluster_ips: &[IpAddr],
    node_ports: &[u16],
    health: u16,
) -> bool {
    let before = svc.spec.clone();
    let spec = svc.spec.get_or_insert_with(Default::default);
    if let Some(policy) = cip.policy {
        spec.ip_family_policy = Some(policy.as_str().to_string());
        spec.ip_families = Some(cip.families.iter().map(ToString::to_string).collect());
        if !cip.headless {
            let ips: Vec<String> = cluster_ips.iter().map(ToString::to_string).collect();
            spec.cluster_ip = ips.first().cloned();
            spec.cluster_ips = Some(ips);
        }
    }
    if let Some(ports) = spec.ports.as_mut() {
        for (p, n) in ports.iter_mut().zip(node_ports) {
            p.node_port = (*n != 0).then_some(i32::from(*n));
        }
    }
    spec.health_check_node_port = (health != 0).then_some(i32::from(health));
    svc.spec != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::plan::cluster_ip::IpSlot;
    use crate::ipam::svc_view::{Family, Policy};
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    #[test]
    fn apply_spec_writes_fields_and_reports_change() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                type_: Some("NodePort".into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plan = ClusterIpPlan {
            policy: Some(Policy::SingleStack),
            families: vec![Family::V4],
            slots: vec![IpSlot::Alloc(Family::V4)],
            headless: false,
        };
        let ip: IpAddr = "10.96.0.10".parse().unwrap();
        assert!(apply_spec(&mut svc, &plan, &[ip], &[30080], 0));
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.cluster_ips.as_ref().unwrap(), &["10.96.0.10"]);
        assert_eq!(spec.ip_families.as_ref().unwrap(), &["IPv4"]);
        assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(30080));
        // Idempotent.
        assert!(!apply_spec(&mut svc, &plan, &[ip], &[30080], 0));
    }

    #[test]
    fn baseline_treats_only_processed_services_as_updates() {
        use crate::ipam::svc_view::fixtures::svc;
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // Never processed: a create, even with a requested (or apiserver-filled) IP.
        assert!(baseline(&svc("a"), &[], &[]).is_none());
        assert!(baseline(&svc("a").ips(&["10.0.0.1"]), &[], &[]).is_none());
        // Claimed but the spec write never landed: still a create.
        assert!(baseline(&svc("a"), &[ip], &[30080]).is_none());
        // Spec uses a held value: an update.
        assert!(baseline(&svc("a").ips(&["10.0.0.1"]), &[ip], &[]).is_some());
        let np = svc("a").typ(SvcType::NodePort).port(80, "TCP", 30080);
        assert!(baseline(&np, &[], &[30080]).is_some());
        assert!(baseline(&svc("a").headless(), &[], &[]).is_none());
        assert!(baseline(&svc("a").typ(SvcType::ExternalName), &[ip], &[]).is_none());
    }
}
