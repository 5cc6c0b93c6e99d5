//! Services: `SetDefaults_Service`, the REST layer's clusterIP normalisation, allocated values kept
//! across updates, and `ValidateService` for the fields svcnet depends on.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{ensure_object, is_dns1123_label, is_dns1123_subdomain, set_default};
use crate::status::FieldError;

/// `SetDefaults_Service`, plus the clusterIP/clusterIPs normalisation of the REST layer.
pub(super) fn default_service(obj: &mut Value) {
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
pub(super) fn keep_allocated_values(old: &Value, new: &mut Value) {
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

pub(super) fn validate_service(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
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
