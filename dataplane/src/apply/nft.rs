//! Applying transactions: the [`Nft`] trait and the real `nft -f -` implementation (the semantic
//! fake is [`super::fake_nft`]).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::apply::libnft::InProcessNft;
use crate::compute::diff::{Existing, ExistingTable};
use crate::compute::model::{Op, OpSink, Transaction};
use crate::compute::names;
use crate::error::{Error, Result};
use crate::types::Family;

/// Something that can apply a transaction atomically and report which objects exist.
pub trait Nft: Send + Sync {
    /// Applies the whole transaction or nothing.
    fn run(&self, tx: &Transaction) -> Result<()>;
    /// Lists chain and set names of our tables (for full syncs).
    fn existing(&self) -> Result<Existing>;

    /// Applies, atomically, the operations that `produce` pushes into the sink, and runs `meanwhile`
    /// once the input is complete but before waiting for the kernel. The real implementation streams
    /// the operations to `nft` while they are produced (rendering overlaps with nft's parsing) and runs
    /// `meanwhile` while nft evaluates and commits (bookkeeping overlaps with the kernel's work).
    fn run_streaming(
        &self,
        produce: &mut dyn FnMut(&mut dyn OpSink) -> Result<()>,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<()> {
        let mut tx = Transaction::new();
        produce(&mut tx)?;
        meanwhile();
        self.run(&tx)
    }
}

/// Writes operations to a running `nft -f -`, coalescing consecutive element additions to the same
/// set into `add element` lines of at most [`ELEMENTS_PER_LINE`] elements.
struct StreamSink<W: std::io::Write> {
    out: W,
    buf: String,
    /// Open `add element` lines, one per set: elements are gathered per set (a full sync renders
    /// Service by Service, touching several sets each) so that nft gets a few thousand-element
    /// commands instead of one command per Service and set, which cost it ~40 % more.
    /// (family, set, line so far, elements on it), in the order the lines were opened (a handful:
    /// a linear scan beats hashing the set name per element).
    open: Vec<(Family, String, String, usize)>,
    err: Option<Error>,
}

/// Elements per `add element` line while streaming.
const ELEMENTS_PER_LINE: usize = 2048;

impl<W: std::io::Write> StreamSink<W> {
    fn new(out: W) -> Self {
        StreamSink {
            out,
            buf: String::new(),
            open: Vec::new(),
            err: None,
        }
    }

    fn maybe_write(&mut self) {
        if self.buf.len() > 1 << 16 {
            self.write_buf();
        }
    }

    fn write_buf(&mut self) {
        if self.err.is_none() {
            if let Err(source) = self.out.write_all(self.buf.as_bytes()) {
                self.err = Some(Error::Exec {
                    program: "nft".into(),
                    source,
                });
            }
        }
        self.buf.clear();
    }

    /// Writes every open element line. Element lines may move after later operations: those never
    /// depend on elements (sets and chains they use are declared before the elements that need
    /// them, and stale objects being deleted are never referenced by new elements).
    fn finish(&mut self) {
        for (_, _, line, _) in std::mem::take(&mut self.open) {
            self.buf.push_str(&line);
            self.buf.push_str(" }\n");
            self.maybe_write();
        }
        self.write_buf();
    }
}

impl<W: std::io::Write> OpSink for StreamSink<W> {
    fn push_op(&mut self, op: Op) {
        if self.err.is_some() {
            return;
        }
        if let Err(e) = op.validate() {
            self.err = Some(e);
            return;
        }
        match op {
            Op::AddElements {
                family,
                set,
                elements,
            } => {
                for (k, v) in &elements {
                    self.add_element(family, &set, k, v.as_deref());
                }
            }
            op => {
                op.render_into(&mut self.buf);
                self.maybe_write();
            }
        }
    }

