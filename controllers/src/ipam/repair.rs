//! The repair loop, and (in `status`) the pool-status / metrics loop.
//!
//! **Leaks.** A claim is leaked when none of its holders exists any more (no Service with the
//! holder's UID). Like upstream's repair controllers, a leaked claim is released only after it
//! was seen leaked on [`IpamConfig::leak_strikes`](super::config::IpamConfig) consecutive runs
//! *and* is at least [`leak_grace`](super::config::IpamConfig) old, and only after the holders
//! are re-read from the API (the cache may lag) — see [`holding`].
//!
//! **Claims of live Services are never repair's to release.** A claim whose holder is a live
//! Service that does not reference the value ([`Holding::Pending`]) is exactly what a reconcile
//! looks like between "claim created" and "Service written" — in this replica or in another one
//! (leader hand-over, a conflict retry, a restart that reuses the claim). Nothing orders that
//! Service write after a repair's delete: repair reading the Service, then the write landing,
//! then repair deleting the claim, leaves the Service using a value with no claim, which the next
//! allocation hands out again — a duplicate. So such claims are left to the holder's own
//! reconcile, which reuses them (its write did not land) or releases them after confirming the
//! Service's current version against the API (ClusterIPs are immutable once written, so no
//! writer can still put a released address into that Service: its write would carry an older
//! resourceVersion and fail). The repair loop re-queues every Service each run, so such a
//! reconcile follows within one interval.
//!
//! **Duplicates / adoption.** Every run also re-queues every Service: a Service whose address has
//! no claim gets one (adoption after a restart, or of values a real apiserver allocated), and a
//! Service whose address is claimed by another gets a `ClusterIPAlreadyAllocated` /
//! `PortAlreadyAllocated` Event.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crds::{IpPurpose, NodePortClaim, ServiceIPClaim, ServiceRef};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Resource};

use crate::ipam::addresses::info_of;
use crate::ipam::context::Ipam;
use crate::ipam::state::AddressManager;
use crate::ipam::svc_view::SvcView;

mod status;

pub use status::{conditions, pool_status, status_loop};

/// A claimed value, for leak detection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// An IP claim.
    Ip(IpAddr),
    /// A node-port claim.
    Port(u16),
}

/// Whether Service `v` references `value`.
pub fn references(v: &SvcView, value: &Value) -> bool {
    match value {
        Value::Ip(ip) => v
            .cluster_ips
            .iter()
            .chain(v.lb_ingress_ips.iter())
            .any(|s| s.parse::<IpAddr>().ok() == Some(*ip)),
        Value::Port(p) => {
            let p = i32::from(*p);
            v.ports.iter().any(|x| x.node_port == p) || v.health_check_node_port == p
        }
    }
}

/// Live Services by UID. `None`: the Service exists but its spec is not understood (it still
/// counts as a live holder).
pub type LiveServices = HashMap<String, Option<SvcView>>;

/// How a claim relates to its holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// A live holder references the value.
    InUse,
    /// A holder is a live Service that does not reference the value (yet): a reconcile may be
    /// between creating the claim and writing the Service. Only that Service's reconcile may
    /// reuse or release it; repair leaves it alone.
    Pending,
    /// No holder exists any more.
    Leaked,
}

/// Classifies a claim on `value` held by `parents`, given the live Services.
pub fn holding(value: &Value, parents: &[ServiceRef], live: &LiveServices) -> Holding {
    let mut pending = false;
    for p in parents {
        match live.get(&p.uid) {
            Some(Some(v)) if references(v, value) => return Holding::InUse,
            Some(_) => pending = true,
            None => {}
        }
    }
    if pending {
        Holding::Pending
    } else {
        Holding::Leaked
    }
}

/// Whether a claim on `value` held by `parents` is leaked (no holder is alive).
pub fn is_leaked(value: &Value, parents: &[ServiceRef], live: &LiveServices) -> bool {
    holding(value, parents, live) == Holding::Leaked
}

