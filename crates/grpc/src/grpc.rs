//! The gRPC layer over HTTP/2 ("gRPC over HTTP2", grpc/grpc doc/PROTOCOL-HTTP2.md):
//! the 5-byte message prefix, `grpc-timeout`, and statuses as header blocks.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tonic::{Code, Status};

use crate::hpack;

/// Length of the prefix before every message: a compression flag and a big-endian
/// 32-bit length.
pub const PREFIX_BYTES: usize = 5;

/// The content type of gRPC with protobuf messages.
pub const CONTENT_TYPE: &[u8] = b"application/grpc";

/// Encodes `message` behind its gRPC prefix, refusing one larger than `max_bytes` as
/// tonic does (OUT_OF_RANGE: the message exists but may not be sent).
pub fn encode_message(message: &impl prost::Message, max_bytes: usize) -> Result<Bytes, Status> {
    let length = message.encoded_len();
    if length > max_bytes {
        return Err(Status::out_of_range(format!(
            "the encoded message is {length} bytes; the limit is {max_bytes}"
        )));
    }
    let prefixed = u32::try_from(length)
        .map_err(|_| Status::out_of_range(format!("a message of {length} bytes")))?;
    let mut out = BytesMut::with_capacity(PREFIX_BYTES + length);
    out.put_u8(0);
    out.put_u32(prefixed);
    message
        .encode(&mut out)
        .map_err(|e| Status::internal(format!("encoding the message: {e}")))?;
    Ok(out.freeze())
}

/// Reads the one message of a unary body (prefix included), with the compression flag
/// refused: rkv never asks for compression (it does not send `grpc-accept-encoding`).
pub fn unary_message(mut body: Bytes) -> Result<Bytes, Status> {
    if body.len() < PREFIX_BYTES {
        return Err(Status::internal(if body.is_empty() {
            "the request has no message".to_string()
        } else {
            format!(
                "the request ends inside a message prefix ({} bytes)",
                body.len()
            )
        }));
    }
    if body[0] != 0 {
        return Err(Status::unimplemented(
            "compressed messages are not supported (grpc-accept-encoding: identity)",
        ));
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let rest = body.len() - PREFIX_BYTES;
    if length != rest {
        return Err(Status::internal(if length > rest {
            format!("the request message is cut short: {rest} of {length} bytes")
        } else {
            "a unary call carries more than one request message".to_string()
        }));
    }
    Ok(body.split_off(PREFIX_BYTES))
}

/// The length a message prefix at the start of `body` declares, once 5 bytes are there.
pub fn declared_length(body: &[u8]) -> Option<usize> {
    (body.len() >= PREFIX_BYTES)
        .then(|| u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize)
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The response headers of a call that sends messages: `:status: 200` and the content
/// type.
pub fn response_headers() -> Bytes {
    let mut out = BytesMut::new();
    hpack::put_indexed(&mut out, hpack::index::STATUS_200);
    hpack::put_literal_indexed_name(&mut out, hpack::index::CONTENT_TYPE, CONTENT_TYPE);
    out.freeze()
}

/// The trailers of a call that succeeded.
pub fn ok_trailers() -> Bytes {
    let mut out = BytesMut::new();
    hpack::put_literal(&mut out, b"grpc-status", b"0");
    out.freeze()
}

/// The header block that ends a call with `status`: trailers after the response
/// headers, or (`trailers_only`) the whole response of a call that sends no message.
/// The status's message is percent-encoded and its metadata included, by tonic's own
/// rules.
pub fn status_block(status: &Status, trailers_only: bool) -> Bytes {
    let mut out = BytesMut::new();
    if trailers_only {
        hpack::put_indexed(&mut out, hpack::index::STATUS_200);
        hpack::put_literal_indexed_name(&mut out, hpack::index::CONTENT_TYPE, CONTENT_TYPE);
    }
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        // Metadata tonic cannot turn into headers: send the code and message alone.
        headers.clear();
        let plain = Status::new(status.code(), status.message());
        let _ = plain.add_header(&mut headers);
    }
    for (name, value) in &headers {
        hpack::put_literal(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.freeze()
}

/// An HTTP response that is not gRPC at all (wrong method or content type): the
/// `:status` and, so that gRPC clients say something useful, a gRPC status.
pub fn http_error_block(http_status: u16, code: Code, message: &str) -> Bytes {
    let mut out = BytesMut::new();
    hpack::put_literal_indexed_name(
        &mut out,
        hpack::index::STATUS_200,
        http_status.to_string().as_bytes(),
    );
    let mut headers = http::HeaderMap::new();
    let _ = Status::new(code, message).add_header(&mut headers);
    for (name, value) in &headers {
        hpack::put_literal(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit_and_refuse_garbage() {
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
        for bad in [&b""[..], b"S", b"5", b"5s", b"123456789S", b"-5S", b"5 S"] {
            assert_eq!(
                parse_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_unary_body_holds_exactly_one_uncompressed_message() {
        let ok = Bytes::from_static(&[0, 0, 0, 0, 2, 7, 8]);
        assert_eq!(&unary_message(ok).expect("valid")[..], &[7, 8]);
        let empty_message = Bytes::from_static(&[0, 0, 0, 0, 0]);
        assert!(unary_message(empty_message).expect("valid").is_empty());
        let cases: [(&'static [u8], Code); 5] = [
            (&[], Code::Internal),
            (&[0, 0, 0], Code::Internal),
            (&[0, 0, 0, 0, 3, 1], Code::Internal),
            (&[0, 0, 0, 0, 1, 1, 2], Code::Internal),
            (&[1, 0, 0, 0, 1, 1], Code::Unimplemented),
        ];
        for (body, code) in cases {
            let refused = unary_message(Bytes::from_static(body)).expect_err("refused");
            assert_eq!(refused.code(), code, "{body:?}");
        }
    }

    #[test]
    fn messages_over_the_limit_are_not_encoded() {
        let message = "x".repeat(100);
        let encoded = encode_message(&message, 1000).expect("fits");
        assert_eq!(
            declared_length(&encoded),
            Some(encoded.len() - PREFIX_BYTES)
        );
        let refused = encode_message(&message, 50).expect_err("too large");
        assert_eq!(refused.code(), Code::OutOfRange);
    }

    #[test]
    fn statuses_become_headers_a_client_reads_back() {
        let mut status = Status::unavailable("not the leader: 50% sure");
        status
            .metadata_mut()
            .insert("rkv-leader-id", "2".parse().expect("ascii"));
        let block = status_block(&status, true);
        let mut headers = http::HeaderMap::new();
        crate::hpack::Decoder::default()
            .decode(&block, |name, value| {
                if !name.starts_with(b":") {
                    headers.insert(
                        http::HeaderName::from_bytes(name).expect("name"),
                        http::HeaderValue::from_bytes(value).expect("value"),
                    );
                }
            })
            .expect("decodes");
        let back = Status::from_header_map(&headers).expect("a status");
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(back.message(), "not the leader: 50% sure");
        assert_eq!(
            headers.get("rkv-leader-id").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
    }
}
