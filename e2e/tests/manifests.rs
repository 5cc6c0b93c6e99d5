//! Tests of the deployable manifests in `manifests/`.
//!
//! * They are rendered with `kubectl kustomize manifests/` (kubectl must be installed) and every
//!   object is parsed into its k8s-openapi type; an unexpected kind fails.
//! * Structural requirements: the controller Deployment (2 replicas, leader election, probes,
//!   requests and limits, non-root, read-only root filesystem, no capabilities), the proxy
//!   DaemonSet (hostNetwork, only NET_ADMIN and NET_RAW, probes, tolerates every taint), the svcnet-dns
//!   Deployment and its `kube-dns` Service (kube-system, 10.96.0.10, DNS ports mapped onto the
//!   port the binary listens on, probes on its admin port, no capabilities), bindings that
//!   reference existing roles and ServiceAccounts, and args/env the binaries' CLIs accept.
//! * RBAC coverage ([`rbac_covers_every_api_call_and_nothing_more`], **needs root**): the real
//!   `svcnet-controller`, `svcnet-proxy run` and `svcnet-dns` binaries, started with the args
//!   and env of the
//!   manifests, run in network namespaces against the embedded API server with its request
//!   audit on, while a workload exercises their code paths. Every request each binary made must
//!   be allowed by the RBAC bound to its ServiceAccount, and every permission the manifests grant
//!   must have been used, or be listed in [`JUSTIFIED_UNUSED`] with the reason.
//!
//! The binaries must be built first (`cargo build -p svcnet-controllers -p svcnet-dataplane
//! -p svcnet-dns --bins`; a workspace-wide `cargo nextest run` does it). The root test takes ~15 s.
//!
//! One file because every test reads the same rendered kustomization and the RBAC test's
//! workload exercises every binary at once; splitting it would render and start them per file.

// Test code: unwrap/expect failures are test failures.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apiserver::{ApiServer, AuditRecord, ServerConfig};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Container, Endpoints, Event, Namespace, Node, Pod, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use testkit::netns::{bins, Netns, Process, Topology};

/// Namespace of the controller and the proxy (the manifests' Namespace).
const SYSTEM_NS: &str = "svcnet-system";
/// Namespace of svcnet-dns and its `kube-dns` Service (where kubelets' clusterDNS points).
const DNS_NS: &str = "kube-system";
/// The `kube-dns` Service's ClusterIP, the conventional `clusterDNS` of a 10.96.0.0/12 cluster.
const DNS_CLUSTER_IP: &str = "10.96.0.10";

/// Permissions the manifests grant that the workload does not exercise, each with the reason
/// it is kept: (role "Kind/name", apiGroup, resource, verb) → why.
const JUSTIFIED_UNUSED: &[(&str, &str, &str, &str, &str)] = &[
    (
        "ClusterRole/svcnet-controller",
        "",
        "services",
        "get",
        "IPAM re-reads a Service from the API server (not its cache) before the repair loop \
         releases an allocation that looks leaked, and after a 409 Conflict on its update; \
         neither happens in a short, conflict-free run",
    ),
    (
        "Role/svcnet-system/svcnet-proxy-l2-leases",
        "coordination.k8s.io",
        "leases",
        "get",
        "the L2 speaker re-reads its heartbeat Lease only after a 409 Conflict on renewing it \
         (another writer changed it); a conflict-free run never does",
    ),
];

// ---------------------------------------------------------------------------------------------
// Rendering and parsing
// ---------------------------------------------------------------------------------------------

/// Every object of the rendered manifests, by kind.
#[derive(Default)]
struct Manifests {
    crds: Vec<CustomResourceDefinition>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    daemonsets: Vec<DaemonSet>,
    services: Vec<Service>,
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ lives inside the workspace")
        .to_path_buf()
}

/// `kubectl kustomize manifests/`, or a clear failure.
fn render() -> String {
    let dir = workspace_dir().join("manifests");
    let out = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed (or not on PATH): it is needed to render {} with `kubectl kustomize`",
            dir.display()
        ),
        Err(e) => panic!("running kubectl kustomize {}: {e}", dir.display()),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed ({}): {}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

fn typed<T: DeserializeOwned>(doc: serde_yaml::Value, kind: &str, name: &str) -> T {
    serde_yaml::from_value(doc)
        .unwrap_or_else(|e| panic!("{kind} {name:?} does not parse as a k8s-openapi {kind}: {e}"))
}

/// Parses a multi-document YAML stream into typed objects; unknown kinds fail.
fn parse(yaml: &str) -> Manifests {
    let mut m = Manifests::default();
    for de in serde_yaml::Deserializer::from_str(yaml) {
        let doc = serde_yaml::Value::deserialize(de).expect("kubectl kustomize prints valid YAML");
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match (api_version.as_str(), kind.as_str()) {
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                m.crds.push(typed(doc, &kind, &name))
            }
            ("v1", "Namespace") => m.namespaces.push(typed(doc, &kind, &name)),
            ("v1", "ServiceAccount") => m.service_accounts.push(typed(doc, &kind, &name)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                m.cluster_roles.push(typed(doc, &kind, &name))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                m.cluster_role_bindings.push(typed(doc, &kind, &name))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(typed(doc, &kind, &name)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                m.role_bindings.push(typed(doc, &kind, &name))
            }
            ("apps/v1", "Deployment") => m.deployments.push(typed(doc, &kind, &name)),
            ("apps/v1", "DaemonSet") => m.daemonsets.push(typed(doc, &kind, &name)),
            ("v1", "Service") => m.services.push(typed(doc, &kind, &name)),
            _ => panic!("unexpected object {api_version} {kind} {name:?} in the manifests"),
        }
    }
    m
}

fn manifests() -> &'static Manifests {
    static M: OnceLock<Manifests> = OnceLock::new();
    M.get_or_init(|| parse(&render()))
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn controller_deployment(m: &Manifests) -> &Deployment {
    let found: Vec<_> = m
        .deployments
        .iter()
        .filter(|d| name_of(&d.metadata) == "svcnet-controller")
        .collect();
    assert_eq!(found.len(), 1, "exactly one Deployment svcnet-controller");
    found[0]
}

fn dns_deployment(m: &Manifests) -> &Deployment {
    let found: Vec<_> = m
        .deployments
        .iter()
        .filter(|d| name_of(&d.metadata) == "svcnet-dns")
        .collect();
    assert_eq!(found.len(), 1, "exactly one Deployment svcnet-dns");
    found[0]
}

fn dns_container(m: &Manifests) -> (Container, String) {
    let spec = dns_deployment(m)
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("Deployment has a pod spec");
    (
        only_container(spec, "svcnet-dns"),
        spec.service_account_name.clone().unwrap_or_default(),
    )
}

fn proxy_daemonset(m: &Manifests) -> &DaemonSet {
    let found: Vec<_> = m
        .daemonsets
        .iter()
        .filter(|d| name_of(&d.metadata) == "svcnet-proxy")
        .collect();
    assert_eq!(found.len(), 1, "exactly one DaemonSet svcnet-proxy");
    found[0]
}

fn only_container(spec: &k8s_openapi::api::core::v1::PodSpec, what: &str) -> Container {
    assert_eq!(spec.containers.len(), 1, "{what}: exactly one container");
    assert!(
        spec.init_containers.as_ref().is_none_or(Vec::is_empty),
        "{what}: no init containers"
    );
    spec.containers[0].clone()
}

