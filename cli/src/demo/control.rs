//! The control-plane half: svcnet-controller as a child process, the objects the demo creates
//! (namespace, Nodes, Pods, pool, Services) and reading everything back into the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::report::{
    EndpointSummary, EventSummary, PodSummary, PortSummary, Report, ServiceSummary, SliceSummary,
};
use super::Error;

/// The namespace the demo's Pods and Services live in.
pub const NAMESPACE: &str = "demo";

/// Label that marks the EndpointSlices of headless Services (svcnet-proxy, like kube-proxy,
/// does not watch them).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// svcnet-controller running as a child process; killed when dropped.
pub struct Controller {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Controller {
    /// Starts `bin` against `kubeconfig` with the demo's ranges; output goes to `log`.
    pub fn spawn(
        bin: &Path,
        kubeconfig: &Path,
        service_cidr: &str,
        node_port_range: &str,
        log: PathBuf,
    ) -> Result<Self, Error> {
        let out = std::fs::File::create(&log).map_err(|e| Error::io("creating the log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating the log handle", e))?;
        let child = tokio::process::Command::new(bin)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--service-cluster-ip-range",
                service_cidr,
                "--service-node-port-range",
                node_port_range,
                "--leader-elect=false",
                "--metrics-bind-address",
                "0",
                "--install-crds=true",
                // The demo's broken Service is meant to be diagnosed within its run.
                "--diagnostics-grace-period=2s",
                "--identity",
                "svcnet-demo",
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(&format!("starting {}", bin.display()), e))?;
        Ok(Controller { child, log })
    }

    /// `Err` with the exit status and the log's tail if the controller has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Step(format!(
                "svcnet-controller exited ({status}); last log lines:\n{}",
                tail(&self.log, 15)
            ))),
            Err(e) => Err(Error::io("polling svcnet-controller", e)),
        }
    }
}

/// The last `n` lines of a file (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parses the multi-document Service manifest.
pub fn parse_services(text: &str) -> Result<Vec<Service>, Error> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| Error::Manifest(format!("not YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let svc: Service = serde_yaml::from_value(value)
            .map_err(|e| Error::Manifest(format!("not a Service: {e}")))?;
        out.push(svc);
    }
    if out.is_empty() {
        return Err(Error::Manifest("no Service in the manifest".into()));
    }
    Ok(out)
}

use serde::Deserialize as _;

/// nodePorts each Service of the manifest asks for, by name.
pub fn requested_node_ports(services: &[Service]) -> BTreeMap<String, Vec<i32>> {
    services
        .iter()
        .map(|s| {
            let ports = s
                .spec
                .as_ref()
                .and_then(|sp| sp.ports.as_ref())
                .map(|ps| ps.iter().filter_map(|p| p.node_port).collect())
                .unwrap_or_default();
            (s.name_any(), ports)
        })
        .collect()
}

/// Creates the namespace (ignores AlreadyExists).
pub async fn create_namespace(client: &Client) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}
    }))
    .map_err(|e| Error::Manifest(e.to_string()))?;
    create_or_exists(&Api::<Namespace>::all(client.clone()), &ns).await
}

async fn create_or_exists<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a Node and writes its status (the create ignores status).
pub async fn create_node(client: &Client, node: &Node) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    create_or_exists(&api, node).await?;
    let patch = json!({"status": node.status});
    api.patch_status(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Creates a Pod and writes its status (the create ignores status).
pub async fn create_pod(client: &Client, pod: &Pod) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    create_or_exists(&api, pod).await?;
    let patch = json!({"status": pod.status});
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Marks a Pod object not ready (Ready and ContainersReady False, the container not ready), as
/// a failing readiness probe would.
pub fn make_not_ready(pod: &mut Pod) {
    if let Some(status) = pod.status.as_mut() {
        for c in status.conditions.iter_mut().flatten() {
            if c.type_ == "Ready" || c.type_ == "ContainersReady" {
                c.status = "False".into();
                c.reason = Some("ReadinessProbeFailed".into());
            }
        }
        for cs in status.container_statuses.iter_mut().flatten() {
            cs.ready = false;
        }
    }
}

/// A Node object without a topology (the no-root path): name, InternalIP, pod CIDR, Ready.
pub fn plain_node(name: &str, ip: &str, pod_cidr: &str) -> Result<Node, Error> {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }))
    .map_err(|e| Error::Manifest(e.to_string()))
}

