//! Prometheus metrics of the embedded server, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::store::Store;

type Labels = Vec<(String, String)>;

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    open_watches: Gauge,
    slow_watchers_closed: Gauge,
    resource_version: Gauge,
    objects: Family<Labels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("svcnet_apiserver");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by method and response code",
            requests.clone(),
        );
        let open_watches = Gauge::default();
        registry.register(
            "open_watches",
            "Watches currently open",
            open_watches.clone(),
        );
        let slow_watchers_closed = Gauge::default();
        registry.register(
            "slow_watchers_closed",
            "Watches closed because they fell behind (cumulative)",
            slow_watchers_closed.clone(),
        );
        let resource_version = Gauge::default();
        registry.register(
            "resource_version",
            "Current global resourceVersion",
            resource_version.clone(),
        );
        let objects = Family::<Labels, Gauge>::default();
        registry.register("objects", "Stored objects by resource", objects.clone());
        Self {
            registry,
            requests,
            open_watches,
            slow_watchers_closed,
            resource_version,
            objects,
        }
    }

    /// Count one request.
    pub fn observe(&self, method: &str, code: u16) {
        self.requests
            .get_or_create(&vec![
                ("method".to_string(), method.to_string()),
                ("code".to_string(), code.to_string()),
            ])
            .inc();
    }

    /// Refresh the gauges from the store and render the text exposition format.
    pub fn render(&self, store: &Store) -> String {
        {
            let inner = store.lock();
            self.open_watches.set(inner.watcher_count() as i64);
            self.slow_watchers_closed
                .set(inner.slow_watchers_closed() as i64);
            self.resource_version
                .set(i64::try_from(inner.rv()).unwrap_or(i64::MAX));
            for (res, n) in inner.table_sizes() {
                self.objects
                    .get_or_create(&vec![("resource".to_string(), res)])
                    .set(n as i64);
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
