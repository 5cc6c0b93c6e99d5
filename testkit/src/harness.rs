//! envtest-style test harness: hands each test a `kube::Client` and a fresh namespace.
//!
//! [`TestEnv::start`] picks the backend from the environment:
//! 1. `E2E_KUBECONFIG=/path` — an existing cluster;
//! 2. `KUBEBUILDER_ASSETS=/dir` (holding `etcd`, `kube-apiserver` and optionally
//!    `kube-controller-manager`) — a real control plane on loopback, like controller-runtime's
//!    envtest. One control plane is started per test process and shared by every [`TestEnv`] in
//!    it (a kube-apiserver takes 10–15 s to start); tests stay apart by namespace. Run such a
//!    suite with one process per test binary (`cargo test`), not one per test;
//! 3. otherwise — the embedded [`apiserver::ApiServer`] (the default, used in CI).
//!
//! Tests must not depend on which one they got. Where behaviour legitimately differs (who
//! allocates ClusterIPs: the real apiserver, or svcnet's IPAM controller on the embedded one),
//! assert the contract (unique, in range), not the mechanism.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::harness::{self, TestEnv};
//! use k8s_openapi::api::core::v1::Pod;
//! use kube::Api;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let env = TestEnv::start().await?;                 // embedded server unless configured otherwise
//! let ns = env.namespace("my-test").await?;          // created now, deleted when dropped
//! let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
//! pods.create(&Default::default(), &harness::pod("web-0", "node-a", &[("app", "web")])).await?;
//! harness::set_pod_ready(&pods, "web-0", "10.1.0.5", true).await?;   // via the status subresource
//! harness::wait_for(&pods, "web-0", Duration::from_secs(10), |p: Option<&Pod>| {
//!     p.is_some_and(harness::pod_is_ready)
//! })
//! .await?;
//! // On panic, `ns` prints the namespace's objects to stderr before deleting it.
//! # Ok(()) }
//! ```
//!
//! Embedded-only test hooks are on [`TestEnv::server`] (`None` for the other backends):
//! `close_all_watches()` (clients re-watch from their last resourceVersion),
//! `expire_watches()` (forget history + close: clients get `410 Expired` and relist),
//! `compact_history()`, `resource_version()`, `watch_count()`, `object_count(..)`.
//!
//! Things worth knowing:
//! * Pods scheduled to a node (`spec.nodeName`, as [`pod`] makes them) are deleted gracefully, as
//!   upstream: they keep a deletionTimestamp for their grace period (default 30 s). Delete with
//!   `gracePeriodSeconds: 0` when a test does not care. On the embedded server the Pod is removed
//!   when the grace period ends (standing in for the kubelet); on a real cluster without kubelets
//!   for those nodes it stays until deleted with grace 0.
//! * Namespace deletion (the guard's drop) is asynchronous; it waits for those grace periods too.
//! * Garbage collection and namespace finalization run on every backend unless the
//!   `KUBEBUILDER_ASSETS` directory lacks `kube-controller-manager` ([`TestEnv::has_controllers`]).
//! * [`TestEnv::server_version`] tells which Kubernetes minor version answers, for the few tests
//!   that gate on it (each says why).
//! * The embedded server never allocates ClusterIPs/NodePorts; svcnet's IPAM controller does.
//! * Set `E2E_KEEP_NAMESPACES=1` to keep test namespaces for inspection.

mod controlplane;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use apiserver::{ApiServer, DumpHandle, ServerConfig};