fn controller_container(m: &Manifests) -> (Container, String) {
    let d = controller_deployment(m);
    let spec = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("Deployment has a pod spec");
    (
        only_container(spec, "svcnet-controller"),
        spec.service_account_name.clone().unwrap_or_default(),
    )
}

fn proxy_container(m: &Manifests) -> (Container, String) {
    let d = proxy_daemonset(m);
    let spec = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("DaemonSet has a pod spec");
    (
        only_container(spec, "svcnet-proxy"),
        spec.service_account_name.clone().unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------------------------
// Structural checks
// ---------------------------------------------------------------------------------------------

#[test]
fn every_object_parses_and_all_expected_objects_exist() {
    let m = manifests();
    let mut crds: Vec<_> = m.crds.iter().map(|c| name_of(&c.metadata)).collect();
    crds.sort();
    assert_eq!(
        crds,
        [
            "l2announcements.svcnet.io",
            "loadbalancerippools.svcnet.io",
            "nodeportclaims.svcnet.io",
            "serviceipclaims.svcnet.io"
        ]
    );
    let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<BTreeSet<_>>();
    assert_eq!(
        names(m.namespaces.iter().map(|n| name_of(&n.metadata)).collect()),
        names(vec![SYSTEM_NS])
    );
    let scoped = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            name_of(meta)
        )
    };
    let sa_ns = |n: &str| if n == "svcnet-dns" { DNS_NS } else { SYSTEM_NS };
    assert_eq!(
        names(
            m.service_accounts
                .iter()
                .map(|n| name_of(&n.metadata))
                .collect()
        ),
        names(vec!["svcnet-controller", "svcnet-dns", "svcnet-proxy"])
    );
    for sa in &m.service_accounts {
        let n = name_of(&sa.metadata);
        assert_eq!(sa.metadata.namespace.as_deref(), Some(sa_ns(n)), "{n}");
    }
    assert_eq!(
        m.deployments
            .iter()
            .map(|d| scoped(&d.metadata))
            .collect::<BTreeSet<_>>(),
        [
            format!("{SYSTEM_NS}/svcnet-controller"),
            format!("{DNS_NS}/svcnet-dns")
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        m.services
            .iter()
            .map(|s| scoped(&s.metadata))
            .collect::<Vec<_>>(),
        [format!("{DNS_NS}/kube-dns")]
    );
    for d in &m.daemonsets {
        assert_eq!(d.metadata.namespace.as_deref(), Some(SYSTEM_NS));
    }
    assert!(!m.cluster_roles.is_empty() && !m.cluster_role_bindings.is_empty());
    // The CRDs are the crds crate's (its own test checks they are not stale); here: served.
    for c in &m.crds {
        assert!(
            c.spec.versions.iter().any(|v| v.served && v.storage),
            "{}: a served storage version",
            name_of(&c.metadata)
        );
    }
}

/// A probe's HTTP port, resolved against the container's named ports.
fn probe_port(c: &Container, p: &Probe, what: &str) -> i32 {
    let get = p
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: an httpGet probe"));
    match &get.port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{what}: probe port {name:?} is not a container port"))
                .container_port
        }
    }
}

fn probe_path(p: &Probe) -> String {
    p.http_get
        .as_ref()
        .and_then(|g| g.path.clone())
        .unwrap_or_default()
}

/// The port of `--flag=host:port` / `--flag host:port` in `args`.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
        if a == flag {
            return it.next().cloned();
        }
    }
    None
}

fn port_of(addr: &str) -> i32 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

fn has_quantity(
    r: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> bool {
    r.as_ref().is_some_and(|m| m.contains_key(key))
}

/// Asserts what every svcnet workload without kernel duties has: CPU and memory requests, a
/// memory limit, non-root (pod or container level), a read-only root filesystem, no privilege
/// escalation, every capability dropped. Returns the capabilities the container adds back.
fn assert_hardened(pod: &k8s_openapi::api::core::v1::PodSpec, c: &Container) -> Vec<String> {
    let res = c.resources.as_ref().expect("resources");
    assert!(has_quantity(&res.requests, "cpu") && has_quantity(&res.requests, "memory"));
    assert!(has_quantity(&res.limits, "memory"), "a memory limit");
    let psc = pod.security_context.clone().unwrap_or_default();
    let csc = c
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(
        csc.run_as_non_root.or(psc.run_as_non_root),
        Some(true),
        "runAsNonRoot"
    );
    let uid = csc.run_as_user.or(psc.run_as_user);
    assert!(uid.is_some_and(|u| u != 0), "a non-zero runAsUser: {uid:?}");
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_ne!(csc.privileged, Some(true));
    let caps = csc.capabilities.clone().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    caps.add.unwrap_or_default()
}

#[test]
fn controller_deployment_meets_the_issue() {
    let m = manifests();
    let d = controller_deployment(m);
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2), "2 replicas");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let (c, sa) = controller_container(m);
    assert_eq!(sa, "svcnet-controller");
    let args = c.args.clone().unwrap_or_default();
    let le = args
        .iter()
        .find(|a| *a == "--leader-elect" || a.starts_with("--leader-elect="));
    assert!(
        matches!(
            le.map(String::as_str),
            Some("--leader-elect" | "--leader-elect=true")
        ),
        "passes --leader-elect: {args:?}"
    );
    // The ClusterRole grants nothing on customresourcedefinitions: CRDs are applied from
    // manifests/crds, so `--install-crds` must stay off.
    assert!(
        !args
            .iter()
            .any(|a| a == "--install-crds" || a == "--install-crds=true"),
        "--install-crds needs RBAC on customresourcedefinitions, which is not granted"
    );
    assert_eq!(
        flag_value(&args, "--leader-elect-resource-namespace").as_deref(),
        Some(SYSTEM_NS),
        "the Lease lives in {SYSTEM_NS}, where the leader-election Role applies"
    );
    // Probes hit the admin server the binary serves /healthz and /readyz on.
    let metrics = flag_value(&args, "--metrics-bind-address").expect("--metrics-bind-address");
    let live = c.liveness_probe.as_ref().expect("livenessProbe");
    let ready = c.readiness_probe.as_ref().expect("readinessProbe");
    assert_eq!(probe_port(&c, live, "liveness"), port_of(&metrics));
    assert_eq!(probe_port(&c, ready, "readiness"), port_of(&metrics));
    assert_eq!(probe_path(live), "/healthz");
    // The binary serves /readyz too, but it is 503 on a standby replica; the RBAC test checks
    // both replicas answer 200 on the probes.
    assert_eq!(probe_path(ready), "/healthz");
    let added = assert_hardened(pod, &c);
    assert!(added.is_empty(), "adds no capability: {added:?}");
    assert_ne!(pod.host_network, Some(true));
}

