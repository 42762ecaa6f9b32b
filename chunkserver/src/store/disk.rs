//! Data directories: identity files, free space, the startup scan and
//! which I/O errors mean the device failed.

use super::*;
/// Name of a data directory's identity file.
pub const DISK_ID_FILE: &str = "disk-id";

/// A random UUID v4, hyphenated lowercase.
pub(super) fn new_uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Reads the identity of the data directory `root`, creating it durably
/// when absent (see the module docs). An unreadable or malformed file is an
/// error: silently replacing it would hide a swapped disk.
pub(super) fn disk_identity(root: &Path) -> Result<String> {
    let path = root.join(DISK_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim();
            let ok = id.len() == 36
                && id
                    .bytes()
                    .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !ok {
                return Err(Error::InvalidParams(format!(
                    "{} does not hold a UUID: {id:?}",
                    path.display()
                )));
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = new_uuid_v4();
            let tmp = root.join(format!("{DISK_ID_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(id.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io(format!("write {}", path.display()), e));
            }
            fsync_dir(root)?;
            tracing::info!(dir = %root.display(), identity = %id, "new data directory");
            Ok(id)
        }
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

pub(super) struct Space {
    pub(super) capacity: u64,
    pub(super) avail: u64,
}

pub(super) fn statvfs(path: &Path) -> Result<Space> {
    let s = rustix::fs::statvfs(path)
        .map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
    Ok(Space {
        capacity: s.f_blocks.saturating_mul(s.f_frsize),
        avail: s.f_bavail.saturating_mul(s.f_frsize),
    })
}

pub(super) fn is_hex2(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Disk {
    pub(super) fn shard_dir(&self, id: &ShardId) -> PathBuf {
        let hex = id.to_hex();
        self.shards.join(&hex[0..2]).join(&hex[2..4])
    }

    pub(super) fn shard_path(&self, id: &ShardId) -> PathBuf {
        self.shard_dir(id).join(id.to_hex())
    }
}

/// Indexes one disk's shards and removes its stale temp files.
pub(super) fn scan_disk(
    disk_no: usize,
    disk: &Disk,
    state: &mut State,
    known: &mut HashSet<PathBuf>,
) -> Result<()> {
    let read =
        |p: &Path| std::fs::read_dir(p).map_err(|e| Error::io(format!("scan {}", p.display()), e));
    let mut removed = 0usize;
    for l1 in read(&disk.shards)? {
        let l1 = l1.map_err(|e| Error::io("scan", e))?;
        let n1 = l1.file_name();
        let Some(n1) = n1.to_str().filter(|n| is_hex2(n)) else {
            tracing::warn!(path = %l1.path().display(), "ignoring unexpected entry in shard directory");
            continue;
        };
        if !l1.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        for l2 in read(&l1.path())? {
            let l2 = l2.map_err(|e| Error::io("scan", e))?;
            let n2 = l2.file_name();
            let Some(n2) = n2.to_str().filter(|n| is_hex2(n)) else {
                tracing::warn!(path = %l2.path().display(), "ignoring unexpected entry in shard directory");
                continue;
            };
            if !l2.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let dir = l2.path();
            let mut dir_changed = false;
            for f in read(&dir)? {
                let f = f.map_err(|e| Error::io("scan", e))?;
                let name = f.file_name();
                let Some(name) = name.to_str() else {
                    tracing::warn!(path = %f.path().display(), "ignoring non-UTF-8 file name");
                    continue;
                };
                if name.starts_with(TMP_PREFIX) {
                    std::fs::remove_file(f.path())
                        .map_err(|e| Error::io(format!("remove {}", f.path().display()), e))?;
                    removed += 1;
                    dir_changed = true;
                    continue;
                }
                let id = match name.parse::<ShardId>() {
                    Ok(id) if name[0..2] == *n1 && name[2..4] == *n2 => id,
                    _ => {
                        tracing::warn!(path = %f.path().display(), "ignoring unexpected file in shard directory");
                        continue;
                    }
                };
                let len = f
                    .metadata()
                    .map_err(|e| Error::io(format!("stat {}", f.path().display()), e))?
                    .len();
                if let Some(other) = state.index.get(&id) {
                    tracing::warn!(%id, first = other.disk, second = disk_no,
                        "shard stored on two data directories; using the first");
                    continue;
                }
                let gen = state.next_gen;
                state.next_gen += 1;
                state.index.insert(
                    id,
                    Entry {
                        disk: disk_no,
                        file_len: len,
                        gen,
                    },
                );
                state.usage[disk_no].used += len;
                state.usage[disk_no].count += 1;
            }
            if dir_changed {
                fsync_dir(&dir)?;
            }
            known.insert(dir);
        }
    }
    if removed > 0 {
        tracing::info!(disk = %disk.root.display(), removed, "removed temp files of interrupted writes");
    }
    Ok(())
}

/// True for the errors that mean the device under a data directory is
/// failing, not merely full: EIO, EROFS (a file system remounted read-only
/// after errors), ENXIO, ENODEV, EUCLEAN (corrupted file system).
pub(super) fn is_device_failure(e: &Error) -> bool {
    const EIO: i32 = 5;
    const ENXIO: i32 = 6;
    const ENODEV: i32 = 19;
    const EROFS: i32 = 30;
    const EUCLEAN: i32 = 117;
    match e {
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(EIO | ENXIO | ENODEV | EROFS | EUCLEAN)
        ),
        _ => false,
    }
}
