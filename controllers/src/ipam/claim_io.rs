//! Claim I/O: creating, confirming and releasing `ServiceIPClaim` / `NodePortClaim` objects
//! for ClusterIPs and node ports, with the index kept in step. Conflicts and exhaustion are
//! reported as Events on the Service and returned as allocation errors.

use std::net::IpAddr;

use crds::{IpPurpose, NodePortClaim, PortPurpose, ServiceIPClaim, ServiceRef};
use k8s_openapi::api::core::v1::Service;

use crate::ipam::addresses::info_of;
use crate::ipam::claims::Created;
use crate::ipam::context::Ipam;
use crate::ipam::reconcile::{alloc_err, fam_tag};
use crate::ipam::state::{AddressManager, IpClaimInfo, Reserve};
use crate::ipam::svc_view::{Family, SvcView};
use crate::{Error, Result};

impl Ipam {
    /// Whether the API's record of ClusterIP `ip` (its IPAddress or claim) names the Service of
    /// `view` as a holder (refreshing our index).
    pub(super) async fn cluster_ip_is_ours(&self, ip: IpAddr, view: &SvcView) -> Result<bool> {
        if self.uses_addresses() {
            let found = self.addresses.get(ip).await?;
            let mut st = self.state.lock().await;
            return Ok(match found.as_ref().and_then(info_of) {
                Some((_, info)) => {
                    let ours = info.held_by(&view.namespace, &view.name, &view.uid);
                    st.record(ip, info);
                    ours
                }
                None => {
                    st.remove_address(ip);
                    false
                }
            });
        }
        let uid = view.uid.as_str();
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
                st.remove_ip_claim(ip);
                false
            }
        })
    }

    /// Takes the first orphaned port claim of `purpose` that the API confirms is still `uid`'s.
    pub(super) async fn reuse_port_claim(
        &self,
        candidates: &mut impl Iterator<Item = u16>,
        purpose: PortPurpose,
        uid: &str,
    ) -> Result<Option<u16>> {
        for port in candidates.by_ref() {
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

    pub(super) async fn release_ip(&self, ip: IpAddr, uid: &str, purpose: IpPurpose) -> Result<()> {
        let ledger = self.state.lock().await.ip(ip).map(|i| i.ledger);
        if purpose == IpPurpose::ClusterIP
            && ledger.is_some_and(|l| l.address == Some(AddressManager::Ours))
        {
            // Only an IPAddress this controller made for exactly this Service is deleted.
            if let Some(a) = self.addresses.get(ip).await? {
                let ours = info_of(&a).is_some_and(|(_, i)| i.parents.iter().any(|p| p.uid == uid));
                if ours {
                    self.addresses.delete_if_unchanged(&a).await?;
                    self.state.lock().await.remove_address(ip);
                }
            } else {
                self.state.lock().await.remove_address(ip);
            }
        }
        if ledger.is_none_or(|l| l.claim) {
            let after = self.claims.release_ip(ip, uid).await?;
            let mut st = self.state.lock().await;
            match after {
                Some(c) => st.apply_ip_claim(&c),
                None => st.remove_ip_claim(ip),
            }
        }
        self.metrics.released(match purpose {
            IpPurpose::ClusterIP => "cluster_ip",
            IpPurpose::LoadBalancer => "load_balancer",
        });
        tracing::debug!(%ip, uid, "released IP");
        Ok(())
    }

    pub(super) async fn release_port(
        &self,
        port: u16,
        uid: &str,
        purpose: PortPurpose,
    ) -> Result<()> {
        self.claims.release_port(port, uid).await?;
        self.state.lock().await.remove_port(port);
        self.metrics.released(port_kind(purpose));
        tracing::debug!(port, uid, "released node port");
        Ok(())
    }

    /// Claims an address the Service already names (user request or adoption).
    pub(super) async fn claim_cluster_ip(
        &self,
        svc: &Service,
        view: &SvcView,
        ip: IpAddr,
    ) -> Result<IpAddr> {
        let reserve = {
            let mut st = self.state.lock().await;
            let in_range = st.in_cluster_range(ip);
            st.reserve_ip(ip, in_range)
        };
        match reserve {
            Reserve::Held(info) => {
                if info.held_by(&view.namespace, &view.name, &view.uid) {
                    return Ok(ip);
                }
                Err(self.ip_conflict(svc, ip, &info.parents).await)
            }
            Reserve::Busy => Err(Error::Retry(format!("{ip} is being claimed"))),
            Reserve::OutOfRange => {
                let ranges: Vec<String> = {
                    let st = self.state.lock().await;
                    self.families
                        .iter()
                        .filter_map(|f| st.cidr_of(*f))
                        .collect()
                };
                let msg = format!(
                    "Cluster IP {} is not within the configured Service CIDR {}; please recreate service",
                    fam_tag(ip),
                    ranges.join(",")
                );
                Err(self
                    .refuse(svc, "out_of_range", "ClusterIPOutOfRange", msg)
                    .await)
            }
            Reserve::Reserved => {
                let res = self.create_cluster_ip(ip, view).await;
                self.finish_ip_claim(svc, view, ip, res, "cluster_ip").await
            }
        }
    }

    /// Records ClusterIP `ip` for the Service in the ledger in use.
    async fn create_cluster_ip(&self, ip: IpAddr, view: &SvcView) -> Result<Created<IpClaimInfo>> {
        let parent = Self::svc_ref(view);
        if self.uses_addresses() {
            return self.addresses.create(ip, &parent).await;
        }
        let created = self
            .claims
            .create_ip(ip, IpPurpose::ClusterIP, None, None, parent)
            .await?;
        Ok(match created {
            Created::New(c) => Created::New(IpClaimInfo::from_claim(&c)),
            Created::Existing(c) => Created::Existing(IpClaimInfo::from_claim(&c)),
        })
    }

    pub(super) async fn finish_ip_claim(
        &self,
        svc: &Service,
        view: &SvcView,
        ip: IpAddr,
        res: Result<Created<IpClaimInfo>>,
        kind: &str,
    ) -> Result<IpAddr> {
        match res {
            Ok(Created::New(info)) => {
                let mut st = self.state.lock().await;
                st.record(ip, info);
                st.unreserve_ip(ip, true);
                self.metrics.allocated(kind);
                Ok(ip)
            }
            Ok(Created::Existing(info)) => {
                let ours = info.held_by(&view.namespace, &view.name, &view.uid);
                let parents = info.parents.clone();
                {
                    let mut st = self.state.lock().await;
                    st.record(ip, info);
                    st.unreserve_ip(ip, true);
                }
                if ours {
                    Ok(ip)
                } else {
                    Err(self.ip_conflict(svc, ip, &parents).await)
                }
            }
            Err(e) => {
                self.state.lock().await.unreserve_ip(ip, false);
                Err(e)
            }
        }
    }

    pub(super) async fn ip_conflict(
        &self,
        svc: &Service,
        ip: IpAddr,
        holders: &[ServiceRef],
    ) -> Error {
        let holders: Vec<String> = holders
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let msg = format!(
            "failed to allocate IP {ip}: provided IP is already allocated (Cluster IP {} is held by {}); please recreate service",
            fam_tag(ip),
            holders.join(", ")
        );
        self.refuse(svc, "already_allocated", "ClusterIPAlreadyAllocated", msg)
            .await
    }

    pub(super) async fn alloc_cluster_ip(
        &self,
        svc: &Service,
        view: &SvcView,
        fam: Family,
    ) -> Result<IpAddr> {
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
            let res = self.create_cluster_ip(ip, view).await;
            match res {
                Ok(Created::Existing(info))
                    if !info.held_by(&view.namespace, &view.name, &view.uid) =>
                {
                    // Someone else (another replica, a stale view) holds it: try another.
                    let mut st = self.state.lock().await;
                    st.record(ip, info);
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

    pub(super) async fn claim_port(
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
                Err(self
                    .refuse(svc, "already_allocated", "PortAlreadyAllocated", msg)
                    .await)
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
                Err(self
                    .refuse(svc, "out_of_range", "PortOutOfRange", msg)
                    .await)
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
                            Err(self
                                .refuse(svc, "already_allocated", "PortAlreadyAllocated", msg)
                                .await)
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

    pub(super) async fn alloc_port(
        &self,
        svc: &Service,
        view: &SvcView,
        purpose: PortPurpose,
    ) -> Result<u16> {
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
}

pub(super) fn port_kind(p: PortPurpose) -> &'static str {
    match p {
        PortPurpose::NodePort => "node_port",
        PortPurpose::HealthCheckNodePort => "health_check_node_port",
    }
}
