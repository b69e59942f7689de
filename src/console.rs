//! The web console at `/console`: a page, a stylesheet and a script, built into the binary so
//! the console needs nothing at run time but obzvon itself. The page talks only to the REST API
//! and the event stream with the API token the user signs in with, so it can see and do
//! exactly what that token's scopes allow; the server adds nothing the API does not offer.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");
const ICON: &str = include_str!("../console/icon.svg");

/// Scripts and styles only from here, media from here or the page's own blobs (recordings are
/// fetched with the token, then played), no frames.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/console/") }))
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route("/console/{file}", get(file))
}

async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "console.js" => asset(SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => asset(STYLE, "text/css; charset=utf-8"),
        "icon.svg" => asset(ICON, "image/svg+xml"),
        _ => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: the browser asks again each time (a 304 is cheap).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
