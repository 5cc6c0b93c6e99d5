//! `svcnet-proxy run --config <file>`: a kube-proxy `KubeProxyConfiguration`
//! (`kubeproxy.config.k8s.io/v1alpha1`), so that a node set up for kube-proxy keeps its file.
//!
//! Every field of the type is known by name. The ones svcnet-proxy honours set the matching
//! flag unless that flag was given explicitly (command line or `SVCNET_*` environment), which
//! wins. The ones it does not implement are reported by name at start-up when they are set to
//! anything but their zero value; a value that would change behaviour svcnet-proxy cannot provide
//! (`localhost` NodePorts, an unknown detect-local mode) is an error rather than silently
//! ignored, and so is any field the type does not have.
//!
//! The proxy mode's own section is used, as kube-proxy does: `nftables.*` for `mode: nftables`,
//! `iptables.*` for `iptables` or an empty mode (kube-proxy's Linux default), `ipvs.*` for `ipvs`.
//! svcnet-proxy always programs nftables; a non-nftables mode is reported.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::config::RunArgs;
use super::detect_local::DetectLocalMode;
use crate::error::{Error, Result};

/// The file's API version and kind.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The kind.
pub const KIND: &str = "KubeProxyConfiguration";

/// What svcnet-proxy does with a field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Use {
    /// Applied (see [`apply`]).
    Honoured,
    /// Not implemented: reported when set.
    Reported,
    /// A section whose fields are listed separately.
    Section,
}

/// Every field of `KubeProxyConfiguration` v1alpha1, by path.
const FIELDS: &[(&str, Use)] = &[
    ("apiVersion", Use::Honoured),
    ("kind", Use::Honoured),
    ("featureGates", Use::Reported),
    ("clientConnection", Use::Section),
    ("clientConnection.kubeconfig", Use::Honoured),
    ("clientConnection.acceptContentTypes", Use::Reported),
    ("clientConnection.contentType", Use::Reported),
    ("clientConnection.qps", Use::Reported),
    ("clientConnection.burst", Use::Reported),
    ("logging", Use::Reported),
    ("hostnameOverride", Use::Honoured),
    ("bindAddress", Use::Honoured),
    ("healthzBindAddress", Use::Honoured),
    ("metricsBindAddress", Use::Honoured),
    ("bindAddressHardFail", Use::Reported),
    ("enableProfiling", Use::Reported),
    ("showHiddenMetricsForVersion", Use::Reported),
    ("mode", Use::Honoured),
    ("iptables", Use::Section),
    ("iptables.masqueradeBit", Use::Honoured),
    ("iptables.masqueradeAll", Use::Honoured),
    ("iptables.localhostNodePorts", Use::Reported),
    ("iptables.snatNodeInternalIP", Use::Reported),
    ("iptables.syncPeriod", Use::Honoured),
    ("iptables.minSyncPeriod", Use::Honoured),
    ("ipvs", Use::Section),
    ("ipvs.syncPeriod", Use::Honoured),
    ("ipvs.minSyncPeriod", Use::Honoured),
    ("ipvs.scheduler", Use::Reported),
    ("ipvs.excludeCIDRs", Use::Reported),
    ("ipvs.strictARP", Use::Reported),
    ("ipvs.tcpTimeout", Use::Reported),
    ("ipvs.tcpFinTimeout", Use::Reported),
    ("ipvs.udpTimeout", Use::Reported),
    ("nftables", Use::Section),
    ("nftables.masqueradeBit", Use::Honoured),
    ("nftables.masqueradeAll", Use::Honoured),
    ("nftables.syncPeriod", Use::Honoured),
    ("nftables.minSyncPeriod", Use::Honoured),
    ("winkernel", Use::Section),
    ("winkernel.networkName", Use::Reported),
    ("winkernel.sourceVip", Use::Reported),
    ("winkernel.enableDSR", Use::Reported),
    ("winkernel.rootHnsEndpointName", Use::Reported),
    ("winkernel.forwardHealthCheckVip", Use::Reported),
    ("detectLocalMode", Use::Honoured),
    ("detectLocal", Use::Section),
    ("detectLocal.bridgeInterface", Use::Honoured),
    ("detectLocal.interfaceNamePrefix", Use::Honoured),
    ("clusterCIDR", Use::Honoured),
    ("nodePortAddresses", Use::Honoured),
    ("oomScoreAdj", Use::Reported),
    ("conntrack", Use::Section),
    ("conntrack.maxPerCore", Use::Reported),
    ("conntrack.min", Use::Reported),
    ("conntrack.tcpEstablishedTimeout", Use::Reported),
    ("conntrack.tcpCloseWaitTimeout", Use::Reported),
    ("conntrack.tcpBeLiberal", Use::Reported),
    ("conntrack.udpTimeout", Use::Reported),
    ("conntrack.udpStreamTimeout", Use::Reported),
    ("configSyncPeriod", Use::Reported),
    ("portRange", Use::Reported),
    ("windowsRunAsService", Use::Reported),
];

