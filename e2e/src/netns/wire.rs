//! The line-oriented JSON protocol spoken by `svcnet-echo`, shared by the binary and the harness.
//!
//! The server answers every TCP connection (once on accept, then once per line received), every
//! UDP datagram and every SCTP INIT with one [`Reply`] serialised as a single JSON line. The client prints one
//! [`ClientLine`] per attempt and exits with one of the `EXIT_*` codes.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Exit code of `svcnet-echo client` when every attempt got a reply.
pub const EXIT_REPLIED: i32 = 0;
/// Exit code for an error that is not a network outcome (bad arguments, local socket errors, a
/// connection that broke after it was established).
pub const EXIT_ERROR: i32 = 1;
/// Exit code when an attempt was actively rejected: TCP reset (`ECONNREFUSED`), SCTP ABORT, or
/// an ICMP destination-unreachable (port, host, network, protocol, administratively prohibited).
pub const EXIT_REFUSED: i32 = 2;
/// Exit code when an attempt got no answer at all within the timeout (packets dropped).
pub const EXIT_TIMEOUT: i32 = 3;
/// Exit code for invalid command-line usage (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

/// Transport protocol of an echo exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The lower-case protocol name, as used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the echo server answers: who it is and the addresses it saw. For SCTP it travels in the
/// State Cookie of the INIT-ACK (see [`super::sctp`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The `--name` the server was started with (the pod name in the harness).
    pub pod: String,
    /// The source address of the connection or datagram as the server saw it (after any NAT).
    /// IPv4-mapped IPv6 addresses are reported as plain IPv4.
    pub peer: SocketAddr,
    /// The local address the connection or datagram arrived on (after any DNAT).
    pub local: SocketAddr,
    /// The protocol of the exchange.
    pub proto: Proto,
    /// TCP only: 0 for the greeting sent on accept, then 1, 2, … for each echoed line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The line (TCP) or datagram payload (UDP) that was echoed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
}

/// Why an attempt counts as rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefuseReason {
    /// TCP reset, or ICMP port unreachable.
    ConnectionRefused,
    /// ICMP host unreachable or administratively prohibited (or no neighbour answered).
    HostUnreachable,
    /// ICMP network unreachable, or no route on the client.
    NetworkUnreachable,
    /// ICMP protocol unreachable / ICMPv6 parameter problem: nothing handles the protocol
    /// (SCTP to a namespace where no `svcnet-echo` SCTP server runs).
    ProtocolUnreachable,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefuseReason::ConnectionRefused => "connection refused",
            RefuseReason::HostUnreachable => "host unreachable",
            RefuseReason::NetworkUnreachable => "network unreachable",
            RefuseReason::ProtocolUnreachable => "protocol unreachable",
        })
    }
}

/// One line of `svcnet-echo client` output: the outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum ClientLine {
    /// The server answered.
    Replied(Reply),
    /// The attempt was actively rejected.
    Refused {
        /// Classified reason.
        reason: RefuseReason,
        /// The operating system's error text.
        error: String,
    },
    /// Nothing came back within the timeout.
    Timeout {
        /// The timeout that expired, in milliseconds.
        after_ms: u64,
    },
    /// Some other failure (local error, connection broken after it was established).
    Error {
        /// Description of the failure.
        error: String,
    },
}

impl ClientLine {
    /// The exit code that corresponds to this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientLine::Replied(_) => EXIT_REPLIED,
            ClientLine::Refused { .. } => EXIT_REFUSED,
            ClientLine::Timeout { .. } => EXIT_TIMEOUT,
            ClientLine::Error { .. } => EXIT_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_round_trips_and_omits_empty_fields() {
        let r = Reply {
            pod: "web-0".into(),
            peer: "10.244.1.2:40000".parse().unwrap(),
            local: "[fd00:244:1::3]:80".parse().unwrap(),
            proto: Proto::Tcp,
            seq: None,
            msg: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"pod":"web-0","peer":"10.244.1.2:40000","local":"[fd00:244:1::3]:80","proto":"tcp"}"#
        );
        assert_eq!(serde_json::from_str::<Reply>(&s).unwrap(), r);
    }

    #[test]
    fn client_lines_are_tagged_by_outcome() {
        let line = ClientLine::Refused {
            reason: RefuseReason::ConnectionRefused,
            error: "Connection refused (os error 111)".into(),
        };
        let s = serde_json::to_string(&line).unwrap();
        assert!(
            s.starts_with(r#"{"outcome":"refused","reason":"connection-refused""#),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<ClientLine>(&s).unwrap(), line);
        let replied = r#"{"outcome":"replied","pod":"p","peer":"1.2.3.4:5","local":"5.6.7.8:80","proto":"udp","msg":"x"}"#;
        match serde_json::from_str::<ClientLine>(replied).unwrap() {
            ClientLine::Replied(r) => {
                assert_eq!(r.proto, Proto::Udp);
                assert_eq!(r.msg.as_deref(), Some("x"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            ClientLine::Timeout { after_ms: 5 }.exit_code(),
            EXIT_TIMEOUT
        );
    }
}
