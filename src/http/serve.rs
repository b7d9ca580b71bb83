//! The HTTP accept loop, with bounds a shop LAN needs: an open port must not let anyone stop
//! the pipeline by holding connections.
//!
//! - At most `max_connections` connections are open at once (shared by the main and the staff
//!   listener), far below the process's file-descriptor limit, so the camera, the models and the
//!   catalog always find descriptors. At the limit the oldest connection that has no request in
//!   progress is closed to make room, so a flood of idle sockets cannot lock real clients out.
//! - A request's headers must arrive within `header_timeout`, counted from the connection's
//!   start or the end of its previous response, so it is also the keep-alive idle timeout
//!   (hyper's own timer; slowloris sockets are closed by it).
//! - A connection on which nothing moves for `idle_timeout` while no handler is working (a body
//!   that stalls after its response, a client that stops reading) is closed.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};

/// The bounds of [`serve`], from `[server]` in the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// File descriptors kept free of HTTP connections: the camera or replay files, ONNX Runtime,
/// catalog versions being read and written, logs.
pub const RESERVED_FDS: u64 = 256;

/// The connection limit that fits the process's descriptor limit: `wanted`, or less (with a
/// warning) when fewer than `wanted` + [`RESERVED_FDS`] descriptors may be opened. Raises the
/// soft limit up to the hard one first, as a server is expected to.
pub fn fit_to_fd_limit(wanted: usize) -> usize {
    #[cfg(not(unix))]
    return wanted;
    #[cfg(unix)]
    return fit_unix(wanted);
}

#[cfg(unix)]
fn fit_unix(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return wanted;
    }
    let need = (wanted as u64).saturating_add(RESERVED_FDS);
    if lim.rlim_cur < need && lim.rlim_max > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: need.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    if lim.rlim_cur >= need {
        return wanted;
    }
    let fits = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(16) as usize;
    tracing::warn!(
        wanted,
        fits,
        nofile = lim.rlim_cur,
        "server.max_connections does not fit the open-file limit with {RESERVED_FDS} descriptors kept for the pipeline; using {fits} (raise LimitNOFILE)"
    );
    fits
}

/// One open connection, as the accept loop sees it when it must make room.
struct Conn {
    /// Requests whose handler has not answered yet.
    in_flight: AtomicUsize,
    /// Responses whose body is still being sent (the display's event stream never ends).
    streaming: AtomicUsize,
    /// Milliseconds since [`Pool::epoch`] of the last byte moved or request answered.
    last_active: AtomicU64,
    close: Notify,
}

/// The connections of every listener, and the permits that bound their number.
pub struct Pool {
    limits: ConnLimits,
    permits: Arc<Semaphore>,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

impl Pool {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            conns: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A permit for one more connection; at the limit, closes the oldest idle connection and
    /// waits for its permit.
    async fn admit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return p;
            }
            let victim = {
                let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
                let idle = |c: &&Arc<Conn>| c.in_flight.load(Ordering::Acquire) == 0;
                // Idle ones first, then event streams (browsers reconnect them by themselves);
                // never one whose handler is still working.
                conns
                    .values()
                    .filter(idle)
                    .find(|c| c.streaming.load(Ordering::Acquire) == 0)
                    .or_else(|| conns.values().find(idle))
                    .cloned()
            };
            match victim {
                Some(c) => {
                    c.close.notify_one();
                    // Its task drops the socket and the permit at once; a short wait covers a
                    // victim that started a request meanwhile.
                    if let Ok(Ok(p)) = tokio::time::timeout(
                        Duration::from_millis(100),
                        self.permits.clone().acquire_owned(),
                    )
                    .await
                    {
                        return p;
                    }
                }
                // Every connection is busy with a request: wait for one to end.
                None => {
                    if let Ok(p) = self.permits.clone().acquire_owned().await {
                        return p;
                    }
                }
            }
        }
    }

    fn register(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            streaming: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, c.clone());
        (id, c)
    }

    fn unregister(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Serves `app` on `listener` within the pool's bounds until `shutdown` completes, then lets
/// open requests finish (the caller bounds how long it waits for the returned future).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    pool: Arc<Pool>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (close_tx, close_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_warn: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, open = pool.open(), "cannot accept an HTTP connection");
                        last_warn = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Admitted after the accept, so room is made only for a client that is really there.
        let permit = tokio::select! {
            p = pool.admit() => p,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (pool, app, close_rx) = (pool.clone(), app.clone(), close_rx.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, app, &pool, close_rx).await;
            drop(permit);
        });
    }
    drop(close_rx);
    // Open connections finish their requests and close; each holds a receiver until then.
    let _ = close_tx.send(());
    close_tx.closed().await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    pool: &Pool,
    mut closing: watch::Receiver<()>,
) {
    let limits = pool.limits();
    let (id, conn) = pool.register();
    let io = IdleIo {
        inner: stream,
        conn: conn.clone(),
        epoch: pool.epoch,
        idle_ms: limits.idle_timeout.as_millis() as u64,
        sleep: Box::pin(tokio::time::sleep(limits.idle_timeout)),
    };
    let svc = {
        let conn = conn.clone();
        let epoch = pool.epoch;
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let working = Mark::new(conn.clone(), epoch, false);
            let app = app.clone();
            let conn = conn.clone();
            async move {
                let resp = tower::ServiceExt::oneshot(app, req.map(Body::new)).await;
                drop(working);
                let sending = Mark::new(conn, epoch, true);
                resp.map(|r| {
                    r.map(|inner| {
                        Body::new(Tracked {
                            inner,
                            _mark: sending,
                        })
                    })
                })
            }
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), svc);
    let mut served = std::pin::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = conn.close.notified() => {}
        _ = closing.changed() => {
            served.as_mut().graceful_shutdown();
            let _ = served.as_mut().await;
        }
    }
    pool.unregister(id);
}

