//! One OpenAPI document from the Python app's and the Rust routes': the pure merge, on JSON.
//!
//! The Python document is the base (its `info`, `servers`, `security`, path order). Into it:
//! - every Python operation gets `x-served-by: python`;
//! - every Rust operation is added with `x-served-by: rust`, under the Python path of the
//!   same shape (`/items/{id}` goes to `/items/{item_id}`, its path parameters renamed by
//!   position), replacing the Python operation of the same method: an operation defined on
//!   both sides is served, and documented, by Rust. Where the two definitions differ
//!   ([`Pair::differences`]), the operation is reported as a [`Conflict`];
//! - Rust components are added; one whose name Python already uses for another definition
//!   is renamed (`Item` → `Item_rust`, every Rust `$ref` to it follows) and reported;
//! - Rust tags the Python document lacks are appended.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::operation_diff::Pair;
use super::path_template::{parameter_names, shape};
use super::schema::normalized;

/// The operation keys of an OpenAPI path item.
pub(crate) const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What merging produced.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) document: Value,
    /// Operations defined on both sides, differently.
    pub(crate) conflicts: Vec<Conflict>,
    /// Rust components renamed because Python has another definition under the name.
    pub(crate) renamed: Vec<String>,
}

/// An operation both sides define, and how the definitions differ.
#[derive(Debug, PartialEq)]
pub(crate) struct Conflict {
    /// `GET /items/{item_id}`, with the Python path template.
    pub(crate) operation: String,
    pub(crate) differences: Vec<String>,
}

/// Merges the Rust routes' document into the Python app's (`Value::Null` when the app has
/// none: the result is then the Rust document, marked).
pub(crate) fn merge(rust: &Value, python: &Value) -> Merged {
    let mut merged = if python.is_object() {
        python.clone()
    } else {
        json!({ "openapi": rust["openapi"], "info": rust["info"], "paths": {} })
    };
    for item in paths_mut(&mut merged).values_mut() {
        push_down_parameters(item);
        for_each_operation(item, |operation| mark(operation, "python"));
    }
    let (rust, renamed) = components(rust, python, &mut merged);
    let conflicts = paths(&rust, &mut merged);
    tags(&rust, &mut merged);
    Merged {
        document: merged,
        conflicts,
        renamed,
    }
}

fn paths_mut(document: &mut Value) -> &mut Map<String, Value> {
    let paths = document
        .as_object_mut()
        .expect("documents are objects")
        .entry("paths")
        .or_insert_with(|| json!({}));
    if !paths.is_object() {
        *paths = json!({});
    }
    paths.as_object_mut().expect("made an object above")
}

fn for_each_operation(item: &mut Value, mut each: impl FnMut(&mut Value)) {
    for method in METHODS {
        if let Some(operation) = item.get_mut(method) {
            each(operation);
        }
    }
}

fn mark(operation: &mut Value, side: &str) {
    if let Some(operation) = operation.as_object_mut() {
        operation.insert("x-served-by".into(), side.into());
    }
}

/// Moves a path item's own `parameters` into each of its operations, so that an operation
/// from the other side placed beside them does not inherit them.
fn push_down_parameters(item: &mut Value) {
    let Some(Value::Array(shared)) = item
        .as_object_mut()
        .and_then(|item| item.remove("parameters"))
    else {
        return;
    };
    for_each_operation(item, |operation| {
        let own = operation
            .as_object_mut()
            .expect("operations are objects")
            .entry("parameters")
            .or_insert_with(|| json!([]));
        let Value::Array(own) = own else { return };
        let key = |parameter: &Value| (parameter["in"].clone(), parameter["name"].clone());
        let inherited: Vec<Value> = shared
            .iter()
            .filter(|parameter| !own.iter().any(|mine| key(mine) == key(parameter)))
            .cloned()
            .collect();
        own.splice(0..0, inherited);
    });
}

