//! The harness's error type.

use std::path::PathBuf;

/// Everything that can go wrong while building or driving a topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network namespaces need CAP_SYS_ADMIN + CAP_NET_ADMIN; the harness checks for uid 0.
    #[error("network-namespace tests must run as root (effective uid is {euid})")]
    NotRoot {
        /// The effective uid found in /proc/self/status.
        euid: u32,
    },
    /// A command could not be started at all.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A filesystem or pipe operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The topology description is not valid (bad pod name, unknown node, too many nodes, …).
    #[error("invalid topology: {0}")]
    InvalidSpec(String),
    /// A node, pod or outside client that does not exist was asked for.
    #[error("{0} does not exist in this topology")]
    NotFound(String),
    /// A binary the harness needs was not found.
    #[error(
        "binary `{name}` not found (tried {tried:?}); build it first, e.g. `cargo build --bins --workspace`, \
         or point {env} at it"
    )]
    BinaryNotFound {
        /// The binary's name.
        name: String,
        /// Every path that was tried.
        tried: Vec<PathBuf>,
        /// The environment variable that overrides the lookup.
        env: String,
    },
    /// Something did not happen in time (a server becoming ready, a process printing a line).
    #[error("timed out after {after_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after_ms: u128,
    },
    /// `svcnet-echo client` printed something that is not a client line.
    #[error("cannot parse echo client output {line:?}: {source}")]
    ClientOutput {
        /// The offending line.
        line: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A long-lived session could not be used (the connection failed or the client exited).
    #[error("tcp session: {0}")]
    Session(String),
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
