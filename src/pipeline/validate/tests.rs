use super::*;
use serde_json::json;

#[test]
fn only_short_plain_names_are_echoable() {
    for ok in ["foo", "shoe_size", "a.b-c", "A1", &"x".repeat(64)] {
        assert!(is_echoable(ok), "{ok}");
    }
    for bad in [
        "",
        "jane@example.com",
        "two words",
        "a/b",
        "ä",
        "~0",
        &"x".repeat(65),
    ] {
        assert!(!is_echoable(bad), "{bad}");
    }
}

#[test]
fn percent_decoding_of_keyword_locations() {
    assert_eq!(percent_decode("/%24defs/a").as_deref(), Some("/$defs/a"));
    assert_eq!(
        percent_decode("/properties/dob").as_deref(),
        Some("/properties/dob")
    );
    assert_eq!(percent_decode("/bad%2"), None);
    assert_eq!(percent_decode("/bad%zz"), None);
}

#[test]
fn places_withhold_unsafe_caller_names_and_keep_document_order() {
    let body = json!({"b": 1, "metadata": {"x": 1, "jane@example.com": 2}, "list": [{"k": 1}]});
    let place = Place::resolve(&body, "/metadata/jane@example.com");
    assert!(place.hidden);
    assert_eq!(place.pointer(), "/metadata");
    assert_eq!(place.label(), "a field in metadata");
    assert_eq!(place.order, vec![1, 1]);

    let place = Place::resolve(&body, "/list/0/k");
    assert!(!place.hidden);
    assert_eq!(place.dotted(), "list.0.k");
    assert_eq!(place.order, vec![2, 0, 0]);

    let root = Place::resolve(&body, "");
    assert_eq!(root.label(), "the request body");
    let missing = root.child_declared(&body, "email");
    assert_eq!(
        (missing.pointer(), missing.order),
        ("/email".to_owned(), vec![usize::MAX])
    );
    let odd = root.child_caller_chosen(&body, "a b");
    assert!(odd.hidden);
    assert_eq!(odd.pointer(), "");
}

#[test]
fn pointer_segments_are_escaped() {
    let body = json!({"a~b": {"c": 1}});
    let place = Place::resolve(&body, "/a~0b/c");
    // "~" is not echoable, so the path stops before it rather than escaping it.
    assert!(place.hidden);
    assert_eq!(place.pointer(), "");
    assert_eq!(escape_pointer("a/b~c"), "a~1b~0c");
    assert_eq!(unescape_pointer("a~1b~0c"), "a/b~c");
}

#[test]
fn messages_come_from_the_schema_description() {
    let schemas = Schemas::embedded().unwrap();
    let failure = schemas
        .validate(
            "addresses.create",
            &json!({"clientId": "c", "line": "l", "city": "c", "country": "ZZ"}),
        )
        .unwrap_err();
    assert_eq!(failure.errors[0].rule, "enum");
    assert!(
        failure
            .message
            .starts_with("country must be an officially assigned ISO 3166-1")
    );
    assert!(!failure.message.contains("ZZ"));
}
