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
//! Loopback only (the appliance must not be used to load anything else), HTTP/1.1 through
//! hyper's pooled client: keep-alive connections opened before the request phase and reused, so
//! the figures measure the server and not the client's connecting or parsing.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as _, Incoming};
use hyper::{Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::BenchError;

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

/// The daemon under test, through hyper's client: a pool of keep-alive connections shared by
/// every request (one connection per request in flight; an idle one is reused).
#[derive(Clone)]
pub(crate) struct Daemon {
    client: Client<HttpConnector, String>,
    addr: SocketAddr,
}

impl Daemon {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        // Requests are small and answered at once: Nagle's delay would be measured as latency.
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            addr,
        }
    }

    /// Sends `GET path` and returns the response once its head arrived.
    async fn send(&self, path: &str) -> Result<Response<Incoming>, BenchError> {
        let url = format!("http://{}{path}", self.addr);
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| BenchError::Url {
                url: url.clone(),
                message: e.to_string(),
            })?;
        self.client.get(uri).await.map_err(|source| {
            if source.is_connect() {
                BenchError::Connect {
                    addr: self.addr,
                    source,
                }
            } else {
                BenchError::Http {
                    path: path.into(),
                    source,
                }
            }
        })
    }

    /// `GET path`: the status and the whole body. Reading the body to its end is also what
    /// gives the connection back to the pool.
    pub(crate) async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), BenchError> {
        let response = self.send(path).await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(data) = next_data(&mut body, path).await? {
            out.extend_from_slice(&data);
        }
        Ok((status, out))
    }
}

