//! API tokens: random secrets handed out once and stored only as SHA-256 hashes, each
//! mapped to a tenant (or the admin, who sees every tenant).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngExt;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::AppState;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::store::Store;

pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits).
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("pht_{hex}")
}

/// Registers the configured admin token, or - when there is none and no admin token
/// exists yet - generates one and writes it to `<data_dir>/admin-token` (mode 0600).
pub async fn bootstrap_admin(store: &Store, config: &ServerConfig) -> anyhow::Result<()> {
    if let Some(token) = &config.admin_token {
        anyhow::ensure!(
            token.len() >= 16,
            "the admin token must be at least 16 characters"
        );
        let hash = hash_token(token);
        if store.principal(&hash).await?.is_none() {
            store.add_token(&hash, "admin", true, "configured").await?;
        }
        return Ok(());
    }
    if store.count_admin_tokens().await? > 0 {
        return Ok(());
    }
    let token = generate_token();
    let path = config.data_dir.join("admin-token");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
    }
    store
        .add_token(&hash_token(&token), "admin", true, "generated")
        .await?;
    info!(path = %path.display(), "generated an admin token");
    Ok(())
}

/// The caller of an API request, from `Authorization: Bearer TOKEN`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    pub admin: bool,
}

impl Caller {
    /// The tenant whose jobs this caller may see (`None`: all, for the admin).
    pub fn scope(&self) -> Option<&str> {
        if self.admin { None } else { Some(&self.tenant) }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        match state.store.principal(&hash_token(token)).await? {
            Some(p) => Ok(Caller {
                tenant: p.tenant,
                admin: p.admin,
            }),
            None => Err(ApiError::unauthorized("unknown token")),
        }
    }
}

/// Whether the request's bearer token is an admin's (for what public endpoints show to
/// the admin only, without refusing others).
pub async fn is_admin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return false;
    };
    matches!(state.store.principal(&hash_token(token)).await, Ok(Some(p)) if p.admin)
}
