//! Validate stage: checks a request body against its operation's JSON Schema.
//!
//! Input: an operation id (`clients.create`, …) and the parsed JSON body (after the
//! policy stage has removed forbidden fields). Output: `Ok(())`, or a
//! [`ValidationFailure`] naming the first failing field in ComplyCube's dotted form
//! (`param`) plus up to [`MAX_ERRORS`] [`FieldError`]s in document order.
//!
//! Schemas (draft 2020-12) live in `schemas/<op id>.json` with shared parts under
//! `schemas/defs/`; they are compiled once, either from the copies embedded in the
//! binary ([`Schemas::embedded`]) or from an operator's directory
//! ([`Schemas::from_dir`]). Every file is registered in an in-memory registry under its
//! `$id`, so relative `$ref`s resolve without any network or file access; a `$ref`
//! that does not resolve is a [`SchemaError`] at start-up, never at request time.
//! Each operation's schema is also reduced once to a walk plan ([`plan`]) that
//! removes read-only and undeclared fields before validation
//! ([`Schemas::strip_undeclared`]).
//!
//! Messages are built only from schema-side data (property names declared in the
//! schema, enum lists, limits, `description`s and the `x-condition` annotation) and
//! never from the submitted value: jsonschema's own messages quote the instance, so
//! they are never used. Caller-chosen property names (unexpected fields, metadata
//! keys) are echoed only when short and made of `[A-Za-z0-9_.-]`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, Registry, ValidationError, Validator};
use serde_json::Value;

mod embedded;
pub mod keys;
mod plan;
mod settings;

use embedded::EMBEDDED;
pub use keys::KeyTree;
pub use settings::{shadowed, unknown_fields};

/// Base URI every embedded schema's `$id` lives under.
pub const SCHEMA_BASE: &str = "https://schemas.cubegate.dev/";
/// At most this many field errors are reported for one body.
pub const MAX_ERRORS: usize = 20;
/// Caller-chosen property names longer than this are never echoed.
const MAX_ECHOED_NAME: usize = 64;
/// Enums with more values than this are described, not listed (e.g. country codes).
const MAX_LISTED_ENUM: usize = 25;
/// Annotation on a subschema holding a conditional `required`, e.g. "when type is person".
const CONDITION_KEYWORD: &str = "x-condition";

/// Why the schema set could not be loaded or compiled. Names the file (relative to the
/// schema directory) and the reason; carries no request data.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read schema file {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("schema file {file} is not valid JSON: {source}")]
    Parse {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("schema file {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("schema files {file} and {other} both declare $id {id}")]
    DuplicateId {
        file: String,
        other: String,
        id: String,
    },
    #[error("schema registry could not be built: {reason}")]
    Registry { reason: String },
    #[error("schema file {file} does not compile: {reason}")]
    Compile { file: String, reason: String },
    #[error("no operation schemas found in {dir}")]
    Empty { dir: PathBuf },
}

/// A body that does not satisfy its operation's schema.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ValidationFailure {
    /// The first failing field in ComplyCube's dotted form (`personDetails.dob`); for a
    /// missing required property, that property. Empty when the body itself is wrong.
    pub param: String,
    /// The first error's message, ready for the client.
    pub message: String,
    /// Every failing field (at most [`MAX_ERRORS`]), in document order.
    pub errors: Vec<FieldError>,
}

/// One failing field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON pointer of the failing field, e.g. `/personDetails/dob`.
    pub path: String,
    /// The JSON Schema keyword that failed: `required`, `enum`, `pattern`, ….
    pub rule: String,
    /// Human message naming the field and the rule, never the value.
    pub message: String,
}

impl std::fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationFailure {}

