//! The IPAM controller's context: client, configuration, the allocation state, the stores the
//! watches keep, the work queue of Service keys, Event recording, metrics and the claim API.
//! [`crate::ipam::reconcile`] and [`crate::ipam::repair`] work on it; the running controller
//! ([`crate::ipam::controller`]) feeds it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use crds::LoadBalancerIPPool;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::Client;
use runtime::events::EventRecorder;
use runtime::queue::{Backoff, WorkQueue};
use tokio::sync::{Mutex, Notify, RwLock};

use crate::ipam::addresses::AddressApi;
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
    /// IPAddress objects (the ClusterIP ledger where the API serves them).
    pub(crate) addresses: AddressApi,
    /// ClusterIPs are recorded as IPAddress objects (decided at start from discovery);
    /// otherwise as ServiceIPClaims.
    pub(crate) use_addresses: AtomicBool,
    /// The ServiceCIDR objects by name (watched only where the API serves them).
    pub(crate) service_cidrs: RwLock<BTreeMap<String, ServiceCIDR>>,
    /// Wakes the ServiceCIDR lifecycle loop.
    pub(crate) cidr_kick: Notify,
    /// The default ServiceCIDR's difference from the flag was reported.
    pub(crate) default_mismatch_logged: AtomicBool,
}

impl Ipam {
    /// Builds the controller state (no I/O).
    pub fn new(client: Client, cfg: IpamConfig, metrics: IpamMetrics) -> Result<Arc<Self>> {
        let state = AllocState::new(&cfg)?;
        Ok(Arc::new(Ipam {
            recorder: EventRecorder::new(client.clone(), "svcnet-ipam", cfg.instance.clone()),
            claims: ClaimApi::new(client.clone()),
            addresses: AddressApi::new(client.clone()),
            use_addresses: AtomicBool::new(false),
            service_cidrs: RwLock::new(BTreeMap::new()),
            cidr_kick: Notify::new(),
            default_mismatch_logged: AtomicBool::new(false),
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

    /// Whether ClusterIPs are recorded as IPAddress objects.
    pub(crate) fn uses_addresses(&self) -> bool {
        self.use_addresses.load(Ordering::Relaxed)
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
