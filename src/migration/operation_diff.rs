//! How a Rust and a Python definition of one operation differ: parameters, request body and
//! response schemas, each compared after [`schema::normalized`](super::schema::normalized).
//!
//! What counts: a parameter on one side only, or with another `required` or schema; a
//! request body on one side only, or with other media types or schemas; and, for every
//! status both sides document, other media types or schemas. A success status (`2xx`) that
//! only one side documents counts too (`201` against `200` is a client-visible change); an
//! error status on one side only does not, since FastAPI documents its `422` on every
//! operation with parameters and a Rust handler usually documents its `404` only.

use serde_json::{Map, Value, json};

use super::json_diff::JsonDiff;
use super::schema::{normalized, resolve};

/// One operation of each side, with the documents their `$ref`s point into.
pub(crate) struct Pair<'a> {
    pub(crate) rust: &'a Value,
    pub(crate) rust_document: &'a Value,
    pub(crate) python: &'a Value,
    pub(crate) python_document: &'a Value,
}

impl Pair<'_> {
    /// Every difference, one sentence each; empty when both define the same operation.
    pub(crate) fn differences(&self) -> Vec<String> {
        let mut found = Vec::new();
        self.parameters(&mut found);
        self.request_body(&mut found);
        self.responses(&mut found);
        found
    }

    fn parameters(&self, found: &mut Vec<String>) {
        let rust = parameters(self.rust, self.rust_document);
        let python = parameters(self.python, self.python_document);
        for (key, rust_shape) in &rust {
            match python.get(key) {
                None => found.push(format!("parameter {key}: only in Rust")),
                Some(python_shape) => {
                    compare(found, &format!("parameter {key}"), rust_shape, python_shape)
                }
            }
        }
        for key in python.keys().filter(|key| !rust.contains_key(*key)) {
            found.push(format!("parameter {key}: only in Python"));
        }
    }

    fn request_body(&self, found: &mut Vec<String>) {
        let rust = dereferenced(self.rust.get("requestBody"), self.rust_document);
        let python = dereferenced(self.python.get("requestBody"), self.python_document);
        match (rust, python) {
            (None, None) => {}
            (Some(_), None) => found.push("request body: only in Rust".into()),
            (None, Some(_)) => found.push("request body: only in Python".into()),
            (Some(rust), Some(python)) => {
                let required = |body: &Value| {
                    body.get("required")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                };
                if required(rust) != required(python) {
                    found.push(format!(
                        "request body: required in {} only",
                        if required(rust) { "Rust" } else { "Python" }
                    ));
                }
                self.content("request body", rust, python, found);
            }
        }
    }

    fn responses(&self, found: &mut Vec<String>) {
        let empty = Map::new();
        let responses = |operation: &Value| {
            operation
                .get("responses")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_else(|| empty.clone())
        };
        let (rust, python) = (responses(self.rust), responses(self.python));
        for (status, rust_response) in &rust {
            let label = format!("response {status}");
            match python.get(status) {
                Some(python_response) => {
                    let rust_response = dereferenced(Some(rust_response), self.rust_document);
                    let python_response = dereferenced(Some(python_response), self.python_document);
                    if let (Some(rust_response), Some(python_response)) =
                        (rust_response, python_response)
                    {
                        self.content(&label, rust_response, python_response, found);
                    }
                }
                None if status.starts_with('2') => found.push(format!("{label}: only in Rust")),
                None => {}
            }
        }
        for status in python
            .keys()
            .filter(|status| status.starts_with('2') && !rust.contains_key(*status))
        {
            found.push(format!("response {status}: only in Python"));
        }
    }

    /// The `content` maps (media type → schema) of a request body or a response.
    fn content(&self, label: &str, rust: &Value, python: &Value, found: &mut Vec<String>) {
        let rust = content(rust, self.rust_document);
        let python = content(python, self.python_document);
        for (media, rust_schema) in &rust {
            match python.get(media) {
                None => found.push(format!("{label}: {media} only in Rust")),
                Some(python_schema) => compare(
                    found,
                    &format!("{label} {media}"),
                    rust_schema,
                    python_schema,
                ),
            }
        }
        for media in python.keys().filter(|media| !rust.contains_key(*media)) {
            found.push(format!("{label}: {media} only in Python"));
        }
    }
}

