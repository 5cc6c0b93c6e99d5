//! The transport a request came over, which decides how large an answer may be and keeps UDP
//! and TCP answers apart in the answer cache.

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP: responses are size-limited.
    Udp,
    /// TCP: up to 65,535 bytes.
    Tcp,
}
