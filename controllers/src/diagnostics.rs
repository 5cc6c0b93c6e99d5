//! "Why does my Service have no backends?" — concrete diagnostics beyond
//! upstream, emitted as Events on the Service.
//!
//! [`diagnose`] is pure: from a Service and the Pods of its namespace it finds
//! * a selector that matches no Pod (and which Pods nearly match: same label
//!   key with another value, a key differing only in case, all terms but one);
//! * a selector whose Pods are none of them ready (and why: no IP yet,
//!   terminal, terminating, readiness probe failing);
//! * a named `targetPort` the selected Pods do not declare (name AND protocol).
//!
//! [`DiagnosticsState`] turns findings into rate-limited Events: a Warning once
//! a finding has lasted `grace` (default 30 s: `kubectl apply -f dir/` that
//! creates a Service before its Deployment, or Pods still starting, is the
//! ordinary course of things, not a problem), then again when its message
//! changes (at most once per `min_interval`) and every `repeat_interval` while
//! it lasts; and a Normal `<Reason>Resolved` event when a finding that was
//! warned about goes away. A finding that clears within the grace period
//! produces no Event at all.

use crate::views::{Labels, PodInfo};
use crate::writes::EventSpec;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Reason: the selector matches no Pod.
pub const REASON_NO_PODS: &str = "SelectorMatchesNoPods";
/// Reason: Pods match but none is ready.
pub const REASON_NO_READY_PODS: &str = "NoReadyPods";
/// Reason: a named targetPort is not declared by the selected Pods.
pub const REASON_TARGET_PORT: &str = "TargetPortNotFound";

/// One problem found on a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// One of the `REASON_*` constants.
    pub reason: &'static str,
    /// Distinguishes several findings of one reason (e.g. the port).
    pub subject: String,
    /// What to tell the user.
    pub message: String,
}

