//! The storefront display: the page at `/` (HTML, CSS and JS compiled into the binary, nothing
//! fetched from outside), its live event stream, the attract-mode showcase, and the optional
//! technician debug view.
//!
//! Data enters from the pipeline's `watch` channel of [`Recommendations`]. [`spawn_feed`] turns
//! every published value into a [`FeedItem`] once — the JSON for `/api/recommendations` and the
//! ready-made Server-Sent-Events frame — so 500 API requests a second or 50 connected pages cost a
//! reference-count increment each, not a serialisation. Each page's stream
//! ([`events`]) sends only when what the page shows changed (shoppers, garments, items; not
//! timestamps), at most every [`MIN_EVENT_INTERVAL`], and ends when the daemon shuts down; the
//! browser's `EventSource` then reconnects by itself to the restarted daemon.
//!
//! Privacy: no camera image reaches the page unless `server.debug_view` is on, and even then the
//! frame is only served to browsers on the appliance itself (loopback peers), encoded on request
//! from memory and never written anywhere.

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::AppState;
use super::error::ApiError;
use crate::recommend::Recommendations;
use crate::telemetry::Metrics;

/// A page never gets more than five updates a second: its transitions take longer than that, and
/// 50 pages × 30 fps would be 1,500 writes a second for nothing.
pub const MIN_EVENT_INTERVAL: Duration = Duration::from_millis(200);
/// A `ping` event this often keeps proxies from closing an idle stream and lets the page notice
/// a dead connection (it reconnects after 40 s without any event).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Milliseconds the browser waits before reconnecting (the SSE `retry:` field).
const RECONNECT_MS: u32 = 1000;

const INDEX_HTML: &str = include_str!("assets/display.html");
const DISPLAY_CSS: &str = include_str!("assets/display.css");
const DISPLAY_JS: &str = include_str!("assets/display.js");

/// One published result, serialised once for every reader.
#[derive(Debug)]
pub struct FeedItem {
    pub frame_seq: u64,
    /// `Recommendations` as JSON, what `GET /api/recommendations` returns.
    pub json: Bytes,
    /// The same JSON as a complete SSE `recommendations` event.
    pub sse: Bytes,
    /// Hash of what the page shows (shoppers, garments, items); equal digests need no update.
    pub digest: u64,
}

impl FeedItem {
    pub fn new(recs: &Recommendations) -> Self {
        // Serialising plain structs of strings and numbers cannot fail; fall back to an empty
        // object rather than panic if it ever does.
        let json = serde_json::to_vec(&super::api::with_image_urls(recs))
            .unwrap_or_else(|_| b"{}".to_vec());
        let mut sse = Vec::with_capacity(json.len() + 64);
        sse.extend_from_slice(b"event: recommendations\nid: ");
        sse.extend_from_slice(recs.frame_seq.to_string().as_bytes());
        sse.extend_from_slice(b"\ndata: ");
        // Compact serde_json output has no raw newlines (they are escaped inside strings), so
        // the whole document is one `data:` line.
        sse.extend_from_slice(&json);
        sse.extend_from_slice(b"\n\n");
        Self {
            frame_seq: recs.frame_seq,
            json: Bytes::from(json),
            sse: Bytes::from(sse),
            digest: digest(recs),
        }
    }
}

/// What the page shows of `recs`, hashed: positions and timestamps are left out so a shopper
/// standing still does not cause updates.
fn digest(recs: &Recommendations) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    recs.catalog_version.hash(&mut h);
    for s in &recs.shoppers {
        s.track_id.hash(&mut h);
        s.in_view.hash(&mut h);
        for g in &s.garments {
            g.group.hash(&mut h);
            g.kind.hash(&mut h);
            for it in &g.items {
                it.id.hash(&mut h);
            }
        }
    }
    h.finish()
}

/// The newest frame, kept for the debug view only.
pub type DebugTap = Arc<Mutex<Option<Arc<RgbImage>>>>;

