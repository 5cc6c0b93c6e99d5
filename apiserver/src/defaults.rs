//! Per-kind defaulting and validation, following upstream `pkg/apis/core/v1/defaults.go` and
//! `pkg/apis/core/validation` for the parts svcnet depends on.
//!
//! Deliberate difference from kube-apiserver: Services are never given a ClusterIP or NodePorts
//! here. On this server svcnet's IPAM controller is the allocator, so an empty `spec.clusterIP`
//! may later be set once by an update; after that it is immutable, as upstream.

use serde_json::{json, Map, Value};

use super::resources::ResourceInfo;
use super::status::FieldError;

mod endpointslice;
mod event;
mod ip;
mod networking;
mod pod;
mod service;

use endpointslice::validate_endpointslice;
use event::validate_event;
use networking::{
    create_service_cidr, validate_ip_address, validate_ip_address_update,
    validate_service_cidr_update,
};
use pod::{default_pod, pod_qos, validate_pod, validate_pod_spec_update};
use service::{default_service, keep_allocated_values, validate_service};

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

/// Validate the object name for a resource (upstream uses DNS-1035 for Services,
/// DNS-1123 labels for Namespaces, IP addresses for IPAddresses, subdomains for most others).
pub(crate) fn validate_name(info: &ResourceInfo, name: &str) -> Vec<FieldError> {
    let ok = match (info.group.as_str(), info.plural.as_str()) {
        ("", "services") => is_dns1035_label(name),
        ("", "namespaces") => is_dns1123_label(name),
        ("networking.k8s.io", "ipaddresses") => return ip::validate_ip("metadata.name", name),
        ("networking.k8s.io", "servicecidrs") => is_dns1123_subdomain(name),
        _ => {
            is_dns1123_subdomain(name)
                || (info.crd.is_none() && name.contains(':') && !name.contains('/'))
        }
    };
    if ok {
        Vec::new()
    } else {
        vec![FieldError::invalid("metadata.name", Value::String(name.into()), "a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")]
    }
}

/// The name a create with only `generateName` gets, when the kind does not append a random
/// suffix: IPAddress names are the address itself, so upstream uses `generateName` as it is.
pub(crate) fn generated_name(info: &ResourceInfo, generate: &str) -> Option<String> {
    (info.group == "networking.k8s.io" && info.plural == "ipaddresses").then(|| generate.into())
}

/// Validate labels and finalizers.
pub(crate) fn validate_meta(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                errs.push(FieldError::invalid(
                    "metadata.labels",
                    Value::String(k.clone()),
                    "name part must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                _ => errs.push(FieldError::invalid("metadata.labels", v.clone(), "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")),
            }
        }
    }
    if let Some(fins) = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
    {
        for (i, f) in fins.iter().enumerate() {
            if !f.as_str().is_some_and(|s| {
                is_qualified_name(s) || matches!(s, "foregroundDeletion" | "orphan")
            }) {
                errs.push(FieldError::invalid(
                    format!("metadata.finalizers[{i}]"),
                    f.clone(),
                    "name part must consist of alphanumeric characters",
                ));
            }
        }
    }
    errs
}

/// Defaulting and validation on create. Also resets `.status` where upstream does.
pub(crate) fn on_create(info: &ResourceInfo, obj: &mut Value) -> Vec<FieldError> {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "services") => {
            obj["status"] = json!({"loadBalancer": {}});
            default_service(obj);
            validate_service(obj, None)
        }
        ("", "pods") => {
            default_pod(obj);
            let qos = pod_qos(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            validate_pod(obj)
        }
        ("", "namespaces") => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let meta = ensure_object(obj, "metadata");
            let labels = ensure_object_map(meta, "labels");
            labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            if obj.pointer("/spec/finalizers").is_none() {
                ensure_object(obj, "spec").insert("finalizers".into(), json!(["kubernetes"]));
            }
            obj["status"] = json!({"phase": "Active"});
            Vec::new()
        }
        ("discovery.k8s.io", "endpointslices") => validate_endpointslice(obj),
        ("", "events") => validate_event(obj),
        ("networking.k8s.io", "servicecidrs") => create_service_cidr(obj),
        ("networking.k8s.io", "ipaddresses") => validate_ip_address(obj),
        _ => {
            if info.crd.is_some() && info.status {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
            Vec::new()
        }
    }
}

/// Defaulting and validation on update (main resource or status).
pub(crate) fn on_update(
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
    sub: Sub,
) -> Vec<FieldError> {
    match (info.group.as_str(), info.plural.as_str(), sub) {
        ("", "services", Sub::Main) => {
            default_service(new);
            keep_allocated_values(old, new);
            validate_service(new, Some(old))
        }
        ("", "pods", Sub::Main) => {
            default_pod(new);
            let mut errs = validate_pod(new);
            errs.extend(validate_pod_spec_update(old, new));
            errs
        }
        ("", "namespaces", Sub::Main) => {
            // spec.finalizers can only change through /finalize.
            if let Some(f) = old.pointer("/spec/finalizers") {
                ensure_object(new, "spec").insert("finalizers".into(), f.clone());
            }
            let name = new
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let labels = ensure_object_map(ensure_object(new, "metadata"), "labels");
            labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            Vec::new()
        }
        ("discovery.k8s.io", "endpointslices", _) => validate_endpointslice(new),
        ("", "events", Sub::Main) => validate_event(new),
        ("networking.k8s.io", "servicecidrs", Sub::Main) => validate_service_cidr_update(old, new),
        ("networking.k8s.io", "ipaddresses", Sub::Main) => validate_ip_address_update(old, new),
        _ => Vec::new(),
    }
}

pub(crate) fn ensure_object<'a>(obj: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let m = obj.as_object_mut().expect("just made an object");
    ensure_object_map(m, field)
}

pub(crate) fn ensure_object_map<'a>(
    m: &'a mut Map<String, Value>,
    field: &str,
) -> &'a mut Map<String, Value> {
    let entry = m
        .entry(field.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key)
        .is_none_or(|x| x.is_null() || x.as_str() == Some(""))
    {
        m.insert(key.into(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn svc_info() -> ResourceInfo {
        Registry::builtin()
            .find("", "v1", "services")
            .unwrap()
            .as_ref()
            .clone()
    }

    #[test]
    fn service_defaults() {
        let mut s = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        assert!(on_create(&svc_info(), &mut s).is_empty());
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(
            s["spec"].get("clusterIP").is_none(),
            "no allocation on this server"
        );
    }

    #[test]
    fn service_validation() {
        let mut s = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 0, "protocol": "XX"}, {"port": 5, "name": "a"}]}});
        let errs = on_create(&svc_info(), &mut s);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"spec.ports[0].name"));
        assert!(fields.contains(&"spec.ports[0].port"));
        assert!(fields.contains(&"spec.ports[0].protocol"));
        let old = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        let mut new = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.0.0.2", "ports": [{"port": 80}]}});
        assert_eq!(on_update(&svc_info(), &old, &mut new, Sub::Main).len(), 1);
        let mut keep = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        assert!(on_update(&svc_info(), &old, &mut keep, Sub::Main).is_empty());
        assert_eq!(keep["spec"]["clusterIP"], "10.0.0.1");
    }
}
