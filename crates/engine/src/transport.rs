//! How messages reach peers. The engine only needs "send this, best effort": Raft
//! tolerates loss, duplication and reordering, so a transport may drop when a peer is
//! unreachable or its backlog is full (and should count it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rkv_raft::{Message, NodeId};
use tokio::sync::mpsc;

/// Delivers messages to peers, best effort, without blocking.
pub trait Transport: Send + 'static {
    /// Hands a message over for delivery to `message.to`. A transport may hold it until
    /// the next [`Transport::flush`].
    fn send(&mut self, message: Message);

    /// Sends what [`Transport::send`] has collected. The node calls it at the end of
    /// every turn (and before applying entries), so that a transport can put a turn's
    /// messages to a peer into one write.
    fn flush(&mut self);
}

/// Where inbound messages for one node go: its engine's mailbox.
pub type PeerInbox = mpsc::Sender<Vec<Message>>;

/// An in-process network for tests and demos: every node registers its inbox, and a
/// message goes straight into the recipient's inbox (dropped if it is full or gone).
#[derive(Clone, Debug, Default)]
pub struct LocalNetwork {
    inboxes: Arc<Mutex<BTreeMap<NodeId, PeerInbox>>>,
}

impl LocalNetwork {
    /// An empty network.
    pub fn new() -> LocalNetwork {
        LocalNetwork::default()
    }

    /// Connects (or reconnects) `node`'s inbox.
    pub fn register(&self, node: NodeId, inbox: PeerInbox) {
        if let Ok(mut inboxes) = self.inboxes.lock() {
            inboxes.insert(node, inbox);
        }
    }

    /// Disconnects `node`: messages to it are dropped.
    pub fn unregister(&self, node: NodeId) {
        if let Ok(mut inboxes) = self.inboxes.lock() {
            inboxes.remove(&node);
        }
    }
}

impl Transport for LocalNetwork {
    fn send(&mut self, message: Message) {
        let inbox = self
            .inboxes
            .lock()
            .ok()
            .and_then(|i| i.get(&message.to).cloned());
        if let Some(inbox) = inbox {
            // Best effort: a full inbox drops the message, as a congested network would.
            let _ = inbox.try_send(vec![message]);
        }
    }

    /// Nothing to do: [`Transport::send`] delivers at once.
    fn flush(&mut self) {}
}
