//! The IPAM controller's context: client, configuration, the allocation state, the stores the
//! watches keep, the work queue of Service keys, Event recording, metrics and the claim API.
//! [`crate::ipam::reconcile`] and [`crate::ipam::repair`] work on it; the running controller
//! ([`crate::ipam::controller`]) feeds it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crds::LoadBalancerIPPool;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use runtime::events::EventRecorder;
use runtime::queue::{Backoff, WorkQueue};
use tokio::sync::{Mutex, RwLock};

use crate::ipam::claims::ClaimApi;
use crate::ipam::config::IpamConfig;
use crate::ipam::metrics::IpamMetrics;
use crate::ipam::plan::load_balancer::PoolView;
use crate::ipam::state::AllocState;
use crate::ipam::svc_view::{Family, SvcView};
use crate::Result;

/// Per-key retry backoff: 250 ms doubling to 30 s, retried for as long as the problem lasts
/// (an allocation that cannot be made is retried until the user fixes the Service or the pool).
const RETRY_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    max: Duration::from_secs(30),
    max_retries: u32::MAX,
};

/// Shared state of the IPAM controller.
pub struct Ipam {
    pub(crate) client: Client,
    pub(crate) cfg: IpamConfig,
    pub(crate) families: Vec<Family>,
    pub(crate) state: Mutex<AllocState>,
    pub(crate) services: RwLock<HashMap<String, Arc<Service>>>,
    pub(crate) namespaces: RwLock<HashMap<String, BTreeMap<String, String>>>,
    pub(crate) pools: RwLock<Vec<PoolView>>,
    pub(crate) raw_pools: RwLock<HashMap<String, LoadBalancerIPPool>>,
    /// Service after its last successful reconcile, by UID (the "before" of the next one).
    pub(crate) last: Mutex<HashMap<String, SvcView>>,
    /// UIDs of deleted Services by key, whose claims are released on the key's next reconcile.
    pub(crate) tombstones: Mutex<HashMap<String, Vec<String>>>,
    pub(crate) queue: WorkQueue<String>,
    pub(crate) recorder: EventRecorder,
    pub(crate) metrics: IpamMetrics,
    pub(crate) claims: ClaimApi,
}

impl Ipam {
    /// Builds the controller state (no I/O).
    pub fn new(client: Client, cfg: IpamConfig, metrics: IpamMetrics) -> Result<Arc<Self>> {
        let state = AllocState::new(&cfg)?;
        Ok(Arc::new(Ipam {
            recorder: EventRecorder::new(client.clone(), "svcnet-ipam", cfg.instance.clone()),
            claims: ClaimApi::new(client.clone()),
            families: cfg.families(),
            client,
            cfg,
            state: Mutex::new(state),
            services: RwLock::new(HashMap::new()),
            namespaces: RwLock::new(HashMap::new()),
            pools: RwLock::new(Vec::new()),
            raw_pools: RwLock::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(HashMap::new()),
            queue: WorkQueue::new(RETRY_BACKOFF),
            metrics,
        }))
    }

    pub(crate) fn cidr_of(&self, f: Family) -> Option<String> {
        self.cfg
            .service_cidrs
            .iter()
            .find(|c| crate::ipam::svc_view::family_of(c.network()) == f)
            .map(ToString::to_string)
    }

    pub(crate) async fn tombstone(&self, key: String, uid: Option<String>) {
        if let Some(uid) = uid {
            self.tombstones
                .lock()
                .await
                .entry(key)
                .or_default()
                .push(uid);
        }
    }
}
