//! The `svcnet-echo` command-line contract (JSON lines and exit codes), on loopback only.
//! These tests need no root.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};

use testkit::netns::wire::{
    ClientLine, Proto, RefuseReason, EXIT_REFUSED, EXIT_REPLIED, EXIT_TIMEOUT, EXIT_USAGE,
};

/// The svcnet-echo binary (built by `cargo build --workspace --bins`).
fn echo() -> std::path::PathBuf {
    testkit::netns::bins::locate("svcnet-echo")
        .expect("svcnet-echo is built (cargo build --workspace --bins)")
}

/// A running server, killed on drop (also when the test fails).
struct Server {
    child: Child,
    tcp: SocketAddr,
    udp: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Server {
    let mut child = Command::new(echo())
        .args(["serve", "--name", "lo-echo", "--tcp", "0", "--udp", "0"])
        .args(["--bind", "127.0.0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["ready"], true, "{line}");
    let addr = |k: &str| ready[k][0].as_str().unwrap().parse().unwrap();
    Server {
        tcp: addr("tcp"),
        udp: addr("udp"),
        child,
    }
}

fn client(args: &[&str]) -> (Vec<ClientLine>, i32, Output) {
    let out = Command::new(echo())
        .arg("client")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, out.status.code().unwrap(), out)
}

#[test]
fn replies_carry_name_peer_and_local() {
    let s = serve();
    for (flag, addr, proto) in [("--tcp", s.tcp, Proto::Tcp), ("--udp", s.udp, Proto::Udp)] {
        let (lines, code, _) = client(&[flag, &addr.to_string(), "--count", "3"]);
        assert_eq!(code, EXIT_REPLIED);
        assert_eq!(lines.len(), 3);
        for line in lines {
            let ClientLine::Replied(r) = line else {
                panic!("{line:?}")
            };
            assert_eq!(r.pod, "lo-echo");
            assert_eq!(r.proto, proto);
            assert_eq!(r.local, addr);
            assert_eq!(r.peer.ip().to_string(), "127.0.0.1");
            assert!(r.rtt_us.is_some(), "the client times every attempt");
        }
    }
}

#[test]
fn closed_ports_are_refused() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    drop((tcp, udp));
    for (flag, addr) in [("--tcp", tcp_addr), ("--udp", udp_addr)] {
        let (lines, code, _) = client(&[flag, &addr.to_string()]);
        assert_eq!(code, EXIT_REFUSED, "{flag}");
        assert!(
            matches!(
                lines.as_slice(),
                [ClientLine::Refused {
                    reason: RefuseReason::ConnectionRefused,
                    ..
                }]
            ),
            "{lines:?}"
        );
    }
}

#[test]
fn silence_is_a_timeout() {
    // Sockets that exist but never answer: the UDP datagram and the TCP greeting go unanswered.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (flag, addr) in [
        ("--tcp", tcp.local_addr().unwrap()),
        ("--udp", udp.local_addr().unwrap()),
    ] {
        let (lines, code, _) = client(&[flag, &addr.to_string(), "--timeout-ms", "150"]);
        assert_eq!(code, EXIT_TIMEOUT, "{flag}");
        assert_eq!(lines, vec![ClientLine::Timeout { after_ms: 150 }]);
    }
}

#[test]
fn bad_usage_exits_64() {
    for args in [
        vec!["--tcp", "not-an-address"],
        vec![],
        vec!["--udp", "127.0.0.1:1", "--interactive"],
    ] {
        let (_, code, out) = client(&args);
        assert_eq!(code, EXIT_USAGE, "{args:?}: {out:?}");
    }
}

#[test]
fn interactive_mode_echoes_each_line_on_one_connection() {
    let s = serve();
    let mut child = Command::new(echo())
        .args(["client", "--tcp", &s.tcp.to_string(), "--interactive"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut next = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        match serde_json::from_str::<ClientLine>(&line).unwrap() {
            ClientLine::Replied(r) => r,
            other => panic!("{other:?}"),
        }
    };
    let greeting = next();
    assert_eq!(greeting.seq, Some(0));
    for (i, msg) in ["one", "two"].iter().enumerate() {
        writeln!(stdin, "{msg}").unwrap();
        let r = next();
        assert_eq!(r.seq, Some(i as u64 + 1));
        assert_eq!(r.msg.as_deref(), Some(*msg));
        assert_eq!(r.peer, greeting.peer, "same connection, same source port");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn http_get_reports_status_headers_and_body() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = String::new();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            request.push_str(&line);
        }
        let body = r#"{"service":{"namespace":"default","name":"web"},"localEndpoints":0}"#;
        write!(
            conn,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        request
    });
    let out = Command::new(echo())
        .args(["http-get", &addr.to_string(), "--path", "/healthz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_REPLIED), "{out:?}");
    let line: ClientLine = serde_json::from_slice(&out.stdout).unwrap();
    let ClientLine::Response(r) = line else {
        panic!("{line:?}")
    };
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["localEndpoints"], 0);
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /healthz HTTP/1.1\r\n"),
        "{request}"
    );

    let bad = Command::new(echo())
        .args(["http-get", &addr.to_string(), "--path", "no-slash"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(EXIT_USAGE));
}
