//! The simulated clusters' state machine: a tiny key-value map with client sessions
//! (exactly-once writes by client id and sequence number), enough to make every client
//! operation checkable for linearizability.

use std::collections::BTreeMap;

/// A write a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Set the key.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Remove the key.
    Delete {
        /// The key.
        key: String,
    },
    /// Set the key to `new` if it currently holds `expected`.
    Cas {
        /// The key.
        key: String,
        /// The value it must hold (`None`: absent).
        expected: Option<String>,
        /// The value to set.
        new: String,
    },
}

/// What a write returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteOutput {
    /// Put and Delete.
    Done,
    /// Compare-and-swap: whether it swapped.
    Swapped(bool),
}

/// A write wrapped with its session coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Who sent it.
    pub client: u64,
    /// The client's sequence number; retries reuse it.
    pub seq: u64,
    /// What to do.
    pub write: Write,
}

fn encode_opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

impl Command {
    /// A compact text encoding (keys and values have no spaces in the simulation).
    pub fn encode(&self) -> Vec<u8> {
        let body = match &self.write {
            Write::Put { key, value } => format!("put {key} {value}"),
            Write::Delete { key } => format!("del {key}"),
            Write::Cas { key, expected, new } => {
                format!("cas {key} {} {new}", encode_opt(expected))
            }
        };
        format!("{} {} {body}", self.client, self.seq).into_bytes()
    }

    /// Decodes [`Command::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Option<Command> {
        let text = std::str::from_utf8(bytes).ok()?;
        let parts: Vec<&str> = text.split(' ').collect();
        let client = parts.first()?.parse().ok()?;
        let seq = parts.get(1)?.parse().ok()?;
        let key = (*parts.get(3)?).to_string();
        let write = match *parts.get(2)? {
            "put" => Write::Put {
                key,
                value: (*parts.get(4)?).to_string(),
            },
            "del" => Write::Delete { key },
            "cas" => {
                let expected = match *parts.get(4)? {
                    "-" => None,
                    v => Some(v.to_string()),
                };
                Write::Cas {
                    key,
                    expected,
                    new: (*parts.get(5)?).to_string(),
                }
            }
            _ => return None,
        };
        Some(Command { client, seq, write })
    }
}

/// The state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Kv {
    map: BTreeMap<String, String>,
    /// Per client: the last applied sequence number and its output.
    sessions: BTreeMap<u64, (u64, WriteOutput)>,
}

impl Kv {
    /// Applies a command once; a repeat of the last sequence number returns the recorded
    /// output, an older one returns `None` (its client has moved on).
    pub fn apply(&mut self, command: &Command) -> Option<WriteOutput> {
        if let Some((seq, output)) = self.sessions.get(&command.client) {
            if command.seq == *seq {
                return Some(*output);
            }
            if command.seq < *seq {
                return None;
            }
        }
        let output = match &command.write {
            Write::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                WriteOutput::Done
            }
            Write::Delete { key } => {
                self.map.remove(key);
                WriteOutput::Done
            }
            Write::Cas { key, expected, new } => {
                let swapped = self.map.get(key) == expected.as_ref();
                if swapped {
                    self.map.insert(key.clone(), new.clone());
                }
                WriteOutput::Swapped(swapped)
            }
        };
        self.sessions.insert(command.client, (command.seq, output));
        Some(output)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.map.get(key).cloned()
    }

    /// Serialises the whole state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (k, v) in &self.map {
            out.push_str(&format!("k {k} {v}\n"));
        }
        for (client, (seq, output)) in &self.sessions {
            let o = match output {
                WriteOutput::Done => "d",
                WriteOutput::Swapped(true) => "t",
                WriteOutput::Swapped(false) => "f",
            };
            out.push_str(&format!("s {client} {seq} {o}\n"));
        }
        out.into_bytes()
    }

    /// Restores [`Kv::encode`]'s output; `None` if it is malformed.
    pub fn decode(bytes: &[u8]) -> Option<Kv> {
        let mut kv = Kv::default();
        for line in std::str::from_utf8(bytes).ok()?.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match *parts.first()? {
                "k" => {
                    kv.map
                        .insert((*parts.get(1)?).to_string(), (*parts.get(2)?).to_string());
                }
                "s" => {
                    let output = match *parts.get(3)? {
                        "d" => WriteOutput::Done,
                        "t" => WriteOutput::Swapped(true),
                        "f" => WriteOutput::Swapped(false),
                        _ => return None,
                    };
                    kv.sessions.insert(
                        parts.get(1)?.parse().ok()?,
                        (parts.get(2)?.parse().ok()?, output),
                    );
                }
                _ => return None,
            }
        }
        Some(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_state_round_trip() {
        let c = Command {
            client: 3,
            seq: 9,
            write: Write::Cas {
                key: "k1".into(),
                expected: None,
                new: "v".into(),
            },
        };
        assert_eq!(Command::decode(&c.encode()), Some(c.clone()));
        let mut kv = Kv::default();
        assert_eq!(kv.apply(&c), Some(WriteOutput::Swapped(true)));
        assert_eq!(
            kv.apply(&c),
            Some(WriteOutput::Swapped(true)),
            "a retry returns the recorded output"
        );
        assert_eq!(Kv::decode(&kv.encode()), Some(kv.clone()));
        assert_eq!(kv.get("k1").as_deref(), Some("v"));
    }

    #[test]
    fn exactly_once_per_sequence_number() {
        let mut kv = Kv::default();
        let put = |seq, value: &str| Command {
            client: 1,
            seq,
            write: Write::Put {
                key: "a".into(),
                value: value.into(),
            },
        };
        kv.apply(&put(2, "two"));
        assert_eq!(
            kv.apply(&put(1, "one")),
            None,
            "an older sequence number is not applied"
        );
        assert_eq!(kv.get("a").as_deref(), Some("two"));
    }
}
