//! An in-process, Kubernetes-API-compatible HTTP server for tests and demos.
//!
//! It speaks the Kubernetes REST protocol (JSON over HTTP/1.1, plain HTTP on loopback, no
//! authentication), so `kube::Client`, kubectl and our binaries' `--kubeconfig` talk to it
//! unchanged. It favours faithful protocol semantics over breadth:
//!
//! * **Resources**: core/v1 Namespace, Node, Pod, Service, Endpoints, Event, ConfigMap,
//!   ServiceAccount; discovery.k8s.io/v1 EndpointSlice; coordination.k8s.io/v1 Lease;
//!   events.k8s.io/v1 Event; networking.k8s.io/v1 ServiceCIDR (with `/status`) and IPAddress
//!   (both cluster-scoped, validated as upstream; the server creates none of them itself: the
//!   default `kubernetes` ServiceCIDR and the IPAddresses of ClusterIPs are svcnet's IPAM
//!   controller's business here); apiextensions.k8s.io/v1 CustomResourceDefinition, and the kinds of
//!   every created CRD (namespaced or cluster-scoped, `/status` when declared, every served
//!   version with conversion strategy `None`). Legacy discovery (`/api`, `/apis`, `/version`, per
//!   group-version resource lists).
//! * **Reads**: get; list with label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`),
//!   field selectors (`metadata.name`, `metadata.namespace`, and e.g. `spec.nodeName`,
//!   `status.phase` for Pods), `limit`/`continue` pagination over a consistent snapshot (an
//!   expired continue token is `410 Expired`), `resourceVersionMatch=Exact`; watch from a
//!   resourceVersion (or from the current state with synthetic ADDED events), with
//!   `allowWatchBookmarks` (periodic BOOKMARKs and one at the end), `timeoutSeconds`,
//!   `sendInitialEvents`, and a `410 Expired` ERROR event for a resourceVersion older than the
//!   retained history.
//! * **Writes**: create (generateName, uid, creationTimestamp, generation, `409 AlreadyExists`),
//!   update (`409 Conflict` on a stale resourceVersion; no-op updates do not bump it), patch (JSON
//!   merge, JSON patch, strategic merge for the built-in kinds, server-side apply with
//!   `managedFields`, `fieldValidation`), delete (uid/resourceVersion
//!   preconditions, Background/Foreground/Orphan propagation with an ownerReference garbage
//!   collector, finalizers, graceful Pod deletion), deletecollection, `/status` subresources
//!   (writes to `/status` change only status; main-resource writes never change status).
//! * **Metrics** at `/metrics` (`svcnet_apiserver_*`: requests, open watches, slow watchers
//!   closed, resourceVersion, objects per resource).
//! * **Request audit** (opt-in, [`ApiServer::enable_audit`] / [`ApiServer::audit_log`]): each
//!   resource request with its RBAC verb, group, resource, subresource, namespace, the client's
//!   bearer token and `User-Agent`, for least-privilege RBAC tests.
//! * **Errors** are real `Status` bodies (`reason`, `code`, `details`) as kube-rs parses them.
//!
//! # Differences from kube-apiserver (deliberate)
//! * **No ClusterIP or NodePort allocation.** A Service is stored with the `spec.clusterIP` it was
//!   created with (often empty). svcnet's IPAM controller is the allocator on this server: it may
//!   set an empty `spec.clusterIP`/`clusterIPs`/`nodePort` once with an update; after that the
//!   usual immutability rules apply. On a real apiserver the apiserver allocates and our IPAM
//!   controller adopts. Tests must assert the contract (unique, in range), not who allocated.
//!   Likewise `ipFamilies`/`ipFamilyPolicy` are not filled in.
//!   For the same reason the server creates no `kubernetes` ServiceCIDR and no IPAddress objects
//!   (kube-apiserver from 1.33 does both); it only stores and validates those written to it.
//! * **Server-side apply and `managedFields`** follow structured-merge-diff with the list and map
//!   markers of the real OpenAPI for the fields that have them (Service ports, containers, env,
//!   conditions, finalizers, …) and the CRD's structural schema for custom resources; other lists
//!   are atomic. Update entries record a struct only through its fields (upstream also records
//!   pointer structs a write adds, e.g. `.: {}` on `rollingUpdate`). Managers are not capped at
//!   ten Update entries, no `last-applied-configuration` migration. An applied configuration with
//!   a field the schema does not declare is `400` (upstream answers `500`). A `/status` apply
//!   changes only status. No CBOR.
//! * **fieldValidation** checks the built-in kinds against k8s-openapi's typed model; custom
//!   resources are not checked. Repeated keys are found in JSON bodies only.
//! * No authentication/authorization/admission webhooks, no OpenAPI schema validation or pruning
//!   of custom resources, no protobuf. Table output (server-side printing for
//!   `kubectl get`) covers Services, Pods, EndpointSlices, Namespaces and Nodes; other kinds get
//!   NAME/AGE, and watches always stream full objects.
//! * The kubelet is emulated only in one respect: a Pod whose deletion grace period has elapsed
//!   (and that has no finalizers) is removed by the server.
//! * core/v1 and events.k8s.io/v1 Events are stored separately (upstream shares storage).
//! * No `default/kubernetes` Service is created.
//!
//! ```no_run
//! # async fn demo() -> Result<(), apiserver::Error> {
//! use apiserver::{ApiServer, ServerConfig};
//! let server = ApiServer::start(ServerConfig::default()).await?;
//! let client = server.client()?;
//! server.write_kubeconfig("/tmp/kubeconfig".as_ref())?;
//! # drop(client);
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod apply;
mod audit;
mod defaults;
mod discovery;
mod field_set;
mod field_validation;
mod gc;
mod http;
mod managed_fields;
mod metrics;
mod ops;
mod patch;
mod resources;
mod selector;
mod status;
mod store;
mod table;
mod watch;

