//! The speaker: runs inside svcnet-proxy, renews this node's heartbeat, takes part in the
//! per-address election and answers ARP/NDP for the addresses this node holds.
//!
//! Each round (every fifth of the renew interval, at most 100 ms apart, and on every watched
//! change) it: renews the heartbeat when due and the proxy is healthy (a proxy that does not keep
//! its rules in sync must not attract traffic); judges which nodes are live by when their
//! heartbeats were last seen to change; computes the addresses to announce
//! ([`super::eligibility`]); decides and makes its Lease writes ([`super::election`]); and points
//! the responders at the addresses it now holds, sending take-over announcements for the new
//! ones.
//!
//! Safety against two nodes answering at once: this node answers only until its last successful
//! heartbeat's *send* time plus the lease duration minus a margin, while any other node waits the
//! full lease duration from when it *saw* that heartbeat before taking over; and it stops
//! answering an address the moment it sees the address's Lease name another node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use super::election::{self, Observed, Step, Wanted};
use super::eligibility::{self, NodeFacts, Policy, Pools, Problem};
use super::inputs::{Inputs, SharedInputs};
use super::leases::{self, LeaseIo, LeaseKind, Written};
use super::metrics::L2Metrics;
use super::packet_socket::{self, Interface};
use super::responder::Responder;
use super::status;
use crate::types::ServiceKey;
use crate::watch::tracker::Tracker;
use kube::api::{Patch, PatchParams};

/// Speaker settings (validated flags).
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// This node.
    pub node: String,
    /// Namespace of the Leases.
    pub lease_namespace: String,
    /// How long a heartbeat stays valid.
    pub lease_duration: Duration,
    /// How often the heartbeat is renewed.
    pub renew_interval: Duration,
    /// Unsolicited announcements sent on take-over.
    pub announce_count: u32,
    /// Time between them.
    pub announce_interval: Duration,
    /// The node IPs from the command line (else the Node's addresses): their interfaces are the
    /// default announcing interfaces.
    pub node_ips: Vec<IpAddr>,
}

impl SpeakerConfig {
    /// How long before its heartbeat would expire for others this node stops answering.
    fn margin(&self) -> Duration {
        self.lease_duration / 10
    }

    fn round(&self) -> Duration {
        (self.renew_interval / 5).clamp(Duration::from_millis(10), Duration::from_millis(100))
    }
}

/// What the speaker writes through: its Leases, the status of L2Announcements, Events.
pub struct SpeakerIo {
    /// Heartbeat and address Leases.
    pub leases: LeaseIo,
    /// L2Announcements (their `status`).
    pub policies: kube::Api<crds::L2Announcement>,
    /// Events on Services and L2Announcements.
    pub events: Arc<runtime::events::EventRecorder>,
}

/// Whether this node may announce at all (its proxy is healthy and has synced once).
pub type HealthCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// A running responder and the signal that stops it.
struct Running {
    responder: Arc<Responder>,
    stop: watch::Sender<bool>,
}

/// The speaker's state between rounds.
pub struct Speaker {
    cfg: SpeakerConfig,
    io: LeaseIo,
    policies_api: kube::Api<crds::L2Announcement>,
    inputs: Arc<SharedInputs>,
    tracker: Arc<Mutex<Tracker>>,
    healthy: HealthCheck,
    events: Arc<runtime::events::EventRecorder>,
    metrics: L2Metrics,
    own_heartbeat: Option<Lease>,
    valid_until: Option<Instant>,
    next_heartbeat: Instant,
    /// Per node: the heartbeat's last renew marker and when this node first saw it.
    observed: BTreeMap<String, (String, Instant)>,
    free_since: BTreeMap<IpAddr, Instant>,
    responders: BTreeMap<String, Running>,
    /// Address → interfaces it is answered on.
    serving: BTreeMap<IpAddr, BTreeSet<String>>,
    interfaces: BTreeMap<String, Interface>,
    interfaces_read: Option<Instant>,
    reported: BTreeSet<String>,
}

impl Speaker {
    /// A speaker writing through `io`.
    pub fn new(
        cfg: SpeakerConfig,
        io: SpeakerIo,
        inputs: Arc<SharedInputs>,
        tracker: Arc<Mutex<Tracker>>,
        healthy: HealthCheck,
        metrics: L2Metrics,
    ) -> Speaker {
        let SpeakerIo {
            leases: io,
            policies: policies_api,
            events,
        } = io;
        Speaker {
            cfg,
            io,
            policies_api,
            inputs,
            tracker,
            healthy,
            events,
            metrics,
            own_heartbeat: None,
            valid_until: None,
            next_heartbeat: Instant::now(),
            observed: BTreeMap::new(),
            free_since: BTreeMap::new(),
            responders: BTreeMap::new(),
            serving: BTreeMap::new(),
            interfaces: BTreeMap::new(),
            interfaces_read: None,
            reported: BTreeSet::new(),
        }
    }

