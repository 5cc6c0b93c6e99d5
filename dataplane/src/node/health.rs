//! Health: the proxy's own `/healthz` and `/livez` (upstream `proxier_health.go` semantics) and the
//! per-Service health-check servers on `healthCheckNodePort` for externalTrafficPolicy=Local.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::types::ServiceKey;

/// Sync bookkeeping shared by the sync loop and the health endpoints.
#[derive(Debug)]
pub struct ProxyHealth {
    inner: RwLock<HealthInner>,
    timeout: Duration,
}

#[derive(Debug, Default, Clone)]
struct HealthInner {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<SystemTime>,
    node_eligible: bool,
}

/// A point-in-time health answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// Whether syncs keep up.
    pub healthy: bool,
    /// Last successful sync.
    pub last_updated: Option<SystemTime>,
    /// Whether the Node is not being deleted.
    pub node_eligible: bool,
}

impl ProxyHealth {
    /// Healthy until an update stays queued for longer than `timeout`.
    pub fn new(timeout: Duration) -> Self {
        ProxyHealth {
            inner: RwLock::new(HealthInner {
                node_eligible: true,
                ..Default::default()
            }),
            timeout,
        }
    }

    /// Records that a change is waiting for a sync.
    pub fn queued(&self, now: SystemTime) {
        if let Ok(mut h) = self.inner.write() {
            h.oldest_queued.get_or_insert(now);
        }
    }

    /// Records a successful sync that included everything queued before `started`.
    pub fn updated(&self, started: SystemTime, now: SystemTime) {
        if let Ok(mut h) = self.inner.write() {
            h.last_updated = Some(now);
            if h.oldest_queued.is_some_and(|q| q <= started) {
                h.oldest_queued = None;
            }
        }
    }

    /// Records the Node's deletion state.
    pub fn set_node_eligible(&self, eligible: bool) {
        if let Ok(mut h) = self.inner.write() {
            h.node_eligible = eligible;
        }
    }

    /// Current status.
    pub fn status(&self, now: SystemTime) -> HealthStatus {
        let h = self.inner.read().map(|h| h.clone()).unwrap_or_default();
        let healthy = match h.oldest_queued {
            None => true,
            Some(q) => now.duration_since(q).unwrap_or_default() < self.timeout,
        };
        HealthStatus {
            healthy,
            last_updated: h.last_updated,
            node_eligible: h.node_eligible,
        }
    }
}

fn rfc3339(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339(),
        None => String::new(),
    }
}

/// Body and status of `/healthz` (`with_node = true`) or `/livez`.
pub fn proxy_health_response(
    s: &HealthStatus,
    now: SystemTime,
    with_node: bool,
) -> (StatusCode, String) {
    let ok = s.healthy && (!with_node || s.node_eligible);
    let mut body = serde_json::json!({
        "lastUpdated": rfc3339(s.last_updated),
        "currentTime": rfc3339(Some(now)),
    });
    if with_node {
        body["nodeEligible"] = serde_json::Value::Bool(s.node_eligible);
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body.to_string())
}

/// Health of one ETP=Local Service as served on its healthCheckNodePort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The Service.
    pub service: ServiceKey,
    /// Local ready endpoints.
    pub local_endpoints: usize,
}

