//! ComplyCube v1 behaviour of the sandbox, independent of HTTP plumbing.
//!
//! Input: an authenticated key (its data partition), the method, the path
//! after `/v1` (no trailing slash), the decoded query pairs and the raw body.
//! Output: a [`Reply`] (status + optional JSON body) shaped like ComplyCube's:
//! creates 200, deletes 204 without body, lists in the paging envelope,
//! errors `{type, message, param?}`.
//! Failures are replies: 400 `invalid_request` for bad bodies or queries, 404
//! `resource_not_found` for unknown ids and paths. Clients, addresses,
//! documents, live photos and videos, checks, workflow sessions, webhooks
//! and the audit log are stored (checks and workflow sessions complete after
//! the store's delay, see [`lifecycle`]); team members and custom lists
//! exist in no sandbox account; lookups, static data and autofill answer
//! with plausible fixed bodies.

use serde_json::{Map, Value, json};

use super::store::{Change, Kind, Obj, Store, merge, now_iso};

mod lifecycle;
mod lookups;

/// What the sandbox answers to one API call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    fn ok(v: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(v),
        }
    }

    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
        }
    }

    pub(crate) fn error(status: u16, kind: &str, message: &str, param: Option<&str>) -> Reply {
        let mut b = json!({"type": kind, "message": message});
        if let (Some(p), Value::Object(m)) = (param, &mut b) {
            m.insert("param".into(), Value::String(p.to_string()));
        }
        Reply {
            status,
            body: Some(b),
        }
    }

    fn invalid(param: &str, message: &str) -> Reply {
        Reply::error(400, "invalid_request", message, Some(param))
    }

    fn not_found(what: &str, id: &str) -> Reply {
        Reply::error(
            404,
            "resource_not_found",
            &format!("Invalid {what} id '{id}'"),
            None,
        )
    }

    pub(crate) fn unknown_route() -> Reply {
        Reply::error(
            404,
            "resource_not_found",
            "The requested resource does not exist",
            None,
        )
    }
}

/// Request context handed to every handler.
struct Ctx<'a> {
    store: &'a mut Store,
    key: &'a str,
    query: &'a [(String, String)],
    body: &'a [u8],
}

impl Ctx<'_> {
    /// The body as a JSON object; an empty body counts as `{}` because some
    /// SDK calls (redact, complete) send none.
    fn obj(&self) -> Result<Obj, Reply> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Reply::error(
                400,
                "invalid_request",
                "The request body must be a JSON object",
                None,
            )),
            Err(_) => Err(Reply::error(
                400,
                "invalid_request",
                "The request body is not valid JSON",
                None,
            )),
        }
    }

    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn get(&self, kind: Kind, id: &str) -> Reply {
        match self.store.get(self.key, kind, id) {
            Some(o) => Reply::ok(Value::Object(o.clone())),
            None => Reply::not_found(kind.name(), id),
        }
    }

    fn delete(&mut self, kind: Kind, id: &str) -> Reply {
        match self.store.remove(self.key, kind, id) {
            Some(old) => {
                self.store
                    .audit(self.key, Change::Delete, kind, Some(&old), None);
                Reply::no_content()
            }
            None => Reply::not_found(kind.name(), id),
        }
    }

    fn list(&self, kind: Kind, client_required: bool) -> Reply {
        if client_required && self.q("clientId").is_none() {
            return Reply::invalid("clientId", "'clientId' must be provided");
        }
        match self.store.list(self.key, kind, self.query) {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::invalid(e.param, e.message),
        }
    }

    fn client_exists(&self, body: &Obj) -> Result<(), Reply> {
        let id = required_str(body, "clientId")?;
        match self.store.get(self.key, Kind::Client, id) {
            Some(_) => Ok(()),
            None => Err(Reply::not_found("client", id)),
        }
    }

    /// Stores `fields` as a new object: `id` first, then the fields, then
    /// the timestamps, the order ComplyCube's responses use.
    fn create(&mut self, kind: Kind, fields: Obj) -> Obj {
        let now = now_iso();
        let mut o = Map::new();
        o.insert("id".into(), Value::String(self.store.new_id()));
        for (k, v) in fields {
            if !matches!(k.as_str(), "id" | "createdAt" | "updatedAt") && !v.is_null() {
                o.insert(k, v);
            }
        }
        o.insert("createdAt".into(), Value::String(now.clone()));
        o.insert("updatedAt".into(), Value::String(now));
        self.store.insert(self.key, kind, o.clone());
        self.store
            .audit(self.key, Change::Create, kind, None, Some(&o));
        o
    }

    /// Partial update: nested objects merge; ids and timestamps are not
    /// the caller's to change.
    fn update(&mut self, kind: Kind, id: &str, mut patch: Obj) -> Reply {
        for k in ["id", "createdAt", "updatedAt", "clientId"] {
            patch.remove(k);
        }
        let Some(o) = self.store.get_mut(self.key, kind, id) else {
            return Reply::not_found(kind.name(), id);
        };
        let before = o.clone();
        merge(o, &patch);
        if kind == Kind::Client {
            let name = entity_name(o);
            o.insert("entityName".into(), name);
        }
        o.insert("updatedAt".into(), Value::String(now_iso()));
        let after = o.clone();
        self.store
            .audit(self.key, Change::Update, kind, Some(&before), Some(&after));
        Reply::ok(Value::Object(after))
    }
}

