//! The address book: how this node reaches servers that joined by address.
//!
//! # Why it exists
//! rkvd knows every server from `-servers`. raftd, hraftd and raft-demo grow a cluster
//! one server at a time by asking any member to add a server *at an address*, so the
//! addresses must travel with the cluster. They travel through the log: the leader
//! applies a `SetPeer` command (`rkv_kv::Command::SetPeer`: id, name, peer address,
//! client address, role) before it proposes the membership change that adds the server,
//! so every replica applies the address before it could need it (the change takes
//! effect when appended, after the record is applied on the leader, and a follower that
//! becomes leader applied the record with everything else it committed). The book is in
//! the state machine's snapshots, so a replica restored from one knows it too.
//!
//! This type is the driver's side: [`KvMachine`](crate::machine::KvMachine) hands it
//! every applied record and every restored book, and it tells the transport. It also
//! keeps a copy in the data directory (`peers`, the records as length-prefixed
//! `SetPeer` encodings, replaced atomically): a restarted node applies its log again
//! only after a leader tells it the commit index, and to hear from (and answer) that
//! leader it must already know where its peers are.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rkv_engine::TcpTransport;
use rkv_kv::{Command, PeerRecord};
use rkv_raft::NodeId;

/// The file in the data directory that keeps the book across restarts.
pub const PEERS_FILE: &str = "peers";

/// Every known server's record, mirrored into the transport and the data directory.
#[derive(Debug)]
pub struct PeerBook {
    transport: TcpTransport,
    file: Option<PathBuf>,
    records: Mutex<BTreeMap<u64, PeerRecord>>,
}

/// An address to dial: `:port` and an unspecified host mean this machine.
pub fn dialable(address: &str) -> Option<SocketAddr> {
    let full = if address.starts_with(':') {
        format!("127.0.0.1{address}")
    } else {
        address.to_string()
    };
    // IPv4 first: `localhost` may resolve to ::1 first while listeners bound from
    // `:port` are IPv4.
    let all: Vec<SocketAddr> = full.to_socket_addrs().ok()?.collect();
    let mut resolved = all
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| all.first())
        .copied()?;
    if resolved.ip().is_unspecified() {
        resolved.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Some(resolved)
}

impl PeerBook {
    /// A book that tells `transport`, loading (and later saving) the copy kept in
    /// `data_dir` if one is given. An unreadable copy is reported, not fatal: the log
    /// brings the records back.
    pub fn open(transport: TcpTransport, data_dir: Option<&Path>) -> PeerBook {
        let file = data_dir.map(|d| d.join(PEERS_FILE));
        let book = PeerBook {
            transport,
            file: file.clone(),
            records: Mutex::new(BTreeMap::new()),
        };
        if let Some(file) = file {
            match std::fs::read(&file) {
                Ok(bytes) => match decode_file(&bytes) {
                    Some(records) => book.merge_all(&records),
                    None => tracing::warn!(file = %file.display(), "unreadable peer book ignored"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "peer book unreadable")
                }
            }
        }
        book
    }

    /// Records (or with `None` forgets) server `node_id`, and tells the transport.
    pub fn learn(&self, node_id: u64, record: Option<&PeerRecord>) {
        let changed = match self.records.lock() {
            Ok(mut records) => match record {
                Some(record) => records.insert(node_id, record.clone()).as_ref() != Some(record),
                None => records.remove(&node_id).is_some(),
            },
            Err(_) => false,
        };
        if let Some(record) = record {
            self.tell_transport(node_id, record);
        }
        if changed {
            self.save();
        }
    }

    /// Adds every record of `records` (a snapshot was restored). Records the book has
    /// and `records` lacks are kept: they may come from entries after the snapshot that
    /// this node has not applied again yet, and a stale address does no harm (only an
    /// applied `SetPeer` without a record forgets one).
    pub fn merge_all(&self, records: &BTreeMap<u64, PeerRecord>) {
        let changed = match self.records.lock() {
            Ok(mut current) => {
                let mut changed = false;
                for (node_id, record) in records {
                    changed |= current.insert(*node_id, record.clone()).as_ref() != Some(record);
                }
                changed
            }
            Err(_) => false,
        };
        for (node_id, record) in records {
            self.tell_transport(*node_id, record);
        }
        if changed {
            self.save();
        }
    }

    /// Tells the transport to reach server `node_id` at `record`'s peer address now,
    /// without recording it (the record comes when its `SetPeer` applies). A leader
    /// does this for a member that moved: the entry recording the move may need that
    /// member's acknowledgement to commit.
    pub fn dial(&self, node_id: u64, record: &PeerRecord) {
        self.tell_transport(node_id, record);
    }

