//! What a client attempt observed, as tests assert on it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::{Error, Result};
use super::wire::{ClientLine, HttpResponse, RefuseReason};

/// The result of one client attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An echo server answered.
    Replied {
        /// The `--name` of the server that answered (the pod name).
        pod: String,
        /// The client address the server saw: the client's own address unless it was
        /// masqueraded / SNATed on the way.
        peer: SocketAddr,
        /// The address the server received on (the pod IP after DNAT).
        local: SocketAddr,
    },
    /// Actively rejected: TCP reset or ICMP unreachable (what a `reject` verdict produces).
    Refused {
        /// How it was rejected.
        reason: RefuseReason,
    },
    /// No answer within the timeout (what a `drop` verdict or a black hole produces).
    Timeout,
    /// Anything else (e.g. the connection was accepted and then broken before a reply).
    Error {
        /// Description from the client.
        error: String,
    },
}

impl Outcome {
    /// The name of the server that replied, if any.
    pub fn pod(&self) -> Option<&str> {
        match self {
            Outcome::Replied { pod, .. } => Some(pod),
            _ => None,
        }
    }

    /// The source address the server saw, if it replied.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        match self {
            Outcome::Replied { peer, .. } => Some(peer.ip()),
            _ => None,
        }
    }

    /// Whether a server replied.
    pub fn is_replied(&self) -> bool {
        matches!(self, Outcome::Replied { .. })
    }

    /// Whether the attempt was rejected (reset / ICMP unreachable).
    pub fn is_refused(&self) -> bool {
        matches!(self, Outcome::Refused { .. })
    }

    /// Whether the attempt timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Outcome::Timeout)
    }
}

impl From<ClientLine> for Outcome {
    fn from(line: ClientLine) -> Self {
        match line {
            ClientLine::Replied(r) => Outcome::Replied {
                pod: r.pod,
                peer: r.peer,
                local: r.local,
            },
            ClientLine::Response(r) => Outcome::Error {
                error: format!("expected an echo reply, got HTTP {}", r.status),
            },
            ClientLine::Refused { reason, .. } => Outcome::Refused { reason },
            ClientLine::Timeout { .. } => Outcome::Timeout,
            ClientLine::Error { error } => Outcome::Error { error },
        }
    }
}

/// The result of an HTTP GET ([`super::Topology::http_get`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpOutcome {
    /// The server answered (any status).
    Response(HttpResponse),
    /// Actively rejected (TCP reset / ICMP unreachable).
    Refused {
        /// How it was rejected.
        reason: RefuseReason,
    },
    /// No answer within the timeout.
    Timeout,
    /// Anything else.
    Error {
        /// Description from the client.
        error: String,
    },
}

impl HttpOutcome {
    /// The response, if there was one.
    pub fn response(&self) -> Option<&HttpResponse> {
        match self {
            HttpOutcome::Response(r) => Some(r),
            _ => None,
        }
    }

    /// The status code, if there was a response.
    pub fn status(&self) -> Option<u16> {
        self.response().map(|r| r.status)
    }

    /// The body parsed as JSON, if there was a response with a JSON body.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.response()?.body).ok()
    }
}

impl From<ClientLine> for HttpOutcome {
    fn from(line: ClientLine) -> Self {
        match line {
            ClientLine::Response(r) => HttpOutcome::Response(r),
            ClientLine::Replied(r) => HttpOutcome::Error {
                error: format!("expected HTTP, got an echo reply from {}", r.pod),
            },
            ClientLine::Refused { reason, .. } => HttpOutcome::Refused { reason },
            ClientLine::Timeout { .. } => HttpOutcome::Timeout,
            ClientLine::Error { error } => HttpOutcome::Error { error },
        }
    }
}

/// Parses one line of `svcnet-echo http-get` output.
pub(crate) fn parse_http_line(line: &str) -> Result<HttpOutcome> {
    serde_json::from_str::<ClientLine>(line)
        .map(HttpOutcome::from)
        .map_err(|source| Error::ClientOutput {
            line: line.to_string(),
            source,
        })
}

/// Parses one line of `svcnet-echo client` output.
pub(crate) fn parse_client_line(line: &str) -> Result<Outcome> {
    serde_json::from_str::<ClientLine>(line)
        .map(Outcome::from)
        .map_err(|source| Error::ClientOutput {
            line: line.to_string(),
            source,
        })
}

/// Parses the whole output of a non-interactive client run.
pub(crate) fn parse_client_output(stdout: &str) -> Result<Vec<ClientLine>> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<ClientLine>(line).map_err(|source| Error::ClientOutput {
                line: line.to_string(),
                source,
            })
        })
        .collect()
}

/// Options for a client run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOpts {
    /// Per-attempt timeout; `None` uses the topology's default.
    pub timeout: Option<Duration>,
    /// Number of attempts, each from a new socket (new source port).
    pub count: u32,
    /// Source address to bind (an address of the client's namespace).
    pub source: Option<IpAddr>,
    /// Fixed source port for every attempt (UDP: one conntrack entry reused across attempts).
    pub source_port: Option<u16>,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            timeout: None,
            count: 1,
            source: None,
            source_port: None,
        }
    }
}

impl ClientOpts {
    /// `count` attempts with default settings.
    pub fn count(count: u32) -> Self {
        ClientOpts {
            count,
            ..ClientOpts::default()
        }
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the source address.
    pub fn source(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// Sets a fixed source port.
    pub fn source_port(mut self, port: u16) -> Self {
        self.source_port = Some(port);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_outcome() {
        let out = concat!(
            r#"{"outcome":"replied","pod":"a","peer":"10.0.0.1:5","local":"10.0.0.2:80","proto":"tcp","seq":0}"#,
            "\n",
            r#"{"outcome":"refused","reason":"host-unreachable","error":"No route to host"}"#,
            "\n\n",
            r#"{"outcome":"timeout","after_ms":200}"#,
            "\n",
            r#"{"outcome":"error","error":"connection closed before a reply"}"#,
            "\n"
        );
        let v: Vec<Outcome> = parse_client_output(out)
            .unwrap()
            .into_iter()
            .map(Outcome::from)
            .collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].pod(), Some("a"));
        assert_eq!(v[0].peer_ip(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            v[1],
            Outcome::Refused {
                reason: RefuseReason::HostUnreachable
            }
        );
        assert!(v[2].is_timeout());
        assert!(matches!(&v[3], Outcome::Error { error } if error.contains("closed")));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            parse_client_output("hello\n"),
            Err(Error::ClientOutput { .. })
        ));
    }
}
