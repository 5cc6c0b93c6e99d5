//! The offset bitmap shared by [`IpRange`](crate::IpRange) and [`PortRange`](crate::PortRange).
//!
//! # Layout
//!
//! Bit `i` of the bitmap says whether offset `i` is allocated. The bits live in 64-bit *leaf words*, grouped in
//! chunks of 64 words (4096 offsets) that are only allocated once something in them is set, so a huge, sparsely
//! used range (an IPv4 /8 has 2^24 offsets) costs little memory.
//!
//! On top of the leaves sits a 64-ary summary tree: `summary[0]` has one bit per leaf word, set when that word is
//! completely allocated; `summary[k + 1]` has one bit per word of `summary[k]`, set when that word is all ones.
//! The top level is a single word. Bits past the end of a level are padding and always set, so they look "full".
//!
//! Finding the first free offset at or after `p` looks at `p`'s leaf word, climbs the tree until a word with a
//! zero bit to the right is found, then descends along the lowest zero bits. That is `O(log64 size)` word
//! operations (4 levels for a /12), no matter how full the bitmap is. Setting or clearing a bit updates at most
//! one bit per level, and only while words flip between full and not full.

use std::fmt;

use rand::Rng;

use crate::error::{Error, Result, Value};

const WORD_BITS: u64 = 64;
const CHUNK_WORDS: usize = 64;

/// The largest bitmap [`Bitmap::try_new`] accepts: 2^32 offsets.
///
/// Every range this crate builds is far smaller (an IPv4 range holds at most 2^30 − 2 offsets, see
/// [`IpRange`](crate::IpRange); IPv6 is capped at 65 535; ports at 65 536).
pub const MAX_BITMAP_SIZE: u64 = 1 << 32;

type Chunk = Box<[u64; CHUNK_WORDS]>;

/// A bitmap over the offsets `0..size`, split into a *static* (lower) band `0..static_band_size` and a
/// *dynamic* (upper) band `static_band_size..size`.
///
/// [`allocate_next`](Bitmap::allocate_next) follows upstream Kubernetes' `randomScanStrategyWithOffset`: it picks
/// a random start in the dynamic band and takes the first free offset at or after it, wrapping around inside the
/// band; only when the dynamic band is full does it do the same in the static band. [`allocate`](Bitmap::allocate)
/// takes any offset in range, in either band.
///
/// All operations are `O(log64 size)`; see the module docs for the layout. A `Bitmap` is a plain value
/// (`Send + Sync`, no interior locking): put it behind a lock to share it.
#[derive(Clone)]
pub struct Bitmap {
    size: u64,
    static_band: u64,
    used: u64,
    /// Leaf words, `CHUNK_WORDS` per chunk; `None` means all zero.
    chunks: Vec<Option<Chunk>>,
    /// The "word is full" summary tree, bottom level first. Empty when `size == 0`.
    summary: Vec<Vec<u64>>,
}

impl fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bitmap")
            .field("size", &self.size)
            .field("static_band_size", &self.static_band)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Bitmap {
    /// Two bitmaps are equal when they have the same size, bands and allocated offsets.
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size
            && self.static_band == other.static_band
            && self.used == other.used
            && self.iter().eq(other.iter())
    }
}

impl Eq for Bitmap {}

fn words_for(bits: u64) -> u64 {
    bits.div_ceil(WORD_BITS)
}

