//! Traffic through a topology: echo clients, HTTP requests, host-side relays.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Place, Topology, ECHO_READY_TIMEOUT};
use crate::netns::error::{Error, Result};
use crate::netns::exec::output;
use crate::netns::outcome::{
    parse_client_output, parse_http_line, ClientOpts, HttpOutcome, Outcome,
};
use crate::netns::wire::{ClientLine, Proto, EXIT_ERROR, EXIT_REFUSED, EXIT_REPLIED, EXIT_TIMEOUT};

impl Topology {
    /// One client attempt from `from` to `target` with the default timeout.
    pub fn client(&self, from: &impl Place, proto: Proto, target: SocketAddr) -> Result<Outcome> {
        let mut v = self.clients(from, proto, target, &ClientOpts::default())?;
        v.pop()
            .ok_or_else(|| Error::Session("the echo client printed nothing".into()))
    }

    /// `opts.count` client attempts (each on a new socket) in one client process.
    pub fn clients(
        &self,
        from: &impl Place,
        proto: Proto,
        target: SocketAddr,
        opts: &ClientOpts,
    ) -> Result<Vec<Outcome>> {
        let lines = self.client_lines(from, proto, target, opts)?;
        Ok(lines.into_iter().map(Outcome::from).collect())
    }

    fn client_lines(
        &self,
        from: &impl Place,
        proto: Proto,
        target: SocketAddr,
        opts: &ClientOpts,
    ) -> Result<Vec<ClientLine>> {
        let flag = match proto {
            Proto::Tcp => "--tcp",
            Proto::Udp => "--udp",
            Proto::Sctp => "--sctp",
        };
        let timeout = opts.timeout.unwrap_or(self.client_timeout);
        let mut cmd = from.netns().command(&self.echo_binary);
        cmd.args(["client", flag, &target.to_string()])
            .arg("--timeout-ms")
            .arg(timeout.as_millis().to_string())
            .arg("--count")
            .arg(opts.count.max(1).to_string());
        if let Some(src) = opts.source {
            cmd.arg("--source").arg(src.to_string());
        }
        if let Some(port) = opts.source_port {
            cmd.arg("--source-port").arg(port.to_string());
        }
        let out = output(&mut cmd)?;
        let code = out.status.code();
        let expected = [EXIT_REPLIED, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_ERROR];
        if !code.is_some_and(|c| expected.contains(&c)) {
            return Err(Error::Command {
                cmd: crate::netns::exec::describe(&cmd),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let outcomes = parse_client_output(&String::from_utf8_lossy(&out.stdout))?;
        if outcomes.len() != opts.count.max(1) as usize {
            return Err(Error::Command {
                cmd: crate::netns::exec::describe(&cmd),
                status: format!(
                    "printed {} outcomes, expected {}",
                    outcomes.len(),
                    opts.count.max(1)
                ),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(outcomes)
    }

    /// Like [`Topology::clients`], with each attempt's duration as the client measured it inside
    /// the namespace (socket + connect / send → reply; no process start-up). For latency
    /// benchmarks; attempts that got no reply carry `None`.
    pub fn clients_timed(
        &self,
        from: &impl Place,
        proto: Proto,
        target: SocketAddr,
        opts: &ClientOpts,
    ) -> Result<Vec<(Outcome, Option<Duration>)>> {
        let lines = self.client_lines(from, proto, target, opts)?;
        Ok(lines
            .into_iter()
            .map(|line| {
                let rtt = match &line {
                    ClientLine::Replied(r) => r.rtt_us.map(Duration::from_micros),
                    _ => None,
                };
                (Outcome::from(line), rtt)
            })
            .collect())
    }

    /// One HTTP GET of `path` from `from` to `target` (e.g. svcnet-proxy's health-check node
    /// port), with the default client timeout.
    pub fn http_get(
        &self,
        from: &impl Place,
        target: SocketAddr,
        path: &str,
    ) -> Result<HttpOutcome> {
        let mut cmd = from.netns().command(&self.echo_binary);
        cmd.args(["http-get", &target.to_string(), "--path", path])
            .arg("--timeout-ms")
            .arg(self.client_timeout.as_millis().to_string());
        let out = output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find(|l| !l.trim().is_empty()) {
            Some(line) => parse_http_line(line),
            None => Err(Error::Command {
                cmd: crate::netns::exec::describe(&cmd),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    /// Makes `host_target`, a TCP service on the host's loopback (e.g. the embedded API server),
    /// reachable at `127.0.0.1:<port>` inside `at`'s namespace, and returns that address (use it
    /// in the kubeconfig of a svcnet-proxy running there). Two `svcnet-echo relay` processes carry
    /// the bytes through a Unix socket in [`Topology::log_dir`] (a file, so visible from every
    /// namespace); no link or address is added to the host's network namespace. TLS passes
    /// through untouched. The relays live as long as the topology.
    pub fn forward_from_host(
        &self,
        at: &impl Place,
        port: u16,
        host_target: SocketAddr,
    ) -> Result<SocketAddr> {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let sock = self.log_dir.join(format!("relay-{n}.sock"));
        let unix = format!("unix:{}", sock.display());
        let mut host_side = Command::new(&self.echo_binary);
        host_side.args(["relay", "--listen", &unix, "--connect"]);
        host_side.arg(format!("tcp:{host_target}"));
        let mut host_relay = self.spawn_command("host-relay", host_side)?;
        host_relay.wait_for_output("\"ready\":true", ECHO_READY_TIMEOUT)?;
        let listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let mut ns_side = at.netns().command(&self.echo_binary);
        ns_side.args(["relay", "--connect", &unix, "--listen"]);
        ns_side.arg(format!("tcp:{listen}"));
        let mut ns_relay = self.spawn_command(&format!("{}-relay", at.label()), ns_side)?;
        ns_relay.wait_for_output("\"ready\":true", ECHO_READY_TIMEOUT)?;
        let mut relays = self
            .relays
            .lock()
            .map_err(|_| Error::Session("relay list poisoned by a panic".into()))?;
        relays.push(host_relay);
        relays.push(ns_relay);
        Ok(listen)
    }

    /// [`Topology::forward_from_host`] into every node: `host_target` becomes reachable at
    /// `127.0.0.1:<port>` in each node namespace (where svcnet-proxy runs).
    pub fn forward_from_host_to_nodes(
        &self,
        port: u16,
        host_target: SocketAddr,
    ) -> Result<SocketAddr> {
        let mut listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        for node in &self.nodes {
            listen = self.forward_from_host(node, port, host_target)?;
        }
        Ok(listen)
    }
}
