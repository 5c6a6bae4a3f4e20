//! Little-endian primitives shared by the command and snapshot encodings.
//!
//! Writing goes through [`Sink`] so that one encoder serves both the snapshot bytes
//! (a `Vec<u8>`) and the state digest (an [`Fnv64`] hasher) without allocating twice.
//! Reading never panics: every read checks the remaining length first and answers
//! [`DecodeError::Truncated`] when the input is too short.

use crate::command::DecodeError;

/// Where encoded bytes go.
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    fn put_u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }

    fn put_u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }

    /// A `u32` length, then the bytes.
    ///
    /// # Panics
    /// If `bytes` is 4 GiB or longer: far beyond every limit of this crate, so only a
    /// caller that skipped validation can get there.
    fn put_bytes(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("a field of 4 GiB or more cannot be encoded");
        self.put_u32(len);
        self.put(bytes);
    }

    /// A presence byte (0 absent, 1 present), then the bytes if present.
    fn put_option_bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.put_u8(0),
            Some(bytes) => {
                self.put_u8(1);
                self.put_bytes(bytes);
            }
        }
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// 64-bit FNV-1a: a stable, platform-independent hash for replica comparison.
///
/// Not cryptographic: it detects accidental divergence, not an adversary.
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Fnv64 {
        Fnv64(Fnv64::OFFSET_BASIS)
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

impl Sink for Fnv64 {
    fn put(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Fnv64::PRIME);
        }
    }
}

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { input, position: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.input.len() - self.position
    }

    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if count > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let slice = &self.input[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(word))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    /// A presence byte that must be 0 or 1.
    pub(crate) fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidFlag(other)),
        }
    }

    /// A `u32` length, then that many bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }

    pub(crate) fn option_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        if self.flag()? {
            Ok(Some(self.bytes()?))
        } else {
            Ok(None)
        }
    }

    /// Fails unless the whole input was consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}
