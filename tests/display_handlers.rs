//! The display's HTTP side in-process (`oneshot` on the real router): the embedded page and its
//! assets, the shared JSON, the live event stream, the attract showcase, and the debug view's
//! privacy rules.

#[path = "display_support/state.rs"]
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use futures::StreamExt;
use state::{app, body_bytes, body_json, recs};

const STALE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary_with_nothing_external() {
    let t = app(false, STALE);
    let page = t.get("/").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = String::from_utf8(body_bytes(page).await).expect("utf8");
    assert!(html.contains("/assets/display.css") && html.contains("/assets/display.js"));
    for (path, kind) in [
        ("/assets/display.css", "text/css; charset=utf-8"),
        ("/assets/display.js", "text/javascript; charset=utf-8"),
    ] {
        let r = t.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], kind);
        let text = String::from_utf8(body_bytes(r).await).expect("utf8");
        // No web fonts, CDNs or analytics: nothing leaves the appliance.
        for external in ["http://", "https://", "//fonts.", "@import", "url("] {
            assert!(!text.contains(external), "{path} refers to {external}");
        }
    }
    for external in ["http://", "https://"] {
        assert!(!html.contains(external), "the page refers to {external}");
    }
}

#[tokio::test]
async fn recommendations_are_the_published_value_serialised_once() {
    let t = app(false, STALE);
    let published = recs(41, &["fm-0001", "fm-0002"]);
    t.publish(published.clone()).await;
    let r = t.get("/api/recommendations").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = body_bytes(r).await;
    // The pipeline names each image by its catalog path; clients get the URL it is served at.
    let mut expected = published.clone();
    for s in &mut expected.shoppers {
        for g in &mut s.garments {
            for it in &mut g.items {
                let file = it.image.strip_prefix("images/").expect("a catalog path");
                it.image = format!("/catalog/images/{file}");
            }
        }
    }
    assert_eq!(
        body,
        serde_json::to_vec(&expected).expect("json"),
        "the API returns exactly the published result, images as URLs"
    );
    // Every request shares the feed's bytes: same allocation, not a fresh serialisation.
    let a = t.state.display.feed.borrow().json.clone();
    let b = t.state.display.feed.borrow().json.clone();
    assert_eq!(a.as_ptr(), b.as_ptr());
}

/// Reads the next SSE event (`event:` name and `data:` JSON) from a stream of body chunks.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
) -> Option<(String, serde_json::Value)> {
    let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event within 20 s")?
        .expect("chunk");
    let text = String::from_utf8(chunk.to_vec()).expect("utf8");
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("event: "))
        .expect("event name")
        .to_string();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    Some((name, serde_json::from_str(data).expect("data is JSON")))
}

#[tokio::test]
async fn the_event_stream_says_hello_follows_changes_and_ends_at_shutdown() {
    let t = app(false, STALE);
    t.publish(recs(1, &["fm-0001"])).await;
    let r = t.get("/api/events").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut events = r.into_body().into_data_stream();

    let (name, hello) = next_event(&mut events).await.expect("hello");
    assert_eq!(name, "hello");
    assert_eq!(hello["boot"], t.state.display.boot_id.as_str());
    assert_eq!(hello["debug_view"], false);
    let (name, first) = next_event(&mut events).await.expect("current state");
    assert_eq!(name, "recommendations");
    assert_eq!(
        first["shoppers"][0]["garments"][0]["items"][0]["id"],
        "fm-0001"
    );
    assert_eq!(t.state.metrics.display_clients.get(), 1);

    // The same items in a new frame are not news; new items are.
    t.publish(recs(2, &["fm-0001"])).await;
    t.publish(recs(3, &["fm-0013", "fm-0026"])).await;
    let (_, next) = next_event(&mut events).await.expect("change");
    assert_eq!(next["frame_seq"], 3);
    assert_eq!(
        next["shoppers"][0]["garments"][0]["items"][1]["id"],
        "fm-0026"
    );

    // Shutdown ends the stream (so HTTP draining never waits on pages) and the count drops.
    t.closing.send_replace(true);
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream ends promptly");
    assert!(end.is_none(), "no more events after shutdown");
    drop(events);
    assert_eq!(t.state.metrics.display_clients.get(), 0);
    assert!(t.state.metrics.display_events.get() >= 2);
}

#[tokio::test]
async fn the_showcase_spreads_over_the_catalog_and_its_images_are_served() {
    let t = app(false, STALE);
    let r = t.get("/api/showcase?n=10").await;
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    let items = v["items"].as_array().expect("items");
    assert_eq!(items.len(), 10);
    let groups: std::collections::HashSet<&str> =
        items.iter().filter_map(|i| i["group"].as_str()).collect();
    assert!(groups.len() >= 3, "a mix of groups: {groups:?}");
    let img = items[3]["image"].as_str().expect("image url");
    let r = t.get(img).await;
    assert_eq!(r.status(), 200, "{img}");
    assert_eq!(r.headers()["content-type"], "image/jpeg");

    let bad = t.get("/api/showcase?n=0").await;
    refused(bad, 400, "between 1 and").await;
}

/// Asserts an answer of `status` whose JSON `error` says `says`.
async fn refused(r: Response<Body>, status: u16, says: &str) {
    assert_eq!(r.status(), status);
    let msg = body_json(r).await;
    assert!(
        msg["error"].as_str().is_some_and(|e| e.contains(says)),
        "{msg}"
    );
}

fn frame_request(peer: &str) -> Request<Body> {
    let mut req = Request::get("/debug/frame.jpg")
        .body(Body::empty())
        .expect("request");
    let addr: SocketAddr = peer.parse().expect("addr");
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

#[tokio::test]
async fn no_camera_image_leaves_the_pipeline_unless_the_debug_view_is_on_and_local() {
    // Off (the default): not served to anyone, and the reason says how to turn it on.
    let off = app(false, STALE);
    let r = off.send(frame_request("127.0.0.1:5000")).await;
    refused(r, 404, "server.debug_view").await;
    *off.state.display.debug_frame.lock().expect("lock") =
        Some(Arc::new(image::RgbImage::new(8, 8)));
    assert_eq!(
        off.send(frame_request("127.0.0.1:5000")).await.status(),
        404
    );

    // On: only browsers on the appliance itself get it, and only once a frame exists.
    let on = app(true, STALE);
    assert_eq!(on.send(frame_request("127.0.0.1:5000")).await.status(), 503);
    *on.state.display.debug_frame.lock().expect("lock") = Some(Arc::new(
        image::RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 30])),
    ));
    assert_eq!(
        on.send(frame_request("192.168.1.20:5000")).await.status(),
        403
    );
    assert_eq!(
        on.get("/debug/frame.jpg").await.status(),
        403,
        "unknown peer"
    );
    let r = on.send(frame_request("127.0.0.1:5000")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let jpeg = body_bytes(r).await;
    let img = image::load_from_memory(&jpeg).expect("a JPEG");
    assert_eq!((img.width(), img.height()), (64, 48));

    // The page learns whether to show the debug view from the stream's hello.
    let mut events = on.get("/api/events").await.into_body().into_data_stream();
    let chunk = events.next().await.expect("hello").expect("chunk");
    assert!(String::from_utf8_lossy(&chunk).contains("\"debug_view\":true"));
}
