//! The ComplyCube v1 operation table: every operation cubegate serves, with
//! its id (`clients.update`), method, path template (relative to `/v1`), body
//! kind, PII flags and the query parameters it accepts. Everything not in this
//! table is refused (default deny). Source: `shared/complycube-api.md` §2, §6.

use http::Method;

/// What the request body of an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body; a non-empty body is refused.
    None,
    /// A JSON body under the default size cap.
    Json,
    /// A JSON body carrying a base64 image (~6 MiB cap).
    Upload,
    /// Documented without a body, but some SDKs send `{}` or nothing.
    Optional,
}

/// Which query parameters an operation accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuerySpec {
    /// No query string at all.
    None,
    /// A list: paging parameters plus these filters. A filter ending in `.`
    /// is a prefix (`metadata.` accepts `metadata.anyKey`).
    List(&'static [&'static str]),
    /// Exactly these parameters, no paging (reports).
    Only(&'static [&'static str]),
}

#[derive(Clone, Debug)]
pub struct OperationDef {
    pub id: &'static str,
    pub method: Method,
    /// Path under `/v1`; `{name}` is an id segment, `{side}` is `front|back`.
    pub template: &'static str,
    /// `/v1` + template.
    route: &'static str,
    pub body: BodyKind,
    /// The request writes personal data (create/update/upload of PII).
    pub pii_write: bool,
    /// The response (or the query string) carries personal data.
    pub pii_read: bool,
    pub query: QuerySpec,
}

impl OperationDef {
    /// An operation whose request changes personal data: needs a durable
    /// audit intent before it goes upstream.
    pub fn changes_pii(&self) -> bool {
        self.pii_write || (self.method != Method::GET && self.touches_subject())
    }

    /// Reads or changes personal data in any way (audited by default).
    pub fn touches_pii(&self) -> bool {
        self.pii_write || self.pii_read || self.touches_subject()
    }

    /// Deletes and redactions remove a person's data: the security team wants
    /// them in the trail even though no PII travels.
    fn touches_subject(&self) -> bool {
        self.method == Method::DELETE || self.id.ends_with(".redact")
    }

    pub fn is_list(&self) -> bool {
        matches!(self.query, QuerySpec::List(_))
    }

    /// The route id used as `http.route`: the template under `/v1`
    /// (built at compile time; it is read on every request).
    pub fn route(&self) -> &'static str {
        self.route
    }
}

/// Paging and date-range parameters every list accepts (§6).
pub const PAGING: &[&str] = &[
    "page",
    "pageSize",
    "createdAfter",
    "createdBefore",
    "updatedAfter",
    "updatedBefore",
];

const CLIENT_FILTERS: &[&str] = &[
    "type",
    "email",
    "joinedDate",
    "mobile",
    "telephone",
    "externalId",
    "personDetails.firstName",
    "personDetails.middleName",
    "personDetails.lastName",
    "personDetails.dob",
    "personDetails.gender",
    "personDetails.nationality",
    "personDetails.birthCountry",
    "companyDetails.name",
    "companyDetails.website",
    "companyDetails.registrationNumber",
    "companyDetails.incorporationType",
    "companyDetails.incorporationCountry",
    "metadata.",
];
const ADDRESS_FILTERS: &[&str] = &[
    "clientId",
    "type",
    "propertyNumber",
    "buildingName",
    "line",
    "city",
    "state",
    "country",
];
const DOCUMENT_FILTERS: &[&str] = &["clientId", "type", "classification", "issuingCountry"];
const CLIENT_ONLY: &[&str] = &["clientId"];
const CHECK_FILTERS: &[&str] = &[
    "clientId",
    "type",
    "status",
    "documentId",
    "addressId",
    "livePhotoId",
    "liveVideoId",
    "result.outcome",
];
const WEBHOOK_FILTERS: &[&str] = &["enabled", "url", "events"];
const TEAM_FILTERS: &[&str] = &["firstName", "lastName", "role"];
const AUDIT_LOG_FILTERS: &[&str] = &[
    "memberId",
    "resourceType",
    "resourceId",
    "clientId",
    "trigger",
    "action",
];
const WORKFLOW_FILTERS: &[&str] = &["clientId", "workflowTemplateId"];
const NO_FILTERS: &[&str] = &[];

macro_rules! op {
    ($id:literal, $m:ident, $t:literal, $body:ident, w=$w:literal, r=$r:literal, $q:expr) => {
        OperationDef {
            id: $id,
            method: Method::$m,
            template: $t,
            route: concat!("/v1", $t),
            body: BodyKind::$body,
            pii_write: $w,
            pii_read: $r,
            query: $q,
        }
    };
}

use QuerySpec::{List, None as NoQuery, Only};