/// Adds the Rust components to `merged`; returns the Rust document with its clashing
/// components renamed, and a sentence per rename.
fn components(rust: &Value, python: &Value, merged: &mut Value) -> (Value, Vec<String>) {
    let mut rust = rust.clone();
    let mut renames = HashMap::new();
    let mut renamed = Vec::new();
    let sections = rust["components"].as_object().cloned().unwrap_or_default();
    for (section, entries) in &sections {
        let Some(entries) = entries.as_object() else {
            continue;
        };
        for (name, definition) in entries {
            let Some(theirs) = python.pointer(&format!("/components/{section}/{name}")) else {
                continue;
            };
            if normalized(definition, &rust) == normalized(theirs, python) {
                continue;
            }
            let taken = |candidate: &str| {
                entries.contains_key(candidate)
                    || python
                        .pointer(&format!("/components/{section}/{candidate}"))
                        .is_some()
            };
            let new_name = (1..)
                .map(|n| {
                    if n == 1 {
                        format!("{name}_rust")
                    } else {
                        format!("{name}_rust{n}")
                    }
                })
                .find(|candidate| !taken(candidate))
                .expect("an unused name exists");
            renamed.push(format!(
                "components/{section}/{name} differs between Rust and Python; Rust's is published as {new_name}"
            ));
            renames.insert(
                format!("#/components/{section}/{name}"),
                format!("#/components/{section}/{new_name}"),
            );
            let section = rust["components"][section]
                .as_object_mut()
                .expect("a section");
            let definition = section.remove(name).expect("iterated above");
            section.insert(new_name, definition);
        }
    }
    rename_references(&mut rust, &renames);
    let merged_components = merged
        .as_object_mut()
        .expect("documents are objects")
        .entry("components")
        .or_insert_with(|| json!({}));
    for (section, entries) in rust["components"].as_object().into_iter().flatten() {
        let target = merged_components
            .as_object_mut()
            .expect("components are objects")
            .entry(section.clone())
            .or_insert_with(|| json!({}));
        for (name, definition) in entries.as_object().into_iter().flatten() {
            if let Some(target) = target.as_object_mut() {
                target
                    .entry(name.clone())
                    .or_insert_with(|| definition.clone());
            }
        }
    }
    (rust, renamed)
}

fn rename_references(value: &mut Value, renames: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                match value {
                    Value::String(reference) if key == "$ref" => {
                        if let Some(new) = renames.get(reference.as_str()) {
                            *reference = new.clone();
                        }
                    }
                    other => rename_references(other, renames),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rename_references(item, renames)),
        _ => {}
    }
}

/// Puts every Rust operation into `merged`; returns the operations defined differently.
fn paths(rust: &Value, merged: &mut Value) -> Vec<Conflict> {
    let python = merged.clone();
    let mut by_shape: HashMap<String, String> = paths_mut(merged)
        .keys()
        .map(|path| (shape(path), path.clone()))
        .collect();
    let mut conflicts = Vec::new();
    for (rust_path, item) in rust["paths"].as_object().into_iter().flatten() {
        let mut item = item.clone();
        push_down_parameters(&mut item);
        let path = by_shape
            .entry(shape(rust_path))
            .or_insert_with(|| rust_path.clone())
            .clone();
        let names: Vec<(String, String)> = parameter_names(rust_path)
            .into_iter()
            .zip(parameter_names(&path))
            .map(|(rust_name, python_name)| (rust_name.to_string(), python_name.to_string()))
            .collect();
        let target = paths_mut(merged)
            .entry(path.clone())
            .or_insert_with(|| json!({}));
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let mut operation = operation.clone();
            rename_path_parameters(&mut operation, &names);
            mark(&mut operation, "rust");
            if let Some(theirs) = python.pointer(&format!("/paths/{}/{method}", escape(&path))) {
                let differences = Pair {
                    rust: &operation,
                    rust_document: rust,
                    python: theirs,
                    python_document: &python,
                }
                .differences();
                if !differences.is_empty() {
                    conflicts.push(Conflict {
                        operation: format!("{} {path}", method.to_ascii_uppercase()),
                        differences,
                    });
                }
            }
            target[method] = operation;
        }
    }
    conflicts
}

/// A path as one JSON pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn rename_path_parameters(operation: &mut Value, names: &[(String, String)]) {
    let Some(Value::Array(parameters)) = operation.get_mut("parameters") else {
        return;
    };
    for parameter in parameters
        .iter_mut()
        .filter(|parameter| parameter["in"] == "path")
    {
        let Some(Value::String(name)) = parameter.get_mut("name") else {
            continue;
        };
        if let Some((_, python_name)) = names.iter().find(|(rust_name, _)| rust_name == name) {
            *name = python_name.clone();
        }
    }
}

