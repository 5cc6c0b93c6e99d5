//! The Leases of L2 announcement: one heartbeat Lease per node (`svcnet-l2-node-<node>`, renewed
//! every renew interval while the node's proxy is healthy) and one Lease per announced address
//! (`svcnet-l2-<address>`, naming the node that answers for it). Both carry the label
//! [`KIND_LABEL`] so that one watch sees them all.
//!
//! Writes are create or update-with-resourceVersion: a `409 Conflict` means another node wrote
//! first and this node lost that round, exactly as in client-go's Lease lock.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::Api;

use crds::ServiceIPClaim;
use sha2::{Digest, Sha256};

use crds::l2::ADDRESS_LEASE_PREFIX as ADDRESS_PREFIX;
pub use crds::l2::{address_lease_name, LEASE_KIND_LABEL as KIND_LABEL};

const NODE_PREFIX: &str = "svcnet-l2-node-";
/// Object names are at most 253 characters.
const MAX_NAME: usize = 253;

/// What a Lease is, from its name and label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeaseKind {
    /// A node's heartbeat; the node is the holder.
    Node,
    /// The holder of an address.
    Address(IpAddr),
}

/// The heartbeat Lease name of `node` (hashed when the node name is too long for a suffix).
pub fn node_lease_name(node: &str) -> String {
    let name = format!("{NODE_PREFIX}{node}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = Sha256::digest(node.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{NODE_PREFIX}{hex}")
}

/// Classifies a watched Lease; `None` for Leases that are not ours.
pub fn kind(lease: &Lease) -> Option<LeaseKind> {
    let labels = lease.metadata.labels.as_ref()?;
    let name = lease.metadata.name.as_deref()?;
    match labels.get(KIND_LABEL).map(String::as_str) {
        Some("node") => Some(LeaseKind::Node),
        Some("address") => name
            .strip_prefix(ADDRESS_PREFIX)
            .and_then(ServiceIPClaim::ip_from_name)
            .map(LeaseKind::Address),
        _ => None,
    }
}

/// The holder of a Lease (`None` when released).
pub fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

/// What changes on every renewal: the observation marker of a heartbeat.
pub fn renew_marker(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// Whether `newer` is at least as recent as `older` (resourceVersions compared as numbers when
/// both are numbers, as they are on etcd; otherwise the newer-arriving one wins).
pub fn not_older(newer: &Lease, older: &Lease) -> bool {
    let rv = |l: &Lease| {
        l.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (rv(newer), rv(older)) {
        (Some(a), Some(b)) => a >= b,
        _ => true,
    }
}

fn seconds(d: Duration) -> i32 {
    // The API counts whole seconds; a sub-second duration is written as 1 s. Speakers judge
    // expiry with their own (shared) configured duration, not this field.
    i32::try_from(d.as_secs_f64().ceil() as u64)
        .unwrap_or(i32::MAX)
        .max(1)
}

fn new_lease(name: String, kind: &str, holder: &str, duration: Duration) -> Lease {
    let now = MicroTime(Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some([(KIND_LABEL.to_string(), kind.to_string())].into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(seconds(duration)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    }
}

/// The outcome of a conditional write.
#[derive(Debug)]
pub enum Written {
    /// Written; the object as stored.
    Ok(Box<Lease>),
    /// Another writer was first (409), or the object is gone (404): re-read and decide again.
    Lost,
}

fn outcome(r: kube::Result<Lease>) -> kube::Result<Written> {
    match r {
        Ok(l) => Ok(Written::Ok(Box::new(l))),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Written::Lost),
        Err(e) => Err(e),
    }
}

/// Lease writes in one namespace.
#[derive(Clone)]
pub struct LeaseIo {
    api: Api<Lease>,
    duration: Duration,
}

impl LeaseIo {
    /// Writes Leases through `api` (namespaced) with `duration` as `leaseDurationSeconds`.
    pub fn new(api: Api<Lease>, duration: Duration) -> LeaseIo {
        LeaseIo { api, duration }
    }

    /// Creates or renews `node`'s heartbeat; `current` is the last known object.
    pub async fn heartbeat(&self, node: &str, current: Option<&Lease>) -> kube::Result<Written> {
        let Some(cur) = current else {
            let lease = new_lease(node_lease_name(node), "node", node, self.duration);
            return outcome(self.api.create(&PostParams::default(), &lease).await);
        };
        let mut lease = cur.clone();
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(node.to_string());
        spec.lease_duration_seconds = Some(seconds(self.duration));
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.replace(lease).await
    }

    /// Reads a Lease by name (after a lost write).
    pub async fn get(&self, name: &str) -> kube::Result<Option<Lease>> {
        self.api.get_opt(name).await
    }

    /// Makes `me` the holder of `ip`'s Lease (`current`: the Lease as last seen, if any).
    pub async fn acquire(
        &self,
        ip: IpAddr,
        me: &str,
        current: Option<&Lease>,
    ) -> kube::Result<Written> {
        let Some(cur) = current else {
            let lease = new_lease(address_lease_name(ip), "address", me, self.duration);
            return outcome(self.api.create(&PostParams::default(), &lease).await);
        };
        let mut lease = cur.clone();
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(me.to_string());
        spec.lease_duration_seconds = Some(seconds(self.duration));
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        self.replace(lease).await
    }

    /// Clears the holder of a Lease this node holds.
    pub async fn release(&self, current: &Lease) -> kube::Result<Written> {
        let mut lease = current.clone();
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.replace(lease).await
    }

    /// Deletes a Lease if it is still the version seen.
    pub async fn delete(&self, current: &Lease) -> kube::Result<Written> {
        let Some(name) = current.metadata.name.as_deref() else {
            return Ok(Written::Lost);
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: current.metadata.uid.clone(),
            }),
            ..Default::default()
        };
        match self.api.delete(name, &dp).await {
            Ok(_) => Ok(Written::Ok(Box::new(current.clone()))),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Written::Lost),
            Err(e) => Err(e),
        }
    }

    async fn replace(&self, lease: Lease) -> kube::Result<Written> {
        let Some(name) = lease.metadata.name.clone() else {
            return Ok(Written::Lost);
        };
        outcome(
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_valid() {
        let ip: IpAddr = "2001:db8::10".parse().unwrap();
        let l = new_lease(
            address_lease_name(ip),
            "address",
            "n1",
            Duration::from_millis(1500),
        );
        assert_eq!(kind(&l), Some(LeaseKind::Address(ip)));
        assert_eq!(l.spec.as_ref().unwrap().lease_duration_seconds, Some(2));
        let n = new_lease(
            node_lease_name("n1"),
            "node",
            "n1",
            Duration::from_millis(300),
        );
        assert_eq!(kind(&n), Some(LeaseKind::Node));
        assert_eq!(n.spec.as_ref().unwrap().lease_duration_seconds, Some(1));
        assert_eq!(holder(&n).as_deref(), Some("n1"));
        let long = "x".repeat(250);
        assert!(node_lease_name(&long).len() <= MAX_NAME);
        assert_ne!(node_lease_name(&long), node_lease_name(&"y".repeat(250)));
        let mut foreign = l.clone();
        foreign.metadata.labels = None;
        assert_eq!(kind(&foreign), None);
    }

    #[test]
    fn resource_versions_order_numerically() {
        let mut a = new_lease("a".into(), "node", "n", Duration::from_secs(1));
        let mut b = a.clone();
        a.metadata.resource_version = Some("10".into());
        b.metadata.resource_version = Some("9".into());
        assert!(not_older(&a, &b));
        assert!(!not_older(&b, &a));
    }
}