/// The bit of the packet mark svcnet-proxy's masquerade rules use (kube-proxy's default).
const MASQUERADE_BIT: i64 = 14;

fn bad(msg: String) -> Error {
    Error::Config(format!("--config: {msg}"))
}

/// Whether `v` is its type's zero value (what an unset Go field serialises to).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0s",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Checks every field name (recursively through sections) and returns the set leaves.
fn leaves<'a>(v: &'a Value, prefix: &str, out: &mut Vec<(String, &'a Value)>) -> Result<()> {
    let Value::Object(o) = v else {
        return Err(bad(format!(
            "{} must be a mapping",
            if prefix.is_empty() {
                "the file"
            } else {
                prefix
            }
        )));
    };
    for (k, v) in o {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match FIELDS.iter().find(|(p, _)| *p == path).map(|(_, u)| *u) {
            None => {
                return Err(bad(format!(
                    "unknown field {path:?} (not in {KIND} {API_VERSION})"
                )))
            }
            Some(Use::Section) if !v.is_null() => leaves(v, &path, out)?,
            Some(_) => out.push((path, v)),
        }
    }
    Ok(())
}

fn string(v: &Value, path: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(bad(format!("{path} must be a string"))),
    }
}

fn duration(v: &Value, path: &str) -> Result<Option<std::time::Duration>> {
    let s = string(v, path)?;
    if s.is_empty() {
        return Ok(None);
    }
    runtime::duration::duration_flag(&s)
        .map(Some)
        .map_err(|e| bad(format!("{path}: {e}")))
}

fn socket(v: &Value, path: &str) -> Result<Option<SocketAddr>> {
    let s = string(v, path)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| bad(format!("{path}: {s:?} is not an address:port")))
}

