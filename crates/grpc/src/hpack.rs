//! Header blocks (HPACK, RFC 7541).
//!
//! Decoding needs the whole of HPACK: the peer may use its dynamic table and Huffman
//! coding. Every header block of a connection goes through its one [`Decoder`] in
//! order, as the dynamic table requires; strings that are not Huffman-coded and
//! entries of the tables reach the caller without a copy. (`loona-hpack`'s decoder,
//! tried first, built a Huffman table of hash maps for every coded string: half the
//! leader's CPU time.) Encoding is deliberately simple: static-table references and literals "without
//! indexing", never the dynamic table. The blocks this crate sends are then the same
//! bytes every time (the common ones are built once), and no encoder state has to
//! follow the peer's SETTINGS_HEADER_TABLE_SIZE.

use bytes::{BufMut, BytesMut};

use crate::frame::{ConnectionError, Reason};

/// Static-table indexes (RFC 7541 Appendix A) this crate refers to.
pub mod index {
    /// `:authority` (name only).
    pub const AUTHORITY: usize = 1;
    /// `:method: POST`.
    pub const METHOD_POST: usize = 3;
    /// `:path` (name only; the entry's value is `/`).
    pub const PATH: usize = 4;
    /// `:scheme: http`.
    pub const SCHEME_HTTP: usize = 6;
    /// `:status: 200`, and the name `:status` for other codes.
    pub const STATUS_200: usize = 8;
    /// `content-type` (name only).
    pub const CONTENT_TYPE: usize = 31;
}

/// The size of the dynamic table this crate lets a peer's encoder use (the default of
/// SETTINGS_HEADER_TABLE_SIZE, so it is never announced).
pub const TABLE_BYTES: usize = 4096;

/// Writes an HPACK integer with an `prefix_bits`-bit prefix; `first` holds the bits
/// above the prefix (RFC 7541 §5.1).
fn put_integer(out: &mut BytesMut, value: usize, prefix_bits: u8, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.put_u8((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.put_u8(rest as u8);
}

/// Writes a string literal without Huffman coding (§5.2).
fn put_string(out: &mut BytesMut, bytes: &[u8]) {
    put_integer(out, bytes.len(), 7, 0);
    out.put_slice(bytes);
}

/// Writes a reference to a whole static-table entry (§6.1).
pub fn put_indexed(out: &mut BytesMut, index: usize) {
    put_integer(out, index, 7, 0x80);
}

/// Writes a literal field without indexing whose name is static-table entry
/// `name_index` (§6.2.2).
pub fn put_literal_indexed_name(out: &mut BytesMut, name_index: usize, value: &[u8]) {
    put_integer(out, name_index, 4, 0);
    put_string(out, value);
}

/// Writes a literal field without indexing with a literal name (§6.2.2). `name` must
/// be lower case, as HTTP/2 requires.
pub fn put_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    put_string(out, name);
    put_string(out, value);
}

/// The static table (RFC 7541 Appendix A): entry `i` is index `i + 1`.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The length in bits of each symbol's Huffman code (RFC 7541 Appendix B; symbol 256 is
/// EOS). The code is canonical: within one length, codes follow the symbols' order, and
/// each length's first code follows the previous length's last. The codes themselves
/// are derived from these lengths ([`Huffman`]).
const HUFFMAN_CODE_BITS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// A canonical Huffman decoding table: per code length, the first code, how many codes
/// have that length and where their symbols start in `symbols`.
struct Huffman {
    first_code: [u32; 31],
    count: [u32; 31],
    offset: [u32; 31],
    symbols: [u16; 257],
}

impl Huffman {
    fn build() -> Huffman {
        let mut huffman = Huffman {
            first_code: [0; 31],
            count: [0; 31],
            offset: [0; 31],
            symbols: [0; 257],
        };
        for bits in HUFFMAN_CODE_BITS {
            huffman.count[usize::from(bits)] += 1;
        }
        let (mut code, mut offset) = (0u32, 0u32);
        for bits in 1..31 {
            code <<= 1;
            huffman.first_code[bits] = code;
            huffman.offset[bits] = offset;
            code += huffman.count[bits];
            offset += huffman.count[bits];
        }
        let mut next = huffman.offset;
        for (symbol, bits) in HUFFMAN_CODE_BITS.iter().enumerate() {
            let slot = &mut next[usize::from(*bits)];
            huffman.symbols[*slot as usize] = symbol as u16;
            *slot += 1;
        }
        huffman
    }

    /// The code of `symbol` and its length (for tests and for encoding).
    #[cfg(test)]
    fn code(&self, symbol: usize) -> (u32, u8) {
        let bits = HUFFMAN_CODE_BITS[symbol];
        let rank = self.symbols[self.offset[usize::from(bits)] as usize..]
            .iter()
            .position(|s| usize::from(*s) == symbol)
            .unwrap_or(0);
        (self.first_code[usize::from(bits)] + rank as u32, bits)
    }

    /// Appends the decoding of `input` to `out` (§5.2: at most 7 bits of padding, all
    /// ones; EOS may not appear).
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        let (mut code, mut bits) = (0u32, 0usize);
        for byte in input {
            for shift in (0..8).rev() {
                code = (code << 1) | u32::from((byte >> shift) & 1);
                bits += 1;
                let first = self.first_code[bits];
                if code >= first && code - first < self.count[bits] {
                    let symbol = self.symbols[(self.offset[bits] + code - first) as usize];
                    if symbol == 256 {
                        return Err("EOS inside a Huffman string");
                    }
                    out.push(symbol as u8);
                    (code, bits) = (0, 0);
                } else if bits >= 30 {
                    return Err("not a Huffman code");
                }
            }
        }
        if bits > 7 {
            return Err("more than 7 bits of Huffman padding");
        }
        if code != (1 << bits) - 1 {
            return Err("Huffman padding that is not all ones");
        }
        Ok(())
    }
}

