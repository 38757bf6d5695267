//! Table-driven schema tests: every `tests/schema_cases/<op>.json` lists valid bodies and
//! invalid ones with the expected `param`, first failing `path` and `rule`. Every invalid
//! case also proves that no submitted value marked as a canary reaches any message,
//! param or path.

// Helpers outside #[test] fns are test code too; clippy.toml's test allowances miss them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use cubegate::pipeline::validate::{MAX_ERRORS, SchemaError, Schemas, ValidationFailure};
use serde_json::{Value, json};

struct Case {
    file: String,
    op: String,
    doc: Value,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema_cases");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.push(Case {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            op: doc["op"].as_str().unwrap().to_owned(),
            doc,
        });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

fn schemas() -> Schemas {
    Schemas::embedded().unwrap()
}

fn schema_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// Strings the body carries that must never be echoed: explicit canaries plus every
/// string value or key containing "canary".
fn canaries(case: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.to_lowercase().contains("canary") => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    if k.to_lowercase().contains("canary") {
                        out.push(k.clone());
                    }
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<String> = case["canaries"]
        .as_array()
        .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    walk(&case["body"], &mut out);
    out
}

fn assert_no_leak(where_: &str, failure: &ValidationFailure, canaries: &[String]) {
    let mut texts = vec![failure.param.clone(), failure.message.clone()];
    for e in &failure.errors {
        texts.push(e.path.clone());
        texts.push(e.message.clone());
    }
    let serialized = serde_json::to_string(failure).unwrap();
    texts.push(serialized);
    for canary in canaries {
        for text in &texts {
            assert!(
                !text.contains(canary.as_str()),
                "{where_}: submitted value {canary:?} leaked into {text:?}"
            );
        }
    }
}

