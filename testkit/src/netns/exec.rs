//! Running commands: on the host (`ip`, `nft`, `kill`) and inside a namespace (`ip netns exec`).

use std::ffi::OsStr;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use super::error::{Error, Result};

/// A named network namespace (`/run/netns/<name>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A handle on an existing namespace; no check is made that it exists.
    pub fn new(name: impl Into<String>) -> Self {
        Netns { name: name.into() }
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A [`Command`] that runs `program` inside this namespace (`ip netns exec <ns> program`).
    /// Add arguments, environment and stdio as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.arg("netns").arg("exec").arg(&self.name).arg(program);
        cmd
    }

    /// Runs `program args…` inside the namespace and returns its output, whatever its exit status.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        output(&mut cmd)
    }

    /// Runs `program args…` inside the namespace; fails unless it exits 0. Returns stdout.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run(&mut cmd)
    }

    /// Runs `program args…` inside the namespace with `input` on stdin; fails unless it exits 0.
    /// Returns stdout.
    pub fn run_with_input<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        input: &str,
    ) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run_with_stdin(&mut cmd, input)
    }

    /// Loads an nft script (`nft -f -`) inside the namespace, atomically.
    pub fn nft(&self, script: &str) -> Result<String> {
        self.run_with_input("nft", ["-f", "-"], script)
    }

    /// Runs a shell snippet (`sh -c`) inside the namespace; fails unless it exits 0.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.run("sh", ["-c", script])
    }
}

/// Renders a command for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion and captures its output.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null());
    cmd.output().map_err(|source| Error::Spawn {
        cmd: describe(cmd),
        source,
    })
}

/// Turns a non-zero exit into an error carrying stderr.
pub(crate) fn check(cmd: &Command, out: Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            cmd: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs a command; fails unless it exits 0. Returns stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    check(cmd, out)
}

/// Runs a command with `input` on stdin; fails unless it exits 0.
pub(crate) fn run_with_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        cmd: describe(cmd),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| Error::io(format!("writing stdin of `{}`", describe(cmd)), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("waiting for `{}`", describe(cmd)), e))?;
    check(cmd, out)
}

/// `ip -n <ns> -batch -`: many `ip` commands in one process.
pub(crate) fn ip_batch(ns: &str, lines: &[String]) -> Result<()> {
    let mut script = lines.join("\n");
    script.push('\n');
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns, "-batch", "-"]);
    run_with_stdin(&mut cmd, &script).map(|_| ())
}

/// The effective uid of this process, from /proc/self/status (no libc needed).
pub(crate) fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| Error::InvalidSpec("no Uid line in /proc/self/status".into()))
}

/// Fails with [`Error::NotRoot`] unless running as root.
pub fn require_root() -> Result<()> {
    match effective_uid()? {
        0 => Ok(()),
        euid => Err(Error::NotRoot { euid }),
    }
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_netns() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// PIDs of the processes inside a namespace (`ip netns pids`).
pub(crate) fn netns_pids(ns: &str) -> Result<Vec<u32>> {
    let out = run(Command::new("ip").args(["netns", "pids", ns]))?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Sends `signal` (e.g. "KILL", "TERM") to `pids`. Processes that are already gone are ignored.
pub(crate) fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{signal}"));
    cmd.args(pids.iter().map(u32::to_string));
    // `kill` fails if any pid is gone, which is exactly the race we tolerate here.
    if let Err(e) = output(&mut cmd) {
        tracing::warn!(error = %e, "cannot run kill");
    }
}

/// Kills every process in the namespace, then deletes it. Missing namespaces are not an error.
pub(crate) fn delete_netns(ns: &str) -> Result<()> {
    match netns_pids(ns) {
        Ok(pids) => signal(&pids, "KILL"),
        // The namespace is already gone.
        Err(Error::Command { .. }) => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "delete", ns]);
    match run(&mut cmd) {
        Ok(_) => Ok(()),
        Err(Error::Command { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        Err(e) => Err(e),
    }
}
