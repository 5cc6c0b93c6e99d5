//! A `NETLINK_NETFILTER` socket to the kernel's connection tracker: dumps the entries of a family
//! and deletes entries, with the messages of [`super::ctnetlink`]. Every read has a timeout, so a
//! kernel that does not answer is an error, never a hang.

use std::io::Read;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::ctnetlink::{self, Flow, Reply};
use crate::error::{Error, Result};
use crate::types::Family;

/// Deletes sent per write (each is acknowledged on its own).
const DELETE_BATCH: usize = 256;
/// Receive buffer for one read of a dump (the kernel fills up to what the socket can take).
const RECV_BUF: usize = 256 * 1024;
/// `ENOENT`: the entry is already gone.
const ENOENT: i32 = 2;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Conntrack { what, source }
}

fn malformed(what: &'static str, e: ctnetlink::CodecError) -> Error {
    Error::Conntrack {
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    }
}

/// An open ctnetlink socket.
pub struct Conntrack {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    /// Opens the socket (needs CAP_NET_ADMIN to delete).
    pub fn open() -> Result<Conntrack> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_NETFILTER)),
        )
        .map_err(io("opening the socket"))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io("setting the read timeout"))?;
        // A larger buffer keeps big dumps from overrunning (ENOBUFS); best effort.
        let _ = sock.set_recv_buffer_size(4 * 1024 * 1024);
        Ok(Conntrack {
            sock,
            seq: 1,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn read(&mut self, what: &'static str) -> Result<Vec<Reply>> {
        let n = (&self.sock).read(&mut self.buf).map_err(io(what))?;
        ctnetlink::parse(&self.buf[..n]).map_err(|e| malformed(what, e))
    }

    /// Every entry of `family` whose protocol is in `protocols`.
    pub fn dump(&mut self, family: Family, protocols: &[u8]) -> Result<Vec<Flow>> {
        let seq = self.next_seq();
        self.sock
            .send(&ctnetlink::dump_request(family, seq))
            .map_err(io("sending the dump request"))?;
        let mut flows = Vec::new();
        loop {
            for r in self.read("reading the dump")? {
                match r {
                    Reply::Flow(f) if protocols.contains(&f.proto) => flows.push(f),
                    Reply::Done { seq: s } if s == seq => return Ok(flows),
                    Reply::Status { seq: s, errno } if s == seq && errno != 0 => {
                        return Err(Error::Conntrack {
                            what: "dumping",
                            source: std::io::Error::from_raw_os_error(errno),
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes `flows`; returns how many existed. Entries already gone are not an error.
    pub fn delete(&mut self, flows: &[Flow]) -> Result<usize> {
        let mut deleted = 0;
        for chunk in flows.chunks(DELETE_BATCH) {
            let mut msg = Vec::with_capacity(chunk.len() * 96);
            let mut waiting = std::collections::BTreeSet::new();
            for f in chunk {
                let seq = self.next_seq();
                ctnetlink::delete_request(&mut msg, f, seq);
                waiting.insert(seq);
            }
            self.sock
                .send(&msg)
                .map_err(io("sending delete requests"))?;
            let mut failure = None;
            while !waiting.is_empty() {
                for r in self.read("reading delete acknowledgements")? {
                    if let Reply::Status { seq, errno } = r {
                        if !waiting.remove(&seq) {
                            continue;
                        }
                        match errno {
                            0 => deleted += 1,
                            ENOENT => {}
                            e => failure = Some(e),
                        }
                    }
                }
            }
            if let Some(e) = failure {
                return Err(Error::Conntrack {
                    what: "deleting",
                    source: std::io::Error::from_raw_os_error(e),
                });
            }
        }
        Ok(deleted)
    }
}
