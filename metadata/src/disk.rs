//! The free-space reserve of a metadata node's data dir.
//!
//! ENOSPC must never reach the Raft stores: redb marks a database that saw
//! a failed write as broken (`PreviousIo`) until it is reopened, and
//! openraft stops Raft on any storage error. So a node refuses to *grow*
//! its stores once the file system's free space (for unprivileged users,
//! `f_bavail`) is below the reserve:
//! - the leader refuses new proposals ([`crate::leader::ApiError::StorageFull`],
//!   507 `StorageFull`);
//! - a follower refuses appends that carry entries and snapshot chunks with
//!   507; the leader's openraft sees an `Unreachable` peer, backs off and
//!   retries later, so replication resumes by itself once space is freed.
//!   Empty appends (heartbeats, commit index) and votes are still served:
//!   they write a few bytes at most. A refused append is first served as
//!   a heartbeat (its entries dropped, its answer discarded), because
//!   openraft sends no separate heartbeat while entries wait for a
//!   follower; so the follower keeps its leader and calls no elections.
//!
//! The reserve is that margin: what is already accepted (log entries being
//! applied, the vote, snapshots being built) still has room to land.

use std::path::{Path, PathBuf};

/// Default reserve in MiB (`cairn metadata --disk-reserve-mib`): room for
/// the state machine to apply what the log already holds and for one
/// snapshot build of a moderate state.
pub const DEFAULT_RESERVE_MIB: u64 = 256;

/// Space of a file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Size of the file system.
    pub capacity: u64,
    /// Bytes available to this (unprivileged) process.
    pub free: u64,
}

/// Watches the free space of one data dir against a reserve.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
}

impl DiskGuard {
    /// A guard for `dir` keeping `reserve` bytes free.
    pub fn new(dir: &Path, reserve: u64) -> Self {
        DiskGuard {
            dir: dir.to_path_buf(),
            reserve,
        }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The reserve in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// The file system's space now (one `statvfs`, a cheap syscall).
    pub fn space(&self) -> std::io::Result<Space> {
        let s = rustix::fs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        Ok(Space {
            capacity: s.f_blocks.saturating_mul(s.f_frsize),
            free: s.f_bavail.saturating_mul(s.f_frsize),
        })
    }

    /// `Err(message)` when the free space is below the reserve. A failing
    /// `statvfs` is logged and counts as not full: the stores' own I/O
    /// then reports what is wrong with the disk.
    pub fn check(&self) -> Result<(), String> {
        match self.space() {
            Ok(s) if s.free < self.reserve => Err(full_message(&self.dir, s, self.reserve)),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "statvfs of the metadata dir failed");
                Ok(())
            }
        }
    }
}

/// The message of a refusal: names the dir, the free space and the reserve.
fn full_message(dir: &Path, s: Space, reserve: u64) -> String {
    format!(
        "metadata disk {} is full: {} MiB free of {} MiB, below the reserve of {} MiB; \
         free space or grow the disk, writes resume by themselves",
        dir.display(),
        s.free >> 20,
        s.capacity >> 20,
        reserve >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_above_free_space_refuses() {
        let dir = std::env::temp_dir();
        assert!(DiskGuard::new(&dir, 0).check().is_ok());
        let e = DiskGuard::new(&dir, u64::MAX).check().unwrap_err();
        assert!(e.contains("is full") && e.contains("reserve"), "{e}");
    }

    #[test]
    fn missing_dir_is_not_full() {
        let g = DiskGuard::new(Path::new("/nonexistent/cairn-disk-test"), u64::MAX);
        assert!(g.space().is_err());
        assert!(g.check().is_ok());
    }
}
