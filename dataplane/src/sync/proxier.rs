//! The sync engine: re-render only the changed Services into the [`Assembly`], apply the minimal
//! transaction; fall back to a full sync (which never deletes the table) after any failure, when the node
//! configuration changes, or on request (periodic drift repair).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::apply::nft::Nft;
use crate::compute::assembly::Assembly;
use crate::compute::model::{Counts, Op, OpSink};
use crate::error::Result;
use crate::types::{NodeConfig, ProxyState, ServiceKey};

/// What one sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Whether it was a full sync.
    pub full: bool,
    /// Operations in the transaction (elements count individually).
    pub ops: usize,
    /// Size of the programmed model.
    pub counts: Counts,
    /// Time spent (render + diff + apply).
    pub duration: Duration,
}

/// Counts operations passing through to another sink.
struct CountingSink<'a> {
    inner: &'a mut dyn OpSink,
    ops: usize,
}

impl OpSink for CountingSink<'_> {
    fn push_op(&mut self, op: Op) {
        self.ops += match &op {
            Op::AddElements { elements, .. } => elements.len(),
            Op::DeleteElements { keys, .. } => keys.len(),
            _ => 1,
        };
        self.inner.push_op(op);
    }
}

/// Keeps the applied [`Assembly`] and applies changes through an [`Nft`].
pub struct Proxier<N: Nft> {
    nft: N,
    node: NodeConfig,
    applied: Option<Assembly>,
}

impl<N: Nft> Proxier<N> {
    /// A proxier whose first sync is a full one.
    pub fn new(nft: N, node: NodeConfig) -> Self {
        Proxier {
            nft,
            node,
            applied: None,
        }
    }

    /// The node configuration.
    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// The applier.
    pub fn nft(&self) -> &N {
        &self.nft
    }

    /// Replaces the node configuration; the next sync is a full one if it changed.
    pub fn set_node(&mut self, node: NodeConfig) {
        if node != self.node {
            self.node = node;
            self.applied = None;
        }
    }

    /// Forces the next sync to be a full one.
    pub fn force_full_sync(&mut self) {
        self.applied = None;
    }

    /// Whether the next sync will be a full one.
    pub fn needs_full_sync(&self) -> bool {
        self.applied.is_none()
    }

    /// Syncs `state` into the kernel. `changed` lists the Services whose Service or EndpointSlices changed
    /// since the last sync (`None` = compare every Service); `full` forces a full sync.
    pub fn sync(
        &mut self,
        state: &ProxyState,
        changed: Option<&BTreeSet<ServiceKey>>,
        full: bool,
    ) -> Result<SyncOutcome> {
        let start = Instant::now();
        let partial = match self.applied.as_mut() {
            Some(a) if !full => Some(a),
            _ => None,
        };
        if let Some(assembly) = partial {
            let keys: BTreeSet<ServiceKey> = match changed {
                Some(c) => c.clone(),
                None => assembly
                    .services()
                    .into_iter()
                    .chain(state.services.keys().cloned())
                    .collect(),
            };
            let tx = assembly.update(state, keys);
            if let Some((fam, set, n, cap)) = assembly.over_capacity() {
                // The kernel would refuse the transaction (ENFILE); a full sync re-declares the set
                // with room for the new count.
                tracing::info!(family = ?fam, set, elements = n, size = cap, "set outgrew its declared size; full sync");
            } else {
                let ops = tx.op_count();
                if let Err(e) = self.nft.run(&tx) {
                    self.applied = None;
                    return Err(e);
                }
                let counts = assembly.counts();
                return Ok(SyncOutcome {
                    full: false,
                    ops,
                    counts,
                    duration: start.elapsed(),
                });
            }
        }
        self.applied = None;
        let existing = self.nft.existing()?;
        let streamed: std::cell::RefCell<Option<crate::compute::assembly::FullBuild>> =
            Default::default();
        let mut built: Option<Assembly> = None;
        let mut ops = 0usize;
        let node = &self.node;
        self.nft.run_streaming(
            &mut |sink| {
                let mut counter = CountingSink {
                    inner: sink,
                    ops: 0,
                };
                *streamed.borrow_mut() =
                    Some(Assembly::stream_full(node, state, &existing, &mut counter));
                ops = counter.ops;
                Ok(())
            },
            // Runs while nft evaluates and commits what was streamed.
            &mut || built = streamed.borrow_mut().take().map(|b| b.finish()),
        )?;
        let assembly =
            built.ok_or_else(|| crate::Error::Rejected("full sync produced nothing".into()))?;
        let counts = assembly.counts();
        self.applied = Some(assembly);
        Ok(SyncOutcome {
            full: true,
            ops,
            counts,
            duration: start.elapsed(),
        })
    }
}