    /// Runs rounds until `shutdown` turns true, then stops answering, releases every address
    /// this node holds and deletes its heartbeat, so that other nodes take over at once.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let inputs = self.inputs.clone();
        loop {
            tokio::select! {
                _ = inputs.changed.notified() => {}
                _ = tokio::time::sleep(self.cfg.round()) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            self.round().await;
        }
        self.stand_down().await;
    }

    async fn round(&mut self) {
        let now = Instant::now();
        let snapshot = {
            let inputs = self.inputs.lock();
            if !inputs.synced() {
                return;
            }
            inputs.clone()
        };
        // Without any L2Announcement there is nothing to elect: no heartbeat writes at all (a
        // cluster that does not use L2 announcement pays nothing for the flag being on).
        if snapshot.policies.is_empty() {
            self.go_idle().await;
            return;
        }
        if now >= self.next_heartbeat {
            self.heartbeat().await;
        }
        let live = self.live(&snapshot, now);
        let policies = self.policies(&snapshot);
        if live.iter().next() == Some(&self.cfg.node) {
            self.write_policy_status(&snapshot);
        }
        let nodes: BTreeMap<String, NodeFacts> = snapshot
            .nodes
            .iter()
            .map(|(n, i)| {
                let facts = NodeFacts {
                    labels: i.labels.clone(),
                    unschedulable: i.unschedulable,
                    being_deleted: i.being_deleted,
                };
                (n.clone(), facts)
            })
            .collect();
        let pools = Pools::new(snapshot.pools.values());
        let (targets, problems) = {
            let t = self.tracker.lock().await;
            eligibility::targets(&t.state, &policies, &nodes, &pools, &self.cfg.node)
        };
        self.report_problems(problems);
        let wanted: Vec<Wanted> = targets
            .values()
            .map(|t| Wanted {
                ip: t.ip,
                candidates: t.candidates.clone(),
            })
            .collect();
        let mut address_leases: BTreeMap<IpAddr, Lease> = snapshot
            .leases
            .values()
            .filter_map(|l| match leases::kind(l) {
                Some(LeaseKind::Address(ip)) => Some((ip, l.clone())),
                _ => None,
            })
            .collect();
        let holders = |m: &BTreeMap<IpAddr, Lease>| -> BTreeMap<IpAddr, Option<String>> {
            m.iter().map(|(ip, l)| (*ip, leases::holder(l))).collect()
        };
        let mut held = holders(&address_leases);
        for w in &wanted {
            let free = held
                .get(&w.ip)
                .cloned()
                .flatten()
                .is_none_or(|h| !live.contains(&h));
            if free {
                self.free_since.entry(w.ip).or_insert(now);
            } else {
                self.free_since.remove(&w.ip);
            }
        }
        self.free_since
            .retain(|ip, _| wanted.iter().any(|w| w.ip == *ip));
        let observed = Observed {
            me: &self.cfg.node,
            now: now.into_std(),
            live: &live,
            holders: &held,
            free_since: &self
                .free_since
                .iter()
                .map(|(ip, t)| (*ip, t.into_std()))
                .collect(),
        };
        let mut decision = election::decide(&wanted, &observed, self.cfg.renew_interval);
        if !decision.steps.is_empty() {
            let wrote = self
                .write(&decision.steps, &mut address_leases, &targets, &snapshot)
                .await;
            if wrote {
                held = holders(&address_leases);
                let free_since = self
                    .free_since
                    .iter()
                    .map(|(ip, t)| (*ip, t.into_std()))
                    .collect();
                let observed = Observed {
                    me: &self.cfg.node,
                    now: now.into_std(),
                    live: &live,
                    holders: &held,
                    free_since: &free_since,
                };
                decision = election::decide(&wanted, &observed, self.cfg.renew_interval);
            }
        }
        let node_ips = if self.cfg.node_ips.is_empty() {
            snapshot
                .nodes
                .get(&self.cfg.node)
                .map(|n| n.addresses.clone())
                .unwrap_or_default()
        } else {
            self.cfg.node_ips.clone()
        };
        let mut plan: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        self.refresh_interfaces(&decision.serve);
        for ip in &decision.serve {
            let Some(t) = targets.get(ip) else { continue };
            let (ifaces, missing) = eligibility::interfaces(
                &t.policies_here,
                &policies,
                self.interfaces
                    .iter()
                    .map(|(n, i)| (n.as_str(), i.addrs.as_slice())),
                &node_ips,
            );
            for (policy, entry) in missing {
                self.warn_policy(&policy, "InterfaceNotFound", &format!(
                    "node {}: no interface matches {entry:?}; addresses are announced on the other interfaces only",
                    self.cfg.node
                ));
            }
            if ifaces.is_empty() {
                self.warn_service(
                    t.services.iter(),
                    "NoAnnounceInterface",
                    &format!(
                        "node {} holds {ip} but has no interface to announce it on",
                        self.cfg.node
                    ),
                );
            }
            plan.insert(*ip, ifaces);
        }
        self.apply(plan).await;
        self.metrics.announced.set(self.serving.len() as i64);
    }

