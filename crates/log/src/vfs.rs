//! The file-I/O seam: every byte the log reads or writes goes through [`Vfs`].
//!
//! Exists so that tests can put [`crate::sim::SimVfs`] underneath the real `FileLog`
//! code and inject the faults a disk really has (short and torn writes, EIO on write and
//! on sync, a crash that keeps only synced bytes), the way redb's `StorageBackend` and
//! TigerBeetle's `testing/storage.zig` do. [`StdVfs`] is the real directory.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One directory of files, addressed by plain names (no separators).
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates (or truncates) a file for reading and writing.
    fn create(&self, name: &str) -> io::Result<Box<dyn VfsFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Box<dyn VfsFile>>;
    /// Reads a whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Removes a file (durable only after [`Vfs::sync_dir`]).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing `to` (durable only after [`Vfs::sync_dir`]).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the directory's name changes durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// The full name of a file, for error messages.
    fn display_name(&self, name: &str) -> String;
}

/// An open file.
pub trait VfsFile: Send + fmt::Debug {
    /// Writes some prefix of `buf` at `offset` and returns its length (it may be short).
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<usize>;
    /// Reads into `buf` from `offset`; returns how many bytes were read (0 at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Writes all of `buf` at `offset`, looping over short writes.
pub(crate) fn write_all_at(
    file: &mut dyn VfsFile,
    mut offset: u64,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(offset, buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote zero bytes")),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub(crate) fn read_exact_at(
    file: &dyn VfsFile,
    mut offset: u64,
    mut buf: &mut [u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(offset, buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file too short",
                ));
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The real file system: one directory.
#[derive(Debug, Clone)]
pub struct StdVfs {
    dir: PathBuf,
}

impl StdVfs {
    /// Uses `dir`, creating it (and its parents) if needed.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<StdVfs> {
        fs::create_dir_all(dir.as_ref())?;
        Ok(StdVfs {
            dir: dir.as_ref().to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Vfs for StdVfs {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name))?;
        Ok(Box::new(StdFile { file }))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(name))?;
        Ok(Box::new(StdFile { file }))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn display_name(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl VfsFile for StdFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}
