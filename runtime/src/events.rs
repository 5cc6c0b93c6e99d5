//! Recording `core/v1` Events.
//!
//! [`EventRecorder`] creates one Event per distinct (object, type, reason, message) and suppresses
//! identical repeats for [`EventRecorder::DEDUP_WINDOW`], so a reconcile that keeps failing the same
//! way does not flood the API. Failures to record are logged, never propagated: an Event is a
//! courtesy to the user, not part of the reconcile's outcome.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Mutex;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something the user should look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Publishes Events for one controller component.
pub struct EventRecorder {
    client: Client,
    component: String,
    instance: String,
    recent: Mutex<HashMap<(String, EventType, String, String), Instant>>,
}

impl EventRecorder {
    /// Identical Events within this window are recorded once.
    pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

    /// A recorder reporting as `component` (e.g. `svcnet-ipam`) from `instance` (pod/host name).
    pub fn new(client: Client, component: impl Into<String>, instance: impl Into<String>) -> Self {
        EventRecorder {
            client,
            component: component.into(),
            instance: instance.into(),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The object reference of any API object, for [`EventRecorder::publish`].
    pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
        obj.object_ref(&())
    }

    /// Records a Warning Event.
    pub async fn warning(&self, obj: &ObjectReference, reason: &str, message: &str) {
        self.publish(obj, EventType::Warning, reason, message).await;
    }

    /// Records a Normal Event.
    pub async fn normal(&self, obj: &ObjectReference, reason: &str, message: &str) {
        self.publish(obj, EventType::Normal, reason, message).await;
    }

    /// Records an Event unless an identical one was recorded within the dedup window.
    pub async fn publish(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let key = (
            obj.uid.clone().unwrap_or_else(|| {
                format!(
                    "{}/{}",
                    obj.namespace.as_deref().unwrap_or(""),
                    obj.name.as_deref().unwrap_or("")
                )
            }),
            type_,
            reason.to_string(),
            message.to_string(),
        );
        {
            let mut recent = self.recent.lock().await;
            let now = Instant::now();
            recent.retain(|_, at| now.duration_since(*at) < Self::DEDUP_WINDOW);
            if recent.contains_key(&key) {
                return;
            }
            recent.insert(key, now);
        }
        let namespace = obj
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", obj.name.as_deref().unwrap_or("object"))),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: obj.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_string()),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(e) => tracing::debug!(event = %e.name_any(), reason, "recorded event"),
            Err(err) => tracing::warn!(%err, reason, message, "failed to record event"),
        }
    }
}
