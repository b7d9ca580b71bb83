//! `vitrine bench http`: a load benchmark against a running daemon on this machine.
//!
//! It measures the two things the display side promises: `GET /api/recommendations` stays fast
//! under a steady request rate while the pipeline runs, and connected display pages do not slow
//! the pipeline down. Phases, each bounded in time:
//!
//! 1. pipeline frame rate and the daemon's CPU use with nothing else going on (from `/metrics`),
//! 2. the same with `display_clients` event streams open and read — phases 1 and 2 alternate for
//!    `rounds` rounds and medians are reported, because a shared machine's noise is larger than
//!    the effect being measured,
//! 3. an open-loop request rate on `/api/recommendations`: requests are scheduled at fixed times
//!    and latency is counted from the scheduled time, so a stalled server cannot hide its queue
//!    (no coordinated omission). The frame rate is sampled during this phase too.
//!
//! Loopback only (the appliance must not be used to load anything else) and plain HTTP/1.1 with
//! keep-alive over a handful of connections, written here directly: a benchmark client with few
//! moving parts, not a general one.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "{0}: the HTTP benchmark only talks to this machine; give a loopback address such as http://127.0.0.1:8080"
    )]
    NotLoopback(String),
    #[error("{url}: {message}")]
    Url { url: String, message: String },
    #[error("cannot reach the daemon at {addr}: {source}. Is `vitrine serve` running there?")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct HttpBenchOptions {
    pub addr: SocketAddr,
    /// Requests per second on `/api/recommendations`.
    pub rate: u32,
    /// Length of the request phase.
    pub duration: Duration,
    /// Keep-alive connections the requests are spread over.
    pub connections: usize,
    /// Event streams opened in phase 2.
    pub display_clients: usize,
    /// Length of each frame-rate measurement.
    pub window: Duration,
    /// Alternations of "alone" and "with display clients".
    pub rounds: usize,
}

impl HttpBenchOptions {
    /// Bounds that keep the benchmark a benchmark and not a flood.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=20_000).contains(&self.rate) {
            p.push(format!("--rate {} must be between 1 and 20000", self.rate));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(300) {
            p.push("--duration must be between 1 s and 300 s".into());
        }
        if self.window.is_zero() || self.window > Duration::from_secs(300) {
            p.push("--window must be between 1 s and 300 s".into());
        }
        if !(1..=256).contains(&self.connections) {
            p.push(format!(
                "--connections {} must be between 1 and 256",
                self.connections
            ));
        }
        if !(1..=20).contains(&self.rounds) {
            p.push(format!("--rounds {} must be between 1 and 20", self.rounds));
        }
        if self.display_clients > 1000 {
            p.push(format!(
                "--display-clients {} must be at most 1000",
                self.display_clients
            ));
        }
        p
    }
}

