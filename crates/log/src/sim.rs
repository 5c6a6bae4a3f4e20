//! A simulated disk that fails on purpose, for tests.
//!
//! Exists because crash consistency cannot be tested on a real disk within a unit test:
//! [`SimVfs`] keeps, for every file, the *live* bytes (what reads see) apart from the
//! *durable* bytes (what survives a crash), and for the directory, the live names apart
//! from the durable ones. Nothing is durable before `sync_data` (file contents) or
//! `sync_dir` (names). [`SimVfs::crash`] builds the disk a crash leaves: synced bytes, and
//! optionally a torn prefix of the writes since (as redb's `tests/crash_consistency.rs`).
//! [`Faults`] injects, by countdown, EIO on write and on sync, torn writes, and short
//! writes. All choices come from one seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::vfs::{Vfs, VfsFile};

/// Which faults to inject. Countdowns count successful calls before the fault: `Some(0)`
/// fails the next call. Once a countdown fires, every later call of that kind fails too
/// (the disk is dead).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Writes fail with EIO after this many successful writes (nothing lands).
    pub write_error_after: Option<u64>,
    /// File and directory syncs fail with EIO after this many successful ones.
    pub sync_error_after: Option<u64>,
    /// After this many successful writes, one write lands only a prefix and fails with
    /// EIO; every write after it fails.
    pub torn_write_after: Option<u64>,
    /// Every write lands and reports a random non-empty prefix of its buffer.
    pub short_writes: bool,
}

/// Counters of what the simulated disk was asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Successful write calls.
    pub writes: u64,
    /// Successful file syncs.
    pub syncs: u64,
    /// Successful directory syncs.
    pub dir_syncs: u64,
}

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Op {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Op::Write { offset, data } => {
                let offset = *offset as usize;
                let end = offset + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[offset..end].copy_from_slice(data);
            }
            Op::SetLen(len) => bytes.resize(*len as usize, 0),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Op>,
}

impl SimFile {
    fn apply(&mut self, op: Op) {
        op.apply(&mut self.live);
        self.unsynced.push(op);
    }
}

#[derive(Debug)]
struct Disk {
    files: HashMap<u64, SimFile>,
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    next_id: u64,
    faults: Faults,
    rng: u64,
    stats: SimStats,
}

impl Disk {
    fn new(seed: u64) -> Disk {
        Disk {
            files: HashMap::new(),
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
            next_id: 0,
            faults: Faults::default(),
            rng: seed,
            stats: SimStats::default(),
        }
    }

    /// SplitMix64: small, seeded, good enough to pick fault points.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn file(&mut self, id: u64) -> &mut SimFile {
        self.files.entry(id).or_default()
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO on {what}"))
}

