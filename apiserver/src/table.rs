//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), so that
//! `kubectl get` shows the usual columns (e.g. a Service's CLUSTER-IP and PORT(S)).
//! Unknown kinds get NAME and AGE, like CRDs without printer columns.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::resources::ResourceInfo;

/// Does the Accept header ask for a Table?
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

fn col(name: &str, ty: &str, priority: u32) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// Human-readable age, as kubectl's `duration.HumanDuration`.
fn age(obj: &Value) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(s(obj, "/metadata/creationTimestamp")) else {
        return "<unknown>".into();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn service_ports(obj: &Value) -> String {
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn selector(obj: &Value) -> String {
    match obj.pointer("/spec/selector").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.to_string()
    }
}

fn columns_and_cells(info: &ResourceInfo, items: &[Value]) -> (Vec<Value>, Vec<Vec<Value>>) {
    let name = |o: &Value| json!(s(o, "/metadata/name"));
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "services") => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Cluster-IP", "string", 0),
                col("External-IP", "string", 0),
                col("Port(s)", "string", 0),
                col("Age", "string", 0),
                col("Selector", "string", 1),
            ],
            items
                .iter()
                .map(|o| {
                    let ingress: Vec<String> = o
                        .pointer("/status/loadBalancer/ingress")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| {
                                    i.get("ip").and_then(Value::as_str).map(str::to_string)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let ext = if !ingress.is_empty() {
                        ingress.join(",")
                    } else if s(o, "/spec/type") == "LoadBalancer" {
                        "<pending>".into()
                    } else if s(o, "/spec/type") == "ExternalName" {
                        s(o, "/spec/externalName").to_string()
                    } else {
                        "<none>".into()
                    };
                    vec![
                        name(o),
                        json!(s(o, "/spec/type")),
                        json!(or_none(s(o, "/spec/clusterIP"))),
                        json!(ext),
                        json!(service_ports(o)),
                        json!(age(o)),
                        json!(selector(o)),
                    ]
                })
                .collect(),
        ),
        ("", "pods") => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
            ],
            items
                .iter()
                .map(|o| {
                    let total = o
                        .pointer("/spec/containers")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    let ready = o
                        .pointer("/status/containerStatuses")
                        .and_then(Value::as_array)
                        .map_or(0, |a| {
                            a.iter()
                                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                                .count()
                        });
                    let status = if o.pointer("/metadata/deletionTimestamp").is_some() {
                        "Terminating".to_string()
                    } else {
                        or_none(s(o, "/status/phase"))
                    };
                    vec![
                        name(o),
                        json!(format!("{ready}/{total}")),
                        json!(status),
                        json!("0"),
                        json!(age(o)),
                        json!(or_none(s(o, "/status/podIP"))),
                        json!(or_none(s(o, "/spec/nodeName"))),
                    ]
                })
                .collect(),
        ),
        ("discovery.k8s.io", "endpointslices") => (
            vec![
                col("Name", "string", 0),
                col("AddressType", "string", 0),
                col("Ports", "string", 0),
                col("Endpoints", "string", 0),
                col("Age", "string", 0),
            ],
            items
                .iter()
                .map(|o| {
                    let ports: Vec<String> = o
                        .get("ports")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|p| p.get("port").and_then(Value::as_i64))
                                .map(|p| p.to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    let addrs: Vec<String> = o
                        .get("endpoints")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|e| {
                                    e.pointer("/addresses/0")
                                        .and_then(Value::as_str)
                                        .map(str::to_string)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    vec![
                        name(o),
                        json!(s(o, "/addressType")),
                        json!(if ports.is_empty() {
                            "<unset>".to_string()
                        } else {
                            ports.join(",")
                        }),
                        json!(if addrs.is_empty() {
                            "<unset>".to_string()
                        } else {
                            abbreviate(&addrs)
                        }),
                        json!(age(o)),
                    ]
                })
                .collect(),
        ),
        ("", "namespaces") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            items
                .iter()
                .map(|o| vec![name(o), json!(s(o, "/status/phase")), json!(age(o))])
                .collect(),
        ),
        ("", "nodes") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            items
                .iter()
                .map(|o| {
                    let ready = o
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|cs| {
                            cs.iter()
                                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                        })
                        .and_then(|c| c.get("status").and_then(Value::as_str))
                        .map_or(
                            "Unknown",
                            |st| if st == "True" { "Ready" } else { "NotReady" },
                        );
                    vec![name(o), json!(ready), json!(age(o))]
                })
                .collect(),
        ),
        ("networking.k8s.io", "servicecidrs") => (
            vec![
                col("Name", "string", 0),
                col("CIDRs", "string", 0),
                col("Age", "string", 0),
            ],
            items
                .iter()
                .map(|o| vec![name(o), json!(service_cidrs(o)), json!(age(o))])
                .collect(),
        ),
        // Upstream declares only these two columns for IPAddresses.
        ("networking.k8s.io", "ipaddresses") => (
            vec![col("Name", "string", 0), col("ParentRef", "string", 0)],
            items
                .iter()
                .map(|o| vec![name(o), json!(parent_ref(o))])
                .collect(),
        ),
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            items.iter().map(|o| vec![name(o), json!(age(o))]).collect(),
        ),
    }
}

