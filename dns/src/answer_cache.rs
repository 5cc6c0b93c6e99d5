//! A cache of encoded responses to cluster-zone questions.
//!
//! An authoritative answer is a pure function of the request bytes, the transport and the
//! index, so it can be memoised on exactly those: the key is the whole request except its
//! 2-byte id (question with the client's letter case, flags, EDNS options and payload size),
//! kept apart per transport; a hit is the stored response with the request's id written into
//! its first two bytes. Every entry belongs to one index generation ([`Index::generation`],
//! bumped by every change); the first insert or lookup at a newer generation empties the
//! cache, so no answer outlives the data it came from, and an answer computed from older data
//! than the current generation is never stored.
//!
//! Only answers computed from the index alone are stored: forwarded answers and ExternalName
//! chases (which depend on an upstream) never are. The cache holds at most `capacity` entries
//! per transport; reaching that empties it (a flood of distinct names costs one rebuild per
//! `capacity` misses and never grows memory).
//!
//! [`Index::generation`]: crate::index::Index::generation

use std::collections::HashMap;
use std::sync::Mutex;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::transport::Proto;

/// What a hit returns besides the bytes: what the metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The question's type.
    pub qtype: RecordType,
    /// The response code.
    pub rcode: ResponseCode,
}

struct Entry {
    response: Box<[u8]>,
    meta: Meta,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    udp: HashMap<Box<[u8]>, Entry>,
    tcp: HashMap<Box<[u8]>, Entry>,
}

impl Inner {
    /// Empties the cache when `generation` is newer than its entries.
    fn advance(&mut self, generation: u64) {
        if generation != self.generation {
            self.generation = generation;
            self.udp.clear();
            self.tcp.clear();
        }
    }

    fn map(&mut self, proto: Proto) -> &mut HashMap<Box<[u8]>, Entry> {
        match proto {
            Proto::Udp => &mut self.udp,
            Proto::Tcp => &mut self.tcp,
        }
    }
}

/// The cache. `capacity == 0` disables it.
pub struct AnswerCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

/// The request without its id, or `None` when it is too short to be a request.
fn key(request: &[u8]) -> Option<&[u8]> {
    request.get(2..).filter(|rest| rest.len() >= 10)
}

impl AnswerCache {
    /// A cache of at most `capacity` responses per transport.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a missing entry: the maps are
        // always whole values, so keep using them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored response to `request` at `generation`, with `request`'s id.
    pub fn get(&self, request: &[u8], proto: Proto, generation: u64) -> Option<(Vec<u8>, Meta)> {
        if self.capacity == 0 {
            return None;
        }
        let key = key(request)?;
        let mut inner = self.lock();
        inner.advance(generation);
        let entry = inner.map(proto).get(key)?;
        let mut response = entry.response.to_vec();
        response[..2].copy_from_slice(&request[..2]);
        Some((response, entry.meta))
    }

    /// Stores `response` to `request`, computed from the index at `generation`.
    pub fn insert(
        &self,
        request: &[u8],
        proto: Proto,
        generation: u64,
        response: &[u8],
        meta: Meta,
    ) {
        if self.capacity == 0 || response.len() < 2 {
            return;
        }
        let Some(key) = key(request) else { return };
        let mut inner = self.lock();
        if generation < inner.generation {
            // Computed from data that has changed since.
            return;
        }
        inner.advance(generation);
        let capacity = self.capacity;
        let map = inner.map(proto);
        if map.len() >= capacity {
            map.clear();
        }
        map.insert(
            key.into(),
            Entry {
                response: response.into(),
                meta,
            },
        );
    }

    /// Entries held now (both transports).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.udp.len() + inner.tcp.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: Meta = Meta {
        qtype: RecordType::A,
        rcode: ResponseCode::NoError,
    };

    fn request(id: u16, tail: u8) -> Vec<u8> {
        let mut r = id.to_be_bytes().to_vec();
        r.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, tail]);
        r
    }

    #[test]
    fn a_hit_carries_the_requests_id_and_transports_are_apart() {
        let c = AnswerCache::new(10);
        c.insert(&request(1, 7), Proto::Udp, 3, &[0, 1, 0xaa, 0xbb], META);
        let (resp, meta) = c.get(&request(0xbeef, 7), Proto::Udp, 3).expect("hit");
        assert_eq!(resp, vec![0xbe, 0xef, 0xaa, 0xbb]);
        assert_eq!(meta, META);
        assert!(c.get(&request(1, 7), Proto::Tcp, 3).is_none());
        assert!(
            c.get(&request(1, 8), Proto::Udp, 3).is_none(),
            "other bytes"
        );
    }

    #[test]
    fn a_newer_generation_empties_it_and_older_answers_are_not_stored() {
        let c = AnswerCache::new(10);
        c.insert(&request(1, 7), Proto::Udp, 3, &[0, 1, 2], META);
        assert!(c.get(&request(1, 7), Proto::Udp, 4).is_none());
        assert!(c.is_empty());
        c.insert(&request(1, 7), Proto::Udp, 3, &[0, 1, 2], META);
        assert!(c.is_empty(), "computed at 3, the index is at 4");
        c.insert(&request(1, 7), Proto::Udp, 4, &[0, 1, 2], META);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn it_never_holds_more_than_its_capacity_and_zero_disables_it() {
        let c = AnswerCache::new(3);
        for tail in 0..10 {
            c.insert(&request(1, tail), Proto::Udp, 1, &[0, 1, 2], META);
            assert!(c.len() <= 3);
        }
        let off = AnswerCache::new(0);
        off.insert(&request(1, 1), Proto::Udp, 1, &[0, 1, 2], META);
        assert!(off.get(&request(1, 1), Proto::Udp, 1).is_none());
        // Too short to be a request: never a key.
        c.insert(&[1, 2, 3], Proto::Udp, 1, &[0, 1, 2], META);
        assert!(c.get(&[1, 2, 3], Proto::Udp, 1).is_none());
    }
}
