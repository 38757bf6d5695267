//! The ids in a create's answer, for the outcome record: only the
//! top-level `id` (the created resource) and `clientId` (its client), never
//! any other response value.
//!
//! Input: the upstream response of an audited create operation. Output:
//! the same response, its body now held in memory, and the [`AnswerIds`]
//! found. Only a successful JSON answer that announces a `Content-Length`
//! of at most [`MAX_PEEK_BYTES`] is read; any other answer streams through
//! untouched and records no id. Failures: the body breaking off or going
//! idle while read is the upstream failing ([`ForwardError::Failed`]).

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;

use crate::audit::ResourceId;
use crate::operations::OperationDef;
use crate::pipeline::forward::{ForwardError, UpstreamBody};
use crate::pipeline::respond::{self, GatewayBody};
use crate::snapshot::Snapshot;

/// The largest answer read to find its id.
pub const MAX_PEEK_BYTES: u64 = 64 * 1024;

/// Ids from a create's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerIds {
    /// The created resource's id.
    pub id: Option<String>,
    /// The client the created resource belongs to.
    pub client_id: Option<String>,
}

/// Whether this operation's outcome records the id it created: a `POST`
/// without a path id whose name says it creates, and audited.
pub fn records_created_id(def: &OperationDef, snap: &Snapshot) -> bool {
    def.method == http::Method::POST
        && def.id.ends_with(".create")
        && !def.template.contains('{')
        && super::audited_op(def, snap)
}

/// Reads a small successful JSON answer to take its ids (module docs).
pub async fn peek_created(
    resp: Response<UpstreamBody>,
    idle: Duration,
    out: &mut AnswerIds,
) -> Result<Response<GatewayBody>, ForwardError> {
    let small = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n <= MAX_PEEK_BYTES);
    let json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    if !(small && json && resp.status().is_success()) {
        return Ok(resp.map(|b| b.boxed()));
    }
    let (parts, body) = resp.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_PEEK_BYTES as usize);
    let bytes: Bytes = match tokio::time::timeout(idle, limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => return Err(ForwardError::Failed(e.to_string())),
        Err(_) => return Err(ForwardError::Failed("answer body idle".into())),
    };
    *out = ids(&bytes);
    Ok(Response::from_parts(parts, respond::full(bytes)))
}

fn ids(body: &[u8]) -> AnswerIds {
    // Only these two members are deserialised; serde skips the rest.
    #[derive(serde::Deserialize)]
    struct Top {
        id: Option<serde_json::Value>,
        #[serde(rename = "clientId")]
        client_id: Option<serde_json::Value>,
    }
    let valid = |v: Option<serde_json::Value>| {
        let s = v?.as_str()?.to_string();
        ResourceId::new(s.clone()).ok().map(|_| s)
    };
    match serde_json::from_slice::<Top>(body) {
        Ok(t) => AnswerIds {
            id: valid(t.id),
            client_id: valid(t.client_id),
        },
        Err(_) => AnswerIds::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_top_level_ids_are_taken() {
        let a = ids(br#"{"email":"a@b.c","id":"5f0a","clientId":"c1","x":{"id":"no"}}"#);
        assert_eq!(a.id.as_deref(), Some("5f0a"));
        assert_eq!(a.client_id.as_deref(), Some("c1"));
        assert_eq!(ids(br#"{"id":"a b@c"}"#), AnswerIds::default());
        assert_eq!(ids(b"[1]"), AnswerIds::default());
    }
}
