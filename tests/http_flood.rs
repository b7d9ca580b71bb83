//! A connection flood on loopback against the real daemon, with its open-file limit lowered so
//! the flood alone could exhaust it: slowloris sockets are closed after the header timeout, and
//! while more idle sockets than the limit are held open (and reopened as the daemon closes
//! them) the pipeline keeps its frame rate and a normal client still gets answers. Bounded in
//! count and time; it stops by itself.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::{Daemon, config_in};

/// The daemon's open-file limit (soft and hard): below the flood, so without a connection
/// limit the flood takes every descriptor.
const NOFILE: u64 = 1024;
const MAX_CONNECTIONS: usize = 300;
const HEADER_TIMEOUT_S: u64 = 3;
const FLOOD: usize = 1100;
const SLOWLORIS: usize = 100;
const WINDOW: Duration = Duration::from_secs(12);

fn frames_processed(client: &reqwest::blocking::Client, d: &Daemon) -> f64 {
    let text = client
        .get(d.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    text.lines()
        .find(|l| l.starts_with("vitrine_frames_processed_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("frames counter")
}

/// Frames per second over `window`.
fn frame_rate(client: &reqwest::blocking::Client, d: &Daemon, window: Duration) -> f64 {
    let (f0, t0) = (frames_processed(client, d), Instant::now());
    std::thread::sleep(window);
    (frames_processed(client, d) - f0) / t0.elapsed().as_secs_f64()
}

/// Whether the daemon has closed `s` (EOF or reset), without blocking.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Slowloris: headers trickled a line every 500 ms, never finished. Returns how long each
/// socket lived before the daemon closed it (`None`: still open after `give_up`).
fn slowloris(addr: SocketAddr, n: usize, give_up: Duration) -> Vec<Option<Duration>> {
    let start = Instant::now();
    let mut socks: Vec<Option<TcpStream>> = (0..n)
        .map(|_| {
            let mut s = connect(addr)?;
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    let mut lived = vec![None; n];
    while start.elapsed() < give_up && lived.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(500));
        for (i, s) in socks.iter_mut().enumerate() {
            if lived[i].is_some() {
                continue;
            }
            let gone = match s {
                None => true,
                Some(s) => closed(s) || s.write_all(b"X-Slow: 1\r\n").is_err(),
            };
            if gone {
                lived[i] = Some(start.elapsed());
                *s = None;
            }
        }
    }
    lived
}

#[test]
fn a_connection_flood_neither_stops_the_pipeline_nor_locks_clients_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config_in(dir.path(), |t| {
        t.replace(
            "max_connections = 1024",
            &format!("max_connections = {MAX_CONNECTIONS}"),
        )
        .replace(
            "header_timeout_s = 10",
            &format!("header_timeout_s = {HEADER_TIMEOUT_S}"),
        )
    });
    let d = Daemon::start_with(&["--config", cfg.to_str().expect("utf8")], |c| {
        // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limit.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    d.wait_ready(Duration::from_secs(120));
    let addr: SocketAddr = d.addr.parse().expect("addr");
    // A fresh connection per request, as a display reconnecting would make.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let before = frame_rate(&client, &d, Duration::from_secs(5));
    eprintln!("frame rate before the flood: {before:.1} fps");
    assert!(before > 1.0, "the pipeline runs: {before:.1} fps");

    // Slowloris sockets are closed once the header timeout has passed.
    let lived = slowloris(addr, SLOWLORIS, Duration::from_secs(HEADER_TIMEOUT_S + 10));
    let open = lived.iter().filter(|l| l.is_none()).count();
    let longest = lived.iter().flatten().max().copied().unwrap_or_default();
    eprintln!("slowloris: {SLOWLORIS} sockets, longest lived {longest:?}, {open} still open");
    assert_eq!(open, 0, "slowloris sockets outlived the header timeout");
    assert!(
        longest <= Duration::from_secs(HEADER_TIMEOUT_S + 3),
        "closed only after {longest:?}"
    );

    // The flood: more idle sockets than the descriptor limit, reopened as they are closed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut socks: Vec<Option<TcpStream>> = Vec::with_capacity(FLOOD);
            let mut opened = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for s in socks.iter_mut() {
                    if s.as_mut().is_none_or(closed) {
                        *s = connect(addr);
                        opened += 1;
                    }
                }
                while socks.len() < FLOOD {
                    socks.push(connect(addr));
                    opened += 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let (f0, t0) = (frames_processed(&client, &d), Instant::now());
    let mut latencies = Vec::new();
    while t0.elapsed() < WINDOW {
        for path in ["/readyz", "/api/recommendations"] {
            let t = Instant::now();
            let r = client.get(d.url(path)).send();
            let status = r.as_ref().map(|r| r.status().as_u16());
            assert!(
                matches!(status, Ok(200)),
                "{path} during the flood: {r:?}\n{}",
                d.log()
            );
            latencies.push(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let during = (frames_processed(&client, &d) - f0) / t0.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().expect("flood thread");
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    eprintln!(
        "flood: {FLOOD} sockets held, {opened} opened in all; frame rate {during:.1} fps (before {before:.1}); \
         client latency p50 {:?} p95 {:?} max {:?} over {} requests",
        pct(0.5),
        pct(0.95),
        pct(1.0),
        latencies.len()
    );
    assert!(
        opened > FLOOD,
        "the daemon closed flood sockets to make room"
    );
    // Without the limit the replay camera cannot open its next file and the rate drops to 0;
    // half is the margin for a machine shared with other test daemons.
    assert!(
        during >= 0.5 * before,
        "the pipeline slowed from {before:.1} to {during:.1} fps during the flood"
    );
    assert!(
        pct(0.95) < Duration::from_secs(2),
        "clients waited {:?} (p95)",
        pct(0.95)
    );
    assert!(d.terminate(Duration::from_secs(15)).success());
}
