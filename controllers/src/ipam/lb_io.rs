//! LoadBalancer IP I/O: requested addresses, joining a shared address, allocating from the
//! eligible pools (the choices themselves are pure, in `plan::load_balancer`).

use std::net::IpAddr;

use crds::{IpPurpose, ServiceIPClaim};
use k8s_openapi::api::core::v1::Service;

use crate::ipam::claims::Created;
use crate::ipam::context::Ipam;
use crate::ipam::plan::load_balancer as lb;
use crate::ipam::reconcile::alloc_err;
use crate::ipam::state::Reserve;
use crate::ipam::svc_view::{family_of, Family, SvcView};
use crate::{Error, Result};
use runtime::events::EventRecorder;

impl Ipam {
    /// LoadBalancer IPs for a Service svcnet serves.
    pub(super) async fn lb_ips(
        &self,
        svc: &Service,
        view: &SvcView,
        families: &[Family],
    ) -> Result<Vec<IpAddr>> {
        let requested = match lb::requested_ips(view) {
            Ok(r) => r,
            Err(e) => {
                return Err(self
                    .refuse(svc, "invalid_spec", e.reason, e.to_string())
                    .await);
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
                    return Err(self
                        .refuse(svc, "not_in_pool", "LoadBalancerIPNotAllowed", msg)
                        .await);
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
                        "no LoadBalancerIPPool serves this Service (check the pools' selectors, disabled and autoAssign switches)".to_string()
                    } else {
                        format!(
                            "failed to allocate a LoadBalancer IP ({fam}): no free address in pool(s) {}",
                            names.join(", ")
                        )
                    };
                    return Err(self
                        .refuse(svc, "pool_exhausted", "LoadBalancerIPAllocationFailed", msg)
                        .await);
                }
            }
        }
        Ok(out)
    }

    /// Claims (or joins) LoadBalancer address `ip` from `pool`. With `report`, a conflict is
    /// reported as an Event (requested addresses); otherwise it is silent (candidate scans).
    pub(super) async fn claim_lb_ip(
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
            // The holders as they are now (ports, traffic policy, selector); a holder no longer
            // in the store (or recreated under another uid) is on its way out and constrains
            // nothing.
            let services = self.services.read().await;
            let holders: Vec<SvcView> = claim
                .spec
                .parent_refs
                .iter()
                .filter_map(|p| {
                    services
                        .get(&format!("{}/{}", p.namespace, p.name))
                        .filter(|s| s.metadata.uid.as_deref() == Some(p.uid.as_str()))
                })
                .filter_map(|s| SvcView::from_service(s))
                .collect();
            lb::can_share(view, claim.spec.sharing_key.as_deref(), &holders)
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
