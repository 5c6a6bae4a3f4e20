//! rkvd against a grpc-go client, the library relab's rkvctl was built on: Register,
//! 200 concurrent Inserts over one connection, Lookups, a 1 MiB value each way, a
//! follower's refusal and an unknown method, all through grpc-go's own HTTP/2 transport
//! (`tests/go_client/main.go`). rkvd's HTTP/2 is its own (`rkv-grpc`); this checks it
//! against the kind of client the original used, beside tonic's in the other tests.
//!
//! Needs Go and Debian's golang-google-grpc-dev, which `scripts/test` installs. Without
//! them the test says so and passes, except in CI (`CI` set), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Cluster;

/// Where Debian's Go packages keep their sources (a GOPATH).
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// Builds the Go client into `dir`; `None` if Go or grpc-go is not installed here.
fn build_go_client(dir: &Path) -> Option<PathBuf> {
    let grpc = Path::new(DEBIAN_GOPATH).join("src/google.golang.org/grpc");
    let go = Command::new("go").arg("version").output();
    if go.is_err() || !grpc.is_dir() {
        let why = "Go and golang-google-grpc-dev are not installed (scripts/test installs them)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping the grpc-go interop test: {why}");
        return None;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go_client/main.go");
    let binary = dir.join("go_client");
    // The build cache lives in target/, so that only the first run compiles grpc-go.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let output = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", DEBIAN_GOPATH)
        .env("GOCACHE", &cache)
        .env("GOFLAGS", "")
        .output()
        .expect("go build runs");
    assert!(
        output.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(binary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_go_client_registers_inserts_and_looks_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(client) = build_go_client(dir.path()) else {
        return;
    };
    let cluster = Cluster::start(3, 3);
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let address = |id: u64| {
        cluster.servers[usize::try_from(id - 1).expect("small")]
            .address
            .clone()
    };
    let output = tokio::task::spawn_blocking({
        let (leader, follower) = (address(leader), address(follower));
        move || {
            Command::new(&client)
                .args([&leader, &follower])
                .output()
                .expect("the Go client runs")
        }
    })
    .await
    .expect("no panic");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "the grpc-go client failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
