//! The thin layer that applies a [`SlicePlan`] to the API server: create,
//! replace-with-resourceVersion and delete (no server-side apply), in the
//! order creates → updates → deletes, recording what the cache must show
//! next in the [`SliceTracker`], and Events through svcnet-runtime's [`EventRecorder`].

use crate::metrics::ControllerMetrics;
use crate::tracker::{SliceTracker, SliceVersion};
use crate::writes::{EventKind, EventSpec, SlicePlan};
use crate::{Error, Result};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, Resource};
use runtime::events::{EventRecorder, EventType};
use std::sync::Arc;
use tokio::sync::Mutex;

/// The API answered 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The API answered 409.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A create was refused because the namespace is being deleted.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

fn version_of(s: &EndpointSlice) -> SliceVersion {
    SliceVersion {
        uid: s.metadata.uid.clone().unwrap_or_default(),
        resource_version: s.metadata.resource_version.clone().unwrap_or_default(),
    }
}

/// Applies `plan` in namespace `ns` for owner `owner` (`ns/name`).
/// Creates are dropped silently when the namespace is terminating.
pub async fn apply_slice_plan(
    client: &Client,
    ns: &str,
    owner: &str,
    plan: &SlicePlan,
    tracker: &Mutex<SliceTracker>,
    metrics: &ControllerMetrics,
) -> Result<()> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    for s in &plan.creates {
        match api.create(&pp, s).await {
            Ok(created) => {
                tracker
                    .lock()
                    .await
                    .wrote(owner, &version_of(&created), None);
                metrics.change("create");
            }
            Err(e) if is_namespace_terminating(&e) => return Ok(()),
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    for s in &plan.updates {
        let name = s.metadata.name.clone().unwrap_or_default();
        let old_rv = s.metadata.resource_version.clone();
        let updated = api.replace(&name, &pp, s).await?;
        tracker
            .lock()
            .await
            .wrote(owner, &version_of(&updated), old_rv.as_deref());
        metrics.change("update");
    }
    for s in &plan.deletes {
        let name = s.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: s.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                metrics.change("delete");
            }
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(Error::Kube(e)),
        }
        if let Some(uid) = &s.metadata.uid {
            tracker.lock().await.deleted(owner, uid);
        }
    }
    Ok(())
}

/// Publishes Events and counts them (`events_total`); failures are logged.
#[derive(Clone)]
pub struct EventSink {
    recorder: Arc<EventRecorder>,
    metrics: ControllerMetrics,
}

impl EventSink {
    /// A sink reporting as `controller`.
    pub fn new(
        client: Client,
        controller: &str,
        instance: Option<String>,
        metrics: ControllerMetrics,
    ) -> Self {
        EventSink {
            recorder: Arc::new(EventRecorder::new(
                client,
                controller,
                instance.unwrap_or_default(),
            )),
            metrics,
        }
    }

    /// Records `ev` on `regarding`.
    pub async fn emit(&self, regarding: &ObjectReference, ev: &EventSpec) {
        let (t, ts) = match ev.kind {
            EventKind::Normal => (EventType::Normal, "Normal"),
            EventKind::Warning => (EventType::Warning, "Warning"),
        };
        self.metrics.event(ts, &ev.reason);
        self.recorder
            .publish(regarding, t, &ev.reason, &ev.message)
            .await;
    }
}

/// An ObjectReference to `obj` for Events.
pub fn reference_to<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}
