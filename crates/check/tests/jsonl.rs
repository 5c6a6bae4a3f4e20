//! The JSON-lines history file: round trips, the documented example, and errors that name
//! the offending line.

mod common;

use common::{Shape, linearizable_history, master_seed};
use rkv_check::{History, OpKind, Outcome, ReadError, Verdict, read_jsonl, write_jsonl};

#[test]
fn round_trip_preserves_every_field() {
    let shape = Shape {
        clients: 4,
        keys: 3,
        ops: 500,
        values: 3,
        latency_max: 10,
        failed_per_mille: 100,
        unknown_per_mille: 100,
    };
    let seed = master_seed();
    let ops = linearizable_history(seed, shape);
    let mut bytes = Vec::new();
    write_jsonl(&mut bytes, &ops).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(text.lines().count(), ops.len(), "seed {seed}");
    let read = read_jsonl(bytes.as_slice()).unwrap();
    assert_eq!(read, ops, "seed {seed}");
}

#[test]
fn the_documented_example_parses() {
    // Keep in sync with the crate docs.
    let text = r#"{"client":1,"key":"x","invoke":100,"complete":180,"outcome":"ok","kind":{"op":"put","value":"1"}}
{"client":2,"key":"x","invoke":150,"complete":260,"outcome":"ok","kind":{"op":"get","value":"1"}}
{"client":2,"key":"y","invoke":300,"complete":420,"outcome":"ok","kind":{"op":"get","value":null}}
{"client":3,"key":"x","invoke":310,"complete":900,"outcome":"unknown","kind":{"op":"delete"}}
{"client":1,"key":"x","invoke":400,"complete":470,"outcome":"ok","kind":{"op":"cas","expected":"1","new":"2","swapped":true}}
"#;
    let history = History::read_jsonl(text.as_bytes()).unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(history.keys(), vec!["x", "y"]);
    assert_eq!(history.ops[3].outcome, Outcome::Unknown);
    assert_eq!(history.ops[3].kind, OpKind::Delete);
    assert_eq!(
        history.ops[4].kind,
        OpKind::Cas {
            expected: Some("1".into()),
            new: "2".into(),
            swapped: true
        }
    );
    assert_eq!(history.check(), Verdict::Linearizable);
    // Writing produces the same lines.
    let mut written = Vec::new();
    history.write_jsonl(&mut written).unwrap();
    assert_eq!(String::from_utf8(written).unwrap(), text);
}

#[test]
fn absent_value_may_be_omitted() {
    let line =
        r#"{"client":1,"key":"x","invoke":1,"complete":2,"outcome":"ok","kind":{"op":"get"}}"#;
    let ops = read_jsonl(line.as_bytes()).unwrap();
    assert_eq!(ops[0].kind, OpKind::Get { value: None });
}

#[test]
fn empty_input_and_blank_lines_are_fine() {
    assert_eq!(read_jsonl(&b""[..]).unwrap(), vec![]);
    let text = "\n{\"client\":1,\"key\":\"x\",\"invoke\":1,\"complete\":2,\"outcome\":\"failed\",\"kind\":{\"op\":\"delete\"}}\n   \n";
    assert_eq!(read_jsonl(text.as_bytes()).unwrap().len(), 1);
}

const GOOD: &str =
    r#"{"client":1,"key":"x","invoke":1,"complete":2,"outcome":"ok","kind":{"op":"delete"}}"#;

fn error_for(bad_line: &str) -> ReadError {
    // Line 1 good, line 2 blank, line 3 bad, line 4 good.
    let text = format!("{GOOD}\n\n{bad_line}\n{GOOD}\n");
    read_jsonl(text.as_bytes()).unwrap_err()
}

#[test]
fn malformed_json_names_its_line() {
    let error = error_for(r#"{"client":1,"key":"x","#);
    assert!(
        matches!(error, ReadError::Malformed { line: 3, .. }),
        "{error}"
    );
    assert_eq!(error.line(), 3);
    assert!(error.to_string().starts_with("line 3: "), "{error}");
}

#[test]
fn unknown_op_and_missing_field_name_their_line() {
    let unknown_op = error_for(
        r#"{"client":1,"key":"x","invoke":1,"complete":2,"outcome":"ok","kind":{"op":"scan"}}"#,
    );
    assert!(
        matches!(unknown_op, ReadError::Malformed { line: 3, .. }),
        "{unknown_op}"
    );
    let missing_outcome =
        error_for(r#"{"client":1,"key":"x","invoke":1,"complete":2,"kind":{"op":"delete"}}"#);
    assert!(
        missing_outcome.to_string().contains("outcome"),
        "{missing_outcome}"
    );
    assert_eq!(missing_outcome.line(), 3);
    let negative_time = error_for(
        r#"{"client":1,"key":"x","invoke":-1,"complete":2,"outcome":"ok","kind":{"op":"delete"}}"#,
    );
    assert_eq!(negative_time.line(), 3, "{negative_time}");
}

#[test]
fn impossible_operation_names_its_line() {
    let error = error_for(
        r#"{"client":1,"key":"x","invoke":9,"complete":2,"outcome":"ok","kind":{"op":"delete"}}"#,
    );
    assert!(
        matches!(error, ReadError::Invalid { line: 3, .. }),
        "{error}"
    );
}

#[test]
fn invalid_utf8_names_its_line() {
    let mut bytes = format!("{GOOD}\n").into_bytes();
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    let error = read_jsonl(bytes.as_slice()).unwrap_err();
    assert!(matches!(error, ReadError::Io { line: 2, .. }), "{error}");
}
