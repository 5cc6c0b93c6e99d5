//! The per-Service reconcile: plan → claim → write the Service → release what is no longer needed.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use crds::{IpPurpose, NodePortClaim, PortPurpose, ServiceIPClaim, ServiceRef};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;

use crate::ipam::claims::Created;
use crate::ipam::context::Ipam;
use crate::ipam::model::{family_of, Family, SvcType, SvcView};
use crate::ipam::plan::cluster_ip::{plan_cluster_ips, ClusterIpPlan, IpSlot};
use crate::ipam::plan::load_balancer as lb;
use crate::ipam::plan::node_port::{plan_node_ports, HealthSlot, PortSlot};
use crate::ipam::state::Reserve;
use crate::{Error, Result};
use runtime::events::EventRecorder;

fn alloc_err(reason: &'static str, message: impl Into<String>) -> Error {
    Error::Allocation {
        reason,
        message: message.into(),
    }
}

fn fam_tag(ip: IpAddr) -> String {
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
    fn svc_ref(view: &SvcView) -> ServiceRef {
        ServiceRef {
            namespace: view.namespace.clone(),
            name: view.name.clone(),
            uid: view.uid.clone(),
        }
    }

    async fn warn(&self, svc: &Service, reason: &str, message: &str) {
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

        // --- ClusterIPs ---
        let held = self.state.lock().await.ips_of(&uid);
        let kept: HashSet<IpAddr> = cip
            .slots
            .iter()
            .filter_map(|s| match s {
                IpSlot::Keep(ip) => Some(*ip),
                IpSlot::Alloc(_) => None,
            })
            .collect();
        let mut orphans: Vec<IpAddr> = held
            .iter()
            .filter(|(ip, i)| i.purpose == IpPurpose::ClusterIP && !kept.contains(ip))
            .map(|(ip, _)| *ip)
            .collect();
        let lost_ips: Vec<IpAddr> = if reconciled_before {
            let st = self.state.lock().await;
            kept.iter()
                .copied()
                .filter(|ip| st.ip(*ip).is_none())
                .collect()
        } else {
            vec![]
        };
        let mut cluster_ips = Vec::new();
        for slot in &cip.slots {
            let ip = match *slot {
                IpSlot::Keep(ip) => self.claim_cluster_ip(svc, view, ip).await?,
                IpSlot::Alloc(fam) => {
                    // A claim we made earlier whose Service write did not land: reuse it, once
                    // the API confirms it is still ours (the cache may lag).
                    let mut reused = None;
                    while let Some(i) = orphans.iter().position(|ip| family_of(*ip) == fam) {
                        let ip = orphans.remove(i);
                        if self.ip_claim_is_ours(ip, &view.uid).await? {
                            reused = Some(ip);
                            break;
                        }
                    }
                    match reused {
                        Some(ip) => ip,
                        None => self.alloc_cluster_ip(svc, view, fam).await?,
                    }
                }
            };
            cluster_ips.push(ip);
        }

        for ip in lost_ips {
            let msg = format!("Cluster IP {} is not allocated; repairing", fam_tag(ip));
            self.warn(svc, "ClusterIPNotAllocated", &msg).await;
        }

        // --- node ports ---
        let held_ports = self.state.lock().await.ports_of(&uid);
        let fixed: HashSet<u16> = npp
            .ports
            .iter()
            .filter_map(|s| match s {
                PortSlot::Fixed(p) => Some(*p),
                _ => None,
            })
            .chain(match npp.health_check {
                HealthSlot::Fixed(p) => Some(p),
                _ => None,
            })
            .collect();
        let lost_ports: Vec<u16> = if reconciled_before {
            let st = self.state.lock().await;
            let mut v: Vec<u16> = fixed
                .iter()
                .copied()
                .filter(|p| st.port(*p).is_none())
                .collect();
            v.sort_unstable();
            v
        } else {
            vec![]
        };
        let mut port_orphans: Vec<(u16, PortPurpose)> = held_ports
            .iter()
            .filter(|(p, _)| !fixed.contains(p))
            .map(|(p, i)| (*p, i.purpose))
            .collect();
        let mut fresh = Vec::with_capacity(npp.fresh);
        for _ in 0..npp.fresh {
            let p = match self
                .reuse_port_orphan(&mut port_orphans, PortPurpose::NodePort, &view.uid)
                .await?
            {
                Some(p) => p,
                None => self.alloc_port(svc, view, PortPurpose::NodePort).await?,
            };
            fresh.push(p);
        }
        let mut node_ports = Vec::with_capacity(npp.ports.len());
        for (i, slot) in npp.ports.iter().enumerate() {
            let n = match *slot {
                PortSlot::Zero => 0,
                PortSlot::Fixed(p) => {
                    self.claim_port(svc, view, p, PortPurpose::NodePort, i)
                        .await?;
                    p
                }
                PortSlot::New(k) => fresh.get(k).copied().unwrap_or(0),
            };
            node_ports.push(n);
        }
        let health = match npp.health_check {
            HealthSlot::Zero => 0,
            HealthSlot::Fixed(p) => {
                self.claim_port(svc, view, p, PortPurpose::HealthCheckNodePort, usize::MAX)
                    .await?;
                p
            }
            HealthSlot::New => match self
                .reuse_port_orphan(
                    &mut port_orphans,
                    PortPurpose::HealthCheckNodePort,
                    &view.uid,
                )
                .await?
            {
                Some(p) => p,
                None => {
                    self.alloc_port(svc, view, PortPurpose::HealthCheckNodePort)
                        .await?
                }
            },
        };

        for port in lost_ports {
            let msg = format!("Port {port} is not allocated; repairing");
            self.warn(svc, "PortNotAllocated", &msg).await;
        }

        // --- LoadBalancer IPs (failures here do not block the spec write) ---
        let handles_lb = lb::handles(view, self.cfg.default_lb_class);
        let (lb_ips, lb_error) = if handles_lb {
            match self.lb_ips(svc, view, &cip.families).await {
                Ok(v) => (v, None),
                Err(e) => {
                    let kept: Vec<IpAddr> = self
                        .state
                        .lock()
                        .await
                        .ips_of(&uid)
                        .into_iter()
                        .filter(|(_, i)| i.purpose == IpPurpose::LoadBalancer)
                        .map(|(ip, _)| ip)
                        .collect();
                    (kept, Some(e))
                }
            }
        } else {
            (vec![], None)
        };

        // --- write the Service spec ---
        let mut updated: Service = (**svc).clone();
        let changed = apply_spec(&mut updated, &cip, &cluster_ips, &node_ports, health);
        let mut current = svc.clone();
        if changed {
            let api: Api<Service> = Api::namespaced(self.client.clone(), &view.namespace);
            match api
                .replace(&view.name, &PostParams::default(), &updated)
                .await
            {
                Ok(s) => {
                    current = Arc::new(s);
                    self.services
                        .write()
                        .await
                        .insert(view.key(), current.clone());
                }
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                    return Err(Error::Retry(format!(
                        "service {} changed: {}",
                        view.key(),
                        s.message
                    )));
                }
                Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                    let msg = format!("the API server rejected the allocation: {}", s.message);
                    self.warn(svc, "AllocationRejected", &msg).await;
                    return Err(alloc_err("rejected", msg));
                }
                Err(e) => return Err(e.into()),
            }
        }

        // --- LoadBalancer status ---
        let ours_in_status: Vec<IpAddr> = {
            let st = self.state.lock().await;
            view.lb_ingress_ips
                .iter()
                .filter_map(|s| s.parse::<IpAddr>().ok())
                .filter(|ip| {
                    st.ip(*ip).is_some_and(|i| {
                        i.purpose == IpPurpose::LoadBalancer
                            && i.parents.iter().any(|p| p.uid == uid)
                    })
                })
                .collect()
        };
        if handles_lb || !ours_in_status.is_empty() {
            let want: Vec<String> = lb_ips.iter().map(ToString::to_string).collect();
            if want != view.lb_ingress_ips {
                let ingress: Vec<LoadBalancerIngress> = lb_ips
                    .iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ip_mode: Some("VIP".to_string()),
                        ..Default::default()
                    })
                    .collect();
                // Conditional on the version planned from (a merge patch carrying
                // metadata.resourceVersion is a compare-and-swap), like the spec write: an
                // unconditional write from a stale plan could put back an address another
                // replica's reconcile has just confirmed unused and is releasing.
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": current.metadata.resource_version},
                    "status": {"loadBalancer": {"ingress": ingress}},
                });
                let api: Api<Service> = Api::namespaced(self.client.clone(), &view.namespace);
                match api
                    .patch_status(&view.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(s) => {
                        current = Arc::new(s);
                        self.services
                            .write()
                            .await
                            .insert(view.key(), current.clone());
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                        return Err(Error::Retry(format!(
                            "service {} changed: {}",
                            view.key(),
                            s.message
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }

        // --- release what the Service no longer holds ---
        let keep_ips: HashSet<IpAddr> = cluster_ips.iter().chain(lb_ips.iter()).copied().collect();
        let keep_ports: HashSet<u16> = node_ports
            .iter()
            .copied()
            .chain(std::iter::once(health))
            .filter(|p| *p != 0)
            .collect();
        // While an LB allocation is failing, keep LB claims we hold (they may be requested ones).
        let lb_failed = lb_error.is_some();
        let to_release_ips: Vec<(IpAddr, IpPurpose)> = self
            .state
            .lock()
            .await
            .ips_of(&uid)
            .into_iter()
            .filter(|(ip, i)| {
                let keep_lb = lb_failed && i.purpose == IpPurpose::LoadBalancer;
                !keep_ips.contains(ip) && !keep_lb
            })
            .map(|(ip, i)| (ip, i.purpose))
            .collect();
        let to_release_ports: Vec<(u16, PortPurpose)> = self
            .state
            .lock()
            .await
            .ports_of(&uid)
            .into_iter()
            .filter(|(p, _)| !keep_ports.contains(p))
            .map(|(p, i)| (p, i.purpose))
            .collect();
        if !to_release_ips.is_empty() || !to_release_ports.is_empty() {
            // Releasing is the one step that can hurt if our view is stale (a newer version of the
            // Service may use the value): confirm against the API first.
            self.confirm_current(view, &current).await?;
        }
        for (ip, purpose) in to_release_ips {
            self.release_ip(ip, &uid, purpose).await?;
        }
        for (port, purpose) in to_release_ports {
            self.release_port(port, &uid, purpose).await?;
        }

        if let Some(after) = SvcView::from_service(&current) {
            self.last.lock().await.insert(uid, after);
        }
        match lb_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the API's claim on `ip` lists `uid` as a holder (refreshing our index).
    async fn ip_claim_is_ours(&self, ip: IpAddr, uid: &str) -> Result<bool> {
        let claim = self
            .claims
            .ip_api()
            .get_opt(&ServiceIPClaim::name_for(ip))
            .await?;
        let mut st = self.state.lock().await;
        Ok(match claim {
            Some(c) => {
                st.apply_ip_claim(&c);
                c.spec.parent_refs.iter().any(|p| p.uid == uid)
            }
            None => {
                st.remove_ip(ip);
                false
            }
        })
    }

    /// Takes the first orphaned port claim of `purpose` that the API confirms is still `uid`'s.
    async fn reuse_port_orphan(
        &self,
        orphans: &mut Vec<(u16, PortPurpose)>,
        purpose: PortPurpose,
        uid: &str,
    ) -> Result<Option<u16>> {
        while let Some(i) = orphans.iter().position(|(_, pu)| *pu == purpose) {
            let (port, _) = orphans.remove(i);
            let claim = self
                .claims
                .port_api()
                .get_opt(&NodePortClaim::name_for(port))
                .await?;
            let mut st = self.state.lock().await;
            match claim {
                Some(c) => {
                    st.apply_port_claim(&c);
                    if c.spec.parent_ref.uid == uid && c.spec.purpose == purpose {
                        return Ok(Some(port));
                    }
                }
                None => st.remove_port(port),
            }
        }
        Ok(None)
    }

    /// Fails with [`Error::Retry`] unless the API's current version of the Service uses the same
    /// addresses and ports as `current` (the version this reconcile planned and wrote).
    async fn confirm_current(&self, view: &SvcView, current: &Service) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &view.namespace);
        let fresh = api.get_opt(&view.name).await?;
        let same = |a: &SvcView, b: &SvcView| {
            a.uid == b.uid
                && a.type_ == b.type_
                && a.cluster_ips == b.cluster_ips
                && a.ports == b.ports
                && a.health_check_node_port == b.health_check_node_port
                && a.lb_ingress_ips == b.lb_ingress_ips
        };
        match (
            fresh.as_ref().and_then(SvcView::from_service),
            SvcView::from_service(current),
        ) {
            (Some(f), Some(c)) if same(&f, &c) => Ok(()),
            _ => Err(Error::Retry(format!(
                "service {} changed; not releasing from a stale view",
                view.key()
            ))),
        }
    }

    /// Releases every claim held by `uid` (the Service is gone).
    pub async fn release_all(&self, uid: &str) -> Result<()> {
        let (ips, ports) = {
            let st = self.state.lock().await;
            (st.ips_of(uid), st.ports_of(uid))
        };
        for (ip, info) in ips {
            self.release_ip(ip, uid, info.purpose).await?;
        }
        for (port, info) in ports {
            self.release_port(port, uid, info.purpose).await?;
        }
        Ok(())
    }

    async fn release_ip(&self, ip: IpAddr, uid: &str, purpose: IpPurpose) -> Result<()> {
        let after = self.claims.release_ip(ip, uid).await?;
        let mut st = self.state.lock().await;
        match after {
            Some(c) => st.apply_ip_claim(&c),
            None => st.remove_ip(ip),
        }
        self.metrics.released(match purpose {
            IpPurpose::ClusterIP => "cluster_ip",
            IpPurpose::LoadBalancer => "load_balancer",
        });
        tracing::debug!(%ip, uid, "released IP");
        Ok(())
    }

    async fn release_port(&self, port: u16, uid: &str, purpose: PortPurpose) -> Result<()> {
        self.claims.release_port(port, uid).await?;
        self.state.lock().await.remove_port(port);
        self.metrics.released(port_kind(purpose));
        tracing::debug!(port, uid, "released node port");
        Ok(())
    }

    /// Claims an address the Service already names (user request or adoption).
    async fn claim_cluster_ip(&self, svc: &Service, view: &SvcView, ip: IpAddr) -> Result<IpAddr> {
        let reserve = {
            let mut st = self.state.lock().await;
            let in_range = st.in_cluster_range(ip);
            st.reserve_ip(ip, in_range)
        };
        match reserve {
            Reserve::Held(info) => {
                if info.parents.iter().any(|p| p.uid == view.uid) {
                    return Ok(ip);
                }
                Err(self.ip_conflict(svc, ip, &info.parents).await)
            }
            Reserve::Busy => Err(Error::Retry(format!("{ip} is being claimed"))),
            Reserve::OutOfRange => {
                let ranges: Vec<String> = self
                    .families
                    .iter()
                    .filter_map(|f| self.cidr_of(*f))
                    .collect();
                let msg = format!(
                    "Cluster IP {} is not within the configured Service CIDR {}; please recreate service",
                    fam_tag(ip),
                    ranges.join(",")
                );
                self.metrics.error("out_of_range");
                self.warn(svc, "ClusterIPOutOfRange", &msg).await;
                Err(alloc_err("out_of_range", msg))
            }
            Reserve::Reserved => {
                let res = self
                    .claims
                    .create_ip(ip, IpPurpose::ClusterIP, None, None, Self::svc_ref(view))
                    .await;
                self.finish_ip_claim(svc, view, ip, res, "cluster_ip").await
            }
        }
    }

    async fn finish_ip_claim(
        &self,
        svc: &Service,
        view: &SvcView,
        ip: IpAddr,
        res: Result<Created<ServiceIPClaim>>,
        kind: &str,
    ) -> Result<IpAddr> {
        match res {
            Ok(Created::New(c)) => {
                let mut st = self.state.lock().await;
                st.apply_ip_claim(&c);
                st.unreserve_ip(ip, true);
                self.metrics.allocated(kind);
                Ok(ip)
            }
            Ok(Created::Existing(c)) => {
                {
                    let mut st = self.state.lock().await;
                    st.apply_ip_claim(&c);
                    st.unreserve_ip(ip, true);
                }
                if c.spec.parent_refs.iter().any(|p| p.uid == view.uid) {
                    Ok(ip)
                } else {
                    Err(self.ip_conflict(svc, ip, &c.spec.parent_refs).await)
                }
            }
            Err(e) => {
                self.state.lock().await.unreserve_ip(ip, false);
                Err(e)
            }
        }
    }

    async fn ip_conflict(&self, svc: &Service, ip: IpAddr, holders: &[ServiceRef]) -> Error {
        let holders: Vec<String> = holders
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let msg = format!(
            "failed to allocate IP {ip}: provided IP is already allocated (Cluster IP {} is held by {}); please recreate service",
            fam_tag(ip),
            holders.join(", ")
        );
        self.metrics.error("already_allocated");
        self.warn(svc, "ClusterIPAlreadyAllocated", &msg).await;
        alloc_err("already_allocated", msg)
    }

    async fn alloc_cluster_ip(&self, svc: &Service, view: &SvcView, fam: Family) -> Result<IpAddr> {
        for _ in 0..32 {
            let next = self.state.lock().await.reserve_next_ip(fam);
            let ip = match next {
                Ok(ip) => ip,
                Err(e) => {
                    let msg = format!("failed to allocate a serviceIP: {e}");
                    self.metrics.error(e.metric_label());
                    self.warn(svc, "ClusterIPAllocationFailed", &msg).await;
                    return Err(alloc_err("full", msg));
                }
            };
            let res = self
                .claims
                .create_ip(ip, IpPurpose::ClusterIP, None, None, Self::svc_ref(view))
                .await;
            match res {
                Ok(Created::Existing(c))
                    if !c.spec.parent_refs.iter().any(|p| p.uid == view.uid) =>
                {
                    // Someone else (another replica, a stale view) holds it: try another.
                    let mut st = self.state.lock().await;
                    st.apply_ip_claim(&c);
                    st.unreserve_ip(ip, true);
                    continue;
                }
                other => {
                    return self
                        .finish_ip_claim(svc, view, ip, other, "cluster_ip")
                        .await
                }
            }
        }
        Err(Error::Retry("too many allocation collisions".to_string()))
    }

    async fn claim_port(
        &self,
        svc: &Service,
        view: &SvcView,
        port: u16,
        purpose: PortPurpose,
        index: usize,
    ) -> Result<()> {
        let field = if index == usize::MAX {
            "spec.healthCheckNodePort".to_string()
        } else {
            format!("spec.ports[{index}].nodePort")
        };
        let reserve = self.state.lock().await.reserve_port(port);
        match reserve {
            Reserve::Held(info) if info.parent.uid == view.uid && info.purpose == purpose => Ok(()),
            Reserve::Held(info) => {
                let msg = format!(
                    "{field}: Invalid value: {port}: provided port is already allocated (held by {}/{})",
                    info.parent.namespace, info.parent.name
                );
                self.metrics.error("already_allocated");
                self.warn(svc, "PortAlreadyAllocated", &msg).await;
                Err(alloc_err("already_allocated", msg))
            }
            Reserve::Busy => Err(Error::Retry(format!("port {port} is being claimed"))),
            Reserve::OutOfRange => {
                let range = {
                    let st = self.state.lock().await;
                    format!("{}-{}", st.port_range().first(), st.port_range().last())
                };
                let msg = format!(
                    "{field}: Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {range}"
                );
                self.metrics.error("out_of_range");
                self.warn(svc, "PortOutOfRange", &msg).await;
                Err(alloc_err("out_of_range", msg))
            }
            Reserve::Reserved => {
                let res = self
                    .claims
                    .create_port(port, purpose, Self::svc_ref(view))
                    .await;
                match res {
                    Ok(Created::New(c)) => {
                        let mut st = self.state.lock().await;
                        st.apply_port_claim(&c);
                        st.unreserve_port(port, true);
                        self.metrics.allocated(port_kind(purpose));
                        Ok(())
                    }
                    Ok(Created::Existing(c)) => {
                        {
                            let mut st = self.state.lock().await;
                            st.apply_port_claim(&c);
                            st.unreserve_port(port, true);
                        }
                        if c.spec.parent_ref.uid == view.uid && c.spec.purpose == purpose {
                            Ok(())
                        } else {
                            let msg = format!(
                                "{field}: Invalid value: {port}: provided port is already allocated (held by {}/{})",
                                c.spec.parent_ref.namespace, c.spec.parent_ref.name
                            );
                            self.metrics.error("already_allocated");
                            self.warn(svc, "PortAlreadyAllocated", &msg).await;
                            Err(alloc_err("already_allocated", msg))
                        }
                    }
                    Err(e) => {
                        self.state.lock().await.unreserve_port(port, false);
                        Err(e)
                    }
                }
            }
        }
    }

    async fn alloc_port(&self, svc: &Service, view: &SvcView, purpose: PortPurpose) -> Result<u16> {
        for _ in 0..32 {
            let next = self.state.lock().await.reserve_next_port();
            let port = match next {
                Ok(p) => p,
                Err(e) => {
                    let msg = match purpose {
                        PortPurpose::NodePort => format!("failed to allocate a nodePort: {e}"),
                        PortPurpose::HealthCheckNodePort => {
                            format!("failed to allocate a HealthCheck NodePort: {e}")
                        }
                    };
                    self.metrics.error(e.metric_label());
                    self.warn(svc, "NodePortAllocationFailed", &msg).await;
                    return Err(alloc_err("full", msg));
                }
            };
            match self
                .claims
                .create_port(port, purpose, Self::svc_ref(view))
                .await
            {
                Ok(Created::New(c)) => {
                    let mut st = self.state.lock().await;
                    st.apply_port_claim(&c);
                    st.unreserve_port(port, true);
                    self.metrics.allocated(port_kind(purpose));
                    return Ok(port);
                }
                Ok(Created::Existing(c)) => {
                    let mut st = self.state.lock().await;
                    st.apply_port_claim(&c);
                    st.unreserve_port(port, true);
                    if c.spec.parent_ref.uid == view.uid {
                        return Ok(port);
                    }
                }
                Err(e) => {
                    self.state.lock().await.unreserve_port(port, false);
                    return Err(e);
                }
            }
        }
        Err(Error::Retry("too many allocation collisions".to_string()))
    }

    /// LoadBalancer IPs for a Service svcnet serves.
    async fn lb_ips(
        &self,
        svc: &Service,
        view: &SvcView,
        families: &[Family],
    ) -> Result<Vec<IpAddr>> {
        let requested = match lb::requested_ips(view) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.error("invalid_spec");
                self.warn(svc, e.reason, &e.to_string()).await;
                return Err(alloc_err("invalid_spec", e.to_string()));
            }
        };
        let pools = self.pools.read().await.clone();
        let ns_labels = self
            .namespaces
            .read()
            .await
            .get(&view.namespace)
            .cloned()
            .unwrap_or_default();
        let eligible = lb::eligible_pools(view, &ns_labels, &pools);
        let key = lb::sharing_key(view).map(str::to_string);
        let fams = lb::wanted_families(&requested, families, &eligible);
        let held: Vec<(IpAddr, crate::ipam::state::IpClaimInfo)> = self
            .state
            .lock()
            .await
            .ips_of(&view.uid)
            .into_iter()
            .filter(|(_, i)| i.purpose == IpPurpose::LoadBalancer)
            .collect();
        let mut out = Vec::new();
        if !requested.is_empty() {
            for ip in requested {
                if held.iter().any(|(h, _)| *h == ip) {
                    out.push(ip);
                    continue;
                }
                let Some(pool) = eligible.iter().find(|p| p.contains(ip)) else {
                    let msg = format!(
                        "requested LoadBalancer IP {ip} is not in any LoadBalancerIPPool that serves this Service"
                    );
                    self.metrics.error("not_in_pool");
                    self.warn(svc, "LoadBalancerIPNotAllowed", &msg).await;
                    return Err(alloc_err("not_in_pool", msg));
                };
                self.claim_lb_ip(svc, view, ip, &pool.name, key.clone(), true)
                    .await?;
                out.push(ip);
            }
            return Ok(out);
        }
        for fam in fams {
            if let Some((ip, _)) = held.iter().find(|(ip, _)| family_of(*ip) == fam) {
                out.push(*ip);
                continue;
            }
            // Join a compatible shared address first.
            if let Some(k) = &key {
                let candidates: Vec<IpAddr> = {
                    let st = self.state.lock().await;
                    let mut v: Vec<IpAddr> = st
                        .all_ips()
                        .filter(|(ip, i)| {
                            i.purpose == IpPurpose::LoadBalancer
                                && i.sharing_key.as_deref() == Some(k.as_str())
                                && family_of(**ip) == fam
                                && i.pool
                                    .as_deref()
                                    .is_some_and(|p| eligible.iter().any(|e| e.name == p))
                        })
                        .map(|(ip, _)| *ip)
                        .collect();
                    v.sort();
                    v
                };
                let mut joined = None;
                for ip in candidates {
                    let pool = self
                        .state
                        .lock()
                        .await
                        .ip(ip)
                        .and_then(|i| i.pool.clone())
                        .unwrap_or_default();
                    match self
                        .claim_lb_ip(svc, view, ip, &pool, key.clone(), false)
                        .await
                    {
                        Ok(()) => {
                            joined = Some(ip);
                            break;
                        }
                        // The shared claim changed under us (another holder's write won the
                        // resourceVersion race) or was just released: try the whole reconcile
                        // again rather than taking a fresh address the Service could have shared.
                        Err(e @ Error::Retry(_)) => return Err(e),
                        Err(_) => {}
                    }
                }
                if let Some(ip) = joined {
                    out.push(ip);
                    continue;
                }
            }
            let mut got = None;
            'pools: for pool in eligible.iter().filter(|p| p.has_family(fam)) {
                for _ in 0..16 {
                    let candidate = {
                        let st = self.state.lock().await;
                        pool.first_free(fam, |ip| st.ip_taken(ip))
                    };
                    let Some(ip) = candidate else { break };
                    match self
                        .claim_lb_ip(svc, view, ip, &pool.name, key.clone(), false)
                        .await
                    {
                        Ok(()) => {
                            got = Some(ip);
                            break 'pools;
                        }
                        Err(Error::Kube(e)) => return Err(Error::Kube(e)),
                        Err(_) => continue,
                    }
                }
            }
            match got {
                Some(ip) => {
                    out.push(ip);
                    self.recorder
                        .normal(
                            &EventRecorder::reference(svc),
                            "LoadBalancerIPAllocated",
                            &format!("Assigned LoadBalancer IP {ip}"),
                        )
                        .await;
                }
                None => {
                    let names: Vec<&str> = eligible.iter().map(|p| p.name.as_str()).collect();
                    let msg = if names.is_empty() {
                        "no LoadBalancerIPPool serves this Service (check the pools' selectors and disabled switch)".to_string()
                    } else {
                        format!(
                            "failed to allocate a LoadBalancer IP ({fam}): no free address in pool(s) {}",
                            names.join(", ")
                        )
                    };
                    self.metrics.error("pool_exhausted");
                    self.warn(svc, "LoadBalancerIPAllocationFailed", &msg).await;
                    return Err(alloc_err("pool_exhausted", msg));
                }
            }
        }
        Ok(out)
    }

    /// Claims (or joins) LoadBalancer address `ip` from `pool`. With `report`, a conflict is
    /// reported as an Event (requested addresses); otherwise it is silent (candidate scans).
    async fn claim_lb_ip(
        &self,
        svc: &Service,
        view: &SvcView,
        ip: IpAddr,
        pool: &str,
        key: Option<String>,
        report: bool,
    ) -> Result<()> {
        let reserve = self.state.lock().await.reserve_ip(ip, true);
        let existing = match reserve {
            Reserve::Busy => return Err(Error::Retry(format!("{ip} is being claimed"))),
            Reserve::OutOfRange => return Err(alloc_err("not_in_pool", ip.to_string())),
            Reserve::Held(info) if info.parents.iter().any(|p| p.uid == view.uid) => return Ok(()),
            Reserve::Held(_) => None,
            Reserve::Reserved => {
                let res = self
                    .claims
                    .create_ip(
                        ip,
                        IpPurpose::LoadBalancer,
                        Some(pool.to_string()),
                        key.clone(),
                        Self::svc_ref(view),
                    )
                    .await;
                match res {
                    Ok(Created::New(c)) => {
                        let mut st = self.state.lock().await;
                        st.apply_ip_claim(&c);
                        st.unreserve_ip(ip, true);
                        self.metrics.allocated("load_balancer");
                        return Ok(());
                    }
                    Ok(Created::Existing(c)) => {
                        let mut st = self.state.lock().await;
                        st.apply_ip_claim(&c);
                        st.unreserve_ip(ip, true);
                        if c.spec.parent_refs.iter().any(|p| p.uid == view.uid) {
                            return Ok(());
                        }
                        Some(c)
                    }
                    Err(e) => {
                        self.state.lock().await.unreserve_ip(ip, false);
                        return Err(e);
                    }
                }
            }
        };
        // Held by others: join if sharing is allowed.
        let mut claim = match existing {
            Some(c) => c,
            None => match self
                .claims
                .ip_api()
                .get_opt(&ServiceIPClaim::name_for(ip))
                .await?
            {
                Some(c) => c,
                None => return Err(Error::Retry(format!("{ip} was just released"))),
            },
        };
        let verdict = if claim.spec.purpose != IpPurpose::LoadBalancer {
            Err("the address is a ClusterIP".to_string())
        } else {
            let services = self.services.read().await;
            let holder_ports: Vec<(i32, String)> = claim
                .spec
                .parent_refs
                .iter()
                .filter_map(|p| services.get(&format!("{}/{}", p.namespace, p.name)))
                .filter_map(|s| SvcView::from_service(s))
                .flat_map(|v| lb::lb_ports(&v))
                .collect();
            lb::can_share(
                key.as_deref(),
                &lb::lb_ports(view),
                claim.spec.sharing_key.as_deref(),
                &holder_ports,
            )
        };
        match verdict {
            Ok(()) => {
                claim.spec.parent_refs.push(Self::svc_ref(view));
                let updated = self.claims.replace_ip(&claim).await?;
                self.state.lock().await.apply_ip_claim(&updated);
                Ok(())
            }
            Err(why) => {
                if report {
                    let holders: Vec<String> = claim
                        .spec
                        .parent_refs
                        .iter()
                        .map(|p| format!("{}/{}", p.namespace, p.name))
                        .collect();
                    let msg = format!(
                        "LoadBalancer IP {ip} is already allocated to {} and cannot be shared: {why}",
                        holders.join(", ")
                    );
                    self.metrics.error("already_allocated");
                    self.warn(svc, "LoadBalancerIPAlreadyAllocated", &msg).await;
                }
                Err(alloc_err("already_allocated", format!("{ip}: {why}")))
            }
        }
    }
}

fn port_kind(p: PortPurpose) -> &'static str {
    match p {
        PortPurpose::NodePort => "node_port",
        PortPurpose::HealthCheckNodePort => "health_check_node_port",
    }
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
    use crate::ipam::model::Policy;
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
        use crate::ipam::model::fixtures::svc;
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
