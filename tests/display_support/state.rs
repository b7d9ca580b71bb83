//! The HTTP application in-process for handler tests: the real router over real shared state
//! (the demo catalog, a real display feed), with the test standing in for the pipeline by
//! publishing [`Recommendations`] itself. Called with `tower::ServiceExt::oneshot`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use tokio::sync::watch;
use tower::ServiceExt;

use vitrine::capture::{CameraState, CameraStatus};
use vitrine::catalog::{Catalog, IndexParams};
use vitrine::http::display::{DisplayState, spawn_feed};
use vitrine::http::status::{ModelFile, StatusInfo};
use vitrine::http::{AppState, Readiness, router};
use vitrine::recommend::{GarmentRec, ItemRec, Recommendations, ShopperRec};
use vitrine::telemetry::Metrics;
use vitrine::vision::geometry::PixelBox;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    /// Stands in for the pipeline's publisher.
    pub publish: watch::Sender<Arc<Recommendations>>,
    /// Flipped by `run` at shutdown.
    pub closing: watch::Sender<bool>,
}

/// The app over the demo catalog; `debug_view` as in `server.debug_view`.
pub fn app(debug_view: bool, frame_stale: Duration) -> TestApp {
    let catalog = Catalog::load(&root().join("catalog/demo"), None, &IndexParams::default())
        .expect("demo catalog");
    let (publish, recs) = watch::channel(Arc::new(Recommendations::default()));
    let (closing, closing_rx) = watch::channel(false);
    let display = DisplayState::new(spawn_feed(recs.clone(), closing_rx), debug_view);
    let state = AppState {
        recommendations: recs,
        metrics: Arc::new(Metrics::default()),
        camera: Arc::new(Mutex::new(CameraStatus {
            source: "replay test".into(),
            state: CameraState::Opening,
            last_error: None,
            reconnects: 0,
            last_frame: None,
            last_frame_at: None,
        })),
        catalog: Arc::new(arc_swap::ArcSwap::from_pointee(catalog)),
        readiness: Arc::new(Readiness::default()),
        providers: Arc::new(RwLock::new(Vec::new())),
        frame_stale,
        started: Instant::now(),
        display,
        info: Arc::new(StatusInfo {
            version: env!("CARGO_PKG_VERSION"),
            config: root().join("vitrine.toml"),
            models: vec![ModelFile {
                role: "detector",
                name: "test-detector".into(),
                config: root().join("models/ssd_mobilenetv2_oidv4_int8.toml"),
                file: root().join("models/ssd_mobilenetv2_oidv4_int8.onnx"),
                sha256: "ab".repeat(32),
            }],
            onnxruntime: None,
            providers_requested: vec![],
            tensorrt_cache: None,
            debug_view,
            started_at: SystemTime::now(),
        }),
        channel: None,
    };
    TestApp {
        router: router(state.clone()),
        state,
        publish,
        closing,
    }
}

impl TestApp {
    pub async fn get(&self, uri: &str) -> Response<Body> {
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(req).await.expect("infallible")
    }

    /// Publishes a result as the pipeline would, and waits until the feed has serialised it.
    pub async fn publish(&self, recs: Recommendations) {
        let seq = recs.frame_seq;
        self.publish.send_replace(Arc::new(recs));
        let mut feed = self.state.display.feed.clone();
        tokio::time::timeout(
            Duration::from_secs(5),
            feed.wait_for(|f| f.frame_seq == seq),
        )
        .await
        .expect("the feed follows")
        .expect("feed open");
    }
}

pub async fn body_bytes(r: Response<Body>) -> Vec<u8> {
    axum::body::to_bytes(r.into_body(), 16 << 20)
        .await
        .expect("body")
        .to_vec()
}

pub async fn body_json(r: Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&body_bytes(r).await).expect("json body")
}

/// One shopper wearing a top, recommended the given demo-catalog items.
pub fn recs(seq: u64, item_ids: &[&str]) -> Recommendations {
    let catalog: Vec<serde_json::Value> =
        std::fs::read_to_string(root().join("catalog/demo/items.jsonl"))
            .expect("items")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
    let items = item_ids
        .iter()
        .map(|id| {
            let it = catalog
                .iter()
                .find(|i| i["id"] == *id)
                .unwrap_or_else(|| panic!("{id} is not in the demo catalog"));
            ItemRec {
                id: (*id).into(),
                name: it["name"].as_str().unwrap_or_default().into(),
                category: it["category"].as_str().unwrap_or_default().into(),
                price: it["price"].as_f64().unwrap_or_default(),
                currency: it["currency"].as_str().unwrap_or("EUR").into(),
                // As the pipeline publishes it: the catalog's path; the feed makes it a URL.
                image: it["image"].as_str().unwrap_or_default().into(),
                similarity: 0.8,
            }
        })
        .collect();
    Recommendations {
        frame_seq: seq,
        frame_width: 768,
        frame_height: 576,
        catalog_version: "demo-1".into(),
        shoppers: vec![ShopperRec {
            track_id: 1,
            bbox: PixelBox::from([100.0, 50.0, 200.0, 500.0]),
            in_view: true,
            garments: vec![GarmentRec {
                group: "top".into(),
                kind: None,
                bbox: PixelBox::from([110.0, 120.0, 190.0, 300.0]),
                items,
            }],
        }],
        ..Default::default()
    }
}
