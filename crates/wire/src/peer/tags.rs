//! The kind and tag bytes of `PEER.md`, in one place.

/// Frame kind: HELLO.
pub(crate) const FRAME_HELLO: u8 = 0x01;
/// Frame kind: MESSAGES.
pub(crate) const FRAME_MESSAGES: u8 = 0x02;
/// Frame kind: REJECT.
pub(crate) const FRAME_REJECT: u8 = 0x03;

pub(crate) const PRE_VOTE: u8 = 1;
pub(crate) const PRE_VOTE_RESPONSE: u8 = 2;
pub(crate) const VOTE: u8 = 3;
pub(crate) const VOTE_RESPONSE: u8 = 4;
pub(crate) const APPEND: u8 = 5;
pub(crate) const APPEND_RESPONSE: u8 = 6;
pub(crate) const HEARTBEAT: u8 = 7;
pub(crate) const HEARTBEAT_RESPONSE: u8 = 8;
pub(crate) const INSTALL_SNAPSHOT: u8 = 9;
pub(crate) const INSTALL_SNAPSHOT_RESPONSE: u8 = 10;
pub(crate) const TIMEOUT_NOW: u8 = 11;
pub(crate) const READ_INDEX: u8 = 12;
pub(crate) const READ_INDEX_RESPONSE: u8 = 13;

pub(crate) const APPEND_SUCCESS: u8 = 0;
pub(crate) const APPEND_REJECT: u8 = 1;

pub(crate) const SNAPSHOT_NEXT: u8 = 0;
pub(crate) const SNAPSHOT_DONE: u8 = 1;

pub(crate) const PAYLOAD_NOOP: u8 = 0;
pub(crate) const PAYLOAD_COMMAND: u8 = 1;
pub(crate) const PAYLOAD_MEMBERSHIP: u8 = 2;