    /// Stops answering and deletes this node's heartbeat (the last L2Announcement is gone).
    async fn go_idle(&mut self) {
        if !self.serving.is_empty() {
            self.apply(BTreeMap::new()).await;
            self.metrics.announced.set(0);
        }
        self.valid_until = None;
        let ours: Vec<Lease> = self
            .inputs
            .lock()
            .leases
            .values()
            .filter(|l| matches!(leases::kind(l), Some(LeaseKind::Address(_))))
            .filter(|l| leases::holder(l).as_deref() == Some(self.cfg.node.as_str()))
            .cloned()
            .collect();
        for l in ours {
            match self.io.delete(&l).await {
                Ok(_) => {
                    if let Some(name) = &l.metadata.name {
                        self.inputs.lock().leases.remove(name);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "deleting an address Lease failed"),
            }
        }
        if let Some(hb) = self.own_heartbeat.take() {
            match self.io.delete(&hb).await {
                Ok(_) => {
                    self.inputs
                        .lock()
                        .leases
                        .remove(&leases::node_lease_name(&self.cfg.node));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deleting the heartbeat Lease failed");
                    self.own_heartbeat = Some(hb);
                }
            }
        }
        self.next_heartbeat = Instant::now();
    }

    /// Renews (or creates) this node's heartbeat when the proxy is healthy.
    async fn heartbeat(&mut self) {
        let sent = Instant::now();
        self.next_heartbeat = sent + self.cfg.renew_interval;
        if !(self.healthy)() {
            // Stop answering now; the heartbeat then expires for the others.
            self.valid_until = None;
            self.metrics.renew_failures.inc();
            return;
        }
        match self
            .io
            .heartbeat(&self.cfg.node, self.own_heartbeat.as_ref())
            .await
        {
            Ok(Written::Ok(l)) => {
                self.own_heartbeat = Some(*l.clone());
                self.inputs.lock().store_lease(*l);
                self.valid_until = Some(sent + self.cfg.lease_duration - self.cfg.margin());
            }
            Ok(Written::Lost) => {
                self.metrics.renew_failures.inc();
                self.own_heartbeat = self
                    .io
                    .get(&leases::node_lease_name(&self.cfg.node))
                    .await
                    .ok()
                    .flatten();
                // Retry at once with the fresh version.
                self.next_heartbeat = Instant::now();
            }
            Err(e) => {
                self.metrics.renew_failures.inc();
                tracing::warn!(error = %e, "renewing the L2 heartbeat Lease failed");
            }
        }
    }

    /// Live nodes: heartbeats seen to change within the lease duration, and this node while
    /// its own heartbeat is valid.
    fn live(&mut self, inputs: &Inputs, now: Instant) -> BTreeSet<String> {
        let mut live = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for l in inputs.leases.values() {
            if leases::kind(l) != Some(LeaseKind::Node) {
                continue;
            }
            let Some(holder) = leases::holder(l) else {
                continue;
            };
            let marker = leases::renew_marker(l);
            let entry = self
                .observed
                .entry(holder.clone())
                .or_insert_with(|| (String::new(), now));
            if entry.0 != marker {
                *entry = (marker, now);
            }
            seen.insert(holder.clone());
            if holder != self.cfg.node && entry.1 + self.cfg.lease_duration > now {
                live.insert(holder);
            }
        }
        self.observed.retain(|n, _| seen.contains(n));
        if self.valid_until.is_some_and(|t| t > now) {
            live.insert(self.cfg.node.clone());
        }
        live
    }

    fn policies(&mut self, inputs: &Inputs) -> Vec<Policy> {
        let mut out = Vec::new();
        for obj in inputs.policies.values() {
            match Policy::parse(obj) {
                Ok(p) => out.push(p),
                Err(msg) => {
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    self.warn_policy(&name, "InvalidSpec", &msg);
                }
            }
        }
        out
    }

    /// Writes the `Ready` condition of every L2Announcement whose status is not what it should
    /// be (this node is the round's status writer). Failures are logged and retried next round.
    fn write_policy_status(&mut self, inputs: &Inputs) {
        let pools: BTreeSet<String> = inputs
            .pools
            .values()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for obj in inputs.policies.values() {
            let parsed = Policy::parse(obj).map(|_| ());
            let Some(st) = status::desired(
                obj,
                parsed.as_ref().map(|_| ()).map_err(String::as_str),
                &pools,
                &now,
            ) else {
                continue;
            };
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            // Remember what was written so the next rounds do not write it again before the
            // watch brings the object back.
            let mut written = obj.clone();
            written.status = Some(st.clone());
            self.inputs.lock().policies.insert(name.clone(), written);
            let api = self.policies_api.clone();
            tokio::spawn(async move {
                let patch = serde_json::json!({"status": st});
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(policy = %name, error = %e, "writing L2Announcement status failed");
                }
            });
        }
    }