fn required_str<'a>(body: &'a Obj, field: &'static str) -> Result<&'a str, Reply> {
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(Reply::invalid(field, &format!("'{field}' is required")))
        }
        Some(_) => Err(Reply::invalid(
            field,
            &format!("'{field}' must be a string"),
        )),
    }
}

fn require(body: &Obj, fields: &[&'static str]) -> Result<(), Reply> {
    for f in fields {
        if body.get(*f).is_none_or(Value::is_null) {
            return Err(Reply::invalid(f, &format!("'{f}' is required")));
        }
    }
    Ok(())
}

/// Handles one authenticated ComplyCube API call.
pub(crate) fn handle(
    store: &mut Store,
    key: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
) -> Reply {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut c = Ctx {
        store,
        key,
        query,
        body,
    };
    lifecycle::settle(&mut c);
    match route(&mut c, method, &segs) {
        Ok(r) | Err(r) => r,
    }
}

/// Dispatches on the first path segment to the handlers of one resource;
/// anything unmatched is ComplyCube's 404.
fn route(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    let Some(first) = segs.first() else {
        return Ok(Reply::unknown_route());
    };
    match *first {
        "clients" => clients(c, method, segs),
        "addresses" => addresses(c, method, segs),
        "documents" => documents(c, method, segs),
        "livePhotos" => live_photos(c, method, segs),
        "liveVideos" => lifecycle::live_videos(c, method, segs),
        "checks" => lifecycle::checks(c, method, segs),
        "webhooks" => webhooks(c, method, segs),
        "workflowSessions" => lifecycle::workflow_sessions(c, method, segs),
        "flow" | "tokens" => lifecycle::flow_and_tokens(c, method, segs),
        "reports" => lifecycle::reports(c, method, segs),
        "auditLogs" => lifecycle::audit_logs(c, method, segs),
        "teamMembers" | "customLists" | "accountInfo" => account_data(c, method, segs),
        "lookup" => lookups::lookups(c, method, segs),
        "static" | "autofill" => static_data(c, method, segs),
        _ => Ok(Reply::unknown_route()),
    }
}

/// Clients.
fn clients(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("POST", ["clients"]) => create_client(c)?,
        ("GET", ["clients"]) => c.list(Client, false),
        ("GET", ["clients", id]) => c.get(Client, id),
        ("POST", ["clients", id]) => update_client(c, id)?,
        ("DELETE", ["clients", id]) => c.delete(Client, id),
        ("GET", ["clients", id, "riskProfile"]) => risk_profile(c, id),
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// Addresses.
fn addresses(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("POST", ["addresses"]) => {
            let b = c.obj()?;
            c.client_exists(&b)?;
            require(&b, &["line", "city", "country"])?;
            Reply::ok(Value::Object(c.create(Address, b)))
        }
        ("GET", ["addresses"]) => c.list(Address, true),
        ("GET", ["addresses", id]) => c.get(Address, id),
        ("POST", ["addresses", id]) => c.update(Address, id, c.obj()?),
        ("DELETE", ["addresses", id]) => c.delete(Address, id),
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// Documents.
fn documents(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("POST", ["documents"]) => {
            let b = c.obj()?;
            c.client_exists(&b)?;
            required_str(&b, "type")?;
            Reply::ok(Value::Object(c.create(Document, b)))
        }
        ("GET", ["documents"]) => c.list(Document, true),
        ("GET", ["documents", id]) => c.get(Document, id),
        ("POST", ["documents", id]) => c.update(Document, id, c.obj()?),
        ("DELETE", ["documents", id]) => c.delete(Document, id),
        ("POST", ["documents", id, "upload", side]) => upload_image(c, id, side)?,
        ("GET", ["documents", id, "download", side]) => {
            side_ok(side)?;
            let img = side_image(c, id, side, false)?;
            let name = img["fileName"].as_str().unwrap_or_default();
            let ct = img["contentType"].as_str().unwrap_or_default();
            Reply::ok(image_payload(name, ct))
        }
        ("DELETE", ["documents", id, side]) => {
            side_ok(side)?;
            side_image(c, id, side, true)?;
            Reply::no_content()
        }
        ("POST", ["documents", id, "redact"]) => {
            c.obj()?;
            c.get(Document, id)
        }
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// Live photos.
fn live_photos(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("POST", ["livePhotos"]) => create_live_photo(c)?,
        ("GET", ["livePhotos"]) => c.list(LivePhoto, true),
        ("GET", ["livePhotos", id]) => c.get(LivePhoto, id),
        ("DELETE", ["livePhotos", id]) => c.delete(LivePhoto, id),
        ("GET", ["livePhotos", id, "download"]) => {
            let Some(p) = c.store.get(c.key, LivePhoto, id) else {
                return Ok(Reply::not_found(LivePhoto.name(), id));
            };
            let ct = p["contentType"]
                .as_str()
                .unwrap_or("images/jpg")
                .to_string();
            Reply::ok(image_payload("live_photo.jpg", &ct))
        }
        ("POST", ["livePhotos", id, "redact"]) => c.get(LivePhoto, id),
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// Webhooks.
fn webhooks(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("POST", ["webhooks"]) => {
            let b = c.obj()?;
            required_str(&b, "url")?;
            require(&b, &["enabled", "events"])?;
            let mut o = c.create(Webhook, b);
            // The secret is returned at creation only, never stored for reads.
            o.insert(
                "secret".into(),
                Value::String(format!("whsec_{}", c.store.new_id())),
            );
            Reply::ok(Value::Object(o))
        }
        ("GET", ["webhooks"]) => c.list(Webhook, false),
        ("GET", ["webhooks", id]) => c.get(Webhook, id),
        ("POST", ["webhooks", id]) => {
            // The whole model sent back carries the secret: never stored.
            let mut b = c.obj()?;
            b.remove("secret");
            c.update(Webhook, id, b)
        }
        ("DELETE", ["webhooks", id]) => c.delete(Webhook, id),
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// Read-only account data.
fn account_data(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    let r = match (method, segs) {
        ("GET", ["teamMembers"]) => {
            seed_account(c);
            c.list(Kind::TeamMember, false)
        }
        ("GET", ["teamMembers", id]) => {
            seed_account(c);
            c.get(Kind::TeamMember, id)
        }
        ("GET", ["accountInfo"]) => Reply::ok(json!({
            "username": "sandbox", "plan": "sandbox", "remainingCredit": 1000
        })),
        ("GET", ["customLists"]) => {
            seed_account(c);
            c.list(Kind::CustomList, false)
        }
        ("GET", ["customLists", id]) => {
            seed_account(c);
            c.get(Kind::CustomList, id)
        }
        ("POST", ["customLists", id, "records"]) => add_list_record(c, id)?,
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// What every sandbox account has besides what the API creates: its owner
/// (a team member) and one custom list (ComplyCube has no API to create
/// either), so they can be listed, read by id and filtered.
const SANDBOX_LIST_ID: &str = "5f0000000000000000000001";
const SANDBOX_OWNER_ID: &str = "5f0000000000000000000002";

fn seed_account(c: &mut Ctx<'_>) {
    if c.store
        .get(c.key, Kind::CustomList, SANDBOX_LIST_ID)
        .is_some()
    {
        return;
    }
    let now = now_iso();
    let seeds = [
        (
            Kind::CustomList,
            json!({
                "id": SANDBOX_LIST_ID, "name": "Sandbox list", "description": "The sandbox account's custom list",
                "personCount": 0, "companyCount": 0, "createdAt": now, "updatedAt": now
            }),
        ),
        (
            Kind::TeamMember,
            json!({
                "id": SANDBOX_OWNER_ID, "firstName": "Sandbox", "lastName": "Owner", "role": "owner", "createdAt": now
            }),
        ),
    ];
    for (kind, v) in seeds {
        if let Value::Object(o) = v {
            c.store.insert(c.key, kind, o);
        }
    }
}

fn add_list_record(c: &mut Ctx<'_>, id: &str) -> Result<Reply, Reply> {
    let b = c.obj()?;
    require(&b, &["entityType", "names"])?;
    let count = match b.get("entityType").and_then(Value::as_str) {
        Some("person") => "personCount",
        Some("company") => "companyCount",
        _ => {
            return Err(Reply::invalid(
                "entityType",
                "'entityType' must be one of [person, company]",
            ));
        }
    };
    seed_account(c);
    let Some(list) = c.store.get(c.key, Kind::CustomList, id) else {
        return Ok(Reply::not_found("custom list", id));
    };
    let n = list.get(count).and_then(Value::as_u64).unwrap_or(0) + 1;
    let mut patch = Map::new();
    patch.insert(count.into(), json!(n));
    c.update(Kind::CustomList, id, patch);
    let mut o = Map::new();
    o.insert("id".into(), Value::String(c.store.new_id()));
    o.extend(b);
    o.insert("createdAt".into(), Value::String(now_iso()));
    Ok(Reply::ok(Value::Object(o)))
}

/// Static data and autofill.
fn static_data(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    let r = match (method, segs) {
        ("GET", ["static", "screeningLists"]) => Reply::ok(json!([
            "EU Consolidated Sanctions",
            "UK HMT Sanctions",
            "US OFAC SDN",
            "UN Consolidated Sanctions"
        ])),
        ("GET", ["static", "supportedDocuments"]) => Reply::ok(json!([
            {"country": "GB", "documentTypes": ["passport", "driving_license", "national_identity_card"]},
            {"country": "US", "documentTypes": ["passport", "driving_license"]}
        ])),
        ("POST", ["autofill"]) => {
            let b = c.obj()?;
            require(&b, &["data"])?;
            Reply::ok(
                json!({"personDetails": {"firstName": "Jane", "lastName": "Doe"}, "addresses": []}),
            )
        }
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

fn exists(c: &Ctx<'_>, kind: Kind, id: &str) -> Result<(), Reply> {
    match c.store.get(c.key, kind, id) {
        Some(_) => Ok(()),
        None => Err(Reply::not_found(kind.name(), id)),
    }
}

fn side_ok(side: &str) -> Result<(), Reply> {
    if side == "front" || side == "back" {
        Ok(())
    } else {
        Err(Reply::invalid(
            "documentSide",
            "'documentSide' must be one of [front, back]",
        ))
    }
}

/// The stored metadata of a document's image on `side`, removed when
/// `take`; 404 when the document or that side's image does not exist.
fn side_image(c: &mut Ctx<'_>, id: &str, side: &str, take: bool) -> Result<Value, Reply> {
    let Some(doc) = c.store.get_mut(c.key, Kind::Document, id) else {
        return Err(Reply::not_found("document", id));
    };
    let found = match doc.get_mut("images") {
        Some(Value::Array(a)) => {
            let i = a.iter().position(|i| i["documentSide"] == side);
            match (i, take) {
                (Some(i), true) => Some(a.remove(i)),
                (Some(i), false) => Some(a[i].clone()),
                (None, _) => None,
            }
        }
        _ => None,
    };
    found.ok_or_else(|| {
        Reply::error(
            404,
            "resource_not_found",
            &format!("Document '{id}' has no {side} image"),
            None,
        )
    })
}

/// Live photos keep their metadata only; ComplyCube spells their content
/// type `images/jpg` (sic), which its own SDK tests expect.
fn create_live_photo(c: &mut Ctx<'_>) -> Result<Reply, Reply> {
    let mut b = c.obj()?;
    c.client_exists(&b)?;
    let data = required_str(&b, "data")?;
    let size = data.len() * 3 / 4;
    let ct = if data.starts_with("iVBOR") {
        "images/png"
    } else {
        "images/jpg"
    };
    b.remove("data");
    b.entry("performLivenessCheck").or_insert(Value::Bool(true));
    b.insert("contentType".into(), Value::String(ct.into()));
    b.insert("size".into(), json!(size));
    let mut o = c.create(Kind::LivePhoto, b);
    if let Some(Value::String(id)) = o.get("id").cloned() {
        let link = Value::String(format!("/livePhotos/{id}/download"));
        o.insert("downloadLink".into(), link.clone());
        if let Some(stored) = c.store.get_mut(c.key, Kind::LivePhoto, &id) {
            stored.insert("downloadLink".into(), link);
        }
    }
    Ok(Reply::ok(Value::Object(o)))
}

fn image_payload(file_name: &str, content_type: &str) -> Value {
    // A 1x1 white JPEG would do; what matters is the envelope shape.
    json!({"fileName": file_name, "contentType": content_type, "data": "/9j/4AAQSkZJRgABAQ=="})
}

fn create_client(c: &mut Ctx<'_>) -> Result<Reply, Reply> {
    let mut b = c.obj()?;
    let ty = required_str(&b, "type")?.to_string();
    if ty != "person" && ty != "company" {
        return Err(Reply::invalid(
            "type",
            "'type' must be one of [person, company]",
        ));
    }
    required_str(&b, "email")?;
    let (details, other) = if ty == "person" {
        ("personDetails", "companyDetails")
    } else {
        ("companyDetails", "personDetails")
    };
    let Some(Value::Object(d)) = b.get(details) else {
        return Err(Reply::invalid(
            details,
            &format!("'{details}' must be provided when type is '{ty}'"),
        ));
    };
    let needed: &[&'static str] = if ty == "person" {
        &["firstName", "lastName"]
    } else {
        &["name"]
    };
    for f in needed {
        if required_str(d, f).is_err() {
            return Err(Reply::invalid(
                details,
                &format!("'{details}.{f}' is required"),
            ));
        }
    }
    // The SDK models refuse a details object of the other type, and upstream
    // ignores it, so it is not kept.
    b.remove(other);
    let mut fields = Map::new();
    fields.insert("type".into(), Value::String(ty));
    fields.insert("entityName".into(), entity_name(&b));
    fields.extend(b);
    let o = c.create(Kind::Client, fields);
    Ok(Reply::ok(Value::Object(o)))
}

fn update_client(c: &mut Ctx<'_>, id: &str) -> Result<Reply, Reply> {
    let mut b = c.obj()?;
    let Some(stored) = c.store.get(c.key, Kind::Client, id) else {
        return Ok(Reply::not_found("client", id));
    };
    let stored_type = stored
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("person")
        .to_string();
    if let Some(t) = b.remove("type")
        && t.as_str() != Some(stored_type.as_str())
    {
        return Err(Reply::invalid(
            "type",
            "'type' cannot be changed once the client is created",
        ));
    }
    b.remove("entityName");
    b.remove(if stored_type == "person" {
        "companyDetails"
    } else {
        "personDetails"
    });
    Ok(c.update(Kind::Client, id, b))
}

fn entity_name(o: &Obj) -> Value {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let name = match o.get("type").and_then(Value::as_str) {
        Some("company") => s(o.get("companyDetails").and_then(|d| d.get("name"))),
        _ => {
            let d = o.get("personDetails");
            let first = s(d.and_then(|d| d.get("firstName")));
            let last = s(d.and_then(|d| d.get("lastName")));
            format!("{first} {last}").trim().to_string()
        }
    };
    Value::String(name)
}

fn risk_profile(c: &Ctx<'_>, id: &str) -> Reply {
    let Some(o) = c.store.get(c.key, Kind::Client, id) else {
        return Reply::not_found("client", id);
    };
    // Sandbox trigger from the docs: middle name "medium-risk" gives medium.
    let medium = o
        .get("personDetails")
        .and_then(|d| d.get("middleName"))
        .and_then(Value::as_str)
        == Some("medium-risk");
    let level = if medium { "medium" } else { "low" };
    Reply::ok(json!({
        "overall": level,
        "countryRisk": {"risk": "low"},
        "occupationRisk": {"risk": "low"},
        "politicalExposureRisk": {"risk": level},
        "watchlistRisk": {"risk": "low"},
        "updatedAt": now_iso(),
    }))
}

fn upload_image(c: &mut Ctx<'_>, id: &str, side: &str) -> Result<Reply, Reply> {
    side_ok(side)?;
    let b = c.obj()?;
    exists(c, Kind::Document, id)?;
    let file_name = required_str(&b, "fileName")?.to_string();
    required_str(&b, "data")?;
    let image_id = c.store.new_id();
    // ComplyCube answers `image/jpg` (sic) for JPEG uploads.
    let ct = if file_name.ends_with(".png") {
        "image/png"
    } else if file_name.ends_with(".pdf") {
        "application/pdf"
    } else {
        "image/jpg"
    };
    let img = json!({
        "id": image_id,
        "fileName": file_name,
        "documentSide": side,
        "downloadLink": format!("/documents/{id}/images/{image_id}/download"),
        "contentType": ct,
        "size": b["data"].as_str().map(|d| d.len() * 3 / 4).unwrap_or(0),
        "createdAt": now_iso(),
        "updatedAt": now_iso(),
    });
    if let Some(doc) = c.store.get_mut(c.key, Kind::Document, id) {
        // A side uploaded again replaces the earlier image of that side.
        if let Value::Array(a) = doc.entry("images").or_insert_with(|| json!([])) {
            a.retain(|i| i["documentSide"] != side);
            a.push(img.clone());
        }
    }
    Ok(Reply::ok(img))
}

#[cfg(test)]
mod tests;