fn compare(found: &mut Vec<String>, label: &str, rust: &Value, python: &Value) {
    let diff = JsonDiff::new(rust, python);
    if !diff.is_empty() {
        found.push(format!("{label}: {diff}"));
    }
}

/// An object, or what its `$ref` points to.
fn dereferenced<'a>(value: Option<&'a Value>, document: &'a Value) -> Option<&'a Value> {
    match value?.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(reference, document),
        None => value,
    }
}

/// An operation's parameters by `in name` (header names in lower case, as HTTP compares
/// them), each as what matters of it: whether it is required, and its schema.
fn parameters(operation: &Value, document: &Value) -> Map<String, Value> {
    let list = operation.get("parameters").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|parameter| dereferenced(Some(parameter), document))
        .filter_map(|parameter| {
            let place = parameter.get("in")?.as_str()?;
            let name = parameter.get("name")?.as_str()?;
            let name = if place == "header" {
                name.to_ascii_lowercase()
            } else {
                name.to_string()
            };
            let required = place == "path"
                || parameter
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            let shape = json!({
                "required": required,
                "schema": parameter.get("schema").map(|schema| normalized(schema, document)),
                "content": content(parameter, document),
            });
            Some((format!("{place} {name}"), shape))
        })
        .collect()
}

/// Media type → normalized schema, from an object's `content`.
fn content(object: &Value, document: &Value) -> Map<String, Value> {
    let media_types = object.get("content").and_then(Value::as_object);
    media_types
        .into_iter()
        .flatten()
        .map(|(media, entry)| {
            let schema = entry
                .get("schema")
                .map_or(Value::Null, |schema| normalized(schema, document));
            (media.clone(), schema)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn differences(rust: Value, python: Value) -> Vec<String> {
        let empty = json!({});
        Pair {
            rust: &rust,
            rust_document: &empty,
            python: &python,
            python_document: &empty,
        }
        .differences()
    }

    fn item_response(price_type: &str) -> Value {
        json!({"description": "ok", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"price": {"type": price_type}},
        }}}})
    }

    #[test]
    fn the_same_operation_in_other_words_has_no_difference() {
        let rust = json!({
            "parameters": [{"name": "item_id", "in": "path", "required": true,
                            "schema": {"type": "integer", "format": "int64"}, "description": "Item id"}],
            "responses": {"200": item_response("number"), "404": {"description": "missing"}},
        });
        let python = json!({
            "parameters": [{"name": "item_id", "in": "path", "required": true,
                            "schema": {"type": "integer", "title": "Item Id"}}],
            "responses": {"200": item_response("number"), "422": {"description": "invalid"}},
        });
        assert_eq!(differences(rust, python), Vec::<String>::new());
    }

    #[test]
    fn parameters_bodies_and_responses_that_differ_are_named() {
        let rust = json!({
            "parameters": [{"name": "item_id", "in": "path", "schema": {"type": "string"}},
                           {"name": "X-Token", "in": "header", "required": true, "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": item_response("string")},
        });
        let python = json!({
            "parameters": [{"name": "item_id", "in": "path", "required": true, "schema": {"type": "integer"}},
                           {"name": "x-token", "in": "header", "schema": {"type": "string"}},
                           {"name": "verbose", "in": "query", "schema": {"type": "boolean"}}],
            "responses": {"200": item_response("number"), "201": item_response("number")},
        });
        assert_eq!(
            differences(rust, python),
            [
                r#"parameter path item_id: /schema/type: rust "string", python "integer""#,
                "parameter header x-token: /required: rust true, python false",
                "parameter query verbose: only in Python",
                "request body: only in Rust",
                r#"response 200 application/json: /properties/price/type: rust "string", python "number""#,
                "response 201: only in Python",
            ]
        );
    }

    #[test]
    fn referenced_bodies_are_compared_by_content() {
        let rust_document = json!({"components": {"requestBodies": {"New": {
            "required": true, "content": {"application/json": {"schema": {"type": "object"}}}}}}});
        let rust = json!({"requestBody": {"$ref": "#/components/requestBodies/New"}});
        let python = json!({"requestBody": {"required": true, "content": {"text/plain": {"schema": {"type": "string"}}}}});
        let empty = json!({});
        let pair = Pair {
            rust: &rust,
            rust_document: &rust_document,
            python: &python,
            python_document: &empty,
        };
        assert_eq!(
            pair.differences(),
            [
                "request body: application/json only in Rust",
                "request body: text/plain only in Python"
            ]
        );
    }
}
