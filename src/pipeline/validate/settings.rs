//! The validate stage's part of the config: `[validation]` compiled into the
//! schema set, the operations validated in shadow mode and, per tenant and
//! operation, whether undeclared fields are stripped or refused.

use std::collections::BTreeMap;

use crate::config::{ConfigError, FieldAction, Origin, RawTenant, ValidationSettings};
use crate::operations::{self, BodyKind, OPERATIONS};

use super::Schemas;

impl Schemas {
    /// The schemas `[validation]` names (its `schemas_dir`, else the embedded
    /// ones). Every operation that carries a body must have one: an unchecked
    /// body would reach ComplyCube unvalidated.
    pub fn from_config(v: &ValidationSettings, o: &Origin<'_>) -> Result<Schemas, ConfigError> {
        let schemas = match &v.schemas_dir {
            Some(dir) => Schemas::from_dir(&o.path(dir)),
            None => Schemas::embedded(),
        }
        .map_err(|e| o.err("validation.schemas_dir", e.to_string()))?;
        if let Some(op) = OPERATIONS
            .iter()
            .find(|op| op.body != BodyKind::None && !schemas.has(op.id))
        {
            return Err(o.err(
                "validation.schemas_dir",
                format!("no schema for operation {}", op.id),
            ));
        }
        Ok(schemas)
    }
}

/// Per operation (by index), whether `validation.shadow` puts it in shadow
/// mode: a failure is reported and the request still forwarded.
pub fn shadowed(v: &ValidationSettings, o: &Origin<'_>) -> Result<Vec<bool>, ConfigError> {
    let mut shadow = vec![false; OPERATIONS.len()];
    for (j, p) in v.shadow.iter().enumerate() {
        if !operations::pattern_is_known(p) {
            return Err(o.err(
                format!("validation.shadow[{j}]"),
                format!("matches no operation: {p}"),
            ));
        }
        for (idx, op) in OPERATIONS.iter().enumerate() {
            shadow[idx] |= operations::pattern_matches(p, op.id);
        }
    }
    Ok(shadow)
}

/// Per operation (by index), what one tenant does with undeclared body
/// fields: `[validation] unknown_fields`, then its per-operation overrides,
/// then the tenant's `unknown_fields`, then the tenant's own overrides; each
/// later step wins. Within one table the most specific pattern wins (an
/// operation id over `prefix.*` over `*`), so the table's order never matters.
pub fn unknown_fields(
    v: &ValidationSettings,
    tenant: &RawTenant,
    tenant_key: &str,
    o: &Origin<'_>,
) -> Result<Vec<FieldAction>, ConfigError> {
    let mut out = vec![v.unknown_fields; OPERATIONS.len()];
    let global_key = "validation.unknown_fields_by_operation";
    apply_overrides(&mut out, &v.unknown_fields_by_operation, global_key, o)?;
    if let Some(all) = tenant.unknown_fields {
        out.fill(all);
    }
    let key = format!("{tenant_key}.unknown_fields_by_operation");
    apply_overrides(&mut out, &tenant.unknown_fields_by_operation, &key, o)?;
    Ok(out)
}

fn apply_overrides(
    out: &mut [FieldAction],
    table: &BTreeMap<String, FieldAction>,
    key: &str,
    o: &Origin<'_>,
) -> Result<(), ConfigError> {
    let specificity = |p: &str| match p {
        "*" => 0,
        p if p.ends_with(".*") => 1,
        _ => 2,
    };
    let mut rules: Vec<(&String, &FieldAction)> = table.iter().collect();
    rules.sort_by_key(|(p, _)| specificity(p));
    for (p, action) in rules {
        if !operations::pattern_is_known(p) {
            return Err(o.err(format!("{key}.{p}"), format!("matches no operation: {p}")));
        }
        for (idx, op) in OPERATIONS.iter().enumerate() {
            if operations::pattern_matches(p, op.id) {
                out[idx] = *action;
            }
        }
    }
    Ok(())
}
