//! The client protobufs, byte for byte: field numbers, types and enum values cannot drift
//! from the original Go rkv (rkvpb, commonpb) or from rkv.v1 as published.

use bytes::Bytes;
use prost::Message;
use rkv_wire::commonpb::{ReconfRequest, ReconfResponse, ReconfStatus, ReconfType};
use rkv_wire::rkvpb::{
    InsertRequest, InsertResponse, LookupRequest, LookupResponse, RegisterRequest, RegisterResponse,
};
use rkv_wire::v1;

fn encoded(message: &impl Message) -> Vec<u8> {
    message.encode_to_vec()
}

#[test]
fn rkvpb_insert_request_bytes() {
    let request = InsertRequest {
        client_id: 1,
        client_seq: 300,
        key: "k".into(),
        value: "v".into(),
    };
    // clientID = 1 (varint), clientSeq = 2 (varint), key = 3 (string), value = 4 (string).
    let bytes = [
        0x08, 0x01, 0x10, 0xac, 0x02, 0x1a, 0x01, b'k', 0x22, 0x01, b'v',
    ];
    assert_eq!(encoded(&request), bytes);
    assert_eq!(InsertRequest::decode(&bytes[..]).unwrap(), request);
}

#[test]
fn rkvpb_other_messages_bytes() {
    assert!(encoded(&RegisterRequest {}).is_empty());
    assert_eq!(
        encoded(&RegisterResponse { client_id: 300 }),
        [0x08, 0xac, 0x02]
    );
    assert_eq!(encoded(&InsertResponse { ok: true }), [0x08, 0x01]);
    assert_eq!(
        encoded(&LookupRequest { key: "ab".into() }),
        [0x0a, 0x02, b'a', b'b']
    );
    assert_eq!(
        encoded(&LookupResponse {
            value: "(none)".into()
        }),
        [0x0a, 0x06, b'(', b'n', b'o', b'n', b'e', b')']
    );
}

#[test]
fn commonpb_reconf_bytes_and_enum_values() {
    assert_eq!(ReconfType::ReconfAdd as i32, 0);
    assert_eq!(ReconfType::ReconfRemove as i32, 1);
    assert_eq!(ReconfStatus::ReconfOk as i32, 0);
    assert_eq!(ReconfStatus::ReconfTimeout as i32, 1);
    assert_eq!(ReconfStatus::ReconfNotLeader as i32, 2);
    // The names as the Go side spells them (used in text formats and reflection).
    assert_eq!(ReconfType::ReconfRemove.as_str_name(), "ReconfRemove");
    assert_eq!(ReconfStatus::ReconfOk.as_str_name(), "ReconfOK");

    let request = ReconfRequest {
        server_id: 4,
        reconf_type: ReconfType::ReconfRemove.into(),
    };
    // serverID = 1 (varint), reconfType = 2 (enum).
    assert_eq!(encoded(&request), [0x08, 0x04, 0x10, 0x01]);
    let response = ReconfResponse {
        status: ReconfStatus::ReconfNotLeader.into(),
        leader_hint: ":9202".into(),
    };
    // status = 1 (enum), leaderHint = 2 (string).
    assert_eq!(
        encoded(&response),
        [0x08, 0x02, 0x12, 0x05, b':', b'9', b'2', b'0', b'2']
    );
    assert_eq!(
        ReconfResponse::decode(&encoded(&response)[..]).unwrap(),
        response
    );
}

#[test]
fn grpc_service_names_match_the_original() {
    assert_eq!(rkv_wire::rkvpb::rkv_server::SERVICE_NAME, "rkvpb.RKV");
    assert_eq!(v1::kv_server::SERVICE_NAME, "rkv.v1.Kv");
}

#[test]
fn v1_put_with_session_bytes() {
    let request = v1::PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        session: Some(v1::Session {
            client_id: 7,
            seq: 1,
        }),
    };
    // key = 1, value = 2, session = 3 { client_id = 1, seq = 2 }.
    assert_eq!(
        encoded(&request),
        [
            0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x1a, 0x04, 0x08, 0x07, 0x10, 0x01
        ]
    );
}

#[test]
fn v1_enums_and_defaults() {
    assert_eq!(v1::Consistency::default(), v1::Consistency::Linearizable);
    assert_eq!(v1::Consistency::Linearizable as i32, 0);
    assert_eq!(v1::Consistency::Lease as i32, 1);
    assert_eq!(v1::Consistency::Stale as i32, 2);
    assert_eq!(v1::EventKind::Put as i32, 0);
    assert_eq!(v1::EventKind::Delete as i32, 1);
    assert_eq!(v1::Role::Follower as i32, 0);
    assert_eq!(v1::Role::Leader as i32, 3);
    // A Get without a consistency field reads linearizably.
    let get = v1::GetRequest::decode(&[0x0a, 0x01, b'k'][..]).unwrap();
    assert_eq!(get.consistency(), v1::Consistency::Linearizable);
}

#[test]
fn v1_optional_values_keep_absent_apart_from_empty() {
    let absent = v1::GetResponse {
        header: None,
        value: None,
    };
    let empty = v1::GetResponse {
        header: None,
        value: Some(Bytes::new()),
    };
    assert!(encoded(&absent).is_empty());
    assert_eq!(encoded(&empty), [0x12, 0x00]);
    assert_eq!(v1::GetResponse::decode(&[0x12, 0x00][..]).unwrap(), empty);

    let create_if_absent = v1::CompareAndSwapRequest {
        key: Bytes::from_static(b"k"),
        expected: None,
        new: Some(Bytes::from_static(b"v")),
        session: None,
    };
    assert_eq!(
        encoded(&create_if_absent),
        [0x0a, 0x01, b'k', 0x1a, 0x01, b'v']
    );
}

#[test]
fn v1_scan_and_watch_selectors() {
    let scan = v1::ScanRequest {
        selector: Some(v1::scan_request::Selector::Range(v1::KeyRange {
            start: Bytes::from_static(b"a"),
            end: Bytes::from_static(b"b"),
        })),
        limit: 10,
        consistency: v1::Consistency::Stale.into(),
    };
    assert_eq!(
        encoded(&scan),
        [
            0x12, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x18, 0x0a, 0x20, 0x02
        ]
    );
    let watch = v1::WatchRequest {
        filter: Some(v1::watch_request::Filter::Prefix(Bytes::from_static(b"p"))),
        start_index: 5,
    };
    assert_eq!(encoded(&watch), [0x12, 0x01, b'p', 0x18, 0x05]);
}

#[test]
fn v1_error_keys_are_valid_grpc_metadata_keys() {
    use v1::errors::*;
    for key in [
        ERROR_KEY,
        LEADER_ID_KEY,
        LEADER_ADDR_KEY,
        RETRY_AFTER_MS_KEY,
        LIMIT_BYTES_KEY,
        OLDEST_INDEX_KEY,
    ] {
        let parsed: tonic::metadata::MetadataKey<tonic::metadata::Ascii> = key.parse().unwrap();
        assert_eq!(parsed.as_str(), key);
    }
}
