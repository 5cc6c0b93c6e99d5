//! `core/v1` Events, validated as kube-apiserver does for that version: an Event without
//! `eventTime` (the old style) must name its object's namespace; one with `eventTime` (the new
//! style, what `events.k8s.io` clients and svcnet write) must also say who reported it and what
//! was done, within the API's length limits.

use serde_json::{json, Value};

use super::{is_dns1123_subdomain, is_qualified_name};
use crate::status::FieldError;

/// Longest `reportingInstance`, `action` and `reason`.
const SHORT_LIMIT: usize = 128;
/// Longest `message` (the Event's note).
const NOTE_LIMIT: usize = 1024;

fn text<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get(field).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn validate_event(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved_ns = obj
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            json!(involved_ns),
            "does not match event.namespace",
        )
    };
    let new_style = obj.get("eventTime").is_some_and(|t| !t.is_null());
    if !new_style {
        let agrees = if involved_ns.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_ns
        };
        if !agrees {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            errs.push(mismatch());
        }
        let controller = text(obj, "reportingComponent");
        if controller.is_empty() {
            errs.push(FieldError::required("reportingComponent", ""));
        } else if !is_qualified_name(controller) {
            errs.push(FieldError::invalid(
                "reportingComponent",
                json!(controller),
                "name part must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
        for field in ["reportingInstance", "action", "reason"] {
            let v = text(obj, field);
            if v.is_empty() {
                errs.push(FieldError::required(field, ""));
            } else if v.len() > SHORT_LIMIT {
                errs.push(FieldError::invalid(
                    field,
                    json!(""),
                    format!("can have at most {SHORT_LIMIT} characters"),
                ));
            }
        }
        if text(obj, "message").len() > NOTE_LIMIT {
            errs.push(FieldError::invalid(
                "message",
                json!(""),
                format!("can have at most {NOTE_LIMIT} characters"),
            ));
        }
    }
    if !namespace.is_empty() && !is_dns1123_subdomain(namespace) {
        errs.push(FieldError::invalid(
            "metadata.namespace",
            json!(namespace),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::validate_event;
    use serde_json::json;

    fn new_style() -> serde_json::Value {
        json!({
            "metadata": {"name": "web.1", "namespace": "shop"},
            "involvedObject": {"kind": "Service", "name": "web", "namespace": "shop"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingComponent": "svcnet-endpointslice",
            "reportingInstance": "node-a",
            "action": "Sync",
            "reason": "SelectorMatchesNoPods",
            "message": "x",
        })
    }

    fn fields(obj: &serde_json::Value) -> Vec<String> {
        validate_event(obj).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn new_style_events_need_reporter_action_and_reason() {
        assert!(fields(&new_style()).is_empty());
        for field in [
            "reportingComponent",
            "reportingInstance",
            "action",
            "reason",
        ] {
            let mut e = new_style();
            e[field] = json!("");
            assert_eq!(fields(&e), vec![field.to_string()], "{field} empty");
        }
        let mut e = new_style();
        e["reportingInstance"] = json!("i".repeat(129));
        assert_eq!(fields(&e), vec!["reportingInstance".to_string()]);
        let mut e = new_style();
        e["message"] = json!("m".repeat(1025));
        assert_eq!(fields(&e), vec!["message".to_string()]);
    }

    #[test]
    fn old_style_events_must_agree_on_the_namespace() {
        let mut e = new_style();
        e.as_object_mut().unwrap().remove("eventTime");
        e["reportingInstance"] = json!("");
        assert!(fields(&e).is_empty(), "old style needs no reporter");
        e["involvedObject"]["namespace"] = json!("other");
        assert_eq!(fields(&e), vec!["involvedObject.namespace".to_string()]);
    }
}