impl Bitmap {
    /// Creates an empty bitmap over `0..size` whose lowest `static_band_size` offsets form the static band.
    ///
    /// A static band larger than `size` is clamped to `size` (every offset is then in the static band).
    ///
    /// # Panics
    ///
    /// If `size` exceeds [`MAX_BITMAP_SIZE`], like `Vec::with_capacity` on overflow. Use
    /// [`Bitmap::try_new`] when the size comes from input.
    pub fn new(size: u64, static_band_size: u64) -> Bitmap {
        match Bitmap::try_new(size, static_band_size) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Bitmap::new`], but returns [`Error::InvalidRange`] instead of panicking when `size` exceeds
    /// [`MAX_BITMAP_SIZE`].
    pub fn try_new(size: u64, static_band_size: u64) -> Result<Bitmap> {
        if size > MAX_BITMAP_SIZE {
            return Err(Error::InvalidRange {
                range: format!("0-{}", size - 1),
                reason: format!("a bitmap holds at most {MAX_BITMAP_SIZE} offsets"),
            });
        }
        let n_words = words_for(size);
        let n_chunks = n_words.div_ceil(CHUNK_WORDS as u64);
        let mut b = Bitmap {
            size,
            static_band: static_band_size.min(size),
            used: 0,
            chunks: (0..n_chunks).map(|_| None).collect(),
            summary: Vec::new(),
        };
        b.rebuild_summary();
        Ok(b)
    }

    /// Number of offsets (`0..size`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of offsets in the static (lower) band, `0..static_band_size()`.
    pub fn static_band_size(&self) -> u64 {
        self.static_band
    }

    /// Number of allocated offsets.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Number of free offsets.
    pub fn free(&self) -> u64 {
        self.size - self.used
    }

    /// A description of the range for error messages: `0-4095`, or `empty`.
    fn describe(&self) -> String {
        if self.size == 0 {
            "empty".to_string()
        } else {
            format!("0-{}", self.size - 1)
        }
    }

    /// Whether `offset` is allocated. Offsets outside the range are never allocated.
    pub fn is_allocated(&self, offset: u64) -> bool {
        offset < self.size && self.leaf(offset / WORD_BITS) & (1 << (offset % WORD_BITS)) != 0
    }

    /// Allocates `offset`, which may be in either band.
    ///
    /// Errors: [`Error::OutOfRange`] if `offset >= size`, [`Error::AlreadyAllocated`] if it is taken.
    pub fn allocate(&mut self, offset: u64) -> Result<()> {
        if offset >= self.size {
            return Err(Error::OutOfRange {
                value: Value::Offset(offset),
                range: self.describe(),
            });
        }
        if !self.set(offset) {
            return Err(Error::AlreadyAllocated {
                value: Value::Offset(offset),
                range: self.describe(),
            });
        }
        Ok(())
    }

    /// Allocates a free offset using the thread-local RNG; see [`Bitmap::allocate_next_with`].
    pub fn allocate_next(&mut self) -> Result<u64> {
        self.allocate_next_with(&mut rand::rng())
    }

    /// Allocates a free offset: random start in the dynamic band, first free offset at or after it (wrapping
    /// inside the band); if the dynamic band is full, the same in the static band.
    ///
    /// Errors: [`Error::Full`] when no offset is free.
    pub fn allocate_next_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Result<u64> {
        match self.next_free(rng) {
            Some(offset) => {
                let newly = self.set(offset);
                debug_assert!(newly, "next_free returned an allocated offset");
                Ok(offset)
            }
            None => Err(Error::Full {
                range: self.describe(),
            }),
        }
    }

    /// Releases `offset`. Returns `true` if it was allocated; releasing a free or out-of-range offset does
    /// nothing and returns `false`.
    pub fn release(&mut self, offset: u64) -> bool {
        if offset >= self.size {
            return false;
        }
        let wi = offset / WORD_BITS;
        let bit = 1u64 << (offset % WORD_BITS);
        let pad = self.leaf_pad(wi);
        let Some(Some(chunk)) = self.chunks.get_mut(chunk_index(wi)) else {
            return false;
        };
        let word = &mut chunk[word_in_chunk(wi)];
        if *word & bit == 0 {
            return false;
        }
        let was_full = *word | pad == u64::MAX;
        *word &= !bit;
        self.used -= 1;
        if was_full {
            self.mark_not_full(wi);
        }
        true
    }

    /// Iterates over the allocated offsets in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(ci, c)| c.as_ref().map(|c| (ci as u64, c)))
            .flat_map(|(ci, chunk)| {
                chunk.iter().enumerate().flat_map(move |(wj, &word)| {
                    let base = (ci * CHUNK_WORDS as u64 + wj as u64) * WORD_BITS;
                    SetBits { word, base }
                })
            })
    }

    /// The bitmap as a big-endian unsigned integer in which bit `i` is offset `i`, with no leading zero bytes
    /// (empty when nothing is allocated).
    ///
    /// This is exactly the `data` upstream Kubernetes stores in a `RangeAllocation` (Go's `big.Int.Bytes()`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let Some(last_word) = self.last_nonzero_word() else {
            return Vec::new();
        };
        let top = self.leaf(last_word);
        let n_bytes = (last_word * 8) as usize
            + (WORD_BITS as usize - top.leading_zeros() as usize).div_ceil(8);
        let mut out = Vec::with_capacity((last_word as usize + 1) * 8);
        for wi in 0..=last_word {
            out.extend_from_slice(&self.leaf(wi).to_le_bytes());
        }
        out.truncate(n_bytes);
        out.reverse();
        out
    }

    /// Replaces the allocation state with `data` as produced by [`Bitmap::to_bytes`] (leading zero bytes are
    /// accepted). Bands and size are unchanged.
    ///
    /// Errors: [`Error::CorruptSnapshot`] if `data` sets an offset `>= size`. On error `self` is unchanged.
    pub fn restore_bytes(&mut self, data: &[u8]) -> Result<()> {
        let range = self.describe();
        self.restore_bytes_for(data, &range)
    }

    /// [`Bitmap::restore_bytes`] with the range named as the caller knows it.
    pub(crate) fn restore_bytes_for(&mut self, data: &[u8], range: &str) -> Result<()> {
        let first_nonzero = data.iter().position(|&b| b != 0).unwrap_or(data.len());
        let data = &data[first_nonzero..];
        if let Some(&top) = data.first() {
            // Number of significant bits; the highest set offset is bit_len - 1.
            let bit_len = (data.len() as u64 - 1)
                .checked_mul(8)
                .and_then(|b| b.checked_add(8 - u64::from(top.leading_zeros())));
            match bit_len {
                Some(bit_len) if bit_len <= self.size => {}
                _ => {
                    return Err(Error::CorruptSnapshot {
                        reason: format!(
                            "snapshot data ({} significant bytes) marks offsets beyond the {} offsets of range {range}",
                            data.len(),
                            self.size
                        ),
                    });
                }
            }
        }
        // From here on data.len() <= ceil(size / 8), so the allocations below are bounded by the range.
        let mut chunks: Vec<Option<Chunk>> = (0..self.chunks.len()).map(|_| None).collect();
        let mut used = 0u64;
        for (wi, group) in data.rchunks(8).enumerate() {
            let mut le = [0u8; 8];
            for (dst, src) in le.iter_mut().zip(group.iter().rev()) {
                *dst = *src;
            }
            let word = u64::from_le_bytes(le);
            if word == 0 {
                continue;
            }
            used += u64::from(word.count_ones());
            let chunk = chunks[wi / CHUNK_WORDS].get_or_insert_with(|| Box::new([0; CHUNK_WORDS]));
            chunk[wi % CHUNK_WORDS] = word;
        }
        self.chunks = chunks;
        self.used = used;
        self.rebuild_summary();
        Ok(())
    }

    /// Removes every allocation.
    pub fn clear(&mut self) {
        for c in &mut self.chunks {
            *c = None;
        }
        self.used = 0;
        self.rebuild_summary();
    }

    // === internals ===

    /// Sets `offset` (which must be `< size`); returns `false` if it was already set.
    pub(crate) fn set(&mut self, offset: u64) -> bool {
        debug_assert!(offset < self.size);
        let wi = offset / WORD_BITS;
        let bit = 1u64 << (offset % WORD_BITS);
        let pad = self.leaf_pad(wi);
        let chunk = self.chunks[chunk_index(wi)].get_or_insert_with(|| Box::new([0; CHUNK_WORDS]));
        let word = &mut chunk[word_in_chunk(wi)];
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        let now_full = *word | pad == u64::MAX;
        self.used += 1;
        if now_full {
            self.mark_full(wi);
        }
        true
    }

    /// Picks the offset `allocate_next` would take, without taking it.
    fn next_free<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<u64> {
        if self.used >= self.size {
            return None;
        }
        if self.static_band < self.size {
            let start = rng.random_range(self.static_band..self.size);
            if let Some(o) = self.find_free_wrapping(self.static_band, self.size, start) {
                return Some(o);
            }
        }
        if self.static_band > 0 {
            let start = rng.random_range(0..self.static_band);
            return self.find_free_wrapping(0, self.static_band, start);
        }
        None
    }

    /// First free offset in `start..hi`, else in `lo..start`.
    fn find_free_wrapping(&self, lo: u64, hi: u64, start: u64) -> Option<u64> {
        self.find_free_from(start)
            .filter(|&o| o < hi)
            .or_else(|| self.find_free_from(lo).filter(|&o| o < start))
    }

    /// The smallest free offset `>= p`, if any.
    fn find_free_from(&self, p: u64) -> Option<u64> {
        if p >= self.size {
            return None;
        }
        let wi = p / WORD_BITS;
        let free = !(self.leaf(wi) | self.leaf_pad(wi)) & (u64::MAX << (p % WORD_BITS));
        if free != 0 {
            return Some(wi * WORD_BITS + u64::from(free.trailing_zeros()));
        }
        // Climb: find the next not-full entry to the right at some level.
        let mut level = 0;
        let mut idx = wi + 1; // bit index within summary[level]
        loop {
            let words = self.summary.get(level)?;
            let word = *words.get((idx / WORD_BITS) as usize)?;
            let zeros = !word & (u64::MAX << (idx % WORD_BITS));
            if zeros != 0 {
                idx = (idx / WORD_BITS) * WORD_BITS + u64::from(zeros.trailing_zeros());
                break;
            }
            idx = idx / WORD_BITS + 1;
            level += 1;
        }
        // Descend along the lowest zero bit; each zero bit promises a not-full child word.
        while level > 0 {
            level -= 1;
            let word = self.summary[level][idx as usize];
            debug_assert_ne!(word, u64::MAX, "summary says not full but word is full");
            idx = idx * WORD_BITS + u64::from((!word).trailing_zeros());
        }
        let free = !(self.leaf(idx) | self.leaf_pad(idx));
        debug_assert_ne!(
            free, 0,
            "summary says leaf word {idx} has room but it is full"
        );
        let offset = idx * WORD_BITS + u64::from(free.trailing_zeros());
        (offset < self.size).then_some(offset)
    }

    /// Leaf word `wi` (zero if its chunk is not allocated).
    fn leaf(&self, wi: u64) -> u64 {
        match self.chunks.get(chunk_index(wi)) {
            Some(Some(chunk)) => chunk[word_in_chunk(wi)],
            _ => 0,
        }
    }

    /// Bits of leaf word `wi` that lie beyond `size` (treated as allocated when judging fullness).
    fn leaf_pad(&self, wi: u64) -> u64 {
        let rem = self.size % WORD_BITS;
        if rem != 0 && wi == self.size / WORD_BITS {
            u64::MAX << rem
        } else {
            0
        }
    }

    fn last_nonzero_word(&self) -> Option<u64> {
        let (ci, chunk) = self.chunks.iter().enumerate().rev().find_map(|(ci, c)| {
            c.as_ref()
                .filter(|c| c.iter().any(|&w| w != 0))
                .map(|c| (ci, c))
        })?;
        let wj = chunk.iter().rposition(|&w| w != 0)?;
        Some((ci * CHUNK_WORDS + wj) as u64)
    }

    /// Leaf word `wi` became full: set its summary bit and propagate while words become all ones.
    fn mark_full(&mut self, wi: u64) {
        let mut idx = wi;
        for level in self.summary.iter_mut() {
            let word = &mut level[(idx / WORD_BITS) as usize];
            *word |= 1 << (idx % WORD_BITS);
            if *word != u64::MAX {
                break;
            }
            idx /= WORD_BITS;
        }
    }

    /// Leaf word `wi` stopped being full: clear summary bits upwards while the words were all ones.
    fn mark_not_full(&mut self, wi: u64) {
        let mut idx = wi;
        for level in self.summary.iter_mut() {
            let word = &mut level[(idx / WORD_BITS) as usize];
            let was_full = *word == u64::MAX;
            *word &= !(1 << (idx % WORD_BITS));
            if !was_full {
                break;
            }
            idx /= WORD_BITS;
        }
    }

    /// Recomputes the whole summary tree from the leaves.
    fn rebuild_summary(&mut self) {
        self.summary.clear();
        let n_words = words_for(self.size);
        if n_words == 0 {
            return;
        }
        // Level 0: one bit per leaf word; summary word `ci` covers exactly chunk `ci`.
        let mut level: Vec<u64> = Vec::with_capacity(self.chunks.len());
        for (ci, chunk) in self.chunks.iter().enumerate() {
            let mut bits = 0u64;
            if let Some(chunk) = chunk {
                for (wj, &word) in chunk.iter().enumerate() {
                    let wi = (ci * CHUNK_WORDS + wj) as u64;
                    if wi < n_words && word | self.leaf_pad(wi) == u64::MAX {
                        bits |= 1 << wj;
                    }
                }
            }
            level.push(bits);
        }
        pad_last(&mut level, n_words);
        loop {
            if level.len() <= 1 {
                self.summary.push(level);
                break;
            }
            let n_bits = level.len() as u64;
            let mut next = vec![0u64; level.len().div_ceil(WORD_BITS as usize)];
            for (i, &w) in level.iter().enumerate() {
                if w == u64::MAX {
                    next[i / WORD_BITS as usize] |= 1 << (i % WORD_BITS as usize);
                }
            }
            pad_last(&mut next, n_bits);
            self.summary.push(std::mem::replace(&mut level, next));
        }
    }

    /// Checks every structural invariant; used by tests and the fuzz target.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let counted: u64 = self
            .chunks
            .iter()
            .flatten()
            .flat_map(|c| c.iter())
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if counted != self.used {
            return Err(format!("used {} but {} bits set", self.used, counted));
        }
        if let Some(last) = self.last_nonzero_word() {
            let top = last * WORD_BITS
                + u64::from(WORD_BITS as u32 - 1 - self.leaf(last).leading_zeros());
            if top >= self.size {
                return Err(format!("offset {top} beyond size {} is set", self.size));
            }
        }
        let mut fresh = self.clone();
        fresh.rebuild_summary();
        if fresh.summary != self.summary {
            return Err("summary tree out of date".into());
        }
        Ok(())
    }
}

/// Sets the padding bits of a level holding `n_bits` real bits in `words` (the bits past `n_bits`).
fn pad_last(words: &mut [u64], n_bits: u64) {
    let rem = n_bits % WORD_BITS;
    if rem != 0 {
        if let Some(last) = words.last_mut() {
            *last |= u64::MAX << rem;
        }
    }
}

fn chunk_index(wi: u64) -> usize {
    (wi / CHUNK_WORDS as u64) as usize
}

fn word_in_chunk(wi: u64) -> usize {
    (wi % CHUNK_WORDS as u64) as usize
}

/// Iterates the set bits of one word as absolute offsets.
struct SetBits {
    word: u64,
    base: u64,
}

impl Iterator for SetBits {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.word == 0 {
            return None;
        }
        let tz = self.word.trailing_zeros();
        self.word &= self.word - 1;
        Some(self.base + u64::from(tz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn empty_bitmap_has_nothing_to_give() {
        let mut b = Bitmap::new(0, 0);
        assert_eq!(b.size(), 0);
        assert_eq!(b.free(), 0);
        assert!(matches!(b.allocate_next(), Err(Error::Full { .. })));
        assert!(matches!(b.allocate(0), Err(Error::OutOfRange { .. })));
        assert!(!b.release(0));
        assert!(!b.is_allocated(0));
        assert_eq!(b.iter().count(), 0);
        assert!(b.to_bytes().is_empty());
        b.restore_bytes(&[]).unwrap();
        b.restore_bytes(&[0, 0]).unwrap();
        assert!(b.restore_bytes(&[1]).is_err());
        b.check_invariants().unwrap();
    }

    #[test]
    fn allocate_release_and_counts() {
        let mut b = Bitmap::new(100, 10);
        assert_eq!(
            (b.size(), b.used(), b.free(), b.static_band_size()),
            (100, 0, 100, 10)
        );
        b.allocate(0).unwrap();
        b.allocate(99).unwrap();
        assert_eq!(
            b.allocate(99),
            Err(Error::AlreadyAllocated {
                value: Value::Offset(99),
                range: "0-99".into()
            })
        );
        assert_eq!(
            b.allocate(100).unwrap_err().to_string(),
            "the provided offset (100) is not in the valid range. The range of valid offsets is 0-99"
        );
        assert_eq!((b.used(), b.free()), (2, 98));
        assert!(
            b.is_allocated(0) && b.is_allocated(99) && !b.is_allocated(50) && !b.is_allocated(1000)
        );
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 99]);
        assert!(b.release(0));
        assert!(!b.release(0), "second release is a no-op");
        assert!(!b.release(12345), "out of range release is a no-op");
        assert_eq!(b.used(), 1);
        b.check_invariants().unwrap();
    }

    #[test]
    fn static_band_is_clamped() {
        let b = Bitmap::new(10, 50);
        assert_eq!(b.static_band_size(), 10);
    }

    #[test]
    fn try_new_rejects_oversized() {
        assert!(matches!(
            Bitmap::try_new(MAX_BITMAP_SIZE + 1, 0),
            Err(Error::InvalidRange { .. })
        ));
    }

    #[test]
    fn allocate_next_fills_dynamic_band_first_then_static() {
        let mut rng = rng();
        let mut b = Bitmap::new(200, 40);
        let mut seen = BTreeSet::new();
        for i in 0..200 {
            let o = b.allocate_next_with(&mut rng).unwrap();
            assert!(seen.insert(o), "offset {o} handed out twice");
            if i < 160 {
                assert!(
                    o >= 40,
                    "allocation {i} went to static band ({o}) while dynamic had room"
                );
            } else {
                assert!(
                    o < 40,
                    "dynamic band exhausted, expected static offset, got {o}"
                );
            }
        }
        assert_eq!(
            b.allocate_next_with(&mut rng).unwrap_err(),
            Error::Full {
                range: "0-199".into()
            }
        );
        assert_eq!(b.free(), 0);
        b.check_invariants().unwrap();
    }

    #[test]
    fn allocate_next_wraps_inside_the_band() {
        // Only offset 41 (just above the static band) is free in the dynamic band: any random start past it
        // must wrap to it rather than fall into the static band.
        let mut rng = rng();
        for _ in 0..50 {
            let mut b = Bitmap::new(300, 40);
            for o in 40..300 {
                if o != 41 {
                    b.allocate(o).unwrap();
                }
            }
            assert_eq!(b.allocate_next_with(&mut rng).unwrap(), 41);
        }
    }

    #[test]
    fn random_start_spreads_allocations() {
        let mut b = Bitmap::new(1 << 16, 256);
        let firsts: BTreeSet<u64> = (0..20).map(|_| b.allocate_next().unwrap()).collect();
        assert_eq!(firsts.len(), 20);
        // With a random start, 20 allocations on an empty 65536 bitmap are not all consecutive.
        let span = firsts.last().unwrap() - firsts.first().unwrap();
        assert!(span > 20, "allocations look sequential: {firsts:?}");
    }

    #[test]
    fn summary_stays_consistent_under_random_ops() {
        let mut rng = rng();
        for &size in &[
            1u64,
            63,
            64,
            65,
            4095,
            4096,
            4097,
            64 * 64 * 64 + 3,
            300_000,
        ] {
            let mut b = Bitmap::new(size, size / 10);
            let mut model = BTreeSet::new();
            for step in 0..4000u32 {
                match rng.random_range(0..3) {
                    0 => {
                        if let Ok(o) = b.allocate_next_with(&mut rng) {
                            assert!(model.insert(o));
                        } else {
                            assert_eq!(model.len() as u64, size);
                        }
                    }
                    1 => {
                        let o = rng.random_range(0..size + 2);
                        assert_eq!(b.allocate(o).is_ok(), o < size && model.insert(o));
                    }
                    _ => {
                        let o = if model.is_empty() || rng.random_bool(0.2) {
                            rng.random_range(0..size + 2)
                        } else {
                            *model.iter().nth(rng.random_range(0..model.len())).unwrap()
                        };
                        assert_eq!(b.release(o), model.remove(&o));
                    }
                }
                if step % 500 == 0 {
                    b.check_invariants().unwrap();
                }
            }
            b.check_invariants().unwrap();
            assert!(b.iter().eq(model.iter().copied()));
        }
    }

    #[test]
    fn fill_completely_then_drain() {
        let mut rng = rng();
        let size = 64 * 64 * 2 + 17;
        let mut b = Bitmap::new(size, 100);
        for _ in 0..size {
            b.allocate_next_with(&mut rng).unwrap();
        }
        assert_eq!(b.free(), 0);
        b.check_invariants().unwrap();
        assert!(b.summary.last().unwrap().iter().all(|&w| w == u64::MAX));
        for o in (0..size).step_by(3) {
            assert!(b.release(o));
        }
        b.check_invariants().unwrap();
        let mut again = 0;
        while b.allocate_next_with(&mut rng).is_ok() {
            again += 1;
        }
        assert_eq!(again, size.div_ceil(3));
        b.check_invariants().unwrap();
    }

    #[test]
    fn bytes_match_big_endian_integer() {
        let mut b = Bitmap::new(20, 0);
        assert_eq!(b.to_bytes(), Vec::<u8>::new());
        b.allocate(0).unwrap();
        assert_eq!(b.to_bytes(), vec![0x01]);
        b.allocate(9).unwrap();
        // bit 9 → 0x0200, bit 0 → 0x0001
        assert_eq!(b.to_bytes(), vec![0x02, 0x01]);
        b.allocate(19).unwrap();
        assert_eq!(b.to_bytes(), vec![0x08, 0x02, 0x01]);

        let mut c = Bitmap::new(20, 0);
        c.restore_bytes(&[0, 0, 0x08, 0x02, 0x01]).unwrap();
        assert_eq!(c, b);
        let err = c.restore_bytes(&[0x10, 0, 0]).unwrap_err();
        assert!(matches!(err, Error::CorruptSnapshot { .. }), "{err}");
        assert_eq!(c, b, "failed restore leaves state untouched");
    }

    #[test]
    fn bytes_round_trip_large() {
        let mut rng = rng();
        let mut b = Bitmap::new(1 << 20, 256);
        for _ in 0..50_000 {
            b.allocate_next_with(&mut rng).unwrap();
        }
        b.allocate((1 << 20) - 1).ok();
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), 1 << 17);
        let mut c = Bitmap::new(1 << 20, 256);
        c.restore_bytes(&bytes).unwrap();
        assert_eq!(c, b);
        c.check_invariants().unwrap();
    }

    #[test]
    fn clear_resets() {
        let mut b = Bitmap::new(5000, 0);
        for o in 0..5000 {
            b.allocate(o).unwrap();
        }
        b.clear();
        assert_eq!(b.used(), 0);
        b.check_invariants().unwrap();
        assert!(b.allocate_next().is_ok());
    }
}
