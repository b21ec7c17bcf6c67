//! Path templates (`/items/{item_id}`) as both sides write them, compared by shape.
//!
//! FastAPI and utoipa name a path's parameters independently (`{item_id}` in Python, `{id}`
//! in Rust), yet both templates match the same requests. Templates are therefore matched on
//! their *shape*, the template with every parameter name erased, and parameters correspond
//! by position.

/// `/items/{item_id}/tags/{tag}` → `/items/{}/tags/{}`.
pub(crate) fn shape(template: &str) -> String {
    let mut shape = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        shape.push_str(&rest[..open]);
        shape.push_str("{}");
        rest = &rest[open + close + 1..];
    }
    shape.push_str(rest);
    shape
}

/// The parameter names of a template, in order: `/items/{item_id}` → `["item_id"]`.
pub(crate) fn parameter_names(template: &str) -> Vec<&str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
        .collect()
}

/// The template with every parameter replaced by `value`: a concrete path that the template
/// (and any router route of the same shape) matches.
pub(crate) fn fill(template: &str, value: &str) -> String {
    shape(template).replace("{}", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_with_other_names_have_one_shape() {
        assert_eq!(shape("/items/{item_id}"), "/items/{}");
        assert_eq!(shape("/items/{id}"), shape("/items/{item_id}"));
        assert_eq!(shape("/a/{x}/b/{y}"), "/a/{}/b/{}");
        assert_eq!(shape("/health"), "/health");
        assert_eq!(shape("/broken/{x"), "/broken/{x");
    }

    #[test]
    fn names_come_in_order() {
        assert_eq!(parameter_names("/a/{x}/b/{y}"), ["x", "y"]);
        assert!(parameter_names("/health").is_empty());
    }

    #[test]
    fn filled_templates_are_concrete_paths() {
        assert_eq!(fill("/items/{item_id}", "0"), "/items/0");
        assert_eq!(fill("/{prefix}/whoami", "p"), "/p/whoami");
    }
}
