//! One runtime for every background job (failure detection, heartbeats,
//! and later scrub, repair and GC), after Garage's `background::worker`.
//!
//! A job implements [`Worker`]; [`WorkerRunner`] drives it until the stop
//! signal, backing off on errors, and keeps its last [`WorkerInfo`] so an
//! admin command can list every worker with its progress.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What one step of work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Did work; call again at once.
    Busy,
    /// Did work but must slow down: wait this long before the next step.
    Throttled(Duration),
    /// Nothing to do: wait for [`Worker::wait_for_work`].
    Idle,
    /// Finished for good.
    Done,
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A background job.
pub trait Worker: Send + 'static {
    /// A short name for listings.
    fn name(&self) -> String;
    /// A one-line progress description for listings.
    fn status(&self) -> String {
        String::new()
    }
    /// Does one bounded step of work.
    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>>;
    /// Waits until there may be work again (after `Idle`); the default
    /// polls once a second.
    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(Duration::from_secs(1)))
    }
    /// The longest pause after repeated failed steps. A worker whose
    /// silence has consequences elsewhere (a chunkserver's heartbeat: the
    /// leader marks it Suspect after a few seconds) keeps it short.
    fn max_backoff(&self) -> Duration {
        MAX_BACKOFF
    }
}

/// A worker's state as listed by `cairn admin workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Name.
    pub name: String,
    /// Last state.
    pub state: WorkerState,
    /// Progress line.
    pub status: String,
    /// Consecutive errors.
    pub errors: u32,
    /// The last error.
    pub last_error: Option<String>,
}

/// Longest back-off after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Drives workers until stopped; clone it freely.
#[derive(Clone)]
pub struct WorkerRunner {
    stop: watch::Receiver<bool>,
    infos: Arc<Mutex<BTreeMap<usize, WorkerInfo>>>,
    handles: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    next: Arc<Mutex<usize>>,
}

/// Stops a [`WorkerRunner`].
pub struct StopHandle {
    tx: watch::Sender<bool>,
    runner: WorkerRunner,
}

impl StopHandle {
    /// Signals every worker to stop and waits up to `deadline` for them.
    pub async fn stop(self, deadline: Duration) {
        let _ = self.tx.send(true);
        let handles: Vec<_> = match self.runner.handles.lock() {
            Ok(mut h) => h.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        let all = futures::future::join_all(handles);
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!("workers did not stop within {deadline:?}");
        }
    }
}

impl WorkerRunner {
    /// A runner and the handle that stops it.
    pub fn new() -> (WorkerRunner, StopHandle) {
        let (tx, rx) = watch::channel(false);
        let runner = WorkerRunner {
            stop: rx,
            infos: Default::default(),
            handles: Default::default(),
            next: Arc::new(Mutex::new(0)),
        };
        (runner.clone(), StopHandle { tx, runner })
    }

    /// A receiver that turns `true` when the runner stops.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Every worker's last state.
    pub fn list(&self) -> Vec<WorkerInfo> {
        match self.infos.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Starts driving `w`.
    pub fn spawn(&self, mut w: impl Worker) {
        let id = match self.next.lock() {
            Ok(mut n) => {
                *n += 1;
                *n
            }
            Err(_) => 0,
        };
        let infos = self.infos.clone();
        let mut stop = self.stop.clone();
        let set = move |info: WorkerInfo| {
            if let Ok(mut m) = infos.lock() {
                m.insert(id, info);
            }
        };
        let handle = tokio::spawn(async move {
            let mut errors = 0u32;
            let mut last_error = None;
            loop {
                if *stop.borrow() {
                    break;
                }
                let res = tokio::select! {
                    r = w.work() => r,
                    _ = stop.changed() => break,
                };
                let state = match res {
                    Ok(s) => {
                        errors = 0;
                        s
                    }
                    Err(e) => {
                        errors = errors.saturating_add(1);
                        tracing::warn!(worker = %w.name(), error = %e, "worker step failed");
                        last_error = Some(e);
                        let backoff = Duration::from_millis(100)
                            .saturating_mul(1u32 << errors.min(9))
                            .min(w.max_backoff());
                        WorkerState::Throttled(backoff)
                    }
                };
                set(WorkerInfo {
                    name: w.name(),
                    state,
                    status: w.status(),
                    errors,
                    last_error: last_error.clone(),
                });
                match state {
                    WorkerState::Busy => tokio::task::yield_now().await,
                    WorkerState::Throttled(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = stop.changed() => break,
                        }
                    }
                    WorkerState::Idle => {
                        tokio::select! {
                            _ = w.wait_for_work() => {}
                            _ = stop.changed() => break,
                        }
                    }
                    WorkerState::Done => break,
                }
            }
        });
        if let Ok(mut h) = self.handles.lock() {
            h.push(handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(u32, Arc<Mutex<u32>>);
    impl Worker for Count {
        fn name(&self) -> String {
            "count".into()
        }
        fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
            Box::pin(async move {
                self.0 += 1;
                if let Ok(mut g) = self.1.lock() {
                    *g = self.0;
                }
                if self.0 == 3 {
                    return Err("boom".into());
                }
                Ok(if self.0 >= 5 {
                    WorkerState::Done
                } else {
                    WorkerState::Busy
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn runs_backs_off_and_finishes() {
        let (runner, stop) = WorkerRunner::new();
        let seen = Arc::new(Mutex::new(0));
        runner.spawn(Count(0, seen.clone()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*seen.lock().unwrap(), 5);
        let infos = runner.list();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].state, WorkerState::Done);
        assert_eq!(infos[0].last_error.as_deref(), Some("boom"));
        stop.stop(Duration::from_secs(1)).await;
    }

    struct Forever;
    impl Worker for Forever {
        fn name(&self) -> String {
            "forever".into()
        }
        fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
            Box::pin(async { Ok(WorkerState::Idle) })
        }
        fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }

    /// Fails every step; counts them.
    struct Failing(Arc<Mutex<u32>>, Duration);
    impl Worker for Failing {
        fn name(&self) -> String {
            "failing".into()
        }
        fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
            Box::pin(async move {
                if let Ok(mut g) = self.0.lock() {
                    *g += 1;
                }
                Err("down".into())
            })
        }
        fn max_backoff(&self) -> Duration {
            self.1
        }
    }

    /// A worker's own `max_backoff` caps the runner's exponential
    /// back-off: a heartbeat keeps retrying every second, not every 30 s.
    #[tokio::test(start_paused = true)]
    async fn max_backoff_caps_retries() {
        let (runner, stop) = WorkerRunner::new();
        let tries = Arc::new(Mutex::new(0));
        runner.spawn(Failing(tries.clone(), Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let n = *tries.lock().unwrap();
        // 100 ms doubling reaches the 1 s cap after 4 tries, then 1/s.
        assert!(n >= 55, "only {n} tries in 60 s");
        let infos = runner.list();
        assert_eq!(
            infos[0].state,
            WorkerState::Throttled(Duration::from_secs(1))
        );
        stop.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn stop_interrupts_idle_workers() {
        let (runner, stop) = WorkerRunner::new();
        runner.spawn(Forever);
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.stop(Duration::from_secs(1)).await;
        assert!(runner.handles.lock().unwrap().is_empty());
    }
}
