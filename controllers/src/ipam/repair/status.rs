//! The pool-status / metrics loop: range and pool gauges, and each pool's `status` (size,
//! used, free, conditions) written when it changed.

use std::sync::Arc;
use std::time::Duration;

use crds::{Condition, LoadBalancerIPPool, LoadBalancerIPPoolStatus};
use kube::api::{Patch, PatchParams};
use kube::Api;

use super::now;
use crate::ipam::context::Ipam;
use crate::ipam::plan::load_balancer::{overlaps, overlaps_net, PoolView};

/// Condition types on pools.
pub mod conditions {
    /// The pool parses and serves addresses.
    pub const READY: &str = "Ready";
    /// The pool overlaps another pool or the Service CIDR.
    pub const OVERLAP: &str = "Overlap";
    /// No free address is left.
    pub const EXHAUSTED: &str = "Exhausted";
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    prev: Option<&LoadBalancerIPPoolStatus>,
    now: &str,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    // Keep the transition time while the status does not change.
    let last = prev
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time: Some(last),
        observed_generation: generation,
    }
}

/// The status a pool should have.
pub fn pool_status(
    pool: &PoolView,
    used: u64,
    overlapping: &[String],
    overlaps_service_cidr: bool,
    prev: Option<&LoadBalancerIPPoolStatus>,
    now: &str,
) -> LoadBalancerIPPoolStatus {
    let size = i64::try_from(pool.size()).unwrap_or(i64::MAX);
    let used = i64::try_from(used).unwrap_or(i64::MAX);
    let g = pool.generation;
    let ready = if !pool.errors.is_empty() {
        cond(
            conditions::READY,
            false,
            "InvalidRange",
            pool.errors.join("; "),
            g,
            prev,
            now,
        )
    } else if pool.spec.disabled {
        cond(
            conditions::READY,
            false,
            "Disabled",
            "the pool is disabled; assigned addresses stay assigned".into(),
            g,
            prev,
            now,
        )
    } else if size == 0 {
        cond(
            conditions::READY,
            false,
            "Empty",
            "the pool has no addresses".into(),
            g,
            prev,
            now,
        )
    } else {
        cond(
            conditions::READY,
            true,
            "Valid",
            "the pool serves addresses".into(),
            g,
            prev,
            now,
        )
    };
    let mut what: Vec<String> = overlapping.iter().map(|p| format!("pool {p}")).collect();
    if overlaps_service_cidr {
        what.push("the Service CIDR".to_string());
    }
    let overlap = if what.is_empty() {
        cond(
            conditions::OVERLAP,
            false,
            "NoOverlap",
            String::new(),
            g,
            prev,
            now,
        )
    } else {
        cond(
            conditions::OVERLAP,
            true,
            "Overlapping",
            format!("addresses overlap with {}; an address is never handed out twice, but pools compete for it", what.join(", ")),
            g,
            prev,
            now,
        )
    };
    let exhausted = cond(
        conditions::EXHAUSTED,
        size > 0 && used >= size,
        if size > 0 && used >= size {
            "NoFreeAddresses"
        } else {
            "FreeAddresses"
        },
        format!("{used} of {size} addresses in use"),
        g,
        prev,
        now,
    );
    LoadBalancerIPPoolStatus {
        size,
        used,
        free: (size - used).max(0),
        observed_generation: g,
        conditions: vec![ready, overlap, exhausted],
    }
}

