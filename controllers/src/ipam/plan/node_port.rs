//! nodePorts and healthCheckNodePort, following upstream's `initNodePorts` (create),
//! `updateNodePorts` (update) and `allocHealthCheckNodePort` / `updateHealthCheckNodePort`.
//!
//! The asymmetry is deliberate and upstream's: on **create**, service ports with the same `port`
//! number (53/TCP + 53/UDP) share one nodePort, and a nodePort the user set on one of them is
//! reused for the others; on **update**, every port with `nodePort: 0` gets its own allocation.
//! `allocateLoadBalancerNodePorts: false` allocates nothing new but honours explicit requests.

use std::collections::{HashMap, HashSet};

use super::{PlanError, PlanErrors};
use crate::ipam::svc_view::SvcView;

/// The planned nodePort of one `spec.ports` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSlot {
    /// No nodePort (`0`).
    Zero,
    /// This exact number (user-requested, or allocated before); it must be claimed by the Service.
    Fixed(u16),
    /// The n-th fresh allocation of this plan (ports sharing a number share the index).
    New(usize),
}

/// The planned node ports of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortPlan {
    /// One slot per `spec.ports` entry.
    pub ports: Vec<PortSlot>,
    /// How many fresh numbers [`PortSlot::New`] refers to.
    pub fresh: usize,
    /// `spec.healthCheckNodePort`.
    pub health_check: HealthSlot,
}

/// The planned health-check node port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSlot {
    /// Not needed (`0`).
    Zero,
    /// This exact number.
    Fixed(u16),
    /// Allocate one.
    New,
}

fn to_port(field: String, n: i32) -> Result<u16, PlanError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PlanError::invalid(field, n, "must be between 1 and 65535, inclusive"))
}

/// Plans the node ports of `new`; `old` is the Service after its previous successful allocation
/// (`None` on create, which selects create-time sharing).
pub fn plan_node_ports(new: &SvcView, old: Option<&SvcView>) -> Result<NodePortPlan, PlanErrors> {
    let health_check = plan_health_check(new)?;
    if !new.type_.has_node_ports() {
        // ClusterIP / ExternalName: node ports are dropped (and released).
        return Ok(NodePortPlan {
            ports: vec![PortSlot::Zero; new.ports.len()],
            fresh: 0,
            health_check,
        });
    }
    let allocate = new.should_allocate_node_ports();
    let mut ports = Vec::with_capacity(new.ports.len());
    let mut fresh = 0;
    match old {
        None => {
            // Create: one nodePort per port number.
            let mut by_number: HashMap<i32, PortSlot> = HashMap::new();
            let mut taken: HashSet<u16> = HashSet::new();
            for (i, p) in new.ports.iter().enumerate() {
                let field = format!("spec.ports[{i}].nodePort");
                if p.node_port == 0 && !allocate {
                    ports.push(PortSlot::Zero);
                    continue;
                }
                let slot = match by_number.get(&p.port) {
                    None => {
                        // The first user-set nodePort among ports with this number, if any.
                        let requested = new
                            .ports
                            .iter()
                            .find(|q| q.port == p.port && q.node_port != 0)
                            .map(|q| q.node_port);
                        let slot = match requested {
                            Some(np) => {
                                let np = to_port(field.clone(), np)?;
                                if !taken.insert(np) {
                                    return Err(already_allocated(field, np).into());
                                }
                                PortSlot::Fixed(np)
                            }
                            None => {
                                fresh += 1;
                                PortSlot::New(fresh - 1)
                            }
                        };
                        by_number.insert(p.port, slot);
                        slot
                    }
                    Some(&shared) => {
                        if p.node_port == 0 {
                            shared
                        } else {
                            let np = to_port(field.clone(), p.node_port)?;
                            if shared == PortSlot::Fixed(np) {
                                shared
                            } else {
                                if !taken.insert(np) {
                                    return Err(already_allocated(field, np).into());
                                }
                                PortSlot::Fixed(np)
                            }
                        }
                    }
                };
                ports.push(slot);
            }
        }
        Some(old) => {
            // Update: every unset nodePort gets its own allocation.
            // Numbers the Service held before stay claimed by it (the executor's claim check is
            // idempotent for them); new numbers are claimed fresh.
            let _ = old;
            let mut seen: HashSet<(String, u16)> = HashSet::new();
            for (i, p) in new.ports.iter().enumerate() {
                let field = format!("spec.ports[{i}].nodePort");
                if p.node_port == 0 && !allocate {
                    ports.push(PortSlot::Zero);
                    continue;
                }
                let slot = if p.node_port != 0 {
                    let np = to_port(field.clone(), p.node_port)?;
                    if !seen.insert((p.protocol.clone(), np)) {
                        return Err(PlanError::invalid(
                            field,
                            np,
                            format!("duplicate nodePort: {{{} {np}}}", p.protocol),
                        )
                        .into());
                    }
                    PortSlot::Fixed(np)
                } else {
                    fresh += 1;
                    PortSlot::New(fresh - 1)
                };
                ports.push(slot);
            }
        }
    }
    Ok(NodePortPlan {
        ports,
        fresh,
        health_check,
    })
}

