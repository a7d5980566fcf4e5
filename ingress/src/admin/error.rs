//! The admin API's one error shape: status, machine-readable code,
//! message, and extra members, written as `{"error":{…}}`.

use super::*;

/// A refusal of an admin request: status, machine-readable code, message,
/// and extra members of the error object.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) extra: Vec<(&'static str, Value)>,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    pub(super) fn with(mut self, key: &'static str, v: Value) -> Self {
        self.extra.push((key, v));
        self
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let mut err = serde_json::Map::new();
        err.insert("code".into(), json!(self.code));
        err.insert("message".into(), json!(self.message));
        for (k, v) in &self.extra {
            err.insert((*k).into(), v.clone());
        }
        let body = json!({ "error": err }).to_string();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if self.status == 401 {
            headers.push(("WWW-Authenticate", "Bearer realm=\"toolgate-admin\""));
        }
        response::write(
            out,
            self.status,
            &headers,
            Body::Json(body.as_bytes()),
            true,
        );
    }
}
