//! API tokens with scopes. A token is shown once when created; the database keeps only its
//! SHA-256. Each `/api/v1` operation names the scopes that may call it in its OpenAPI
//! `security` entry; the middleware here reads that table, so the document and the check are
//! the same thing. `admin` may call everything.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::ApiError;

/// The scopes a token can hold (the `api_tokens_scopes_known` constraint lists the same).
pub const SCOPES: [&str; 5] = [
    "calls:write",
    "campaigns:write",
    "operators:write",
    "reports:read",
    "admin",
];

/// Who made a request: the token's name, written to the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub scopes: Vec<String>,
}

impl Actor {
    pub fn label(&self) -> String {
        format!("token:{}", self.name)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown scope {0:?}; known: {known}", known = SCOPES.join(", "))]
    UnknownScope(String),
    #[error("a token needs at least one scope")]
    NoScope,
    #[error("a token needs a name (1 to 80 characters)")]
    BadName,
    #[error("no active token with id or name {0:?}")]
    NotFound(String),
    #[error("{0:?} names more than one active token; revoke by id")]
    Ambiguous(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token; returns it (the only time it exists outside the caller) and its record.
pub async fn create(
    pool: &PgPool,
    name: &str,
    scopes: &[String],
    actor: &str,
) -> Result<(String, TokenInfo), TokenError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err(TokenError::BadName);
    }
    if scopes.is_empty() {
        return Err(TokenError::NoScope);
    }
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(TokenError::UnknownScope(bad.clone()));
    }
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!(
        "obz_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let mut tx = pool.begin().await?;
    let info: TokenInfo = sqlx::query_as(&format!(
        "INSERT INTO api_tokens (id, name, token_hash, scopes) VALUES ($1, $2, $3, $4) RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(hash(&token))
    .bind(&scopes)
    .fetch_one(&mut *tx)
    .await?;
    crate::audit::record(
        &mut *tx,
        actor,
        "token.create",
        "api_token",
        Some(&info.id.to_string()),
        None,
        Some(serde_json::json!(info)),
    )
    .await?;
    tx.commit().await?;
    Ok((token, info))
}

pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at"))
        .fetch_all(pool)
        .await
}

const TOKEN_COLUMNS: &str = "id, name, scopes, created_at, last_used_at, revoked_at";

/// Revokes an active token by id or by name.
pub async fn revoke(pool: &PgPool, id_or_name: &str, actor: &str) -> Result<TokenInfo, TokenError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = match Uuid::parse_str(id_or_name) {
        Ok(id) => {
            sqlx::query_scalar("SELECT id FROM api_tokens WHERE id = $1 AND revoked_at IS NULL FOR UPDATE")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
        }
        Err(_) => {
            sqlx::query_scalar("SELECT id FROM api_tokens WHERE name = $1 AND revoked_at IS NULL FOR UPDATE")
                .bind(id_or_name)
                .fetch_all(&mut *tx)
                .await?
        }
    };
    let id = match ids.as_slice() {
        [] => return Err(TokenError::NotFound(id_or_name.to_owned())),
        [id] => *id,
        _ => return Err(TokenError::Ambiguous(id_or_name.to_owned())),
    };
    let info: TokenInfo = sqlx::query_as(&format!(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    crate::audit::record(
        &mut *tx,
        actor,
        "token.revoke",
        "api_token",
        Some(&id.to_string()),
        Some(serde_json::json!({ "revoked_at": null })),
        Some(serde_json::json!(info)),
    )
    .await?;
    tx.commit().await?;
    Ok(info)
}

/// The token behind a bearer value, if it exists and is not revoked. `last_used_at` is
/// written at most once a minute per token, so requests do not each cost a write.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<Actor>, sqlx::Error> {
    let hash = hash(token);
    let row: Option<(Uuid, String, Vec<String>, bool)> = sqlx::query_as(
        "SELECT id, name, scopes, last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
         FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    let Some((token_id, name, scopes, stale)) = row else {
        return Ok(None);
    };
    if stale {
        sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
            .bind(token_id)
            .execute(pool)
            .await?;
    }
    Ok(Some(Actor { name, scopes }))
}

/// (method, path template) → the scopes any one of which allows the call.
#[derive(Debug, Default)]
pub struct ScopeTable(HashMap<(Method, String), Vec<String>>);

impl ScopeTable {
    /// Reads each operation's `security` requirements from the OpenAPI document.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> ScopeTable {
        let doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
        let mut table = HashMap::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let scopes: Vec<String> = op["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|req| req.as_object())
                    .flat_map(|req| req.values())
                    .filter_map(|v| v.as_array())
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect();
                table.insert((method, path.clone()), scopes);
            }
        }
        ScopeTable(table)
    }

    pub fn required(&self, method: &Method, path: &str) -> Option<&[String]> {
        self.0.get(&(method.clone(), path.to_owned())).map(Vec::as_slice)
    }
}

#[derive(Clone)]
pub struct AuthState {
    pub pool: PgPool,
    pub scopes: Arc<ScopeTable>,
}

/// 401 without a valid token, 403 when the token lacks every scope the operation accepts.
pub async fn require_scope(State(auth): State<AuthState>, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    // axum answers HEAD with the GET handler, so HEAD needs what GET needs.
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        m => m.clone(),
    };
    let Some(required) = auth.scopes.required(&method, &path) else {
        // Every routed operation is in the document, so no handler takes this method here:
        // axum answers 405 without running anything.
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(bearer) = bearer.filter(|b| !b.is_empty()) else {
        return ApiError::Unauthorized("send an API token: Authorization: Bearer <token>".into()).into_response();
    };
    let actor = match authenticate(&auth.pool, bearer).await {
        Ok(Some(actor)) => actor,
        Ok(None) => return ApiError::Unauthorized("the API token is unknown or revoked".into()).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let allowed = actor
        .scopes
        .iter()
        .any(|s| s == "admin" || required.iter().any(|r| r == s));
    if !allowed {
        return ApiError::Forbidden(format!(
            "token {:?} lacks the scope for {} {path}; needs one of: {}",
            actor.name,
            request.method(),
            required.join(", ")
        ))
        .into_response();
    }
    request.extensions_mut().insert(actor);
    next.run(request).await
}
