//! The ServiceCIDR side of `svcnet-proxy run` (I/O): API discovery decides whether the API
//! serves `networking.k8s.io/v1` ServiceCIDRs; if it does, one watch of them (the only one in
//! the process) folds their `spec.cidrs` into the [`Tracker`]'s [`ServiceCidrSource`], and every
//! change wakes the sync loop. What counts, and why the flag is then unused, is in
//! [`crate::watch::service_cidrs`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::watch::convert;
use crate::watch::service_cidrs::ServiceCidrSource;
use crate::watch::tracker::Tracker;

/// The group version that serves ServiceCIDRs.
pub const GROUP_VERSION: &str = "networking.k8s.io/v1";
/// Their resource name in discovery.
pub const RESOURCE: &str = "servicecidrs";

/// Whether the API serves ServiceCIDRs, from the discovery document of `networking.k8s.io/v1`
/// (a server without that group version answers 404, which means no).
pub async fn served(client: &Client) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == RESOURCE)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a watch error is the API refusing this proxy the list or watch (403).
/// Switches the tracker to `--service-cluster-ip-range` and asks for a sync.
async fn use_flag(tracker: &Mutex<Tracker>, changed: &(impl Fn() + Send + Sync)) {
    let mut t = tracker.lock().await;
    t.service_cidrs = ServiceCidrSource::Flag;
    t.service_cidrs_changed = true;
    drop(t);
    changed();
}

fn forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 403,
        watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    }
}

/// Asks discovery until it answers (the proxy syncs nothing before: the Service CIDRs are not
/// known), then either settles on the flag or follows the ServiceCIDR objects for the life of
/// the process. `changed` wakes the sync loop; `flag` is `--service-cluster-ip-range`.
pub async fn follow(
    client: Client,
    tracker: Arc<Mutex<Tracker>>,
    flag: Vec<IpNet>,
    changed: impl Fn() + Send + Sync + 'static,
) {
    let mut delay = Duration::from_millis(500);
    let served = loop {
        match served(&client).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "API discovery of {GROUP_VERSION} failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    if !served {
        tracing::info!(
            cidrs = ?flag,
            "the API does not serve {GROUP_VERSION} {RESOURCE}: Service CIDRs from --service-cluster-ip-range"
        );
        use_flag(&tracker, &changed).await;
        return;
    }
    if flag.is_empty() {
        tracing::info!("Service CIDRs from the API's ServiceCIDR objects");
    } else {
        tracing::warn!(
            ignored = ?flag,
            "Service CIDRs from the API's ServiceCIDR objects; --service-cluster-ip-range is not used"
        );
    }
    tracker.lock().await.service_cidrs = ServiceCidrSource::objects();
    watch(Api::all(client), tracker, changed).await;
}

/// Folds ServiceCIDR watch events into the tracker. Only names and `spec.cidrs` are used: the
/// rest of each object is dropped as it arrives.
async fn watch(
    api: Api<ServiceCIDR>,
    tracker: Arc<Mutex<Tracker>>,
    changed: impl Fn() + Send + Sync + 'static,
) {
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|sc: &mut ServiceCIDR| {
            sc.metadata.managed_fields = None;
            sc.metadata.annotations = None;
            sc.metadata.labels = None;
            sc.status = None;
        })
        .boxed();
    let mut buffer: Option<BTreeMap<String, Vec<IpNet>>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                let listed = tracker.lock().await.service_cidrs.ready();
                if forbidden(&e) && !listed {
                    // RBAC without servicecidrs (manifests older than this proxy): waiting
                    // would never sync at all; the flag is what such a proxy used before.
                    tracing::error!(
                        error = %e,
                        "not allowed to list {RESOURCE}: Service CIDRs from --service-cluster-ip-range"
                    );
                    use_flag(&tracker, &changed).await;
                    return;
                }
                tracing::warn!(error = %e, "servicecidr watch error");
                continue;
            }
        };
        let mut t = tracker.lock().await;
        let was_ready = t.ready();
        let cidrs_changed = match ev {
            Event::Init => {
                buffer = Some(BTreeMap::new());
                false
            }
            Event::InitApply(sc) => {
                if let (Some(b), Some((name, cidrs))) =
                    (buffer.as_mut(), convert::service_cidr(&sc))
                {
                    b.insert(name, cidrs);
                }
                false
            }
            Event::InitDone => t.service_cidrs.reset(buffer.take().unwrap_or_default()),
            Event::Apply(sc) => match convert::service_cidr(&sc) {
                Some((name, cidrs)) => t.service_cidrs.apply(&name, Some(cidrs)),
                None => false,
            },
            Event::Delete(sc) => match sc.metadata.name.as_deref() {
                Some(name) => t.service_cidrs.apply(name, None),
                None => false,
            },
        };
        if cidrs_changed {
            t.service_cidrs_changed = true;
            tracing::info!(cidrs = ?t.service_cidrs.effective(&[]), "Service CIDRs changed");
        }
        let wake = cidrs_changed || (!was_ready && t.ready());
        drop(t);
        if wake {
            changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_403_counts_as_forbidden() {
        let status = |code| Box::new(kube::core::Status::failure("x", "y").with_code(code));
        assert!(forbidden(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(403))
        )));
        assert!(forbidden(&watcher::Error::WatchError(status(403))));
        assert!(!forbidden(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(500))
        )));
        assert!(!forbidden(&watcher::Error::WatchError(status(410))));
        assert!(!forbidden(&watcher::Error::NoResourceVersion));
    }
}
