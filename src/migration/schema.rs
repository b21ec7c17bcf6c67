//! A JSON schema reduced to what it says about the data, so that a Rust and a Python
//! definition of one operation compare equal when they accept and return the same JSON.
//!
//! pydantic and utoipa describe the same data in different words. The reduction:
//! - resolves `$ref`s against the schema's own document (a cycle becomes a `$ref` to the
//!   name, so recursive models still compare);
//! - drops annotations: `title`, `description`, `example(s)`, `deprecated`, `readOnly`,
//!   `writeOnly`, `externalDocs`, `xml`, `$comment`, `$schema`, `x-…` extensions, and
//!   `format` (pydantic writes none for `int` and `float`, utoipa writes `int64`/`double`:
//!   a hint about the range, not about the JSON on the wire);
//! - writes an optional value one way: pydantic's `anyOf: [X, {type: null}]`, utoipa's
//!   `oneOf: [{type: null}, X]` and `type: [T, "null"]` all become `X` with
//!   `type: [T, "null"]`; a lone `allOf: [X]` becomes `X`;
//! - orders what has no order: `type` lists and `enum` values; `required` becomes an object
//!   (`{"id": true}`), so that a difference names the property.
//!
//! Defaults, bounds, patterns and types stay: they change what a client may send or gets.

use serde_json::{Map, Value};

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "example",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
    "externalDocs",
    "xml",
    "$comment",
    "$schema",
];
/// Keywords whose value is a schema.
const SUBSCHEMA: &[&str] = &[
    "items",
    "additionalProperties",
    "additionalItems",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
];
/// Keywords whose value is a list of schemas.
const SUBSCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names (not keywords) to schemas.
const SUBSCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// `schema` reduced for comparison; its `$ref`s point into `document`.
pub(crate) fn normalized(schema: &Value, document: &Value) -> Value {
    Normalizer {
        document,
        expanding: Vec::new(),
    }
    .schema(schema)
}

/// Follows a local `$ref` (`#/components/schemas/Item`) in `document`.
pub(crate) fn resolve<'a>(reference: &str, document: &'a Value) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?)
}

struct Normalizer<'a> {
    document: &'a Value,
    /// The `$ref`s being expanded, outermost first: one met again is a cycle.
    expanding: Vec<String>,
}

impl Normalizer<'_> {
    fn schema(&mut self, schema: &Value) -> Value {
        let Value::Object(object) = schema else {
            return schema.clone();
        };
        if let Some(Value::String(reference)) = object.get("$ref") {
            return self.reference(reference, object);
        }
        let mut out = Map::new();
        for (key, value) in object {
            if ANNOTATIONS.contains(&key.as_str()) || key.starts_with("x-") {
                continue;
            }
            let value = if SUBSCHEMA.contains(&key.as_str()) {
                self.schema(value)
            } else if SUBSCHEMA_LISTS.contains(&key.as_str()) {
                match value {
                    Value::Array(list) => list.iter().map(|item| self.schema(item)).collect(),
                    other => other.clone(),
                }
            } else if SUBSCHEMA_MAPS.contains(&key.as_str()) {
                match value {
                    Value::Object(map) => Value::Object(
                        map.iter()
                            .map(|(name, item)| (name.clone(), self.schema(item)))
                            .collect(),
                    ),
                    other => other.clone(),
                }
            } else {
                value.clone()
            };
            out.insert(key.clone(), value);
        }
        canonical(out)
    }

    /// A `$ref`, expanded in place; keywords beside it (allowed since OpenAPI 3.1) win.
    fn reference(&mut self, reference: &str, object: &Map<String, Value>) -> Value {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        let target = match resolve(reference, self.document) {
            Some(target) if !self.expanding.iter().any(|open| open == reference) => target,
            // Unresolvable, or a cycle: compared by name.
            _ => return serde_json::json!({ "$ref": name }),
        };
        self.expanding.push(reference.to_string());
        let mut expanded = self.schema(target);
        self.expanding.pop();
        let siblings: Map<String, Value> = object
            .iter()
            .filter(|(key, _)| *key != "$ref")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if let (Value::Object(expanded), Value::Object(siblings)) =
            (&mut expanded, self.schema(&Value::Object(siblings)))
        {
            expanded.extend(siblings);
        }
        expanded
    }
}

