//! Recording `core/v1` Events: the one Event mechanism of every svcnet binary (the controllers,
//! as kube-controller-manager's do, and the proxy; on a real cluster they are also listed
//! through `events.k8s.io/v1`).
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

/// Longest message recorded (the API's limit on an Event note).
pub const MAX_MESSAGE: usize = 1024;
/// Longest reporting instance, reason and action the API accepts.
pub const MAX_SHORT: usize = 128;

/// The reporting instance: `instance` if given, else `$POD_NAME`, `$HOSTNAME` or the component
/// itself (the API rejects an Event that carries an event time but no reporting instance).
fn instance_or_default(instance: String, component: &str) -> String {
    let chosen = if instance.is_empty() {
        std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| component.to_string())
    } else {
        instance
    };
    truncate(&chosen, MAX_SHORT).to_string()
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

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

    /// A recorder reporting as `component` (e.g. `svcnet-ipam`) from `instance` (pod/host name;
    /// empty means `$POD_NAME`, `$HOSTNAME` or the component name).
    pub fn new(client: Client, component: impl Into<String>, instance: impl Into<String>) -> Self {
        let component = component.into();
        EventRecorder {
            client,
            instance: instance_or_default(instance.into(), &component),
            component,
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

    /// Records an Event (its action is its reason) unless an identical one was recorded
    /// within the dedup window.
    pub async fn publish(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        self.record(obj, type_, reason, reason, message).await;
    }

    /// Records an Event with an explicit `action` (what was being attempted, e.g. `Listen`)
    /// unless an identical one was recorded within the dedup window. Messages are cut to the
    /// 1,024 bytes the API accepts for an Event note.
    pub async fn record(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let message = truncate(message, MAX_MESSAGE);
        let reason = truncate(reason, MAX_SHORT);
        let action = truncate(action, MAX_SHORT);
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
            action: Some(action.to_string()),
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

#[cfg(test)]
mod tests {
    use super::{instance_or_default, truncate};

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let s = "é".repeat(10); // 2 bytes each
        assert_eq!(truncate(&s, 5), "éé");
        assert_eq!(truncate(&s, 4), "éé");
    }

    #[test]
    fn the_reporting_instance_is_never_empty_or_too_long() {
        assert_eq!(instance_or_default("pod-a".into(), "svcnet-x"), "pod-a");
        assert!(!instance_or_default(String::new(), "svcnet-x").is_empty());
        assert_eq!(instance_or_default("i".repeat(200), "svcnet-x").len(), 128);
    }
}