#[test]
fn proxy_daemonset_meets_the_issue() {
    let m = manifests();
    let ds = proxy_daemonset(m);
    let pod = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let (c, sa) = proxy_container(m);
    assert_eq!(sa, "svcnet-proxy");
    assert_eq!(pod.host_network, Some(true), "hostNetwork");
    // Nothing beyond NET_ADMIN and NET_RAW (the ARP/NDP packet sockets of L2 announcement): no
    // host paths (nft and conntrack work over netlink).
    let host_paths: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.clone())
        .collect();
    assert!(host_paths.is_empty(), "hostPath volumes: {host_paths:?}");
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    let csc = c
        .security_context
        .clone()
        .expect("container securityContext");
    assert_ne!(csc.privileged, Some(true), "not privileged");
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    let caps = csc.capabilities.clone().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..])
    );
    // Every taint: one toleration `operator: Exists` without key (and without effect).
    let tol = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tol.iter().any(|t| t.operator.as_deref() == Some("Exists")
            && t.key.as_deref().unwrap_or_default().is_empty()
            && t.effect.as_deref().unwrap_or_default().is_empty()),
        "tolerates every taint: {tol:?}"
    );
    let args = resolved_args(&c, &fake_field_refs("svcnet-proxy-abcde", "node1"));
    assert!(
        args.iter().any(|a| a == "--l2-announce"),
        "L2 announcement on: {args:?}"
    );
    let healthz = flag_value(&args, "--healthz-bind-address").expect("--healthz-bind-address");
    let live = c.liveness_probe.as_ref().expect("livenessProbe");
    let ready = c.readiness_probe.as_ref().expect("readinessProbe");
    assert_eq!(probe_port(&c, live, "liveness"), port_of(&healthz));
    assert_eq!(probe_port(&c, ready, "readiness"), port_of(&healthz));
    assert_eq!(probe_path(live), "/livez");
    assert_eq!(probe_path(ready), "/healthz");
    assert_eq!(
        flag_value(&args, "--node-name").as_deref(),
        Some("node1"),
        "--node-name comes from spec.nodeName"
    );
    let res = c.resources.as_ref().expect("resources");
    assert!(has_quantity(&res.requests, "cpu") && has_quantity(&res.requests, "memory"));
    assert!(has_quantity(&res.limits, "memory"), "a memory limit");
}

#[test]
fn dns_deployment_and_service_meet_the_issue() {
    let m = manifests();
    let d = dns_deployment(m);
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2), "2 replicas");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let (c, sa) = dns_container(m);
    assert_eq!(sa, "svcnet-dns");
    let args = resolved_args(&c, &fake_field_refs("svcnet-dns-abcde", "node1"));
    // Non-ClusterFirst: names outside the zone go to the node's resolvers, not back to itself.
    assert_eq!(pod.dns_policy.as_deref(), Some("Default"), "dnsPolicy");
    assert_ne!(pod.host_network, Some(true));
    // The default pod mode watches no Pods (the RBAC grants none); verified mode would.
    let pods = flag_value(&args, "--pods").unwrap_or_else(|| "insecure".into());
    assert_ne!(pods, "verified", "--pods=verified needs list/watch on pods");
    // Probes on the admin port, which is also the metrics port.
    let admin = flag_value(&args, "--admin-listen").expect("--admin-listen");
    let live = c.liveness_probe.as_ref().expect("livenessProbe");
    let ready = c.readiness_probe.as_ref().expect("readinessProbe");
    assert_eq!(probe_port(&c, live, "liveness"), port_of(&admin));
    assert_eq!(probe_port(&c, ready, "readiness"), port_of(&admin));
    assert_eq!(probe_path(live), "/healthz");
    assert_eq!(probe_path(ready), "/readyz");
    // Hardened like the controller; NET_BIND_SERVICE only when it binds a privileged port.
    let added = assert_hardened(pod, &c);
    let listen = flag_value(&args, "--listen").expect("--listen");
    let listen_ports: BTreeSet<i32> = listen.split(',').map(port_of).collect();
    let privileged = listen_ports.iter().any(|p| *p < 1024);
    if privileged {
        assert_eq!(added, ["NET_BIND_SERVICE"], "binds {listen}");
    } else {
        assert!(
            added.is_empty(),
            "binds {listen}: adds no capability: {added:?}"
        );
    }
    // Spread over nodes.
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .cloned()
        .unwrap_or_default();
    assert!(
        anti.iter()
            .any(|t| t.pod_affinity_term.topology_key == "kubernetes.io/hostname"),
        "preferred podAntiAffinity by hostname"
    );
    // The kube-dns Service.
    let svc = &m.services[0];
    assert_eq!(name_of(&svc.metadata), "kube-dns");
    assert_eq!(svc.metadata.namespace.as_deref(), Some(DNS_NS));
    assert_eq!(
        svc.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("k8s-app"))
            .map(String::as_str),
        Some("kube-dns")
    );
    let sspec = svc.spec.as_ref().expect("Service spec");
    assert_eq!(sspec.cluster_ip.as_deref(), Some(DNS_CLUSTER_IP));
    let selector = sspec.selector.clone().unwrap_or_default();
    assert!(!selector.is_empty(), "a selector");
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    let pod_labels = pod_labels.unwrap_or_default();
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the selector matches the pods: {k}"
        );
    }
    let deploy_selector = spec.selector.match_labels.clone().unwrap_or_default();
    for (k, v) in &deploy_selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Deployment selects its pods: {k}"
        );
    }
    // Each Service port targets a container port of that protocol; DNS ports on what
    // --listen binds, metrics on the admin port.
    let target = |p: &k8s_openapi::api::core::v1::ServicePort| -> (i32, String) {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &p.target_port {
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(name)) => {
                let cp = c
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name))
                    .unwrap_or_else(|| panic!("targetPort {name:?} is not a container port"));
                assert_eq!(
                    cp.protocol.as_deref().unwrap_or("TCP"),
                    proto,
                    "targetPort {name:?}: protocol"
                );
                cp.container_port
            }
            None => p.port,
        };
        (port, proto)
    };
    let ports: BTreeMap<String, (i32, i32, String)> = sspec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let (t, proto) = target(p);
            (p.name.clone().unwrap_or_default(), (p.port, t, proto))
        })
        .collect();
    let dns_udp = ports.get("dns").expect("port dns");
    let dns_tcp = ports.get("dns-tcp").expect("port dns-tcp");
    assert_eq!((dns_udp.0, dns_udp.2.as_str()), (53, "UDP"));
    assert_eq!((dns_tcp.0, dns_tcp.2.as_str()), (53, "TCP"));
    assert!(listen_ports.contains(&dns_udp.1), "dns targets {listen}");
    assert!(
        listen_ports.contains(&dns_tcp.1),
        "dns-tcp targets {listen}"
    );
    let metrics = ports.get("metrics").expect("port metrics");
    assert_eq!((metrics.0, metrics.1), (9153, port_of(&admin)));
}

