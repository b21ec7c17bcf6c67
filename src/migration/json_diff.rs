//! Where two JSON values differ, as JSON pointers with both sides' values: the short diff
//! that the OpenAPI check and the shadow comparison log.
//!
//! Values are compared as data: object keys in any order, numbers by value (`49` equals
//! `49.0`, as it does for a JSON client). Only the first few differences are kept, with a
//! count of the rest, so that a log line stays short whatever the documents' size.

use std::fmt;

use serde_json::Value;

/// How many differences a diff keeps; the rest are only counted.
const SHOWN: usize = 5;
/// Values longer than this (as compact JSON) are cut in the text of a diff.
const VALUE_CHARS: usize = 60;

/// The differences between a Rust and a Python JSON value.
#[derive(Debug, Default)]
pub(crate) struct JsonDiff {
    shown: Vec<Difference>,
    total: usize,
}

/// One place where the two values differ; `None` where the place is absent on that side.
#[derive(Debug, PartialEq)]
struct Difference {
    pointer: String,
    rust: Option<Value>,
    python: Option<Value>,
}

impl JsonDiff {
    /// Compares `rust` with `python`.
    pub(crate) fn new(rust: &Value, python: &Value) -> Self {
        let mut diff = JsonDiff::default();
        diff.walk(&mut String::new(), Some(rust), Some(python));
        diff
    }

    /// True when the two values are the same data.
    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn walk(&mut self, pointer: &mut String, rust: Option<&Value>, python: Option<&Value>) {
        match (rust, python) {
            (Some(Value::Object(rust)), Some(Value::Object(python))) => {
                let keys = rust
                    .keys()
                    .chain(python.keys().filter(|key| !rust.contains_key(*key)));
                for key in keys {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    self.walk(pointer, rust.get(key), python.get(key));
                    pointer.truncate(len);
                }
            }
            (Some(Value::Array(rust)), Some(Value::Array(python))) => {
                for index in 0..rust.len().max(python.len()) {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{index}"));
                    self.walk(pointer, rust.get(index), python.get(index));
                    pointer.truncate(len);
                }
            }
            (Some(rust), Some(python)) if same_scalar(rust, python) => {}
            (rust, python) => {
                self.total += 1;
                if self.shown.len() < SHOWN {
                    self.shown.push(Difference {
                        pointer: pointer.clone(),
                        rust: rust.cloned(),
                        python: python.cloned(),
                    });
                }
            }
        }
    }
}

/// Equal as data: numbers by value, everything else as serde_json compares it.
fn same_scalar(rust: &Value, python: &Value) -> bool {
    match (rust, python) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            a.as_f64() == b.as_f64()
        }
        _ => rust == python,
    }
}

/// `/price: rust 9.99, python 10.0; /tags/1: rust absent, python "x" (and 2 more)`.
impl fmt::Display for JsonDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, difference) in self.shown.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            let place = if difference.pointer.is_empty() {
                "(whole value)"
            } else {
                &difference.pointer
            };
            write!(
                f,
                "{place}: rust {}, python {}",
                short(difference.rust.as_ref()),
                short(difference.python.as_ref())
            )?;
        }
        match self.total - self.shown.len() {
            0 => Ok(()),
            more => write!(f, " (and {more} more)"),
        }
    }
}

fn short(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "absent".to_string();
    };
    let text = value.to_string();
    match text.char_indices().nth(VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_data_has_no_difference() {
        let rust = json!({"b": [1, 2.5], "a": {"x": null}, "n": 49});
        let python = json!({"a": {"x": null}, "b": [1.0, 2.5], "n": 49.0});
        assert!(JsonDiff::new(&rust, &python).is_empty());
    }

    #[test]
    fn differences_are_pointers_with_both_values() {
        let rust = json!({"detail": "Not found", "tags": ["a"], "new": 1});
        let python = json!({"detail": "Item not found", "tags": ["a", "b/c"]});
        let diff = JsonDiff::new(&rust, &python);
        assert_eq!(
            diff.to_string(),
            r#"/detail: rust "Not found", python "Item not found"; /tags/1: rust absent, python "b/c"; /new: rust 1, python absent"#
        );
    }

    #[test]
    fn keys_with_slashes_are_escaped() {
        let diff = JsonDiff::new(&json!({"a/b": 1, "c~": 1}), &json!({"a/b": 2, "c~": 2}));
        assert!(
            diff.to_string()
                .starts_with("/a~1b: rust 1, python 2; /c~0: ")
        );
    }

    #[test]
    fn a_long_diff_is_cut_and_counted() {
        let rust = json!((0..8).collect::<Vec<_>>());
        let python = json!((10..18).collect::<Vec<_>>());
        let diff = JsonDiff::new(&rust, &python);
        assert_eq!(diff.shown.len(), SHOWN);
        assert!(diff.to_string().ends_with("(and 3 more)"));
        let long = JsonDiff::new(&json!("x".repeat(100)), &json!("y"));
        assert!(
            long.to_string()
                .contains(&format!("\"{}…", "x".repeat(VALUE_CHARS - 1)))
        );
    }
}
