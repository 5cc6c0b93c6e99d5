//! The sync engine: render the desired model, diff it against the last applied one and apply the
//! minimal transaction; fall back to a full sync (which never deletes the table) after any failure, when
//! the node configuration changes, or on request (periodic drift repair).

use std::time::{Duration, Instant};

use crate::diff::{diff, full_sync};
use crate::error::Result;
use crate::model::{Counts, Model};
use crate::nft::Nft;
use crate::render::render;
use crate::types::{NodeConfig, ProxyState};

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

/// Keeps the last applied model and applies changes through an [`Nft`].
pub struct Proxier<N: Nft> {
    nft: N,
    node: NodeConfig,
    applied: Option<Model>,
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

    /// Syncs `state` into the kernel. `full` forces a full sync.
    pub fn sync(&mut self, state: &ProxyState, full: bool) -> Result<SyncOutcome> {
        let start = Instant::now();
        let desired = render(state, &self.node);
        let partial = match (&self.applied, full) {
            (Some(old), false) => match diff(old, &desired) {
                Ok(tx) => Some(tx),
                Err(why) => {
                    tracing::info!(reason = %why.0, "partial sync impossible, doing a full sync");
                    None
                }
            },
            _ => None,
        };
        let is_full = partial.is_none();
        let tx = match partial {
            Some(tx) => tx,
            None => {
                let existing = match self.nft.existing() {
                    Ok(e) => e,
                    Err(e) => {
                        self.applied = None;
                        return Err(e);
                    }
                };
                full_sync(&existing, &desired)
            }
        };
        let ops = tx.op_count();
        if let Err(e) = self.nft.run(&tx) {
            self.applied = None;
            return Err(e);
        }
        let counts = desired.counts();
        self.applied = Some(desired);
        Ok(SyncOutcome {
            full: is_full,
            ops,
            counts,
            duration: start.elapsed(),
        })
    }
}