#[test]
fn every_case_file_matches_its_schema() {
    let schemas = schemas();
    let mut checked = 0;
    for case in cases() {
        assert!(
            schemas.has(&case.op),
            "{}: no schema for {}",
            case.file,
            case.op
        );
        for valid in case.doc["valid"].as_array().unwrap() {
            let name = valid["name"].as_str().unwrap();
            if let Err(f) = schemas.validate(&case.op, &valid["body"]) {
                panic!("{} / {name}: expected valid, got {f:#?}", case.file);
            }
            checked += 1;
        }
        for invalid in case.doc["invalid"].as_array().unwrap() {
            let name = invalid["name"].as_str().unwrap();
            let where_ = format!("{} / {name}", case.file);
            let failure = match schemas.validate(&case.op, &invalid["body"]) {
                Ok(()) => panic!("{where_}: expected invalid, got Ok"),
                Err(f) => f,
            };
            let first = &failure.errors[0];
            assert_eq!(
                failure.param,
                invalid["param"].as_str().unwrap(),
                "{where_}: param in {failure:#?}"
            );
            assert_eq!(
                first.path,
                invalid["path"].as_str().unwrap(),
                "{where_}: path in {failure:#?}"
            );
            assert_eq!(
                first.rule,
                invalid["rule"].as_str().unwrap(),
                "{where_}: rule in {failure:#?}"
            );
            assert_eq!(
                failure.message, first.message,
                "{where_}: message is the first error's"
            );
            if let Some(message) = invalid["message"].as_str() {
                assert_eq!(failure.message, message, "{where_}: message");
            }
            for also in invalid["also"].as_array().into_iter().flatten() {
                assert!(
                    failure
                        .errors
                        .iter()
                        .any(|e| e.path == also["path"].as_str().unwrap()
                            && e.rule == also["rule"].as_str().unwrap()),
                    "{where_}: expected also {also} in {failure:#?}"
                );
            }
            assert!(failure.errors.len() <= MAX_ERRORS);
            assert_no_leak(&where_, &failure, &canaries(invalid));
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} cases ran");
}

#[test]
fn every_schema_has_valid_and_invalid_cases() {
    let schemas = schemas();
    let cases = cases();
    for op in schemas.ops() {
        let case = cases
            .iter()
            .find(|c| c.op == op)
            .unwrap_or_else(|| panic!("no case file for {op}"));
        assert!(
            !case.doc["valid"].as_array().unwrap().is_empty(),
            "{op}: no valid case"
        );
        assert!(
            !case.doc["invalid"].as_array().unwrap().is_empty(),
            "{op}: no invalid case"
        );
    }
}

#[test]
fn every_documented_write_operation_has_a_schema() {
    let expected = [
        "addresses.create",
        "addresses.update",
        "autofill.create",
        "checks.create",
        "checks.redact",
        "checks.update",
        "checks.validate",
        "clients.create",
        "clients.update",
        "customLists.addRecord",
        "documents.create",
        "documents.redact",
        "documents.update",
        "documents.upload",
        "flowSessions.create",
        "livePhotos.create",
        "livePhotos.redact",
        "liveVideos.create",
        "liveVideos.redact",
        "lookup.searchAddresses",
        "lookup.searchCompanies",
        "tokens.create",
        "webhooks.create",
        "webhooks.update",
        "workflowSessions.complete",
    ];
    let schemas = schemas();
    let mut ops: Vec<&str> = schemas.ops().collect();
    ops.sort_unstable();
    assert_eq!(ops, expected);
}

#[test]
fn embedded_and_directory_schemas_agree() {
    let embedded = schemas();
    let from_dir = Schemas::from_dir(&schema_dir()).unwrap();
    assert_eq!(
        embedded.ops().collect::<Vec<_>>(),
        from_dir.ops().collect::<Vec<_>>()
    );
    // Same file names on disk as embedded, defs included.
    let on_disk: Vec<String> = std::fs::read_dir(schema_dir().join("defs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let embedded_src = include_str!("../src/pipeline/validate/embedded.rs");
    for name in &on_disk {
        assert!(
            embedded_src.contains(&format!("\"defs/{name}\"")),
            "schemas/defs/{name} is not embedded"
        );
    }
    for case in cases() {
        for key in ["valid", "invalid"] {
            for c in case.doc[key].as_array().unwrap() {
                let a = embedded
                    .validate(&case.op, &c["body"])
                    .map_err(|f| serde_json::to_value(f).unwrap());
                let b = from_dir
                    .validate(&case.op, &c["body"])
                    .map_err(|f| serde_json::to_value(f).unwrap());
                assert_eq!(a, b, "{} / {}", case.file, c["name"]);
            }
        }
    }
}

#[test]
fn every_schema_file_declares_its_id_and_describes_its_properties() {
    fn check_descriptions(file: &str, node: &Value) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                assert!(
                    prop.get("description").and_then(Value::as_str).is_some(),
                    "{file}: property {name} has no description"
                );
            }
        }
        match node {
            // Conditional branches only refine properties declared (and described) above.
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "if" | "then" | "else"))
                .for_each(|(_, v)| check_descriptions(file, v)),
            Value::Array(items) => items.iter().for_each(|v| check_descriptions(file, v)),
            _ => {}
        }
    }
    for sub in ["", "defs/"] {
        for entry in std::fs::read_dir(schema_dir().join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let name = format!("{sub}{}", path.file_name().unwrap().to_string_lossy());
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(
                doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{name}"
            );
            assert_eq!(
                doc["$id"],
                format!("https://schemas.cubegate.dev/{name}"),
                "{name}"
            );
            check_descriptions(&name, &doc);
        }
    }
}

#[test]
fn country_def_is_the_249_officially_assigned_codes() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(schema_dir().join("defs/country.json")).unwrap(),
    )
    .unwrap();
    let codes = doc["enum"].as_array().unwrap();
    assert_eq!(codes.len(), 249);
    for known in ["GB", "US", "DE", "AX", "BQ", "SS"] {
        assert!(codes.contains(&json!(known)), "{known} missing");
    }
    // User-assigned or reserved codes are not officially assigned.
    for not_assigned in ["XK", "XX", "UK", "EU", "ZZ"] {
        assert!(
            !codes.contains(&json!(not_assigned)),
            "{not_assigned} present"
        );
    }
}

