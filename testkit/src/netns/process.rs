//! Long-running processes inside namespaces: [`Process`] (output captured to files) and
//! [`TcpSession`] (a long-lived echo connection driven line by line).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::exec::{describe, signal};
use super::outcome::{parse_client_line, Outcome};

/// How often waiting loops poll.
const POLL: Duration = Duration::from_millis(5);

/// A child process running in a namespace, killed (SIGKILL) and reaped when dropped.
///
/// Its stdout and stderr go to files, readable at any time with [`Process::stdout`] /
/// [`Process::stderr`]; their tails are printed if it is dropped while a test panics.
#[derive(Debug)]
pub struct Process {
    label: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `cmd` (usually from [`super::Netns::command`]) with stdout/stderr redirected to
    /// `<log_dir>/<label>.out` / `.err`.
    pub fn spawn(label: &str, mut cmd: Command, log_dir: &Path) -> Result<Process> {
        let base = log_dir.join(sanitize(label));
        let stdout_path = base.with_extension("out");
        let stderr_path = base.with_extension("err");
        let open = |p: &Path| {
            std::fs::File::create(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
        };
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout_path)?)
            .stderr(open(&stderr_path)?);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: describe(&cmd),
            source,
        })?;
        tracing::debug!(label, pid = child.id(), cmd = %describe(&cmd), "spawned");
        Ok(Process {
            label: label.to_string(),
            child,
            stdout_path,
            stderr_path,
            status: None,
        })
    }

    /// The label given at spawn time (used for log file names).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id. `ip netns exec` execs the program, so this is the program itself.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Paths of the stdout and stderr files.
    pub fn log_paths(&self) -> (&Path, &Path) {
        (&self.stdout_path, &self.stderr_path)
    }

    /// Waits until stdout or stderr contains `needle`. Fails early if the process exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_status() {
                // One last look: the line may have been written just before exiting.
                if self.stdout().contains(needle) || self.stderr().contains(needle) {
                    return Ok(());
                }
                return Err(Error::Session(format!(
                    "{} exited ({status}) before printing {needle:?}; stderr: {}",
                    self.label,
                    tail(&self.stderr(), 20)
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} to print {needle:?}", self.label),
                    after_ms: timeout.as_millis(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_status() {
            return Ok(status);
        }
        // Fails only if the process already exited, which `wait` then reports.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("waiting for {}", self.label), e))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Sends SIGTERM, waits up to `grace` for a clean exit, then SIGKILLs.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_status() {
            return Ok(status);
        }
        signal(&[self.pid()], "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
        self.kill()
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} to exit", self.label),
                    after_ms: timeout.as_millis(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: show what this process said, it is often the reason.
            for (what, text) in [("stdout", self.stdout()), ("stderr", self.stderr())] {
                if !text.trim().is_empty() {
                    eprintln!(
                        "--- {} {what} (last 30 lines) ---\n{}",
                        self.label,
                        tail(&text, 30)
                    );
                }
            }
        }
        if let Err(e) = self.kill() {
            tracing::warn!(label = %self.label, error = %e, "cannot kill process");
        }
    }
}

/// Last `n` lines of `s`.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A file-name-safe version of a label.
fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A long-lived TCP connection to an echo server, held open by `svcnet-echo client
/// --interactive` inside a namespace. Each [`TcpSession::send`] writes one line and returns the
/// server's reply, proving that the same connection is still alive (e.g. across a dataplane
/// restart). Dropping the session kills the client.
#[derive(Debug)]
pub struct TcpSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    greeting: Outcome,
    reply_wait: Duration,
}

impl TcpSession {
    /// Starts the interactive client (`cmd` must be the full client command) and waits for the
    /// server's greeting. `reply_wait` bounds every wait for a line (it must exceed the client's
    /// own `--timeout-ms`, which produces a timeout line itself).
    pub(crate) fn start(mut cmd: Command, reply_wait: Duration) -> Result<TcpSession> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: describe(&cmd),
            source,
        })?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Session("client has no stdout pipe".into()))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut session = TcpSession {
            child,
            stdin,
            lines,
            greeting: Outcome::Timeout,
            reply_wait,
        };
        session.greeting = session.next_outcome()?;
        Ok(session)
    }

    /// The outcome of connecting: `Replied` with the greeting if the connection is up.
    pub fn greeting(&self) -> &Outcome {
        &self.greeting
    }

    /// Sends one line over the established connection and returns the outcome of waiting for
    /// its echo. After a non-`Replied` outcome the client has exited and the session is dead.
    pub fn send(&mut self, msg: &str) -> Result<Outcome> {
        if msg.contains('\n') {
            return Err(Error::Session("a message must be a single line".into()));
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Session("session already closed".into()))?;
        writeln!(stdin, "{msg}")
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::Session(format!("client is gone: {e}")))?;
        self.next_outcome()
    }

    fn next_outcome(&mut self) -> Result<Outcome> {
        match self.lines.recv_timeout(self.reply_wait) {
            Ok(line) => parse_client_line(&line),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout {
                what: "the interactive echo client".into(),
                after_ms: self.reply_wait.as_millis(),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::Session("the interactive echo client exited".into()))
            }
        }
    }

    /// Closes stdin so the client closes the connection and exits; returns its exit status.
    pub fn close(mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + self.reply_wait;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    return Err(Error::Timeout {
                        what: "the interactive echo client to exit".into(),
                        after_ms: self.reply_wait.as_millis(),
                    })
                }
                Err(e) => return Err(Error::io("waiting for the echo client", e)),
            }
        }
    }
}

impl Drop for TcpSession {
    fn drop(&mut self) {
        // Fails only if the client already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
