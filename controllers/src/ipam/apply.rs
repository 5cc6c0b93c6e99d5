//! The applier: runs the steps `plan::steps` produced for one Service, in order, against the
//! API and the index. Each step's result (an allocated address, a written Service) is kept
//! for the later steps; the first failing claim ends the reconcile (the worker retries it),
//! except the LoadBalancer step, whose error is returned only after the Service is written.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use crds::{IpPurpose, PortPurpose};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;

use crate::ipam::context::Ipam;
use crate::ipam::plan::cluster_ip::ClusterIpPlan;
use crate::ipam::plan::node_port::{HealthSlot, NodePortPlan, PortSlot};
use crate::ipam::plan::steps::{releases, Step};
use crate::ipam::reconcile::{alloc_err, apply_spec, fam_tag};
use crate::ipam::svc_view::SvcView;
use crate::{Error, Result};

/// What the steps so far have produced.
struct Progress {
    /// By `spec.clusterIPs` slot.
    cluster_ips: Vec<Option<IpAddr>>,
    /// The new node ports `PortSlot::New(k)` refers to.
    fresh: Vec<u16>,
    /// A new health-check port.
    health: Option<u16>,
    lb_ips: Vec<IpAddr>,
    lb_error: Option<Error>,
    /// The Service as last written (or as read, when nothing was written).
    current: Arc<Service>,
}

impl Progress {
    fn cluster_ips(&self) -> Result<Vec<IpAddr>> {
        self.cluster_ips
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| alloc_err("internal", "a ClusterIP slot had no step"))
    }

    fn node_ports(&self, npp: &NodePortPlan) -> Vec<u16> {
        npp.ports
            .iter()
            .map(|s| match *s {
                PortSlot::Zero => 0,
                PortSlot::Fixed(p) => p,
                PortSlot::New(k) => self.fresh.get(k).copied().unwrap_or(0),
            })
            .collect()
    }

    fn health(&self, npp: &NodePortPlan) -> u16 {
        match npp.health_check {
            HealthSlot::Zero => 0,
            HealthSlot::Fixed(p) => p,
            HealthSlot::New => self.health.unwrap_or(0),
        }
    }
}

fn changed(view: &SvcView, s: Box<kube::core::Status>) -> Error {
    Error::Retry(format!("service {} changed: {}", view.key(), s.message))
}

