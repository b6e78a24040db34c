//! Errors as the API answers them: one type, mapped to an HTTP status and a JSON body
//! `{error, field?, code?}` in one place ([`IntoResponse`]), used by every handler,
//! the token extractor and the services.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pharos_core::ErrorCode;
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    pub code: Option<ErrorCode>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            code: None,
        }
    }
    pub fn bad(field: impl Into<String>, message: impl Into<String>, code: ErrorCode) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
            code: Some(code),
        }
    }
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    /// An error about `field` (a 4xx the caller can fix by changing it).
    pub fn at(status: StatusCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(status, message)
        }
    }
    /// An error in the `field: problem` form engines and specs use, the field named.
    pub fn said(status: StatusCode, message: String) -> Self {
        match message.split_once(':') {
            Some((field, _)) if !field.is_empty() && !field.contains(' ') => {
                Self::at(status, field.to_string(), message)
            }
            _ => Self::new(status, message),
        }
    }
    /// The server could not do it (the store, the OS): a 500 the caller cannot fix.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// No such job (or not the caller's): named as everywhere else, `training-N`.
    pub(crate) fn not_found(id: &str) -> Self {
        let plain = id.strip_prefix("training-").unwrap_or(id);
        let name = if plain.parse::<i64>().is_ok() {
            format!("training-{plain}")
        } else {
            format!("{id:?}")
        };
        Self::new(StatusCode::NOT_FOUND, format!("job {name} not found"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::not_found(&id.to_string()),
            StoreError::Transition { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: other.to_string(),
                    field: None,
                    code: Some(ErrorCode::S200),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        if let Some(c) = self.code {
            body["code"] = json!(format!("{c:?}"));
        }
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
