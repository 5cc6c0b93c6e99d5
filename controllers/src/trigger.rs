//! The last-change-trigger-time tracker (upstream `TriggerTimeTracker`),
//! shared in behaviour by the EndpointSlice and Endpoints controllers.
//!
//! The first time a Service is seen, its trigger time is the Service's
//! creationTimestamp. After that it is the earliest trigger time that changed
//! since the previous sync: a Pod Ready-condition `lastTransitionTime` that
//! moved forward, or the Service creation time if that changed.

use crate::views::PodInfo;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
struct State {
    last_pod_trigger_times: HashMap<String, DateTime<Utc>>,
    last_service_trigger_time: Option<DateTime<Utc>>,
}

/// Per-Service trigger-time state.
#[derive(Debug, Default)]
pub struct TriggerTimeTracker {
    states: HashMap<(String, String), State>,
}

fn min_time(cur: Option<DateTime<Utc>>, new: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match cur {
        Some(c) if c <= new => Some(c),
        _ => Some(new),
    }
}

impl TriggerTimeTracker {
    /// Computes the trigger time for a sync of `namespace/name` and records
    /// the state, even when the sync turns out to write nothing.
    pub fn compute(
        &mut self,
        namespace: &str,
        name: &str,
        service_created: Option<DateTime<Utc>>,
        pods: &[&PodInfo],
    ) -> Option<DateTime<Utc>> {
        let key = (namespace.to_string(), name.to_string());
        let previous = self.states.get(&key).cloned();
        let was_known = previous.is_some();
        let state = previous.unwrap_or_default();
        let mut min_changed = None;
        let mut pod_times = HashMap::new();
        for p in pods {
            if let Some(t) = p.ready_transition {
                pod_times.insert(p.name.clone(), t);
                if state
                    .last_pod_trigger_times
                    .get(&p.name)
                    .is_none_or(|prev| t > *prev)
                {
                    min_changed = min_time(min_changed, t);
                }
            }
        }
        if let Some(st) = service_created {
            if state.last_service_trigger_time.is_none_or(|prev| st > prev) {
                min_changed = min_time(min_changed, st);
            }
        }
        self.states.insert(
            key,
            State {
                last_pod_trigger_times: pod_times,
                last_service_trigger_time: service_created,
            },
        );
        if !was_known {
            return service_created;
        }
        min_changed
    }

    /// Forgets a deleted Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.states
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).single().expect("valid")
    }

    #[test]
    fn first_sync_uses_creation_then_min_changed() {
        let mut tr = TriggerTimeTracker::default();
        let mut p1 = PodInfo {
            name: "a".into(),
            ready_transition: Some(t(20)),
            ..Default::default()
        };
        let mut p2 = PodInfo {
            name: "b".into(),
            ready_transition: Some(t(30)),
            ..Default::default()
        };
        assert_eq!(tr.compute("ns", "s", Some(t(10)), &[&p1, &p2]), Some(t(10)));
        assert_eq!(
            tr.compute("ns", "s", Some(t(10)), &[&p1, &p2]),
            None,
            "nothing changed"
        );
        p1.ready_transition = Some(t(50));
        p2.ready_transition = Some(t(40));
        assert_eq!(tr.compute("ns", "s", Some(t(10)), &[&p1, &p2]), Some(t(40)));
        let p3 = PodInfo {
            name: "c".into(),
            ready_transition: Some(t(45)),
            ..Default::default()
        };
        assert_eq!(
            tr.compute("ns", "s", Some(t(10)), &[&p1, &p2, &p3]),
            Some(t(45)),
            "new pod"
        );
        tr.delete_service("ns", "s");
        assert_eq!(tr.compute("ns", "s", Some(t(11)), &[&p1]), Some(t(11)));
    }
}