/// Harness errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded server failed.
    #[error(transparent)]
    Server(#[from] apiserver::Error),
    /// Reading a kubeconfig failed.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    /// Starting the etcd + kube-apiserver control plane failed.
    #[error("control plane: {0}")]
    ControlPlane(String),
    /// A condition was not met in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Filesystem error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

enum Backend {
    Embedded {
        server: ApiServer,
        _dir: tempfile::TempDir,
    },
    ControlPlane {
        plane: std::sync::Arc<controlplane::ControlPlane>,
        controllers: bool,
    },
    External,
}

/// A Kubernetes API endpoint for one test (or one test binary).
pub struct TestEnv {
    backend: Backend,
    client: Client,
    kubeconfig: PathBuf,
}

/// The control plane shared by every [`TestEnv::start`] of this process (`KUBEBUILDER_ASSETS`).
/// A failed start is remembered, so that the other tests fail at once with the same message.
static SHARED_PLANE: tokio::sync::OnceCell<
    Result<std::sync::Arc<controlplane::ControlPlane>, String>,
> = tokio::sync::OnceCell::const_new();

pub use controlplane::{NODE_PORT_RANGE, SERVICE_CIDRS};

pub(crate) async fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    let err = |m: String| Error::Kubeconfig {
        path: path.display().to_string(),
        message: m,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    Client::try_from(config).map_err(Error::Kube)
}

impl TestEnv {
    /// Start the backend chosen by `E2E_KUBECONFIG` / `KUBEBUILDER_ASSETS` (embedded otherwise).
    pub async fn start() -> Result<Self, Error> {
        if let Some(path) = std::env::var_os("E2E_KUBECONFIG").filter(|p| !p.is_empty()) {
            return Self::external(Path::new(&path)).await;
        }
        if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|p| !p.is_empty()) {
            let assets = PathBuf::from(assets);
            let plane = SHARED_PLANE
                .get_or_init(|| async {
                    controlplane::ControlPlane::start(&assets)
                        .await
                        .map(std::sync::Arc::new)
                        .map_err(|e| e.to_string())
                })
                .await
                .clone()
                .map_err(Error::ControlPlane)?;
            return Self::with_plane(plane, &assets).await;
        }
        Self::embedded(ServerConfig::default()).await
    }

    /// Always use the embedded server, with this configuration.
    pub async fn embedded(config: ServerConfig) -> Result<Self, Error> {
        let server = ApiServer::start(config).await?;
        let dir = tempfile::Builder::new().prefix("svcnet-e2e-").tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig)?;
        let client = server.client()?;
        Ok(Self {
            backend: Backend::Embedded { server, _dir: dir },
            client,
            kubeconfig,
        })
    }

    /// Use an existing cluster.
    pub async fn external(kubeconfig: &Path) -> Result<Self, Error> {
        let client = client_from_kubeconfig(kubeconfig).await?;
        Ok(Self {
            backend: Backend::External,
            client,
            kubeconfig: kubeconfig.to_path_buf(),
        })
    }

    /// Start a control plane of this test's own from a `KUBEBUILDER_ASSETS` directory (stopped
    /// when the last `TestEnv` using it is dropped). [`TestEnv::start`] shares one instead.
    pub async fn control_plane(assets: &Path) -> Result<Self, Error> {
        let plane = controlplane::ControlPlane::start(assets).await?;
        Self::with_plane(std::sync::Arc::new(plane), assets).await
    }

    async fn with_plane(
        plane: std::sync::Arc<controlplane::ControlPlane>,
        assets: &Path,
    ) -> Result<Self, Error> {
        // A client of this test's own: a kube Client's connections live on the runtime that
        // made them, and every #[tokio::test] has its own runtime.
        let client = client_from_kubeconfig(&plane.kubeconfig).await?;
        let kubeconfig = plane.kubeconfig.clone();
        Ok(Self {
            backend: Backend::ControlPlane {
                plane,
                controllers: assets.join("kube-controller-manager").exists(),
            },
            client,
            kubeconfig,
        })
    }

    /// The answering server's Kubernetes version as (major, minor), from `/version`; the
    /// embedded server reports the API level it implements.
    pub async fn server_version(&self) -> Result<(u32, u32), Error> {
        let info = self.client.apiserver_version().await?;
        let num = |s: &str| {
            s.trim_end_matches('+')
                .parse::<u32>()
                .map_err(|_| Error::ControlPlane(format!("unparsable server version {s:?}")))
        };
        Ok((num(&info.major)?, num(&info.minor)?))
    }

    /// Whether the answering server is at least Kubernetes 1.`minor`.
    pub async fn server_at_least(&self, minor: u32) -> bool {
        match self.server_version().await {
            Ok((1, m)) => m >= minor,
            Ok((major, _)) => major > 1,
            Err(_) => false,
        }
    }

    /// A client for this endpoint.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A kubeconfig file for kubectl or our binaries' `--kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Whether this is the embedded server.
    pub fn is_embedded(&self) -> bool {
        matches!(self.backend, Backend::Embedded { .. })
    }

    /// Whether garbage collection and namespace finalization happen. They do on the embedded
    /// server (it runs both), on a real cluster and on a `KUBEBUILDER_ASSETS` control plane
    /// (kube-controller-manager with those two controllers), unless that directory has no
    /// `kube-controller-manager`.
    pub fn has_controllers(&self) -> bool {
        match self.backend {
            Backend::ControlPlane { controllers, .. } => controllers,
            _ => true,
        }
    }

    /// The embedded server (for its test hooks), if that is the backend.
    /// Drop the backend's history of past revisions, so that older resourceVersions answer
    /// 410 Expired: the embedded server forgets its event history; a `KUBEBUILDER_ASSETS` control
    /// plane compacts etcd (continue tokens of every kind, watches of Leases, which the harness
    /// serves without a watch cache). `Ok(false)` on an external cluster, which is not ours to
    /// compact.
    pub async fn compact_history(&self) -> Result<bool, Error> {
        match &self.backend {
            Backend::Embedded { server, .. } => {
                server.compact_history();
                Ok(true)
            }
            Backend::ControlPlane { plane, .. } => {
                plane.compact_history().await?;
                Ok(true)
            }
            Backend::External => Ok(false),
        }
    }

    pub fn server(&self) -> Option<&ApiServer> {
        match &self.backend {
            Backend::Embedded { server, .. } => Some(server),
            _ => None,
        }
    }

    /// Create a namespace named `<prefix>-<random>`; it is deleted when the guard is dropped.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut ns = Namespace::default();
        ns.metadata.generate_name = Some(format!("{prefix}-"));
        ns.metadata.labels = Some([("svcnet.io/e2e".to_string(), "true".to_string())].into());
        let created = api.create(&PostParams::default(), &ns).await?;
        let name = created.metadata.name.unwrap_or_default();
        Ok(TestNamespace {
            name,
            client: self.client.clone(),
            dump: self.server().map(ApiServer::dump_handle),
            keep: std::env::var_os("E2E_KEEP_NAMESPACES").is_some(),
        })
    }

    /// Every object of a namespace rendered for a failure report.
    pub async fn dump_namespace(&self, ns: &str) -> String {
        dump_via_api(&self.client, ns).await
    }
}

