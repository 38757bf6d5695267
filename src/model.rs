//! Plain types shared by config, the pipeline stages and the audit trail.
//! A leaf: it imports nothing from the crate, so any module may use it
//! without creating an import cycle.

use serde::{Deserialize, Serialize};

/// The ComplyCube environment a caller acts in, named `live` / `test` in the
/// config and in audit records alike (the record format depends on these
/// names staying as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `live_` keys.
    Live,
    /// `test_` keys.
    Test,
}

impl Environment {
    /// The wire name, as in config files and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    /// How a ComplyCube key of this environment starts.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Environment::Live => "live_",
            Environment::Test => "test_",
        }
    }
}

/// The source address of a gateway connection, put in every request's
/// extensions by the server: what unauthenticated refusals are charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::IpAddr);