    /// Makes the election's writes; returns whether any succeeded.
    async fn write(
        &mut self,
        steps: &[Step],
        address_leases: &mut BTreeMap<IpAddr, Lease>,
        targets: &BTreeMap<IpAddr, eligibility::Target>,
        inputs: &Inputs,
    ) -> bool {
        let mut wrote = false;
        for step in steps {
            let (ip, result) = match step {
                Step::Acquire { ip, from } => {
                    let r = self
                        .io
                        .acquire(*ip, &self.cfg.node, address_leases.get(ip))
                        .await;
                    if let Ok(Written::Ok(_)) = &r {
                        self.metrics.takeovers.inc();
                        let previous = match from {
                            Some(f) if !inputs.nodes.contains_key(f) => {
                                format!(" (its previous holder, node {f}, no longer exists)")
                            }
                            Some(f) => format!(" (taken over from node {f})"),
                            None => String::new(),
                        };
                        if let Some(t) = targets.get(ip) {
                            self.notice_service(
                                t.services.iter(),
                                "L2Announced",
                                &format!("{ip} is announced by node {}{previous}", self.cfg.node),
                            );
                        }
                        tracing::info!(%ip, from = ?from, "acquired address Lease");
                    }
                    (*ip, r)
                }
                Step::Release(ip) => {
                    let Some(cur) = address_leases.get(ip) else {
                        continue;
                    };
                    let r = self.io.release(cur).await;
                    if let Ok(Written::Ok(_)) = &r {
                        self.metrics.releases.inc();
                        tracing::info!(%ip, "released address Lease (no longer eligible)");
                    }
                    (*ip, r)
                }
                Step::Delete(ip) => {
                    let Some(cur) = address_leases.get(ip) else {
                        continue;
                    };
                    let r = self.io.delete(cur).await;
                    if let Ok(Written::Ok(_)) = &r {
                        address_leases.remove(ip);
                        self.inputs
                            .lock()
                            .leases
                            .remove(&leases::address_lease_name(*ip));
                    }
                    match r {
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(%ip, error = %e, "deleting an address Lease failed");
                            continue;
                        }
                    }
                }
            };
            match result {
                Ok(Written::Ok(l)) => {
                    wrote = true;
                    address_leases.insert(ip, *l.clone());
                    self.inputs.lock().store_lease(*l);
                }
                Ok(Written::Lost) => {
                    tracing::debug!(%ip, "lost an address Lease write to another node");
                }
                Err(e) => tracing::warn!(%ip, error = %e, "address Lease write failed"),
            }
        }
        wrote
    }

    /// Re-reads the interfaces once a second, or at once when an address has no interface yet.
    fn refresh_interfaces(&mut self, serve: &BTreeSet<IpAddr>) {
        let stale = self
            .interfaces_read
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let new_address = serve.iter().any(|ip| !self.serving.contains_key(ip));
        if !(stale || new_address) {
            return;
        }
        match packet_socket::interfaces() {
            Ok(i) => {
                self.interfaces = i;
                self.interfaces_read = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "listing interfaces failed"),
        }
    }

    /// Points the responders at `plan` (address → interfaces) and announces what is new.
    async fn apply(&mut self, plan: BTreeMap<IpAddr, BTreeSet<String>>) {
        let mut per_iface: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for (ip, ifaces) in &plan {
            for i in ifaces {
                per_iface.entry(i.clone()).or_default().insert(*ip);
            }
        }
        for name in per_iface.keys() {
            if self.responders.contains_key(name) {
                continue;
            }
            let Some(iface) = self.interfaces.get(name).cloned() else {
                continue;
            };
            match Responder::open(iface, Arc::new(self.metrics.frames.clone())) {
                Ok(r) => {
                    let responder = Arc::new(r);
                    let (stop, stop_rx) = watch::channel(false);
                    let run = responder.clone();
                    tokio::spawn(async move { run.run(stop_rx).await });
                    self.responders
                        .insert(name.clone(), Running { responder, stop });
                }
                Err(e) => tracing::warn!(interface = %name, error = %e, "cannot answer ARP/NDP"),
            }
        }
        for (name, running) in &self.responders {
            let addrs = per_iface.get(name).cloned().unwrap_or_default();
            if let Err(e) = running.responder.set(addrs) {
                tracing::warn!(interface = %name, error = %e, "updating announced addresses failed");
            }
        }
        for (ip, ifaces) in &plan {
            let before = self.serving.get(ip);
            for name in ifaces {
                if before.is_some_and(|b| b.contains(name)) {
                    continue;
                }
                if let Some(running) = self.responders.get(name) {
                    let r = running.responder.clone();
                    let (ip, n, gap) = (*ip, self.cfg.announce_count, self.cfg.announce_interval);
                    tokio::spawn(async move { r.announce(ip, n, gap).await });
                }
            }
        }
        self.serving = plan
            .into_iter()
            .map(|(ip, i)| {
                let open: BTreeSet<String> = i
                    .into_iter()
                    .filter(|n| self.responders.contains_key(n))
                    .collect();
                (ip, open)
            })
            .collect();
    }

    /// Stops answering, releases this node's addresses and deletes its heartbeat.
    async fn stand_down(&mut self) {
        self.apply(BTreeMap::new()).await;
        for running in self.responders.values() {
            let _ = running.stop.send(true);
        }
        let leases: Vec<Lease> = self.inputs.lock().leases.values().cloned().collect();
        for l in leases {
            let ours = leases::holder(&l).as_deref() == Some(self.cfg.node.as_str());
            match leases::kind(&l) {
                Some(LeaseKind::Address(_)) if ours => {
                    if let Err(e) = self.io.release(&l).await {
                        tracing::warn!(error = %e, "releasing an address Lease at shutdown failed");
                    }
                }
                _ => {}
            }
        }
        if let Some(hb) = &self.own_heartbeat {
            if let Err(e) = self.io.delete(hb).await {
                tracing::warn!(error = %e, "deleting the heartbeat Lease at shutdown failed");
            }
        }
        tracing::info!("L2 speaker stood down");
    }

    fn report_problems(&mut self, problems: BTreeSet<Problem>) {
        for p in problems {
            match p {
                Problem::NotInPool { service, ip } => self.warn_service(
                    [&service].into_iter(),
                    "LoadBalancerIPNotInPool",
                    &format!("{ip} lies in no LoadBalancerIPPool; it is not announced"),
                ),
            }
        }
    }

    fn once(&mut self, key: String) -> bool {
        self.reported.insert(key)
    }

    fn warn_policy(&mut self, policy: &str, reason: &str, message: &str) {
        if !self.once(format!("policy/{policy}/{reason}/{message}")) {
            return;
        }
        let reference = ObjectReference {
            api_version: Some(format!("{}/{}", crds::GROUP, crds::VERSION)),
            kind: Some("L2Announcement".into()),
            name: Some(policy.to_string()),
            ..Default::default()
        };
        tracing::warn!(policy, reason, message, "L2Announcement problem");
        let events = self.events.clone();
        let (reason, message) = (reason.to_string(), message.to_string());
        tokio::spawn(async move { events.warning(&reference, &reason, &message).await });
    }

    fn service_event<'a>(
        &mut self,
        services: impl Iterator<Item = &'a ServiceKey>,
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        for s in services {
            if warning && !self.once(format!("svc/{s}/{reason}/{message}")) {
                continue;
            }
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                namespace: Some(s.namespace.clone()),
                name: Some(s.name.clone()),
                ..Default::default()
            };
            let events = self.events.clone();
            let (reason, message) = (reason.to_string(), message.to_string());
            tokio::spawn(async move {
                if warning {
                    events.warning(&reference, &reason, &message).await
                } else {
                    events.normal(&reference, &reason, &message).await
                }
            });
        }
    }

    fn warn_service<'a>(
        &mut self,
        services: impl Iterator<Item = &'a ServiceKey>,
        reason: &str,
        message: &str,
    ) {
        self.service_event(services, true, reason, message);
    }

    fn notice_service<'a>(
        &mut self,
        services: impl Iterator<Item = &'a ServiceKey>,
        reason: &str,
        message: &str,
    ) {
        self.service_event(services, false, reason, message);
    }
}
