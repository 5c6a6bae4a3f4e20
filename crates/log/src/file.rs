//! [`FileLog`]: the log in segmented, checksummed files (layout and recovery rules in
//! FORMAT.md).
//!
//! Exists to make the Raft log durable at the cost of one write and one `fdatasync` per
//! batch: appends are encoded into a buffer, [`LogStore::sync`] writes the buffer to the
//! active segment and syncs once. Truncation on conflict starts a new segment rather than
//! rewriting bytes; compaction removes whole segments. A cache of the most recent entries
//! serves readers without touching the disk.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use rkv_raft::{Entry, HardState, Index, Recovered, Snapshot, SnapshotMeta, Term};

use crate::error::Corruption;
use crate::format::{self, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::vfs::{StdVfs, Vfs, VfsFile, read_exact_at, write_all_at};
use crate::{
    LogError, LogStore, RecoveryReport, SyncPolicy, Truncation, check_append, check_range,
};

const HARD_STATE_NAME: &str = "hardstate";
const TEMP_SUFFIX: &str = ".tmp";

/// How a [`FileLog`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLogOptions {
    /// When to `fdatasync` (default: always).
    pub sync: SyncPolicy,
    /// How many of the most recent entries to keep in memory (rkvd's `-cache`).
    pub cache_entries: usize,
    /// A segment is closed and a new one started once it would grow past this size.
    pub segment_bytes_max: u64,
    /// How many zeros are written after the records each time a write passes the end of
    /// the active segment's file (FORMAT.md §2); 0 turns preallocation off. Written
    /// zeros, not sparse space: with three logs syncing 3 KB records at once on one
    /// ext4 disk, 2,000-2,300 syncs/s each into written zeros against 1,550 into space
    /// from `ftruncate`. Steps of 1 MiB gained as much throughput as 128 KiB but raised
    /// rkvd's p99 by a fifth: the sync after a step writes all of its zeros.
    pub preallocate_bytes: u64,
    /// At open, cut the log at corruption instead of refusing to start (FORMAT.md §5).
    /// Drops data that may have been acknowledged: only on an operator's explicit request.
    pub repair: bool,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions {
            sync: SyncPolicy::Always,
            cache_entries: 4096,
            segment_bytes_max: 64 << 20,
            preallocate_bytes: PREALLOCATE_BYTES,
            repair: false,
        }
    }
}