fn huffman() -> &'static Huffman {
    static HUFFMAN: std::sync::OnceLock<Huffman> = std::sync::OnceLock::new();
    HUFFMAN.get_or_init(Huffman::build)
}

/// Reads an HPACK integer with an `prefix_bits`-bit prefix at the start of `input`;
/// returns it and the bytes it took. Values above 2^28 are refused (no header is that
/// large, and the arithmetic stays far from overflow).
fn get_integer(input: &[u8], prefix_bits: u8) -> Result<(usize, usize), &'static str> {
    let max = (1usize << prefix_bits) - 1;
    let first = *input
        .first()
        .ok_or("a header block cut inside an integer")?;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok((value, 1));
    }
    let mut shift = 0;
    for (position, byte) in input[1..].iter().enumerate() {
        if shift > 28 {
            return Err("an integer above 2^28");
        }
        value += usize::from(byte & 0x7f) << shift;
        if value > 1 << 28 {
            return Err("an integer above 2^28");
        }
        if byte & 0x80 == 0 {
            return Ok((value, position + 2));
        }
        shift += 7;
    }
    Err("a header block cut inside an integer")
}

/// Reads a string literal at the start of `input` into `scratch` if Huffman-coded;
/// returns where its bytes are and the bytes it took.
fn get_string<'a>(
    input: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<(&'a [u8], usize), &'static str> {
    let (length, taken) = get_integer(input, 7)?;
    let raw = input
        .get(taken..taken + length)
        .ok_or("a header block cut inside a string")?;
    if input[0] & 0x80 == 0 {
        return Ok((raw, taken + length));
    }
    scratch.clear();
    huffman().decode(raw, scratch)?;
    Ok((scratch.as_slice(), taken + length))
}

/// One entry of the dynamic table: name and value in one buffer.
struct Entry {
    bytes: Vec<u8>,
    name_length: usize,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_length]
    }

    fn value(&self) -> &[u8] {
        &self.bytes[self.name_length..]
    }

    /// Its size as the table counts it (§4.1).
    fn size(&self) -> usize {
        self.bytes.len() + 32
    }
}

/// The (name, value) of index `index` in the static table, then `dynamic`.
fn lookup(
    dynamic: &std::collections::VecDeque<Entry>,
    index: usize,
) -> Result<(&[u8], &[u8]), &'static str> {
    match index {
        0 => Err("header index 0"),
        1..=61 => Ok(STATIC_TABLE[index - 1]),
        _ => dynamic
            .get(index - 62)
            .map(|entry| (entry.name(), entry.value()))
            .ok_or("a header index past the dynamic table"),
    }
}

/// The HPACK decoder of one connection's inbound header blocks (RFC 7541 §3): the
/// dynamic table the peer's encoder fills, and buffers for Huffman-coded strings.
#[derive(Default)]
pub struct Decoder {
    /// Newest first.
    table: std::collections::VecDeque<Entry>,
    table_bytes: usize,
    /// The table's current maximum, as the peer last set it (at most [`TABLE_BYTES`]).
    table_max: Option<usize>,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("hpack::Decoder")
            .field("entries", &self.table.len())
            .field("bytes", &self.table_bytes)
            .finish()
    }
}

impl Decoder {
    fn table_max(&self) -> usize {
        self.table_max.unwrap_or(TABLE_BYTES)
    }