/// Every ComplyCube v1 operation cubegate serves (§2 of the fact sheet).
pub static OPERATIONS: &[OperationDef] = &[
    // Clients
    op!(
        "clients.create",
        POST,
        "/clients",
        Json,
        w = true,
        r = true,
        NoQuery
    ),
    op!(
        "clients.get",
        GET,
        "/clients/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "clients.update",
        POST,
        "/clients/{id}",
        Json,
        w = true,
        r = true,
        NoQuery
    ),
    op!(
        "clients.delete",
        DELETE,
        "/clients/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "clients.list",
        GET,
        "/clients",
        None,
        w = false,
        r = true,
        List(CLIENT_FILTERS)
    ),
    op!(
        "clients.riskProfile",
        GET,
        "/clients/{id}/riskProfile",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    // Addresses
    op!(
        "addresses.create",
        POST,
        "/addresses",
        Json,
        w = true,
        r = true,
        NoQuery
    ),
    op!(
        "addresses.get",
        GET,
        "/addresses/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "addresses.update",
        POST,
        "/addresses/{id}",
        Json,
        w = true,
        r = true,
        NoQuery
    ),
    op!(
        "addresses.delete",
        DELETE,
        "/addresses/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "addresses.list",
        GET,
        "/addresses",
        None,
        w = false,
        r = true,
        List(ADDRESS_FILTERS)
    ),
    // Documents
    op!(
        "documents.create",
        POST,
        "/documents",
        Json,
        w = true,
        r = true,
        NoQuery
    ),
    op!(
        "documents.get",
        GET,
        "/documents/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "documents.update",
        POST,
        "/documents/{id}",
        Json,
        w = true,
        r = true,
        NoQuery
    ),
    op!(
        "documents.upload",
        POST,
        "/documents/{id}/upload/{side}",
        Upload,
        w = true,
        r = false,
        NoQuery
    ),
    op!(
        "documents.download",
        GET,
        "/documents/{id}/download/{side}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "documents.deleteImage",
        DELETE,
        "/documents/{id}/{side}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "documents.redact",
        POST,
        "/documents/{id}/redact",
        Json,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "documents.delete",
        DELETE,
        "/documents/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "documents.list",
        GET,
        "/documents",
        None,
        w = false,
        r = true,
        List(DOCUMENT_FILTERS)
    ),
    // Live photos
    op!(
        "livePhotos.create",
        POST,
        "/livePhotos",
        Upload,
        w = true,
        r = false,
        NoQuery
    ),
    op!(
        "livePhotos.get",
        GET,
        "/livePhotos/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "livePhotos.download",
        GET,
        "/livePhotos/{id}/download",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "livePhotos.redact",
        POST,
        "/livePhotos/{id}/redact",
        Optional,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "livePhotos.delete",
        DELETE,
        "/livePhotos/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "livePhotos.list",
        GET,
        "/livePhotos",
        None,
        w = false,
        r = true,
        List(CLIENT_ONLY)
    ),
    // Live videos
    // Undocumented, but the PHP SDK's integration suite creates one (§2, 26b).
    op!(
        "liveVideos.create",
        POST,
        "/liveVideos",
        Json,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "liveVideos.get",
        GET,
        "/liveVideos/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "liveVideos.redact",
        POST,
        "/liveVideos/{id}/redact",
        Optional,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "liveVideos.delete",
        DELETE,
        "/liveVideos/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "liveVideos.list",
        GET,
        "/liveVideos",
        None,
        w = false,
        r = true,
        List(CLIENT_ONLY)
    ),
    // Checks
    op!(
        "checks.create",
        POST,
        "/checks",
        Json,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "checks.get",
        GET,
        "/checks/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "checks.update",
        POST,
        "/checks/{id}",
        Json,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "checks.validate",
        POST,
        "/checks/{id}/validate",
        Json,
        w = true,
        r = false,
        NoQuery
    ),
    op!(
        "checks.redact",
        POST,
        "/checks/{id}/redact",
        Json,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "checks.list",
        GET,
        "/checks",
        None,
        w = false,
        r = true,
        List(CHECK_FILTERS)
    ),
    // Workflow sessions
    op!(
        "workflowSessions.get",
        GET,
        "/workflowSessions/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "workflowSessions.list",
        GET,
        "/workflowSessions",
        None,
        w = false,
        r = true,
        List(WORKFLOW_FILTERS)
    ),
    op!(
        "workflowSessions.complete",
        POST,
        "/workflowSessions/{id}/complete",
        Optional,
        w = false,
        r = false,
        NoQuery
    ),
    // Hosted flow, SDK tokens, reports
    op!(
        "flowSessions.create",
        POST,
        "/flow/sessions",
        Json,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "tokens.create",
        POST,
        "/tokens",
        Json,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "reports.generate",
        GET,
        "/reports",
        None,
        w = false,
        r = true,
        Only(&["clientId", "checkId"])
    ),
    // Webhooks
    op!(
        "webhooks.create",
        POST,
        "/webhooks",
        Json,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "webhooks.get",
        GET,
        "/webhooks/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "webhooks.update",
        POST,
        "/webhooks/{id}",
        Json,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "webhooks.delete",
        DELETE,
        "/webhooks/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "webhooks.list",
        GET,
        "/webhooks",
        None,
        w = false,
        r = false,
        List(WEBHOOK_FILTERS)
    ),
    // Team members, audit logs, account
    op!(
        "teamMembers.get",
        GET,
        "/teamMembers/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "teamMembers.list",
        GET,
        "/teamMembers",
        None,
        w = false,
        r = true,
        List(TEAM_FILTERS)
    ),
    op!(
        "auditLogs.get",
        GET,
        "/auditLogs/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "auditLogs.list",
        GET,
        "/auditLogs",
        None,
        w = false,
        r = true,
        List(AUDIT_LOG_FILTERS)
    ),
    op!(
        "accountInfo.get",
        GET,
        "/accountInfo",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    // Lookups
    op!(
        "lookup.searchCompanies",
        POST,
        "/lookup/companies",
        Json,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "lookup.getCompany",
        GET,
        "/lookup/companies/{id}",
        None,
        w = false,
        r = true,
        NoQuery
    ),
    op!(
        "lookup.searchAddresses",
        POST,
        "/lookup/addresses",
        Json,
        w = true,
        r = true,
        NoQuery
    ),
    // Custom lists
    op!(
        "customLists.get",
        GET,
        "/customLists/{id}",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "customLists.list",
        GET,
        "/customLists",
        None,
        w = false,
        r = false,
        List(NO_FILTERS)
    ),
    op!(
        "customLists.addRecord",
        POST,
        "/customLists/{id}/records",
        Json,
        w = true,
        r = false,
        NoQuery
    ),
    // Static data
    op!(
        "static.screeningLists",
        GET,
        "/static/screeningLists",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    op!(
        "static.supportedDocuments",
        GET,
        "/static/supportedDocuments",
        None,
        w = false,
        r = false,
        NoQuery
    ),
    // Autofill
    op!(
        "autofill.create",
        POST,
        "/autofill",
        Upload,
        w = true,
        r = true,
        NoQuery
    ),
];

/// Index into [`OPERATIONS`]; small and `Copy` so it travels cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpIndex(pub u8);

impl OpIndex {
    pub fn def(self) -> &'static OperationDef {
        &OPERATIONS[self.0 as usize]
    }
}

pub fn by_id(id: &str) -> Option<OpIndex> {
    OPERATIONS
        .iter()
        .position(|o| o.id == id)
        .map(|i| OpIndex(i as u8))
}

/// Does an allowed-operations pattern (`*`, `clients.*`, `clients.get`) match `id`?
pub fn pattern_matches(pattern: &str, id: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => id
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == id,
    }
}

/// Does a pattern match at least one known operation? (config validation)
pub fn pattern_is_known(pattern: &str) -> bool {
    OPERATIONS.iter().any(|o| pattern_matches(pattern, o.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_and_method_template_pairs_are_unique() {
        let ids: HashSet<_> = OPERATIONS.iter().map(|o| o.id).collect();
        assert_eq!(ids.len(), OPERATIONS.len());
        let routes: HashSet<_> = OPERATIONS
            .iter()
            .map(|o| (o.method.clone(), o.template))
            .collect();
        assert_eq!(routes.len(), OPERATIONS.len());
        assert!(OPERATIONS.len() >= 60, "{}", OPERATIONS.len());
        assert!(
            OPERATIONS.len() < 128,
            "OpIndex and caller bitsets assume < 128"
        );
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "clients.get"));
        assert!(pattern_matches("clients.*", "clients.update"));
        assert!(!pattern_matches("clients.*", "clientsX.update"));
        assert!(!pattern_matches("client.*", "clients.update"));
        assert!(pattern_matches("clients.get", "clients.get"));
        assert!(pattern_is_known("documents.*"));
        assert!(!pattern_is_known("nope.*"));
    }

    #[test]
    fn pii_flags_drive_the_audit_classes() {
        let upd = by_id("clients.update").unwrap().def();
        assert!(upd.changes_pii() && upd.touches_pii());
        let get = by_id("clients.get").unwrap().def();
        assert!(!get.changes_pii() && get.touches_pii());
        let del = by_id("clients.delete").unwrap().def();
        assert!(del.changes_pii());
        let acct = by_id("accountInfo.get").unwrap().def();
        assert!(!acct.touches_pii());
    }
}
