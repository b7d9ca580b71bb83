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
}
