//! `-cpuprofile FILE` and `-memprofile FILE`, as raft-demo's kvstore had them (Go's
//! runtime/pprof). Both are written when the process is asked to stop (SIGINT or
//! SIGTERM), as Go programs write theirs at exit.
//!
//! - CPU: sampled at 99 Hz by the `pprof` crate, written as a flame graph (SVG), which
//!   a browser shows directly. (The protobuf output needs a protoc-generated codec that
//!   this build does not enable.)
//! - Memory: the process's memory statistics from Linux's `/proc/self/status` (peak and
//!   current resident set, heap and anonymous memory). This is the allocator's view in
//!   totals, not a per-call-site heap profile: that would need a profiling allocator
//!   (jemalloc's), which would replace the allocator for every run, not just profiled ones.

use std::path::PathBuf;

/// Sampling frequency of the CPU profiler, in Hz (off the 100 Hz timer tick on purpose).
pub const CPU_SAMPLES_PER_SECOND: i32 = 99;

/// The profiles being taken.
pub struct Profiles {
    cpu: Option<(PathBuf, pprof::ProfilerGuard<'static>)>,
    memory: Option<PathBuf>,
}

impl Profiles {
    /// Starts the CPU profiler if `cpu` names a file; remembers where memory goes.
    pub fn start(cpu: Option<PathBuf>, memory: Option<PathBuf>) -> Result<Profiles, String> {
        let cpu = match cpu {
            Some(path) => {
                let guard = pprof::ProfilerGuardBuilder::default()
                    .frequency(CPU_SAMPLES_PER_SECOND)
                    .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                    .build()
                    .map_err(|e| format!("-cpuprofile: cannot start the profiler: {e}"))?;
                // Fail now, not at exit, if the file cannot be written.
                std::fs::write(&path, b"")
                    .map_err(|e| format!("-cpuprofile {}: {e}", path.display()))?;
                Some((path, guard))
            }
            None => None,
        };
        if let Some(path) = &memory {
            std::fs::write(path, b"")
                .map_err(|e| format!("-memprofile {}: {e}", path.display()))?;
        }
        Ok(Profiles { cpu, memory })
    }

    /// Writes the profiles. Errors name the file.
    pub fn finish(self) -> Result<(), String> {
        if let Some((path, guard)) = self.cpu {
            let report = guard
                .report()
                .build()
                .map_err(|e| format!("-cpuprofile: building the report: {e}"))?;
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("-cpuprofile {}: {e}", path.display()))?;
            report
                .flamegraph(file)
                .map_err(|e| format!("-cpuprofile {}: {e}", path.display()))?;
        }
        if let Some(path) = self.memory {
            let status = std::fs::read_to_string("/proc/self/status")
                .map_err(|e| format!("-memprofile: reading /proc/self/status: {e}"))?;
            let wanted = [
                "VmPeak", "VmSize", "VmHWM", "VmRSS", "RssAnon", "RssFile", "VmData", "VmStk",
                "Threads",
            ];
            let lines: String = status
                .lines()
                .filter(|l| wanted.iter().any(|w| l.starts_with(&format!("{w}:"))))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&path, lines)
                .map_err(|e| format!("-memprofile {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn stop_requested() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
