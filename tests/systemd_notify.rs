//! The daemon speaks systemd's notify protocol as `Type=notify` and `WatchdogSec=` expect: a
//! socket stands in for systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) and the real daemon runs on a
//! replay folder. READY=1 comes once it is ready; watchdog pings come while frames flow and stop
//! when they stop (so systemd would restart a wedged pipeline); SIGTERM sends STOPPING=1 and the
//! process exits cleanly and promptly, even with a display page connected.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Daemon, config_with_frames, demo_frames};

/// Notifications received within `window`.
fn drain(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

fn pings(msgs: &[String]) -> usize {
    msgs.iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

fn move_all(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).expect("list") {
        let p = e.expect("entry").path();
        std::fs::rename(&p, to.join(p.file_name().expect("name"))).expect("move");
    }
}

#[test]
fn ready_watchdog_from_frames_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let frames = demo_frames(dir.path(), 6);
    let away = dir.path().join("away");
    std::fs::create_dir_all(&away).expect("mkdir");
    let cfg = config_with_frames(dir.path(), &frames, |t| t);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");

    let d = Daemon::start_with(&["--config", cfg.to_str().expect("utf8")], |c| {
        c.env("NOTIFY_SOCKET", &sock_path)
            // 2 s: the daemon pings at most every 0.5 s.
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("WATCHDOG_PID");
    });
    d.wait_ready(Duration::from_secs(120));
    let addr = d.addr.clone();

    // Start-up: status lines, pings while loading, then READY=1 once it is ready.
    let msgs = drain(&sock, Duration::from_millis(300));
    assert!(
        msgs.iter().any(|m| m.starts_with("STATUS=")),
        "status lines: {msgs:?}"
    );
    let ready_at = msgs.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    assert!(ready_at.is_some(), "READY=1 once ready: {msgs:?}");

    // Frames flow: the pipeline feeds the watchdog, about every 0.5 s.
    let flowing = drain(&sock, Duration::from_secs(3));
    assert!(pings(&flowing) >= 3, "pings while frames flow: {flowing:?}");

    // Frames stop (camera gone): no more pings, so systemd would restart the service.
    move_all(&frames, &away);
    let _ = drain(&sock, Duration::from_millis(1500)); // frames already taken finish
    let stopped = drain(&sock, Duration::from_secs(3));
    assert_eq!(pings(&stopped), 0, "no pings without frames: {stopped:?}");

    // Frames return: pings resume (the supervisor reconnects within its backoff).
    move_all(&away, &frames);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && pings(&drain(&sock, Duration::from_secs(1))) == 0 {}
    assert!(
        pings(&drain(&sock, Duration::from_secs(2))) >= 1,
        "pings resume with frames"
    );

    // A display page is connected when SIGTERM arrives.
    let mut page = TcpStream::connect(&addr).expect("connect");
    write!(
        page,
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive\r\n\r\n"
    )
    .expect("request");
    page.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut first = [0u8; 256];
    let n = page.read(&mut first).expect("response");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    let sent = Instant::now();
    d.sigterm();
    let msgs = drain(&sock, Duration::from_millis(500));
    assert!(
        msgs.iter().any(|m| m.starts_with("STOPPING=1")),
        "STOPPING=1 on SIGTERM: {msgs:?}"
    );
    // The page's stream ends (the browser will reconnect to the next daemon)...
    let mut rest = Vec::new();
    let _ = page.read_to_end(&mut rest);
    // ...and the process exits cleanly well within systemd's TimeoutStopSec.
    let status = d.wait_exit(sent, Duration::from_secs(15));
    assert!(status.success(), "clean exit: {status:?}");
    eprintln!("exited {:.2} s after SIGTERM", sent.elapsed().as_secs_f64());
}
