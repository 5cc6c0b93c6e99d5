//! Pods: `SetDefaults_Pod`, the QoS class, and the create/update validation svcnet depends on.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{ensure_object, set_default};
use crate::status::FieldError;

pub(super) fn default_pod(obj: &mut Value) {
    let spec = ensure_object(obj, "spec");
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    if spec
        .get("terminationGracePeriodSeconds")
        .is_none_or(Value::is_null)
    {
        spec.insert("terminationGracePeriodSeconds".into(), json!(30));
    }
    if spec.get("securityContext").is_none() {
        spec.insert("securityContext".into(), json!({}));
    }
    if spec.get("enableServiceLinks").is_none() {
        spec.insert("enableServiceLinks".into(), json!(true));
    }
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let tag = image.rsplit('/').next().unwrap_or_default();
                let policy =
                    if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
                        "IfNotPresent"
                    } else {
                        "Always"
                    };
                set_default(c, "imagePullPolicy", json!(policy));
                if c.get("resources").is_none() {
                    c.insert("resources".into(), json!({}));
                }
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// `GetPodQOS`, simplified to cpu/memory requests and limits of the regular containers.
pub(super) fn pod_qos(obj: &Value) -> &'static str {
    let cs = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let q = req.and_then(|m| m.get(r));
            let l = lim.and_then(|m| m.get(r));
            if q.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || (q.is_some() && q != l) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

pub(super) fn validate_pod(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let cs = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if cs.is_empty() {
        errs.push(FieldError::required("spec.containers", ""));
    }
    let mut names = HashSet::new();
    for (i, c) in cs.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(
                format!("spec.containers[{i}].name"),
                "",
            ));
        } else if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(
                format!("spec.containers[{i}].name"),
                json!(name),
            ));
        }
        if c.get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            errs.push(FieldError::required(
                format!("spec.containers[{i}].image"),
                "",
            ));
        }
    }
    errs
}

/// Upstream allows a running Pod's spec to change only in container images,
/// `activeDeadlineSeconds`, additional tolerations and `terminationGracePeriodSeconds`
/// (`ValidatePodUpdate`); `spec.nodeName` is set through binding, never by update.
pub(super) fn validate_pod_spec_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let mutable_stripped = |v: &Value| {
        let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = spec.as_object_mut() {
            for f in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                m.remove(f);
            }
            for list in ["containers", "initContainers"] {
                if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
        spec
    };
    if mutable_stripped(old) == mutable_stripped(new) {
        return Vec::new();
    }
    vec![FieldError::forbidden(
        "spec",
        "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
    )]
}
