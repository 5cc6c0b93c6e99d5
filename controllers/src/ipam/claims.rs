//! API operations on claim objects: atomic create (AlreadyExists = taken), compare-and-swap
//! updates of shared LoadBalancer claims, and guarded deletes.

use std::net::IpAddr;

use crds::{
    IpPurpose, NodePortClaim, NodePortClaimSpec, PortPurpose, ServiceIPClaim, ServiceIPClaimSpec,
    ServiceRef, IP_FAMILY_LABEL, MANAGED_BY_IPAM, MANAGED_BY_LABEL, PURPOSE_LABEL,
};
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client};

use crate::ipam::svc_view::family_of;
use crate::Result;

/// Result of a create.
#[derive(Debug)]
pub enum Created<T> {
    /// We created it: the value is ours.
    New(T),
    /// It already existed; this is the stored object.
    Existing(T),
}

/// Claim API handles.
#[derive(Clone)]
pub struct ClaimApi {
    ips: Api<ServiceIPClaim>,
    ports: Api<NodePortClaim>,
}

fn labels(purpose: &str, family: Option<String>) -> std::collections::BTreeMap<String, String> {
    let mut l = std::collections::BTreeMap::new();
    l.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_IPAM.to_string());
    l.insert(PURPOSE_LABEL.to_string(), purpose.to_string());
    if let Some(f) = family {
        l.insert(IP_FAMILY_LABEL.to_string(), f);
    }
    l
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Deletes `obj` only if it is still the version (resourceVersion and UID) read: gone already
/// is success, changed meanwhile is [`crate::Error::Retry`].
pub async fn delete_if_unchanged<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let meta = obj.meta();
    let name = meta.name.clone().unwrap_or_default();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: meta.resource_version.clone(),
            uid: meta.uid.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 404) => Ok(()),
        Err(e) if is_code(&e, 409) => Err(crate::Error::Retry(format!("{name} changed"))),
        Err(e) => Err(e.into()),
    }
}

impl ClaimApi {
    /// Handles on the cluster-scoped claim resources.
    pub fn new(client: Client) -> Self {
        ClaimApi {
            ips: Api::all(client.clone()),
            ports: Api::all(client),
        }
    }

    /// The IP claim API.
    pub fn ip_api(&self) -> &Api<ServiceIPClaim> {
        &self.ips
    }

    /// The node-port claim API.
    pub fn port_api(&self) -> &Api<NodePortClaim> {
        &self.ports
    }

    /// Creates the claim for `ip`, or returns the one that exists.
    pub async fn create_ip(
        &self,
        ip: IpAddr,
        purpose: IpPurpose,
        pool: Option<String>,
        sharing_key: Option<String>,
        parent: ServiceRef,
    ) -> Result<Created<ServiceIPClaim>> {
        let name = ServiceIPClaim::name_for(ip);
        let mut claim = ServiceIPClaim::new(
            &name,
            ServiceIPClaimSpec {
                ip: ip.to_string(),
                purpose,
                pool,
                sharing_key,
                parent_refs: vec![parent],
            },
        );
        claim.metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels(purpose.as_str(), Some(family_of(ip).to_string()))),
            ..Default::default()
        };
        for _ in 0..3 {
            match self.ips.create(&PostParams::default(), &claim).await {
                Ok(c) => return Ok(Created::New(c)),
                Err(e) if is_code(&e, 409) => {
                    // Taken; read who holds it. (Gone again in between: try once more.)
                    if let Some(existing) = self.ips.get_opt(&name).await? {
                        return Ok(Created::Existing(existing));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(crate::Error::Retry(format!("claim {name} flapping")))
    }

    /// Creates the claim for node port `port`, or returns the one that exists.
    pub async fn create_port(
        &self,
        port: u16,
        purpose: PortPurpose,
        parent: ServiceRef,
    ) -> Result<Created<NodePortClaim>> {
        let name = NodePortClaim::name_for(port);
        let mut claim = NodePortClaim::new(
            &name,
            NodePortClaimSpec {
                port: i32::from(port),
                purpose,
                parent_ref: parent,
            },
        );
        claim.metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels(purpose.as_str(), None)),
            ..Default::default()
        };
        for _ in 0..3 {
            match self.ports.create(&PostParams::default(), &claim).await {
                Ok(c) => return Ok(Created::New(c)),
                Err(e) if is_code(&e, 409) => {
                    if let Some(existing) = self.ports.get_opt(&name).await? {
                        return Ok(Created::Existing(existing));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(crate::Error::Retry(format!("claim {name} flapping")))
    }

    /// Removes `uid` from the holders of `ip`'s claim: deletes the claim when `uid` was the last
    /// holder, otherwise updates it with its resourceVersion (CAS). Returns the claim as it is
    /// afterwards (`None` = deleted or absent).
    pub async fn release_ip(&self, ip: IpAddr, uid: &str) -> Result<Option<ServiceIPClaim>> {
        let name = ServiceIPClaim::name_for(ip);
        let Some(mut claim) = self.ips.get_opt(&name).await? else {
            return Ok(None);
        };
        if !claim.spec.parent_refs.iter().any(|p| p.uid == uid) {
            return Ok(Some(claim));
        }
        claim.spec.parent_refs.retain(|p| p.uid != uid);
        if claim.spec.parent_refs.is_empty() {
            self.delete_ip_if_unchanged(&claim).await?;
            Ok(None)
        } else {
            let updated = self.replace_ip(&claim).await?;
            Ok(Some(updated))
        }
    }

    /// Deletes an IP claim if it still has the resourceVersion we read.
    pub async fn delete_ip_if_unchanged(&self, claim: &ServiceIPClaim) -> Result<()> {
        delete_if_unchanged(&self.ips, claim).await
    }

    /// Replaces an IP claim (CAS on its resourceVersion).
    pub async fn replace_ip(&self, claim: &ServiceIPClaim) -> Result<ServiceIPClaim> {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match self.ips.replace(&name, &PostParams::default(), claim).await {
            Ok(c) => Ok(c),
            Err(e) if is_code(&e, 409) => Err(crate::Error::Retry(format!("claim {name} changed"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `port`'s claim if `uid` holds it.
    pub async fn release_port(&self, port: u16, uid: &str) -> Result<()> {
        let name = NodePortClaim::name_for(port);
        let Some(claim) = self.ports.get_opt(&name).await? else {
            return Ok(());
        };
        if claim.spec.parent_ref.uid != uid {
            return Ok(());
        }
        self.delete_port_if_unchanged(&claim).await
    }

    /// Deletes a node-port claim if it still has the resourceVersion we read.
    pub async fn delete_port_if_unchanged(&self, claim: &NodePortClaim) -> Result<()> {
        delete_if_unchanged(&self.ports, claim).await
    }
}
