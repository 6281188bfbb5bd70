//! The admin bearer token, checked here for the admin API (`admin.rs`), the audit routes
//! (`audit.rs`) and, when vote tokens are on, the aggregators' batches (`votes.rs`).

use axum::http::{HeaderMap, header};

use super::{ApiError, AppState};

/// `Ok` when `headers` carry `Authorization: Bearer <the admin token>` and the node has one.
pub(super) fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.admin_token.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), app.admin_token.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

/// Compares without an early exit, so response timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
