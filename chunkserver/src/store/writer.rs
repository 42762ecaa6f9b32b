//! Streaming shard writes: temp file, hash while streamed, fsync, rename,
//! fsync of the directory.

use super::*;

/// Holds a put's reservation (the id and the disk space) and its temp
/// file; releases both when dropped, unless the put committed.
pub(super) struct TempGuard {
    pub(super) store: Arc<Inner>,
    pub(super) id: ShardId,
    pub(super) disk: usize,
    pub(super) need: u64,
    /// The temp file to remove on drop.
    pub(super) tmp: Option<PathBuf>,
    pub(super) reserved: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            match std::fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temp file")
                }
            }
        }
        if self.reserved {
            let mut st = lock(&self.store.state);
            st.writing.remove(&self.id);
            let u = &mut st.usage[self.disk];
            u.pending = u.pending.saturating_sub(self.need);
        }
    }
}

pub(super) struct WriterState {
    pub(super) file: File,
    pub(super) hasher: blake3::Hasher,
    pub(super) written: u64,
    pub(super) dir: PathBuf,
    pub(super) final_path: PathBuf,
    pub(super) meta: ShardMeta,
    pub(super) guard: TempGuard,
}

/// Streams one shard's payload to its temp file. Dropping it before
/// [`ShardWriter::finish`] succeeds abandons the write and removes the
/// temp file.
pub struct ShardWriter {
    /// Boxed: the BLAKE3 hasher alone is ~2 KiB, and the state moves in
    /// and out of blocking tasks on every flush.
    pub(super) state: Option<Box<WriterState>>,
    pub(super) buf: Vec<Bytes>,
    pub(super) buffered: usize,
}

impl fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardWriter")
            .field("id", &self.state.as_ref().map(|s| s.meta.id))
            .field("buffered", &self.buffered)
            .finish()
    }
}

impl ShardWriter {
    pub(super) fn state(&self) -> Result<&WriterState> {
        self.state.as_deref().ok_or_else(|| {
            Error::io(
                "shard writer",
                std::io::Error::other("writer already failed"),
            )
        })
    }

    /// Appends payload bytes. More bytes than declared is
    /// [`Error::BadDigest`].
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        let st = self.state()?;
        let total = st.written + self.buffered as u64 + data.len() as u64;
        if total > st.meta.len {
            return Err(Error::BadDigest(format!(
                "body is longer than the declared {} bytes",
                st.meta.len
            )));
        }
        self.buffered += data.len();
        self.buf.push(data);
        if self.buffered >= WRITE_FLUSH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(mut st) = self.state.take() else {
            return Err(Error::io(
                "shard writer",
                std::io::Error::other("writer already failed"),
            ));
        };
        let bufs = std::mem::take(&mut self.buf);
        self.buffered = 0;
        let (store, disk) = (st.guard.store.clone(), st.guard.disk);
        let r = blocking(move || {
            for b in &bufs {
                st.hasher.update(b);
                st.file.write_all(b).map_err(|e| {
                    Error::io(format!("write temp file for shard {}", st.meta.id), e)
                })?;
                st.written += b.len() as u64;
            }
            Ok(st)
        })
        .await;
        let st = store.check_device(disk, r)?;
        self.state = Some(st);
        Ok(())
    }

    /// Checks the declared length and BLAKE3, then makes the shard durable
    /// and visible: fsync, rename into place, fsync the directory, index.
    pub async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        let Some(st) = self.state.take() else {
            return Err(Error::io(
                "shard writer",
                std::io::Error::other("writer already failed"),
            ));
        };
        if st.written != st.meta.len {
            return Err(Error::BadDigest(format!(
                "body is {} bytes, declared {}",
                st.written, st.meta.len
            )));
        }
        let actual = st.hasher.finalize();
        if actual != st.meta.blake3 {
            return Err(Error::BadDigest(format!(
                "payload BLAKE3 is {}, declared {}",
                actual.to_hex(),
                st.meta.blake3.to_hex()
            )));
        }
        // One blocking task does the whole commit, index update included,
        // so a cancelled request cannot leave a renamed file unindexed.
        let (store, disk) = (st.guard.store.clone(), st.guard.disk);
        let r = blocking(move || commit(st)).await;
        store.check_device(disk, r)
    }
}

pub(super) fn commit(st: Box<WriterState>) -> Result<()> {
    let WriterState {
        file,
        final_path,
        dir,
        meta,
        mut guard,
        ..
    } = *st;
    let tmp = guard
        .tmp
        .clone()
        .ok_or_else(|| Error::io("commit", std::io::Error::other("no temp file")))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
    drop(file);
    std::fs::rename(&tmp, &final_path)
        .map_err(|e| Error::io(format!("rename to {}", final_path.display()), e))?;
    guard.tmp = None;
    if let Err(e) = fsync_dir(&dir) {
        // Not durable: undo rather than acknowledge.
        let _ = std::fs::remove_file(&final_path);
        return Err(e);
    }
    let file_len = HEADER_LEN as u64 + meta.len;
    let mut s = lock(&guard.store.state);
    if s.failed.get(guard.disk).is_some_and(|f| f.is_some()) {
        // The directory failed while this shard was written: its fsync may
        // have "succeeded" on a dying device. Not acknowledged; the writer
        // places the shard elsewhere.
        drop(s);
        let _ = std::fs::remove_file(&final_path);
        return Err(Error::io(
            format!("commit {}", final_path.display()),
            std::io::Error::other("the data directory failed during the write"),
        ));
    }
    let gen = s.next_gen;
    s.next_gen += 1;
    s.index.insert(
        meta.id,
        Entry {
            disk: guard.disk,
            file_len,
            gen,
        },
    );
    s.writing.remove(&meta.id);
    let u = &mut s.usage[guard.disk];
    u.pending = u.pending.saturating_sub(guard.need);
    u.used += file_len;
    u.count += 1;
    guard.reserved = false;
    Ok(())
}