/// A ServiceCIDR's ranges, comma-separated.
fn service_cidrs(obj: &Value) -> String {
    obj.pointer("/spec/cidrs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// An IPAddress's owner as `resource[.group][/namespace]/name`, lower-cased resource and group.
fn parent_ref(obj: &Value) -> String {
    let Some(r) = obj.pointer("/spec/parentRef").filter(|r| r.is_object()) else {
        return "<none>".into();
    };
    let (group, resource) = (s(r, "/group"), s(r, "/resource"));
    let mut out = if group.is_empty() {
        resource.to_lowercase()
    } else {
        format!("{resource}.{group}").to_lowercase()
    };
    if !s(r, "/namespace").is_empty() {
        out = format!("{out}/{}", s(r, "/namespace"));
    }
    format!("{out}/{}", s(r, "/name"))
}

fn abbreviate(addrs: &[String]) -> String {
    if addrs.len() <= 3 {
        addrs.join(",")
    } else {
        format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
    }
}

/// Render objects as a `meta.k8s.io/v1` Table. `include_object` follows the `includeObject`
/// parameter: `Object` embeds the object, `None` nothing, default `Metadata`.
pub(crate) fn render(
    info: &ResourceInfo,
    items: &[Value],
    rv: u64,
    cont: Option<&str>,
    include_object: &str,
) -> Value {
    let (columns, cells) = columns_and_cells(info, items);
    let rows: Vec<Value> = items
        .iter()
        .zip(cells)
        .map(|(o, cells)| {
            let object = match include_object {
                "Object" => o.clone(),
                "None" => Value::Null,
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(Value::Null)}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn service_row() {
        let info = Registry::builtin().find("", "v1", "services").unwrap();
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
                         "spec": {"type": "NodePort", "clusterIP": "10.0.0.5", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let t = render(&info, &[svc], 7, None, "");
        assert_eq!(t["rows"][0]["cells"][2], "10.0.0.5");
        assert_eq!(t["rows"][0]["cells"][4], "80:30080/TCP");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn networking_rows() {
        let reg = Registry::builtin();
        let cidrs = reg.find("networking.k8s.io", "v1", "servicecidrs").unwrap();
        let c = json!({"metadata": {"name": "extra", "creationTimestamp": "2020-01-01T00:00:00Z"},
                       "spec": {"cidrs": ["10.96.0.0/16", "fd00::/108"]}});
        let t = render(&cidrs, &[c], 1, None, "");
        assert_eq!(t["columnDefinitions"][1]["name"], "CIDRs");
        assert_eq!(t["rows"][0]["cells"][1], "10.96.0.0/16,fd00::/108");
        let ips = reg.find("networking.k8s.io", "v1", "ipaddresses").unwrap();
        let svc = json!({"metadata": {"name": "10.96.0.10"},
                         "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "kube-system", "name": "dns"}}});
        let gw = json!({"metadata": {"name": "10.96.0.11"},
                        "spec": {"parentRef": {"group": "Gateway.networking.k8s.io", "resource": "Gateways", "name": "gw"}}});
        let t = render(
            &ips,
            &[svc, gw, json!({"metadata": {"name": "::1"}})],
            1,
            None,
            "",
        );
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 2);
        assert_eq!(t["rows"][0]["cells"][1], "services/kube-system/dns");
        assert_eq!(
            t["rows"][1]["cells"][1],
            "gateways.gateway.networking.k8s.io/gw"
        );
        assert_eq!(t["rows"][2]["cells"][1], "<none>");
    }
}
