//! The staff catalog API under `/api/catalog`: upload a bundle, follow its import job, edit
//! single items, list, activate and roll back versions.
//!
//! Every route needs `Authorization: Bearer <token>` (the token comes from a file or an
//! environment variable named in the config, compared in constant time); without a configured
//! token every request is refused. Handlers never do the work themselves: uploads are streamed
//! to disk under a size limit, then a dedicated, lower-priority thread validates, embeds,
//! indexes and stores (see [`crate::catalog::import`]); the handler only waits for the verdict
//! of validation (4xx with the offending rows, or 202 with the job) and returns. The router can
//! be merged into the main one or served on its own address (`server.staff_listen`).

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
use tokio::io::AsyncWriteExt;

use crate::catalog::import::{CatalogService, Edit, ImportInput, lower_priority};
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
    /// Held while an upload is received: one at a time, and apart from the writer lock so that
    /// activation and rollback never wait behind a slow client.
    pub receiving: Arc<tokio::sync::Mutex<()>>,
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
            receiving: Arc::default(),
        }
    }
}

/// How long an edit waits for a running write (another edit, an activation) before answering
/// 409: edits are quick, imports are not.
const WRITER_WAIT: Duration = Duration::from_secs(30);

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

/// What a staff request can go wrong with, as a status and a JSON body
/// `{"error": "...", "problems": ["…"], "job": "…"}`.
#[derive(Debug)]
pub enum StaffError {
    Unauthorized,
    Disabled,
    BadRequest(String),
    NotFound(String),
    TooLarge(u64),
    ItemTooLarge,
    Timeout(Duration),
    Busy(String),
    Catalog {
        error: CatalogError,
        job: Option<String>,
    },
    Internal(String),
}

impl From<CatalogError> for StaffError {
    fn from(error: CatalogError) -> Self {
        StaffError::Catalog { error, job: None }
    }
}

