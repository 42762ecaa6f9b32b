//! A linearizability checker for histories of operations on independent
//! registers (Wing & Gong's search with memoization, as in Knossos and
//! Porcupine), used on histories recorded against the real cluster.

use std::collections::{BTreeMap, HashSet};

/// An operation on one register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Unconditional write.
    Put(String),
    /// Removal (the register becomes absent; removing an absent one
    /// succeeds, as S3 DELETE does).
    Delete,
    /// Read.
    Get,
    /// Write `new` if the current value is `expected`.
    Cas { expected: String, new: String },
}

/// What the operation returned; `Unknown` when the client got no answer
/// (timeout, connection lost): it may or may not have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// Write done.
    Ok,
    /// Read value.
    Value(Option<String>),
    /// CAS outcome.
    Cas(bool),
    /// No answer.
    Unknown,
}

/// One completed (or abandoned) operation with its real-time interval.
#[derive(Debug, Clone)]
pub struct Event {
    /// Register name.
    pub key: String,
    /// What was asked.
    pub op: Op,
    /// What came back.
    pub ret: Ret,
    /// Invocation time (ns since the test start).
    pub call: u128,
    /// Response time; `u128::MAX` for `Unknown`.
    pub done: u128,
}

fn step(state: &Option<String>, op: &Op, ret: &Ret) -> Option<Option<String>> {
    match (op, ret) {
        (Op::Put(v), Ret::Ok | Ret::Unknown) => Some(Some(v.clone())),
        (Op::Delete, Ret::Ok | Ret::Unknown) => Some(None),
        (Op::Get, Ret::Value(v)) => (v == state).then(|| state.clone()),
        (Op::Get, Ret::Unknown) => Some(state.clone()),
        (Op::Cas { expected, new }, r) => {
            let matches = state.as_deref() == Some(expected.as_str());
            match r {
                Ret::Cas(true) => matches.then(|| Some(new.clone())),
                Ret::Cas(false) => (!matches).then(|| state.clone()),
                Ret::Unknown => Some(if matches {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Checks one register's history. Operations with an unknown outcome may
/// be linearized anywhere after their call, or not at all.
pub fn check_register(events: &[Event]) -> Result<(), String> {
    let n = events.len();
    if n > 4096 {
        return Err("history too long for the checker".into());
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| events[i].call);
    let words = n.div_ceil(64).max(1);
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // Depth-first search over (linearized set, state).
    let mut stack: Vec<(Vec<u64>, Option<String>)> = vec![(vec![0; words], None)];
    let is_set = |b: &Vec<u64>, i: usize| b[i / 64] & (1 << (i % 64)) != 0;
    while let Some((done, state)) = stack.pop() {
        // Finished when every operation with a known outcome is linearized.
        if (0..n).all(|i| is_set(&done, i) || events[i].ret == Ret::Unknown) {
            return Ok(());
        }
        if !seen.insert((done.clone(), state.clone())) {
            continue;
        }
        // The earliest response among pending ops bounds which ops may go
        // next: an op invoked after that response cannot precede it.
        let min_done = (0..n)
            .filter(|&i| !is_set(&done, i))
            .map(|i| events[i].done)
            .min()
            .unwrap_or(u128::MAX);
        for &i in &order {
            if is_set(&done, i) {
                continue;
            }
            if events[i].call > min_done {
                break;
            }
            if let Some(next) = step(&state, &events[i].op, &events[i].ret) {
                let mut d = done.clone();
                d[i / 64] |= 1 << (i % 64);
                stack.push((d, next));
            }
        }
    }
    Err(format!("no linearization of {n} operations"))
}

/// Checks a history over many registers (each independently).
pub fn check(events: &[Event]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(e.key.as_str()).or_default().push(e.clone());
    }
    for (k, evs) in by_key {
        check_register(&evs).map_err(|e| format!("register {k}: {e}"))?;
    }
    Ok(())
}

#[test]
fn checker_accepts_and_rejects() {
    let ev = |op: Op, ret: Ret, call: u128, done: u128| Event {
        key: "k".into(),
        op,
        ret,
        call,
        done,
    };
    // Sequential and fine.
    let ok = vec![
        ev(Op::Put("a".into()), Ret::Ok, 0, 1),
        ev(Op::Get, Ret::Value(Some("a".into())), 2, 3),
        ev(
            Op::Cas {
                expected: "a".into(),
                new: "b".into(),
            },
            Ret::Cas(true),
            4,
            5,
        ),
        ev(Op::Get, Ret::Value(Some("b".into())), 6, 7),
    ];
    assert!(check(&ok).is_ok());
    // A stale read after a completed write is not linearizable.
    let stale = vec![
        ev(Op::Put("a".into()), Ret::Ok, 0, 1),
        ev(Op::Put("b".into()), Ret::Ok, 2, 3),
        ev(Op::Get, Ret::Value(Some("a".into())), 4, 5),
    ];
    assert!(check(&stale).is_err());
    // Concurrent write: either value may be read.
    let conc = vec![
        ev(Op::Put("a".into()), Ret::Ok, 0, 1),
        ev(Op::Put("b".into()), Ret::Ok, 2, 10),
        ev(Op::Get, Ret::Value(Some("a".into())), 3, 4),
        ev(Op::Get, Ret::Value(Some("b".into())), 5, 6),
    ];
    assert!(check(&conc).is_ok());
    // A write with unknown outcome may have happened...
    let unknown = vec![
        ev(Op::Put("a".into()), Ret::Unknown, 0, u128::MAX),
        ev(Op::Get, Ret::Value(Some("a".into())), 5, 6),
    ];
    assert!(check(&unknown).is_ok());
    // ...but not before it was invoked.
    let early = vec![
        ev(Op::Get, Ret::Value(Some("a".into())), 0, 1),
        ev(Op::Put("a".into()), Ret::Unknown, 2, u128::MAX),
    ];
    assert!(check(&early).is_err());
    // Two successful CAS from the same value cannot both win.
    let double = vec![
        ev(Op::Put("a".into()), Ret::Ok, 0, 1),
        ev(
            Op::Cas {
                expected: "a".into(),
                new: "b".into(),
            },
            Ret::Cas(true),
            2,
            5,
        ),
        ev(
            Op::Cas {
                expected: "a".into(),
                new: "c".into(),
            },
            Ret::Cas(true),
            3,
            6,
        ),
    ];
    assert!(check(&double).is_err());
    // A read after a completed delete sees nothing...
    let deleted = vec![
        ev(Op::Put("a".into()), Ret::Ok, 0, 1),
        ev(Op::Delete, Ret::Ok, 2, 3),
        ev(Op::Get, Ret::Value(None), 4, 5),
    ];
    assert!(check(&deleted).is_ok());
    // ...never the deleted value.
    let resurrected = vec![
        ev(Op::Put("a".into()), Ret::Ok, 0, 1),
        ev(Op::Delete, Ret::Ok, 2, 3),
        ev(Op::Get, Ret::Value(Some("a".into())), 4, 5),
    ];
    assert!(check(&resurrected).is_err());
    // A swap cannot succeed on a deleted register.
    let cas_after_delete = vec![
        ev(Op::Put("a".into()), Ret::Ok, 0, 1),
        ev(Op::Delete, Ret::Ok, 2, 3),
        ev(
            Op::Cas {
                expected: "a".into(),
                new: "b".into(),
            },
            Ret::Cas(true),
            4,
            5,
        ),
    ];
    assert!(check(&cas_after_delete).is_err());
}