/// The answer of a Service health-check server.
pub fn service_health_response(h: &ServiceHealth, proxy_healthy: bool) -> Response {
    let ok = h.local_endpoints > 0 && proxy_healthy;
    let body = serde_json::json!({
        "service": { "namespace": h.service.namespace, "name": h.service.name },
        "localEndpoints": h.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = (code, body.to_string()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&h.local_endpoints.to_string()) {
        headers.insert("X-Load-Balancing-Endpoint-Weight", v);
    }
    resp
}

#[derive(Clone)]
struct ServerState {
    health: Arc<RwLock<ServiceHealth>>,
    proxy: Arc<ProxyHealth>,
}

async fn serve_service_health(State(s): State<ServerState>) -> Response {
    let h = s.health.read().map(|h| h.clone());
    match h {
        Ok(h) => service_health_response(&h, s.proxy.status(SystemTime::now()).healthy),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Where health-check servers listen, as upstream: on every address when `--nodeport-addresses` is
/// unset (empty result), else on this node's addresses inside those CIDRs.
pub fn health_check_addresses(node: &crate::types::NodeConfig) -> Vec<IpAddr> {
    match &node.nodeport_addresses {
        crate::types::NodePortAddresses::All => vec![],
        crate::types::NodePortAddresses::Cidrs(cidrs) => {
            let ips: std::collections::BTreeSet<IpAddr> = node
                .node_ips
                .iter()
                .chain(node.local_addresses.iter())
                .filter(|ip| !ip.is_loopback() && cidrs.iter().any(|c| c.contains(*ip)))
                .copied()
                .collect();
            ips.into_iter().collect()
        }
    }
}

/// The running health-check servers, one per healthCheckNodePort.
pub struct ServiceHealthServers {
    bind: Vec<IpAddr>,
    proxy: Arc<ProxyHealth>,
    servers: HashMap<u16, (Arc<RwLock<ServiceHealth>>, tokio::task::JoinHandle<()>)>,
}

impl ServiceHealthServers {
    /// Servers listen on each of `bind` (empty = all addresses).
    pub fn new(bind: Vec<IpAddr>, proxy: Arc<ProxyHealth>) -> Self {
        ServiceHealthServers {
            bind,
            proxy,
            servers: HashMap::new(),
        }
    }

    /// Changes the listen addresses; running servers are restarted on the next [`Self::sync`].
    pub fn set_bind(&mut self, bind: Vec<IpAddr>) {
        if bind != self.bind {
            self.bind = bind;
            for (_, (_, task)) in self.servers.drain() {
                task.abort();
            }
        }
    }

    /// Ports currently served.
    pub fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.servers.keys().copied().collect();
        p.sort();
        p
    }

    /// Starts, updates and stops servers to match `wanted` (port → health). Returns the addresses a
    /// new server could not listen on (a port is not retried until its Service stops needing it,
    /// as upstream); the daemon reports them as `FailedToStartServiceHealthcheck` Events.
    pub async fn sync(&mut self, wanted: HashMap<u16, ServiceHealth>) -> Vec<ListenFailure> {
        let mut failures = vec![];
        self.servers.retain(|port, (_, task)| {
            let keep = wanted.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, health) in wanted {
            if let Some((h, _)) = self.servers.get(&port) {
                if let Ok(mut h) = h.write() {
                    *h = health;
                }
                continue;
            }
            let shared = Arc::new(RwLock::new(health.clone()));
            let state = ServerState {
                health: shared.clone(),
                proxy: self.proxy.clone(),
            };
            let app = Router::new()
                .fallback(serve_service_health)
                .with_state(state);
            let addrs: Vec<SocketAddr> = if self.bind.is_empty() {
                // `[::]` also accepts IPv4 (bindv6only=0, the Linux default); `0.0.0.0` is the
                // fallback for a namespace without IPv6 (tried only if `[::]` fails, below).
                vec![SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))]
            } else {
                self.bind
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect()
            };
            let mut listeners = vec![];
            for addr in addrs {
                let bound = match tokio::net::TcpListener::bind(addr).await {
                    Err(_) if self.bind.is_empty() => {
                        tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
                    }
                    other => other,
                };
                match bound {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        tracing::warn!(
                            service = %health.service, %addr, error = %e,
                            "FailedToStartServiceHealthcheck: cannot listen on healthCheckNodePort"
                        );
                        failures.push(ListenFailure {
                            service: health.service.clone(),
                            port,
                            addr,
                            error: e.to_string(),
                        });
                    }
                }
            }
            let task = tokio::spawn(async move {
                let mut tasks = vec![];
                for l in listeners {
                    let app = app.clone();
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::warn!(error = %e, "health-check server stopped");
                        }
                    }));
                }
                struct AbortAll(Vec<tokio::task::JoinHandle<()>>);
                impl Drop for AbortAll {
                    fn drop(&mut self) {
                        for t in &self.0 {
                            t.abort();
                        }
                    }
                }
                let guard = AbortAll(tasks);
                futures::future::pending::<()>().await;
                drop(guard);
            });
            self.servers.insert(port, (shared, task));
        }
        failures
    }
}

/// A health-check server that could not listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenFailure {
    /// The Service whose healthCheckNodePort it is.
    pub service: ServiceKey,
    /// The port.
    pub port: u16,
    /// The address that could not be bound.
    pub addr: SocketAddr,
    /// The error.
    pub error: String,
}

impl ListenFailure {
    /// Reason of the Warning Event upstream kube-proxy records on the Service for this
    /// failure; its action is [`ListenFailure::ACTION`].
    pub const REASON: &'static str = "FailedToStartServiceHealthcheck";
    /// Action of that Event.
    pub const ACTION: &'static str = "Listen";