/// Counts one call down; true when the fault fires.
fn countdown(counter: &mut Option<u64>) -> bool {
    match counter {
        Some(0) => true,
        Some(n) => {
            *n -= 1;
            false
        }
        None => false,
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

/// The simulated disk, one directory. Clones share the disk.
#[derive(Clone, Debug)]
pub struct SimVfs {
    disk: Arc<Mutex<Disk>>,
}

impl SimVfs {
    /// An empty disk whose random choices derive from `seed`.
    pub fn new(seed: u64) -> SimVfs {
        SimVfs {
            disk: Arc::new(Mutex::new(Disk::new(seed))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A test that panicked while holding the lock leaves a consistent disk: every
        // operation completes its mutation before returning.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the faults to inject from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// What the disk was asked to do so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// The disk a crash leaves now: the durable names, each with its synced bytes, and
    /// with `torn` a random prefix of the writes since its last sync (the last one of
    /// which may itself be cut short). No faults are armed on the new disk.
    pub fn crash(&self, torn: bool) -> SimVfs {
        let mut disk = self.lock();
        let seed = disk.next_u64();
        let mut after = Disk::new(seed);
        let durable: Vec<(String, u64)> =
            disk.durable.iter().map(|(n, &i)| (n.clone(), i)).collect();
        for (name, id) in durable {
            let file = disk.file(id).clone();
            let mut bytes = file.durable.clone();
            if torn && !file.unsynced.is_empty() {
                let kept = disk.below(file.unsynced.len() as u64 + 1) as usize;
                for op in &file.unsynced[..kept] {
                    op.apply(&mut bytes);
                }
                if let Some(Op::Write { offset, data }) = file.unsynced.get(kept) {
                    let cut = disk.below(data.len() as u64 + 1) as usize;
                    Op::Write {
                        offset: *offset,
                        data: data[..cut].to_vec(),
                    }
                    .apply(&mut bytes);
                }
            }
            let id = after.next_id;
            after.next_id += 1;
            after.files.insert(
                id,
                SimFile {
                    live: bytes.clone(),
                    durable: bytes,
                    unsynced: Vec::new(),
                },
            );
            after.live.insert(name.clone(), id);
            after.durable.insert(name, id);
        }
        SimVfs {
            disk: Arc::new(Mutex::new(after)),
        }
    }

    /// XORs `mask` into the byte at `offset` of a file, live and durable (bit rot).
    /// Returns false if there is no such file or byte.
    pub fn corrupt(&self, name: &str, offset: u64, mask: u8) -> bool {
        let mut disk = self.lock();
        let Some(&id) = disk.live.get(name) else {
            return false;
        };
        let file = disk.file(id);
        let offset = offset as usize;
        if offset >= file.live.len() {
            return false;
        }
        file.live[offset] ^= mask;
        if offset < file.durable.len() {
            file.durable[offset] ^= mask;
        }
        true
    }

    /// Replaces a file's contents outright, live and durable (for decoder tests).
    pub fn put_file(&self, name: &str, bytes: Vec<u8>) {
        let mut disk = self.lock();
        let id = disk.next_id;
        disk.next_id += 1;
        disk.files.insert(
            id,
            SimFile {
                live: bytes.clone(),
                durable: bytes,
                unsynced: Vec::new(),
            },
        );
        disk.live.insert(name.to_string(), id);
        disk.durable.insert(name.to_string(), id);
    }

    /// The live length of a file, if it exists.
    pub fn file_len(&self, name: &str) -> Option<u64> {
        let mut disk = self.lock();
        let id = *disk.live.get(name)?;
        Some(disk.file(id).live.len() as u64)
    }
}

impl Vfs for SimVfs {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().live.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
        let mut disk = self.lock();
        let id = match disk.live.get(name) {
            Some(&id) => {
                disk.file(id).apply(Op::SetLen(0));
                id
            }
            None => {
                let id = disk.next_id;
                disk.next_id += 1;
                disk.files.insert(id, SimFile::default());
                disk.live.insert(name.to_string(), id);
                id
            }
        };
        Ok(Box::new(SimHandle {
            disk: self.disk.clone(),
            id,
        }))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
        let disk = self.lock();
        let id = *disk.live.get(name).ok_or_else(|| not_found(name))?;
        Ok(Box::new(SimHandle {
            disk: self.disk.clone(),
            id,
        }))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut disk = self.lock();
        let id = *disk.live.get(name).ok_or_else(|| not_found(name))?;
        Ok(disk.file(id).live.clone())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.live
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock();
        let id = disk.live.remove(from).ok_or_else(|| not_found(from))?;
        disk.live.insert(to.to_string(), id);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.lock();
        if countdown(&mut disk.faults.sync_error_after) {
            return Err(eio("directory sync"));
        }
        disk.durable = disk.live.clone();
        disk.stats.dir_syncs += 1;
        Ok(())
    }

    fn display_name(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

#[derive(Debug)]
struct SimHandle {
    disk: Arc<Mutex<Disk>>,
    id: u64,
}

impl SimHandle {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl VfsFile for SimHandle {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        let mut disk = self.lock();
        if buf.is_empty() {
            return Ok(0);
        }
        if countdown(&mut disk.faults.write_error_after) {
            return Err(eio("write"));
        }
        if countdown(&mut disk.faults.torn_write_after) {
            let cut = disk.below(buf.len() as u64) as usize;
            let data = buf[..cut].to_vec();
            disk.file(self.id).apply(Op::Write { offset, data });
            disk.faults.write_error_after = Some(0);
            return Err(eio("write (torn)"));
        }
        let len = if disk.faults.short_writes {
            1 + disk.below(buf.len() as u64) as usize
        } else {
            buf.len()
        };
        let data = buf[..len].to_vec();
        disk.file(self.id).apply(Op::Write { offset, data });
        disk.stats.writes += 1;
        Ok(len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut disk = self.lock();
        let live = &disk.file(self.id).live;
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= live.len() {
            return Ok(0);
        }
        let len = buf.len().min(live.len() - start);
        buf[..len].copy_from_slice(&live[start..start + len]);
        Ok(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut disk = self.lock();
        if countdown(&mut disk.faults.sync_error_after) {
            return Err(eio("sync"));
        }
        let file = disk.file(self.id);
        // The same as copying `live`, without copying what did not change.
        for op in std::mem::take(&mut file.unsynced) {
            op.apply(&mut file.durable);
        }
        disk.stats.syncs += 1;
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.lock();
        disk.file(self.id).apply(Op::SetLen(len));
        Ok(())
    }
}
