//! The data directory's identity: which cluster and which node it belongs to.
//!
//! A directory is bound to one (cluster, node) at its first start. Starting it again as
//! another node, or with a server list that makes another cluster, is refused with a
//! message that says what differs: reusing a directory by mistake must never mix two
//! nodes' logs. Nothing is ever deleted unless `-wipe` asks for it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file holding the identity, inside the data directory.
pub const IDENTITY_FILE: &str = "identity";

/// Who a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster (derived from the founding flags; see [`cluster_id`]).
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: u64,
}

/// Why a data directory cannot be used.
#[derive(Debug)]
pub enum IdentityError {
    /// Reading or writing it failed.
    Io(PathBuf, std::io::Error),
    /// The identity file is unreadable.
    Corrupt(PathBuf, String),
    /// It belongs to another cluster or node.
    Mismatch {
        /// The directory.
        dir: PathBuf,
        /// What it holds.
        stored: Identity,
        /// What the flags ask for.
        wanted: Identity,
    },
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            IdentityError::Corrupt(path, why) => write!(
                f,
                "{}: unreadable identity ({why}); if this directory is not needed, start with -wipe",
                path.display()
            ),
            IdentityError::Mismatch {
                dir,
                stored,
                wanted,
            } => write!(
                f,
                "data directory {} belongs to node {} of cluster {:016x}, but the flags make this \
                 node {} of cluster {:016x}; use the right -data-dir, the original -servers/-cluster \
                 flags, or -wipe to discard it",
                dir.display(),
                stored.node_id,
                stored.cluster_id,
                wanted.node_id,
                wanted.cluster_id
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

/// A cluster id every founding member derives alike from the same flags: a hash of the
/// server list and the founding ids, so that nodes started with different lists refuse
/// to talk to each other.
pub fn cluster_id(servers: &[String], founders: &[u64]) -> u64 {
    // FNV-1a: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for server in servers {
        feed(server.as_bytes());
        feed(b",");
    }
    feed(b"|");
    for id in founders {
        feed(&id.to_le_bytes());
    }
    hash
}

/// Binds `dir` to `wanted` on first use, or checks that it is bound to it.
pub fn check_or_create(dir: &Path, wanted: &Identity) -> Result<(), IdentityError> {
    fs::create_dir_all(dir).map_err(|e| IdentityError::Io(dir.to_path_buf(), e))?;
    let path = dir.join(IDENTITY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let stored = parse(&text).map_err(|why| IdentityError::Corrupt(path.clone(), why))?;
            if stored != *wanted {
                return Err(IdentityError::Mismatch {
                    dir: dir.to_path_buf(),
                    stored,
                    wanted: wanted.clone(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!(
                "cluster_id={:016x}\nnode_id={}\n",
                wanted.cluster_id, wanted.node_id
            );
            let temporary = dir.join(format!("{IDENTITY_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut file = fs::File::create(&temporary)?;
                file.write_all(text.as_bytes())?;
                file.sync_all()?;
                fs::rename(&temporary, &path)?;
                fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| IdentityError::Io(path.clone(), e))
        }
        Err(e) => Err(IdentityError::Io(path, e)),
    }
}

/// The identity `dir` is bound to, if it is bound yet (`None`: a fresh directory).
pub fn read(dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|why| IdentityError::Corrupt(path, why)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdentityError::Io(path, e)),
    }
}

fn parse(text: &str) -> Result<Identity, String> {
    let mut cluster_id = None;
    let mut node_id = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("cluster_id", v)) => cluster_id = u64::from_str_radix(v.trim(), 16).ok(),
            Some(("node_id", v)) => node_id = v.trim().parse().ok(),
            _ => {}
        }
    }
    match (cluster_id, node_id) {
        (Some(cluster_id), Some(node_id)) => Ok(Identity {
            cluster_id,
            node_id,
        }),
        _ => Err("missing cluster_id or node_id".to_string()),
    }
}

/// Deletes everything in `dir` (the explicit `-wipe`).
pub fn wipe(dir: &Path) -> Result<(), IdentityError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IdentityError::Io(dir.to_path_buf(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_bound_to_one_node_of_one_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let me = Identity {
            cluster_id: 7,
            node_id: 1,
        };
        check_or_create(dir.path(), &me).expect("first start binds");
        check_or_create(dir.path(), &me).expect("restart matches");
        let other_node = Identity {
            cluster_id: 7,
            node_id: 2,
        };
        let e = check_or_create(dir.path(), &other_node).expect_err("another node is refused");
        assert!(e.to_string().contains("belongs to node 1"), "{e}");
        let other_cluster = Identity {
            cluster_id: 8,
            node_id: 1,
        };
        assert!(check_or_create(dir.path(), &other_cluster).is_err());
        wipe(dir.path()).expect("wipe");
        check_or_create(dir.path(), &other_cluster).expect("a wiped directory binds anew");
    }

    #[test]
    fn cluster_ids_depend_on_servers_and_founders() {
        let servers: Vec<String> = [":9201", ":9202", ":9203"].map(String::from).to_vec();
        let a = cluster_id(&servers, &[1, 2, 3]);
        assert_eq!(a, cluster_id(&servers, &[1, 2, 3]));
        assert_ne!(a, cluster_id(&servers, &[1, 2]));
        assert_ne!(a, cluster_id(&servers[..2], &[1, 2, 3]));
    }

    #[test]
    fn a_corrupt_identity_file_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join(IDENTITY_FILE), "garbage").expect("write");
        let e = check_or_create(
            dir.path(),
            &Identity {
                cluster_id: 1,
                node_id: 1,
            },
        )
        .expect_err("corrupt");
        assert!(e.to_string().contains("unreadable identity"), "{e}");
    }
}