/// Leak bookkeeping for one run: returns the values to release now. `strikes` carries the
/// consecutive detection counts between runs (values no longer leaked are dropped from it).
pub fn leak_decisions(
    claims: &[(Value, Vec<ServiceRef>, Option<Timestamp>)],
    live: &LiveServices,
    strikes: &mut HashMap<Value, u32>,
    needed_strikes: u32,
    grace: Duration,
    now: Timestamp,
) -> Vec<Value> {
    let mut seen = HashMap::new();
    let mut release = Vec::new();
    for (value, parents, created) in claims {
        if !is_leaked(value, parents, live) {
            continue;
        }
        let n = strikes.get(value).copied().unwrap_or(0) + 1;
        seen.insert(value.clone(), n);
        let old_enough = created.is_none_or(|c| {
            now.duration_since(c)
                .try_into()
                .is_ok_and(|d: Duration| d >= grace)
        });
        if n >= needed_strikes && old_enough {
            release.push(value.clone());
        }
    }
    *strikes = seen;
    release
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Runs leak repair every `repair_interval` and re-queues every Service.
pub async fn repair_loop(ipam: Arc<Ipam>) {
    let mut strikes: HashMap<Value, u32> = HashMap::new();
    let mut tick = tokio::time::interval(ipam.cfg.repair_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let live: LiveServices = ipam
            .services
            .read()
            .await
            .values()
            .filter_map(|s| {
                let uid = s.metadata.uid.clone()?;
                Some((uid, SvcView::from_service(s)))
            })
            .collect();
        let claims: Vec<(Value, Vec<ServiceRef>, Option<Timestamp>)> = {
            let st = ipam.state.lock().await;
            // Another allocator's IPAddresses are that allocator's to repair.
            st.all_ips()
                .filter(|(_, i)| i.ledger.address != Some(AddressManager::Other))
                .map(|(ip, i)| (Value::Ip(*ip), i.parents.clone(), i.created))
                .chain(
                    st.all_ports()
                        .map(|(p, i)| (Value::Port(*p), vec![i.parent.clone()], i.created)),
                )
                .collect()
        };
        let release = leak_decisions(
            &claims,
            &live,
            &mut strikes,
            ipam.cfg.leak_strikes,
            ipam.cfg.leak_grace,
            now(),
        );
        for value in release {
            if let Err(err) = release_leak(&ipam, &value).await {
                tracing::warn!(%err, ?value, "failed to release leaked claim");
            } else {
                strikes.remove(&value);
            }
        }
        let keys: Vec<String> = ipam.services.read().await.keys().cloned().collect();
        for k in keys {
            ipam.queue.add(k).await;
        }
    }
}

/// Live holders as the API sees them now (not the cache, which may lag behind the API).
async fn live_parents(ipam: &Ipam, parents: &[ServiceRef]) -> crate::Result<LiveServices> {
    let mut out = HashMap::new();
    for p in parents {
        let api: Api<Service> = Api::namespaced(ipam.client.clone(), &p.namespace);
        if let Some(svc) = api.get_opt(&p.name).await? {
            if let Some(uid) = svc.metadata.uid.clone() {
                out.insert(uid, SvcView::from_service(&svc));
            }
        }
    }
    Ok(out)
}

fn holders_text(parents: &[ServiceRef]) -> String {
    let v: Vec<String> = parents
        .iter()
        .map(|p| format!("{}/{} (uid {})", p.namespace, p.name, p.uid))
        .collect();
    v.join(", ")
}

async fn release_leak(ipam: &Ipam, value: &Value) -> crate::Result<()> {
    // Re-read the claim and its holders from the API, re-check, then delete with the claim's
    // resourceVersion as precondition.
    match value {
        Value::Ip(ip)
            if ipam
                .state
                .lock()
                .await
                .ip(*ip)
                .is_some_and(|i| i.ledger.address == Some(AddressManager::Ours)) =>
        {
            let Some(a) = ipam.addresses.get(*ip).await? else {
                ipam.state.lock().await.remove_address(*ip);
                return Ok(());
            };
            let Some((_, info)) = info_of(&a) else {
                return Ok(());
            };
            let live = live_parents(ipam, &info.parents).await?;
            if !is_leaked(value, &info.parents, &live) {
                return Ok(());
            }
            ipam.addresses.delete_if_unchanged(&a).await?;
            ipam.state.lock().await.remove_address(*ip);
            report(
                ipam,
                a.object_ref(&()),
                &format!(
                    "ClusterIP {ip} appears to have leaked (none of its holders exists: {}): cleaning up",
                    holders_text(&info.parents)
                ),
            )
            .await;
        }
        Value::Ip(ip) => {
            let Some(claim) = ipam
                .claims
                .ip_api()
                .get_opt(&ServiceIPClaim::name_for(*ip))
                .await?
            else {
                ipam.state.lock().await.remove_ip_claim(*ip);
                return Ok(());
            };
            let live = live_parents(ipam, &claim.spec.parent_refs).await?;
            if !is_leaked(value, &claim.spec.parent_refs, &live) {
                return Ok(());
            }
            ipam.claims.delete_ip_if_unchanged(&claim).await?;
            ipam.state.lock().await.remove_ip_claim(*ip);
            let kind = match claim.spec.purpose {
                IpPurpose::ClusterIP => "ClusterIP",
                IpPurpose::LoadBalancer => "LoadBalancer IP",
            };
            report(
                ipam,
                claim.object_ref(&()),
                &format!(
                    "{kind} {ip} appears to have leaked (none of its holders exists: {}): cleaning up",
                    holders_text(&claim.spec.parent_refs)
                ),
            )
            .await;
        }
        Value::Port(p) => {
            let Some(claim) = ipam
                .claims
                .port_api()
                .get_opt(&NodePortClaim::name_for(*p))
                .await?
            else {
                ipam.state.lock().await.remove_port(*p);
                return Ok(());
            };
            let parents = std::slice::from_ref(&claim.spec.parent_ref);
            let live = live_parents(ipam, parents).await?;
            if !is_leaked(value, parents, &live) {
                return Ok(());
            }
            ipam.claims.delete_port_if_unchanged(&claim).await?;
            ipam.state.lock().await.remove_port(*p);
            report(
                ipam,
                claim.object_ref(&()),
                &format!(
                    "node port {p} appears to have leaked (none of its holders exists: {}): cleaning up",
                    holders_text(parents)
                ),
            )
            .await;
        }
    }
    ipam.metrics.leaks_released.inc();
    Ok(())
}

async fn report(ipam: &Ipam, obj: ObjectReference, msg: &str) {
    tracing::info!(msg, "repair");
    ipam.recorder.warning(&obj, "ClaimLeaked", msg).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::svc_view::fixtures::svc;
    use crate::ipam::svc_view::SvcType;

    fn r(uid: &str) -> ServiceRef {
        ServiceRef {
            namespace: "default".into(),
            name: uid.into(),
            uid: format!("uid-{uid}"),
        }
    }

    fn live_of(views: Vec<SvcView>) -> LiveServices {
        views
            .into_iter()
            .map(|v| (v.uid.clone(), Some(v)))
            .collect()
    }

    #[test]
    fn leak_needs_three_strikes_and_grace() {
        let ip = Value::Ip("10.0.0.10".parse().unwrap());
        let port = Value::Port(30080);
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let live = live_of(vec![svc("a")
            .ips(&["10.0.0.10"])
            .typ(SvcType::NodePort)
            .port(80, "TCP", 30080)]);
        // Held by a live Service that references them: never leaked.
        let claims = vec![
            (ip.clone(), vec![r("a")], Some(t0)),
            (port.clone(), vec![r("a")], Some(t0)),
        ];
        let mut strikes = HashMap::new();
        for _ in 0..5 {
            let out = leak_decisions(&claims, &live, &mut strikes, 3, Duration::from_secs(60), t0);
            assert!(out.is_empty());
        }
        // Held by a Service that is gone (upstream TestRepairLeak: freed on the 3rd run).
        let leaked = vec![(
            Value::Ip("10.0.0.11".parse().unwrap()),
            vec![r("gone")],
            Some(t0),
        )];
        let later = Timestamp::from_second(1_000_100).unwrap();
        let mut strikes = HashMap::new();
        let grace = Duration::from_secs(60);
        assert!(leak_decisions(&leaked, &live, &mut strikes, 3, grace, later).is_empty());
        assert!(leak_decisions(&leaked, &live, &mut strikes, 3, grace, later).is_empty());
        assert_eq!(
            leak_decisions(&leaked, &live, &mut strikes, 3, grace, later).len(),
            1
        );
        // Young claims wait for the grace period even after enough strikes.
        let young = vec![(Value::Port(30001), vec![r("gone")], Some(t0))];
        let mut strikes = HashMap::new();
        for _ in 0..5 {
            assert!(leak_decisions(&young, &live, &mut strikes, 3, grace, t0).is_empty());
        }
        // Shared LB address: leaked only when no holder exists.
        let mut lb = svc("b");
        lb.lb_ingress_ips = vec!["192.0.2.1".into()];
        let live2 = live_of(vec![lb]);
        let shared = Value::Ip("192.0.2.1".parse().unwrap());
        assert!(!is_leaked(&shared, &[r("gone"), r("b")], &live2));
        assert!(is_leaked(&shared, &[r("gone")], &live2));
    }

    /// The race behind a duplicate ClusterIP seen once in `two_controllers_at_once_never_duplicate`:
    /// a reconcile creates the claim, then writes the Service; repair (in this or another
    /// replica) saw the live Service without the value, deleted the claim, and the write landed
    /// afterwards — a Service using an address with no claim, handed out again. A claim whose
    /// holder is alive is therefore never released by repair, however old and however many
    /// runs saw it unreferenced.
    #[test]
    fn claims_of_live_holders_are_never_released_by_repair() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let much_later = Timestamp::from_second(2_000_000).unwrap();
        // "a" lives but its spec does not (yet) carry the values it holds claims for.
        let mut views = live_of(vec![svc("a")]);
        // A live Service whose spec we do not understand is alive all the same.
        views.insert("uid-odd".into(), None);
        let pending = vec![
            (
                Value::Ip("10.0.0.12".parse().unwrap()),
                vec![r("a")],
                Some(t0),
            ),
            (Value::Port(30002), vec![r("a")], Some(t0)),
            (Value::Port(30003), vec![r("odd")], Some(t0)),
        ];
        for (value, parents, _) in &pending {
            assert_eq!(holding(value, parents, &views), Holding::Pending);
        }
        let mut strikes = HashMap::new();
        for _ in 0..10 {
            assert!(leak_decisions(
                &pending,
                &views,
                &mut strikes,
                3,
                Duration::ZERO,
                much_later
            )
            .is_empty());
        }
        assert!(strikes.is_empty(), "pending claims collect no strikes");
        // Once the holder is gone, the same claims leak (and are released on the 3rd run).
        let none = LiveServices::new();
        let mut released = 0;
        for _ in 0..3 {
            released +=
                leak_decisions(&pending, &none, &mut strikes, 3, Duration::ZERO, much_later).len();
        }
        assert_eq!(released, 3);
        // Shared address with a gone holder and a live one that does not reference it: pending.
        let shared = Value::Ip("192.0.2.9".parse().unwrap());
        assert_eq!(
            holding(&shared, &[r("gone"), r("a")], &views),
            Holding::Pending
        );
    }
}