impl IntoResponse for StaffError {
    fn into_response(self) -> Response {
        let (status, message, problems, job) = match self {
            StaffError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <staff token>`".to_string(),
                vec![],
                None,
            ),
            StaffError::Disabled => (
                StatusCode::FORBIDDEN,
                "the staff API is disabled: no token is configured (catalog.token_file or catalog.token_env)".into(),
                vec![],
                None,
            ),
            StaffError::BadRequest(m) => (StatusCode::BAD_REQUEST, m, vec![], None),
            StaffError::NotFound(m) => (StatusCode::NOT_FOUND, m, vec![], None),
            StaffError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the upload is larger than the limit of {} MiB (catalog.upload_limit_mb)",
                    limit >> 20
                ),
                vec![],
                None,
            ),
            StaffError::ItemTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the item is larger than {} MiB: send a smaller image (image_base64)",
                    ITEM_BODY_LIMIT >> 20
                ),
                vec![],
                None,
            ),
            StaffError::Timeout(t) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "nothing was received for {} s (catalog.receive_timeout_s); the upload was abandoned, send it again",
                    t.as_secs()
                ),
                vec![],
                None,
            ),
            StaffError::Busy(m) => (StatusCode::CONFLICT, m, vec![], None),
            StaffError::Catalog { error, job } => {
                let status = match &error {
                    CatalogError::Invalid { .. } | CatalogError::EmbedderMismatch { .. } => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    CatalogError::NoSuchVersion(_) | CatalogError::NoSuchItem(_) => StatusCode::NOT_FOUND,
                    CatalogError::BadVersionId(_) => StatusCode::BAD_REQUEST,
                    CatalogError::NothingToRollBack | CatalogError::Locked { .. } => StatusCode::CONFLICT,
                    CatalogError::Read { .. } | CatalogError::Write { .. } | CatalogError::Other(_) => {
                        tracing::error!(error = %error, "staff request failed");
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                (status, error.summary(), error.problems().to_vec(), job)
            }
            StaffError::Internal(m) => {
                tracing::error!(cause = %m, "staff request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into(), vec![], None)
            }
        };
        let mut body = json!({ "error": message });
        if !problems.is_empty() {
            body["problems"] = json!(problems);
        }
        if let Some(j) = job {
            body["job"] = json!(j);
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
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
        return refuse(req, StaffError::Disabled).await;
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
        refuse(req, StaffError::Unauthorized).await
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
        return StaffError::Internal("a staff answer could not be read back".into())
            .into_response();
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

/// Runs `f` on its own lower-priority thread (it may build indexes or run the embedder) and
/// waits for it without blocking the async runtime.
async fn on_worker<T: Send + 'static>(
    s: &StaffState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StaffError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let nice = s.service.config().import_nice;
    std::thread::Builder::new()
        .name("catalog-job".into())
        .spawn(move || {
            lower_priority(nice);
            let _ = tx.send(f());
        })
        .map_err(|e| StaffError::Internal(format!("cannot start a catalog thread: {e}")))?;
    rx.await
        .map_err(|_| StaffError::Internal("the catalog thread ended without an answer".into()))
}

/// 409 naming the catalog change that holds the writer.
fn writer_busy(s: &StaffState) -> StaffError {
    let running = s
        .service
        .jobs()
        .into_iter()
        .find(|j| j.state == "running" && j.stage != "receiving")
        .map(|j| format!(" (job {}, {})", j.id, j.stage))
        .unwrap_or_default();
    StaffError::Busy(format!(
        "another catalog change is running{running}; try again when it has finished"
    ))
}

async fn writer_lock(
    s: &StaffState,
    wait: Duration,
) -> Result<tokio::sync::OwnedMutexGuard<()>, StaffError> {
    let lock = s.service.writer.clone();
    let busy = || writer_busy(s);
    if wait.is_zero() {
        lock.try_lock_owned().map_err(|_| busy())
    } else {
        tokio::time::timeout(wait, lock.lock_owned())
            .await
            .map_err(|_| busy())
    }
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
        "writable": s.service.store().is_ok(),
        "upload_limit_bytes": s.service.config().upload_limit,
    }))
}

async fn versions(State(s): State<StaffState>) -> Result<impl IntoResponse, StaffError> {
    let store = s.service.store()?;
    let list = store.list()?;
    let active = store.read_active()?;
    Ok(Json(json!({
        "active": active.as_ref().map(|a| a.active.clone()),
        "rollback_to": active.and_then(|a| a.history.last().cloned()),
        "versions": list,
    })))
}

async fn activate(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
) -> Result<impl IntoResponse, StaffError> {
    // Before anything else: `./v0002` or a path would reach a version under another name.
    crate::catalog::store::check_version_id(&id)?;
    let guard = writer_lock(&s, WRITER_WAIT).await?;
    let service = s.service.clone();
    let info = on_worker(&s, move || {
        let _guard = guard;
        service.activate(&id)
    })
    .await??;
    Ok(Json(
        json!({ "active": info.id, "label": info.label, "items": info.item_count }),
    ))
}

async fn rollback(State(s): State<StaffState>) -> Result<impl IntoResponse, StaffError> {
    let guard = writer_lock(&s, WRITER_WAIT).await?;
    let service = s.service.clone();
    let info = on_worker(&s, move || {
        let _guard = guard;
        service.rollback()
    })
    .await??;
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
) -> Result<impl IntoResponse, StaffError> {
    let job = s.service.job(&id).ok_or_else(|| {
        StaffError::NotFound(format!(
            "there is no job '{id}' (GET /api/catalog/jobs lists them)"
        ))
    })?;
    Ok(Json(job.status()))
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
) -> Result<Response, StaffError> {
    let mut body = body.into_data_stream();
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            drain_refused(&headers, &mut body).await;
            return Err(StaffError::BadRequest(format!(
                "{} (known parameters: activate=true|false, label=TEXT)",
                e.body_text()
            )));
        }
    };
    let limit = s.service.config().upload_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        drain_refused(&headers, &mut body).await;
        return Err(StaffError::TooLarge(limit));
    }
    // A catalog change running now (an import takes minutes) refuses the upload before it is
    // sent; the writer itself is taken only once the body is in, so a slow client never
    // holds it.
    let receiving = match (
        s.receiving.clone().try_lock_owned(),
        s.service.writer.try_lock(),
    ) {
        (Ok(g), Ok(_)) => g,
        (_, Err(_)) => {
            drain_refused(&headers, &mut body).await;
            return Err(writer_busy(&s));
        }
        (Err(_), _) => {
            drain_refused(&headers, &mut body).await;
            return Err(StaffError::Busy(
                "another bundle upload is being received; try again when it has finished".into(),
            ));
        }
    };
    let store = match s.service.store() {
        Ok(st) => st,
        Err(e) => {
            drain_refused(&headers, &mut body).await;
            return Err(e.into());
        }
    };
    let job = s.service.new_job("import");
    job.stage("receiving", declared.unwrap_or(0));
    let path = store.work_dir().join(format!("{}.upload", job.id()));
    let received = receive(&mut body, &path, limit, s.receive_timeout, |n| {
        job.progress(n)
    })
    .await;
    drop(receiving);
    let n = match received {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            if matches!(e, StaffError::TooLarge(_)) {
                drain_stream(&mut body).await;
            }
            job.fail(&CatalogError::Other(match &e {
                StaffError::TooLarge(_) => "upload over the size limit".into(),
                StaffError::Timeout(t) => format!("no data for {} s", t.as_secs()),
                StaffError::BadRequest(m) => m.clone(),
                other => format!("{other:?}"),
            }));
            return Err(e);
        }
    };
    if n == 0 {
        let _ = tokio::fs::remove_file(&path).await;
        job.fail(&CatalogError::Other("empty upload".into()));
        return Err(StaffError::BadRequest(
            "the request body is empty: send the bundle as a .tar or .tar.gz body".into(),
        ));
    }
    // Received in full: only now does the upload need the catalog's writer.
    let guard = match writer_lock(&s, WRITER_WAIT).await {
        Ok(g) => g,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            job.fail(&CatalogError::Other(
                "another catalog change was running".into(),
            ));
            return Err(e);
        }
    };
    start_import(&s, job, guard, path, n, q).await
}

/// Hands a received upload to its import thread and answers once it is validated.
async fn start_import(
    s: &StaffState,
    job: Arc<crate::catalog::import::Job>,
    guard: tokio::sync::OwnedMutexGuard<()>,
    path: std::path::PathBuf,
    n: u64,
    q: UploadQuery,
) -> Result<Response, StaffError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (service, job2) = (s.service.clone(), job.clone());
    let activate = q.activate.unwrap_or(true);
    let source = format!("upload of {} bytes", n);
    let nice = s.service.config().import_nice;
    std::thread::Builder::new()
        .name("catalog-import".into())
        .spawn(move || {
            let _guard = guard;
            lower_priority(nice);
            let _ = service.run_import(
                &job2,
                ImportInput::Archive { path, owned: true },
                activate,
                q.label,
                Some(source),
                Some(tx),
            );
        })
        .map_err(|e| StaffError::Internal(format!("cannot start the import thread: {e}")))?;
    let id = job.id();
    match rx.await {
        Ok(Ok(())) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/catalog/jobs/{id}"))],
            Json(json!({ "job": job.status() })),
        )
            .into_response()),
        Ok(Err(error)) => {
            // The job's thread lets go of the writer lock right after telling us; wait for it so
            // a client that fixes its bundle and retries at once is not told "busy".
            let _ = tokio::time::timeout(Duration::from_secs(10), s.service.writer.lock()).await;
            Err(StaffError::Catalog {
                error,
                job: Some(id),
            })
        }
        Err(_) => Err(StaffError::Internal(format!(
            "import job {id} ended before validating: {:?}",
            job.status().error
        ))),
    }
}

/// How much of a refused upload is read and thrown away, and for how long, before answering.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Answers `err` to a request refused before its body was read, draining the body first.
async fn refuse(req: Request, err: StaffError) -> Response {
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

/// The next chunk of a body, or [`StaffError::Timeout`] when none comes within `wait`.
async fn next_chunk(
    stream: &mut axum::body::BodyDataStream,
    wait: Duration,
) -> Result<Option<Bytes>, StaffError> {
    match tokio::time::timeout(wait, stream.next()).await {
        Err(_) => Err(StaffError::Timeout(wait)),
        Ok(None) => Ok(None),
        Ok(Some(chunk)) => chunk.map(Some).map_err(|e| {
            StaffError::BadRequest(format!("the upload was interrupted ({e}); send it again"))
        }),
    }
}

/// Streams a request body to `path`, refusing it past `limit` bytes or when it stalls for
/// `wait`; returns its size.
async fn receive(
    stream: &mut axum::body::BodyDataStream,
    path: &std::path::Path,
    limit: u64,
    wait: Duration,
    progress: impl Fn(u64),
) -> Result<u64, StaffError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| StaffError::Internal(format!("creating {}: {e}", path.display())))?;
    let mut n: u64 = 0;
    while let Some(chunk) = next_chunk(stream, wait).await? {
        n += chunk.len() as u64;
        if n > limit {
            return Err(StaffError::TooLarge(limit));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| StaffError::Internal(format!("writing {}: {e}", path.display())))?;
        progress(n);
    }
    file.flush()
        .await
        .map_err(|e| StaffError::Internal(format!("writing {}: {e}", path.display())))?;
    Ok(n)
}

/// An item edit's body in memory, at most [`ITEM_BODY_LIMIT`] bytes (the rest drained before
/// answering 413).
async fn read_item_body(body: Body, wait: Duration) -> Result<Bytes, StaffError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = next_chunk(&mut stream, wait).await? {
        if buf.len() + chunk.len() > ITEM_BODY_LIMIT {
            drain_stream(&mut stream).await;
            return Err(StaffError::ItemTooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

async fn get_item(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Item>, StaffError> {
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
) -> Result<impl IntoResponse, StaffError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > ITEM_BODY_LIMIT) {
        drain_refused(&headers, &mut body.into_data_stream()).await;
        return Err(StaffError::ItemTooLarge);
    }
    let body = read_item_body(body, s.receive_timeout).await?;
    let mut v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| StaffError::BadRequest(format!("the body is not JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| StaffError::BadRequest("the body must be a JSON object (an item)".into()))?;
    if let Some(body_id) = obj.get("id").and_then(|x| x.as_str())
        && body_id != id
    {
        return Err(StaffError::BadRequest(format!(
            "the body's id '{body_id}' differs from the URL's '{id}'"
        )));
    }
    obj.insert("id".into(), json!(id));
    obj.entry("image").or_insert(json!(""));
    let embedding: Option<Vec<f32>> = match obj.remove("embedding") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => Some(serde_json::from_value(e).map_err(|e| {
            StaffError::BadRequest(format!("embedding must be an array of numbers: {e}"))
        })?),
    };
    let image_data = match obj.remove("image_base64") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(b)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| StaffError::BadRequest(format!("image_base64 is not base64: {e}")))?,
        ),
        Some(_) => {
            return Err(StaffError::BadRequest(
                "image_base64 must be a string".into(),
            ));
        }
    };
    let item: Item = serde_json::from_value(v).map_err(|e| StaffError::Catalog {
        error: CatalogError::Invalid {
            path: "request".into(),
            problems: vec![format!("item '{id}': {e}")],
        },
        job: None,
    })?;
    let edit = Edit::Put {
        item,
        embedding,
        image_data,
    };
    run_edit(&s, edit, format!("put item {id}")).await
}

async fn delete_item(
    State(s): State<StaffState>,
    UrlPath(id): UrlPath<String>,
) -> Result<impl IntoResponse, StaffError> {
    if s.service.shared().load_full().position(&id).is_none() {
        return Err(CatalogError::NoSuchItem(id).into());
    }
    run_edit(
        &s,
        Edit::Remove { id: id.clone() },
        format!("remove item {id}"),
    )
    .await
}

async fn run_edit(
    s: &StaffState,
    edit: Edit,
    source: String,
) -> Result<Json<serde_json::Value>, StaffError> {
    let guard = writer_lock(s, WRITER_WAIT).await?;
    let service = s.service.clone();
    let job = s.service.new_job("edit");
    let jid = job.id();
    let info = on_worker(s, move || {
        let _guard = guard;
        service.edit(&job, vec![edit], source)
    })
    .await?
    .map_err(|error| StaffError::Catalog {
        error,
        job: Some(jid.clone()),
    })?;
    Ok(Json(
        json!({ "active": info.id, "items": info.item_count, "job": jid }),
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
    async fn a_chunked_upload_is_cut_off_at_the_limit() {
        // No Content-Length to refuse it up front: the limit holds while streaming.
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("up");
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1000])));
        let mut body = Body::from_stream(futures::stream::iter(chunks)).into_data_stream();
        let r = receive(&mut body, &p, 4500, Duration::from_secs(5), |_| {}).await;
        assert!(matches!(r, Err(StaffError::TooLarge(4500))), "{r:?}");
        // The rest is read and dropped, so the client gets to read the answer.
        drain_stream(&mut body).await;
        assert!(body.next().await.is_none(), "the refused body was drained");
        let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1000])));
        let mut body = Body::from_stream(futures::stream::iter(chunks)).into_data_stream();
        let n = receive(&mut body, &p, 4500, Duration::from_secs(5), |_| {})
            .await
            .expect("under the limit");
        assert_eq!(
            (n, std::fs::metadata(&p).expect("file").len()),
            (4000, 4000)
        );
    }
}
