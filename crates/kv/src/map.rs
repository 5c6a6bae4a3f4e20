//! An ordered map whose clone is cheap: the snapshot path's copy-on-write store.
//!
//! The map is a two-level B-tree: an outer `BTreeMap` from a lower-bound key to an
//! `Arc`-shared chunk (an inner `BTreeMap` of at most `chunk_max` pairs). Chunk `c` holds
//! the keys in `[bound(c), bound(next chunk))`, and the first chunk's bound is the empty
//! key, the least of all keys, so every key has exactly one chunk.
//!
//! Cloning copies only the outer map (one `Arc` per chunk, about `len / 128` of them). A
//! write after a clone copies the single chunk it touches (`Arc::make_mut`), at most
//! `chunk_max` pairs of reference-counted `Bytes`. That is what lets the driver take a
//! snapshot view in microseconds on the apply path and encode it elsewhere.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

/// The default largest chunk: big enough that the outer map is small, small enough that
/// the copy after a snapshot is negligible.
pub(crate) const CHUNK_PAIRS_MAX: usize = 256;

type Chunk = BTreeMap<Bytes, Bytes>;

#[derive(Clone, Debug)]
pub(crate) struct ChunkedMap {
    /// Lower bound of each chunk to the chunk. Empty when the map is empty; otherwise the
    /// first bound is the empty key and no chunk is empty except possibly the first.
    chunks: BTreeMap<Bytes, Arc<Chunk>>,
    len: usize,
    chunk_max: usize,
}

impl Default for ChunkedMap {
    fn default() -> ChunkedMap {
        ChunkedMap::with_chunk_max(CHUNK_PAIRS_MAX)
    }
}

