//! [`TopologyBuilder`]: what a topology is made of, checked, then created.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{EchoPorts, Node, Outside, Topology, DEFAULT_ECHO_PORT, TOPOLOGIES};
use crate::netns::bins;
use crate::netns::cleanup::{cleanup_stale, DEFAULT_PREFIX};
use crate::netns::error::{Error, Result};
use crate::netns::exec::{require_root, Netns};
use crate::netns::plan::{self, Names};

/// Describes a topology; [`TopologyBuilder::build`] creates it.
#[derive(Clone, Debug)]
pub struct TopologyBuilder {
    nodes: u8,
    pods: Vec<(String, u8)>,
    outside: u8,
    outside_via: u8,
    echo: EchoPorts,
    echo_binary: Option<PathBuf>,
    prefix: String,
    client_timeout: Duration,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            nodes: 2,
            pods: Vec::new(),
            outside: 1,
            outside_via: 1,
            echo: EchoPorts::new(&[DEFAULT_ECHO_PORT], &[DEFAULT_ECHO_PORT])
                .with_sctp(&[DEFAULT_ECHO_PORT]),
            echo_binary: None,
            prefix: DEFAULT_PREFIX.to_string(),
            client_timeout: Duration::from_millis(1000),
        }
    }
}

impl TopologyBuilder {
    /// Number of nodes, 1..=50 (default 2).
    pub fn nodes(mut self, n: u8) -> Self {
        self.nodes = n;
        self
    }
    /// Adds a pod named `name` on node `node` (1-based).
    pub fn pod(mut self, name: impl Into<String>, node: u8) -> Self {
        self.pods.push((name.into(), node));
        self
    }
    /// Number of outside clients, 0..=50 (default 1).
    pub fn outside_clients(mut self, n: u8) -> Self {
        self.outside = n;
        self
    }
    /// The node outside clients send Service / external traffic to (default node 1).
    pub fn outside_via(mut self, node: u8) -> Self {
        self.outside_via = node;
        self
    }
    /// Echo ports started in every pod (default TCP, UDP and SCTP 8080; [`EchoPorts::none`] for
    /// none).
    pub fn echo_ports(mut self, ports: EchoPorts) -> Self {
        self.echo = ports;
        self
    }
    /// Path of `svcnet-echo` (default: [`bins::locate`]). In this crate's tests pass
    /// `env!("CARGO_BIN_EXE_svcnet-echo")`.
    pub fn echo_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.echo_binary = Some(path.into());
        self
    }
    /// Namespace name prefix (default `svn`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Default per-attempt client timeout (default 1 s). Timeouts are how drops are detected,
    /// so keep it small in tests that expect them.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.nodes == 0 || self.nodes > plan::MAX_NODES {
            return Err(Error::InvalidSpec(format!(
                "{} nodes; between 1 and {} are supported",
                self.nodes,
                plan::MAX_NODES
            )));
        }
        if self.outside > plan::MAX_OUTSIDE {
            return Err(Error::InvalidSpec(format!(
                "{} outside clients; at most {} are supported",
                self.outside,
                plan::MAX_OUTSIDE
            )));
        }
        if self.outside > 0 && !(1..=self.nodes).contains(&self.outside_via) {
            return Err(Error::InvalidSpec(format!(
                "outside_via({}) is not a node (1..={})",
                self.outside_via, self.nodes
            )));
        }
        let ok_prefix = !self.prefix.is_empty()
            && self.prefix.len() <= 16
            && self.prefix.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok_prefix {
            return Err(Error::InvalidSpec(format!(
                "prefix {:?} must be 1-16 ASCII letters/digits",
                self.prefix
            )));
        }
        Ok(())
    }

    /// Creates every namespace, link, address and route, and starts the pods' echo servers.
    /// On error, whatever was created is removed again.
    pub fn build(self) -> Result<Topology> {
        require_root()?;
        self.validate()?;
        let echo_binary = match self.echo_binary {
            Some(p) => p,
            None => bins::locate("svcnet-echo")?,
        };
        match cleanup_stale(&self.prefix) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, "removed leftovers of crashed runs")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot clean up stale namespaces"),
        }
        let names = Names {
            prefix: self.prefix.clone(),
            pid: std::process::id(),
            // A per-process counter makes tags unique within the process; the random part
            // avoids leftovers of an earlier process that had the same pid.
            tag: format!(
                "{:x}{:04x}",
                TOPOLOGIES.fetch_add(1, Ordering::Relaxed),
                rand::random::<u16>()
            ),
        };
        let log_dir = std::env::temp_dir().join(names.id());
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| Error::io(format!("creating {}", log_dir.display()), e))?;
        let mut topo = Topology {
            lan: Netns::new(names.lan()),
            names,
            nodes: Vec::new(),
            pods: Vec::new(),
            outside: Vec::new(),
            created: Vec::new(),
            echo_servers: BTreeMap::new(),
            next_host: vec![2; usize::from(self.nodes) + 1],
            next_veth: 0,
            spawned: AtomicU32::new(0),
            relays: Mutex::new(Vec::new()),
            resolv_confs: Mutex::new(Vec::new()),
            echo_binary,
            echo_ports: self.echo.clone(),
            client_timeout: self.client_timeout,
            log_dir,
        };
        // From here on, an early return drops `topo`, which removes what was created.
        let steps = plan::lan_steps(&topo.names);
        topo.apply(&steps)?;
        for index in 1..=self.nodes {
            let steps = plan::node_steps(&topo.names, index, self.nodes);
            topo.apply(&steps)?;
            topo.nodes.push(Node {
                index,
                name: format!("node{index}"),
                netns: Netns::new(topo.names.node(index)),
            });
        }
        for index in 1..=self.outside {
            let steps = plan::outside_steps(&topo.names, index, self.outside_via);
            topo.apply(&steps)?;
            topo.outside.push(Outside {
                index,
                via: self.outside_via,
                netns: Netns::new(topo.names.outside(index)),
            });
        }
        for (name, node) in &self.pods {
            topo.add_pod(name, *node)?;
        }
        tracing::info!(id = %topo.id(), nodes = self.nodes, pods = topo.pods.len(), "topology ready");
        Ok(topo)
    }
}