/// The display's part of the shared state.
#[derive(Clone)]
pub struct DisplayState {
    pub feed: watch::Receiver<Arc<FeedItem>>,
    /// `server.debug_view`: the page may show the camera image.
    pub debug_view: bool,
    /// Filled by the pipeline when (and only when) `debug_view` is on.
    pub debug_frame: DebugTap,
    /// Changes with every start of the daemon; pages use it to notice a restart.
    pub boot_id: String,
}

impl DisplayState {
    pub fn new(feed: watch::Receiver<Arc<FeedItem>>, debug_view: bool) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self {
            feed,
            debug_view,
            debug_frame: Arc::new(Mutex::new(None)),
            boot_id: format!("{:x}-{:x}", nanos, std::process::id()),
        }
    }
}

/// Serialises every value published on `recs` once, until `recs`' sender is dropped (the
/// pipeline ended) or `closing` turns true (shutdown). Dropping the feed's sender then ends every
/// page's event stream, so HTTP draining never waits on them.
pub fn spawn_feed(
    mut recs: watch::Receiver<Arc<Recommendations>>,
    mut closing: watch::Receiver<bool>,
) -> watch::Receiver<Arc<FeedItem>> {
    let first = Arc::new(FeedItem::new(&recs.borrow_and_update()));
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = recs.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let item = FeedItem::new(&recs.borrow_and_update());
                    tx.send_replace(Arc::new(item));
                }
                _ = closing.wait_for(|c| *c) => break,
            }
        }
    });
    rx
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/display.css", get(css))
        .route("/assets/display.js", get(js))
        .route("/api/events", get(events))
        .route("/api/showcase", get(showcase))
        .route("/debug/frame.jpg", get(debug_frame))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Assets change with the binary: revalidate after a restart instead of caching.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX_HTML);
    // Everything the page needs comes from this appliance; say so to the browser.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
        ),
    );
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", DISPLAY_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", DISPLAY_JS)
}

/// The first event of every stream: who is talking, so a page can tell a restart from a hiccup.
#[derive(Serialize)]
struct Hello<'a> {
    boot: &'a str,
    version: &'a str,
    debug_view: bool,
}

/// Counts a connected page for as long as its stream lives.
struct ClientGuard(Arc<Metrics>);

impl ClientGuard {
    fn new(m: Arc<Metrics>) -> Self {
        m.display_clients.inc();
        Self(m)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.display_clients.dec();
    }
}

struct Client {
    feed: watch::Receiver<Arc<FeedItem>>,
    hello: Option<Bytes>,
    last_digest: Option<u64>,
    last_sent: Option<Instant>,
    metrics: Arc<Metrics>,
    _guard: ClientGuard,
}

const PING: &[u8] = b"event: ping\ndata: {}\n\n";

/// The next chunk of one page's stream, `None` once the feed closed (shutdown).
async fn next_event(mut c: Client) -> Option<(Result<Bytes, Infallible>, Client)> {
    if let Some(hello) = c.hello.take() {
        return Some((Ok(hello), c));
    }
    loop {
        let mut item = c.feed.borrow_and_update().clone();
        if Some(item.digest) != c.last_digest {
            if let Some(t) = c.last_sent
                && t + MIN_EVENT_INTERVAL > Instant::now()
            {
                tokio::time::sleep_until(t + MIN_EVENT_INTERVAL).await;
                // Whatever arrived meanwhile supersedes what woke us.
                item = c.feed.borrow_and_update().clone();
            }
            c.last_digest = Some(item.digest);
            c.last_sent = Some(Instant::now());
            c.metrics.display_events.inc();
            return Some((Ok(item.sse.clone()), c));
        }
        match tokio::time::timeout(PING_INTERVAL, c.feed.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return None,
            Err(_) => return Some((Ok(Bytes::from_static(PING)), c)),
        }
    }
}