#[test]
fn bindings_reference_existing_roles_and_service_accounts() {
    let m = manifests();
    let sas: BTreeSet<(String, String)> = m
        .service_accounts
        .iter()
        .map(|s| {
            (
                s.metadata.namespace.clone().unwrap_or_default(),
                name_of(&s.metadata).to_string(),
            )
        })
        .collect();
    let cluster_roles: BTreeSet<&str> = m
        .cluster_roles
        .iter()
        .map(|r| name_of(&r.metadata))
        .collect();
    let roles: BTreeSet<(String, String)> = m
        .roles
        .iter()
        .map(|r| {
            (
                r.metadata.namespace.clone().unwrap_or_default(),
                name_of(&r.metadata).to_string(),
            )
        })
        .collect();
    let check_subjects = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>, b: &str| {
        let subjects = subjects.clone().unwrap_or_default();
        assert!(!subjects.is_empty(), "{b}: has subjects");
        for s in subjects {
            assert_eq!(s.kind, "ServiceAccount", "{b}: binds ServiceAccounts only");
            let key = (s.namespace.clone().unwrap_or_default(), s.name.clone());
            assert!(
                sas.contains(&key),
                "{b}: ServiceAccount {key:?} does not exist"
            );
        }
    };
    for b in &m.cluster_role_bindings {
        let bn = format!("ClusterRoleBinding/{}", name_of(&b.metadata));
        assert_eq!(b.role_ref.api_group, "rbac.authorization.k8s.io");
        assert_eq!(b.role_ref.kind, "ClusterRole", "{bn}");
        assert!(
            cluster_roles.contains(b.role_ref.name.as_str()),
            "{bn}: ClusterRole {} does not exist",
            b.role_ref.name
        );
        check_subjects(&b.subjects, &bn);
    }
    for b in &m.role_bindings {
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let bn = format!("RoleBinding/{ns}/{}", name_of(&b.metadata));
        assert_eq!(b.role_ref.api_group, "rbac.authorization.k8s.io");
        match b.role_ref.kind.as_str() {
            "Role" => assert!(
                roles.contains(&(ns.clone(), b.role_ref.name.clone())),
                "{bn}: Role {ns}/{} does not exist",
                b.role_ref.name
            ),
            "ClusterRole" => assert!(cluster_roles.contains(b.role_ref.name.as_str())),
            other => panic!("{bn}: roleRef kind {other}"),
        }
        check_subjects(&b.subjects, &bn);
    }
    // Every role is bound, and every workload's ServiceAccount exists and is bound.
    for r in &m.cluster_roles {
        let n = name_of(&r.metadata);
        assert!(
            m.cluster_role_bindings.iter().any(|b| b.role_ref.name == n)
                || m.role_bindings
                    .iter()
                    .any(|b| b.role_ref.kind == "ClusterRole" && b.role_ref.name == n),
            "ClusterRole {n} is bound by nothing"
        );
    }
    for r in &m.roles {
        let n = name_of(&r.metadata);
        assert!(
            m.role_bindings
                .iter()
                .any(|b| b.role_ref.kind == "Role" && b.role_ref.name == n),
            "Role {n} is bound by nothing"
        );
    }
    for (ns, (_, sa)) in [
        (SYSTEM_NS, controller_container(m)),
        (SYSTEM_NS, proxy_container(m)),
        (DNS_NS, dns_container(m)),
    ] {
        assert!(sas.contains(&(ns.to_string(), sa.clone())), "{sa}");
        assert!(!grants_for(m, ns, &sa).is_empty(), "{sa} is bound");
    }
}

// ---------------------------------------------------------------------------------------------
// Args and env against the binaries' CLIs
// ---------------------------------------------------------------------------------------------

/// Values of the downward-API fields the manifests use, for a simulated Pod.
fn fake_field_refs(pod_name: &str, node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("metadata.name".to_string(), pod_name.to_string()),
        ("metadata.namespace".to_string(), SYSTEM_NS.to_string()),
        ("spec.nodeName".to_string(), node.to_string()),
    ])
}

/// The container's environment as the kubelet would set it (literal values and fieldRefs).
fn resolved_env(c: &Container, fields: &BTreeMap<String, String>) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), None) => v.clone(),
                (None, Some(from)) => {
                    let path = &from
                        .field_ref
                        .as_ref()
                        .unwrap_or_else(|| panic!("env {}: only fieldRef is used", e.name))
                        .field_path;
                    fields
                        .get(path)
                        .unwrap_or_else(|| panic!("env {}: unexpected fieldRef {path}", e.name))
                        .clone()
                }
                (None, None) => String::new(),
                (Some(_), Some(_)) => panic!("env {}: both value and valueFrom", e.name),
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// The container's args with `$(VAR)` expanded from its env, as the kubelet does.
fn resolved_args(c: &Container, fields: &BTreeMap<String, String>) -> Vec<String> {
    let env = resolved_env(c, fields);
    c.args
        .iter()
        .flatten()
        .map(|a| {
            let mut a = a.clone();
            for (k, v) in &env {
                a = a.replace(&format!("$({k})"), v);
            }
            assert!(!a.contains("$("), "unresolved variable in arg {a:?}");
            a
        })
        .collect()
}

/// The binary and leading subcommand args of a container's `command`.
fn binary_of(c: &Container) -> (String, Vec<String>) {
    let cmd = c.command.clone().expect("an explicit command");
    let bin = Path::new(&cmd[0])
        .file_name()
        .expect("command[0] is a path")
        .to_string_lossy()
        .to_string();
    (bin, cmd[1..].to_vec())
}

