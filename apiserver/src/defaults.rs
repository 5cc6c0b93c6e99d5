//! Per-kind defaulting and validation, following upstream `pkg/apis/core/v1/defaults.go` and
//! `pkg/apis/core/validation` for the parts svcnet depends on.
//!
//! Deliberate difference from kube-apiserver: Services are never given a ClusterIP or NodePorts
//! here. On this server svcnet's IPAM controller is the allocator, so an empty `spec.clusterIP`
//! may later be set once by an update; after that it is immutable, as upstream.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::resources::ResourceInfo;
use super::status::FieldError;

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
/// DNS-1123 labels for Namespaces, subdomains for most others).
pub(crate) fn validate_name(info: &ResourceInfo, name: &str) -> Vec<FieldError> {
    let ok = match (info.group.as_str(), info.plural.as_str()) {
        ("", "services") => is_dns1035_label(name),
        ("", "namespaces") => is_dns1123_label(name),
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

/// `SetDefaults_Service`, plus the clusterIP/clusterIPs normalisation of the REST layer.
fn default_service(obj: &mut Value) {
    let spec = ensure_object(obj, "spec");
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("None") {
        spec.remove("sessionAffinityConfig");
    } else if spec.get("sessionAffinityConfig").is_none() {
        spec.insert(
            "sessionAffinityConfig".into(),
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            let unset = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                _ => false,
            };
            if unset {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if (ty == "NodePort" || ty == "LoadBalancer")
        && spec
            .get("externalTrafficPolicy")
            .is_none_or(|v| v.as_str() == Some(""))
    {
        spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
    }
    if ty != "ExternalName" && spec.get("internalTrafficPolicy").is_none_or(Value::is_null) {
        spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
    }
    if ty == "LoadBalancer"
        && spec
            .get("allocateLoadBalancerNodePorts")
            .is_none_or(Value::is_null)
    {
        spec.insert("allocateLoadBalancerNodePorts".into(), json!(true));
    }
    // clusterIP and clusterIPs[0] are kept in step.
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ips: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !ip.is_empty() && ips.is_empty() {
        spec.insert("clusterIPs".into(), json!([ip]));
    } else if ip.is_empty() && !ips.is_empty() {
        spec.insert("clusterIP".into(), json!(ips[0]));
    }
}

/// Upstream `patchAllocatedValues`: an update that omits clusterIP / nodePorts / healthCheckNodePort
/// keeps the values the Service already has (so `kubectl replace` and apply do not "release" them).
fn keep_allocated_values(old: &Value, new: &mut Value) {
    let old_ty = old
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let new_ty = new
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if new_ty == "ExternalName" {
        return;
    }
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let spec = ensure_object(new, "spec");
    if old_ty != "ExternalName"
        && spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
    {
        if let Some(ip) = old_spec
            .get("clusterIP")
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            spec.insert("clusterIP".into(), ip.clone());
            if let Some(ips) = old_spec.get("clusterIPs") {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        }
    }
    if new_ty == "NodePort" || new_ty == "LoadBalancer" {
        let old_ports = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    continue;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port")
                        && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                });
                if let Some(np) = same
                    .and_then(|o| o.get("nodePort"))
                    .filter(|n| n.as_i64().unwrap_or(0) != 0)
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
        if spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
        {
            if let Some(h) = old_spec
                .get("healthCheckNodePort")
                .filter(|n| n.as_i64().unwrap_or(0) != 0)
            {
                spec.insert("healthCheckNodePort".into(), h.clone());
            }
        }
    }
}

fn valid_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn validate_service(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", json!(ty), TYPES));
    }
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && !valid_ip(cluster_ip) {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            json!(cluster_ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    let ips: Vec<&str> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(first) = ips.first() {
        if *first != cluster_ip {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                json!(ips),
                "must match the value of spec.clusterIP",
            ));
        }
    }
    for (i, ip) in ips.iter().enumerate().skip(1) {
        if !valid_ip(ip) {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                json!(ip),
                "must be a valid IP address",
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            json!(ips),
            "may only hold up to 2 values",
        ));
    }
    if ty == "ExternalName" {
        let en = spec
            .get("externalName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if en.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else if !is_dns1123_subdomain(en.trim_end_matches('.')) {
            errs.push(FieldError::invalid(
                "spec.externalName",
                json!(en),
                "must be a valid DNS name",
            ));
        }
        if !cluster_ip.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
    }
    if headless && (ty == "NodePort" || ty == "LoadBalancer") {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            json!("None"),
            format!("may not be set to 'None' for {ty} services"),
        ));
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    const PROTOS: &[&str] = &["SCTP", "TCP", "UDP"];
    let mut seen_names = HashSet::new();
    let mut seen_ports = HashSet::new();
    let mut seen_node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        }
        if !name.is_empty() {
            if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(
                    format!("{path}.name"),
                    json!(name),
                    "must be a DNS-1123 label",
                ));
            }
            if !seen_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), json!(name)));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{path}.port"),
                p.get("port").cloned().unwrap_or(json!(0)),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !PROTOS.contains(&proto) {
            errs.push(FieldError::not_supported(
                format!("{path}.protocol"),
                json!(proto),
                PROTOS,
            ));
        }
        if !seen_ports.insert((port, proto.to_string())) {
            errs.push(FieldError::duplicate(
                path.clone(),
                json!({"port": port, "protocol": proto}),
            ));
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) if !n.as_i64().is_some_and(|t| (1..=65535).contains(&t)) => {
                errs.push(FieldError::invalid(
                    format!("{path}.targetPort"),
                    Value::Number(n.clone()),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            Some(Value::String(s)) => {
                let ok = s.len() <= 15
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && s.bytes().any(|b| b.is_ascii_lowercase())
                    && !s.starts_with('-')
                    && !s.ends_with('-')
                    && !s.contains("--");
                if !ok {
                    errs.push(FieldError::invalid(
                        format!("{path}.targetPort"),
                        json!(s),
                        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                    ));
                }
            }
            _ => {}
        }
        let node_port = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if ty != "NodePort" && ty != "LoadBalancer" {
                errs.push(FieldError::forbidden(
                    format!("{path}.nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            } else if !(1..=65535).contains(&node_port) {
                errs.push(FieldError::invalid(
                    format!("{path}.nodePort"),
                    json!(node_port),
                    "must be between 1 and 65535, inclusive",
                ));
            } else if !seen_node_ports.insert((node_port, proto.to_string())) {
                errs.push(FieldError::duplicate(
                    format!("{path}.nodePort"),
                    json!(node_port),
                ));
            }
        }
    }
    const AFFINITY: &[&str] = &["ClientIP", "None"];
    let aff = spec
        .get("sessionAffinity")
        .and_then(Value::as_str)
        .unwrap_or("None");
    if !AFFINITY.contains(&aff) {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            json!(aff),
            AFFINITY,
        ));
    }
    const POLICIES: &[&str] = &["Cluster", "Local"];
    if let Some(etp) = spec
        .get("externalTrafficPolicy")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if ty != "NodePort" && ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                "spec.externalTrafficPolicy",
                "may only be set for externally-accessible services",
            ));
        } else if !POLICIES.contains(&etp) {
            errs.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                json!(etp),
                POLICIES,
            ));
        }
    }
    if let Some(itp) = spec.get("internalTrafficPolicy").and_then(Value::as_str) {
        if !POLICIES.contains(&itp) {
            errs.push(FieldError::not_supported(
                "spec.internalTrafficPolicy",
                json!(itp),
                POLICIES,
            ));
        }
    }
    let hc = spec
        .get("healthCheckNodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if hc != 0 {
        let local = spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
        if ty != "LoadBalancer" || !local {
            errs.push(FieldError::invalid("spec.healthCheckNodePort", json!(hc), "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"));
        } else if !(1..=65535).contains(&hc) {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                json!(hc),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    if let Some(old) = old {
        let old_ip = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let old_ty = old
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        // Immutable once set; clearing is only allowed when the Service becomes ExternalName,
        // and a Service coming from ExternalName may get a fresh value.
        let changing_to_en =
            ty == "ExternalName" && old_ty != "ExternalName" && cluster_ip.is_empty();
        if !old_ip.is_empty() && old_ip != cluster_ip && !changing_to_en && old_ty != "ExternalName"
        {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                json!(cluster_ip),
                "may not change once set",
            ));
        }
        let old_ips: Vec<&str> = old
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if old_ips.len() == 2 && ips.len() == 2 && old_ips[1] != ips[1] {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[1]",
                json!(ips[1]),
                "may not change once set",
            ));
        }
    }
    errs
}

fn default_pod(obj: &mut Value) {
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
fn pod_qos(obj: &Value) -> &'static str {
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

fn validate_pod(obj: &Value) -> Vec<FieldError> {
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
fn validate_pod_spec_update(old: &Value, new: &Value) -> Vec<FieldError> {
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

fn validate_endpointslice(obj: &Value) -> Vec<FieldError> {
    const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    let mut errs = Vec::new();
    match obj.get("addressType").and_then(Value::as_str) {
        None => errs.push(FieldError::required("addressType", "")),
        Some(t) if !TYPES.contains(&t) => {
            errs.push(FieldError::not_supported("addressType", json!(t), TYPES))
        }
        _ => {}
    }
    if let Some(eps) = obj.get("endpoints").and_then(Value::as_array) {
        for (i, e) in eps.iter().enumerate() {
            let n = e
                .get("addresses")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if n == 0 || n > 100 {
                errs.push(FieldError::required(
                    format!("endpoints[{i}].addresses"),
                    "must contain at least 1 and at most 100 addresses",
                ));
            }
        }
    }
    errs
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
