//! One error type for every handler, display and staff API alike: the status code, a message a
//! person can act on, and the real cause logged on the server side. The body is
//! `{"error": "...", "problems": ["…"], "job": "…"}` (the last two only when there are some).
//!
//! A catalog error's status is chosen here and nowhere else ([`catalog_status`]).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::catalog::CatalogError;
use crate::catalog::job::JobError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token: send `Authorization: Bearer <staff token>`")]
    Unauthorized,
    #[error(
        "the staff API is disabled: no token is configured (catalog.token_file or catalog.token_env)"
    )]
    StaffDisabled,
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// A catalog operation failed; `job` names the job whose report tells more.
    #[error("{error}")]
    Catalog {
        error: CatalogError,
        job: Option<String>,
    },
    #[error("internal error")]
    Internal(String),
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        ApiError::Catalog { error, job: None }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        ApiError::Catalog {
            error: e.error,
            job: e.job,
        }
    }
}

/// The status a catalog error is answered with. Failures of the box itself (disk, threads,
/// models) are 500s; everything else is something the client can fix or retry.
pub fn catalog_status(e: &CatalogError) -> StatusCode {
    use CatalogError as E;
    match e {
        E::Invalid { .. } | E::EmbedderMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::NoSuchVersion(_) | E::NoSuchItem(_) | E::NoSuchJob(_) => StatusCode::NOT_FOUND,
        E::BadVersionId(_) | E::UploadInterrupted(_) | E::EmptyUpload => StatusCode::BAD_REQUEST,
        E::NothingToRollBack | E::Locked { .. } | E::Busy { .. } | E::UploadInProgress => {
            StatusCode::CONFLICT
        }
        E::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::UploadStalled { .. } => StatusCode::REQUEST_TIMEOUT,
        E::Read { .. }
        | E::Write { .. }
        | E::NoCatalog { .. }
        | E::NotStored(_)
        | E::NoEmbedder
        | E::EmbedderStart(_)
        | E::Embedding { .. }
        | E::StoredImage { .. }
        | E::Threads(_)
        | E::ChannelState { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, problems, job) = match self {
            ApiError::Catalog { error, job } => {
                let status = catalog_status(&error);
                if status.is_server_error() {
                    tracing::error!(error = %error, "catalog request failed");
                }
                (status, error.summary(), error.problems().to_vec(), job)
            }
            other => {
                let status = match &other {
                    ApiError::NotFound(_) => StatusCode::NOT_FOUND,
                    ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
                    ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
                    ApiError::StaffDisabled => StatusCode::FORBIDDEN,
                    ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                    ApiError::Conflict(_) => StatusCode::CONFLICT,
                    ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    ApiError::Internal(cause) => {
                        tracing::error!(%cause, "request failed");
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    ApiError::Catalog { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (status, other.to_string(), vec![], None)
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
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: ApiError) -> (StatusCode, serde_json::Value, bool) {
        let resp = e.into_response();
        let status = resp.status();
        let challenged = resp.headers().contains_key(header::WWW_AUTHENTICATE);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).expect("json"),
            challenged,
        )
    }

    #[tokio::test]
    async fn catalog_errors_carry_their_problems_and_job() {
        let e = CatalogError::Invalid {
            path: "work/j1/bundle".into(),
            problems: vec!["line 3: duplicate id".into(), "line 9: no group".into()],
        };
        let (s, v, _) = answer(ApiError::from(JobError {
            error: e,
            job: Some("j1".into()),
        }))
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["error"], "catalog work/j1/bundle is invalid (2 problems)");
        assert_eq!(v["problems"][1], "line 9: no group");
        assert_eq!(v["job"], "j1");

        let (s, v, _) = answer(CatalogError::UploadTooLarge { limit: 64 << 20 }.into()).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            v["error"].as_str().is_some_and(|m| m.contains("64 MiB")),
            "{v}"
        );
        assert!(v.get("problems").is_none() && v.get("job").is_none(), "{v}");

        let busy = CatalogError::Busy {
            job: Some(("j7".into(), crate::catalog::job::Stage::Indexing)),
        };
        let (s, v, _) = answer(busy.into()).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(
            v["error"],
            "another catalog change is running (job j7, indexing); try again when it has finished"
        );
    }

    #[tokio::test]
    async fn refusals_say_what_to_send() {
        let (s, v, challenged) = answer(ApiError::Unauthorized).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(challenged, "401 names the scheme");
        assert!(v["error"].as_str().is_some_and(|m| m.contains("Bearer")));
        let (s, _, challenged) = answer(ApiError::StaffDisabled).await;
        assert_eq!((s, challenged), (StatusCode::FORBIDDEN, false));
        let (s, v, _) = answer(ApiError::Internal("disk on fire".into())).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(v["error"], "internal error", "the cause stays in the log");
    }
}
