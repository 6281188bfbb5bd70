//! The bearer tokens, checked here: the admin token for the admin API (`admin.rs`) and the
//! audit routes (`audit.rs`); the admin or the batch token for the edges' batches, when the
//! node asks for one (`votes.rs`).

use axum::http::{HeaderMap, header};

use super::{ApiError, AppState};

/// `Ok` when `headers` carry `Authorization: Bearer <the admin token>` and the node has one.
pub(super) fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.admin_token.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    if !constant_time_eq(bearer(headers).as_bytes(), app.admin_token.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

/// Whether `headers` carry `Authorization: Bearer <the batch token>` and the node has one.
pub(super) fn presents_batch_token(app: &AppState, headers: &HeaderMap) -> bool {
    !app.batch_token.is_empty()
        && constant_time_eq(bearer(headers).as_bytes(), app.batch_token.as_bytes())
}

/// The bearer token presented, or "".
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Compares without an early exit, so response timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