fn help(bin: &Path, sub: &[String]) -> String {
    let out = Command::new(bin)
        .args(sub)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(out.status.success(), "{} --help failed", bin.display());
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs the binary with `args` and `--help` last: clap rejects unknown flags and malformed
/// values of flags that precede `--help`. Returns (success, stderr).
fn parse_with_help(bin: &Path, sub: &[String], args: &[String]) -> (bool, String) {
    let out = Command::new(bin)
        .args(sub)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn locate(name: &str) -> PathBuf {
    bins::locate(name).unwrap_or_else(|e| {
        panic!(
            "{e} (build it first: cargo build -p svcnet-controllers -p svcnet-dataplane \
             -p svcnet-dns --bins)"
        )
    })
}

#[test]
fn args_and_env_are_accepted_by_the_binaries() {
    let m = manifests();
    let fields = fake_field_refs("svcnet-x-abcde", "node1");
    for (c, _) in [
        controller_container(m),
        proxy_container(m),
        dns_container(m),
    ] {
        let (name, sub) = binary_of(&c);
        let bin = locate(&name);
        let args = resolved_args(&c, &fields);
        let (ok, err) = parse_with_help(&bin, &sub, &args);
        assert!(
            ok,
            "{name} {sub:?} rejects the manifest's args {args:?}: {err}"
        );
        // The same check rejects what it should (so it can fail).
        let (ok, _) = parse_with_help(&bin, &sub, &["--no-such-flag=1".to_string()]);
        assert!(!ok, "{name} accepted an unknown flag: the check is void");
        // SVCNET_* env vars must be variables the CLI reads.
        let text = help(&bin, &sub);
        for (k, _) in resolved_env(&c, &fields) {
            if k.starts_with("SVCNET_") {
                assert!(
                    text.contains(&format!("[env: {k}=")),
                    "{name}: env {k} is not read by any flag"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC evaluation
// ---------------------------------------------------------------------------------------------

/// One rule granted to a ServiceAccount: cluster-wide (`namespace == None`) or in a namespace.
#[derive(Clone, Debug)]
struct Grant {
    role: String,
    rule: PolicyRule,
    namespace: Option<String>,
}

fn binds(subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>, ns: &str, sa: &str) -> bool {
    subjects
        .iter()
        .flatten()
        .any(|s| s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns))
}

/// Every rule bound to ServiceAccount `ns/sa`, with its scope.
fn grants_for(m: &Manifests, ns: &str, sa: &str) -> Vec<Grant> {
    let mut out = Vec::new();
    let cluster_role = |name: &str| {
        m.cluster_roles
            .iter()
            .find(|r| name_of(&r.metadata) == name)
    };
    for b in &m.cluster_role_bindings {
        if binds(&b.subjects, ns, sa) {
            if let Some(r) = cluster_role(&b.role_ref.name) {
                for rule in r.rules.iter().flatten() {
                    out.push(Grant {
                        role: format!("ClusterRole/{}", b.role_ref.name),
                        rule: rule.clone(),
                        namespace: None,
                    });
                }
            }
        }
    }
    for b in &m.role_bindings {
        if !binds(&b.subjects, ns, sa) {
            continue;
        }
        let bns = b.metadata.namespace.clone().unwrap_or_default();
        let (role, rules) = if b.role_ref.kind == "Role" {
            let r = m.roles.iter().find(|r| {
                name_of(&r.metadata) == b.role_ref.name
                    && r.metadata.namespace.as_deref() == Some(&bns)
            });
            (
                format!("Role/{bns}/{}", b.role_ref.name),
                r.and_then(|r| r.rules.clone()),
            )
        } else {
            let r = cluster_role(&b.role_ref.name);
            (
                format!("ClusterRole/{}", b.role_ref.name),
                r.and_then(|r| r.rules.clone()),
            )
        };
        for rule in rules.into_iter().flatten() {
            out.push(Grant {
                role: role.clone(),
                rule,
                namespace: Some(bns.clone()),
            });
        }
    }
    out
}

/// Whether rule resource `pattern` covers `resource[/sub]` (RBAC's `*`, `*/sub`, `res/*`).
fn resource_matches(pattern: &str, resource: &str, sub: Option<&str>) -> bool {
    match sub {
        None => pattern == "*" || pattern == resource,
        Some(sub) => {
            pattern == "*"
                || pattern == format!("{resource}/{sub}")
                || pattern == format!("*/{sub}")
                || pattern == format!("{resource}/*")
        }
    }
}

/// Whether `rule` allows the request (ignores scope).
fn rule_allows(rule: &PolicyRule, r: &AuditRecord) -> bool {
    let groups = rule.api_groups.clone().unwrap_or_default();
    let resources = rule.resources.clone().unwrap_or_default();
    let names = rule.resource_names.clone().unwrap_or_default();
    (groups.iter().any(|g| g == "*" || *g == r.api_group))
        && resources
            .iter()
            .any(|p| resource_matches(p, &r.resource, r.subresource.as_deref()))
        && rule.verbs.iter().any(|v| v == "*" || *v == r.verb)
        && (names.is_empty() || r.name.as_ref().is_some_and(|n| names.contains(n)))
}

fn grant_allows(g: &Grant, r: &AuditRecord) -> bool {
    let in_scope = match &g.namespace {
        None => true,
        Some(ns) => r.namespace.as_deref() == Some(ns),
    };
    in_scope && rule_allows(&g.rule, r)
}

fn describe(r: &AuditRecord) -> String {
    let res = match &r.subresource {
        Some(s) => format!("{}/{s}", r.resource),
        None => r.resource.clone(),
    };
    let group = if r.api_group.is_empty() {
        "core"
    } else {
        &r.api_group
    };
    format!(
        "{} {group} {res} (namespace {:?}, name {:?}, code {})",
        r.verb, r.namespace, r.name, r.code
    )
}

/// Requests not allowed by any grant.
fn denied(grants: &[Grant], log: &[AuditRecord]) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for r in log {
        if !grants.iter().any(|g| grant_allows(g, r)) {
            out.insert(describe(r));
        }
    }
    out.into_iter().collect()
}

/// Every (role, group, resource, verb) granted and never used by a request in `log`.
fn unused(grants: &[Grant], log: &[AuditRecord]) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for g in grants {
        for group in g.rule.api_groups.iter().flatten() {
            for res in g.rule.resources.iter().flatten() {
                for verb in &g.rule.verbs {
                    let single = Grant {
                        role: g.role.clone(),
                        rule: PolicyRule {
                            api_groups: Some(vec![group.clone()]),
                            resources: Some(vec![res.clone()]),
                            verbs: vec![verb.clone()],
                            resource_names: g.rule.resource_names.clone(),
                            non_resource_urls: None,
                        },
                        namespace: g.namespace.clone(),
                    };
                    if !log.iter().any(|r| grant_allows(&single, r)) {
                        out.insert((g.role.clone(), group.clone(), res.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn rbac_evaluation_follows_the_rules() {
    let rec =
        |verb: &str, group: &str, res: &str, sub: Option<&str>, ns: Option<&str>| AuditRecord {
            token: None,
            user_agent: None,
            verb: verb.into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.map(Into::into),
            namespace: ns.map(Into::into),
            name: Some("x".into()),
            code: 200,
        };
    let grant = |groups: &[&str], res: &[&str], verbs: &[&str], ns: Option<&str>| Grant {
        role: "r".into(),
        rule: PolicyRule {
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            resources: Some(res.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            resource_names: None,
            non_resource_urls: None,
        },
        namespace: ns.map(Into::into),
    };
    let g = grant(&[""], &["services"], &["get", "update"], None);
    assert!(grant_allows(
        &g,
        &rec("get", "", "services", None, Some("a"))
    ));
    assert!(!grant_allows(
        &g,
        &rec("update", "", "services", Some("status"), Some("a"))
    ));
    assert!(!grant_allows(
        &g,
        &rec("get", "apps", "services", None, Some("a"))
    ));
    let g = grant(&["coordination.k8s.io"], &["leases"], &["get"], Some("s"));
    assert!(grant_allows(
        &g,
        &rec("get", "coordination.k8s.io", "leases", None, Some("s"))
    ));
    assert!(!grant_allows(
        &g,
        &rec("get", "coordination.k8s.io", "leases", None, Some("t"))
    ));
    assert!(!grant_allows(
        &g,
        &rec("get", "coordination.k8s.io", "leases", None, None)
    ));
    let g = grant(&["*"], &["*/status"], &["*"], None);
    assert!(grant_allows(
        &g,
        &rec("patch", "x", "pods", Some("status"), None)
    ));
    assert!(!grant_allows(&g, &rec("patch", "x", "pods", None, None)));
    let g = grant(
        &["", "events.k8s.io"],
        &["events"],
        &["create", "patch"],
        None,
    );
    let log = vec![rec("create", "", "events", None, Some("a"))];
    let u = unused(&[g], &log);
    assert!(u.contains(&("r".into(), "".into(), "events".into(), "patch".into())));
    assert!(u.contains(&(
        "r".into(),
        "events.k8s.io".into(),
        "events".into(),
        "create".into()
    )));
    assert!(!u.contains(&("r".into(), "".into(), "events".into(), "create".into())));
}

// ---------------------------------------------------------------------------------------------
// RBAC coverage with the real binaries
// ---------------------------------------------------------------------------------------------

/// Bearer tokens that tell the binaries' requests apart in the audit log.
const CONTROLLER_TOKEN: &str = "svcnet-controller-token";
const PROXY_TOKEN: &str = "svcnet-proxy-token";
const DNS_TOKEN: &str = "svcnet-dns-token";
/// Workload namespace.
const APP_NS: &str = "shop";
/// The LoadBalancer IP two Services share (inside the test pool 192.0.2.0/28).
const SHARED_LB_IP: &str = "192.0.2.10";
/// Deadline of each wait in the workload.
const WAIT: Duration = Duration::from_secs(30);

/// A kubeconfig for `url` whose user sends `token` (the embedded server authenticates nobody;
/// the audit records the token).
fn kubeconfig_with_token(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: embedded
  cluster:
    server: {url}
users:
- name: sa
  user:
    token: {token}
contexts:
- name: embedded
  context:
    cluster: embedded
    user: sa
current-context: embedded
"
    )
}

/// Polls `check` until it returns true; panics after [`WAIT`] naming `what`.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn from_json<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Starts `c`'s binary inside `ns` with the manifest's args and env (fieldRefs resolved for
/// a Pod named `pod_name` on `node`), plus `--kubeconfig`.
fn spawn_workload(
    topo: &Topology,
    ns: &Netns,
    c: &Container,
    pod_name: &str,
    node: &str,
    kubeconfig: &Path,
) -> Process {
    let (name, sub) = binary_of(c);
    let fields = fake_field_refs(pod_name, node);
    let mut cmd = ns.command(locate(&name));
    cmd.args(&sub)
        .args(resolved_args(c, &fields))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(resolved_env(c, &fields))
        .env("RUST_LOG", "info");
    topo.spawn_command(&name, cmd).unwrap()
}

/// `GET path` on `127.0.0.1:port` inside `ns`; returns the status line.
fn http_status_in(ns: &Netns, port: i32, path: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3"
    );
    match ns.exec("bash", ["-c", &script]) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(e) => e.to_string(),
    }
}

fn audit_of(server: &ApiServer, token: &str) -> Vec<AuditRecord> {
    server
        .audit_log()
        .into_iter()
        .filter(|r| r.token.as_deref() == Some(token))
        .collect()
}

fn used(log: &[AuditRecord], verb: &str, group: &str, resource: &str) -> bool {
    log.iter()
        .any(|r| r.verb == verb && r.api_group == group && r.resource == resource)
}

fn ready_pod(name: &str, node: &str, ip: &str, ready: bool) -> Pod {
    let status = if ready { "True" } else { "False" };
    from_json(json!({
        "metadata": {"name": name, "namespace": APP_NS, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "web", "image": "echo",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": "192.168.0.1",
            "conditions": [{"type": "Ready", "status": status}, {"type": "ContainersReady", "status": status}],
            "containerStatuses": [{"name": "web", "ready": ready, "restartCount": 0, "image": "echo", "imageID": "",
                "started": true, "state": {"running": {}}}]},
    }))
}

async fn create_with_status<K>(api: &Api<K>, obj: &K)
where
    K: kube::Resource + Clone + serde::Serialize + DeserializeOwned + std::fmt::Debug,
{
    let created = api.create(&PostParams::default(), obj).await.unwrap();
    let status = serde_json::to_value(obj).unwrap()["status"].clone();
    let name = kube::ResourceExt::name_any(&created);
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .unwrap();
}

async fn slices_of(client: &Client, service: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), APP_NS);
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn ready_endpoints(slices: &[EndpointSlice]) -> usize {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count()
}

async fn get_svc(client: &Client, name: &str) -> Option<Service> {
    let api: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    api.get_opt(name).await.ok().flatten()
}

/// Drives the controller and the proxy through their code paths.
async fn workload(client: &Client, topo: &Topology) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), APP_NS);
    let node1 = topo.node(1).unwrap();
    let pod_ip = |host: u8| {
        let net = node1.pod_cidr_v4();
        match net.addr() {
            std::net::IpAddr::V4(a) => {
                let o = a.octets();
                format!("{}.{}.{}.{}", o[0], o[1], o[2], host)
            }
            std::net::IpAddr::V6(_) => unreachable!("pod_cidr_v4 is IPv4"),
        }
    };

    // Pods first, then one Service of every type.
    create_with_status(&pods, &ready_pod("web-1", node1.name(), &pod_ip(10), true)).await;
    create_with_status(&pods, &ready_pod("web-2", node1.name(), &pod_ip(11), true)).await;
    let port = json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]);
    let services = [
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": port}}),
        json!({"metadata": {"name": "web-np"}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": port}}),
        json!({"metadata": {"name": "web-lb"}, "spec": {"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb",
            "externalTrafficPolicy": "Local", "selector": {"app": "web"}, "ports": port}}),
        json!({"metadata": {"name": "web-headless"}, "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
            "selector": {"app": "web"}, "ports": port}}),
        json!({"metadata": {"name": "web-affinity"}, "spec": {"sessionAffinity": "ClientIP",
            "internalTrafficPolicy": "Local", "selector": {"app": "web"}, "ports": port}}),
        // Two Services sharing one LoadBalancer IP (IP claim with two holders).
        json!({"metadata": {"name": "dns-tcp", "annotations": {"svcnet.io/sharing-key": "dns",
            "svcnet.io/load-balancer-ips": SHARED_LB_IP}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb", "selector": {"app": "web"},
            "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "TCP"}]}}),
        json!({"metadata": {"name": "dns-udp", "annotations": {"svcnet.io/sharing-key": "dns",
            "svcnet.io/load-balancer-ips": SHARED_LB_IP}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb", "selector": {"app": "web"},
            "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}}),
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        json!({"metadata": {"name": "broken"}, "spec": {"selector": {"app": "wbe"}, "ports": port}}),
        json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9000}]}}),
    ];
    for s in services {
        svcs.create(&PostParams::default(), &from_json::<Service>(s))
            .await
            .unwrap();
    }
    // User-written Endpoints for the selectorless Service (mirrored into EndpointSlices).
    let manual_eps: Endpoints = from_json(json!({
        "metadata": {"name": "manual", "namespace": APP_NS},
        "subsets": [{"addresses": [{"ip": "10.250.0.5"}], "ports": [{"name": "http", "port": 9000}]}],
    }));
    eps.create(&PostParams::default(), &manual_eps)
        .await
        .unwrap();

    wait_until("ClusterIPs, a NodePort and a LoadBalancer IP", || async {
        let web = get_svc(client, "web").await;
        let np = get_svc(client, "web-np").await;
        let lb = get_svc(client, "web-lb").await;
        let ip = |s: &Option<Service>| {
            s.as_ref()
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.cluster_ip.clone())
                .is_some_and(|ip| !ip.is_empty() && ip != "None")
        };
        let node_port = np
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| p.node_port)
            .is_some();
        let lb_ip = lb
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        ip(&web) && node_port && lb_ip
    })
    .await;
    wait_until("both dns Services to share the LoadBalancer IP", || async {
        let mut n = 0;
        for name in ["dns-tcp", "dns-udp"] {
            let ips: Vec<String> = get_svc(client, name)
                .await
                .and_then(|s| s.status)
                .and_then(|s| s.load_balancer)
                .and_then(|l| l.ingress)
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip)
                .collect();
            n += usize::from(ips == [SHARED_LB_IP]);
        }
        n == 2
    })
    .await;
    wait_until("EndpointSlices and Endpoints of web", || async {
        let endpoints_ready = eps
            .get_opt("web")
            .await
            .ok()
            .flatten()
            .and_then(|e| e.subsets)
            .is_some_and(|s| s.iter().flat_map(|s| s.addresses.iter().flatten()).count() == 2);
        ready_endpoints(&slices_of(client, "web").await) == 2 && endpoints_ready
    })
    .await;
    wait_until("the mirrored EndpointSlice of manual", || async {
        slices_of(client, "manual")
            .await
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .any(|e| e.addresses.contains(&"10.250.0.5".to_string()))
    })
    .await;
    wait_until("an Event on the broken Service", || async {
        let core: Api<Event> = Api::namespaced(client.clone(), APP_NS);
        let core_hit = core.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items
                .iter()
                .any(|e| e.involved_object.name.as_deref() == Some("broken"))
        });
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("events.k8s.io", "v1", "Event"));
        let new: Api<DynamicObject> = Api::namespaced_with(client.clone(), APP_NS, &ar);
        let new_hit = new.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items
                .iter()
                .any(|e| e.data["regarding"]["name"] == json!("broken"))
        });
        core_hit || new_hit
    })
    .await;

    // The proxy programs the ClusterIP of web into its node's table.
    let web_ip = get_svc(client, "web")
        .await
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip)
        .unwrap();
    wait_until("svcnet-proxy to program web's ClusterIP", || async {
        topo.exec(node1, "nft", ["list", "ruleset"])
            .is_ok_and(|r| r.contains(&web_ip))
    })
    .await;

    // Readiness changes, Service updates, Endpoints updates, deletes.
    pods.patch_status(
        "web-2",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"status": ready_pod("web-2", node1.name(), &pod_ip(11), false).status}),
        ),
    )
    .await
    .unwrap();
    wait_until("web-2 to become not ready in the slices", || async {
        ready_endpoints(&slices_of(client, "web").await) == 1
    })
    .await;
    svcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]}})),
    )
    .await
    .unwrap();
    wait_until("web's slices to carry the new port", || async {
        slices_of(client, "web").await.iter().any(|s| {
            s.ports
                .iter()
                .flatten()
                .any(|p| p.port == Some(8080) && p.name.as_deref() == Some("http"))
        })
    })
    .await;
    eps.patch(
        "manual",
        &PatchParams::default(),
        &Patch::Merge(&json!({"subsets": [{"addresses": [{"ip": "10.250.0.6"}], "ports": [{"name": "http", "port": 9000}]}]})),
    )
    .await
    .unwrap();
    wait_until("the mirrored slice to follow the Endpoints", || async {
        slices_of(client, "manual")
            .await
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .any(|e| e.addresses.contains(&"10.250.0.6".to_string()))
    })
    .await;
    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_until("web-1 to leave the slices", || async {
        !slices_of(client, "web")
            .await
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .any(|e| e.addresses.contains(&pod_ip(10)))
    })
    .await;
    eps.delete("manual", &DeleteParams::default())
        .await
        .unwrap();
    for name in ["web-lb", "web-np", "web-headless", "dns-udp"] {
        svcs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_until("the claims of deleted Services to be released", || async {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "svcnet.io",
            "v1alpha1",
            "NodePortClaim",
        ));
        let claims: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        claims.list(&ListParams::default()).await.is_ok_and(|l| {
            !l.items.iter().any(|c| {
                ["web-lb", "web-np", "dns-udp"]
                    .iter()
                    .any(|n| c.data["spec"]["parentRef"]["name"] == json!(n))
            })
        })
    })
    .await;
    wait_until("the shared IP claim to keep only dns-tcp", || async {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "svcnet.io",
            "v1alpha1",
            "ServiceIPClaim",
        ));
        let claims: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        claims.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().any(|c| {
                let names: Vec<&serde_json::Value> = c.data["spec"]["parentRefs"]
                    .as_array()
                    .map(|r| r.iter().map(|p| &p["name"]).collect())
                    .unwrap_or_default();
                c.data["spec"]["ip"] == json!(SHARED_LB_IP) && names == [&json!("dns-tcp")]
            })
        })
    })
    .await;
    wait_until("the mirrored slice of manual to be deleted", || async {
        slices_of(client, "manual").await.is_empty()
    })
    .await;
}

