//! `GET /items`, moved from `pyapp/service.py` (`list_items`) to Rust.
//!
//! A moved endpoint must answer exactly as the Python one did, errors included, or clients
//! break. So this handler reproduces FastAPI's behaviour, not axum's defaults:
//! - the query string is read the way Starlette reads it (`parse_qsl`: `+` is a space,
//!   blank values kept, the last of a repeated key wins), not with axum's `Query`, whose
//!   rejection is a plain-text 400;
//! - `limit` is parsed like pydantic parses an `int` from a string (surrounding whitespace,
//!   a sign, `_` between digits and a `.0` fraction are accepted) and a bad one gets
//!   FastAPI's 422 body: `{"detail": [{"type", "loc", "msg", "input", "ctx"}]}`;
//! - floats are written as Python writes them (`49.0`, not `49`).
//!
//! The contract test in tests/python/test_examples.py sends the same requests to the
//! Python service under uvicorn and to the `mixed_routes` example and compares status codes
//! and JSON bodies, so any drift shows up there.
//!
//! Storage: the example keeps the seed catalogue in memory, like the Python service does at
//! startup. The two sides do not share it: an item created through Python's `POST /items`
//! does not appear here. In a real service both handlers read the same database.

use axum::extract::RawQuery;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

/// Marks every response of a Rust handler, so clients and tests can tell who answered.
/// `pyapp/service.py` sets `x-served-by: python` on its own.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

pub struct Item {
    pub id: u32,
    pub name: &'static str,
    pub price: f64,
    pub tags: &'static [&'static str],
}

/// The same catalogue as `SEED_ITEMS` in pyapp/service.py.
pub const SEED_ITEMS: &[Item] = &[
    item(1, "Widget", 9.99, &["tools"]),
    item(2, "Gadget", 24.5, &["tools", "electronics"]),
    item(3, "Gizmo", 4.25, &[]),
    item(4, "Sprocket", 0.75, &["parts"]),
    item(5, "Widget Pro", 49.0, &["tools", "premium"]),
];

const fn item(id: u32, name: &'static str, price: f64, tags: &'static [&'static str]) -> Item {
    Item {
        id,
        name,
        price,
        tags,
    }
}

/// FastAPI's `limit: int = Query(50, ge=1, le=100)`.
const DEFAULT_LIMIT: usize = 50;
const MIN_LIMIT: u64 = 1;
const MAX_LIMIT: u64 = 100;

/// `GET /items?limit=&q=`: items by id, `q` filters on the name (case-insensitive).
pub async fn list_items(RawQuery(query): RawQuery) -> Response {
    let mut limit = None;
    let mut q = None;
    for (name, value) in query_pairs(query.as_deref().unwrap_or("")) {
        match name.as_str() {
            "limit" => limit = Some(value),
            "q" => q = Some(value.to_lowercase()),
            _ => {}
        }
    }
    let limit = match limit.as_deref().map(parse_limit) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) => limit,
        Some(Err(error)) => return error.response(limit.as_deref().unwrap_or_default()),
    };
    let found: Vec<&Item> = SEED_ITEMS
        .iter()
        .filter(|item| {
            q.as_ref()
                .is_none_or(|q| item.name.to_lowercase().contains(q))
        })
        .take(limit)
        .collect();
    tracing::info!(count = found.len(), "items listed by the Rust handler");
    json_response(StatusCode::OK, items_json(&found))
}

/// A JSON response marked as answered by Rust.
pub fn json_response(status: StatusCode, body: String) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (SERVED_BY, HeaderValue::from_static("rust")),
    ];
    (status, headers, body).into_response()
}

/// `key=value` pairs of a query string, decoded as Python's `urllib.parse.parse_qsl(...,
/// keep_blank_values=True)` decodes them (what Starlette's `request.query_params` uses).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(name), form_decode(value))
        })
}

fn form_decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Why a `limit` was refused, in pydantic's terms.
#[derive(Debug, PartialEq)]
enum LimitError {
    NotAnInteger,
    TooSmall,
    TooLarge,
}

/// pydantic's lax `int` from a string, then `ge=1, le=100`.
fn parse_limit(raw: &str) -> Result<usize, LimitError> {
    let text = raw.trim();
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (integer, fraction) = match text.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (text, None),
    };
    // `1.0` and `1.00` are integers to pydantic; `1.`, `1.5` and `1.0_0` are not.
    let fraction_ok = fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b == b'0'));
    if !fraction_ok {
        return Err(LimitError::NotAnInteger);
    }
    // Digits, with single underscores between them (`1_000`).
    let digits_ok = !integer.is_empty()
        && integer
            .split('_')
            .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()));
    if !digits_ok {
        return Err(LimitError::NotAnInteger);
    }
    let digits: String = integer.chars().filter(|c| *c != '_').collect();
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() || negative {
        return Err(LimitError::TooSmall);
    }
    if significant.len() > 3 {
        return Err(LimitError::TooLarge);
    }
    let value: u64 = significant.parse().map_err(|_| LimitError::NotAnInteger)?;
    if value < MIN_LIMIT {
        Err(LimitError::TooSmall)
    } else if value > MAX_LIMIT {
        Err(LimitError::TooLarge)
    } else {
        Ok(value as usize)
    }
}

impl LimitError {
    /// FastAPI's 422 for an invalid query parameter, byte for byte.
    fn response(&self, input: &str) -> Response {
        let (kind, message, context) = match self {
            LimitError::NotAnInteger => (
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer".to_string(),
                None,
            ),
            LimitError::TooSmall => (
                "greater_than_equal",
                format!("Input should be greater than or equal to {MIN_LIMIT}"),
                Some(format!(r#"{{"ge":{MIN_LIMIT}}}"#)),
            ),
            LimitError::TooLarge => (
                "less_than_equal",
                format!("Input should be less than or equal to {MAX_LIMIT}"),
                Some(format!(r#"{{"le":{MAX_LIMIT}}}"#)),
            ),
        };
        let mut error = format!(
            r#"{{"type":{},"loc":["query","limit"],"msg":{},"input":{}"#,
            json_string(kind),
            json_string(&message),
            json_string(input),
        );
        if let Some(context) = context {
            error.push_str(&format!(r#","ctx":{context}"#));
        }
        json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(r#"{{"detail":[{error}}}]}}"#),
        )
    }
}

fn items_json(items: &[&Item]) -> String {
    let items: Vec<String> = items.iter().map(|item| item_json(item)).collect();
    format!("[{}]", items.join(","))
}

pub fn item_json(item: &Item) -> String {
    let tags: Vec<String> = item.tags.iter().map(|tag| json_string(tag)).collect();
    format!(
        r#"{{"id":{},"name":{},"price":{},"tags":[{}]}}"#,
        item.id,
        json_string(item.name),
        python_float(item.price),
        tags.join(","),
    )
}

/// A float as Python's `json.dumps` writes it: `49.0`, `9.99`.
fn python_float(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// A JSON string literal (what `serde_json` would do, without the dependency).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
