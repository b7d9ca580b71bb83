//! Recommendations: shoppers followed across frames, their garment embeddings smoothed, and the
//! similar catalog items shown for each garment.
//!
//! Detections are per frame and noisy; a display that changed with every frame would be useless.
//! So shoppers are followed with an IoU tracker, each garment's embedding is an exponential moving
//! average, its list only switches when a different list wins on consecutive updates, and a
//! garment is re-embedded only when its box moved enough or its embedding got old — the rest of the
//! time the track's embedding stands (the largest saving of the pipeline, see issue 7).

pub mod tracker;

use serde::Serialize;

use crate::vision::geometry::PixelBox;

pub use tracker::{Tracker, TrackerSettings};

/// One catalog item as the display shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemRec {
    pub id: String,
    pub name: String,
    pub category: String,
    pub price: f64,
    pub currency: String,
    /// The product image as the catalog lists it (`images/…`, inside the catalog version). The
    /// HTTP layer turns it into the URL it serves the image under ([`crate::http::api::image_url`]).
    pub image: String,
    pub similarity: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GarmentRec {
    pub group: String,
    /// The detector's label when the garment is a detection of its own (e.g. "Footwear").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub bbox: PixelBox,
    pub items: Vec<ItemRec>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShopperRec {
    /// Stable while the shopper stays in view; never reused within a run.
    pub track_id: u64,
    pub bbox: PixelBox,
    /// False for a shopper lost in this frame but still inside the track timeout.
    pub in_view: bool,
    pub garments: Vec<GarmentRec>,
}

/// What `GET /api/recommendations` returns and the display renders.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Recommendations {
    pub frame_seq: u64,
    pub frame_width: u32,
    pub frame_height: u32,
    /// RFC 3339 time the frame was captured.
    pub captured_at: String,
    pub published_at: String,
    /// From capture to publication of this result.
    pub latency_ms: f64,
    pub catalog_version: String,
    pub shoppers: Vec<ShopperRec>,
}