    fn add_element(&mut self, family: Family, set: &str, key: &str, value: Option<&str>) {
        if self.err.is_some() {
            return;
        }
        if let Err(e) = crate::compute::model::validate_set_name(set)
            .and_then(|()| crate::compute::model::validate_element(key, value))
        {
            self.err = Some(e);
            return;
        }
        let i = match self
            .open
            .iter()
            .position(|(f, s, _, _)| *f == family && s == set)
        {
            Some(i) => i,
            None => {
                let head = format!("add element {} {} {set} {{ ", family.nft(), names::TABLE);
                self.open.push((family, set.to_string(), head, 0));
                self.open.len() - 1
            }
        };
        let Some((_, _, line, n)) = self.open.get_mut(i) else {
            return;
        };
        if *n > 0 {
            line.push_str(", ");
        }
        line.push_str(key);
        if let Some(v) = value {
            line.push_str(" : ");
            line.push_str(v);
        }
        *n += 1;
        if *n >= ELEMENTS_PER_LINE {
            let (_, _, line, _) = self.open.remove(i);
            self.buf.push_str(&line);
            self.buf.push_str(" }\n");
            self.maybe_write();
        }
    }
}

/// Writes the script of the operations `produce` pushes to `out`, exactly as a full sync streams it
/// to `nft -f -` (benchmarks time the production side with this).
pub fn stream_script(
    out: impl std::io::Write,
    produce: &mut dyn FnMut(&mut dyn OpSink) -> Result<()>,
) -> Result<()> {
    let mut sink = StreamSink::new(out);
    produce(&mut sink)?;
    sink.finish();
    match sink.err.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Ok for a successful nft run, else nft's exit status and stderr.
fn nft_outcome(out: &std::process::Output) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft {
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The real implementation. Every transaction is atomic (one nft batch). Full syncs stream into one
/// `nft -f -` process, like knftables; other transactions go through a long-lived in-process
/// libnftables context when the library is available ([`crate::apply::libnft`] explains the ~10 ms that
/// saves on every transaction that deletes something), else through `nft -f -` as well.
#[derive(Clone, Debug)]
pub struct ExecNft {
    program: PathBuf,
    /// Prefix command (e.g. `["ip", "netns", "exec", "ns1"]`) for running inside another namespace.
    prefix: Vec<String>,
    /// In-process libnftables (current network namespace only).
    in_process: Option<Arc<InProcessNft>>,
}

impl Default for ExecNft {
    fn default() -> Self {
        ExecNft {
            program: PathBuf::from("nft"),
            prefix: vec![],
            in_process: None,
        }
    }
}

impl ExecNft {
    /// nft in the current network namespace: libnftables in process when available (partial
    /// transactions), `nft` from `$PATH` otherwise and for full syncs.
    pub fn new() -> Self {
        ExecNft {
            in_process: InProcessNft::open().map(Arc::new),
            ..Self::default()
        }
    }

    /// `nft` from `$PATH` only, one process per transaction (no libnftables).
    pub fn exec_only() -> Self {
        Self::default()
    }

    /// Whether partial transactions run in process through libnftables.
    pub fn is_in_process(&self) -> bool {
        self.in_process.is_some()
    }

    /// Runs nft through `ip netns exec <ns>` (tests and benchmarks); always a separate process.
    pub fn in_netns(ns: &str) -> Self {
        ExecNft {
            program: PathBuf::from("nft"),
            prefix: vec!["ip".into(), "netns".into(), "exec".into(), ns.into()],
            in_process: None,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(args);
        cmd
    }

    fn exec_error(&self, source: std::io::Error) -> Error {
        Error::Exec {
            program: self.program.display().to_string(),
            source,
        }
    }

    /// Starts nft with a piped stdin (returned) and stderr.
    fn spawn_piped(
        &self,
        args: &[&str],
        stdout: Stdio,
    ) -> Result<(std::process::Child, std::process::ChildStdin)> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.exec_error(e))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| self.exec_error(std::io::Error::other("stdin not captured")))?;
        Ok((child, stdin))
    }

    fn exec(&self, args: &[&str], stdin: Option<&str>) -> Result<std::process::Output> {
        let child = match stdin {
            Some(input) => {
                let (child, mut pipe) = self.spawn_piped(args, Stdio::piped())?;
                pipe.write_all(input.as_bytes())
                    .map_err(|e| self.exec_error(e))?;
                child // `pipe` is dropped here: nft sees the end of its input.
            }
            None => self
                .command(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| self.exec_error(e))?,
        };
        child.wait_with_output().map_err(|e| self.exec_error(e))
    }

    /// Checks a transaction with `nft -c -f -` without applying it.
    pub fn check(&self, tx: &Transaction) -> Result<()> {
        tx.check()?;
        self.run_script(&tx.render(), true)
    }

    /// Runs an arbitrary script (`nft -f -`, or `nft -c -f -` when `check_only`).
    pub fn run_script(&self, script: &str, check_only: bool) -> Result<()> {
        let args: &[&str] = if check_only {
            &["-c", "-f", "-"]
        } else {
            &["-f", "-"]
        };
        nft_outcome(&self.exec(args, Some(script))?)
    }

    /// Deletes our tables (cleanup mode); missing tables are not an error.
    pub fn delete_tables(&self) -> Result<()> {
        for fam in Family::ALL {
            let script = format!("destroy table {} {}\n", fam.nft(), names::TABLE);
            if let Err(e) = self.run_script(&script, false) {
                // nft < 1.0.8 has no `destroy`: fall back to add+delete.
                tracing::debug!(error = %e, "destroy table unsupported, using add+delete");
                let script = format!(
                    "add table {f} {t}\ndelete table {f} {t}\n",
                    f = fam.nft(),
                    t = names::TABLE
                );
                self.run_script(&script, false)?;
            }
        }
        Ok(())
    }
}

impl Nft for ExecNft {
    fn run_streaming(
        &self,
        produce: &mut dyn FnMut(&mut dyn OpSink) -> Result<()>,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<()> {
        let (mut child, stdin) = self.spawn_piped(&["-f", "-"], Stdio::null())?;
        let mut sink = StreamSink::new(stdin);
        let produced = produce(&mut sink);
        sink.finish();
        let failure = produced.err().or(sink.err.take());
        if let Some(e) = failure {
            // nft commits only after reading the whole input: killing it applies nothing.
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        // Closing stdin lets nft evaluate and commit; our bookkeeping runs meanwhile.
        drop(sink);
        meanwhile();
        nft_outcome(&child.wait_with_output().map_err(|e| self.exec_error(e))?)
    }

    fn run(&self, tx: &Transaction) -> Result<()> {
        tx.check()?;
        if tx.is_empty() {
            return Ok(());
        }
        let script = tx.render();
        tracing::trace!(%script, "nft transaction");
        match &self.in_process {
            Some(lib) => lib.run_script(&script),
            None => self.run_script(&script, false),
        }
    }

    fn existing(&self) -> Result<Existing> {
        let mut out = Existing::new();
        for fam in Family::ALL {
            let o = self.exec(
                &["-j", "-t", "list", "table", fam.nft(), names::TABLE],
                None,
            )?;
            if !o.status.success() {
                let stderr = String::from_utf8_lossy(&o.stderr);
                if stderr.contains("No such file or directory") {
                    continue;
                }
                return Err(Error::Nft {
                    status: o.status.code().unwrap_or(-1),
                    stderr: stderr.into_owned(),
                });
            }
            out.insert(fam, parse_existing(&o.stdout)?);
        }
        Ok(out)
    }
}

/// Parses `nft -j -t list table` output into object names.
pub fn parse_existing(json: &[u8]) -> Result<ExistingTable> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(Error::NftJson)?;
    let mut t = ExistingTable::default();
    let items = v
        .get("nftables")
        .and_then(|x| x.as_array())
        .cloned()
        .unwrap_or_default();
    for item in items {
        let Some(obj) = item.as_object() else {
            continue;
        };
        for (kind, body) in obj {
            let name = body
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string);
            match (kind.as_str(), name) {
                ("chain", Some(n)) => t.chains.push(n),
                ("set", Some(n)) => t.sets.push((n, false)),
                ("map", Some(n)) => t.sets.push((n, true)),
                _ => {}
            }
        }
    }
    Ok(t)
}