/// `http://127.0.0.1:8080/` → the socket address, refusing anything but loopback.
pub fn parse_url(url: &str) -> Result<SocketAddr, BenchError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| BenchError::Url {
        url: url.into(),
        message: "expected http://ADDRESS:PORT".into(),
    })?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hostport.parse().map_err(|_| BenchError::Url {
        url: url.into(),
        message: "expected http://ADDRESS:PORT with a numeric address, e.g. http://127.0.0.1:8080"
            .into(),
    })?;
    if !addr.ip().is_loopback() {
        return Err(BenchError::NotLoopback(url.into()));
    }
    Ok(addr)
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn latency(mut v: Vec<f64>) -> Latency {
    if v.is_empty() {
        return Latency {
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Latency {
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: v[v.len() - 1],
    }
}

/// One alternation of phases 1 and 2.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub fps_alone: f64,
    pub fps_with_clients: f64,
    /// CPU cores the daemon used (process CPU seconds per second).
    pub cpu_alone: f64,
    pub cpu_with_clients: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpBenchReport {
    pub target: String,
    pub ready: bool,
    /// The machine's 1-minute load average when the benchmark started (other work competing).
    pub load_average_at_start: Option<f64>,
    pub rounds: Vec<Round>,
    /// Medians over the rounds.
    pub fps_baseline: f64,
    pub display_clients: usize,
    pub fps_with_display_clients: f64,
    /// Percentage of the baseline frame rate lost with the display clients connected.
    pub fps_drop_with_display_clients_pct: f64,
    pub cpu_baseline: f64,
    pub cpu_with_display_clients: f64,
    pub display_events_received: u64,
    pub display_clients_connected_seen: f64,
    pub api_rate_target: u32,
    pub api_requests: u64,
    pub api_errors: u64,
    pub api_rate_achieved: f64,
    /// From the scheduled send time: includes any wait for a late timer or a busy connection.
    pub api_latency: Latency,
    /// From the moment the request was written to the last byte of the response.
    pub api_service_time: Latency,
    pub api_response_bytes: usize,
    pub fps_during_api_load: f64,
}

impl fmt::Display for HttpBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "vitrine bench http — {} (ready: {}, load average at start: {})",
            self.target,
            self.ready,
            self.load_average_at_start
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "unknown".into())
        )?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "  round {}: {:.2} fps / {:.2} cores alone, {:.2} fps / {:.2} cores with display clients",
                i + 1,
                r.fps_alone,
                r.cpu_alone,
                r.fps_with_clients,
                r.cpu_with_clients
            )?;
        }
        writeln!(
            f,
            "pipeline frame rate (median): {:.2} fps alone, {:.2} fps with {} display clients ({:+.1} % change; {} events received, {} clients seen in /metrics)",
            self.fps_baseline,
            self.fps_with_display_clients,
            self.display_clients,
            -self.fps_drop_with_display_clients_pct,
            self.display_events_received,
            self.display_clients_connected_seen
        )?;
        writeln!(
            f,
            "daemon CPU (median): {:.3} cores alone, {:.3} cores with the display clients",
            self.cpu_baseline, self.cpu_with_display_clients
        )?;
        writeln!(
            f,
            "GET /api/recommendations at {} req/s: {} requests, {} errors, {:.1} req/s achieved, {} bytes each",
            self.api_rate_target,
            self.api_requests,
            self.api_errors,
            self.api_rate_achieved,
            self.api_response_bytes
        )?;
        writeln!(
            f,
            "  latency from scheduled send: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.api_latency.p50_ms,
            self.api_latency.p90_ms,
            self.api_latency.p99_ms,
            self.api_latency.max_ms
        )?;
        writeln!(
            f,
            "  service time (request written → response read): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.api_service_time.p50_ms,
            self.api_service_time.p90_ms,
            self.api_service_time.p99_ms,
            self.api_service_time.max_ms
        )?;
        write!(
            f,
            "  pipeline frame rate during the request phase: {:.2} fps",
            self.fps_during_api_load
        )
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    io: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self, BenchError> {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|source| BenchError::Connect { addr, source })?;
        s.set_nodelay(true)?;
        Ok(Self {
            io: BufReader::new(s),
            host: addr.to_string(),
        })
    }

    async fn send_get(&mut self, path: &str) -> Result<(), BenchError> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n\r\n",
            self.host
        );
        self.io.get_mut().write_all(req.as_bytes()).await?;
        Ok(())
    }

    /// Reads a status line and headers; returns the status and the body length when known.
    async fn read_head(&mut self) -> Result<(u16, Option<usize>, bool), BenchError> {
        let mut line = String::new();
        if self.io.read_line(&mut line).await? == 0 {
            return Err(BenchError::Protocol(
                "the server closed the connection".into(),
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| BenchError::Protocol(format!("bad status line {line:?}")))?;
        let (mut len, mut chunked) = (None, false);
        loop {
            line.clear();
            if self.io.read_line(&mut line).await? == 0 {
                return Err(BenchError::Protocol("headers cut short".into()));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    len = v.parse().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        Ok((status, len, chunked))
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), BenchError> {
        self.send_get(path).await?;
        let (status, len, chunked) = self.read_head().await?;
        let mut body = Vec::new();
        if chunked {
            let mut line = String::new();
            loop {
                line.clear();
                self.io.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| BenchError::Protocol(format!("bad chunk size {line:?}")))?;
                let start = body.len();
                body.resize(start + n + 2, 0);
                self.io.read_exact(&mut body[start..]).await?;
                body.truncate(start + n);
                if n == 0 {
                    break;
                }
            }
        } else {
            let n = len.ok_or_else(|| {
                BenchError::Protocol(format!("{path}: response without a length"))
            })?;
            body.resize(n, 0);
            self.io.read_exact(&mut body).await?;
        }
        Ok((status, body))
    }
}

/// Frames processed so far, display clients connected, and the daemon's CPU seconds, from
/// `/metrics`.
async fn frames_processed(conn: &mut Conn) -> Result<(f64, f64, f64), BenchError> {
    let (status, body) = conn.get("/metrics").await?;
    if status != 200 {
        return Err(BenchError::Protocol(format!("/metrics answered {status}")));
    }
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let frames = value("vitrine_frames_processed_total").ok_or_else(|| {
        BenchError::Protocol("/metrics has no vitrine_frames_processed_total".into())
    })?;
    Ok((
        frames,
        value("vitrine_display_clients").unwrap_or(0.0),
        value("process_cpu_seconds_total").unwrap_or(0.0),
    ))
}

/// The pipeline's frame rate and the daemon's CPU cores over `window`, and the display clients
/// `/metrics` saw at the end.
async fn fps(conn: &mut Conn, window: Duration) -> Result<(f64, f64, f64), BenchError> {
    let (f0, _, c0) = frames_processed(conn).await?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (f1, clients, c1) = frames_processed(conn).await?;
    let s = t0.elapsed().as_secs_f64();
    Ok(((f1 - f0) / s, (c1 - c0) / s, clients))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Opens one display event stream and reads it until aborted; counts `recommendations` events.
async fn display_client(
    addr: SocketAddr,
    events: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<(), BenchError> {
    let mut c = Conn::open(addr).await?;
    c.send_get("/api/events").await?;
    let (status, _, _) = c.read_head().await?;
    if status != 200 {
        return Err(BenchError::Protocol(format!(
            "/api/events answered {status}"
        )));
    }
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if c.io.read_until(b'\n', &mut buf).await? == 0 {
            return Ok(());
        }
        // Chunked framing lines interleave with SSE lines; only event names matter here.
        if buf.starts_with(b"event: recommendations") {
            events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Runs the three phases against the daemon at `opts.addr`.
pub async fn run(opts: &HttpBenchOptions) -> Result<HttpBenchReport, BenchError> {
    let addr = opts.addr;
    let load_average_at_start = load_average();
    let mut probe = Conn::open(addr).await?;
    let (ready_status, _) = probe.get("/readyz").await?;

    // Phases 1 and 2, alternating: the pipeline alone, then with display clients connected.
    let events = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut rounds = Vec::with_capacity(opts.rounds);
    let mut seen = 0.0;
    for _ in 0..opts.rounds {
        let (fps_alone, cpu_alone, _) = fps(&mut probe, opts.window).await?;
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..opts.display_clients {
            clients.spawn(display_client(addr, events.clone()));
        }
        // Give every page time to connect and take its first events before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (fps_with_clients, cpu_with_clients, s) = fps(&mut probe, opts.window).await?;
        seen = s;
        clients.abort_all();
        while clients.join_next().await.is_some() {}
        // Let the daemon notice the closed streams before the next quiet window.
        tokio::time::sleep(Duration::from_secs(1)).await;
        rounds.push(Round {
            fps_alone,
            fps_with_clients,
            cpu_alone,
            cpu_with_clients,
        });
    }
    let fps_baseline = median(rounds.iter().map(|r| r.fps_alone).collect());
    let fps_with = median(rounds.iter().map(|r| r.fps_with_clients).collect());
    let drop_pct = if fps_baseline > 0.0 {
        (fps_baseline - fps_with) / fps_baseline * 100.0
    } else {
        0.0
    };

    // Phase 3: open-loop requests, spread round-robin over the connections.
    let mut senders = Vec::with_capacity(opts.connections);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.connections {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let mut conn = Conn::open(addr).await?;
        senders.push(tx);
        workers.spawn(async move {
            let (mut lat, mut service) = (Vec::new(), Vec::new());
            let (mut errors, mut bytes) = (0u64, 0usize);
            while let Some(scheduled) = rx.recv().await {
                let sent = Instant::now();
                match conn.get("/api/recommendations").await {
                    Ok((200, body)) => {
                        lat.push(scheduled.elapsed().as_secs_f64() * 1e3);
                        service.push(sent.elapsed().as_secs_f64() * 1e3);
                        bytes = body.len();
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (lat, service, errors, bytes)
        });
    }
    let (f0, _, _) = frames_processed(&mut probe).await?;
    let period = Duration::from_secs_f64(1.0 / f64::from(opts.rate));
    let total = (opts.duration.as_secs_f64() * f64::from(opts.rate)).round() as u64;
    let start = Instant::now();
    // The schedule runs on a thread of its own with the OS's sleep (tens of microseconds late)
    // rather than the async timer (whole milliseconds), so latency from the scheduled time
    // measures the server, not the load generator's clock.
    let scheduler = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + period.mul_f64(i as f64);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            // A closed channel means that worker gave up; its share counts as errors below.
            let _ = senders[(i as usize) % senders.len()].send(at);
        }
    });
    let mut lat = Vec::with_capacity(total as usize);
    let mut service = Vec::with_capacity(total as usize);
    let (mut errors, mut bytes) = (0u64, 0usize);
    while let Some(r) = workers.join_next().await {
        if let Ok((l, sv, e, b)) = r {
            lat.extend(l);
            service.extend(sv);
            errors += e;
            bytes = bytes.max(b);
        }
    }
    let _ = scheduler.join();
    let elapsed = start.elapsed().as_secs_f64();
    let (f1, _, _) = frames_processed(&mut probe).await?;
    let ok = lat.len() as u64;
    Ok(HttpBenchReport {
        target: format!("http://{addr}/"),
        ready: ready_status == 200,
        load_average_at_start,
        cpu_baseline: median(rounds.iter().map(|r| r.cpu_alone).collect()),
        cpu_with_display_clients: median(rounds.iter().map(|r| r.cpu_with_clients).collect()),
        rounds,
        fps_baseline,
        display_clients: opts.display_clients,
        fps_with_display_clients: fps_with,
        fps_drop_with_display_clients_pct: drop_pct,
        display_events_received: events.load(std::sync::atomic::Ordering::Relaxed),
        display_clients_connected_seen: seen,
        api_rate_target: opts.rate,
        api_requests: ok + errors,
        api_errors: errors + total.saturating_sub(ok + errors),
        api_rate_achieved: ok as f64 / elapsed,
        api_latency: latency(lat),
        api_service_time: latency(service),
        api_response_bytes: bytes,
        fps_during_api_load: (f1 - f0) / elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/").expect("ok").port(),
            8080
        );
        assert!(parse_url("http://localhost:9000").is_ok());
        assert!(parse_url("http://[::1]:9000/").is_ok());
        assert!(matches!(
            parse_url("http://10.0.0.5:8080/"),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(parse_url("https://127.0.0.1:8080/").is_err());
        assert!(parse_url("http://shop.example:8080/").is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = latency((1..=100).map(f64::from).collect());
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
    }

    #[test]
    fn options_are_bounded() {
        let o = HttpBenchOptions {
            addr: "127.0.0.1:1".parse().expect("addr"),
            rate: 0,
            duration: Duration::from_secs(1000),
            connections: 0,
            display_clients: 5000,
            window: Duration::from_secs(5),
            rounds: 0,
        };
        assert_eq!(o.problems().len(), 5);
    }
}