/// One way of writing what can be written several ways (see the module documentation).
fn canonical(mut schema: Map<String, Value>) -> Value {
    if let Some(Value::Array(all)) = schema.get("allOf")
        && let [Value::Object(only)] = all.as_slice()
    {
        let only = only.clone();
        schema.remove("allOf");
        for (key, value) in only {
            schema.entry(key).or_insert(value);
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        if let Some(Value::Array(choices)) = schema.get(keyword)
            && let Some(nullable) = nullable(choices)
        {
            schema.remove(keyword);
            for (key, value) in nullable {
                schema.entry(key).or_insert(value);
            }
        }
    }
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.sort_by_key(Value::to_string);
        types.dedup();
        if types.len() == 1 {
            let only = types.pop().expect("one type");
            schema.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.sort_by_key(Value::to_string);
    }
    // A set: as an object, a diff names the property (`/required/sku`), not a position.
    if let Some(Value::Array(names)) = schema.get("required") {
        let names = names
            .iter()
            .filter_map(|name| Some((name.as_str()?.to_string(), Value::Bool(true))));
        let names = Value::Object(names.collect());
        schema.insert("required".into(), names);
    }
    Value::Object(schema)
}

/// `[X, {type: null}]` in either order, X with a type: X with `null` added to its types.
fn nullable(choices: &[Value]) -> Option<Map<String, Value>> {
    let is_null = |value: &Value| *value == serde_json::json!({"type": "null"});
    let other = match choices {
        [a, b] if is_null(b) => a,
        [a, b] if is_null(a) => b,
        _ => return None,
    };
    let mut other = other.as_object()?.clone();
    let mut types = match other.get("type")? {
        Value::String(one) => vec![Value::String(one.clone())],
        Value::Array(many) => many.clone(),
        _ => return None,
    };
    types.push(Value::String("null".into()));
    types.sort_by_key(Value::to_string);
    types.dedup();
    other.insert("type".into(), Value::Array(types));
    Some(other)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document(schemas: Value) -> Value {
        json!({ "components": { "schemas": schemas } })
    }

    #[test]
    fn pydantic_and_utoipa_items_are_the_same_data() {
        let python = document(json!({"Item": {
            "properties": {
                "id": {"type": "integer", "title": "Id"},
                "name": {"type": "string", "title": "Name"},
                "price": {"type": "number", "title": "Price"},
                "tags": {"items": {"type": "string"}, "type": "array", "title": "Tags"},
            },
            "type": "object", "required": ["id", "name", "price", "tags"], "title": "Item",
        }}));
        let rust = document(json!({"Item": {
            "type": "object", "required": ["tags", "id", "name", "price"],
            "properties": {
                "id": {"type": "integer", "format": "int64"},
                "name": {"type": "string", "description": "What it is called"},
                "price": {"type": "number", "format": "double"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        }}));
        let reference = json!({"$ref": "#/components/schemas/Item"});
        assert_eq!(
            normalized(&reference, &rust),
            normalized(&reference, &python)
        );
    }

    #[test]
    fn optional_values_are_written_one_way() {
        let pydantic = json!({"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Q"});
        let utoipa = json!({"type": ["null", "string"]});
        let utoipa_one_of = json!({"oneOf": [{"type": "null"}, {"type": "string"}]});
        let empty = json!({});
        let expected = json!({"type": ["null", "string"]});
        assert_eq!(normalized(&pydantic, &empty), expected);
        assert_eq!(normalized(&utoipa, &empty), expected);
        assert_eq!(normalized(&utoipa_one_of, &empty), expected);
        let all_of = json!({"allOf": [{"type": "integer"}], "description": "x"});
        assert_eq!(normalized(&all_of, &empty), json!({"type": "integer"}));
    }

    #[test]
    fn a_property_named_like_an_annotation_is_kept() {
        let schema = json!({"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}});
        assert_eq!(
            normalized(&schema, &json!({})),
            json!({"type": "object", "properties": {"title": {"type": "string"}}})
        );
    }

    #[test]
    fn constraints_and_types_still_differ() {
        let empty = json!({});
        let python = json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 50});
        let rust = json!({"type": "integer", "minimum": 0, "format": "int32"});
        assert_ne!(normalized(&python, &empty), normalized(&rust, &empty));
    }

    #[test]
    fn recursive_models_end_in_a_named_reference() {
        let doc = document(json!({"Node": {
            "type": "object",
            "properties": {"children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}},
        }}));
        let node = normalized(&json!({"$ref": "#/components/schemas/Node"}), &doc);
        assert_eq!(
            node.pointer("/properties/children/items"),
            Some(&json!({"$ref": "Node"}))
        );
        let missing = normalized(&json!({"$ref": "#/components/schemas/Gone"}), &doc);
        assert_eq!(missing, json!({"$ref": "Gone"}));
    }
}
