//! The staff catalog API under `/api/catalog`: upload a bundle, follow its import job, edit
//! single items, list, activate and roll back versions.
//!
//! Every route needs `Authorization: Bearer <token>` (the token comes from a file or an
//! environment variable named in the config, compared in constant time); without a configured
//! token every request is refused. Handlers parse the request and call the
//! [`CatalogService`]; the service receives an upload under its size limit, validates, embeds,
//! indexes and stores on its own lower-priority thread, and answers the upload with the verdict
//! of validation (4xx with the offending rows, or 202 with the job). What stays here is HTTP:
//! the token, the item body's JSON, draining refused bodies, and the errors' paths made relative
//! to the data folder. The router can be merged into the main one or served on its own address
//! (`server.staff_listen`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::catalog::import::{CatalogService, Edit, UploadRequest, next_chunk};
use crate::catalog::{CatalogError, Item};
use crate::config::StaffToken;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct StaffState {
    pub service: Arc<CatalogService>,
    pub token: Option<StaffToken>,
    pub metrics: Arc<Metrics>,
    /// An upload that sends nothing for this long is abandoned (`catalog.receive_timeout_s`).
    pub receive_timeout: Duration,
}

impl StaffState {
    pub fn new(
        service: Arc<CatalogService>,
        token: Option<StaffToken>,
        metrics: Arc<Metrics>,
        receive_timeout: Duration,
    ) -> Self {
        Self {
            service,
            token,
            metrics,
            receive_timeout,
        }
    }
}

/// Largest JSON body of an item edit (its image travels inside it, base64-encoded).
const ITEM_BODY_LIMIT: usize = 32 << 20;

pub fn router(state: StaffState) -> Router {
    Router::new()
        .route("/api/catalog", get(summary))
        .route("/api/catalog/versions", get(versions))
        .route("/api/catalog/versions/{id}/activate", post(activate))
        .route("/api/catalog/rollback", post(rollback))
        .route("/api/catalog/bundles", post(upload))
        .route("/api/catalog/jobs", get(jobs))
        .route("/api/catalog/jobs/{id}", get(job))
        .route(
            "/api/catalog/items/{id}",
            put(put_item).delete(delete_item).get(get_item),
        )
        .layer(middleware::from_fn_with_state(
            Arc::<str>::from(state.service.config().data_dir.display().to_string()),
            relative_paths,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            super::count_requests,
        ))
        .with_state(state)
}

fn item_too_large() -> ApiError {
    ApiError::TooLarge(format!(
        "the item is larger than {} MiB: send a smaller image (image_base64)",
        ITEM_BODY_LIMIT >> 20
    ))
}

/// Compares SHA-256 digests in constant time, so neither the content nor the length of the
/// configured token leaks through response timing.
pub fn token_matches(given: &str, expected: &StaffToken) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    a.ct_eq(&b).into()
}

async fn require_token(State(s): State<StaffState>, req: Request, next: Next) -> Response {
    let Some(expected) = &s.token else {
        return refuse(req, ApiError::StaffDisabled).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(given.trim(), expected) {
        next.run(req).await
    } else {
        refuse(req, ApiError::Unauthorized).await
    }
}

/// Largest JSON answer [`relative_paths`] rewrites; errors and job reports are far smaller.
const REWRITE_LIMIT: u64 = 1 << 20;

/// JSON answers (errors, job reports) name files relative to the data folder
/// (`work/j…/items.jsonl`): where the folder lies on the box is none of the client's business,
/// and it only makes messages long.
async fn relative_paths(State(root): State<Arc<str>>, req: Request, next: Next) -> Response {
    use http_body::Body as _;
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let small = resp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= REWRITE_LIMIT);
    if !json || !small || root.len() < 2 {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, REWRITE_LIMIT as usize).await else {
        return ApiError::Internal("a staff answer could not be read back".into()).into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains(&*root) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let root = root.trim_end_matches('/');
    let fixed = text
        .replace(&format!("{root}/"), "")
        .replace(root, "the data folder");
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(fixed))
}