fn segment_name(sequence: u64) -> String {
    format!("log-{sequence:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("log-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}.snap", meta.index.0, meta.term.0)
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let middle = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = middle.split_once('-')?;
    let valid = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !valid(index) || !valid(term) {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// Where an entry's record is.
#[derive(Clone, Copy, Debug)]
struct Location {
    sequence: u64,
    offset: u64,
    len: u32,
    term: Term,
}

/// A segment file and the part of the live log it holds.
#[derive(Debug)]
struct Segment {
    sequence: u64,
    first_index: Index,
    /// The last live entry it holds; below `first_index` when it holds none.
    live_last: Index,
}

impl Segment {
    fn holds_nothing_after(&self, index: Index) -> bool {
        self.live_last < self.first_index || self.live_last <= index
    }
}

/// The segment being written.
#[derive(Debug)]
struct Active {
    sequence: u64,
    file: Box<dyn VfsFile>,
    /// Bytes already written to the file (the buffer continues from here).
    written: u64,
    /// The file's length once preallocated: `written` plus zeros (FORMAT.md §2); 0 while
    /// nothing was preallocated.
    allocated: u64,
    /// Offset in the buffer where entries start (past a header still in the buffer).
    buffer_entries_start: usize,
}

/// The default [`FileLogOptions::preallocate_bytes`]: one size and extent change, and
/// so one metadata write, per this many bytes of log.
pub const PREALLOCATE_BYTES: u64 = 128 << 10;

/// What preallocation writes: one default step (zero-initialised, so it takes no space
/// in the binary).
static ZEROS: [u8; PREALLOCATE_BYTES as usize] = [0; PREALLOCATE_BYTES as usize];

/// The log in segment files. See the crate docs and FORMAT.md.
#[derive(Debug)]
pub struct FileLog {
    vfs: Arc<dyn Vfs>,
    options: FileLogOptions,
    /// Every segment file, ascending by sequence; the active one (if any) is last.
    segments: Vec<Segment>,
    active: Option<Active>,
    /// Encoded bytes for the active segment, not yet written.
    buffer: Vec<u8>,
    /// Whether bytes were written since the last `fdatasync` of the active segment.
    unsynced: bool,
    /// Whether names changed since the last directory sync.
    dir_dirty: bool,
    first: Index,
    /// Locations of entries `first ..= last`.
    locations: VecDeque<Location>,
    /// The most recent entries, up to `options.cache_entries`, ending at the last one.
    cache: VecDeque<Entry>,
    snapshot: SnapshotMeta,
    snapshot_file: Option<String>,
    log_sequence_min: u64,
    next_sequence: u64,
    hard_state: HardState,
    hard_state_sequence: u64,
    hard_state_file: Box<dyn VfsFile>,
    poisoned: bool,
}

/// The result of opening a log.
type Opened = (FileLog, Recovered, RecoveryReport);

impl FileLog {
    /// Opens (or creates) the log in directory `dir` on the real file system.
    pub fn open_dir(dir: impl AsRef<Path>, options: FileLogOptions) -> Result<Opened, LogError> {
        let vfs = StdVfs::new(dir.as_ref())
            .map_err(|e| LogError::io("create directory", dir.as_ref().display().to_string(), e))?;
        FileLog::open(Arc::new(vfs), options)
    }

    /// Opens (or creates) the log in `vfs`, recovering it as FORMAT.md §5 says.
    pub fn open(vfs: Arc<dyn Vfs>, options: FileLogOptions) -> Result<Opened, LogError> {
        Recovery::run(vfs, options)
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &FileLogOptions {
        &self.options
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        if self.poisoned {
            Err(LogError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Runs a mutating I/O step on file `name`; any failure poisons the log.
    fn io<T>(
        &mut self,
        operation: &'static str,
        name: &str,
        step: impl FnOnce(&mut FileLog) -> std::io::Result<T>,
    ) -> Result<T, LogError> {
        self.io_named(operation, || name.to_string(), step)
    }

    /// [`FileLog::io`] on segment `sequence`, whose name is only formatted if the step
    /// fails: the write and fdatasync of every append come through here.
    fn io_segment<T>(
        &mut self,
        operation: &'static str,
        sequence: u64,
        step: impl FnOnce(&mut FileLog) -> std::io::Result<T>,
    ) -> Result<T, LogError> {
        self.io_named(operation, || segment_name(sequence), step)
    }

    fn io_named<T>(
        &mut self,
        operation: &'static str,
        name: impl FnOnce() -> String,
        step: impl FnOnce(&mut FileLog) -> std::io::Result<T>,
    ) -> Result<T, LogError> {
        step(self).map_err(|e| {
            self.poisoned = true;
            LogError::io(operation, self.vfs.display_name(&name()), e)
        })
    }

    fn last_term(&self) -> Term {
        self.locations.back().map_or(self.snapshot.term, |l| l.term)
    }

    fn position(&self, index: Index) -> usize {
        (index.0 - self.first.0) as usize
    }

    /// Writes the buffer to the active segment.
    fn flush_buffer(&mut self) -> Result<(), LogError> {
        let Some(active) = &self.active else {
            return Ok(());
        };
        if self.buffer.is_empty() {
            return Ok(());
        }
        let sequence = active.sequence;
        self.io_segment("write", sequence, |log| {
            let active = log.active.as_mut().expect("checked above");
            let end = active.written + log.buffer.len() as u64;
            write_all_at(active.file.as_mut(), active.written, &log.buffer)?;
            if end > active.allocated && log.options.preallocate_bytes > 0 {
                // Preallocate ahead by writing zeros: the appends that follow overwrite
                // blocks the file already has, so their fdatasync updates neither its
                // size nor its extents (sparse space from ftruncate would need both).
                let limit = log.options.segment_bytes_max.max(end);
                let target = end.saturating_add(log.options.preallocate_bytes).min(limit);
                let mut at = end;
                while at < target {
                    let n = ZEROS
                        .len()
                        .min(usize::try_from(target - at).unwrap_or(usize::MAX));
                    write_all_at(active.file.as_mut(), at, &ZEROS[..n])?;
                    at += n as u64;
                }
                active.allocated = target;
            }
            active.written = end;
            active.buffer_entries_start = 0;
            log.buffer.clear();
            log.unsynced = true;
            Ok(())
        })
    }

    fn sync_active(&mut self) -> Result<(), LogError> {
        if !self.unsynced || !self.options.sync.syncs() {
            self.unsynced = false;
            return Ok(());
        }
        let Some(active) = &self.active else {
            return Ok(());
        };
        let sequence = active.sequence;
        self.io_segment("fdatasync", sequence, |log| {
            log.active
                .as_mut()
                .expect("checked above")
                .file
                .sync_data()?;
            log.unsynced = false;
            Ok(())
        })
    }

    fn sync_dir(&mut self) -> Result<(), LogError> {
        if self.dir_dirty && self.options.sync.syncs() {
            self.io("directory fsync", ".", |log| log.vfs.sync_dir())?;
        }
        self.dir_dirty = false;
        Ok(())
    }

    /// Closes the active segment (written and synced) and starts a new one whose header
    /// says the log continues at `first_index`.
    fn roll(&mut self, first_index: Index) -> Result<(), LogError> {
        self.flush_buffer()?;
        self.sync_active()?;
        if let Some(active) = self.active.as_ref().filter(|a| a.allocated > a.written) {
            // Closed segments hold no preallocated space (FORMAT.md §2).
            let (name, written) = (segment_name(active.sequence), active.written);
            self.io("truncate", &name, |log| {
                let active = log.active.as_mut().expect("checked above");
                active.file.set_len(written)?;
                if log.options.sync.syncs() {
                    active.file.sync_data()?;
                }
                Ok(())
            })?;
        }
        let sequence = self.next_sequence;
        let name = segment_name(sequence);
        let file = self.io("create", &name, |log| log.vfs.create(&name))?;
        self.next_sequence += 1;
        self.dir_dirty = true;
        debug_assert!(self.buffer.is_empty());
        format::encode_segment_header(
            &SegmentHeader {
                sequence,
                first_index,
            },
            &mut self.buffer,
        );
        self.active = Some(Active {
            sequence,
            file,
            written: 0,
            allocated: 0,
            buffer_entries_start: SEGMENT_HEADER_BYTES,
        });
        self.segments.push(Segment {
            sequence,
            first_index,
            live_last: first_index.prev(),
        });
        Ok(())
    }

    /// Drops entries `start ..= last` (a conflict).
    fn truncate_from(&mut self, start: Index) -> Result<(), LogError> {
        let location = self.locations[self.position(start)];
        let in_buffer = self.active.as_ref().and_then(|a| {
            (a.sequence == location.sequence && location.offset >= a.written)
                .then(|| (location.offset - a.written) as usize)
        });
        match in_buffer {
            // Not written yet: just forget the bytes.
            Some(offset) => self.buffer.truncate(offset),
            // Written: never rewrite; a new segment's header marks the truncation.
            None => {
                if let Some(active) = &self.active {
                    // Every buffered entry comes after `start`; keep only a header.
                    self.buffer.truncate(active.buffer_entries_start);
                }
                self.roll(start)?;
            }
        }
        self.locations.truncate(self.position(start));
        while self.cache.back().is_some_and(|e| e.index >= start) {
            self.cache.pop_back();
        }
        for segment in &mut self.segments {
            if segment.live_last >= start {
                segment.live_last = start.prev();
            }
        }
        Ok(())
    }

    fn push_cache(&mut self, entry: &Entry) {
        if self.options.cache_entries == 0 {
            return;
        }
        if self.cache.len() == self.options.cache_entries {
            self.cache.pop_front();
        }
        self.cache.push_back(entry.clone());
    }

    /// Reads entries `from .. to` from the segments (or the unwritten buffer).
    fn read_entries(
        &self,
        from: Index,
        to: Index,
        out: &mut Vec<Entry>,
        budget: &mut Budget,
    ) -> Result<(), LogError> {
        let mut open: Option<(u64, Box<dyn VfsFile>)> = None;
        let mut index = from;
        while index < to {
            let location = self.locations[self.position(index)];
            let name = segment_name(location.sequence);
            let mut record = vec![0u8; location.len as usize];
            let active = self
                .active
                .as_ref()
                .filter(|a| a.sequence == location.sequence);
            match active {
                Some(a) if location.offset >= a.written => {
                    let start = (location.offset - a.written) as usize;
                    let end = start + record.len();
                    record.copy_from_slice(&self.buffer[start..end]);
                }
                Some(a) => read_exact_at(a.file.as_ref(), location.offset, &mut record)
                    .map_err(|e| LogError::io("read", self.vfs.display_name(&name), e))?,
                None => {
                    if open.as_ref().is_none_or(|(s, _)| *s != location.sequence) {
                        let file = self
                            .vfs
                            .open(&name)
                            .map_err(|e| LogError::io("open", self.vfs.display_name(&name), e))?;
                        open = Some((location.sequence, file));
                    }
                    let (_, file) = open.as_ref().expect("opened above");
                    read_exact_at(file.as_ref(), location.offset, &mut record)
                        .map_err(|e| LogError::io("read", self.vfs.display_name(&name), e))?;
                }
            }
            let corrupt = |corruption| LogError::Corrupt {
                file: self.vfs.display_name(&name),
                offset: location.offset,
                corruption,
            };
            let decoded = format::decode_record(&record).map_err(corrupt)?;
            // Pair assertion: what we read back is what the index says we wrote.
            if decoded.entry.index != index || decoded.entry.term != location.term {
                return Err(corrupt(Corruption::IndexOutOfSequence {
                    expected: index,
                    found: decoded.entry.index,
                }));
            }
            if !budget.take(&decoded.entry, out.is_empty()) {
                return Ok(());
            }
            out.push(decoded.entry);
            index = index.next();
        }
        Ok(())
    }
}

/// Counts bytes against `max_bytes` for [`LogStore::entries`].
struct Budget {
    left: usize,
}

impl Budget {
    /// Whether `entry` still fits (the first always does).
    fn take(&mut self, entry: &Entry, first: bool) -> bool {
        let size = entry.size_bytes();
        if size > self.left && !first {
            return false;
        }
        self.left = self.left.saturating_sub(size);
        true
    }
}

impl LogStore for FileLog {
    fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        self.check_poisoned()?;
        check_append(entries, &self.snapshot, self.last_index(), |i| {
            self.term(i).unwrap_or_default()
        })?;
        let Some(head) = entries.first() else {
            return Ok(());
        };
        if head.index <= self.last_index() {
            self.truncate_from(head.index)?;
        }
        let total: u64 = entries.iter().map(|e| format::record_len(e) as u64).sum();
        let fits = self.active.as_ref().is_some_and(|a| {
            a.written + self.buffer.len() as u64 + total <= self.options.segment_bytes_max
        });
        if fits {
            // The common case: the whole batch goes into the active segment, so the
            // per-entry work is only encoding and bookkeeping.
            self.buffer.reserve(total as usize);
            self.locations.reserve(entries.len());
            let active = self.active.as_ref().expect("checked by fits");
            let (sequence, mut offset) =
                (active.sequence, active.written + self.buffer.len() as u64);
            for entry in entries {
                let before = self.buffer.len();
                format::encode_record(entry, &mut self.buffer);
                let len = self.buffer.len() - before;
                self.locations.push_back(Location {
                    sequence,
                    offset,
                    len: len as u32,
                    term: entry.term,
                });
                offset += len as u64;
                self.push_cache(entry);
            }
            let last = entries.last().expect("not empty").index;
            self.segments.last_mut().expect("active segment").live_last = last;
            return Ok(());
        }
        for entry in entries {
            let len = format::record_len(entry);
            let full = self.active.as_ref().is_none_or(|a| {
                let size = a.written + self.buffer.len() as u64;
                size > SEGMENT_HEADER_BYTES as u64
                    && size + len as u64 > self.options.segment_bytes_max
            });
            if full {
                self.roll(entry.index)?;
            }
            let active = self.active.as_ref().expect("rolled above");
            let offset = active.written + self.buffer.len() as u64;
            let sequence = active.sequence;
            format::encode_record(entry, &mut self.buffer);
            self.locations.push_back(Location {
                sequence,
                offset,
                len: len as u32,
                term: entry.term,
            });
            self.segments.last_mut().expect("active segment").live_last = entry.index;
            self.push_cache(entry);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(Index, Term), LogError> {
        self.check_poisoned()?;
        self.flush_buffer()?;
        self.sync_active()?;
        self.sync_dir()?;
        Ok((self.last_index(), self.last_term()))
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), LogError> {
        self.check_poisoned()?;
        let sequence = self.hard_state_sequence + 1;
        let slot = format::encode_hard_state_slot(sequence, hard_state);
        let offset = (sequence % 2) * format::HARD_STATE_SLOT_BYTES as u64;
        self.io("write", HARD_STATE_NAME, |log| {
            write_all_at(log.hard_state_file.as_mut(), offset, &slot)?;
            if log.options.sync.syncs() {
                log.hard_state_file.sync_data()?;
            }
            Ok(())
        })?;
        self.hard_state = *hard_state;
        self.hard_state_sequence = sequence;
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn entries(&self, from: Index, to: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        let to = check_range(from, to, self.first, self.last_index())?;
        let mut out = Vec::new();
        let mut budget = Budget { left: max_bytes };
        let cache_first = self.cache.front().map_or(to, |e| e.index);
        if from < cache_first {
            self.read_entries(from, to.min(cache_first), &mut out, &mut budget)?;
            if out.len() as u64 != to.min(cache_first).0 - from.0 {
                return Ok(out);
            }
        }
        let start = from.max(cache_first);
        if start < to {
            let skip = (start.0 - cache_first.0) as usize;
            for entry in self.cache.range(skip..skip + (to.0 - start.0) as usize) {
                if !budget.take(entry, out.is_empty()) {
                    break;
                }
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, LogError> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.first {
            return Err(LogError::Compacted {
                index,
                first: self.first,
            });
        }
        let last = self.last_index();
        if index > last {
            return Err(LogError::Unavailable { index, last });
        }
        Ok(self.locations[self.position(index)].term)
    }

    fn first_index(&self) -> Index {
        self.first
    }

    fn last_index(&self) -> Index {
        Index(self.first.0 - 1 + self.locations.len() as u64)
    }

    fn compact(&mut self, up_to: Index) -> Result<(), LogError> {
        self.check_poisoned()?;
        let snapshot = self.snapshot.index;
        if up_to > snapshot {
            return Err(LogError::CompactBeyondSnapshot { up_to, snapshot });
        }
        if up_to < self.first {
            return Ok(());
        }
        let count = self.position(up_to) + 1;
        self.locations.drain(..count);
        while self.cache.front().is_some_and(|e| e.index <= up_to) {
            self.cache.pop_front();
        }
        self.first = up_to.next();
        let active = self.active.as_ref().map(|a| a.sequence);
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|s| Some(s.sequence) != active && s.holds_nothing_after(up_to))
            .map(|s| s.sequence)
            .collect();
        for sequence in doomed {
            let name = segment_name(sequence);
            self.io("remove", &name, |log| log.vfs.remove(&name))?;
            self.segments.retain(|s| s.sequence != sequence);
            self.dir_dirty = true;
        }
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), LogError> {
        self.check_poisoned()?;
        let meta = &snapshot.meta;
        if meta.index < self.snapshot.index {
            return Err(LogError::StaleSnapshot {
                index: meta.index,
                current: self.snapshot.index,
            });
        }
        let matching = self.term(meta.index).ok() == Some(meta.term);
        if !matching {
            // Segments below the next sequence number die with this snapshot.
            self.log_sequence_min = self.next_sequence;
        }
        let name = snapshot_name(meta);
        let temp = format!("{name}{TEMP_SUFFIX}");
        let bytes = format::encode_snapshot(snapshot, self.log_sequence_min);
        let syncs = self.options.sync.syncs();
        self.io("write snapshot", &temp, |log| {
            let mut file = log.vfs.create(&temp)?;
            write_all_at(file.as_mut(), 0, &bytes)?;
            if syncs {
                file.sync_data()?;
            }
            log.vfs.rename(&temp, &name)?;
            if syncs {
                log.vfs.sync_dir()?;
            }
            Ok(())
        })?;
        if let Some(old) = self.snapshot_file.replace(name.clone())
            && old != name
        {
            self.io("remove", &old, |log| log.vfs.remove(&old))?;
            self.dir_dirty = true;
        }
        self.snapshot = meta.clone();
        if !matching {
            self.active = None;
            self.buffer.clear();
            self.unsynced = false;
            for segment in std::mem::take(&mut self.segments) {
                let name = segment_name(segment.sequence);
                self.io("remove", &name, |log| log.vfs.remove(&name))?;
            }
            self.dir_dirty = true;
            self.locations.clear();
            self.cache.clear();
            self.first = meta.index.next();
        }
        Ok(())
    }

    fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    fn snapshot(&self) -> Result<Snapshot, LogError> {
        let Some(name) = &self.snapshot_file else {
            return Ok(Snapshot {
                meta: self.snapshot.clone(),
                data: bytes::Bytes::new(),
            });
        };
        let bytes = self
            .vfs
            .read(name)
            .map_err(|e| LogError::io("read", self.vfs.display_name(name), e))?;
        let (snapshot, _) =
            format::decode_snapshot(&bytes).map_err(|corruption| LogError::Corrupt {
                file: self.vfs.display_name(name),
                offset: 0,
                corruption,
            })?;
        Ok(snapshot)
    }

    fn reopen(mut self) -> Result<(Self, Recovered, RecoveryReport), LogError> {
        self.sync()?;
        let vfs = self.vfs.clone();
        let options = self.options.clone();
        drop(self);
        FileLog::open(vfs, options)
    }
}

/// The state of replay while recovery walks the segments.
struct Recovery {
    vfs: Arc<dyn Vfs>,
    options: FileLogOptions,
    report: RecoveryReport,
    snapshot: Snapshot,
    snapshot_file: Option<String>,
    log_sequence_min: u64,
    segments: Vec<Segment>,
    /// The live log, as replayed: entries `base ..= last`.
    live: Vec<(Location, Entry)>,
    base: Index,
    last: Index,
}

/// Where replay stopped early.
enum Stop {
    Continue,
    /// Repair or a torn tail ended replay at this segment.
    End,
}

impl Recovery {
    fn run(vfs: Arc<dyn Vfs>, options: FileLogOptions) -> Result<Opened, LogError> {
        let names = vfs
            .list()
            .map_err(|e| LogError::io("list directory", vfs.display_name("."), e))?;
        let mut recovery = Recovery {
            vfs,
            options,
            report: RecoveryReport::default(),
            snapshot: Snapshot::default(),
            snapshot_file: None,
            log_sequence_min: 0,
            segments: Vec::new(),
            live: Vec::new(),
            base: Index(1),
            last: Index(0),
        };
        for name in names.iter().filter(|n| n.ends_with(TEMP_SUFFIX)) {
            recovery.remove(name)?;
        }
        recovery.load_snapshot(&names)?;
        let (hard_state_sequence, hard_state, hard_state_file) =
            recovery.load_hard_state(&names)?;
        let mut sequences: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        sequences.sort_unstable();
        let next_sequence = sequences
            .last()
            .map_or(0, |s| s + 1)
            .max(recovery.log_sequence_min);
        for (position, &sequence) in sequences.iter().enumerate() {
            if sequence < recovery.log_sequence_min {
                recovery.remove(&segment_name(sequence))?;
                continue;
            }
            let is_last = position + 1 == sequences.len();
            if let Stop::End = recovery.replay_segment(sequence, is_last)? {
                for &later in &sequences[position + 1..] {
                    recovery.remove(&segment_name(later))?;
                    if let Some(repaired) = &mut recovery.report.repaired {
                        repaired.later_segments_removed += 1;
                    }
                }
                break;
            }
        }
        recovery.finish(
            next_sequence,
            hard_state_sequence,
            hard_state,
            hard_state_file,
        )
    }

    fn remove(&mut self, name: &str) -> Result<(), LogError> {
        self.vfs
            .remove(name)
            .map_err(|e| LogError::io("remove", self.vfs.display_name(name), e))?;
        self.report.removed.push(name.to_string());
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), LogError> {
        if self.options.sync.syncs() {
            self.vfs
                .sync_dir()
                .map_err(|e| LogError::io("directory fsync", self.vfs.display_name("."), e))?;
        }
        Ok(())
    }

    fn corrupt(&self, name: &str, offset: u64, corruption: Corruption) -> LogError {
        LogError::Corrupt {
            file: self.vfs.display_name(name),
            offset,
            corruption,
        }
    }

    fn load_snapshot(&mut self, names: &[String]) -> Result<(), LogError> {
        let mut snapshots: Vec<(u64, u64, &String)> = names
            .iter()
            .filter_map(|n| parse_snapshot_name(n).map(|(i, t)| (i, t, n)))
            .collect();
        snapshots.sort_unstable();
        let Some((index, term, newest)) = snapshots.pop() else {
            return Ok(());
        };
        let bytes = self
            .vfs
            .read(newest)
            .map_err(|e| LogError::io("read", self.vfs.display_name(newest), e))?;
        let (snapshot, log_sequence_min) =
            format::decode_snapshot(&bytes).map_err(|c| self.corrupt(newest, 0, c))?;
        if snapshot.meta.index != Index(index) || snapshot.meta.term != Term(term) {
            return Err(self.corrupt(newest, 0, Corruption::NameMismatch));
        }
        self.snapshot = snapshot;
        self.log_sequence_min = log_sequence_min;
        self.snapshot_file = Some(newest.clone());
        for (_, _, older) in snapshots {
            self.remove(older)?;
        }
        Ok(())
    }

    fn load_hard_state(
        &mut self,
        names: &[String],
    ) -> Result<(u64, HardState, Box<dyn VfsFile>), LogError> {
        let display = self.vfs.display_name(HARD_STATE_NAME);
        if !names.iter().any(|n| n == HARD_STATE_NAME) {
            // Created whole and renamed into place, so a torn creation is never seen.
            let temp = format!("{HARD_STATE_NAME}{TEMP_SUFFIX}");
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&format::encode_hard_state_slot(0, &HardState::default()));
            bytes.extend_from_slice(&format::encode_hard_state_slot(0, &HardState::default()));
            let syncs = self.options.sync.syncs();
            let create = || -> std::io::Result<()> {
                let mut file = self.vfs.create(&temp)?;
                write_all_at(file.as_mut(), 0, &bytes)?;
                if syncs {
                    file.sync_data()?;
                }
                self.vfs.rename(&temp, HARD_STATE_NAME)
            };
            create().map_err(|e| LogError::io("create", display.clone(), e))?;
            self.sync_dir()?;
        }
        let bytes = self
            .vfs
            .read(HARD_STATE_NAME)
            .map_err(|e| LogError::io("read", display.clone(), e))?;
        let (sequence, hard_state) = format::decode_hard_state_file(&bytes)
            .map_err(|c| self.corrupt(HARD_STATE_NAME, 0, c))?;
        let file = self
            .vfs
            .open(HARD_STATE_NAME)
            .map_err(|e| LogError::io("open", display, e))?;
        Ok((sequence, hard_state, file))
    }

    /// The term of the last live entry, or of the snapshot when it is the last.
    fn last_term(&self) -> Term {
        match self.live.last() {
            Some((location, _)) => location.term,
            None if self.last == self.snapshot.meta.index => self.snapshot.meta.term,
            None => Term(0),
        }
    }

    /// Applies a segment header's truncation point.
    fn truncate_live(&mut self, first_index: Index) {
        if first_index > self.last.next() || first_index <= self.base {
            // Past a gap the snapshot covers, or before everything: start over.
            self.live.clear();
            self.base = first_index;
        } else {
            self.live.truncate((first_index.0 - self.base.0) as usize);
        }
        self.last = first_index.prev();
        for segment in &mut self.segments {
            if segment.live_last > self.last {
                segment.live_last = self.last;
            }
        }
    }

    fn replay_segment(&mut self, sequence: u64, is_last: bool) -> Result<Stop, LogError> {
        let name = segment_name(sequence);
        let bytes = self
            .vfs
            .read(&name)
            .map_err(|e| LogError::io("read", self.vfs.display_name(&name), e))?;
        self.report.segments_replayed += 1;
        let header = match format::decode_segment_header(&bytes) {
            Ok(h) if h.sequence != sequence => Err(Corruption::NameMismatch),
            Ok(h) if h.first_index == Index(0) => Err(Corruption::BadLength(0)),
            other => other,
        };
        let header = match header {
            Ok(header) => header,
            Err(corruption) => return self.bad_record(&name, &bytes, 0, corruption, is_last),
        };
        let limit = self.last.max(self.snapshot.meta.index).next();
        if header.first_index > limit {
            let gap = Corruption::Gap {
                expected_at_most: limit,
                found: header.first_index,
            };
            return self.bad_record(&name, &bytes, 0, gap, is_last);
        }
        self.truncate_live(header.first_index);
        self.segments.push(Segment {
            sequence,
            first_index: header.first_index,
            live_last: header.first_index.prev(),
        });
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut previous = self.last_term();
        while offset < bytes.len() {
            if format::is_preallocated_tail(&bytes[offset..]) {
                // The end of the records; cut the unused space (FORMAT.md §2).
                self.cut(&name, offset as u64)?;
                break;
            }
            let decoded = format::decode_record(&bytes[offset..]).and_then(|d| {
                let expected = self.last.next();
                if d.entry.index != expected {
                    return Err(Corruption::IndexOutOfSequence {
                        expected,
                        found: d.entry.index,
                    });
                }
                if d.entry.term < previous {
                    return Err(Corruption::TermRegression {
                        index: d.entry.index,
                        term: d.entry.term,
                        previous,
                    });
                }
                Ok(d)
            });
            let decoded = match decoded {
                Ok(d) => d,
                Err(corruption) => {
                    return self.bad_record(&name, &bytes, offset, corruption, is_last);
                }
            };
            let location = Location {
                sequence,
                offset: offset as u64,
                len: decoded.len as u32,
                term: decoded.entry.term,
            };
            previous = decoded.entry.term;
            self.last = decoded.entry.index;
            self.segments.last_mut().expect("pushed above").live_last = self.last;
            self.live.push((location, decoded.entry));
            offset += decoded.len;
        }
        Ok(Stop::Continue)
    }

    /// Decides what a bad header or record at `offset` means: a torn tail (truncate and
    /// report), corruption (refuse), or corruption the operator asked to repair.
    fn bad_record(
        &mut self,
        name: &str,
        bytes: &[u8],
        offset: usize,
        corruption: Corruption,
        is_last: bool,
    ) -> Result<Stop, LogError> {
        // No record starts in the zeros at the end (preallocated space): scan up to them.
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        let valid_record_follows =
            (offset + 1..end).any(|p| format::check_record_frame(&bytes[p..]).is_ok());
        let torn = is_last && !valid_record_follows;
        if !torn && !self.options.repair {
            return Err(self.corrupt(name, offset as u64, corruption));
        }
        let truncation = Truncation {
            file: self.vfs.display_name(name),
            offset: offset as u64,
            bytes_dropped: (bytes.len() - offset) as u64,
            later_segments_removed: 0,
            corruption,
        };
        if offset == 0 {
            // Nothing valid in the file: remove it, and forget the segment if it was
            // already counted.
            self.remove(name)?;
            if let Some(sequence) = parse_segment_name(name) {
                self.segments.retain(|s| s.sequence != sequence);
            }
        } else {
            self.cut(name, offset as u64)?;
        }
        self.sync_dir()?;
        if torn {
            self.report.torn_tail = Some(truncation);
        } else {
            self.report.repaired = Some(truncation);
        }
        Ok(Stop::End)
    }

    /// Cuts segment `name` to `len` bytes, durably.
    fn cut(&self, name: &str, len: u64) -> Result<(), LogError> {
        let display = self.vfs.display_name(name);
        let syncs = self.options.sync.syncs();
        let cut = || -> std::io::Result<()> {
            let mut file = self.vfs.open(name)?;
            file.set_len(len)?;
            if syncs {
                file.sync_data()?;
            }
            Ok(())
        };
        cut().map_err(|e| LogError::io("truncate", display, e))
    }

    fn finish(
        mut self,
        next_sequence: u64,
        hard_state_sequence: u64,
        hard_state: HardState,
        hard_state_file: Box<dyn VfsFile>,
    ) -> Result<Opened, LogError> {
        let snapshot_index = self.snapshot.meta.index;
        // Entries the snapshot covers are not part of the recovered log.
        let covered = self
            .live
            .iter()
            .take_while(|(_, e)| e.index <= snapshot_index)
            .count();
        let live: Vec<(Location, Entry)> = self.live.drain(covered..).collect();
        // Segments that hold nothing after the snapshot are garbage now.
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|s| s.holds_nothing_after(snapshot_index))
            .map(|s| s.sequence)
            .collect();
        for sequence in &doomed {
            self.remove(&segment_name(*sequence))?;
        }
        self.segments.retain(|s| !doomed.contains(&s.sequence));
        if !doomed.is_empty() {
            self.sync_dir()?;
        }
        let entries: Vec<Entry> = live.iter().map(|(_, e)| e.clone()).collect();
        let cache_from = entries.len().saturating_sub(self.options.cache_entries);
        self.report.entries_recovered = entries.len();
        let log = FileLog {
            vfs: self.vfs,
            segments: self.segments,
            active: None,
            buffer: Vec::new(),
            unsynced: false,
            dir_dirty: false,
            first: snapshot_index.next(),
            locations: live.iter().map(|(l, _)| *l).collect(),
            cache: entries[cache_from..].iter().cloned().collect(),
            snapshot: self.snapshot.meta.clone(),
            snapshot_file: self.snapshot_file,
            log_sequence_min: self.log_sequence_min,
            next_sequence,
            hard_state,
            hard_state_sequence,
            hard_state_file,
            poisoned: false,
            options: self.options,
        };
        let recovered = Recovered {
            hard_state,
            snapshot: self.snapshot,
            entries,
        };
        Ok((log, recovered, self.report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("log-42.seg"), None);
        let meta = SnapshotMeta {
            index: Index(7),
            term: Term(3),
            ..SnapshotMeta::default()
        };
        assert_eq!(parse_snapshot_name(&snapshot_name(&meta)), Some((7, 3)));
        assert_eq!(parse_snapshot_name("snap-1-2.snap"), None);
    }

    #[test]
    fn preallocated_space_is_written_zeros_not_a_sparse_hole() {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        // Some file systems (ZFS with compression, network mounts) store written zeros
        // as holes or report no blocks: there, this cannot be seen, and is not checked.
        let control = dir.path().join("control");
        let mut file = std::fs::File::create(&control).expect("control file");
        file.write_all(&ZEROS).expect("write zeros");
        file.sync_all().expect("sync");
        let control = std::fs::metadata(&control).expect("control metadata");
        if control.blocks() * 512 < control.len() {
            eprintln!("skipped: this file system does not report written zeros as blocks");
            return;
        }
        let (mut log, _, _) =
            FileLog::open_dir(dir.path(), FileLogOptions::default()).expect("open");
        let entries: Vec<Entry> = (1..=100).map(|i| crate::conformance::entry(i, 1)).collect();
        log.append(&entries).expect("append");
        log.sync().expect("sync");
        let path = dir.path().join(segment_name(0));
        let meta = std::fs::metadata(&path).expect("the active segment");
        assert!(
            meta.len() >= PREALLOCATE_BYTES,
            "preallocated: {} bytes",
            meta.len()
        );
        // 512-byte units, as st_blocks counts them: every byte of the file has a block.
        assert!(
            meta.blocks() * 512 >= meta.len(),
            "{} bytes on disk for a {}-byte file: sparse",
            meta.blocks() * 512,
            meta.len()
        );
    }
}