pub mod cli;

pub use audit::{rbac_verb, AuditRecord};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Errors of the embedded server's public API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Writing the kubeconfig failed.
    #[error("failed to write kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Target path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Building a kube client failed.
    #[error("failed to build a kube client: {0}")]
    Client(#[from] kube::Error),
    /// The server URL did not parse (cannot happen for a bound socket address).
    #[error("invalid server URL: {0}")]
    Url(#[from] ::http::uri::InvalidUri),
}

/// Configuration of the embedded server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Listen address; the default `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// Number of events kept for watches that resume from a resourceVersion (like etcd's
    /// compaction window). Older resourceVersions get `410 Expired`.
    pub watch_history: usize,
    /// Capacity of each watcher's queue. A watcher that falls this far behind is closed.
    pub watch_queue: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK (kube-apiserver: about a
    /// minute); one more comes 2 s before the watch times out.
    pub bookmark_interval: Duration,
    /// Watch duration when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Create `default`, `kube-system`, `kube-public` and `kube-node-lease` at start.
    pub create_default_namespaces: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 100_000,
            watch_queue: 4096,
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
            create_default_namespaces: true,
        }
    }
}

/// A running embedded API server. Dropping it stops the server.
pub struct ApiServer {
    addr: SocketAddr,
    store: Arc<store::Store>,
    audit: Arc<audit::AuditLog>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    gc: JoinHandle<()>,
}