impl Ipam {
    /// Runs `steps` for `svc` (planned as `cip` / `npp`).
    pub(super) async fn apply(
        &self,
        svc: &Arc<Service>,
        view: &SvcView,
        cip: &ClusterIpPlan,
        npp: &NodePortPlan,
        steps: Vec<Step>,
    ) -> Result<()> {
        let uid = view.uid.as_str();
        let mut p = Progress {
            cluster_ips: vec![None; cip.slots.len()],
            fresh: Vec::with_capacity(npp.fresh),
            health: None,
            lb_ips: Vec::new(),
            lb_error: None,
            current: svc.clone(),
        };
        for step in steps {
            match step {
                Step::ClaimClusterIp { slot, ip } => {
                    let ip = self.claim_cluster_ip(svc, view, ip).await?;
                    set_slot(&mut p.cluster_ips, slot, ip)?;
                }
                Step::AllocClusterIp {
                    slot,
                    family,
                    reuse,
                } => {
                    // A claim made earlier whose Service write did not land: reuse it, once
                    // the API confirms it is still ours (the cache may lag).
                    let mut reused = None;
                    for ip in reuse {
                        if self.cluster_ip_is_ours(ip, view).await? {
                            reused = Some(ip);
                            break;
                        }
                    }
                    let ip = match reused {
                        Some(ip) => ip,
                        None => self.alloc_cluster_ip(svc, view, family).await?,
                    };
                    set_slot(&mut p.cluster_ips, slot, ip)?;
                }
                Step::ReportLostIps(ips) => {
                    for ip in ips {
                        let msg = format!("Cluster IP {} is not allocated; repairing", fam_tag(ip));
                        self.warn(svc, "ClusterIPNotAllocated", &msg).await;
                    }
                }
                Step::AllocNodePorts { count, reuse } => {
                    let mut reuse = reuse.into_iter();
                    for _ in 0..count {
                        let port = match self
                            .reuse_port_claim(&mut reuse, PortPurpose::NodePort, uid)
                            .await?
                        {
                            Some(port) => port,
                            None => self.alloc_port(svc, view, PortPurpose::NodePort).await?,
                        };
                        p.fresh.push(port);
                    }
                }
                Step::ClaimNodePort { index, port } => {
                    self.claim_port(svc, view, port, PortPurpose::NodePort, index)
                        .await?;
                }
                Step::ClaimHealthCheckPort(port) => {
                    self.claim_port(
                        svc,
                        view,
                        port,
                        PortPurpose::HealthCheckNodePort,
                        usize::MAX,
                    )
                    .await?;
                }
                Step::AllocHealthCheckPort { reuse } => {
                    let purpose = PortPurpose::HealthCheckNodePort;
                    let mut reuse = reuse.into_iter();
                    let port = match self.reuse_port_claim(&mut reuse, purpose, uid).await? {
                        Some(port) => port,
                        None => self.alloc_port(svc, view, purpose).await?,
                    };
                    p.health = Some(port);
                }
                Step::ReportLostPorts(ports) => {
                    for port in ports {
                        let msg = format!("Port {port} is not allocated; repairing");
                        self.warn(svc, "PortNotAllocated", &msg).await;
                    }
                }
                Step::LoadBalancerIps => match self.lb_ips(svc, view, &cip.families).await {
                    Ok(ips) => p.lb_ips = ips,
                    Err(e) => {
                        // Keep publishing what the Service already holds.
                        p.lb_ips = self
                            .state
                            .lock()
                            .await
                            .ips_of(uid)
                            .into_iter()
                            .filter(|(_, i)| i.purpose == IpPurpose::LoadBalancer)
                            .map(|(ip, _)| ip)
                            .collect();
                        p.lb_error = Some(e);
                    }
                },
                Step::WriteSpec => {
                    let mut updated: Service = (**svc).clone();
                    let cluster_ips = p.cluster_ips()?;
                    let (node_ports, health) = (p.node_ports(npp), p.health(npp));
                    if apply_spec(&mut updated, cip, &cluster_ips, &node_ports, health) {
                        p.current = self.write_spec(svc, view, &updated).await?;
                    }
                }
                Step::WriteLoadBalancerStatus => {
                    if let Some(s) = self.write_lb_status(view, &p.current, &p.lb_ips).await? {
                        p.current = s;
                    }
                }
                Step::ConfirmThenRelease => {
                    let keep_ips: HashSet<IpAddr> = p
                        .cluster_ips()?
                        .into_iter()
                        .chain(p.lb_ips.iter().copied())
                        .collect();
                    let keep_ports: HashSet<u16> = p
                        .node_ports(npp)
                        .into_iter()
                        .chain(std::iter::once(p.health(npp)))
                        .filter(|port| *port != 0)
                        .collect();
                    let release = {
                        let st = self.state.lock().await;
                        releases(&st, uid, &keep_ips, &keep_ports, p.lb_error.is_some())
                    };
                    if !release.is_empty() {
                        self.confirm_current(view, &p.current).await?;
                    }
                    for (ip, purpose) in release.ips {
                        self.release_ip(ip, uid, purpose).await?;
                    }
                    for (port, purpose) in release.ports {
                        self.release_port(port, uid, purpose).await?;
                    }
                }
            }
        }
        if let Some(after) = SvcView::from_service(&p.current) {
            self.last.lock().await.insert(uid.to_string(), after);
        }
        match p.lb_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Puts the Service as the API returned it from a write into the store.
    async fn stored(&self, view: &SvcView, written: Service) -> Arc<Service> {
        let current = Arc::new(written);
        self.services
            .write()
            .await
            .insert(view.key(), current.clone());
        current
    }

    /// Replaces the Service with `updated` (conditional on the version read).
    async fn write_spec(
        &self,
        svc: &Service,
        view: &SvcView,
        updated: &Service,
    ) -> Result<Arc<Service>> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &view.namespace);
        match api
            .replace(&view.name, &PostParams::default(), updated)
            .await
        {
            Ok(s) => Ok(self.stored(view, s).await),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Err(changed(view, s)),
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                let msg = format!("the API server rejected the allocation: {}", s.message);
                self.warn(svc, "AllocationRejected", &msg).await;
                Err(alloc_err("rejected", msg))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets `status.loadBalancer.ingress` to `lb_ips` when it differs; the written Service.
    async fn write_lb_status(
        &self,
        view: &SvcView,
        current: &Service,
        lb_ips: &[IpAddr],
    ) -> Result<Option<Arc<Service>>> {
        let want: Vec<String> = lb_ips.iter().map(ToString::to_string).collect();
        if want == view.lb_ingress_ips {
            return Ok(None);
        }
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
        // unconditional write from a stale plan could put back an address another replica's
        // reconcile has just confirmed unused and is releasing.
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {"loadBalancer": {"ingress": ingress}},
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), &view.namespace);
        match api
            .patch_status(&view.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(s) => Ok(Some(self.stored(view, s).await)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Err(changed(view, s)),
            Err(e) => Err(e.into()),
        }
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
}

fn set_slot(slots: &mut [Option<IpAddr>], slot: usize, ip: IpAddr) -> Result<()> {
    let s = slots
        .get_mut(slot)
        .ok_or_else(|| alloc_err("internal", format!("no ClusterIP slot {slot}")))?;
    *s = Some(ip);
    Ok(())
}
