//! Nodes, pods and clients built from Linux network namespaces, for dataplane tests and the demo.
//! (Full docs below are written once the API settles.)

pub mod bins;
mod cleanup;
mod error;
mod exec;
mod outcome;
pub mod plan;
mod process;
mod topology;
pub mod wire;

pub use cleanup::{cleanup_stale, stale_names, DEFAULT_PREFIX};
pub use error::{Error, Result};
pub use exec::{list_netns, require_root, Netns};
pub use outcome::{ClientOpts, Outcome};
pub use plan::Cidr;
pub use process::{Process, TcpSession};
pub use topology::{
    EchoPorts, Node, Outside, Place, Pod, Topology, TopologyBuilder, DEFAULT_ECHO_PORT,
};
pub use wire::{Proto, RefuseReason};