    /// Server `node_id`'s record, if known.
    pub fn get(&self, node_id: NodeId) -> Option<PeerRecord> {
        self.records.lock().ok()?.get(&node_id.0).cloned()
    }

    /// Every record, by id.
    pub fn all(&self) -> BTreeMap<u64, PeerRecord> {
        self.records
            .lock()
            .map(|records| records.clone())
            .unwrap_or_default()
    }

    fn tell_transport(&self, node_id: u64, record: &PeerRecord) {
        let address = record.peer_address.clone();
        // Literal addresses resolve at once; host names on a blocking thread, off the
        // node task that applies entries.
        if let Ok(literal) = address.parse::<SocketAddr>() {
            self.transport.set_address(NodeId(node_id), literal);
            return;
        }
        if address.starts_with(':') {
            if let Some(local) = dialable(&address) {
                self.transport.set_address(NodeId(node_id), local);
            }
            return;
        }
        let transport = self.transport.clone();
        let resolve = move || match dialable(&address) {
            Some(resolved) => transport.set_address(NodeId(node_id), resolved),
            None => tracing::warn!(node = node_id, %address, "cannot resolve a peer's address"),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(tokio::task::spawn_blocking(resolve));
        } else {
            resolve();
        }
    }

    fn save(&self) {
        let Some(file) = &self.file else { return };
        let bytes = encode_file(&self.all());
        let temporary = file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut out = std::fs::File::create(&temporary)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            std::fs::rename(&temporary, file)?;
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the peer book");
        }
    }
}

/// The file: for each record, a `u32` little-endian length and a `SetPeer` encoding.
fn encode_file(records: &BTreeMap<u64, PeerRecord>) -> Vec<u8> {
    let mut out = Vec::new();
    for (node_id, record) in records {
        let command = Command::SetPeer {
            now_ms: 0,
            node_id: *node_id,
            record: Some(record.clone()),
        }
        .encode();
        out.extend_from_slice(&(command.len() as u32).to_le_bytes());
        out.extend_from_slice(&command);
    }
    out
}

fn decode_file(mut bytes: &[u8]) -> Option<BTreeMap<u64, PeerRecord>> {
    let mut records = BTreeMap::new();
    while !bytes.is_empty() {
        let (length, rest) = bytes.split_at_checked(4)?;
        let length = usize::try_from(u32::from_le_bytes(length.try_into().ok()?)).ok()?;
        let (command, rest) = rest.split_at_checked(length)?;
        match Command::decode(command).ok()? {
            Command::SetPeer {
                node_id,
                record: Some(record),
                ..
            } => {
                records.insert(node_id, record);
            }
            _ => return None,
        }
        bytes = rest;
    }
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkv_kv::PeerRole;

    fn record(name: &str) -> PeerRecord {
        PeerRecord {
            name: name.into(),
            peer_address: "127.0.0.1:12001".into(),
            client_address: "127.0.0.1:11001".into(),
            role: PeerRole::Voter,
            incarnation: 7,
        }
    }

    #[test]
    fn the_book_survives_a_restart_in_its_data_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let transport = TcpTransport::new(NodeId(1), 7, BTreeMap::new());
        let book = PeerBook::open(transport.clone(), Some(dir.path()));
        book.learn(2, Some(&record("node1")));
        book.learn(3, Some(&record("node2")));
        book.learn(3, None);
        let reopened = PeerBook::open(transport, Some(dir.path()));
        assert_eq!(reopened.all(), book.all());
        assert_eq!(reopened.get(NodeId(2)), Some(record("node1")));
        assert_eq!(reopened.get(NodeId(3)), None);
    }

    #[test]
    fn a_corrupt_file_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(PEERS_FILE), b"\x05\x00\x00\x00xx").expect("write");
        let transport = TcpTransport::new(NodeId(1), 7, BTreeMap::new());
        assert!(PeerBook::open(transport, Some(dir.path())).all().is_empty());
        assert_eq!(
            decode_file(&encode_file(&BTreeMap::new())),
            Some(BTreeMap::new())
        );
    }

    #[test]
    fn dialable_addresses() {
        assert_eq!(dialable(":4001"), "127.0.0.1:4001".parse().ok());
        assert_eq!(dialable("0.0.0.0:4001"), "127.0.0.1:4001".parse().ok());
        assert!(dialable("not an address").is_none());
    }
}
