//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the dataplane library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An identifier or rule fragment failed validation before it reached nft.
    #[error("invalid nftables {what}: {value:?}")]
    InvalidFragment {
        /// What was being validated (chain name, rule, element, ...).
        what: &'static str,
        /// The offending value (debug-escaped when printed).
        value: String,
    },
    /// The semantic fake rejected a transaction (missing object, dangling reference, ...).
    #[error("transaction rejected: {0}")]
    Rejected(String),
    /// `nft` ran but reported an error.
    #[error("nft failed (exit {status}): {stderr}")]
    Nft {
        /// Exit status of the nft process (-1 when killed by a signal).
        status: i32,
        /// What nft printed on stderr.
        stderr: String,
    },
    /// Spawning or talking to a helper process (`nft`, `conntrack`, `ip`) failed.
    #[error("running {program}: {source}")]
    Exec {
        /// The program we tried to run.
        program: String,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// Output of `nft -j` could not be understood.
    #[error("parsing nft JSON output: {0}")]
    NftJson(#[source] serde_json::Error),
    /// A manifest file could not be read.
    #[error("reading {path}: {source}")]
    ReadManifest {
        /// The file.
        path: PathBuf,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest document could not be parsed.
    #[error("parsing manifest {path} document {index}: {message}")]
    ParseManifest {
        /// The file.
        path: PathBuf,
        /// Zero-based index of the YAML document.
        index: usize,
        /// Parser message.
        message: String,
    },
    /// A Kubernetes object carried a value we cannot use.
    #[error("invalid {kind} {namespace}/{name}: {message}")]
    InvalidObject {
        /// Object kind.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Talking to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// Serving HTTP failed.
    #[error("serving {what} on {addr}: {source}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// Address.
        addr: String,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// Configuration error (bad flag values).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The connection tracker could not be read or changed over ctnetlink.
    #[error("conntrack netlink, {what}: {source}")]
    Conntrack {
        /// What was being done (opening the socket, dumping, deleting).
        what: &'static str,
        /// The underlying IO error (or the kernel's errno, or a malformed answer).
        #[source]
        source: std::io::Error,
    },
    /// A link-layer socket for announcing addresses could not be used.
    #[error("{what} on interface {interface}: {source}")]
    Link {
        /// What was being done (opening the ARP socket, sending an announcement, ...).
        what: &'static str,
        /// The interface.
        interface: String,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidFragment { .. } => "invalid_fragment",
            Error::Rejected(_) => "rejected",
            Error::Nft { .. } => "nft",
            Error::Exec { .. } => "exec",
            Error::NftJson(_) => "nft_json",
            Error::ReadManifest { .. } | Error::ParseManifest { .. } => "manifest",
            Error::InvalidObject { .. } => "invalid_object",
            Error::Config(_) => "config",
            Error::Kube(_) => "kube",
            Error::Serve { .. } => "serve",
            Error::Link { .. } => "link",
            Error::Conntrack { .. } => "conntrack",
        }
    }
}

/// Result alias with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