/// Applies the configuration `text` (YAML or JSON) to `args`; `explicit(id)` says whether the
/// flag with that clap id was given explicitly (it then wins). Returns the start-up reports
/// (fields set but not implemented, by name).
pub fn apply(
    args: &mut RunArgs,
    text: &str,
    explicit: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let mut set = Vec::new();
    leaves(&doc, "", &mut set)?;
    let get = |p: &str| set.iter().find(|(k, _)| k == p).map(|(_, v)| *v);
    let api_version = get("apiVersion")
        .map(|v| string(v, "apiVersion"))
        .transpose()?;
    let kind = get("kind").map(|v| string(v, "kind")).transpose()?;
    if api_version.as_deref() != Some(API_VERSION) || kind.as_deref() != Some(KIND) {
        return Err(bad(format!(
            "apiVersion/kind must be {API_VERSION}/{KIND}, not {api_version:?}/{kind:?}"
        )));
    }
    let mut reports = Vec::new();
    let mode = get("mode")
        .map(|v| string(v, "mode"))
        .transpose()?
        .unwrap_or_default();
    let section = match mode.as_str() {
        "" | "iptables" => "iptables",
        "nftables" => "nftables",
        "ipvs" => "ipvs",
        other => {
            return Err(bad(format!(
                "mode {other:?} is not a kube-proxy mode (iptables, ipvs, nftables)"
            )))
        }
    };
    if section != "nftables" {
        reports.push(format!(
            "mode {:?}: svcnet-proxy programs nftables; the {section} section's sync periods and masquerade settings are used",
            if mode.is_empty() { "" } else { mode.as_str() }
        ));
    }
    for (path, v) in &set {
        if is_zero(v) {
            continue;
        }
        let honoured = FIELDS.iter().any(|(p, u)| p == path && *u == Use::Honoured);
        if !honoured {
            reports.push(format!(
                "{path} is set but svcnet-proxy does not implement it; ignored"
            ));
        }
    }
    // Every duration must parse, whichever section it is in (as kube-proxy's validation).
    for (path, v) in &set {
        if path.ends_with("Period") || path.ends_with("Timeout") {
            duration(v, path)?;
        }
    }
    let flag = |id: &str| !explicit(id);
    if let Some(v) = get("hostnameOverride") {
        let s = string(v, "hostnameOverride")?;
        if !s.is_empty() && flag("node_name") {
            args.node.node_name = s.trim().to_lowercase();
        }
    }
    if let Some(v) = get("bindAddress") {
        let s = string(v, "bindAddress")?;
        if !s.is_empty() {
            let ip: IpAddr = s
                .parse()
                .map_err(|_| bad(format!("bindAddress: {s:?} is not an IP address")))?;
            if !ip.is_unspecified() && flag("node_ips") {
                args.node.node_ips = vec![ip];
            }
        }
    }
    if let Some(a) = get("healthzBindAddress")
        .map(|v| socket(v, "healthzBindAddress"))
        .transpose()?
        .flatten()
    {
        if flag("healthz_bind_address") {
            args.healthz_bind_address = a;
        }
    }
    if let Some(a) = get("metricsBindAddress")
        .map(|v| socket(v, "metricsBindAddress"))
        .transpose()?
        .flatten()
    {
        if flag("metrics_bind_address") {
            args.metrics_bind_address = a;
        }
    }
    if let Some(v) = get("clientConnection.kubeconfig") {
        let s = string(v, "clientConnection.kubeconfig")?;
        if !s.is_empty() && flag("kubeconfig") {
            args.kubeconfig = Some(s.into());
        }
    }
    if let Some(v) = get("detectLocalMode") {
        let m = string(v, "detectLocalMode")?;
        let mode = DetectLocalMode::parse(&m).ok_or_else(|| {
            bad(format!(
                "detectLocalMode {m:?} is not one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix"
            ))
        })?;
        if !m.is_empty() && flag("detect_local_mode") {
            args.node.detect_local_mode = mode;
        }
    }
    for (path, id) in [
        ("detectLocal.bridgeInterface", "pod_bridge_interface"),
        (
            "detectLocal.interfaceNamePrefix",
            "pod_interface_name_prefix",
        ),
    ] {
        if let Some(v) = get(path) {
            let s = string(v, path)?;
            if !s.is_empty() && flag(id) {
                let target = match id {
                    "pod_bridge_interface" => &mut args.node.pod_bridge_interface,
                    _ => &mut args.node.pod_interface_name_prefix,
                };
                *target = Some(s);
            }
        }
    }
    if let Some(v) = get("clusterCIDR") {
        let s = string(v, "clusterCIDR")?;
        let cidrs = s
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse()
                    .map_err(|_| bad(format!("clusterCIDR: {c:?} is not a CIDR")))
            })
            .collect::<Result<Vec<_>>>()?;
        if !cidrs.is_empty() && flag("cluster_cidr") {
            args.node.cluster_cidr = cidrs;
        }
    }
    if let Some(Value::Array(list)) = get("nodePortAddresses") {
        let mut out = Vec::new();
        for item in list {
            let s = string(item, "nodePortAddresses")?;
            match s.as_str() {
                "primary" => out.push(s),
                "all" => out.extend(["0.0.0.0/0".to_string(), "::/0".to_string()]),
                "localhost" => {
                    return Err(bad(
                        "nodePortAddresses: localhost NodePorts are not supported".into(),
                    ))
                }
                _ => out.push(s),
            }
        }
        if !out.is_empty() && flag("nodeport_addresses") {
            args.node.nodeport_addresses = out;
        }
    } else if let Some(v) = get("nodePortAddresses") {
        if !v.is_null() {
            return Err(bad("nodePortAddresses must be a list".into()));
        }
    }
    if let Some(v) = get(&format!("{section}.syncPeriod")) {
        if let Some(d) = duration(v, &format!("{section}.syncPeriod"))? {
            if flag("sync_period") {
                args.sync_period = d;
            }
        }
    }
    if let Some(v) = get(&format!("{section}.minSyncPeriod")) {
        if let Some(d) = duration(v, &format!("{section}.minSyncPeriod"))? {
            if flag("min_sync_period") {
                args.min_sync_period = d;
            }
        }
    }
    if let Some(Value::Bool(true)) = get(&format!("{section}.masqueradeAll")) {
        if flag("masquerade_all") {
            args.node.masquerade_all = true;
        }
    }
    for s in ["iptables", "nftables"] {
        let path = format!("{s}.masqueradeBit");
        let Some(v) = get(&path).filter(|v| !v.is_null()) else {
            continue;
        };
        match v.as_i64() {
            Some(b) if !(0..=31).contains(&b) || s != section || b == MASQUERADE_BIT => {
                if !(0..=31).contains(&b) {
                    return Err(bad(format!("{path} must be between 0 and 31, not {b}")));
                }
            }
            Some(b) => reports.push(format!(
                "{path} {b}: svcnet-proxy marks packets for masquerade with bit {MASQUERADE_BIT}"
            )),
            None => return Err(bad(format!("{path} must be an integer"))),
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(argv: &[&str]) -> RunArgs {
        let mut v = vec!["svcnet-proxy"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v).expect("flags parse").run
    }

    const KUBEADM: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16,fd00:244::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 24h0m0s
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: 0.0.0.0:10256
hostnameOverride: Node-7
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 1s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
metricsBindAddress: 127.0.0.1:10249
mode: nftables
nftables:
  masqueradeAll: true
  masqueradeBit: null
  minSyncPeriod: 250ms
  syncPeriod: 45s
nodePortAddresses: [all]
oomScoreAdj: -999
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

    #[test]
    fn a_kubeadm_file_is_honoured_and_the_rest_reported_by_name() {
        let mut a = args(&[]);
        let reports = apply(&mut a, KUBEADM, &|_| false).expect("valid file");
        assert_eq!(a.node.node_name, "node-7");
        assert_eq!(a.node.cluster_cidr.len(), 2);
        assert!(a.node.masquerade_all, "nftables.masqueradeAll");
        assert_eq!(a.sync_period, std::time::Duration::from_secs(45));
        assert_eq!(a.min_sync_period, std::time::Duration::from_millis(250));
        assert_eq!(a.node.nodeport_addresses, ["0.0.0.0/0", "::/0"]);
        assert_eq!(
            a.kubeconfig.as_deref(),
            Some(std::path::Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(a.healthz_bind_address.to_string(), "0.0.0.0:10256");
        assert!(a.node.node_ips.is_empty(), "0.0.0.0 is no node IP");
        let joined = reports.join("\n");
        for name in [
            "conntrack.maxPerCore",
            "conntrack.min",
            "conntrack.tcpCloseWaitTimeout",
            "oomScoreAdj",
        ] {
            assert!(joined.contains(name), "{name} not reported: {joined}");
        }
        // Zero values are not reported; the iptables section is not the mode's.
        for name in [
            "enableProfiling",
            "ipvs.scheduler",
            "iptables.minSyncPeriod",
            "mode",
        ] {
            assert!(!joined.contains(name), "{name} reported: {joined}");
        }
        assert_eq!(reports.len(), 5, "{joined}");
    }

    #[test]
    fn explicit_flags_win_over_the_file() {
        let mut a = args(&["--min-sync-period", "2s", "--node-name", "cli"]);
        let explicit = |id: &str| id == "min_sync_period" || id == "node_name";
        apply(&mut a, KUBEADM, &explicit).unwrap();
        assert_eq!(a.min_sync_period, std::time::Duration::from_secs(2));
        assert_eq!(a.node.node_name, "cli");
        assert_eq!(a.sync_period, std::time::Duration::from_secs(45));
    }

    #[test]
    fn iptables_mode_uses_its_section_and_says_so() {
        let text = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                    iptables: {minSyncPeriod: 3s, masqueradeBit: 12}\nnftables: {minSyncPeriod: 9s}\n";
        let mut a = args(&[]);
        let r = apply(&mut a, text, &|_| false).unwrap();
        assert_eq!(a.min_sync_period, std::time::Duration::from_secs(3));
        assert!(r.iter().any(|l| l.contains("programs nftables")), "{r:?}");
        assert!(r.iter().any(|l| l.contains("masqueradeBit 12")), "{r:?}");
    }

    #[test]
    fn detect_local_settings_are_honoured_and_flags_win() {
        use crate::node::detect_local::DetectLocalMode as M;
        let file = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                    detectLocalMode: BridgeInterface\n\
                    detectLocal: {bridgeInterface: cni0, interfaceNamePrefix: veth}\n";
        let mut a = args(&[]);
        let r = apply(&mut a, file, &|_| false).unwrap();
        assert_eq!(a.node.detect_local_mode, M::BridgeInterface);
        assert_eq!(a.node.pod_bridge_interface.as_deref(), Some("cni0"));
        assert_eq!(a.node.pod_interface_name_prefix.as_deref(), Some("veth"));
        assert!(!r.iter().any(|l| l.contains("detectLocal")), "{r:?}");
        let mut a = args(&[
            "--detect-local-mode=InterfaceNamePrefix",
            "--pod-interface-name-prefix=cali",
        ]);
        let explicit = |id: &str| id == "detect_local_mode" || id == "pod_interface_name_prefix";
        apply(&mut a, file, &explicit).unwrap();
        assert_eq!(a.node.detect_local_mode, M::InterfaceNamePrefix);
        assert_eq!(a.node.pod_interface_name_prefix.as_deref(), Some("cali"));
        assert_eq!(a.node.pod_bridge_interface.as_deref(), Some("cni0"));
    }

    #[test]
    fn unknown_fields_and_unsupported_behaviour_are_errors() {
        let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        for (body, word) in [
            (
                "iptables: {masqueradeBits: 14}\n",
                "iptables.masqueradeBits",
            ),
            ("bogus: 1\n", "\"bogus\""),
            ("detectLocalMode: NodeCidr\n", "NodeCidr"),
            ("nodePortAddresses: [localhost]\n", "localhost"),
            ("mode: userspace\n", "userspace"),
            ("clusterCIDR: 10.0.0.0/33\n", "clusterCIDR"),
            ("healthzBindAddress: nope\n", "healthzBindAddress"),
            ("nftables: {masqueradeBit: 40}\n", "masqueradeBit"),
            ("nftables: {syncPeriod: soon}\n", "nftables.syncPeriod"),
        ] {
            let mut a = args(&[]);
            let err = apply(&mut a, &format!("{head}{body}"), &|_| false)
                .expect_err(body)
                .to_string();
            assert!(err.contains(word), "{body}: {err}");
        }
        let mut a = args(&[]);
        let err = apply(&mut a, "apiVersion: v1\nkind: ConfigMap\n", &|_| false)
            .expect_err("wrong kind")
            .to_string();
        assert!(err.contains(KIND), "{err}");
    }
}