/// `GET /api/events`: the page's live stream (Server-Sent Events): `hello`, then
/// `recommendations` whenever what the page shows changes, and a `ping` when nothing does.
async fn events(State(state): State<AppState>) -> Response {
    let hello = Hello {
        boot: &state.display.boot_id,
        version: env!("CARGO_PKG_VERSION"),
        debug_view: state.display.debug_view,
    };
    let hello = format!(
        "retry: {RECONNECT_MS}\nevent: hello\ndata: {}\n\n",
        serde_json::to_string(&hello).unwrap_or_else(|_| "{}".into())
    );
    let client = Client {
        feed: state.display.feed.clone(),
        hello: Some(Bytes::from(hello)),
        last_digest: None,
        last_sent: None,
        metrics: state.metrics.clone(),
        _guard: ClientGuard::new(state.metrics.clone()),
    };
    let stream = futures::stream::unfold(client, next_event);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ShowcaseQuery {
    n: Option<usize>,
}

/// A catalog item for the attract screen.
#[derive(Serialize)]
struct ShowcaseItem<'a> {
    id: &'a str,
    name: &'a str,
    group: &'a str,
    category: &'a str,
    price: f64,
    currency: &'a str,
    image: String,
}

/// The most items `/api/showcase` returns.
const SHOWCASE_MAX: usize = 48;

/// `GET /api/showcase?n=12`: items spread evenly over the active catalog, for the attract
/// screen shown while nobody is in view.
async fn showcase(
    State(state): State<AppState>,
    Query(q): Query<ShowcaseQuery>,
) -> Result<Response, ApiError> {
    let n = q.n.unwrap_or(12);
    if !(1..=SHOWCASE_MAX).contains(&n) {
        return Err(ApiError::BadRequest(format!(
            "n = {n}: ask for between 1 and {SHOWCASE_MAX} items"
        )));
    }
    let catalog = state.catalog.load_full();
    let len = catalog.items.len();
    let take = n.min(len);
    // An even stride over the catalog (ordered by group in most bundles) mixes groups.
    let items: Vec<ShowcaseItem> = (0..take)
        .map(|k| catalog.item(k * len / take.max(1)))
        .map(|it| ShowcaseItem {
            id: &it.id,
            name: &it.name,
            group: &it.group,
            category: &it.category,
            price: it.price,
            currency: &it.currency,
            image: super::api::image_url(&it.image),
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "catalog_version": catalog.version,
        "items": items,
    }))
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// `GET /debug/frame.jpg`: the newest camera frame, for the technician's debug view. Refused
/// unless `server.debug_view` is on and the browser runs on the appliance itself.
async fn debug_frame(State(state): State<AppState>, parts: Parts) -> Result<Response, ApiError> {
    if !state.display.debug_view {
        return Err(ApiError::NotFound(
            "the debug view is off: set server.debug_view = true in the config and restart to see the camera image".into(),
        ));
    }
    let local = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    if !local {
        return Ok((
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({
                "error": "camera images are only shown to a browser on the appliance itself"
            })),
        )
            .into_response());
    }
    let frame = state
        .display
        .debug_frame
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(frame) = frame else {
        return Err(ApiError::Unavailable(
            "no frame has been processed yet".into(),
        ));
    };
    let jpeg = tokio::task::spawn_blocking(move || encode_jpeg(&frame))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
}

fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 70)
        .encode_image(img)
        .map_err(|e| format!("cannot encode the debug frame: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::{GarmentRec, ItemRec, ShopperRec};
    use crate::vision::geometry::PixelBox;

    fn recs(seq: u64, item: &str, x: f32) -> Recommendations {
        Recommendations {
            frame_seq: seq,
            shoppers: vec![ShopperRec {
                track_id: 1,
                bbox: PixelBox::from([x, 0.0, x + 10.0, 40.0]),
                in_view: true,
                garments: vec![GarmentRec {
                    group: "top".into(),
                    kind: None,
                    bbox: PixelBox::from([x, 5.0, x + 10.0, 20.0]),
                    items: vec![ItemRec {
                        id: item.into(),
                        name: "Line\nbreak \"quoted\"".into(),
                        category: "Shirt".into(),
                        price: 19.5,
                        currency: "EUR".into(),
                        image: "images/a.jpg".into(),
                        similarity: 0.9,
                    }],
                }],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn sse_frame_is_one_data_line_of_the_api_json() {
        let item = FeedItem::new(&recs(7, "fm-1", 0.0));
        let text = std::str::from_utf8(&item.sse).expect("utf8");
        assert!(text.starts_with("event: recommendations\nid: 7\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 3, "{text}");
        let data = text
            .lines()
            .nth(2)
            .expect("data")
            .trim_start_matches("data: ");
        assert_eq!(data.as_bytes(), &item.json[..]);
        let back: serde_json::Value = serde_json::from_slice(&item.json).expect("json");
        assert_eq!(back["shoppers"][0]["garments"][0]["items"][0]["id"], "fm-1");
        assert_eq!(
            back["shoppers"][0]["garments"][0]["items"][0]["image"], "/catalog/images/a.jpg",
            "the catalog's image path is served as a URL"
        );
    }

    #[test]
    fn digest_ignores_positions_and_times_but_not_items() {
        let a = FeedItem::new(&recs(1, "fm-1", 0.0));
        let moved = FeedItem::new(&recs(2, "fm-1", 30.0));
        let other = FeedItem::new(&recs(3, "fm-2", 0.0));
        assert_eq!(a.digest, moved.digest);
        assert_ne!(a.digest, other.digest);
        assert_ne!(a.digest, FeedItem::new(&Recommendations::default()).digest);
    }

    #[tokio::test]
    async fn feed_follows_the_pipeline_and_closes_on_shutdown() {
        let (tx, rx) = watch::channel(Arc::new(recs(1, "fm-1", 0.0)));
        let (close_tx, close_rx) = watch::channel(false);
        let mut feed = spawn_feed(rx, close_rx);
        assert_eq!(feed.borrow_and_update().frame_seq, 1);
        tx.send_replace(Arc::new(recs(2, "fm-2", 0.0)));
        feed.changed().await.expect("second value");
        assert_eq!(feed.borrow_and_update().frame_seq, 2);
        close_tx.send_replace(true);
        assert!(feed.changed().await.is_err(), "the feed ends on shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_sends_hello_then_changes_only_paced_and_pings_when_idle() {
        let (tx, rx) = watch::channel(Arc::new(FeedItem::new(&recs(1, "fm-1", 0.0))));
        let metrics = Arc::new(Metrics::default());
        let client = Client {
            feed: rx,
            hello: Some(Bytes::from_static(b"hello")),
            last_digest: None,
            last_sent: None,
            metrics: metrics.clone(),
            _guard: ClientGuard::new(metrics.clone()),
        };
        assert_eq!(metrics.display_clients.get(), 1);
        let text = |b: &Result<Bytes, Infallible>| match b {
            Ok(b) => String::from_utf8_lossy(b).into_owned(),
            Err(e) => match *e {},
        };
        let (b, c) = next_event(client).await.expect("hello");
        assert_eq!(text(&b), "hello");
        let (b, c) = next_event(c).await.expect("current");
        assert!(text(&b).contains("\"fm-1\""));
        let sent_at = Instant::now();
        // A moved box is no news; a new item is, but not sooner than the interval.
        tx.send_replace(Arc::new(FeedItem::new(&recs(2, "fm-1", 50.0))));
        tx.send_replace(Arc::new(FeedItem::new(&recs(3, "fm-3", 0.0))));
        let (b, c) = next_event(c).await.expect("change");
        assert!(text(&b).contains("\"fm-3\""));
        assert!(Instant::now() - sent_at >= MIN_EVENT_INTERVAL);
        let (b, c) = next_event(c).await.expect("ping");
        assert!(text(&b).starts_with("event: ping"));
        drop(tx);
        assert!(
            next_event(c).await.is_none(),
            "the stream ends with the feed"
        );
        assert_eq!(metrics.display_clients.get(), 0);
        assert_eq!(metrics.display_events.get(), 2);
    }
}