/// Counts a request on its connection for as long as it lives: as working while its handler
/// runs, as sending while its response body is open.
struct Mark {
    conn: Arc<Conn>,
    epoch: Instant,
    streaming: bool,
}

impl Mark {
    fn new(conn: Arc<Conn>, epoch: Instant, streaming: bool) -> Self {
        conn.counter(streaming).fetch_add(1, Ordering::AcqRel);
        Self {
            conn,
            epoch,
            streaming,
        }
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        // The idle clock restarts when the handler answers or the body ends.
        self.conn
            .last_active
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.conn
            .counter(self.streaming)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    fn counter(&self, streaming: bool) -> &AtomicUsize {
        if streaming {
            &self.streaming
        } else {
            &self.in_flight
        }
    }
}

/// A response body that keeps its [`Mark`] until it is sent or dropped.
struct Tracked {
    inner: Body,
    _mark: Mark,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that fails with `TimedOut` once nothing has moved on it for the idle timeout while
/// no request is in progress.
struct IdleIo {
    inner: TcpStream,
    conn: Arc<Conn>,
    epoch: Instant,
    idle_ms: u64,
    sleep: Pin<Box<Sleep>>,
}

impl IdleIo {
    fn touch(&self) {
        self.conn
            .last_active
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Called when the socket has nothing to give: `Ready` with an error once idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.conn.in_flight.load(Ordering::Acquire) > 0 {
                // A handler is working; it bounds its own waits (e.g. an upload's receive timeout).
                return Poll::Pending;
            }
            let last = self.conn.last_active.load(Ordering::Relaxed);
            let deadline = self.epoch + Duration::from_millis(last.saturating_add(self.idle_ms));
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP connection idle for too long",
                ));
            }
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real server on port 0 with `limits`: `ok` on `/`, 64 MiB on `/big`.
    async fn server(limits: ConnLimits) -> (SocketAddr, Arc<Pool>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let app = Router::new()
            .route("/", axum::routing::any(|| async { "ok" }))
            .route("/big", axum::routing::get(|| async { vec![0u8; 64 << 20] }));
        let pool = Pool::new(limits);
        tokio::spawn(serve(l, app, pool.clone(), std::future::pending()));
        (addr, pool)
    }

    /// Reads until EOF or error; `true` when the server closed the socket within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(within, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_at_the_idle_timeout() {
        let (addr, pool) = server(ConnLimits {
            max_connections: 8,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(1),
        })
        .await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // The answer is far larger than the socket buffers, and nobody reads it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pool.open(), 1, "still sending");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(pool.open(), 0, "closed after the idle timeout");
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_idle_connection_makes_room() {
        let (addr, pool) = server(ConnLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        })
        .await;
        let mut oldest = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _second = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.open(), 2);
        assert!(
            !closed_within(&mut oldest, Duration::from_millis(300)).await,
            "nobody is closed before a new client needs the room"
        );
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            closed_within(&mut oldest, Duration::from_secs(1)).await,
            "the oldest idle connection was closed"
        );
    }
}
