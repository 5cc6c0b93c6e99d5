//! The line-oriented JSON protocol spoken by `svcnet-echo`, shared by the binary and the harness.
//!
//! The server answers every TCP connection (once on accept, then once per line received), every
//! UDP datagram and every SCTP INIT with one [`Reply`] serialised as a single JSON line. The
//! client prints one [`ClientLine`] per attempt and exits with one of the `EXIT_*` codes;
//! `http-get` prints one [`ClientLine::Response`] (or the failure).

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
    /// Added by the client (never by the server) in non-interactive mode: microseconds from the
    /// start of the attempt (socket, connect / send) to the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
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

/// An HTTP response as `svcnet-echo http-get` received it (e.g. from a health-check node port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a complete HTTP/1.x response (read until the server closed the connection).
pub fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.get(..len)
            .ok_or_else(|| format!("body shorter than content-length {len}"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("truncated chunk")?);
        rest = rest.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// One line of `svcnet-echo client` / `http-get` output: the outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum ClientLine {
    /// The echo server answered.
    Replied(Reply),
    /// An HTTP server answered (`http-get`).
    Response(HttpResponse),
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
            ClientLine::Replied(_) | ClientLine::Response(_) => EXIT_REPLIED,
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
            rtt_us: None,
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

    #[test]
    fn http_responses_are_parsed_with_and_without_chunking() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{\"a\"}extra";
        let r = parse_http_response(plain).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, "{\"a\"}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).unwrap().body, "abcde");
        let eof = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert_eq!(parse_http_response(eof).unwrap().body, "until close");
        for bad in [&b"garbage"[..], b"SSH-2.0\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n"] {
            assert!(parse_http_response(bad).is_err());
        }
        let truncated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab";
        assert!(parse_http_response(truncated).is_err());
    }
}