impl ApiServer {
    /// Bind, create the default namespaces and start serving (requires a tokio runtime).
    pub async fn start(config: ServerConfig) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let store = Arc::new(store::Store::new(config.watch_history, config.watch_queue));
        if config.create_default_namespaces {
            let mut inner = store.lock();
            let info = inner
                .registry
                .find("", "v1", "namespaces")
                .expect("namespaces are built in");
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj = serde_json::json!({"metadata": {"name": ns}});
                if let Err(e) = ops::create(
                    &mut inner,
                    &info,
                    None,
                    obj,
                    false,
                    &mut field_validation::WriteCtx::internal(),
                ) {
                    tracing::warn!(namespace = ns, error = %e.message, "creating default namespace failed");
                }
            }
        }
        let audit = Arc::new(audit::AuditLog::default());
        let shared = Arc::new(http::Shared {
            store: store.clone(),
            config: config.clone(),
            addr,
            metrics: metrics::Metrics::new(),
            audit: audit.clone(),
        });
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared);
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "embedded apiserver stopped");
            }
        });
        let gc = tokio::spawn(gc::run(store.clone()));
        tracing::info!(%addr, "embedded apiserver listening");
        Ok(Self {
            addr,
            store,
            audit,
            shutdown: Some(tx),
            server: Some(server),
            gc,
        })
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to this server (default namespace `default`).
    pub fn client(&self) -> Result<kube::Client, Error> {
        let config = kube::Config::new(self.url().parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// Write a kubeconfig for kubectl and `--kubeconfig` flags.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, kubeconfig_yaml(&self.url())).map_err(|source| Error::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// Start the request audit: from now on every resource request (not discovery, `/version`,
    /// `/metrics`, …) is recorded with its RBAC attributes, its client's identity (bearer token,
    /// `User-Agent`) and the response code. Off by default; it keeps growing until the server
    /// stops, so enable it only for bounded test workloads.
    pub fn enable_audit(&self) {
        self.audit.enable();
    }

    /// The requests recorded since [`Self::enable_audit`], in arrival order (empty when the
    /// audit is off). Watches are recorded when they start.
    pub fn audit_log(&self) -> Vec<AuditRecord> {
        self.audit.snapshot()
    }

    /// Test hook: end every open watch now (clients must re-watch or relist).
    pub fn close_all_watches(&self) {
        self.store.lock().close_all_watches();
    }

    /// Test hook: forget the whole watch history, so a watch or continue token from any
    /// resourceVersion issued so far gets `410 Expired` (the global revision moves on by one).
    pub fn compact_history(&self) {
        self.store.lock().compact();
    }

    /// Test hook: forget the history and close every watch in one step, so every watching
    /// client's attempt to resume gets `410 Expired` and it must relist. (Calling
    /// [`Self::compact_history`] and [`Self::close_all_watches`] separately races with
    /// concurrent writes, which can move a watcher past the compaction point in between.)
    pub fn expire_watches(&self) {
        let mut inner = self.store.lock();
        inner.compact();
        inner.close_all_watches();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.lock().rv()
    }

    /// Number of currently open watches.
    pub fn watch_count(&self) -> usize {
        self.store.lock().watcher_count()
    }

    /// Number of stored objects of a resource (`group` "" for core, plural resource name).
    pub fn object_count(&self, group: &str, plural: &str) -> usize {
        self.store.lock().count(&format!("{group}/{plural}"))
    }

    /// A synchronous handle for dumping objects (used by the harness on test failure).
    pub fn dump_handle(&self) -> DumpHandle {
        DumpHandle(self.store.clone())
    }

    /// Stop serving: closes watches and waits for in-flight requests.
    pub async fn shutdown(mut self) {
        self.close_all_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                tracing::warn!("embedded apiserver did not stop within 5s");
            }
        }
        self.gc.abort();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.gc.abort();
    }
}

/// Reads the store without going through HTTP (usable from `Drop` on a single-threaded runtime).
#[derive(Clone)]
pub struct DumpHandle(Arc<store::Store>);

impl DumpHandle {
    /// Every object in a namespace, as pretty JSON, grouped by resource.
    pub fn dump_namespace(&self, ns: &str) -> String {
        let inner = self.0.lock();
        let mut out = String::new();
        for (res, key) in inner.keys_in_namespace(ns) {
            if let Some(b) = inner.get(&res, &key) {
                let pretty = serde_json::from_slice::<serde_json::Value>(&b)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or_default();
                out.push_str(&format!("--- {res} {key}\n{pretty}\n"));
            }
        }
        out
    }
}

/// A kubeconfig for an unauthenticated plain-HTTP server.
pub fn kubeconfig_yaml(server_url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: svcnet-embedded
  cluster:
    server: {server_url}
users:
- name: svcnet-embedded
  user: {{}}
contexts:
- name: svcnet-embedded
  context:
    cluster: svcnet-embedded
    user: svcnet-embedded
    namespace: default
current-context: svcnet-embedded
"
    )
}
