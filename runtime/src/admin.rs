//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/healthz` answers 200 while the process serves requests. `/readyz` answers 200 once every
//! registered readiness component ([`Readiness::component`]: one per controller or cache) has
//! reported ready, and 503 naming the ones that have not. `/metrics` encodes the shared
//! prometheus-client registry in the OpenMetrics text format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

/// The readiness of a process: named components, each ready or not. The process is ready when
/// every registered component is (trivially so with none).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<String, bool>>>);

impl Readiness {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, bool>) -> T) -> T {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut map)
    }

    /// Registers component `name`, not ready yet, and returns its handle. Registering a name
    /// again returns a handle to the same component and resets it to not ready.
    pub fn component(&self, name: &str) -> ReadyFlag {
        self.with(|m| m.insert(name.to_string(), false));
        ReadyFlag {
            readiness: self.clone(),
            name: name.to_string(),
        }
    }

    /// Marks every component not ready (or ready), e.g. when leadership is lost.
    pub fn set_all(&self, ready: bool) {
        self.with(|m| m.values_mut().for_each(|v| *v = ready));
    }

    /// Whether every component is ready.
    pub fn is_ready(&self) -> bool {
        self.with(|m| m.values().all(|v| *v))
    }

    /// The components that are not ready, in name order.
    pub fn not_ready(&self) -> Vec<String> {
        self.with(|m| {
            m.iter()
                .filter(|(_, ready)| !**ready)
                .map(|(name, _)| name.clone())
                .collect()
        })
    }
}

/// One component's readiness (see [`Readiness::component`]).
#[derive(Debug, Clone)]
pub struct ReadyFlag {
    readiness: Readiness,
    name: String,
}

impl ReadyFlag {
    /// Reports this component ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.readiness.with(|m| m.insert(self.name.clone(), ready));
    }

    /// A flag registered on a readiness nobody serves: for tools and tests that run a
    /// controller without an admin server.
    pub fn detached(name: &str) -> Self {
        Readiness::default().component(name)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    ready: Readiness,
}

/// The admin router (exposed for tests).
pub fn router(registry: Arc<Registry>, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { registry, ready })
}

async fn metrics(State(st): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &st.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            err.to_string(),
        ),
    }
}

async fn readyz(State(st): State<AdminState>) -> impl IntoResponse {
    let waiting = st.ready.not_ready();
    if waiting.is_empty() {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", waiting.join(", ")),
        )
    }
}

/// Binds `addr` and serves the admin endpoints until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    ready: Readiness,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, registry, ready).await
}

/// Serves the admin endpoints on a listener bound earlier (to fail fast on a busy port before
/// anything else starts) until the task is dropped.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    ready: Readiness,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router(registry, ready)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_ready_and_metrics_endpoints() {
        use prometheus_client::metrics::counter::Counter;
        let mut registry = Registry::default();
        let requests: Counter = Counter::default();
        registry.register("svcnet_test_requests", "Requests.", requests.clone());
        requests.inc();
        let ready = Readiness::default();
        let a = ready.component("endpointslice");
        let b = ready.component("ipam");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::new(registry), ready.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let r = get(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.ends_with("not ready: endpointslice, ipam"), "{r}");
        a.set_ready(true);
        let r = get(addr, "/readyz").await;
        assert!(r.ends_with("not ready: ipam"), "{r}");
        b.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        ready.set_all(false);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        let body = get(addr, "/metrics").await;
        assert!(body.contains("svcnet_test_requests_total 1"), "{body}");
    }

    #[test]
    fn no_components_means_ready() {
        assert!(Readiness::default().is_ready());
    }
}
