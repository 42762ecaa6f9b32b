//! The shared state behind a [`Store`]: index, usage, quarantine and the
//! per-disk failure handling.

use super::*;

impl Inner {
    pub(super) fn is_failed(&self, disk: usize) -> bool {
        lock(&self.state)
            .failed
            .get(disk)
            .is_some_and(|f| f.is_some())
    }

    /// Passes `r` through; if it is a device failure on `disk`, first takes
    /// that directory out of service.
    pub(super) fn check_device<T>(&self, disk: usize, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if is_device_failure(e) {
                self.fail_disk(disk, e);
            }
        }
        r
    }

    /// Takes data directory `disk` out of service after its device failed:
    /// no more placements on it, its shards leave the index (reads of them
    /// answer "no such shard", so clients decode from parity) and its
    /// identity leaves the heartbeat, so the metadata service checks every
    /// shard it placed here and rebuilds the ones that were on this
    /// directory. The files are not touched. Serving the other directories
    /// goes on. Undone only by a restart (after the operator replaced or
    /// repaired the disk).
    pub(super) fn fail_disk(&self, disk: usize, e: &Error) {
        let Some(d) = self.disks.get(disk) else {
            return;
        };
        let mut st = lock(&self.state);
        match st.failed.get_mut(disk) {
            Some(slot @ None) => *slot = Some(e.to_string()),
            _ => return,
        }
        let before = st.index.len();
        st.index.retain(|_, entry| entry.disk != disk);
        let dropped = before - st.index.len();
        if let Some(u) = st.usage.get_mut(disk) {
            u.used = 0;
            u.count = 0;
        }
        drop(st);
        tracing::error!(
            dir = %d.root.display(),
            error = %e,
            shards = dropped,
            "data directory failed: taken out of service; its shards will be rebuilt elsewhere"
        );
    }

    /// Decides, atomically under the state lock, whether a put may go ahead;
    /// if so reserves the id and the space on the chosen disk.
    pub(super) fn try_begin(self: Arc<Self>, meta: ShardMeta) -> Result<Begin> {
        let need = HEADER_LEN as u64 + meta.len;
        // A directory whose device fails statvfs is taken out of service;
        // None marks it (and one already failed) as no candidate.
        let spaces: Vec<Option<Space>> = (0..self.disks.len())
            .map(|i| {
                if self.is_failed(i) {
                    return None;
                }
                self.check_device(i, statvfs(&self.disks[i].root)).ok()
            })
            .collect();
        let mut st = lock(&self.state);
        if let Some(h) = st.writing.get(&meta.id) {
            return Err(if *h == meta.blake3 {
                Error::Busy { id: meta.id }
            } else {
                Error::Conflict {
                    id: meta.id,
                    reason: "a write with different content is in progress".into(),
                }
            });
        }
        if let Some(e) = st.index.get(&meta.id) {
            return Ok(Begin::Exists(*e));
        }
        // Most free space wins; on a tie (e.g. directories sharing a file
        // system) the one holding fewer shard bytes, so writes spread.
        let mut best: Option<(usize, u64, u64)> = None;
        let mut closest = String::new();
        for (i, (d, s)) in self.disks.iter().zip(&spaces).enumerate() {
            let Some(s) = s.as_ref().filter(|_| st.failed[i].is_none()) else {
                if closest.is_empty() {
                    closest = format!("{} is out of service", d.root.display());
                }
                continue;
            };
            let free = s.avail.saturating_sub(st.usage[i].pending);
            let reserve = d.reserve.bytes_for(s.capacity);
            if free >= need.saturating_add(reserve) {
                let used = st.usage[i].used;
                if best.is_none_or(|(_, f, u)| free > f || (free == f && used < u)) {
                    best = Some((i, free, used));
                }
            } else if closest.is_empty() {
                closest = format!(
                    "{} has {free} bytes free, reserve is {reserve} bytes",
                    d.root.display()
                );
            }
        }
        let Some((disk, _, _)) = best else {
            return Err(Error::DiskFull(format!(
                "no data directory can take {need} more bytes above its reserve ({closest})"
            )));
        };
        st.writing.insert(meta.id, meta.blake3);
        st.usage[disk].pending += need;
        drop(st);
        Ok(Begin::Reserved(TempGuard {
            store: self.clone(),
            id: meta.id,
            disk,
            need,
            tmp: None,
            reserved: true,
        }))
    }

    /// Makes sure the fan-out directory of `id` on `disk` exists durably.
    pub(super) fn ensure_dir(&self, disk: usize, id: &ShardId) -> Result<PathBuf> {
        let d = &self.disks[disk];
        let dir = d.shard_dir(id);
        if lock(&self.known_dirs).contains(&dir) {
            return Ok(dir);
        }
        let mut parent = d.shards.clone();
        let hex = id.to_hex();
        for part in [&hex[0..2], &hex[2..4]] {
            let child = parent.join(part);
            match std::fs::create_dir(&child) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create {}", child.display()), e)),
            }
            // Always fsync: a racing creator may have made the directory
            // without having synced its parent yet.
            fsync_dir(&parent)?;
            parent = child;
        }
        lock(&self.known_dirs).insert(dir.clone());
        Ok(dir)
    }

    pub(super) fn create_temp(
        self: Arc<Self>,
        mut guard: TempGuard,
        meta: ShardMeta,
    ) -> Result<WriterState> {
        let dir = self.ensure_dir(guard.disk, &meta.id)?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{:016x}",
            meta.id,
            rand::random::<u64>()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        guard.tmp = Some(tmp.clone());
        file.write_all(&format::encode_header(&meta))
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        Ok(WriterState {
            file,
            hasher: blake3::Hasher::new(),
            written: 0,
            final_path: dir.join(meta.id.to_hex()),
            dir,
            meta,
            guard,
        })
    }

    /// Reads a shard's header and checks the file length against it.
    pub(super) fn read_header(&self, id: ShardId, entry: Entry) -> Result<ShardMeta> {
        let path = self.disks[entry.disk].shard_path(&id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchShard { id })
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let file_len = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        let mut buf = Vec::with_capacity(HEADER_LEN);
        (&mut f)
            .take(HEADER_LEN as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let meta = self.check_header(id, entry, &path, &buf)?;
        if file_len != HEADER_LEN as u64 + meta.len {
            return Err(self.quarantine(
                id,
                entry,
                format!(
                    "file is {file_len} bytes, header says {} + {}",
                    HEADER_LEN, meta.len
                ),
            ));
        }
        Ok(meta)
    }

    pub(super) fn check_header(
        &self,
        id: ShardId,
        entry: Entry,
        path: &Path,
        buf: &[u8],
    ) -> Result<ShardMeta> {
        match format::decode_header(buf) {
            Ok(meta) if meta.id == id => Ok(meta),
            Ok(meta) => Err(self.quarantine(id, entry, format!("header names shard {}", meta.id))),
            Err(HeaderError::Corrupt(reason)) => Err(self.quarantine(id, entry, reason)),
            Err(HeaderError::Unsupported(version)) => {
                tracing::error!(%id, version, path = %path.display(), "shard has an unsupported format version");
                Err(Error::UnsupportedFormat { id, version })
            }
        }
    }

    pub(super) fn read_verified(&self, id: ShardId, entry: Entry) -> Result<(ShardMeta, Bytes)> {
        let path = self.disks[entry.disk].shard_path(&id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchShard { id })
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let file_len = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        let limit = HEADER_LEN as u64 + self.max_shard_size;
        if file_len > limit {
            return Err(self.quarantine(
                id,
                entry,
                format!("file is {file_len} bytes, more than the {limit}-byte maximum"),
            ));
        }
        // file_len <= limit, which fits in memory by configuration.
        let mut buf = Vec::with_capacity(file_len as usize);
        (&mut f)
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let meta = self.check_header(id, entry, &path, &buf)?;
        // check_header succeeded, so buf holds at least a whole header.
        if let Err(reason) = format::verify_payload(&meta, buf.get(HEADER_LEN..).unwrap_or(&[])) {
            return Err(self.quarantine(id, entry, reason));
        }
        Ok((meta, Bytes::from(buf).slice(HEADER_LEN..)))
    }

    /// Moves a failed shard into the quarantine directory, drops it from
    /// the index, records the event and returns the error to report.
    pub(super) fn quarantine(&self, id: ShardId, entry: Entry, reason: String) -> Error {
        let disk = &self.disks[entry.disk];
        let path = disk.shard_path(&id);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dest = disk.quarantine.join(format!("{id}.{nanos}"));
        let mut moved = None;
        {
            let mut st = lock(&self.state);
            // Only if the index still points at the file we read: a delete
            // and a new put of the same id may have replaced it meanwhile.
            if st.index.get(&id).is_some_and(|e| e.gen == entry.gen) {
                match std::fs::rename(&path, &dest) {
                    Ok(()) => moved = Some(dest.clone()),
                    Err(e) => {
                        tracing::error!(%id, error = %e, "cannot move corrupt shard to quarantine")
                    }
                }
                if moved.is_some() {
                    st.index.remove(&id);
                    let u = &mut st.usage[entry.disk];
                    u.used = u.used.saturating_sub(entry.file_len);
                    u.count = u.count.saturating_sub(1);
                }
            }
        }
        if moved.is_some() {
            for d in [&disk.quarantine, &disk.shard_dir(&id)] {
                if let Err(e) = fsync_dir(d) {
                    tracing::warn!(error = %e, "fsync after quarantine failed");
                }
            }
        }
        tracing::warn!(%id, disk = %disk.root.display(), %reason, quarantined_to = ?moved, "corrupt shard");
        self.record_corrupt(CorruptEvent {
            id,
            disk: disk.root.clone(),
            reason: reason.clone(),
            quarantined_to: moved,
            at_unix_ms: now_unix_ms(),
        });
        Error::CorruptShard { id, reason }
    }

    /// Restarts the age of an existing shard file (sets its mtime to now).
    pub(super) fn touch(&self, id: ShardId, entry: Entry) -> Result<()> {
        let path = self.disks[entry.disk].shard_path(&id);
        let f = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchShard { id })
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        f.set_modified(SystemTime::now())
            .map_err(|e| Error::io(format!("set mtime of {}", path.display()), e))
    }

    /// A shard in the index whose file is gone: drops it from the index (if
    /// the index still points at the same file generation; a concurrent
    /// delete removes file and entry together under the state lock) and
    /// records the event. Returns the error to report.
    pub(super) fn drop_missing(&self, id: ShardId, entry: Entry) -> Error {
        let disk = &self.disks[entry.disk];
        {
            let mut st = lock(&self.state);
            if st.index.get(&id).is_none_or(|e| e.gen != entry.gen) {
                return Error::NoSuchShard { id };
            }
            // Checked under the lock: the file may have reappeared (a new
            // put of the same id commits under this lock too).
            if disk.shard_path(&id).exists() {
                return Error::NoSuchShard { id };
            }
            st.index.remove(&id);
            let u = &mut st.usage[entry.disk];
            u.used = u.used.saturating_sub(entry.file_len);
            u.count = u.count.saturating_sub(1);
        }
        let reason = "shard file is missing".to_string();
        tracing::warn!(%id, disk = %disk.root.display(), %reason, "missing shard");
        self.record_corrupt(CorruptEvent {
            id,
            disk: disk.root.clone(),
            reason: reason.clone(),
            quarantined_to: None,
            at_unix_ms: now_unix_ms(),
        });
        Error::CorruptShard { id, reason }
    }

    pub(super) fn record_corrupt(&self, event: CorruptEvent) {
        let mut log = lock(&self.corrupt);
        if log.events.len() >= MAX_CORRUPT_EVENTS {
            log.events.pop_front();
            log.dropped += 1;
        }
        log.events.push_back(event);
    }

    pub(super) fn delete_blocking(&self, id: ShardId) -> Result<()> {
        let dir;
        {
            let mut st = lock(&self.state);
            if st.writing.contains_key(&id) {
                return Err(Error::Busy { id });
            }
            let Some(entry) = st.index.get(&id).copied() else {
                return Err(Error::NoSuchShard { id });
            };
            let disk = &self.disks[entry.disk];
            let path = disk.shard_path(&id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
            }
            st.index.remove(&id);
            let u = &mut st.usage[entry.disk];
            u.used = u.used.saturating_sub(entry.file_len);
            u.count = u.count.saturating_sub(1);
            dir = disk.shard_dir(&id);
        }
        fsync_dir(&dir)
    }
}