/// A per-test namespace. Dropping it deletes the namespace (unless `E2E_KEEP_NAMESPACES` is
/// set) and, if the test is panicking, first prints the namespace's objects to stderr.
pub struct TestNamespace {
    name: String,
    client: Client,
    dump: Option<DumpHandle>,
    keep: bool,
}

impl TestNamespace {
    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delete the namespace now and wait until it is gone (bounded by `timeout`).
    pub async fn cleanup(self, timeout: Duration) -> Result<(), Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.delete(&self.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        wait_for(&api, &self.name, timeout, |n: Option<&Namespace>| {
            n.is_none()
        })
        .await?;
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dump = match &self.dump {
                Some(d) => d.dump_namespace(&self.name),
                None => {
                    // A remote server: fetch on a helper thread with its own runtime.
                    let client = self.client.clone();
                    let ns = self.name.clone();
                    std::thread::spawn(move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map(|rt| {
                                rt.block_on(async {
                                    tokio::time::timeout(
                                        Duration::from_secs(10),
                                        dump_via_api(&client, &ns),
                                    )
                                    .await
                                    .unwrap_or_default()
                                })
                            })
                            .unwrap_or_default()
                    })
                    .join()
                    .unwrap_or_default()
                }
            };
            eprintln!(
                "===== objects in namespace {} at failure =====\n{dump}",
                self.name
            );
        }
        if self.keep {
            return;
        }
        let client = self.client.clone();
        let name = self.name.clone();
        let delete = async move {
            let api: Api<Namespace> = Api::all(client);
            let _ = api.delete(&name, &DeleteParams::background()).await;
        };
        if self.dump.is_some() {
            // Embedded: the server runs on the test's runtime, so never block it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(delete);
            }
        } else {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_secs(10), delete).await;
                    });
                }
            })
            .join();
        }
    }
}

async fn dump_via_api(client: &Client, ns: &str) -> String {
    use k8s_openapi::api::core::v1::{Endpoints, Event, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    async fn dump<K>(client: &Client, ns: &str, out: &mut String)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        match api.list(&Default::default()).await {
            Ok(list) => {
                for item in list.items {
                    out.push_str(&format!(
                        "--- {} {}\n{}\n",
                        K::kind(&Default::default()),
                        item.meta().name.clone().unwrap_or_default(),
                        serde_yaml::to_string(&item).unwrap_or_default()
                    ));
                }
            }
            Err(e) => out.push_str(&format!(
                "--- listing {} failed: {e}\n",
                K::plural(&Default::default())
            )),
        }
    }
    let mut out = String::new();
    dump::<Service>(client, ns, &mut out).await;
    dump::<Pod>(client, ns, &mut out).await;
    dump::<EndpointSlice>(client, ns, &mut out).await;
    dump::<Endpoints>(client, ns, &mut out).await;
    dump::<Event>(client, ns, &mut out).await;
    out
}

/// Wait until `cond` holds for the named object (`None` = absent), or fail after `timeout`.
/// Returns the object as last seen.
pub async fn wait_for<K, F>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    cond: F,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    F: Fn(Option<&K>) -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        let current = api.get_opt(name).await?;
        if cond(current.as_ref()) {
            return Ok(current);
        }
        if tokio::time::Instant::now() + delay > deadline {
            return Err(Error::Timeout(timeout, format!("a condition on {name}")));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Poll an async predicate until it returns true, or fail after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout(timeout, what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal Pod scheduled to `node` (so that deletion is graceful, as for a real running Pod).
pub fn pod(name: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.invalid/svcnet/test:1", "ports": [{"containerPort": 8080, "name": "http"}]}],
        },
    }))
    .expect("static pod JSON is a valid Pod")
}

/// Mark a Pod Running with `ip`, Ready or NotReady, through the status subresource.
pub async fn set_pod_ready(
    api: &Api<Pod>,
    name: &str,
    ip: &str,
    ready: bool,
) -> Result<Pod, Error> {
    let status = if ready { "True" } else { "False" };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "192.0.2.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
                {"type": "Ready", "status": status, "lastTransitionTime": now},
            ],
        }
    });
    Ok(api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// Start graceful deletion of a Pod: it stays, with deletionTimestamp set, for `grace` seconds.
/// (The Pod must be scheduled — have `spec.nodeName` — or deletion is immediate, as upstream.)
pub async fn terminate_pod(api: &Api<Pod>, name: &str, grace: u32) -> Result<(), Error> {
    let dp = DeleteParams {
        grace_period_seconds: Some(grace),
        ..DeleteParams::default()
    };
    api.delete(name, &dp).await?;
    Ok(())
}

/// Whether the Pod's Ready condition is True.
pub fn pod_is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
