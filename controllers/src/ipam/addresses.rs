//! The ClusterIP ledger on upstream's objects: one `networking.k8s.io/v1` `IPAddress` per
//! ClusterIP, named by the address, its `parentRef` naming the Service — the objects
//! kube-apiserver itself records ClusterIPs with. Creating the object is the claim (the name is
//! unique, so AlreadyExists means taken); deleting it releases the address.
//!
//! Objects another allocator made (kube-apiserver labels its own `ipallocator.k8s.io`) are
//! respected as holds and never changed or deleted here. Ours carry our manager label and the
//! Service's UID in an annotation, which tells a recreated Service of the same name from the
//! one that held the address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crds::{IpPurpose, ServiceRef};
use k8s_openapi::api::networking::v1::{IPAddress, IPAddressSpec, ParentReference};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::ipam::claims::Created;
use crate::ipam::state::{AddressManager, IpClaimInfo, Ledger};
use crate::ipam::svc_view::family_of;
use crate::Result;

/// Label naming the allocator that manages an IPAddress.
pub const MANAGED_BY_LABEL: &str = "ipaddress.kubernetes.io/managed-by";
/// Label with the address family (`IPv4` / `IPv6`).
pub const IP_FAMILY_LABEL: &str = "ipaddress.kubernetes.io/ip-family";
/// Our value of [`MANAGED_BY_LABEL`].
pub const MANAGER: &str = "ipam.svcnet.io";
/// Annotation with the UID of the Service an IPAddress of ours was made for.
pub const SERVICE_UID_ANNOTATION: &str = "ipam.svcnet.io/service-uid";

/// The IPAddress that claims `ip` for `parent`.
pub fn address_object(ip: IpAddr, parent: &ServiceRef) -> IPAddress {
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
        (IP_FAMILY_LABEL.to_string(), family_of(ip).to_string()),
    ]);
    let annotations = BTreeMap::from([(SERVICE_UID_ANNOTATION.to_string(), parent.uid.clone())]);
    IPAddress {
        metadata: ObjectMeta {
            name: Some(ip.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(IPAddressSpec {
            parent_ref: ParentReference {
                group: Some(String::new()),
                resource: "services".to_string(),
                namespace: Some(parent.namespace.clone()),
                name: parent.name.clone(),
            },
        }),
    }
}

/// What an IPAddress says: the address and its holder. An object whose parent is not a core
/// Service still holds its address, for nobody this controller knows (no parents).
pub fn info_of(a: &IPAddress) -> Option<(IpAddr, IpClaimInfo)> {
    let ip: IpAddr = a.name_any().parse().ok()?;
    let ours = a.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER);
    let parents = a
        .spec
        .as_ref()
        .map(|s| &s.parent_ref)
        .filter(|p| p.resource == "services" && p.group.as_deref().unwrap_or("").is_empty())
        .map(|p| ServiceRef {
            namespace: p.namespace.clone().unwrap_or_default(),
            name: p.name.clone(),
            uid: if ours {
                a.annotations()
                    .get(SERVICE_UID_ANNOTATION)
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            },
        })
        .into_iter()
        .collect();
    Some((
        ip,
        IpClaimInfo {
            purpose: IpPurpose::ClusterIP,
            pool: None,
            sharing_key: None,
            parents,
            created: a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ledger: Ledger {
                claim: false,
                address: Some(if ours {
                    AddressManager::Ours
                } else {
                    AddressManager::Other
                }),
            },
        },
    ))
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Whether the API serves `networking.k8s.io/v1` IPAddress and ServiceCIDR (Kubernetes 1.33+
/// and the embedded server). Discovery errors other than "not found" are returned.
pub async fn api_serves_addresses(client: &Client) -> Result<bool> {
    match client
        .list_api_group_resources("networking.k8s.io/v1")
        .await
    {
        Ok(list) => {
            let has = |n: &str| list.resources.iter().any(|r| r.name == n);
            Ok(has("ipaddresses") && has("servicecidrs"))
        }
        Err(e) if is_code(&e, 404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// IPAddress API operations.
#[derive(Clone)]
pub struct AddressApi {
    api: Api<IPAddress>,
}

impl AddressApi {
    /// Handle on the cluster-scoped IPAddress resource.
    pub fn new(client: Client) -> Self {
        AddressApi {
            api: Api::all(client),
        }
    }

    /// The raw API.
    pub fn api(&self) -> &Api<IPAddress> {
        &self.api
    }

    /// Creates the IPAddress of `ip` for `parent`, or returns what the existing one says.
    pub async fn create(&self, ip: IpAddr, parent: &ServiceRef) -> Result<Created<IpClaimInfo>> {
        let obj = address_object(ip, parent);
        let name = ip.to_string();
        for _ in 0..3 {
            match self.api.create(&PostParams::default(), &obj).await {
                Ok(a) => return Ok(Created::New(held(&a)?)),
                Err(e) if is_code(&e, 409) => {
                    if let Some(existing) = self.api.get_opt(&name).await? {
                        return Ok(Created::Existing(held(&existing)?));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(crate::Error::Retry(format!("IPAddress {name} flapping")))
    }

    /// The IPAddress of `ip`, if any.
    pub async fn get(&self, ip: IpAddr) -> Result<Option<IPAddress>> {
        Ok(self.api.get_opt(&ip.to_string()).await?)
    }

    /// Deletes `a` if it is still the version read.
    pub async fn delete_if_unchanged(&self, a: &IPAddress) -> Result<()> {
        crate::ipam::claims::delete_if_unchanged(&self.api, a).await
    }
}

fn held(a: &IPAddress) -> Result<IpClaimInfo> {
    info_of(a).map(|(_, i)| i).ok_or_else(|| {
        crate::Error::Retry(format!(
            "IPAddress {} does not name an address",
            a.name_any()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> ServiceRef {
        ServiceRef {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn our_objects_round_trip_with_the_services_uid() {
        let ip: IpAddr = "2001:db8::a".parse().unwrap();
        let a = address_object(ip, &parent());
        assert_eq!(a.name_any(), "2001:db8::a");
        assert_eq!(a.labels()[IP_FAMILY_LABEL], "IPv6");
        let p = &a.spec.as_ref().unwrap().parent_ref;
        assert_eq!((p.resource.as_str(), p.name.as_str()), ("services", "web"));
        let (got, info) = info_of(&a).unwrap();
        assert_eq!(got, ip);
        assert_eq!(info.parents, vec![parent()]);
        assert_eq!(info.ledger.address, Some(AddressManager::Ours));
        assert!(info.held_by("ns", "web", "u1"));
        // A recreated Service of the same name is not the holder.
        assert!(!info.held_by("ns", "web", "u2"));
    }

    #[test]
    fn other_allocators_objects_hold_by_name_only() {
        let mut a = address_object("10.96.0.7".parse().unwrap(), &parent());
        a.labels_mut()
            .insert(MANAGED_BY_LABEL.into(), "ipallocator.k8s.io".into());
        let (_, info) = info_of(&a).unwrap();
        assert_eq!(info.ledger.address, Some(AddressManager::Other));
        assert!(info.parents[0].uid.is_empty());
        assert!(info.held_by("ns", "web", "any-uid"));
        assert!(!info.held_by("ns", "other", "any-uid"));
        // Parent is not a Service: held, by nobody we know.
        a.spec.as_mut().unwrap().parent_ref.resource = "gateways".into();
        let (_, info) = info_of(&a).unwrap();
        assert!(info.parents.is_empty());
        // Not an address.
        a.metadata.name = Some("nope".into());
        assert!(info_of(&a).is_none());
    }
}
