//! The daemon speaks systemd's notify protocol as `Type=notify` and `WatchdogSec=` expect: a
//! socket stands in for systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) and the real daemon runs on a
//! replay folder. READY=1 comes once it is ready; watchdog pings come while frames flow and stop
//! when they stop (so systemd would restart a wedged pipeline); SIGTERM sends STOPPING=1 and the
//! process exits cleanly and promptly, even with a display page connected.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use common::{bin, config_in, root};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let frames = dir.path().join("frames");
    let away = dir.path().join("away");
    std::fs::create_dir_all(&frames).expect("mkdir");
    std::fs::create_dir_all(&away).expect("mkdir");
    for i in 0..6 {
        let name = format!("vtest_{i:04}.jpg");
        std::fs::copy(
            root().join("models/demo/frames").join(&name),
            frames.join(&name),
        )
        .expect("copy");
    }
    let cfg = config_in(dir.path(), |t| {
        t.replace(
            &format!("{}/models/demo/frames", root().display()),
            &frames.display().to_string(),
        )
    });
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");

    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        // 2 s: the daemon pings at most every 0.5 s.
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "warn,vitrine=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vitrine");
    let out = child.stdout.take().expect("stdout");
    let d = Killed(child);
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split('/').next().map(String::from);
        }
        if line.contains("vitrine ready") {
            break;
        }
    }
    let addr = addr.expect("the daemon listened");

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

    let pid = d.0.id();
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let msgs = drain(&sock, Duration::from_millis(500));
    assert!(
        msgs.iter().any(|m| m.starts_with("STOPPING=1")),
        "STOPPING=1 on SIGTERM: {msgs:?}"
    );
    // The page's stream ends (the browser will reconnect to the next daemon)...
    let mut rest = Vec::new();
    let _ = page.read_to_end(&mut rest);
    // ...and the process exits cleanly well within systemd's TimeoutStopSec.
    let mut d = d;
    let status = loop {
        if let Some(s) = d.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "vitrine did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit: {status:?}");
    eprintln!("exited {:.2} s after SIGTERM", sent.elapsed().as_secs_f64());
}
