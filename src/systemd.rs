//! systemd integration: the `sd_notify` protocol (a datagram to `$NOTIFY_SOCKET`) and the
//! [`Hooks`](crate::Hooks) that speak it, for the `Type=notify` unit in `systemd/`.
//!
//! - `READY=1` once models are warmed and the catalog is loaded (`on_ready`), so `systemctl start`
//!   returns when the appliance can really work and `After=` units wait for that.
//! - `WATCHDOG=1` comes from the pipeline: after each processed frame (`on_frame`), at most every
//!   quarter of `WatchdogSec`. A wedged inference thread or a capture thread stuck in the driver
//!   stops the pings and systemd restarts the service. Before `READY=1` a helper thread pings
//!   instead — loading is guarded by `TimeoutStartSec`, not by the watchdog, because building
//!   TensorRT engines on a first start can take minutes.
//! - `STOPPING=1` when a shutdown signal arrives, `STATUS=` lines for `systemctl status`.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op. Written against the socket
//! directly: the protocol is one `sendto`, not worth a dependency.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Hooks;

/// Where notifications go, and how often systemd wants to hear from the watchdog.
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

enum Target {
    Path(PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`
    /// (the watchdog is ours only when `WATCHDOG_PID` is unset or names this process).
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let bytes = s.as_encoded_bytes();
            match bytes.first() {
                #[cfg(target_os = "linux")]
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(s))),
                _ => None,
            }
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(Duration::from_micros);
        Self { target, watchdog }
    }

    /// A notifier for a socket at `path` (tests).
    pub fn to_path(path: PathBuf, watchdog: Option<Duration>) -> Self {
        Self {
            target: Some(Target::Path(path)),
            watchdog,
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// systemd's `WatchdogSec`, when it set one for us.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Sends one notification ("READY=1", "WATCHDOG=1", "STATUS=…"); a no-op outside systemd.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p)?,
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        Ok(())
    }

    fn send(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(error = %e, state, "cannot notify systemd");
        }
    }
}

/// Wraps `hooks` so they also notify systemd: `READY=1` with `on_ready`, watchdog pings from
/// `on_frame` (and from a helper thread until ready). Returns the hooks and a function to call
/// when shutdown begins (`STOPPING=1`).
pub fn with_notify(hooks: Hooks, notifier: Notifier) -> (Hooks, Box<dyn FnOnce() + Send>) {
    let notifier = Arc::new(notifier);
    if !notifier.enabled() {
        return (hooks, Box::new(|| {}));
    }
    let ready = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    notifier.send("STATUS=loading the catalog and warming up the models");
    if let Some(every) = notifier.watchdog() {
        let (n, ready, done) = (notifier.clone(), ready.clone(), done.clone());
        let spawned = std::thread::Builder::new()
            .name("watchdog-startup".into())
            .spawn(move || {
                while !ready.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
                    n.send("WATCHDOG=1");
                    std::thread::sleep(every / 4);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the start-up watchdog thread");
        }
    }

    let Hooks {
        on_listen,
        on_ready,
        on_frame,
        on_staff_listen,
    } = hooks;
    let n = notifier.clone();
    let on_listen = Box::new(move |addr| {
        n.send(&format!(
            "STATUS=listening on http://{addr}/; loading the catalog and warming up the models"
        ));
        on_listen(addr);
    });
    let n = notifier.clone();
    let r = ready.clone();
    let on_ready = Box::new(move || {
        r.store(true, Ordering::Relaxed);
        // The ping resets the timer: the camera gets a whole WatchdogSec for its first frame.
        n.send("READY=1\nSTATUS=ready: waiting for frames\nWATCHDOG=1");
        on_ready();
    });
    let n = notifier.clone();
    let pacer = Pacer::new(notifier.watchdog().map(|w| w / 4));
    let first = AtomicBool::new(true);
    let on_frame: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        on_frame();
        if pacer.due() {
            if first.swap(false, Ordering::Relaxed) {
                n.send("STATUS=serving: frames are flowing");
            }
            n.send("WATCHDOG=1");
        }
    });
    let stopping = move || {
        done.store(true, Ordering::Relaxed);
        notifier.send("STOPPING=1\nSTATUS=shutting down");
    };
    (
        Hooks {
            on_listen,
            on_ready,
            on_frame,
            on_staff_listen,
        },
        Box::new(stopping),
    )
}

/// Lets a ping through at most once per `every` (never when there is no watchdog).
struct Pacer {
    every_ms: Option<u64>,
    base: Instant,
    /// Milliseconds after `base` of the last ping, plus one (0: never).
    last: AtomicU64,
}

impl Pacer {
    fn new(every: Option<Duration>) -> Self {
        Self {
            every_ms: every.map(|e| e.as_millis().max(1) as u64),
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn due(&self) -> bool {
        let Some(every) = self.every_ms else {
            return false;
        };
        let now = self.base.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now >= last + every)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn ready_then_paced_watchdog_pings_then_stopping() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");
        let notifier = Notifier::to_path(path, Some(Duration::from_millis(400)));
        let (hooks, stopping) = with_notify(Hooks::default(), notifier);
        // Before ready, the helper thread keeps the watchdog fed.
        std::thread::sleep(Duration::from_millis(250));
        let early = received(&sock);
        assert!(early[0].starts_with("STATUS="), "{early:?}");
        assert!(
            early.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
            "{early:?}"
        );
        (hooks.on_ready)();
        std::thread::sleep(Duration::from_millis(150));
        let at_ready = received(&sock);
        assert!(
            at_ready.iter().any(|m| m.starts_with("READY=1\n")),
            "{at_ready:?}"
        );
        // After ready only frames feed it, at most every 100 ms (a quarter of 400 ms).
        assert!(received(&sock).is_empty(), "the start-up pinger stopped");
        for _ in 0..30 {
            (hooks.on_frame)();
            std::thread::sleep(Duration::from_millis(10));
        }
        let pings = received(&sock)
            .into_iter()
            .filter(|m| m == "WATCHDOG=1")
            .count();
        assert!((2..=5).contains(&pings), "{pings} pings in ~300 ms");
        stopping();
        assert!(received(&sock).iter().any(|m| m.starts_with("STOPPING=1")));
    }

    #[test]
    fn outside_systemd_nothing_is_sent() {
        let n = Notifier {
            target: None,
            watchdog: Some(Duration::from_secs(1)),
        };
        assert!(!n.enabled());
        assert_eq!(n.watchdog(), None);
        assert!(n.notify("READY=1").is_ok());
    }
}