/// `k=v,k2=v2`, keys sorted.
pub fn format_selector(sel: &BTreeMap<String, String>) -> String {
    if sel.is_empty() {
        return "{} (every pod)".into();
    }
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn matches(sel: &BTreeMap<String, String>, labels: &Labels) -> bool {
    labels.matches(sel)
}

fn names(pods: &[&PodInfo]) -> String {
    let mut n: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    n.sort_unstable();
    let more = n.len().saturating_sub(3);
    let mut s = n.into_iter().take(3).collect::<Vec<_>>().join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

fn near_misses(sel: &BTreeMap<String, String>, ns_pods: &[&PodInfo]) -> Vec<String> {
    let mut hints = Vec::new();
    // Same key, other value.
    for (k, v) in sel {
        let mut by_value: BTreeMap<&str, usize> = BTreeMap::new();
        for p in ns_pods {
            if let Some(pv) = p.labels.get(k) {
                if pv != v {
                    *by_value.entry(pv.as_str()).or_default() += 1;
                }
            }
        }
        for (val, n) in by_value {
            let case = if val.eq_ignore_ascii_case(v) {
                " (values are case-sensitive)"
            } else {
                ""
            };
            hints.push(format!(
                "{} {k}={val}{case}",
                plural(n, "pod carries", "pods carry")
            ));
        }
        // Key that differs only in case.
        let mut by_key: BTreeMap<&str, usize> = BTreeMap::new();
        for p in ns_pods {
            for pk in p.labels.keys() {
                if pk != k && pk.eq_ignore_ascii_case(k) {
                    *by_key.entry(pk.as_str()).or_default() += 1;
                }
            }
        }
        for (key, n) in by_key {
            hints.push(format!(
                "{} label key {key} (keys are case-sensitive; selector uses {k})",
                plural(n, "pod carries", "pods carry")
            ));
        }
    }
    // All terms but one.
    if sel.len() > 1 {
        for (k, v) in sel {
            let rest: BTreeMap<String, String> = sel
                .iter()
                .filter(|(kk, _)| *kk != k)
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect();
            let near: Vec<&PodInfo> = ns_pods
                .iter()
                .copied()
                .filter(|p| matches(&rest, &p.labels))
                .collect();
            if !near.is_empty() {
                hints.push(format!(
                    "{} every term but {k}={v} ({})",
                    plural(near.len(), "pod matches", "pods match"),
                    names(&near)
                ));
            }
        }
    }
    hints
}

/// Finds what keeps a selector Service from having ready backends.
/// `ns_pods` are all Pods of the Service's namespace. Services without a
/// selector (or ExternalName) yield nothing.
pub fn diagnose(svc: &Service, ns_pods: &[&PodInfo]) -> Vec<Finding> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(sel) = spec.selector.as_ref() else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let sel_s = format_selector(sel);
    let selected: Vec<&PodInfo> = ns_pods
        .iter()
        .copied()
        .filter(|p| matches(sel, &p.labels))
        .collect();
    let mut out = Vec::new();

    if selected.is_empty() {
        let mut msg = format!("selector {sel_s} matches no pods in namespace {ns}");
        if ns_pods.is_empty() {
            msg.push_str("; the namespace has no pods");
        } else {
            let hints = near_misses(sel, ns_pods);
            if hints.is_empty() {
                msg.push_str(&format!(
                    "; none of its {} carries these labels",
                    plural(ns_pods.len(), "pod", "pods")
                ));
            } else {
                for h in hints.iter().take(4) {
                    msg.push_str("; ");
                    msg.push_str(h);
                }
            }
        }
        out.push(Finding {
            reason: REASON_NO_PODS,
            subject: String::new(),
            message: msg,
        });
        return out;
    }

    let pnra = spec.publish_not_ready_addresses.unwrap_or(false);
    let usable: Vec<&PodInfo> = selected
        .iter()
        .copied()
        .filter(|p| p.should_be_in_endpoints(pnra))
        .collect();
    let ready = usable
        .iter()
        .filter(|p| pnra || (p.ready && !p.terminating))
        .count();
    if ready == 0 {
        let no_ip: Vec<&PodInfo> = selected
            .iter()
            .copied()
            .filter(|p| p.pod_ip.is_empty() && p.pod_ips.is_empty())
            .collect();
        let terminal: Vec<&PodInfo> = selected
            .iter()
            .copied()
            .filter(|p| p.phase == "Succeeded" || p.phase == "Failed")
            .collect();
        let terminating: Vec<&PodInfo> =
            selected.iter().copied().filter(|p| p.terminating).collect();
        let not_ready: Vec<&PodInfo> = selected
            .iter()
            .copied()
            .filter(|p| {
                !p.ready
                    && !p.terminating
                    && !p.pod_ips.is_empty()
                    && p.phase != "Succeeded"
                    && p.phase != "Failed"
            })
            .collect();
        let mut parts = Vec::new();
        if !not_ready.is_empty() {
            parts.push(format!(
                "{} not passing readiness ({})",
                plural(not_ready.len(), "is", "are"),
                names(&not_ready)
            ));
        }
        if !no_ip.is_empty() {
            parts.push(format!(
                "{} no IP yet ({})",
                plural(no_ip.len(), "has", "have"),
                names(&no_ip)
            ));
        }
        if !terminating.is_empty() {
            parts.push(format!(
                "{} terminating ({})",
                plural(terminating.len(), "is", "are"),
                names(&terminating)
            ));
        }
        if !terminal.is_empty() {
            parts.push(format!(
                "{} finished ({})",
                plural(terminal.len(), "has", "have"),
                names(&terminal)
            ));
        }
        out.push(Finding {
            reason: REASON_NO_READY_PODS,
            subject: String::new(),
            message: format!(
                "selector {sel_s} matches {} in namespace {ns} but none is ready: {}",
                plural(selected.len(), "pod", "pods"),
                parts.join("; ")
            ),
        });
    }

    for sp in spec.ports.iter().flatten() {
        let Some(IntOrString::String(name)) = &sp.target_port else {
            continue;
        };
        let proto = sp.protocol.as_deref().unwrap_or("TCP");
        let missing: Vec<&PodInfo> = selected
            .iter()
            .copied()
            .filter(|p| p.find_port(sp).is_none())
            .collect();
        if missing.is_empty() {
            continue;
        }
        let port_desc = format!("{}/{proto}", sp.port);
        let mut msg = format!(
            "targetPort \"{name}\" of service port {port_desc} is not declared by {} of {} selected pods ({})",
            missing.len(),
            selected.len(),
            names(&missing)
        );
        let other_proto = missing
            .iter()
            .flat_map(|p| p.named_ports.iter())
            .find(|np| &np.name == name && np.protocol != proto);
        if let Some(np) = other_proto {
            msg.push_str(&format!(
                "; a container port named \"{name}\" exists with protocol {} (protocols must match)",
                np.protocol
            ));
        } else if let Some(p) = missing.first() {
            let declared: Vec<String> = p
                .named_ports
                .iter()
                .map(|n| format!("{}/{}={}", n.name, n.protocol, n.port))
                .collect();
            if declared.is_empty() {
                msg.push_str(&format!("; {} declares no named ports", p.name));
            } else {
                msg.push_str(&format!("; {} declares {}", p.name, declared.join(", ")));
            }
        }
        out.push(Finding {
            reason: REASON_TARGET_PORT,
            subject: port_desc,
            message: msg,
        });
    }
    out
}

#[derive(Debug, Clone)]
struct Active {
    /// The message last warned about (or, before the first Warning, the latest one).
    message: String,
    /// When the finding was first seen in its current run.
    first_seen: Instant,
    /// The last Warning, `None` while the finding is within its grace period.
    last_emitted: Option<Instant>,
}

/// Rate-limited Event state per Service (`namespace/name`).
#[derive(Debug)]
pub struct DiagnosticsState {
    active: HashMap<String, BTreeMap<(&'static str, String), Active>>,
    /// Minimum time between two Warnings for the same finding.
    pub min_interval: Duration,
    /// A finding that lasts is repeated this often.
    pub repeat_interval: Duration,
    /// How long a finding must persist before its first Warning.
    pub grace: Duration,
}

/// The default [`DiagnosticsState::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

impl Default for DiagnosticsState {
    fn default() -> Self {
        DiagnosticsState {
            active: HashMap::new(),
            min_interval: Duration::from_secs(5),
            repeat_interval: Duration::from_secs(600),
            grace: DEFAULT_GRACE,
        }
    }
}

impl DiagnosticsState {
    /// Default intervals with this grace period.
    pub fn with_grace(grace: Duration) -> Self {
        DiagnosticsState {
            grace,
            ..DiagnosticsState::default()
        }
    }

    /// Records the current findings of `key` and returns the Events to emit,
    /// and when to look again if a changed message was held back.
    pub fn update(&mut self, key: &str, findings: Vec<Finding>, now: Instant) -> Vec<EventSpec> {
        self.update_with_recheck(key, findings, now).0
    }

    /// Whether `key` currently has a finding with this reason.
    pub fn has(&self, key: &str, reason: &str) -> bool {
        self.active
            .get(key)
            .is_some_and(|m| m.keys().any(|(r, _)| *r == reason))
    }

    /// Like [`DiagnosticsState::update`], also returning after how long a
    /// held-back (rate-limited) message change should be re-evaluated.
    pub fn update_with_recheck(
        &mut self,
        key: &str,
        findings: Vec<Finding>,
        now: Instant,
    ) -> (Vec<EventSpec>, Option<Duration>) {
        let mut recheck: Option<Duration> = None;
        let mut events = Vec::new();
        let prev = self.active.remove(key).unwrap_or_default();
        let mut next: BTreeMap<(&'static str, String), Active> = BTreeMap::new();
        let mut recheck_in = |wait: Duration| {
            recheck = Some(recheck.map_or(wait, |r: Duration| r.min(wait)));
        };
        for f in findings {
            let id = (f.reason, f.subject.clone());
            let first_seen = prev.get(&id).map_or(now, |a| a.first_seen);
            let last = prev.get(&id).and_then(|a| a.last_emitted);
            let emit = match last {
                // Within the grace period: warn once it has lasted long enough.
                None => {
                    let lasted = now.saturating_duration_since(first_seen);
                    if lasted < self.grace {
                        recheck_in(self.grace - lasted);
                    }
                    lasted >= self.grace
                }
                Some(at) => {
                    let since = now.saturating_duration_since(at);
                    let changed = prev.get(&id).is_some_and(|a| a.message != f.message);
                    if changed && since < self.min_interval {
                        recheck_in(self.min_interval - since);
                    }
                    (changed && since >= self.min_interval) || since >= self.repeat_interval
                }
            };
            let (message, last_emitted) = if emit {
                events.push(EventSpec::warning(f.reason, f.message.clone()));
                (f.message, Some(now))
            } else if last.is_some() {
                let held = prev
                    .get(&id)
                    .map_or(f.message.clone(), |a| a.message.clone());
                (held, last)
            } else {
                (f.message, None)
            };
            next.insert(
                id,
                Active {
                    message,
                    first_seen,
                    last_emitted,
                },
            );
        }
        let resolved = prev
            .iter()
            .filter(|(id, a)| a.last_emitted.is_some() && !next.contains_key(*id));
        for ((reason, subject), _) in resolved {
            let what = match *reason {
                REASON_NO_PODS => "the selector now matches pods".to_string(),
                REASON_NO_READY_PODS => "at least one selected pod is ready now".to_string(),
                _ => format!(
                    "targetPort of service port {subject} now resolves on every selected pod"
                ),
            };
            events.push(EventSpec::normal(&format!("{reason}Resolved"), what));
        }
        if !next.is_empty() {
            self.active.insert(key.to_string(), next);
        }
        (events, recheck)
    }

    /// Forgets a deleted Service.
    pub fn forget(&mut self, key: &str) {
        self.active.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::NamedPort;
    use crate::writes::EventKind;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(sel: &[(&str, &str)], target: Option<IntOrString>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(
                    sel.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ports: Some(vec![ServicePort {
                    port: 80,
                    target_port: target,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, labels: &[(&str, &str)], ready: bool) -> PodInfo {
        PodInfo {
            name: name.into(),
            namespace: "default".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pod_ip: "10.0.0.1".into(),
            pod_ips: vec!["10.0.0.1".into()],
            phase: "Running".into(),
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn selector_matches_nothing_names_the_near_misses() {
        let pods = [
            pod("nginx-1", &[("app", "nginx")], true),
            pod("nginx-2", &[("app", "nginx")], true),
            pod("nginx-3", &[("app", "nginx")], true),
        ];
        let refs: Vec<&PodInfo> = pods.iter().collect();
        let f = diagnose(&svc(&[("app", "web")], None), &refs);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].reason, REASON_NO_PODS);
        assert_eq!(
            f[0].message,
            "selector app=web matches no pods in namespace default; 3 pods carry app=nginx"
        );
    }

    #[test]
    fn case_and_partial_matches() {
        let pods = [
            pod("a", &[("App", "web")], true),
            pod("b", &[("app", "Web"), ("tier", "fe")], true),
        ];
        let refs: Vec<&PodInfo> = pods.iter().collect();
        let f = diagnose(&svc(&[("app", "web"), ("tier", "fe")], None), &refs);
        let m = &f[0].message;
        assert!(
            m.contains("1 pod carries app=Web (values are case-sensitive)"),
            "{m}"
        );
        assert!(m.contains("label key App"), "{m}");
        assert!(
            m.contains("1 pod matches every term but app=web (b)"),
            "{m}"
        );
        let empty: Vec<&PodInfo> = Vec::new();
        assert!(diagnose(&svc(&[("app", "web")], None), &empty)[0]
            .message
            .ends_with("the namespace has no pods"));
    }

    #[test]
    fn only_not_ready_pods() {
        let mut pending = pod("web-2", &[("app", "web")], false);
        pending.pod_ip.clear();
        pending.pod_ips.clear();
        let pods = [pod("web-1", &[("app", "web")], false), pending];
        let refs: Vec<&PodInfo> = pods.iter().collect();
        let f = diagnose(&svc(&[("app", "web")], None), &refs);
        assert_eq!(f[0].reason, REASON_NO_READY_PODS);
        assert_eq!(
            f[0].message,
            "selector app=web matches 2 pods in namespace default but none is ready: 1 is not passing readiness (web-1); 1 has no IP yet (web-2)"
        );
        let mut s = svc(&[("app", "web")], None);
        if let Some(sp) = s.spec.as_mut() {
            sp.publish_not_ready_addresses = Some(true);
        }
        assert!(
            diagnose(&s, &refs[..1]).is_empty(),
            "published anyway with PNRA"
        );
    }

    #[test]
    fn undeclared_named_target_port() {
        let mut p = pod("web-1", &[("app", "web")], true);
        p.named_ports = vec![NamedPort {
            name: "http".into(),
            protocol: "UDP".into(),
            port: 8080,
        }];
        let mut q = pod("web-2", &[("app", "web")], true);
        q.named_ports = vec![NamedPort {
            name: "web".into(),
            protocol: "TCP".into(),
            port: 8080,
        }];
        let s = svc(&[("app", "web")], Some(IntOrString::String("http".into())));
        let f = diagnose(&s, &[&p]);
        assert_eq!(f[0].reason, REASON_TARGET_PORT);
        assert_eq!(
            f[0].message,
            "targetPort \"http\" of service port 80/TCP is not declared by 1 of 1 selected pods (web-1); a container port named \"http\" exists with protocol UDP (protocols must match)"
        );
        let f = diagnose(&s, &[&q]);
        assert!(
            f[0].message.ends_with("; web-2 declares web/TCP=8080"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn events_are_rate_limited_and_cleared() {
        let mut st = DiagnosticsState {
            grace: Duration::ZERO,
            ..DiagnosticsState::default()
        };
        let t0 = Instant::now();
        let f = || {
            vec![Finding {
                reason: REASON_NO_PODS,
                subject: String::new(),
                message: "m1".into(),
            }]
        };
        assert_eq!(st.update("ns/s", f(), t0).len(), 1);
        assert!(
            st.update("ns/s", f(), t0 + Duration::from_secs(5))
                .is_empty(),
            "same finding: rate-limited"
        );
        let ev = st.update("ns/s", f(), t0 + Duration::from_secs(601));
        assert_eq!(ev.len(), 1, "repeated after the repeat interval");
        let ev = st.update("ns/s", Vec::new(), t0 + Duration::from_secs(602));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Normal);
        assert_eq!(ev[0].reason, "SelectorMatchesNoPodsResolved");
        assert!(st
            .update("ns/s", Vec::new(), t0 + Duration::from_secs(603))
            .is_empty());
    }

    #[test]
    fn a_finding_must_outlast_the_grace_period() {
        let mut st = DiagnosticsState::default();
        let t0 = Instant::now();
        let f = |m: &str| {
            vec![Finding {
                reason: REASON_NO_PODS,
                subject: String::new(),
                message: m.into(),
            }]
        };
        let secs = Duration::from_secs;
        // Created before its Pods: nothing is said while the Pods arrive.
        let (ev, recheck) = st.update_with_recheck("ns/s", f("m1"), t0);
        assert!(ev.is_empty());
        assert_eq!(recheck, Some(DEFAULT_GRACE));
        let (ev, recheck) = st.update_with_recheck("ns/s", f("m2"), t0 + secs(10));
        assert!(ev.is_empty());
        assert_eq!(recheck, Some(DEFAULT_GRACE - secs(10)));
        // Resolved within the grace period: no Warning and no Resolved event.
        assert!(st.update("ns/s", Vec::new(), t0 + secs(20)).is_empty());
        assert!(!st.has("ns/s", REASON_NO_PODS));
        // A finding that lasts is warned about once the period is over, with the latest message.
        assert!(st.update("ns/s", f("m3"), t0 + secs(30)).is_empty());
        let ev = st.update("ns/s", f("m4"), t0 + secs(60));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, REASON_NO_PODS);
        assert_eq!(ev[0].message, "m4");
        assert!(st.update("ns/s", f("m4"), t0 + secs(61)).is_empty());
        let ev = st.update("ns/s", Vec::new(), t0 + secs(62));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, "SelectorMatchesNoPodsResolved");
    }
}