fn tags(rust: &Value, merged: &mut Value) {
    let Some(rust_tags) = rust["tags"].as_array() else {
        return;
    };
    let tags = merged
        .as_object_mut()
        .expect("documents are objects")
        .entry("tags")
        .or_insert_with(|| json!([]));
    let Value::Array(tags) = tags else { return };
    for tag in rust_tags {
        if !tags.iter().any(|known| known["name"] == tag["name"]) {
            tags.push(tag.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `app.openapi()` of pyapp/service.py (FastAPI).
    const PYTHON: &str = include_str!("fixtures/python_service.json");
    /// The `openapi_merge` example's Rust document (utoipa): `GET /items/{id}`, `GET /version`.
    const RUST: &str = include_str!("fixtures/rust_items.json");

    fn fixtures() -> (Value, Value) {
        (
            serde_json::from_str(RUST).unwrap(),
            serde_json::from_str(PYTHON).unwrap(),
        )
    }

    fn served_by(document: &Value, path: &str, method: &str) -> Option<String> {
        document["paths"][path][method]["x-served-by"]
            .as_str()
            .map(String::from)
    }

    #[test]
    fn every_operation_is_marked_with_its_side() {
        let (rust, python) = fixtures();
        let merged = merge(&rust, &python);
        let document = &merged.document;
        assert_eq!(
            served_by(document, "/items/{item_id}", "get").as_deref(),
            Some("rust")
        );
        assert_eq!(
            served_by(document, "/items/{item_id}", "put").as_deref(),
            Some("python")
        );
        assert_eq!(
            served_by(document, "/items", "get").as_deref(),
            Some("python")
        );
        assert_eq!(
            served_by(document, "/version", "get").as_deref(),
            Some("rust")
        );
        // No second path for the same shape, and Python's path order is kept.
        assert!(document["paths"].get("/items/{id}").is_none());
        let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
        assert_eq!(paths[..2], ["/items", "/items/{item_id}"]);
        assert_eq!(paths.last().unwrap().as_str(), "/version");
        // The Rust operation is Rust's, its path parameter renamed after Python's template.
        let get = &document["paths"]["/items/{item_id}"]["get"];
        assert_eq!(get["operationId"], "get_item");
        assert_eq!(get["parameters"][0]["name"], "item_id");
        assert_eq!(merged.conflicts, []);
        assert_eq!(merged.renamed, Vec::<String>::new());
    }

    #[test]
    fn components_are_shared_or_renamed() {
        let (mut rust, python) = fixtures();
        // Rust's Item equals Python's: one Item. A different Rust Item is published apart.
        let merged = merge(&rust, &python);
        assert_eq!(
            merged.document["components"]["schemas"]["Item"],
            python["components"]["schemas"]["Item"]
        );
        assert!(
            merged.document["components"]["schemas"]
                .get("Item_rust")
                .is_none()
        );
        rust["components"]["schemas"]["Item"]["properties"]["sku"] = json!({"type": "string"});
        let merged = merge(&rust, &python);
        assert_eq!(
            merged.renamed,
            [
                "components/schemas/Item differs between Rust and Python; Rust's is published as Item_rust"
            ]
        );
        let schemas = &merged.document["components"]["schemas"];
        assert!(schemas["Item_rust"]["properties"].get("sku").is_some());
        assert!(schemas["Item"]["properties"].get("sku").is_none());
        let reference = merged.document.pointer(
            "/paths/~1items~1{item_id}/get/responses/200/content/application~1json/schema/$ref",
        );
        assert_eq!(reference, Some(&json!("#/components/schemas/Item_rust")));
        assert_eq!(
            merged.conflicts,
            [Conflict {
                operation: "GET /items/{item_id}".into(),
                differences: vec![
                    r#"response 200 application/json: /properties/sku: rust {"type":"string"}, python absent"#.into()
                ],
            }]
        );
    }

    #[test]
    fn a_conflicting_definition_names_the_operation() {
        let (mut rust, python) = fixtures();
        let get = &mut rust["paths"]["/items/{id}"]["get"];
        get["parameters"][0]["schema"] = json!({"type": "string"});
        get["parameters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "fields", "in": "query", "schema": {"type": "string"}}));
        let merged = merge(&rust, &python);
        assert_eq!(merged.conflicts.len(), 1);
        assert_eq!(merged.conflicts[0].operation, "GET /items/{item_id}");
        assert_eq!(
            merged.conflicts[0].differences,
            [
                r#"parameter path item_id: /schema/type: rust "string", python "integer""#,
                "parameter query fields: only in Rust",
            ]
        );
    }

    #[test]
    fn without_a_python_document_the_rust_one_is_served_marked() {
        let (rust, _) = fixtures();
        let merged = merge(&rust, &Value::Null);
        assert_eq!(merged.document["info"], rust["info"]);
        assert_eq!(
            served_by(&merged.document, "/items/{id}", "get").as_deref(),
            Some("rust")
        );
    }

    #[test]
    fn path_level_parameters_stay_with_their_side() {
        let python = json!({"openapi": "3.1.0", "info": {}, "paths": {"/t/{tenant}": {
            "parameters": [{"name": "tenant", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {"responses": {}}, "delete": {"responses": {}},
        }}});
        let rust = json!({"openapi": "3.1.0", "info": {}, "paths": {"/t/{t}": {
            "parameters": [{"name": "t", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {"responses": {}},
        }}});
        let merged = merge(&rust, &python);
        let item = &merged.document["paths"]["/t/{tenant}"];
        assert!(item.get("parameters").is_none());
        assert_eq!(item["delete"]["parameters"][0]["name"], "tenant");
        assert_eq!(item["get"]["parameters"][0]["name"], "tenant");
        assert_eq!(item["get"]["x-served-by"], "rust");
        assert_eq!(merged.conflicts, []);
    }
}