impl ChunkedMap {
    pub(crate) fn with_chunk_max(chunk_max: usize) -> ChunkedMap {
        assert!(chunk_max >= 4, "chunks must hold at least 4 pairs");
        ChunkedMap {
            chunks: BTreeMap::new(),
            len: 0,
            chunk_max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bound of the chunk that holds (or would hold) `key`.
    fn bound_for(&self, key: &[u8]) -> Option<&Bytes> {
        self.chunks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(bound, _)| bound)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Bytes> {
        let (_, chunk) = self
            .chunks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        chunk.get(key)
    }

    /// Sets `key`, returning the previous value.
    pub(crate) fn insert(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
        if self.chunks.is_empty() {
            self.chunks.insert(Bytes::new(), Arc::new(Chunk::new()));
        }
        let chunk_max = self.chunk_max;
        // One search of the outer map (this is every put's path).
        let (_, chunk) = self
            .chunks
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(&key[..])))
            .next_back()
            .expect("the first chunk's bound is the least key");
        let chunk = Arc::make_mut(chunk);
        let previous = chunk.insert(key, value);
        let split = (chunk.len() > chunk_max).then(|| {
            let middle = chunk
                .keys()
                .nth(chunk.len() / 2)
                .expect("an overfull chunk has a middle")
                .clone();
            let upper = chunk.split_off(&middle);
            (middle, upper)
        });
        if previous.is_none() {
            self.len += 1;
        }
        if let Some((middle, upper)) = split {
            self.chunks.insert(middle, Arc::new(upper));
        }
        previous
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Bytes> {
        let bound = self.bound_for(key)?.clone();
        let chunk = Arc::make_mut(self.chunks.get_mut(&bound).expect("bound just found"));
        let previous = chunk.remove(key)?;
        self.len -= 1;
        if chunk.len() < self.chunk_max / 4 {
            self.merge_small(bound);
        }
        Some(previous)
    }

    /// Merges the small chunk at `bound` into a neighbour when the pair fits in one chunk,
    /// so that deletes cannot leave the outer map full of tiny chunks.
    fn merge_small(&mut self, bound: Bytes) {
        if self.len == 0 {
            self.chunks.clear();
            return;
        }
        let previous_bound = self
            .chunks
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(&bound[..])))
            .next_back()
            .map(|(b, _)| b.clone());
        // Merge into the previous chunk, or, for the first chunk (whose bound must stay
        // the empty key), pull the next chunk into it.
        let (keep, absorb) = match previous_bound {
            Some(previous) => (previous, bound),
            None => match self
                .chunks
                .range::<[u8], _>((Bound::Excluded(&bound[..]), Bound::Unbounded))
                .next()
            {
                Some((next, _)) => (bound, next.clone()),
                None => return,
            },
        };
        let combined = self.chunks[&keep].len() + self.chunks[&absorb].len();
        if combined > self.chunk_max {
            return;
        }
        let absorbed = self.chunks.remove(&absorb).expect("neighbour exists");
        let absorbed = Arc::try_unwrap(absorbed).unwrap_or_else(|shared| (*shared).clone());
        let target = Arc::make_mut(self.chunks.get_mut(&keep).expect("neighbour exists"));
        target.extend(absorbed);
    }

    /// Pairs with `start <= key < end` (no upper bound if `end` is `None`), in key order.
    pub(crate) fn range<'a>(
        &'a self,
        start: &'a [u8],
        end: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Bytes)> + 'a {
        // BTreeMap::range panics on start > end: answer empty instead.
        let empty = end.is_some_and(|end| start >= end);
        let first = if empty { None } else { self.bound_for(start) };
        let chunks = first.into_iter().flat_map(move |first| {
            self.chunks
                .range::<[u8], _>((Bound::Included(&first[..]), Bound::Unbounded))
        });
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        chunks
            .take_while(move |(bound, _)| end.is_none_or(|end| &bound[..] < end))
            .flat_map(move |(_, chunk)| chunk.range::<[u8], _>((Bound::Included(start), upper)))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.chunks.values().flat_map(|chunk| chunk.iter())
    }

    /// Checks the structural invariants; for tests.
    #[cfg(test)]
    fn check(&self) {
        if self.chunks.is_empty() {
            assert_eq!(self.len, 0);
            return;
        }
        let bounds: Vec<&Bytes> = self.chunks.keys().collect();
        assert!(bounds[0].is_empty(), "the first bound is the empty key");
        let mut total = 0;
        let mut chunks = self.chunks.iter().peekable();
        while let Some((bound, chunk)) = chunks.next() {
            assert!(chunk.len() <= self.chunk_max);
            if !bound.is_empty() {
                assert!(!chunk.is_empty(), "only the first chunk may be empty");
            }
            if let Some((first, _)) = chunk.first_key_value() {
                assert!(first >= bound);
            }
            if let (Some((last, _)), Some((next, _))) = (chunk.last_key_value(), chunks.peek()) {
                assert!(last < *next);
            }
            total += chunk.len();
        }
        assert_eq!(total, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator (SplitMix64) so failures replay from the seed.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn key(n: u64) -> Bytes {
        // Variable-length keys, including the empty key, exercise the bounds.
        if n == 0 {
            Bytes::new()
        } else {
            Bytes::from(format!("{n:x}"))
        }
    }

    fn run(seed: u64) {
        let mut state = seed;
        let mut map = ChunkedMap::with_chunk_max(8);
        let mut model = BTreeMap::new();
        let mut snapshots = Vec::new();
        for step in 0..4000u64 {
            let n = next(&mut state) % 300;
            let k = key(n);
            match next(&mut state) % 10 {
                0..=4 => {
                    let v = Bytes::from(step.to_le_bytes().to_vec());
                    assert_eq!(map.insert(k.clone(), v.clone()), model.insert(k.clone(), v));
                }
                5..=8 => assert_eq!(map.remove(&k), model.remove(&k)),
                _ => snapshots.push((map.clone(), model.clone())),
            }
            map.check();
            assert_eq!(map.len(), model.len());
            assert_eq!(map.get(&k), model.get(&k));
            if step % 97 == 0 {
                let start = key(next(&mut state) % 300);
                let end = key(next(&mut state) % 300);
                let got: Vec<_> = map.range(&start, Some(&end)).collect();
                let want: Vec<_> = if start < end {
                    model.range(start.clone()..end.clone()).collect()
                } else {
                    Vec::new()
                };
                assert_eq!(got, want, "range {start:?}..{end:?}");
                let got: Vec<_> = map.range(&start, None).collect();
                let want: Vec<_> = model.range(start.clone()..).collect();
                assert_eq!(got, want);
            }
        }
        assert!(map.iter().eq(model.iter()));
        // Clones are unaffected by later writes to the original.
        for (snapshot, model) in snapshots {
            snapshot.check();
            assert!(snapshot.iter().eq(model.iter()));
        }
    }

    #[test]
    fn chunked_map_matches_btreemap() {
        for seed in 0..20 {
            let result = std::panic::catch_unwind(|| run(seed));
            assert!(result.is_ok(), "chunked map diverged with seed={seed}");
        }
    }

    #[test]
    fn empty_map_ranges_are_empty() {
        let map = ChunkedMap::default();
        assert_eq!(map.range(b"", None).count(), 0);
        assert_eq!(map.range(b"b", Some(b"a")).count(), 0);
        assert_eq!(map.get(b""), None);
    }
}
