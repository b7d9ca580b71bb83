//! The display's data: the newest recommendations as JSON, and catalog product images.

use std::path::{Component, Path};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use super::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/recommendations", get(recommendations))
        .route("/catalog/images/{*path}", get(catalog_image))
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
) -> Result<impl IntoResponse, ApiError> {
    let rel = safe_relative(&path)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid image path '{path}'")))?;
    let catalog = state.catalog.load_full();
    let file = catalog.root.join("images").join(rel);
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
    let bytes = tokio::fs::read(&file).await.map_err(|_| {
        ApiError::NotFound(format!("no image '{path}' in catalog {}", catalog.version))
    })?;
    // Images of a catalog version never change; a new version serves new URLs' content.
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        bytes,
    ))
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
}
