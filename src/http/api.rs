//! The display's data: the newest recommendations as JSON, and catalog product images. The
//! pipeline names an item's image by its path in the catalog; [`image_url`] is the one place
//! that path becomes a URL.

use std::path::{Component, Path};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use crate::recommend::Recommendations;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/recommendations", get(recommendations))
        .route("/catalog/images/{*path}", get(catalog_image))
}

/// Where [`catalog_image`] serves a catalog item's image (`images/a.jpg` →
/// `/catalog/images/a.jpg`).
pub fn image_url(catalog_image: &str) -> String {
    format!(
        "/catalog/images/{}",
        catalog_image.trim_start_matches("images/")
    )
}

/// `recs` as clients get them: each item's image as the URL this server answers.
pub fn with_image_urls(recs: &Recommendations) -> Recommendations {
    let mut out = recs.clone();
    let items = out
        .shoppers
        .iter_mut()
        .flat_map(|s| &mut s.garments)
        .flat_map(|g| &mut g.items);
    for it in items {
        it.image = image_url(&it.image);
    }
    out
}

async fn recommendations(State(state): State<AppState>) -> impl IntoResponse {
    // Serialised once per publish by the display feed; each request shares the bytes.
    let json = state.display.feed.borrow().json.clone();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
}

/// A relative path with only normal components: no `..`, no root, no prefix.
pub fn safe_relative(p: &str) -> Option<&Path> {
    let path = Path::new(p);
    (!p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))).then_some(path)
}

async fn catalog_image(
    State(state): State<AppState>,
    UrlPath(path): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    if safe_relative(&path).is_none() {
        return Err(ApiError::BadRequest(format!("invalid image path '{path}'")));
    }
    let catalog = state.catalog.load_full();
    // `image_file` refuses links and anything outside the active version's images/.
    let file = catalog.image_file(&path).ok_or_else(|| {
        ApiError::NotFound(format!("no image '{path}' in catalog {}", catalog.version))
    })?;
    let mime = match file
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
    {
        Some(e) if e == "jpg" || e == "jpeg" => "image/jpeg",
        Some(e) if e == "png" => "image/png",
        Some(e) if e == "webp" => "image/webp",
        _ => return Err(ApiError::NotFound(format!("no image '{path}'"))),
    };
    // Files of a stored version never change, but the same URL may show a different file after
    // an import, so browsers keep images briefly and then revalidate by ETag (file identity).
    let meta = tokio::fs::metadata(&file)
        .await
        .map_err(|_| ApiError::NotFound(format!("no image '{path}'")))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{:x}-{:x}\"", meta.len(), modified);
    let cache = [
        (header::CACHE_CONTROL, "public, max-age=60".to_string()),
        (header::ETAG, etag.clone()),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok((axum::http::StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let bytes = tokio::fs::read(&file).await.map_err(|_| {
        ApiError::NotFound(format!("no image '{path}' in catalog {}", catalog.version))
    })?;
    Ok((cache, [(header::CONTENT_TYPE, mime)], bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        assert!(safe_relative("a/b.jpg").is_some());
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("a/../../b").is_none());
        assert!(safe_relative("").is_none());
    }

    #[test]
    fn catalog_image_paths_become_the_urls_served() {
        assert_eq!(image_url("images/a.jpg"), "/catalog/images/a.jpg");
        assert_eq!(image_url("images/sub/b.png"), "/catalog/images/sub/b.png");
        let recs = Recommendations {
            shoppers: vec![crate::recommend::ShopperRec {
                track_id: 1,
                bbox: [0.0, 0.0, 1.0, 1.0].into(),
                in_view: true,
                garments: vec![crate::recommend::GarmentRec {
                    group: "top".into(),
                    kind: None,
                    bbox: [0.0, 0.0, 1.0, 1.0].into(),
                    items: vec![crate::recommend::ItemRec {
                        id: "a".into(),
                        name: "A".into(),
                        category: "Shirt".into(),
                        price: 1.0,
                        currency: "EUR".into(),
                        image: "images/a.jpg".into(),
                        similarity: 0.5,
                    }],
                }],
            }],
            ..Default::default()
        };
        let out = with_image_urls(&recs);
        assert_eq!(
            out.shoppers[0].garments[0].items[0].image,
            "/catalog/images/a.jpg"
        );
        assert_eq!(recs.shoppers[0].garments[0].items[0].image, "images/a.jpg");
    }
}
