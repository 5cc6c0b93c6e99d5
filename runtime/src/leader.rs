//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! The algorithm is client-go's `leaderelection` with a `LeaseLock`, written with create and
//! update-with-resourceVersion only (our embedded API server refuses server-side apply):
//!
//! * no Lease → create it holding it (AlreadyExists → someone else won the race);
//! * held by us → renew (`renewTime = now`);
//! * held by another identity whose `renewTime + leaseDurationSeconds` has passed → take it over
//!   (`leaseTransitions + 1`);
//! * any `409 Conflict` means another replica wrote first: we are not leader this round.
//!
//! A leader that fails to renew for a whole lease duration steps down by itself (reports `false`)
//! before anyone else can take over, so two replicas never both believe they lead for longer than
//! clock skew allows. Allocation safety does not depend on this anyway: claims are atomic.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

/// Leader-election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name + random suffix).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often to try to acquire / renew.
    pub retry_period: Duration,
}

/// Runs the election forever, publishing whether we lead on `tx`.
pub async fn run(client: Client, cfg: LeaderConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renew: Option<tokio::time::Instant> = None;
    loop {
        let ok = match try_acquire_or_renew(&api, &cfg).await {
            Ok(ok) => ok,
            Err(err) => {
                tracing::warn!(%err, lease = %cfg.name, "lease update failed");
                false
            }
        };
        let now = tokio::time::Instant::now();
        if ok {
            last_renew = Some(now);
        }
        // Keep leading through transient errors until the lease would have expired.
        let leading = last_renew.is_some_and(|t| now.duration_since(t) < cfg.lease_duration);
        tx.send_if_modified(|cur| {
            if *cur != leading {
                tracing::info!(identity = %cfg.identity, leading, "leadership changed");
                *cur = leading;
                true
            } else {
                false
            }
        });
        tokio::time::sleep(cfg.retry_period).await;
    }
}

fn lease_spec(cfg: &LeaderConfig, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15)),
        acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// One round of the election; `Ok(true)` when we hold the lease afterwards.
pub async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaderConfig) -> kube::Result<bool> {
    let existing = api.get_opt(&cfg.name).await?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                ..Default::default()
            },
            spec: Some(lease_spec(cfg, 0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    let new_spec = if holder == cfg.identity {
        lease_spec(cfg, transitions, spec.acquire_time.clone())
    } else {
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
        let expired = match &spec.renew_time {
            Some(MicroTime(t)) => *t + SignedDuration::from_secs(duration) < Timestamp::now(),
            None => true,
        };
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        lease_spec(cfg, transitions + 1, None)
    };
    lease.spec = Some(new_spec);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
