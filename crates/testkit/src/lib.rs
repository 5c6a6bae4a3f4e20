//! Support for rkv's black-box tests (a dev-dependency only): loopback ports for the
//! servers a test starts.
//!
//! Why not the kernel's `bind(0)`: it hands out a port from the ephemeral range (32768
//! and up on Linux), and between the test releasing it and the server binding it, any
//! outgoing connection on the machine may be given that very port. Worse, a client that
//! dials a port nobody listens on can, on loopback, connect to itself (TCP simultaneous
//! open) and then fail with a broken pipe. Ports here come from below that range, from a
//! per-process cursor that starts at a random place, so tests in parallel processes
//! rarely meet and one process never hands out a port twice.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const FIRST_PORT: u32 = 20_000;
/// How many ports there are to hand out.
const PORTS: u32 = 11_000;
/// The largest `offset` allowed: the partner port stays below the ephemeral range.
pub const OFFSET_MAX: u16 = 1_700;

fn cursor() -> &'static AtomicU32 {
    static CURSOR: OnceLock<AtomicU32> = OnceLock::new();
    CURSOR.get_or_init(|| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        AtomicU32::new((hasher.finish() % u64::from(PORTS)) as u32)
    })
}

/// `count` distinct free loopback ports below the ephemeral range, each with
/// `port + offset` free too (offset 0: no condition; at most [`OFFSET_MAX`]).
///
/// # Panics
/// If `offset` is above [`OFFSET_MAX`] or the whole range is taken.
pub fn free_ports(count: usize, offset: u16) -> Vec<u16> {
    assert!(offset <= OFFSET_MAX, "offset {offset} above {OFFSET_MAX}");
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(count);
    for _ in 0..PORTS {
        if ports.len() == count {
            break;
        }
        let step = cursor().fetch_add(1, Ordering::Relaxed);
        let port = (FIRST_PORT + step % PORTS) as u16;
        if ports.contains(&port) || (offset > 0 && ports.contains(&(port + offset))) {
            continue;
        }
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if offset > 0 {
            match TcpListener::bind(("127.0.0.1", port + offset)) {
                Ok(partner) => held.push(partner),
                Err(_) => continue,
            }
        }
        held.push(listener);
        ports.push(port);
    }
    assert_eq!(ports.len(), count, "not enough free loopback ports");
    ports
}

/// One free loopback port below the ephemeral range whose `port + offset` is free too.
pub fn free_port(offset: u16) -> u16 {
    free_ports(1, offset)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = free_ports(20, 1000);
        for (i, port) in ports.iter().enumerate() {
            assert!((20_000..31_000).contains(port), "{port}");
            assert!(!ports[i + 1..].contains(port), "{port} twice");
            TcpListener::bind(("127.0.0.1", *port)).expect("free");
            TcpListener::bind(("127.0.0.1", *port + 1000)).expect("partner free");
        }
        // A port someone holds is skipped: hold the one the cursor points at next.
        let next = (FIRST_PORT + cursor().load(Ordering::Relaxed) % PORTS) as u16;
        let held = TcpListener::bind(("127.0.0.1", next));
        let port = free_port(0);
        if held.is_ok() {
            assert_ne!(port, next, "a held port was handed out");
        }
    }
}