#[test]
fn errors_are_in_document_order_capped_and_deterministic() {
    let schemas = schemas();
    // Written in an order different from the schema's property order.
    let body = json!({
        "metadata": {"a": 1},
        "personDetails": {"gender": "x", "dob": "nope"},
        "type": "robot",
        "zzz": true,
    });
    let first = schemas.validate("clients.create", &body).unwrap_err();
    let paths: Vec<&str> = first.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/metadata/a",
            "/personDetails/gender",
            "/personDetails/dob",
            // Missing properties come after the ones present in the same object.
            "/personDetails/firstName",
            "/personDetails/lastName",
            "/type",
            "/zzz",
            "/email",
        ]
    );
    assert_eq!(first.param, "metadata.a");
    for _ in 0..5 {
        let again = schemas.validate("clients.create", &body).unwrap_err();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&first).unwrap()
        );
    }

    let many: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("extra{i}"), json!(i))).collect();
    let failure = schemas
        .validate("checks.update", &Value::Object(many))
        .unwrap_err();
    assert_eq!(failure.errors.len(), MAX_ERRORS);
    assert_eq!(failure.param, "extra0");
    assert_eq!(
        failure.errors[MAX_ERRORS - 1].path,
        format!("/extra{}", MAX_ERRORS - 1)
    );
}

#[test]
fn unknown_operation_fails_closed() {
    let failure = schemas()
        .validate("clients.explode", &json!({}))
        .unwrap_err();
    assert_eq!(failure.errors[0].rule, "schema");
}

#[test]
fn large_upload_validates() {
    let data = "A".repeat(6 * 1024 * 1024);
    let body = json!({"fileName": "scan.pdf", "data": data});
    assert!(schemas().validate("documents.upload", &body).is_ok());
}

#[test]
fn schemas_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Schemas>();
}

fn write(dir: &Path, rel: &str, value: &Value) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

#[test]
fn from_dir_reports_the_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Schemas::from_dir(dir.path()),
        Err(SchemaError::Empty { .. })
    ));

    std::fs::write(dir.path().join("clients.create.json"), "{ not json").unwrap();
    let err = Schemas::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, SchemaError::Parse { .. }));
    assert!(err.to_string().contains("clients.create.json"), "{err}");

    let missing = tempfile::tempdir().unwrap();
    write(
        missing.path(),
        "clients.create.json",
        &json!({"$id": "https://schemas.cubegate.dev/clients.create.json", "$ref": "defs/nowhere.json"}),
    );
    let err = Schemas::from_dir(missing.path()).unwrap_err();
    assert!(err.to_string().contains("nowhere.json"), "{err}");

    let bad_keyword = tempfile::tempdir().unwrap();
    write(bad_keyword.path(), "x.op.json", &json!({"type": "strng"}));
    let err = Schemas::from_dir(bad_keyword.path()).unwrap_err();
    assert!(
        matches!(err, SchemaError::Compile { ref file, .. } if file == "x.op.json"),
        "{err}"
    );

    let remote = tempfile::tempdir().unwrap();
    write(
        remote.path(),
        "x.op.json",
        &json!({"$ref": "https://example.com/remote.json"}),
    );
    assert!(
        Schemas::from_dir(remote.path()).is_err(),
        "remote refs must never be fetched"
    );
}

#[test]
fn operator_directory_overrides_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "defs/name.json",
        &json!({"$id": "https://ops.example/defs/name.json", "type": "string", "maxLength": 3,
                "description": "a short name"}),
    );
    write(
        dir.path(),
        "tokens.create.json",
        &json!({"$id": "https://ops.example/tokens.create.json", "type": "object",
                "properties": {"clientId": {"$ref": "defs/name.json", "description": "id"}},
                "required": ["clientId"], "additionalProperties": false}),
    );
    let schemas = Schemas::from_dir(dir.path()).unwrap();
    assert_eq!(schemas.ops().collect::<Vec<_>>(), ["tokens.create"]);
    assert!(
        schemas
            .validate("tokens.create", &json!({"clientId": "abc"}))
            .is_ok()
    );
    let failure = schemas
        .validate("tokens.create", &json!({"clientId": "abcd-canary"}))
        .unwrap_err();
    assert_eq!(
        failure.message,
        "clientId must be at most 3 characters long"
    );
    assert!(!schemas.has("clients.create"));
}
