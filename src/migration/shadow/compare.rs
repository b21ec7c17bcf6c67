//! Comparing the Rust response a client got with the Python app's answer to the same
//! request: status, chosen headers, and the body — as data when both are JSON (some fields
//! ignored), as bytes otherwise.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use serde_json::Value;

use crate::migration::json_diff::JsonDiff;

/// What is compared of a response.
pub(super) struct Observed {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// What to compare, beyond the status.
#[derive(Clone, Debug)]
pub(super) struct Comparison {
    /// Headers whose values must be equal (a header absent on both sides is equal).
    pub(super) headers: Vec<HeaderName>,
    /// Fields left out of JSON bodies: a JSON pointer (`/meta/generated_at`) leaves out that
    /// one place, a bare name (`updated_at`) that key in every object.
    pub(super) ignored_fields: Vec<String>,
}

impl Comparison {
    /// What differs, as a short text; `None` when the responses agree.
    pub(super) fn differences(&self, rust: &Observed, python: &Observed) -> Option<String> {
        let mut found = Vec::new();
        if rust.status != python.status {
            found.push(format!(
                "status: rust {}, python {}",
                rust.status.as_u16(),
                python.status.as_u16()
            ));
        }
        for name in &self.headers {
            let (ours, theirs) = (joined(&rust.headers, name), joined(&python.headers, name));
            if ours != theirs {
                found.push(format!("header {name}: rust {ours:?}, python {theirs:?}"));
            }
        }
        if let Some(body) = self.body(&rust.body, &python.body) {
            found.push(body);
        }
        (!found.is_empty()).then(|| found.join("; "))
    }

    fn body(&self, rust: &Bytes, python: &Bytes) -> Option<String> {
        match (json(rust), json(python)) {
            (Some(mut ours), Some(mut theirs)) => {
                for field in &self.ignored_fields {
                    ignore(&mut ours, field);
                    ignore(&mut theirs, field);
                }
                let diff = JsonDiff::new(&ours, &theirs);
                (!diff.is_empty()).then(|| format!("body {diff}"))
            }
            _ if rust == python => None,
            _ => Some(format!(
                "body: {} bytes from rust, {} from python, first difference at byte {}",
                rust.len(),
                python.len(),
                rust.iter()
                    .zip(python.iter())
                    .take_while(|(a, b)| a == b)
                    .count()
            )),
        }
    }
}

/// All values of a header, in order, as one text (`None` when absent).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn json(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// Removes `field` (a JSON pointer, or a key name anywhere) from `value`.
fn ignore(value: &mut Value, field: &str) {
    if field.starts_with('/') {
        let (parent, key) = field.rsplit_once('/').expect("starts with a slash");
        let key = key.replace("~1", "/").replace("~0", "~");
        match value.pointer_mut(parent) {
            Some(Value::Object(object)) => {
                object.remove(&key);
            }
            Some(Value::Array(items)) => {
                if let Ok(index) = key.parse::<usize>()
                    && index < items.len()
                {
                    items.remove(index);
                }
            }
            _ => {}
        }
        return;
    }
    match value {
        Value::Object(object) => {
            object.remove(field);
            object.values_mut().for_each(|value| ignore(value, field));
        }
        Value::Array(items) => items.iter_mut().for_each(|item| ignore(item, field)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn observed(status: u16, content_type: &str, body: &str) -> Observed {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        Observed {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    fn comparison(ignored: &[&str]) -> Comparison {
        Comparison {
            headers: vec![http::header::CONTENT_TYPE],
            ignored_fields: ignored.iter().map(|field| field.to_string()).collect(),
        }
    }

    #[test]
    fn json_bodies_are_compared_as_data() {
        let rust = observed(200, "application/json", r#"{"price": 49, "id": 5}"#);
        let python = observed(200, "application/json", r#"{"id":5,"price":49.0}"#);
        assert_eq!(comparison(&[]).differences(&rust, &python), None);
    }

    #[test]
    fn status_headers_and_body_differences_are_described() {
        let rust = observed(404, "application/json", r#"{"detail":"Not found"}"#);
        let python = observed(
            404,
            "application/json; charset=utf-8",
            r#"{"detail":"Item not found"}"#,
        );
        assert_eq!(
            comparison(&[]).differences(&rust, &python).unwrap(),
            r#"header content-type: rust Some("application/json"), python Some("application/json; charset=utf-8"); body /detail: rust "Not found", python "Item not found""#
        );
        let rust = observed(200, "text/plain", "hello");
        let python = observed(201, "text/plain", "help me");
        assert_eq!(
            comparison(&[]).differences(&rust, &python).unwrap(),
            "status: rust 200, python 201; body: 5 bytes from rust, 7 from python, first difference at byte 3"
        );
    }

    #[test]
    fn ignored_fields_by_name_or_pointer() {
        let rust = observed(
            200,
            "application/json",
            r#"{"status":"ok","checked_at":"2026-12-01T10:00:00Z","meta":{"took_ms":3,"n":1},"items":[{"checked_at":1}]}"#,
        );
        let python = observed(
            200,
            "application/json",
            r#"{"status":"ok","checked_at":"2026-12-01T10:00:01Z","meta":{"took_ms":9,"n":1},"items":[{"checked_at":2}]}"#,
        );
        assert!(comparison(&[]).differences(&rust, &python).is_some());
        assert_eq!(
            comparison(&["checked_at", "/meta/took_ms"]).differences(&rust, &python),
            None
        );
    }
}
