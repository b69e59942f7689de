//! Request bodies under limits a client cannot use to starve the service: every body is read
//! with a size bound, an idle timeout and a total deadline before a handler touches the
//! database; a lead import is spooled to a temporary file first, and only so many imports
//! receive at once. Whatever axum itself refuses (an unknown route, a bad query string) is
//! answered in the API's JSON error shape too.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{ApiError, ApiResult, ApiState};
use crate::config::HttpSettings;

/// The bounds, from `[http]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_json_import_bytes: usize,
    pub max_import_bytes: u64,
    pub idle: Duration,
    pub total: Duration,
}

/// The limits and the import slots, shared by all requests.
#[derive(Clone)]
pub struct Bodies {
    pub limits: Limits,
    imports: Arc<Semaphore>,
    max_imports: usize,
    /// Imports writing to the database at once: the others wait, so imports never take more
    /// than these pool connections.
    writers: Arc<Semaphore>,
}

/// Imports inserting rows at the same time.
const IMPORT_WRITERS: usize = 2;

impl Bodies {
    pub fn new(http: &HttpSettings) -> Bodies {
        Bodies {
            limits: Limits {
                max_body_bytes: http.max_body_bytes,
                max_json_import_bytes: http.max_json_import_bytes,
                max_import_bytes: http.max_import_bytes,
                idle: Duration::from_secs(http.body_idle_secs),
                total: Duration::from_secs(http.body_total_secs),
            },
            imports: Arc::new(Semaphore::new(http.max_concurrent_imports)),
            max_imports: http.max_concurrent_imports,
            writers: Arc::new(Semaphore::new(IMPORT_WRITERS)),
        }
    }

    /// A slot for one import, held while it receives and writes; refused when all are taken.
    pub fn import_slot(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.imports.clone().try_acquire_owned().map_err(|_| {
            ApiError::Unavailable(format!(
                "{} lead imports are already running; try again when one has finished",
                self.max_imports
            ))
        })
    }

    /// Waits for a turn to write an import's rows.
    pub async fn writer_slot(&self) -> OwnedSemaphorePermit {
        self.writers
            .clone()
            .acquire_owned()
            .await
            .expect("the writer semaphore is never closed")
    }
}

/// A JSON request body, read under `max_body_bytes` and the timeouts (not yet parsed: handlers
/// parse it so that they can name the field that is wrong).
pub struct JsonBody(pub Bytes);

impl FromRequest<ApiState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<JsonBody, ApiError> {
        let limits = &state.bodies.limits;
        let (parts, body) = req.into_parts();
        let bytes = read(&parts.headers, body, limits.max_body_bytes, limits).await?;
        Ok(JsonBody(bytes))
    }
}

/// Reads a body whole into memory, at most `max` bytes.
pub async fn read(headers: &HeaderMap, body: Body, max: usize, limits: &Limits) -> ApiResult<Bytes> {
    check_declared_length(headers, max as u64)?;
    let mut out = Vec::new();
    pump(body, max as u64, limits, |chunk| {
        out.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok(Bytes::from(out))
}

/// Writes a body to an unnamed temporary file (gone when dropped) and hands it back rewound.
pub async fn spool(headers: &HeaderMap, body: Body, limits: &Limits) -> ApiResult<std::fs::File> {
    check_declared_length(headers, limits.max_import_bytes)?;
    let file = tempfile::tempfile().map_err(|e| anyhow::anyhow!("cannot create a spool file: {e}"))?;
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
    // Buffered writes to a fresh file land in the page cache; they do not stall the runtime.
    pump(body, limits.max_import_bytes, limits, |chunk| writer.write_all(chunk)).await?;
    let mut file = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write the spool file: {e}"))?;
    std::io::Seek::rewind(&mut file).map_err(|e| anyhow::anyhow!("cannot rewind the spool file: {e}"))?;
    Ok(file)
}

fn check_declared_length(headers: &HeaderMap, max: u64) -> ApiResult<()> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err(too_large(max)),
        _ => Ok(()),
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::TooLarge(format!(
        "the request body is larger than {} (the [http] limits in the configuration)",
        size(max)
    ))
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Moves the body's chunks to `sink`, refusing it when it grows past `max`, stalls for the idle
/// time or runs past the total deadline.
async fn pump(
    body: Body,
    max: u64,
    limits: &Limits,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> ApiResult<()> {
    let deadline = Instant::now() + limits.total;
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    loop {
        let wait = limits.idle.min(deadline.saturating_duration_since(Instant::now()));
        let next = match tokio::time::timeout(wait, stream.next()).await {
            Ok(next) => next,
            Err(_) if Instant::now() >= deadline => {
                return Err(ApiError::Timeout(format!(
                    "the request body was not complete after {} s; nothing was changed",
                    limits.total.as_secs()
                )))
            }
            Err(_) => {
                return Err(ApiError::Timeout(format!(
                    "the request body stalled: nothing arrived for {} s; nothing was changed",
                    limits.idle.as_secs()
                )))
            }
        };
        match next {
            None => return Ok(()),
            Some(Err(e)) => {
                return Err(ApiError::BadRequest(format!(
                    "the request body broke off ({e}); nothing was changed"
                )))
            }
            Some(Ok(chunk)) => {
                received += chunk.len() as u64;
                if received > max {
                    return Err(too_large(max));
                }
                sink(&chunk).map_err(|e| anyhow::anyhow!("cannot keep the request body: {e}"))?;
            }
        }
    }
}

/// Answers axum's own refusals (no such route, wrong method, a query string that does not
/// parse) in the JSON error shape, like every other error of the API.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => "no such route; the API is described at /api/v1/openapi.json".to_owned(),
        (StatusCode::METHOD_NOT_ALLOWED, true) => "this route does not take that method".to_owned(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_owned(),
        (_, false) => crate::text::plain_words(&text),
    };
    let mut response = (
        status,
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}