/// The compiled schema set: operation id -> validator, plus the raw documents used to
/// phrase messages from schema-side data.
pub struct Schemas {
    validators: BTreeMap<String, Validator>,
    documents: HashMap<String, Value>,
    /// Operation id -> the keys its schema names (for the audit trail).
    keys: BTreeMap<String, KeyTree>,
    /// Per operation, which fields its schema declares ([`plan`]).
    plans: HashMap<String, plan::Node>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("ops", &self.validators.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Schemas {
    /// Compile the schemas embedded in the binary.
    pub fn embedded() -> Result<Schemas, SchemaError> {
        let files = EMBEDDED
            .iter()
            .map(|(rel, text)| {
                serde_json::from_str(text)
                    .map(|v| ((*rel).to_owned(), v))
                    .map_err(|source| SchemaError::Parse {
                        file: (*rel).to_owned(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::compile(files)
    }

    /// Compile from a directory laid out like `schemas/`: `<op id>.json` files at the top,
    /// shared parts under `defs/`. Other files and directories are ignored.
    pub fn from_dir(dir: &Path) -> Result<Schemas, SchemaError> {
        let mut files = read_json_files(dir, "")?;
        let defs = dir.join("defs");
        if defs.is_dir() {
            files.extend(read_json_files(&defs, "defs/")?);
        }
        if !files.iter().any(|(rel, _)| !rel.starts_with("defs/")) {
            return Err(SchemaError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        Self::compile(files)
    }

    /// The keys the operation's schema names; empty for an operation
    /// without a schema (every key is then the caller's).
    pub fn named_keys(&self, op_id: &str) -> &KeyTree {
        static EMPTY: std::sync::OnceLock<KeyTree> = std::sync::OnceLock::new();
        self.keys
            .get(op_id)
            .unwrap_or_else(|| EMPTY.get_or_init(KeyTree::default))
    }

    /// Whether a schema exists for this operation.
    pub fn has(&self, op_id: &str) -> bool {
        self.validators.contains_key(op_id)
    }

    /// The operation ids that have a schema, sorted.
    pub fn ops(&self) -> impl Iterator<Item = &str> {
        self.validators.keys().map(String::as_str)
    }

    /// Removes from `body` the fields the schema of `op_id` marks `readOnly`
    /// and, when `unknown` is `Strip`, those a closed object of it does not
    /// declare (see [`plan`]); appends their pointers to `out`, as
    /// `policy::shown_pointer` shows them. Without a
    /// schema nothing is removed: [`Schemas::validate`] refuses the body.
    pub fn strip_undeclared(
        &self,
        op_id: &str,
        body: &mut Value,
        unknown: crate::config::FieldAction,
        out: &mut Vec<String>,
    ) {
        let Some(plan) = self.plans.get(op_id) else {
            return;
        };
        let from = out.len();
        plan.strip(body, unknown, out);
        for p in &mut out[from..] {
            let shown = super::policy::shown_pointer(p);
            if shown.len() != p.len() {
                *p = shown.to_owned();
            }
        }
    }

    /// Check `body` against the schema of `op_id`.
    ///
    /// An operation without a schema fails closed: the config stage is expected to
    /// check [`Schemas::has`] for every operation that takes a body at start-up.
    pub fn validate(&self, op_id: &str, body: &Value) -> Result<(), ValidationFailure> {
        let Some(validator) = self.validators.get(op_id) else {
            let message = "no schema is configured for this operation".to_owned();
            return Err(ValidationFailure {
                param: String::new(),
                message: message.clone(),
                errors: vec![FieldError {
                    path: String::new(),
                    rule: "schema".to_owned(),
                    message,
                }],
            });
        };
        if validator.is_valid(body) {
            return Ok(());
        }
        let mut found: Vec<Found> = Vec::new();
        for error in validator.iter_errors(body) {
            self.describe(&error, body, &mut found);
        }
        // Sorting is stable, so errors at the same place keep the schema's order.
        found.sort_by(|a, b| a.order.cmp(&b.order));
        // A value can break two keywords that share one description (a date's pattern
        // and format); one message per field and wording is enough.
        let mut seen = std::collections::HashSet::new();
        found.retain(|f| seen.insert((f.error.path.clone(), f.error.message.clone())));
        found.truncate(MAX_ERRORS);
        let Some(first) = found.first() else {
            // is_valid and iter_errors disagree only on a jsonschema bug; still refuse.
            let message = "the request body is invalid".to_owned();
            return Err(ValidationFailure {
                param: String::new(),
                message: message.clone(),
                errors: vec![FieldError {
                    path: String::new(),
                    rule: "schema".to_owned(),
                    message,
                }],
            });
        };
        Err(ValidationFailure {
            param: first.param.clone(),
            message: first.error.message.clone(),
            errors: found.into_iter().map(|f| f.error).collect(),
        })
    }

    fn compile(files: Vec<(String, Value)>) -> Result<Schemas, SchemaError> {
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut documents: HashMap<String, Value> = HashMap::new();
        let mut entries: Vec<(String, String, Value)> = Vec::new();
        for (rel, schema) in files {
            if !schema.is_object() {
                return Err(SchemaError::Invalid {
                    file: rel,
                    reason: "a schema file must hold a JSON object".to_owned(),
                });
            }
            let id = match schema.get("$id") {
                None => format!("{SCHEMA_BASE}{rel}"),
                Some(Value::String(id)) if !id.contains('#') => id.clone(),
                Some(_) => {
                    return Err(SchemaError::Invalid {
                        file: rel,
                        reason: "$id must be an absolute URI string without a fragment".to_owned(),
                    });
                }
            };
            if let Some(other) = ids.insert(id.clone(), rel.clone()) {
                return Err(SchemaError::DuplicateId {
                    file: rel,
                    other,
                    id,
                });
            }
            documents.insert(id.clone(), schema.clone());
            entries.push((rel, id, schema));
        }

        let mut builder = Registry::new().draft(Draft::Draft202012);
        for (rel, id, schema) in &entries {
            builder = builder
                .add(id, schema.clone())
                .map_err(|e| SchemaError::Invalid {
                    file: rel.clone(),
                    reason: e.to_string(),
                })?;
        }
        let registry = builder.prepare().map_err(|e| SchemaError::Registry {
            reason: e.to_string(),
        })?;

        let mut validators = BTreeMap::new();
        let mut keys = BTreeMap::new();
        let mut plans = HashMap::new();
        for (rel, id, schema) in &entries {
            if rel.starts_with("defs/") {
                continue;
            }
            let Some(op_id) = rel.strip_suffix(".json") else {
                continue;
            };
            keys.insert(op_id.to_owned(), keys::tree(schema, id, &documents));
            let validator = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(&registry)
                .offline()
                .should_validate_formats(true)
                .build(schema)
                .map_err(|e| SchemaError::Compile {
                    file: rel.clone(),
                    reason: e.to_string(),
                })?;
            validators.insert(op_id.to_owned(), validator);
            plans.insert(
                op_id.to_owned(),
                plan::Node::compile(schema, id, &documents),
            );
        }
        Ok(Schemas {
            validators,
            documents,
            keys: keys::by_resource(keys),
            plans,
        })
    }

    /// Turn one jsonschema error into field errors phrased from the schema.
    fn describe(&self, error: &ValidationError<'_>, body: &Value, out: &mut Vec<Found>) {
        let at = Place::resolve(body, error.instance_path().as_str());
        let holder = self.holding_subschema(error);
        let description = holder
            .and_then(|h| h.get("description"))
            .and_then(Value::as_str);
        let kind = error.kind();
        let rule = kind.keyword().to_owned();
        match kind {
            ValidationErrorKind::Required { property } => {
                let Some(name) = property.as_str() else {
                    return;
                };
                let child = at.child_declared(body, name);
                let condition = holder
                    .and_then(|h| h.get(CONDITION_KEYWORD))
                    .and_then(Value::as_str);
                let mut message = format!("{} is required", child.label());
                if let Some(condition) = condition {
                    let _ = write!(message, " {condition}");
                }
                out.push(child.found(rule, message));
            }
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                for name in unexpected {
                    let child = at.child_caller_chosen(body, name);
                    let message = if child.hidden {
                        match at.in_label() {
                            Some(parent) => format!("an unexpected field in {parent}"),
                            None => "an unexpected field".to_owned(),
                        }
                    } else {
                        match at.in_label() {
                            Some(parent) => format!("unexpected field '{name}' in {parent}"),
                            None => format!("unexpected field '{name}'"),
                        }
                    };
                    out.push(child.found(rule.clone(), message));
                }
            }
            ValidationErrorKind::PropertyNames { error: inner } => {
                let what = match inner.kind() {
                    ValidationErrorKind::MaxLength { limit } => {
                        format!("must be at most {limit} characters long")
                    }
                    other => phrase(other, None),
                };
                let message = format!("{} keys {what}", at.label());
                out.push(at.found(rule, message));
            }
            other => {
                let message = format!("{} {}", at.label(), phrase(other, description));
                out.push(at.found(rule, message));
            }
        }
    }

    /// The subschema that holds the failing keyword, looked up in the raw documents by
    /// the error's absolute keyword location.
    fn holding_subschema(&self, error: &ValidationError<'_>) -> Option<&Value> {
        let location = error.absolute_keyword_location()?;
        let (base, fragment) = location.as_str().split_once('#')?;
        let document = self.documents.get(base)?;
        let pointer = percent_decode(fragment)?;
        let parent = pointer.rsplit_once('/').map_or("", |(parent, _)| parent);
        document.pointer(parent)
    }
}

/// The phrase after the field label for keywords whose data is all schema-side.
fn phrase(kind: &ValidationErrorKind, description: Option<&str>) -> String {
    match kind {
        ValidationErrorKind::Type { kind } => {
            let names: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![type_noun(t.as_str())],
                TypeKind::Multiple(set) => set.iter().map(|t| type_noun(t.as_str())).collect(),
            };
            format!("must be {}", names.join(" or "))
        }
        ValidationErrorKind::Enum { options } => match options.as_array() {
            Some(values) if values.len() <= MAX_LISTED_ENUM => {
                let listed: Vec<String> = values.iter().map(literal).collect();
                format!("must be one of: {}", listed.join(", "))
            }
            _ => match description {
                Some(d) => format!("must be {d}"),
                None => "must be one of the allowed values".to_owned(),
            },
        },
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be {}", literal(expected_value))
        }
        ValidationErrorKind::Pattern { pattern } => match description {
            Some(d) => format!("must be {d}"),
            None => format!("must match the pattern {pattern}"),
        },
        ValidationErrorKind::Format { format } => match description {
            Some(d) => format!("must be {d}"),
            None => format!("must be a valid {format}"),
        },
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::MinLength { limit: 1 } => "must not be empty".to_owned(),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxItems { limit } => format!("must have at most {limit} items"),
        ValidationErrorKind::MinItems { limit } => format!("must have at least {limit} items"),
        ValidationErrorKind::MaxProperties { limit } => {
            format!("must have at most {limit} properties")
        }
        ValidationErrorKind::MinProperties { limit } => {
            format!("must have at least {limit} properties")
        }
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("must be greater than {limit}")
        }
        ValidationErrorKind::MultipleOf { multiple_of } => {
            format!("must be a multiple of {multiple_of}")
        }
        ValidationErrorKind::UniqueItems => "must not contain duplicate items".to_owned(),
        ValidationErrorKind::FalseSchema => "is not allowed".to_owned(),
        other => match description {
            Some(d) => format!("must be {d}"),
            None => format!("does not satisfy the {} rule", other.keyword()),
        },
    }
}

fn type_noun(name: &str) -> &'static str {
    match name {
        "array" => "an array",
        "boolean" => "a boolean",
        "integer" => "an integer",
        "null" => "null",
        "number" => "a number",
        "object" => "an object",
        _ => "a string",
    }
}

/// A schema-side literal as it reads in a message: strings bare, others as JSON.
fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a caller-chosen property name may appear in a message or pointer.
fn is_echoable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ECHOED_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn unescape_pointer(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// Decode `%XX` escapes of a URI fragment; `None` if malformed.
fn percent_decode(fragment: &str) -> Option<String> {
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = fragment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A field error with the keys used to order it and to derive `param`.
struct Found {
    order: Vec<usize>,
    param: String,
    error: FieldError,
}

/// A place in the body: the echoable prefix of a failing path, its document-order key,
/// and whether a caller-chosen name after that prefix was withheld.
#[derive(Clone)]
struct Place {
    /// Segments as they may be shown (object keys or array indices as text).
    segments: Vec<String>,
    /// Position of each segment in the body (key index in its object / array index).
    order: Vec<usize>,
    /// True when the real path continues below `segments` with a name not shown.
    hidden: bool,
}

impl Place {
    /// Walk the body along a jsonschema instance path. Object keys are treated as
    /// caller-chosen: one that may not be echoed ends the shown path.
    fn resolve(body: &Value, pointer: &str) -> Place {
        let mut place = Place {
            segments: Vec::new(),
            order: Vec::new(),
            hidden: false,
        };
        let mut current = Some(body);
        for raw in pointer.split('/').skip(1) {
            let key = unescape_pointer(raw);
            match current {
                Some(Value::Array(items)) => {
                    let index = key.parse::<usize>().ok();
                    place.order.push(index.unwrap_or(usize::MAX));
                    place.segments.push(key);
                    current = index.and_then(|i| items.get(i));
                }
                Some(Value::Object(map)) => {
                    let position = map.keys().position(|k| *k == key);
                    place.order.push(position.unwrap_or(usize::MAX));
                    if !is_echoable(&key) {
                        place.hidden = true;
                        return place;
                    }
                    current = map.get(&key);
                    place.segments.push(key);
                }
                _ => {
                    place.order.push(usize::MAX);
                    place.segments.push(key);
                    current = None;
                }
            }
        }
        place
    }

    fn position_in(&self, body: &Value, name: &str) -> usize {
        let mut current = Some(body);
        for segment in &self.segments {
            current = match current {
                Some(Value::Array(items)) => {
                    segment.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                Some(Value::Object(map)) => map.get(segment),
                _ => None,
            };
        }
        match current {
            Some(Value::Object(map)) => map.keys().position(|k| k == name).unwrap_or(usize::MAX),
            _ => usize::MAX,
        }
    }

    /// A property named by the schema (e.g. a missing required one): always shown.
    fn child_declared(&self, body: &Value, name: &str) -> Place {
        if self.hidden {
            return self.clone();
        }
        let mut child = self.clone();
        child.order.push(self.position_in(body, name));
        child.segments.push(name.to_owned());
        child
    }

    /// A property named by the caller (e.g. an unexpected one): shown only if echoable.
    fn child_caller_chosen(&self, body: &Value, name: &str) -> Place {
        if self.hidden {
            return self.clone();
        }
        let mut child = self.clone();
        child.order.push(self.position_in(body, name));
        if is_echoable(name) {
            child.segments.push(name.to_owned());
        } else {
            child.hidden = true;
        }
        child
    }

    fn dotted(&self) -> String {
        self.segments.join(".")
    }

    fn pointer(&self) -> String {
        self.segments.iter().fold(String::new(), |mut acc, s| {
            acc.push('/');
            acc.push_str(&escape_pointer(s));
            acc
        })
    }

    /// How the place reads as the subject of a message.
    fn label(&self) -> String {
        match (self.segments.is_empty(), self.hidden) {
            (true, false) => "the request body".to_owned(),
            (true, true) => "a field of the request body".to_owned(),
            (false, false) => self.dotted(),
            (false, true) => format!("a field in {}", self.dotted()),
        }
    }

    /// The place as a container ("in personDetails"); `None` for the body itself.
    fn in_label(&self) -> Option<String> {
        if self.segments.is_empty() {
            None
        } else {
            Some(self.dotted())
        }
    }

    fn found(&self, rule: String, message: String) -> Found {
        Found {
            order: self.order.clone(),
            param: self.dotted(),
            error: FieldError {
                path: self.pointer(),
                rule,
                message,
            },
        }
    }
}

fn read_json_files(dir: &Path, prefix: &str) -> Result<Vec<(String, Value)>, SchemaError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SchemaError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SchemaError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.is_file() || !name.ends_with(".json") {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Read {
            file: path.clone(),
            source,
        })?;
        let value = serde_json::from_str(&text).map_err(|source| SchemaError::Parse {
            file: rel.clone(),
            source,
        })?;
        files.push((rel, value));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The stage: a body that breaks its operation's schema is refused, unless
/// the operation is in shadow mode; then the failure is counted, logged by
/// field name and the request goes on (returns true).
pub fn check(
    schemas: &Schemas,
    op_id: &'static str,
    shadow: bool,
    body: &Value,
    request_id: &str,
) -> Result<bool, ValidationFailure> {
    let Err(failure) = schemas.validate(op_id, body) else {
        return Ok(false);
    };
    crate::telemetry::validation_refused(op_id, shadow);
    if !shadow {
        return Err(failure);
    }
    tracing::warn!(request_id, operation = op_id, param = %failure.param, "shadow validation failure (forwarded)");
    Ok(true)
}

#[cfg(test)]
mod tests;
