//! Bearer-token authentication: the [`Tenant`] extractor every API handler takes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::{ApiError, ServerState};

/// The tenant a request's `Authorization: Bearer <token>` belongs to. A handler taking it
/// answers only authenticated requests: a missing or unknown token is 401 with a JSON error
/// saying where the token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl FromRequestParts<Arc<ServerState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ServerState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err(unauthorized(
                state,
                "no bearer token: every API call needs `Authorization: Bearer <token>`",
            ));
        };
        match state.tenants.authenticate(token) {
            Some(t) => Ok(Tenant(t.name.clone())),
            None => Err(unauthorized(state, "the token was refused")),
        }
    }
}

fn unauthorized(state: &ServerState, error: &str) -> ApiError {
    let hint = match &state.tenants.token_file {
        Some(path) => format!(
            "the default tenant's token is in {} (give it with --token or SLUICE_TOKEN)",
            path.display()
        ),
        None => "use the token whose SHA-256 the host's config file (--config) declares for your tenant (give it with --token or SLUICE_TOKEN)".to_string(),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, error, hint)
}