/// **Needs root** (network namespaces, nftables). Runs svcnet-controller and svcnet-proxy with
/// the manifests' args and env against the embedded API server (request audit on), drives a
/// workload, and checks the audit against the RBAC bound to each binary's ServiceAccount:
/// every request allowed, every granted permission used or justified in [`JUSTIFIED_UNUSED`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_covers_every_api_call_and_nothing_more() {
    let m = manifests();
    let server = ApiServer::start(ServerConfig::default()).await.unwrap();
    server.enable_audit();
    let client = server.client().unwrap();

    // What a cluster has before svcnet's pods start: the CRDs and the namespaces.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in &m.crds {
        crds.create(&PostParams::default(), crd).await.unwrap();
    }
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in &m.namespaces {
        nss.create(&PostParams::default(), ns).await.unwrap();
    }
    nss.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": APP_NS}})),
    )
    .await
    .unwrap();
    let pool_ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "svcnet.io",
        "v1alpha1",
        "LoadBalancerIPPool",
    ));
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &pool_ar);
    let pool: DynamicObject = from_json(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "LoadBalancerIPPool",
        "metadata": {"name": "audit-pool"}, "spec": {"cidrs": ["192.0.2.0/28"]},
    }));
    pools.create(&PostParams::default(), &pool).await.unwrap();
    // L2 announcement of every LoadBalancer address (the proxy elects itself for them).
    let l2_ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "svcnet.io",
        "v1alpha1",
        "L2Announcement",
    ));
    let l2: Api<DynamicObject> = Api::all_with(client.clone(), &l2_ar);
    let policy: DynamicObject = from_json(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "L2Announcement",
        "metadata": {"name": "audit-l2"}, "spec": {},
    }));
    l2.create(&PostParams::default(), &policy).await.unwrap();

    // Two nodes: the proxy runs in node1, the controller in node2 (both with the exact
    // bind addresses of the manifests, which are free inside their own namespaces).
    let topo = Topology::builder()
        .prefix("svmf")
        .nodes(2)
        .outside_clients(0)
        .echo_ports(testkit::netns::EchoPorts::none())
        .echo_binary(
            testkit::netns::bins::locate("svcnet-echo")
                .expect("svcnet-echo is built (cargo build --workspace --bins)"),
        )
        .build()
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for n in topo.nodes() {
        create_with_status(&nodes, &testkit::netns::k8s::node(n).unwrap()).await;
    }
    let api_addr = topo
        .forward_from_host_to_nodes(6443, server.addr())
        .unwrap();
    let dir = topo.log_dir().to_path_buf();
    let url = format!("http://{api_addr}");
    let controller_kc = dir.join("controller.kubeconfig");
    let proxy_kc = dir.join("proxy.kubeconfig");
    std::fs::write(
        &controller_kc,
        kubeconfig_with_token(&url, CONTROLLER_TOKEN),
    )
    .unwrap();
    std::fs::write(&proxy_kc, kubeconfig_with_token(&url, PROXY_TOKEN)).unwrap();
    let dns_kc = dir.join("dns.kubeconfig");
    std::fs::write(&dns_kc, kubeconfig_with_token(&url, DNS_TOKEN)).unwrap();

    let (controller_c, controller_sa) = controller_container(m);
    let (proxy_c, proxy_sa) = proxy_container(m);
    let (dns_c, dns_sa) = dns_container(m);
    let node1 = topo.node(1).unwrap();
    let node2 = topo.node(2).unwrap();
    // Declared after `topo`: dropped (killed) before the namespaces are deleted.
    let mut controller = spawn_workload(
        &topo,
        node2.netns(),
        &controller_c,
        "svcnet-controller-7d9f-abcde",
        node2.name(),
        &controller_kc,
    );
    // The Deployment's second replica, started once the first holds the Lease: a standby
    // (its own namespace's port 9100 is free: the proxy's ports differ).
    wait_until("the first replica to create the Lease", || async {
        used(
            &audit_of(&server, CONTROLLER_TOKEN),
            "create",
            "coordination.k8s.io",
            "leases",
        )
    })
    .await;
    let mut standby = spawn_workload(
        &topo,
        node1.netns(),
        &controller_c,
        "svcnet-controller-7d9f-fghij",
        node1.name(),
        &controller_kc,
    );
    let mut proxy = spawn_workload(
        &topo,
        node1.netns(),
        &proxy_c,
        "svcnet-proxy-xk2p9",
        node1.name(),
        &proxy_kc,
    );

    // svcnet-dns beside the controller (its ports, 5353 and 9153, are free there); it reads
    // the host's resolv.conf for upstreams, as `dnsPolicy: Default` gives it the node's.
    let mut dns = spawn_workload(
        &topo,
        node2.netns(),
        &dns_c,
        "svcnet-dns-5c8f-abcde",
        node2.name(),
        &dns_kc,
    );

    workload(&client, &topo).await;

    // Leader election: the Lease was created and renewed.
    wait_until("the controller to renew its Lease", || async {
        let log = audit_of(&server, CONTROLLER_TOKEN);
        used(&log, "create", "coordination.k8s.io", "leases")
            && used(&log, "update", "coordination.k8s.io", "leases")
    })
    .await;
    // The probes of the manifests answer 200 on the running binaries.
    let probes = |c: &Container| {
        [c.liveness_probe.clone(), c.readiness_probe.clone()]
            .into_iter()
            .flatten()
            .map(|p| (probe_port(c, &p, "probe"), probe_path(&p)))
            .collect::<Vec<_>>()
    };
    for (ns, c) in [
        (node2.netns(), &controller_c),
        (node1.netns(), &controller_c),
        (node1.netns(), &proxy_c),
        (node2.netns(), &dns_c),
    ] {
        for (port, path) in probes(c) {
            let ns = ns.clone();
            let path2 = path.clone();
            let status = tokio::task::spawn_blocking(move || http_status_in(&ns, port, &path2))
                .await
                .unwrap();
            assert!(
                status.contains(" 200"),
                "probe {path} on port {port} answered {status:?}"
            );
        }
    }
    assert!(controller.is_running(), "svcnet-controller exited");
    assert!(proxy.is_running(), "svcnet-proxy exited");
    assert!(standby.is_running(), "the standby svcnet-controller exited");
    assert!(dns.is_running(), "svcnet-dns exited");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), SYSTEM_NS);
    let holders: Vec<String> = leases
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        // The proxy's L2 announcement Leases live there too.
        .filter(|l| {
            !l.metadata
                .labels
                .as_ref()
                .is_some_and(|m| m.contains_key(::crds::l2::LEASE_KIND_LABEL))
        })
        .filter_map(|l| l.spec.and_then(|s| s.holder_identity))
        .collect();
    assert_eq!(
        holders,
        ["svcnet-controller-7d9f-abcde"],
        "one leader-election Lease in {SYSTEM_NS}, held by the first replica (SVCNET_IDENTITY \
         from metadata.name)"
    );
    // L2 announcement: a heartbeat and an address Lease created and renewed; then a clean
    // stop releases the address and deletes the heartbeat.
    wait_until("the proxy to hold an address Lease", || async {
        let log = audit_of(&server, PROXY_TOKEN);
        used(&log, "create", "coordination.k8s.io", "leases")
            && used(&log, "update", "coordination.k8s.io", "leases")
            && used(&log, "create", "", "events")
    })
    .await;
    let stopped = proxy.terminate(std::time::Duration::from_secs(10)).unwrap();
    assert!(
        stopped.success(),
        "svcnet-proxy stops cleanly on SIGTERM: {stopped:?}"
    );
    assert!(
        used(
            &audit_of(&server, PROXY_TOKEN),
            "delete",
            "coordination.k8s.io",
            "leases"
        ),
        "the heartbeat Lease is deleted at shutdown"
    );
    drop(standby);
    drop(controller);
    drop(dns);

    let mut report = Vec::new();
    let mut failures = Vec::new();
    let workloads = [
        (
            "svcnet-controller",
            CONTROLLER_TOKEN,
            SYSTEM_NS,
            &controller_sa,
        ),
        ("svcnet-proxy", PROXY_TOKEN, SYSTEM_NS, &proxy_sa),
        ("svcnet-dns", DNS_TOKEN, DNS_NS, &dns_sa),
    ];
    for (who, token, ns, sa) in workloads {
        let log = audit_of(&server, token);
        assert!(
            !log.is_empty(),
            "{who} made no request (is its token sent?)"
        );
        let grants = grants_for(m, ns, sa);
        let distinct: BTreeSet<String> = log
            .iter()
            .map(|r| {
                let res = match &r.subresource {
                    Some(sub) => format!("{}/{sub}", r.resource),
                    None => r.resource.clone(),
                };
                let scope = r.namespace.as_deref().unwrap_or("cluster-wide");
                format!("{} {:?} {res} ({scope})", r.verb, r.api_group)
            })
            .collect();
        report.push(format!("{who} used {} distinct calls:", distinct.len()));
        report.extend(distinct.iter().map(|d| format!("  {d}")));
        for d in denied(&grants, &log) {
            failures.push(format!("{who}: not allowed by its RBAC: {d}"));
        }
        for (role, group, res, verb) in unused(&grants, &log) {
            let justified = JUSTIFIED_UNUSED
                .iter()
                .any(|(r, g, rs, v, _)| *r == role && *g == group && *rs == res && *v == verb);
            let line = format!("{role}: {verb} {group:?} {res}");
            if justified {
                report.push(format!("unused but justified: {line}"));
            } else {
                failures.push(format!("{who}: granted but never used: {line}"));
            }
        }
    }
    // A justification must name a permission the manifests still grant.
    for (role, group, res, verb, _) in JUSTIFIED_UNUSED {
        let granted = workloads.iter().any(|(_, _, ns, sa)| {
            grants_for(m, ns, sa).iter().any(|g| {
                g.role == *role
                    && g.rule.api_groups.iter().flatten().any(|x| x == group)
                    && g.rule.resources.iter().flatten().any(|x| x == res)
                    && g.rule.verbs.iter().any(|x| x == verb)
            })
        });
        if !granted {
            failures.push(format!(
                "stale JUSTIFIED_UNUSED entry {role}: {verb} {group:?} {res} (not granted)"
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "RBAC does not match the binaries' API calls:\n{}",
        failures.join("\n")
    );
}
