//! The audit log of admin actions (table `audit_log`): who (the verified
//! token's name), what, when (the entry's time), and the result, written
//! in the same transaction as the action (`Command::Audited`) or right
//! after it (`Command::AuditRecord`), so every node holds the same records.
//! Bounded: past [`AUDIT_LOG_CAP`] records the oldest is dropped.

use super::*;

/// Audit records: seq (u64 BE) -> JSON [`AuditEntry`].
pub const AUDIT_LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit_log");

const AUDIT_SEQ: &[u8] = b"audit_seq";

/// What `cmd` does, for the audit log: names and ids, never a secret.
pub(super) fn audit_what(cmd: &Command) -> String {
    let grant = |g: &BucketGrant| {
        let mut s = String::new();
        for (on, c) in [(g.read, 'r'), (g.write, 'w'), (g.owner, 'o')] {
            if on {
                s.push(c);
            }
        }
        if s.is_empty() {
            s.push('-');
        }
        s
    };
    match cmd {
        Command::Once { inner, .. } | Command::Audited { inner, .. } => audit_what(inner),
        Command::PutAccessKey { key } => format!(
            "put_access_key {} name {:?}{}",
            key.id,
            key.name,
            if key.admin { " admin" } else { "" }
        ),
        Command::DeleteAccessKey { id } => format!("delete_access_key {id}"),
        Command::SetAccessKeyGrant {
            id,
            bucket,
            grant: g,
        } => {
            format!("set_access_key_grant {id} {bucket}:{}", grant(g))
        }
        Command::RotateAccessKey {
            id,
            new_id,
            overlap_ms,
            ..
        } => format!(
            "rotate_access_key {id} -> {new_id} overlap {}s",
            overlap_ms / 1000
        ),
        Command::SetChunkserverState { id, state } => {
            format!("set_chunkserver_state {id} {state:?}")
        }
        Command::RemoveChunkserver { id } => format!("remove_chunkserver {id}"),
        Command::SetRebalance {
            enabled,
            threshold_pct,
        } => format!("set_rebalance enabled {enabled} threshold {threshold_pct}%"),
        other => crate::auth::kind_of(other),
    }
}

/// Appends one record, dropping the oldest past the cap.
pub(super) fn record_audit(
    txn: &redb::WriteTransaction,
    who: &str,
    role: &str,
    what: &str,
    result: &str,
    now: u64,
) -> StoreResult<()> {
    let mut counters = txn.open_table(COUNTERS)?;
    let seq = match counters.get(AUDIT_SEQ)? {
        Some(v) => u64_from(v.value()),
        None => 0,
    } + 1;
    counters.insert(AUDIT_SEQ, seq.to_be_bytes().as_slice())?;
    drop(counters);
    let entry = AuditEntry {
        seq,
        at_ms: now,
        who: who.to_string(),
        role: role.to_string(),
        what: what.to_string(),
        result: result.to_string(),
    };
    let mut t = txn.open_table(AUDIT_LOG)?;
    t.insert(seq.to_be_bytes().as_slice(), enc(&entry)?.as_slice())?;
    if seq > AUDIT_LOG_CAP {
        t.remove((seq - AUDIT_LOG_CAP).to_be_bytes().as_slice())?;
    }
    Ok(())
}

/// `Audited`: applies `inner`, then records it with its result.
pub(super) fn audited(
    txn: &redb::WriteTransaction,
    who: &str,
    role: &str,
    inner: &Command,
    now: u64,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let r = apply_inner(txn, inner, now)?;
    let result = match &r {
        Ok(CommandResult::Err(e)) | Err(e) => e.to_string(),
        Ok(_) => "ok".to_string(),
    };
    record_audit(txn, who, role, &audit_what(inner), &result, now)?;
    Ok(r)
}

/// The newest `limit` records, newest first.
pub(super) fn audit_log(txn: &redb::ReadTransaction, limit: u32) -> StoreResult<Vec<AuditEntry>> {
    let mut out = Vec::new();
    if let Some(t) = open_ro(txn, AUDIT_LOG)? {
        for r in t.iter()?.rev().take(limit as usize) {
            let (_, v) = r?;
            out.push(dec(v.value())?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn audited_commands_are_recorded_with_their_result_and_the_log_is_capped() {
        let db = match redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
        {
            Ok(d) => d,
            Err(e) => panic!("in-memory redb: {e}"),
        };
        let txn = db.begin_write().unwrap();
        let audited = |inner: Command| Command::Audited {
            who: "alice".into(),
            role: "admin".into(),
            inner: Box::new(inner),
        };
        let r = apply_at(
            &txn,
            &Command::At {
                now_ms: 42,
                inner: Box::new(audited(Command::RotateAccessKey {
                    id: "CK1".into(),
                    new_id: "CK2".into(),
                    secret: SecretString("cairn-sealed-v1:very-secret".into()),
                    overlap_ms: 60_000,
                })),
            },
            0,
        )
        .unwrap();
        assert!(matches!(
            r,
            CommandResult::Err(MetaError::NoSuchAccessKey(_))
        ));
        apply_at(
            &txn,
            &audited(Command::DeleteAccessKey { id: "CK1".into() }),
            43,
        )
        .unwrap();
        for i in 0..AUDIT_LOG_CAP {
            record_audit(&txn, "bob", "admin", "add_node", "ok", 100 + i).unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(
            txn.open_table(AUDIT_LOG).unwrap().len().unwrap(),
            AUDIT_LOG_CAP
        );
        let newest = audit_log(&txn, 3).unwrap();
        assert_eq!(newest.len(), 3);
        assert_eq!(newest[0].seq, AUDIT_LOG_CAP + 2);
        assert!(newest[0].seq > newest[1].seq);
        // The two audited commands were the oldest: dropped past the cap.
        let all = audit_log(&txn, u32::MAX).unwrap();
        assert_eq!(all.len() as u64, AUDIT_LOG_CAP);
        assert!(all.iter().all(|e| e.who == "bob"));
        drop(txn);
        // Before the cap: both recorded, with what and result, no secret.
        let db2 = match redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
        {
            Ok(d) => d,
            Err(e) => panic!("in-memory redb: {e}"),
        };
        let txn = db2.begin_write().unwrap();
        apply_at(
            &txn,
            &audited(Command::RotateAccessKey {
                id: "CK1".into(),
                new_id: "CK2".into(),
                secret: SecretString("cairn-sealed-v1:very-secret".into()),
                overlap_ms: 60_000,
            }),
            7,
        )
        .unwrap();
        txn.commit().unwrap();
        let txn = db2.begin_read().unwrap();
        let got = audit_log(&txn, 10).unwrap();
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!((e.seq, e.at_ms, e.who.as_str()), (1, 7, "alice"));
        assert_eq!(e.what, "rotate_access_key CK1 -> CK2 overlap 60s");
        assert!(e.result.contains("no such access key"), "{}", e.result);
        assert!(!format!("{e:?}").contains("very-secret"));
    }
}