    /// Decodes one complete header block, calling `field` with each (name, value) in
    /// order. Any error leaves the connection's decoding context unusable: the caller
    /// must end the connection with COMPRESSION_ERROR, which the error says.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), ConnectionError> {
        self.decode_fields(block, &mut field).map_err(|why| {
            ConnectionError::new(
                Reason::COMPRESSION_ERROR,
                format!("undecodable header block: {why}"),
            )
        })
    }

    fn decode_fields(
        &mut self,
        block: &[u8],
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), &'static str> {
        let mut at = 0;
        let mut fields_seen = false;
        while at < block.len() {
            let rest = &block[at..];
            let first = rest[0];
            if first & 0x80 != 0 {
                let (index, taken) = get_integer(rest, 7)?;
                let (name, value) = lookup(&self.table, index)?;
                field(name, value);
                at += taken;
            } else if first & 0xe0 == 0x20 {
                // A dynamic table size update: only before the block's first field.
                if fields_seen {
                    return Err("a table size update after a header field");
                }
                let (size, taken) = get_integer(rest, 5)?;
                if size > TABLE_BYTES {
                    return Err("a table size above SETTINGS_HEADER_TABLE_SIZE");
                }
                self.table_max = Some(size);
                self.evict(0);
                at += taken;
                continue;
            } else {
                let (prefix_bits, indexing) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false) // without indexing (0000) or never indexed (0001)
                };
                let (name_index, mut taken) = get_integer(rest, prefix_bits)?;
                let name = if name_index == 0 {
                    let (name, name_taken) = get_string(&rest[taken..], &mut self.name)?;
                    taken += name_taken;
                    name
                } else {
                    lookup(&self.table, name_index)?.0
                };
                let (value, value_taken) = get_string(&rest[taken..], &mut self.value)?;
                field(name, value);
                let entry = indexing.then(|| {
                    let mut bytes = Vec::with_capacity(name.len() + value.len());
                    bytes.extend_from_slice(name);
                    bytes.extend_from_slice(value);
                    Entry {
                        bytes,
                        name_length: name.len(),
                    }
                });
                if let Some(entry) = entry {
                    self.insert(entry);
                }
                at += taken + value_taken;
            }
            fields_seen = true;
        }
        Ok(())
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.table_max() {
            // Larger than the whole table: it empties the table and is not kept (§4.4).
            self.table.clear();
            self.table_bytes = 0;
            return;
        }
        self.evict(size);
        self.table_bytes += size;
        self.table.push_front(entry);
    }

    /// Drops the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.table_bytes + room > self.table_max() {
            match self.table.pop_back() {
                Some(entry) => self.table_bytes -= entry.size(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut fields = Vec::new();
        Decoder::default()
            .decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))
            .expect("decodes");
        fields
    }

    #[test]
    fn what_we_encode_decodes_to_the_same_fields() {
        let long_value = vec![b'x'; 300];
        let mut block = BytesMut::new();
        put_indexed(&mut block, index::STATUS_200);
        put_literal_indexed_name(&mut block, index::CONTENT_TYPE, b"application/grpc");
        put_literal(&mut block, b"grpc-status", b"0");
        put_literal(&mut block, b"x-long", &long_value);
        assert_eq!(
            decoded(&block),
            vec![
                (b":status".to_vec(), b"200".to_vec()),
                (b"content-type".to_vec(), b"application/grpc".to_vec()),
                (b"grpc-status".to_vec(), b"0".to_vec()),
                (b"x-long".to_vec(), long_value),
            ]
        );
    }

    #[test]
    fn integers_use_their_prefix_then_continuation_bytes() {
        // RFC 7541 C.1.1 and C.1.2: 10 and 1337 with a 5-bit prefix.
        let mut out = BytesMut::new();
        put_integer(&mut out, 10, 5, 0);
        assert_eq!(&out[..], &[0x0a]);
        out.clear();
        put_integer(&mut out, 1337, 5, 0);
        assert_eq!(&out[..], &[0x1f, 0x9a, 0x0a]);
    }

    #[test]
    fn the_dynamic_table_and_huffman_strings_of_a_peer_are_understood() {
        // RFC 7541 C.4.1 then C.4.2: a request with Huffman literals indexed into the
        // dynamic table, then a request that refers to them.
        let first = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let second = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
        ];
        let mut decoder = Decoder::default();
        let mut fields = Vec::new();
        for block in [&first[..], &second[..]] {
            decoder
                .decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))
                .expect("decodes");
        }
        assert_eq!(
            fields[3],
            (b":authority".to_vec(), b"www.example.com".to_vec())
        );
        assert_eq!(
            fields[7],
            (b":authority".to_vec(), b"www.example.com".to_vec())
        );
        assert_eq!(fields[8], (b"cache-control".to_vec(), b"no-cache".to_vec()));
    }

    /// Huffman-codes `input` with the codes [`Huffman`] derived (for the tests only: the
    /// crate itself never Huffman-codes).
    fn huffman_encode(input: &[u8]) -> Vec<u8> {
        let huffman = huffman();
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0u32);
        for byte in input {
            let (code, length) = huffman.code(usize::from(*byte));
            acc = (acc << length) | u64::from(code);
            bits += u32::from(length);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
        }
        out
    }

    #[test]
    fn the_canonical_codes_are_the_rfcs() {
        let huffman = huffman();
        // A few codes as RFC 7541 Appendix B lists them.
        assert_eq!(huffman.code(usize::from(b'0')), (0x0, 5));
        assert_eq!(huffman.code(usize::from(b'a')), (0x3, 5));
        assert_eq!(huffman.code(usize::from(b' ')), (0x14, 6));
        assert_eq!(huffman.code(usize::from(b'A')), (0x21, 6));
        assert_eq!(huffman.code(usize::from(b'z')), (0x7b, 7));
        assert_eq!(huffman.code(0), (0x1ff8, 13));
        assert_eq!(huffman.code(255), (0x3ffffee, 26));
        assert_eq!(huffman.code(256), (0x3fff_ffff, 30));
        // RFC 7541 C.4.1: "www.example.com".
        assert_eq!(
            huffman_encode(b"www.example.com"),
            [
                0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff
            ]
        );
    }

    #[test]
    fn every_byte_value_survives_huffman_coding() {
        let all: Vec<u8> = (0..=255).collect();
        for input in [&all[..], b"", b"a", b"application/grpc", &[0xff; 50]] {
            let mut out = Vec::new();
            huffman()
                .decode(&huffman_encode(input), &mut out)
                .expect("decodes");
            assert_eq!(out, input);
        }
        let mut out = Vec::new();
        // Eight bits of padding, and padding that is not all ones, are refused.
        assert!(huffman().decode(&[0xff], &mut out).is_err());
        assert!(huffman().decode(&[0x00, 0x00], &mut out).is_err());
        // EOS itself is refused.
        assert!(
            huffman()
                .decode(&[0xff, 0xff, 0xff, 0xff], &mut out)
                .is_err()
        );
    }

    #[test]
    fn the_dynamic_table_evicts_the_oldest_and_follows_size_updates() {
        let mut decoder = Decoder::default();
        let mut block = BytesMut::new();
        // Two literals with incremental indexing (01 prefix, new name): 100 + 32 and
        // 3000 + 32 bytes of table.
        for (name, value) in [(&b"a"[..], vec![b'x'; 99]), (b"b", vec![b'y'; 2999])] {
            block.put_u8(0x40);
            put_string(&mut block, name);
            put_string(&mut block, &value);
        }
        decoder.decode(&block, |_, _| {}).expect("decodes");
        assert_eq!(decoder.table.len(), 2);
        // Index 62 is the newest entry, 63 the one before.
        let fields = |decoder: &mut Decoder, block: &[u8]| {
            let mut out = Vec::new();
            decoder
                .decode(block, |n, v| out.push((n.to_vec(), v.len())))
                .map(|()| out)
        };
        assert_eq!(
            fields(&mut decoder, &[0x80 | 62, 0x80 | 63]).expect("decodes"),
            vec![(b"b".to_vec(), 2999), (b"a".to_vec(), 99)]
        );
        // A third entry of 1000 bytes does not fit beside both: the oldest goes.
        let mut third = BytesMut::new();
        third.put_u8(0x40);
        put_string(&mut third, b"c");
        put_string(&mut third, &[b'z'; 967]);
        decoder.decode(&third, |_, _| {}).expect("decodes");
        assert_eq!(decoder.table.len(), 2);
        assert!(fields(&mut decoder, &[0x80 | 64]).is_err(), "evicted");
        // A size update to 0 empties the table; one above 4096 is refused; one after a
        // field is refused.
        assert!(fields(&mut decoder, &[0x20]).expect("decodes").is_empty());
        assert!(decoder.table.is_empty());
        assert!(fields(&mut decoder, &[0x3f, 0xe2, 0x1f]).is_err());
        assert!(fields(&mut Decoder::default(), &[0x82, 0x20]).is_err());
    }

    #[test]
    fn garbage_is_a_compression_error_not_a_panic() {
        let blocks: [&[u8]; 8] = [
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x40, 0x85],
            &[0xbf],
            &[0x80],
            &[0x0f],
            &[0x00, 0x01],
            &[0x00, 0x81, 0x00, 0x01, 0x61],
            // An integer of endless zero continuation bytes.
            &[
                0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
        ];
        for block in blocks {
            let error = Decoder::default()
                .decode(block, |_, _| {})
                .expect_err("refused");
            assert_eq!(error.reason, Reason::COMPRESSION_ERROR);
        }
    }
}