async fn summary(State(s): State<StaffState>) -> impl IntoResponse {
    let c = s.service.shared().load_full();
    let groups: serde_json::Map<String, serde_json::Value> =
        c.groups().map(|(g, n)| (g.to_string(), json!(n))).collect();
    Json(json!({
        "version": c.version,
        "label": c.label,
        "items": c.items.len(),
        "groups": groups,
        "dim": c.dim,
        "writable": s.service.writable().is_ok(),
        "upload_limit_bytes": s.service.config().upload_limit,
    }))
}

async fn versions(State(s): State<StaffState>) -> Result<impl IntoResponse, ApiError> {
    let v = s.service.versions()?;
    Ok(Json(json!({
        "active": v.active.as_ref().map(|a| a.active.clone()),
        "rollback_to": v.active.and_then(|a| a.history.last().cloned()),
        "versions": v.list,
    })))
}

async fn activate(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let info = s.service.activate_async(id).await?;
    Ok(Json(
        json!({ "active": info.id, "label": info.label, "items": info.item_count }),
    ))
}

async fn rollback(State(s): State<StaffState>) -> Result<impl IntoResponse, ApiError> {
    let info = s.service.rollback_async().await?;
    Ok(Json(
        json!({ "active": info.id, "label": info.label, "items": info.item_count }),
    ))
}

async fn jobs(State(s): State<StaffState>) -> impl IntoResponse {
    Json(json!({ "jobs": s.service.jobs() }))
}

async fn job(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.service.job(&id)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// Make the new version live as soon as it is stored (default true).
    #[serde(default)]
    activate: Option<bool>,
    /// Overrides the manifest's version label.
    #[serde(default)]
    label: Option<String>,
}

/// `POST /api/catalog/bundles`: the body is a `.tar` or `.tar.gz` bundle.
async fn upload(
    State(s): State<StaffState>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut body = body.into_data_stream();
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            drain_refused(&headers, &mut body).await;
            return Err(ApiError::BadRequest(format!(
                "{} (known parameters: activate=true|false, label=TEXT)",
                e.body_text()
            )));
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let upload = match s.service.begin_upload(declared) {
        Ok(u) => u,
        Err(e) => {
            drain_refused(&headers, &mut body).await;
            return Err(e.into());
        }
    };
    let req = UploadRequest {
        activate: q.activate.unwrap_or(true),
        label: q.label,
        stall: s.receive_timeout,
    };
    match s.service.import_upload(upload, &mut body, req).await {
        Ok(job) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/catalog/jobs/{}", job.id))],
            Json(json!({ "job": job })),
        )
            .into_response()),
        Err(e) => {
            if matches!(e.error, CatalogError::UploadTooLarge { .. }) {
                drain_stream(&mut body).await;
            }
            Err(e.into())
        }
    }
}

/// How much of a refused upload is read and thrown away, and for how long, before answering.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Answers `err` to a request refused before its body was read, draining the body first.
async fn refuse(req: Request, err: ApiError) -> Response {
    let (parts, body) = req.into_parts();
    drain_refused(&parts.headers, &mut body.into_data_stream()).await;
    err.into_response()
}

/// Drains a refused body (see [`drain_stream`]) unless the client waits for "100 Continue":
/// it then reads the refusal before sending anything, and reading the body would invite it.
async fn drain_refused(headers: &HeaderMap, body: &mut axum::body::BodyDataStream) {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        drain_stream(body).await;
    }
}