/// Creates the LoadBalancerIPPool once its CRD is served (the controller installs it).
pub async fn create_pool(
    client: &Client,
    cidrs: &[String],
    timeout: Duration,
) -> Result<(), Error> {
    let api: Api<crds::LoadBalancerIPPool> = Api::all(client.clone());
    let pool: crds::LoadBalancerIPPool = serde_json::from_value(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "LoadBalancerIPPool",
        "metadata": {"name": "demo-pool"},
        "spec": {"cidrs": cidrs},
    }))
    .map_err(|e| Error::Manifest(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.create(&PostParams::default(), &pool).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Step(format!(
                "LoadBalancerIPPool not accepted within {timeout:?} (is the CRD installed?): {e}"
            )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Creates the L2Announcement `demo-l2` (every LoadBalancer address, every node) once its CRD
/// is served.
pub async fn create_l2_announcement(client: &Client, timeout: Duration) -> Result<(), Error> {
    let api: Api<crds::L2Announcement> = Api::all(client.clone());
    let policy: crds::L2Announcement = serde_json::from_value(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "L2Announcement",
        "metadata": {"name": "demo-l2"},
        "spec": {},
    }))
    .map_err(|e| Error::Manifest(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.create(&PostParams::default(), &policy).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Step(format!(
                    "L2Announcement not accepted within {timeout:?} (is the CRD installed?): {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Creates the Services in the demo namespace.
pub async fn apply_services(client: &Client, services: &[Service]) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    for s in services {
        let mut s = s.clone();
        s.metadata.namespace = Some(NAMESPACE.into());
        create_or_exists(&api, &s).await?;
    }
    Ok(())
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// What the report shows of a Service.
pub fn service_summary(s: &Service, requested: &BTreeMap<String, Vec<i32>>) -> ServiceSummary {
    let spec = s.spec.clone().unwrap_or_default();
    let name = s.name_any();
    let mut cluster_ips = spec.cluster_ips.clone().unwrap_or_default();
    if cluster_ips.is_empty() {
        cluster_ips.extend(spec.cluster_ip.clone().filter(|ip| !ip.is_empty()));
    }
    ServiceSummary {
        type_: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        cluster_ips,
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| PortSummary {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.port,
                target_port: p
                    .target_port
                    .as_ref()
                    .map_or_else(|| p.port.to_string(), int_or_string),
                node_port: p.node_port,
            })
            .collect(),
        lb_ips: s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default(),
        external_name: spec.external_name.clone(),
        selector: spec.selector.clone().unwrap_or_default(),
        session_affinity: spec.session_affinity.clone(),
        internal_traffic_policy: spec.internal_traffic_policy.clone(),
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        requested_node_ports: requested.get(&name).cloned().unwrap_or_default(),
        name,
    }
}

/// What the report shows of a Pod.
pub fn pod_summary(p: &Pod) -> PodSummary {
    PodSummary {
        name: p.name_any(),
        node: p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        ips: p
            .status
            .as_ref()
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
            .unwrap_or_default(),
        labels: p.labels().clone(),
        ready: testkit::harness::pod_is_ready(p),
    }
}

/// What the report shows of an EndpointSlice.
pub fn slice_summary(s: &EndpointSlice) -> SliceSummary {
    SliceSummary {
        name: s.name_any(),
        service: s
            .labels()
            .get("kubernetes.io/service-name")
            .cloned()
            .unwrap_or_default(),
        address_type: s.address_type.clone(),
        ports: s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}/{}",
                    p.name.as_deref().unwrap_or(""),
                    p.port.map_or_else(|| "-".into(), |n| n.to_string()),
                    p.protocol.as_deref().unwrap_or("TCP")
                )
            })
            .collect(),
        endpoints: s
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                EndpointSummary {
                    addresses: e.addresses.clone(),
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                    node: e.node_name.clone(),
                    pod: e.target_ref.as_ref().and_then(|t| t.name.clone()),
                }
            })
            .collect(),
        headless_label: s.labels().contains_key(HEADLESS_LABEL),
    }
}