    /// The message of that Event.
    pub fn message(&self, node_name: &str) -> String {
        format!(
            "node {node_name} failed to start healthcheck \"{}/{}\" on port {}: {}",
            self.service.namespace, self.service.name, self.port, self.error
        )
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for (_, (_, t)) in self.servers.drain() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_health_times_out_queued_updates() {
        let h = ProxyHealth::new(Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert!(h.status(t0).healthy);
        h.queued(t0);
        assert!(h.status(t0 + Duration::from_secs(59)).healthy);
        assert!(!h.status(t0 + Duration::from_secs(61)).healthy);
        h.updated(t0 + Duration::from_secs(1), t0 + Duration::from_secs(62));
        assert!(h.status(t0 + Duration::from_secs(100)).healthy);
        h.set_node_eligible(false);
        let (code, body) = proxy_health_response(&h.status(t0), t0, true);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"nodeEligible\":false"));
        let (code, body) = proxy_health_response(&h.status(t0), t0, false);
        assert_eq!(code, StatusCode::OK);
        assert!(!body.contains("nodeEligible"));
    }

    #[tokio::test]
    async fn service_health_server_answers_like_upstream() {
        let proxy = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        let mut servers = ServiceHealthServers::new(vec!["127.0.0.1".parse().unwrap()], proxy);
        // Find a free port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let svc = ServiceKey::new("ns", "web");
        servers
            .sync(
                [(
                    port,
                    ServiceHealth {
                        service: svc.clone(),
                        local_endpoints: 2,
                    },
                )]
                .into(),
            )
            .await;
        let get = |port: u16| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let r = get(port).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r
            .to_ascii_lowercase()
            .contains("x-load-balancing-endpoint-weight: 2"));
        assert!(r
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"));
        assert!(r.contains(r#""localEndpoints":2"#) && r.contains(r#""namespace":"ns""#));
        servers
            .sync(
                [(
                    port,
                    ServiceHealth {
                        service: svc,
                        local_endpoints: 0,
                    },
                )]
                .into(),
            )
            .await;
        let r = get(port).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains(r#""serviceProxyHealthy":true"#));
        servers.sync(HashMap::new()).await;
        assert!(servers.ports().is_empty());
    }

    #[test]
    fn health_check_addresses_follow_nodeport_addresses() {
        use crate::types::{NodeConfig, NodePortAddresses};
        let mut node = NodeConfig {
            node_ips: vec!["192.168.0.10".parse().unwrap()],
            local_addresses: vec![
                "127.0.0.1".parse().unwrap(),
                "10.0.0.5".parse().unwrap(),
                "fd00::5".parse().unwrap(),
            ],
            ..Default::default()
        };
        node.nodeport_addresses = NodePortAddresses::All;
        assert!(health_check_addresses(&node).is_empty(), "all addresses");
        node.nodeport_addresses = NodePortAddresses::Cidrs(vec![
            "192.168.0.0/24".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ]);
        let want: Vec<IpAddr> = vec!["192.168.0.10".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(health_check_addresses(&node), want);
    }

    /// With no address restriction the server answers over IPv4 and IPv6 (upstream listens on all).
    #[tokio::test]
    async fn unrestricted_health_server_answers_on_both_families() {
        let proxy = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        let mut servers = ServiceHealthServers::new(vec![], proxy);
        let port = std::net::TcpListener::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let health = ServiceHealth {
            service: ServiceKey::new("ns", "web"),
            local_endpoints: 1,
        };
        servers.sync([(port, health)].into()).await;
        for host in ["127.0.0.1", "::1"] {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect((host, port)).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 200"), "{host}: {out}");
        }
        servers.set_bind(vec!["127.0.0.1".parse().unwrap()]);
        assert!(
            servers.ports().is_empty(),
            "re-binding stops the old servers"
        );
    }

    /// A port that is already taken is reported (for the daemon's Event) with upstream's reason,
    /// action and message.
    #[tokio::test]
    async fn a_port_that_cannot_be_bound_is_reported() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let proxy = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        let mut servers = ServiceHealthServers::new(vec!["127.0.0.1".parse().unwrap()], proxy);
        let health = ServiceHealth {
            service: ServiceKey::new("ns", "web"),
            local_endpoints: 1,
        };
        let failures = servers.sync([(port, health.clone())].into()).await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].port, port);
        assert_eq!(failures[0].service, health.service);
        let note = failures[0].message("node-a");
        assert!(
            note.starts_with(&format!(
                "node node-a failed to start healthcheck \"ns/web\" on port {port}: "
            )),
            "{note}"
        );
        // Not retried on every sync (upstream keeps the entry until the Service changes).
        assert!(servers.sync([(port, health)].into()).await.is_empty());
        drop(taken);
    }
}
