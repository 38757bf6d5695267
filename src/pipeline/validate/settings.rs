//! The validate stage's part of the config: `[validation]` compiled into the
//! schema set and the operations validated in shadow mode.

use crate::config::{ConfigError, Origin, ValidationSettings};
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