/// Reads Nodes, Pods, Services, EndpointSlices and Service Events back into `report`.
pub async fn collect(
    client: &Client,
    requested: &BTreeMap<String, Vec<i32>>,
    report: &mut Report,
) -> Result<(), Error> {
    let lp = ListParams::default();
    let nodes = Api::<Node>::all(client.clone()).list(&lp).await?;
    report.nodes = nodes
        .items
        .iter()
        .map(|n| {
            let ips = n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .map(|a| {
                    a.iter()
                        .filter(|a| a.type_ == "InternalIP")
                        .map(|a| a.address.clone())
                        .collect()
                })
                .unwrap_or_default();
            (n.name_any(), ips)
        })
        .collect();
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&lp)
        .await?;
    report.pods = pods.items.iter().map(pod_summary).collect();
    let services = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .list(&lp)
        .await?;
    report.services = services
        .items
        .iter()
        .map(|s| service_summary(s, requested))
        .collect();
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE)
        .list(&lp)
        .await?;
    report.endpoint_slices = slices.items.iter().map(slice_summary).collect();
    report
        .endpoint_slices
        .sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    let events = Api::<Event>::namespaced(client.clone(), NAMESPACE)
        .list(&lp)
        .await?;
    report.events = events
        .items
        .iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Service"))
        .map(|e| EventSummary {
            service: e.involved_object.name.clone().unwrap_or_default(),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect();
    report
        .events
        .sort_by(|a, b| (&a.service, &a.reason).cmp(&(&b.service, &b.reason)));
    Ok(())
}

/// Services, EndpointSlices and one Node as a multi-document YAML for `svcnet-proxy render`.
pub async fn render_input(client: &Client, node: &str) -> Result<String, Error> {
    let lp = ListParams::default();
    let mut docs = Vec::new();
    let node = Api::<Node>::all(client.clone()).get(node).await?;
    docs.push(serde_yaml::to_string(&node).map_err(|e| Error::Manifest(e.to_string()))?);
    for s in Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .list(&lp)
        .await?
    {
        docs.push(serde_yaml::to_string(&s).map_err(|e| Error::Manifest(e.to_string()))?);
    }
    for s in Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE)
        .list(&lp)
        .await?
    {
        docs.push(serde_yaml::to_string(&s).map_err(|e| Error::Manifest(e.to_string()))?);
    }
    Ok(docs.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_manifest_parses() {
        let svcs = parse_services(super::super::EXAMPLE_SERVICES).expect("parses");
        let names: Vec<_> = svcs.iter().map(|s| s.name_any()).collect();
        for want in ["web", "web-nodeport", "db-peers", "web-lb", "broken"] {
            assert!(names.iter().any(|n| n == want), "{names:?}");
        }
        assert_eq!(requested_node_ports(&svcs)["web-nodeport"], vec![30080]);
        assert!(parse_services("").is_err());
        assert!(parse_services("kind: [").is_err());
    }

    #[test]
    fn summaries_read_the_allocated_fields() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5", "selector": {"app": "web"},
                     "ports": [{"port": 443, "targetPort": 8080, "nodePort": 31000}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.97.0.17"}]}},
        }))
        .expect("service");
        let s = service_summary(&svc, &BTreeMap::new());
        assert_eq!(s.cluster_ips, vec!["10.96.0.5"]);
        assert_eq!(s.lb_ips, vec!["10.97.0.17"]);
        assert_eq!(s.ports[0].node_port, Some(31000));
        assert_eq!(s.ports[0].target_port, "8080");
        assert!(s.needs_node_ports() && s.needs_cluster_ip());
    }

    #[test]
    fn not_ready_flips_the_conditions() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "db-1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0}]},
        }))
        .expect("pod");
        assert!(testkit::harness::pod_is_ready(&pod));
        make_not_ready(&mut pod);
        assert!(!testkit::harness::pod_is_ready(&pod));
    }
}
