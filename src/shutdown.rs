//! Stopping the daemon: the one signal every stage watches, and the handles [`crate::run`] waits
//! on when it is set.
//!
//! Stages are std threads (capture and inference block in camera drivers and ONNX Runtime, where
//! an `await` cannot reach them) and tokio tasks (the display feed). All of them watch the same
//! [`Stop`], a `watch` channel: a thread reads it between frames with [`Stop::is_set`] (a read
//! lock, no wake-ups), a task awaits [`Stop::wait`]. The signal is also set when its [`Stages`]
//! is dropped, so a `run` that returns early with an error leaves no stage running for nothing.
//!
//! The HTTP servers do not watch it: they stop last, after the stages have drained, so `/readyz`
//! keeps answering 503 while they do (see `HttpServers` in `lib.rs`).

use std::time::Duration;

use tokio::sync::watch;

/// The stop signal as a stage sees it. Cheap to clone; every clone sees the same signal.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// True once the daemon is stopping (or the [`Stages`] that owns the signal is gone).
    pub fn is_set(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Waits until the signal is set.
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which stops the stages too.
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// The signal as a plain `watch` receiver, for code that selects on one (the display feed).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}

/// A started stage as [`Stages::drain`] waits for it.
pub enum Handle {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl From<std::thread::JoinHandle<()>> for Handle {
    fn from(h: std::thread::JoinHandle<()>) -> Self {
        Handle::Thread(h)
    }
}

impl From<tokio::task::JoinHandle<()>> for Handle {
    fn from(h: tokio::task::JoinHandle<()>) -> Self {
        Handle::Task(h)
    }
}

/// The owning side of the signal, held by `run`: the stages it started, and the means to stop
/// them.
pub struct Stages {
    signal: watch::Sender<bool>,
    running: Vec<(&'static str, Handle)>,
}

/// A new stop signal, not set, and the (empty) list of stages that watch it.
pub fn channel() -> (Stages, Stop) {
    let (signal, rx) = watch::channel(false);
    (
        Stages {
            signal,
            running: Vec::new(),
        },
        Stop(rx),
    )
}

impl Stages {
    /// Another handle on the signal, for a stage about to start.
    pub fn stop(&self) -> Stop {
        Stop(self.signal.subscribe())
    }

    /// Remembers a started stage, to wait for it in [`Stages::drain`].
    pub fn add(&mut self, name: &'static str, handle: impl Into<Handle>) {
        self.running.push((name, handle.into()));
    }

    /// Sets the signal and waits up to `timeout` for every stage to end. A stage that panicked
    /// is logged; one still running after `timeout` is left behind (the process is exiting).
    pub async fn drain(self, timeout: Duration) {
        self.signal.send_replace(true);
        let waits = self.running.into_iter().map(|(name, handle)| async move {
            let panicked = match handle {
                Handle::Thread(t) => tokio::task::spawn_blocking(move || t.join().is_err())
                    .await
                    .unwrap_or(true),
                Handle::Task(t) => t.await.is_err(),
            };
            if panicked {
                tracing::error!(stage = name, "the stage panicked before it stopped");
            }
        });
        if tokio::time::timeout(timeout, futures::future::join_all(waits))
            .await
            .is_err()
        {
            tracing::warn!("stages did not stop within {timeout:?}; exiting anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_sets_the_signal_and_waits_for_threads_and_tasks() {
        let (mut stages, stop) = channel();
        assert!(!stop.is_set());
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.is_set() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = {
            let (mut stop, ended) = (stop.clone(), ended.clone());
            tokio::spawn(async move {
                stop.wait().await;
                ended.store(true, std::sync::atomic::Ordering::Relaxed);
            })
        };
        stages.add("thread", thread);
        stages.add("task", task);
        stages.drain(Duration::from_secs(10)).await;
        assert!(stop.is_set());
        assert!(ended.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[test]
    fn dropping_the_stages_stops_them_too() {
        let (stages, stop) = channel();
        assert!(!stop.is_set());
        drop(stages);
        assert!(
            stop.is_set(),
            "a run that returned early leaves nothing running"
        );
    }
}