/// Reads and discards the rest of a refused body, within [`DRAIN_BYTES`] and [`DRAIN_TIME`]:
/// HTTP clients (curl without `Expect`, Python's http.client, most libraries) finish writing
/// before they read, and a server that answers and closes mid-upload leaves them with
/// "connection reset" or "broken pipe" instead of the explanation. Anything larger is cut off;
/// the bound keeps a hostile client from holding the connection.
async fn drain_stream(body: &mut axum::body::BodyDataStream) {
    let mut n: u64 = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            n += chunk.len() as u64;
            if n > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// An item edit's body in memory, at most [`ITEM_BODY_LIMIT`] bytes (the rest drained before
/// answering 413).
async fn read_item_body(body: Body, wait: Duration) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = next_chunk(&mut stream, wait).await? {
        if buf.len() + chunk.len() > ITEM_BODY_LIMIT {
            drain_stream(&mut stream).await;
            return Err(item_too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

async fn get_item(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Item>, ApiError> {
    let c = s.service.shared().load_full();
    let i = c.position(&id).ok_or(CatalogError::NoSuchItem(id))?;
    Ok(Json(c.items[i].clone()))
}

/// `PUT /api/catalog/items/{id}`: the item's fields as JSON, plus optionally `embedding` (the
/// running embedder's size) and `image_base64` (a JPEG or PNG). Without an embedding, one is
/// computed from the image. The change becomes a new, active version.
async fn put_item(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > ITEM_BODY_LIMIT) {
        drain_refused(&headers, &mut body.into_data_stream()).await;
        return Err(item_too_large());
    }
    let body = read_item_body(body, s.receive_timeout).await?;
    run_edit(&s, parse_put(&id, &body)?).await
}

/// The item edit a `PUT` body describes.
fn parse_put(id: &str, body: &[u8]) -> Result<Edit, ApiError> {
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body must be a JSON object (an item)".into()))?;
    if let Some(body_id) = obj.get("id").and_then(|x| x.as_str())
        && body_id != id
    {
        return Err(ApiError::BadRequest(format!(
            "the body's id '{body_id}' differs from the URL's '{id}'"
        )));
    }
    obj.insert("id".into(), json!(id));
    obj.entry("image").or_insert(json!(""));
    let embedding: Option<Vec<f32>> = match obj.remove("embedding") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => Some(serde_json::from_value(e).map_err(|e| {
            ApiError::BadRequest(format!("embedding must be an array of numbers: {e}"))
        })?),
    };
    let image_data = match obj.remove("image_base64") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(b)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| ApiError::BadRequest(format!("image_base64 is not base64: {e}")))?,
        ),
        Some(_) => {
            return Err(ApiError::BadRequest("image_base64 must be a string".into()));
        }
    };
    let item: Item = serde_json::from_value(v).map_err(|e| CatalogError::Invalid {
        path: "request".into(),
        problems: vec![format!("item '{id}': {e}")],
    })?;
    Ok(Edit::Put {
        item,
        embedding,
        image_data,
    })
}

async fn delete_item(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    run_edit(&s, Edit::Remove { id }).await
}

async fn run_edit(s: &StaffState, edit: Edit) -> Result<Json<serde_json::Value>, ApiError> {
    let done = s.service.edit_async(edit).await?;
    Ok(Json(
        json!({ "active": done.info.id, "items": done.info.item_count, "job": done.job }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let t = StaffToken::new("0123456789abcdef-token");
        assert!(token_matches("0123456789abcdef-token", &t));
        assert!(!token_matches("0123456789abcdef-toke", &t));
        assert!(!token_matches("0123456789abcdef-token2", &t));
        assert!(!token_matches("", &t));
        assert_eq!(
            format!("{t:?}"),
            "StaffToken(<22 characters>)",
            "never printed"
        );
    }

    #[tokio::test]
    async fn a_refused_body_is_drained_within_its_bound() {
        // Under the bound: read to the end, so the client gets to read the answer.
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1000])));
        let mut body = Body::from_stream(futures::stream::iter(chunks)).into_data_stream();
        drain_stream(&mut body).await;
        assert!(body.next().await.is_none(), "the refused body was drained");
        // Over it: cut off at the first chunk past DRAIN_BYTES, the rest left unread.
        let chunk = 1 << 20;
        let n = (DRAIN_BYTES as usize / chunk) + 4;
        let chunks = (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; chunk])));
        let mut body = Body::from_stream(futures::stream::iter(chunks)).into_data_stream();
        drain_stream(&mut body).await;
        let mut left = 0;
        while body.next().await.is_some() {
            left += 1;
        }
        let read = DRAIN_BYTES as usize / chunk + 1;
        assert_eq!(left, n - read, "{n} chunks, DRAIN_BYTES {DRAIN_BYTES}");
    }
}