/// Every few seconds: range / pool metrics, and pool status written when it changed.
pub async fn status_loop(ipam: Arc<Ipam>) {
    let period = ipam.cfg.repair_interval.min(Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let api: Api<LoadBalancerIPPool> = Api::all(ipam.client.clone());
    loop {
        tick.tick().await;
        let pools = ipam.pools.read().await.clone();
        let used: Vec<u64> = {
            let st = ipam.state.lock().await;
            for r in st.ranges().iter() {
                ipam.metrics
                    .set_range("cluster_ip", &r.cidr().to_string(), r.size(), r.used());
            }
            let pr = st.port_range();
            ipam.metrics.set_range(
                "node_port",
                &format!("{}-{}", pr.first(), pr.last()),
                pr.size(),
                pr.used(),
            );
            pools.iter().map(|p| st.pool_used(&p.name)).collect()
        };
        let pairs = overlaps(&pools);
        let raw = ipam.raw_pools.read().await.clone();
        let stamp = now().to_string();
        for (pool, used) in pools.iter().zip(used) {
            ipam.metrics.set_range(
                "load_balancer",
                &pool.name,
                u64::try_from(pool.size()).unwrap_or(u64::MAX),
                used,
            );
            let others: Vec<String> = pairs
                .iter()
                .filter_map(|(a, b)| {
                    if *a == pool.name {
                        Some(b.clone())
                    } else if *b == pool.name {
                        Some(a.clone())
                    } else {
                        None
                    }
                })
                .collect();
            let cidr_overlap = ipam.cfg.service_cidrs.iter().any(|c| overlaps_net(pool, c));
            let prev = raw.get(&pool.name).and_then(|p| p.status.clone());
            let want = pool_status(pool, used, &others, cidr_overlap, prev.as_ref(), &stamp);
            if prev.as_ref() != Some(&want) {
                let patch = serde_json::json!({ "status": want });
                if let Err(err) = api
                    .patch_status(&pool.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(%err, pool = %pool.name, "failed to write pool status");
                } else if let Some(p) = ipam.raw_pools.write().await.get_mut(&pool.name) {
                    p.status = Some(want);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::LoadBalancerIPPoolSpec;

    #[test]
    fn pool_status_conditions() {
        let mut raw = LoadBalancerIPPool::new(
            "p",
            LoadBalancerIPPoolSpec {
                cidrs: vec!["192.0.2.0/30".into()],
                ..Default::default()
            },
        );
        let view = PoolView::from_pool(&raw);
        let st = pool_status(&view, 4, &["q".into()], false, None, "t1");
        assert_eq!((st.size, st.used, st.free), (4, 4, 0));
        let by = |t: &str| st.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(by(conditions::READY).status, "True");
        assert_eq!(by(conditions::OVERLAP).status, "True");
        assert!(by(conditions::OVERLAP).message.contains("pool q"));
        assert_eq!(by(conditions::EXHAUSTED).status, "True");
        // Unchanged status keeps its transition time; a change takes the new time.
        let st2 = pool_status(&view, 1, &["q".into()], false, Some(&st), "t2");
        let c = |s: &LoadBalancerIPPoolStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).unwrap().clone()
        };
        assert_eq!(
            c(&st2, conditions::READY).last_transition_time.as_deref(),
            Some("t1")
        );
        assert_eq!(
            c(&st2, conditions::EXHAUSTED)
                .last_transition_time
                .as_deref(),
            Some("t2")
        );
        // Broken entries make the pool not Ready.
        raw.spec.cidrs.push("garbage".into());
        let st3 = pool_status(&PoolView::from_pool(&raw), 0, &[], true, None, "t3");
        assert_eq!(c(&st3, conditions::READY).status, "False");
        assert_eq!(c(&st3, conditions::READY).reason, "InvalidRange");
        assert!(c(&st3, conditions::OVERLAP)
            .message
            .contains("Service CIDR"));
    }

    #[test]
    fn huge_pools_report_a_saturated_size() {
        // 2^32 + 2^128 addresses: the size saturates and free is computed without overflow.
        let raw = LoadBalancerIPPool::new(
            "huge",
            LoadBalancerIPPoolSpec {
                cidrs: vec!["0.0.0.0/0".into(), "::/0".into()],
                ..Default::default()
            },
        );
        let view = PoolView::from_pool(&raw);
        assert_eq!(view.size(), u128::MAX);
        let st = pool_status(&view, 3, &[], false, None, "t");
        assert_eq!((st.size, st.used, st.free), (i64::MAX, 3, i64::MAX - 3));
        let by = |s: &LoadBalancerIPPoolStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).unwrap().clone()
        };
        assert_eq!(by(&st, conditions::READY).status, "True");
        assert_eq!(by(&st, conditions::EXHAUSTED).status, "False");
        // A used count past i64 clamps too, and free never goes negative.
        let st = pool_status(&view, u64::MAX, &[], false, None, "t");
        assert_eq!((st.size, st.used, st.free), (i64::MAX, i64::MAX, 0));
        let small = PoolView::from_pool(&LoadBalancerIPPool::new(
            "small",
            LoadBalancerIPPoolSpec {
                cidrs: vec!["192.0.2.0/31".into()],
                ..Default::default()
            },
        ));
        assert_eq!(pool_status(&small, 5, &[], false, None, "t").free, 0);
    }
}