fn plan_health_check(new: &SvcView) -> Result<HealthSlot, PlanError> {
    if !new.needs_health_check() {
        return Ok(HealthSlot::Zero);
    }
    if new.health_check_node_port != 0 {
        let port = to_port(
            "spec.healthCheckNodePort".to_string(),
            new.health_check_node_port,
        )?;
        return Ok(HealthSlot::Fixed(port));
    }
    Ok(HealthSlot::New)
}

fn already_allocated(field: String, np: u16) -> PlanError {
    PlanError::invalid(field, np, "provided port is already allocated")
        .reason("PortAlreadyAllocated")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::svc_view::fixtures::svc;
    use crate::ipam::svc_view::SvcType::*;
    use PortSlot::*;

    #[test]
    fn create_shares_one_node_port_across_protocols_of_a_port_number() {
        let s = svc("dns")
            .typ(NodePort)
            .port(53, "TCP", 0)
            .port(53, "UDP", 0)
            .port(80, "TCP", 0);
        let plan = plan_node_ports(&s, None).unwrap();
        assert_eq!(plan.ports, vec![New(0), New(0), New(1)]);
        assert_eq!(plan.fresh, 2);
    }

    #[test]
    fn create_reuses_a_user_node_port_for_the_other_protocol() {
        // The request sits on the *second* entry; upstream scans forward and reuses it.
        let s = svc("dns")
            .typ(NodePort)
            .port(53, "TCP", 0)
            .port(53, "UDP", 30053);
        let plan = plan_node_ports(&s, None).unwrap();
        assert_eq!(plan.ports, vec![Fixed(30053), Fixed(30053)]);
        assert_eq!(plan.fresh, 0);
        // Two different explicit values for one port number: both are allocated separately.
        let s = svc("dns")
            .typ(NodePort)
            .port(53, "TCP", 30053)
            .port(53, "UDP", 30054);
        let plan = plan_node_ports(&s, None).unwrap();
        assert_eq!(plan.ports, vec![Fixed(30053), Fixed(30054)]);
        // One number requested for two different port numbers: already allocated.
        let s = svc("x")
            .typ(NodePort)
            .port(53, "TCP", 30053)
            .port(54, "UDP", 30053);
        let err = plan_node_ports(&s, None).unwrap_err();
        assert!(err.mentions("provided port is already allocated"), "{err}");
    }

    #[test]
    fn update_allocates_each_unset_node_port_separately() {
        // upstream e2e: ClusterIP 80/TCP → NodePort 80/TCP + 80/UDP gives two nodePorts.
        let old = svc("web").port(80, "TCP", 0);
        let new = svc("web")
            .typ(NodePort)
            .port(80, "TCP", 0)
            .port(80, "UDP", 0);
        let plan = plan_node_ports(&new, Some(&old)).unwrap();
        assert_eq!(plan.ports, vec![New(0), New(1)]);
        // Adding UDP to an existing NodePort Service: the TCP one is kept, UDP gets a new one.
        let old = svc("web").typ(NodePort).port(80, "TCP", 30080);
        let new = old.clone().port(80, "UDP", 0);
        let plan = plan_node_ports(&new, Some(&old)).unwrap();
        assert_eq!(plan.ports, vec![Fixed(30080), New(0)]);
        // The same number on two protocols stays legal on update; twice on one protocol is not.
        let new = svc("web")
            .typ(NodePort)
            .port(80, "TCP", 30080)
            .port(80, "UDP", 30080);
        assert_eq!(
            plan_node_ports(&new, Some(&old)).unwrap().ports,
            vec![Fixed(30080), Fixed(30080)]
        );
        let new = svc("web")
            .typ(NodePort)
            .port(80, "TCP", 30080)
            .port(81, "TCP", 30080);
        let err = plan_node_ports(&new, Some(&old)).unwrap_err();
        assert!(err.mentions("duplicate nodePort"), "{err}");
    }

    #[test]
    fn type_change_to_cluster_ip_drops_node_ports() {
        let old = svc("web").typ(NodePort).port(80, "TCP", 30080);
        let new = svc("web").typ(ClusterIP).port(80, "TCP", 30080);
        let plan = plan_node_ports(&new, Some(&old)).unwrap();
        assert_eq!(plan.ports, vec![Zero]);
        let plan = plan_node_ports(&svc("x").typ(ExternalName).port(80, "TCP", 0), None).unwrap();
        assert_eq!(plan.ports, vec![Zero]);
    }

    #[test]
    fn allocate_load_balancer_node_ports_false_only_honours_requests() {
        let s = svc("lb")
            .typ(LoadBalancer)
            .no_lb_node_ports()
            .port(80, "TCP", 0)
            .port(443, "TCP", 31443);
        for old in [None, Some(&s)] {
            let plan = plan_node_ports(&s, old).unwrap();
            assert_eq!(plan.ports, vec![Zero, Fixed(31443)]);
            assert_eq!(plan.fresh, 0);
        }
        let lb = svc("lb").typ(LoadBalancer).port(80, "TCP", 0);
        assert_eq!(plan_node_ports(&lb, None).unwrap().ports, vec![New(0)]);
    }

    #[test]
    fn health_check_node_port_only_for_lb_with_local_policy() {
        let lb = svc("lb").typ(LoadBalancer).port(80, "TCP", 0);
        assert_eq!(
            plan_node_ports(&lb, None).unwrap().health_check,
            HealthSlot::Zero
        );
        let local = lb.clone().etp_local();
        assert_eq!(
            plan_node_ports(&local, None).unwrap().health_check,
            HealthSlot::New
        );
        let requested = local.clone().hc(32000);
        assert_eq!(
            plan_node_ports(&requested, None).unwrap().health_check,
            HealthSlot::Fixed(32000)
        );
        // NodePort + Local needs no health check port (upstream NeedsHealthCheck is LB-only).
        let np = svc("np").typ(NodePort).etp_local().port(80, "TCP", 0);
        assert_eq!(
            plan_node_ports(&np, None).unwrap().health_check,
            HealthSlot::Zero
        );
        // Local → Cluster releases it: the plan no longer holds it.
        let cluster = lb.clone().hc(32000);
        assert_eq!(
            plan_node_ports(&cluster, Some(&requested))
                .unwrap()
                .health_check,
            HealthSlot::Zero
        );
    }

    #[test]
    fn invalid_numbers_are_errors_not_panics() {
        let s = svc("x").typ(NodePort).port(80, "TCP", 70000);
        assert!(plan_node_ports(&s, None)
            .unwrap_err()
            .mentions("between 1 and 65535"));
        let s = svc("x").typ(NodePort).port(80, "TCP", -1);
        assert!(plan_node_ports(&s, Some(&s))
            .unwrap_err()
            .mentions("between 1 and 65535"));
    }
}