/// The next piece of a response body's data (trailers skipped), `None` at its end.
async fn next_data(body: &mut Incoming, path: &str) -> Result<Option<Bytes>, BenchError> {
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            None => return Ok(None),
            Some(Err(source)) => {
                return Err(BenchError::Body {
                    path: path.into(),
                    source,
                });
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Frames processed so far, display clients connected, and the daemon's CPU seconds, from
/// `/metrics`.
async fn frames_processed(daemon: &Daemon) -> Result<(f64, f64, f64), BenchError> {
    let (status, body) = daemon.get("/metrics").await?;
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
async fn fps(daemon: &Daemon, window: Duration) -> Result<(f64, f64, f64), BenchError> {
    let (f0, _, c0) = frames_processed(daemon).await?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (f1, clients, c1) = frames_processed(daemon).await?;
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

/// Counts the `recommendations` events in an event stream's text, which arrives in pieces that
/// need not end at a line's end.
#[derive(Default)]
struct EventCounter {
    line: Vec<u8>,
}

impl EventCounter {
    /// Reads one piece; returns how many `recommendations` events it completed.
    fn feed(&mut self, data: &[u8]) -> u64 {
        let mut events = 0;
        for &b in data {
            if b == b'\n' {
                events += u64::from(self.line.starts_with(b"event: recommendations"));
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
        events
    }
}

/// Opens one display event stream and reads it until aborted; counts `recommendations` events.
async fn display_client(daemon: Daemon, events: Arc<AtomicU64>) -> Result<(), BenchError> {
    let path = "/api/events";
    let response = daemon.send(path).await?;
    if response.status() != 200 {
        return Err(BenchError::Protocol(format!(
            "{path} answered {}",
            response.status().as_u16()
        )));
    }
    let mut body = response.into_body();
    let mut counter = EventCounter::default();
    while let Some(data) = next_data(&mut body, path).await? {
        events.fetch_add(counter.feed(&data), Ordering::Relaxed);
    }
    Ok(())
}

/// Runs the three phases against the daemon at `opts.addr`.
pub async fn run(opts: &HttpBenchOptions) -> Result<HttpBenchReport, BenchError> {
    let addr = opts.addr;
    let load_average_at_start = super::load_average().map(|l| l[0]);
    let daemon = Daemon::new(addr);
    let (ready_status, _) = daemon.get("/readyz").await?;
    let events = Arc::new(AtomicU64::new(0));
    let (rounds, seen) = display_rounds(&daemon, opts, &events).await?;
    let fps_baseline = median(rounds.iter().map(|r| r.fps_alone).collect());
    let fps_with = median(rounds.iter().map(|r| r.fps_with_clients).collect());
    let drop_pct = if fps_baseline > 0.0 {
        (fps_baseline - fps_with) / fps_baseline * 100.0
    } else {
        0.0
    };
    let api = api_load(&daemon, opts).await?;
    let ok = api.latency.len() as u64;
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
        display_events_received: events.load(Ordering::Relaxed),
        display_clients_connected_seen: seen,
        api_rate_target: opts.rate,
        api_requests: ok + api.errors,
        api_errors: api.errors + api.scheduled.saturating_sub(ok + api.errors),
        api_rate_achieved: ok as f64 / api.elapsed_s,
        api_latency: latency(api.latency),
        api_service_time: latency(api.service),
        api_response_bytes: api.bytes,
        fps_during_api_load: api.frames / api.elapsed_s,
    })
}

/// Phases 1 and 2, alternating: the pipeline alone, then with display clients connected. Returns
/// the rounds and the display clients `/metrics` saw in the last one.
async fn display_rounds(
    daemon: &Daemon,
    opts: &HttpBenchOptions,
    events: &Arc<AtomicU64>,
) -> Result<(Vec<Round>, f64), BenchError> {
    let mut rounds = Vec::with_capacity(opts.rounds);
    let mut seen = 0.0;
    for _ in 0..opts.rounds {
        let (fps_alone, cpu_alone, _) = fps(daemon, opts.window).await?;
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..opts.display_clients {
            clients.spawn(display_client(daemon.clone(), events.clone()));
        }
        // Give every page time to connect and take its first events before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (fps_with_clients, cpu_with_clients, s) = fps(daemon, opts.window).await?;
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
    Ok((rounds, seen))
}

/// What phase 3 measured.
struct ApiLoad {
    /// Per answered request, ms: from the scheduled time, and from the moment it was sent.
    latency: Vec<f64>,
    service: Vec<f64>,
    errors: u64,
    scheduled: u64,
    bytes: usize,
    elapsed_s: f64,
    /// Frames the pipeline processed meanwhile.
    frames: f64,
}

/// Phase 3: open-loop requests, spread round-robin over `opts.connections` workers, each with
/// one request in flight at a time on a keep-alive connection of the pool.
async fn api_load(daemon: &Daemon, opts: &HttpBenchOptions) -> Result<ApiLoad, BenchError> {
    // Open the connections before the clock starts: as many requests at once as there will be
    // workers leave that many connections idle in the pool.
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..opts.connections {
        let d = daemon.clone();
        opening.spawn(async move { d.get("/healthz").await.map(|_| ()) });
    }
    while let Some(r) = opening.join_next().await {
        r.map_err(|e| BenchError::Protocol(format!("opening a connection: {e}")))??;
    }
    let mut senders = Vec::with_capacity(opts.connections);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.connections {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let daemon = daemon.clone();
        senders.push(tx);
        workers.spawn(async move {
            let (mut lat, mut service) = (Vec::new(), Vec::new());
            let (mut errors, mut bytes) = (0u64, 0usize);
            while let Some(scheduled) = rx.recv().await {
                let sent = Instant::now();
                match daemon.get("/api/recommendations").await {
                    Ok((200, body)) => {
                        lat.push(scheduled.elapsed().as_secs_f64() * 1e3);
                        service.push(sent.elapsed().as_secs_f64() * 1e3);
                        bytes = body.len();
                    }
                    Ok(_) => errors += 1,
                    // The daemon is gone: this worker gives up, its share counts as errors.
                    Err(BenchError::Connect { .. }) => {
                        errors += 1;
                        break;
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, service, errors, bytes)
        });
    }
    let (f0, _, _) = frames_processed(daemon).await?;
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
    let mut load = ApiLoad {
        latency: Vec::with_capacity(total as usize),
        service: Vec::with_capacity(total as usize),
        errors: 0,
        scheduled: total,
        bytes: 0,
        elapsed_s: 0.0,
        frames: 0.0,
    };
    while let Some(r) = workers.join_next().await {
        if let Ok((l, sv, e, b)) = r {
            load.latency.extend(l);
            load.service.extend(sv);
            load.errors += e;
            load.bytes = load.bytes.max(b);
        }
    }
    let _ = scheduler.join();
    load.elapsed_s = start.elapsed().as_secs_f64();
    let (f1, _, _) = frames_processed(daemon).await?;
    load.frames = f1 - f0;
    Ok(load)
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
    fn events_are_counted_across_pieces_of_the_stream() {
        let mut c = EventCounter::default();
        assert_eq!(c.feed(b"event: hello\ndata: {}\n\nevent: recommen"), 0);
        assert_eq!(c.feed(b"dations\ndata: {\"a\":1}\n\nevent: ping\n"), 1);
        assert_eq!(
            c.feed(b"event: recommendations\ndata: x\n\nevent: recommendations\n"),
            2
        );
        assert_eq!(c.feed(b"data: event: recommendations\n"), 0);
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
