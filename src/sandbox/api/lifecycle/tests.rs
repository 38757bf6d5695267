use std::time::Duration;

use serde_json::{Value, json};

use crate::sandbox::api::{Reply, handle};
use crate::sandbox::store::Store;

const K: &str = "test_lifecycle";

fn call(s: &mut Store, m: &str, p: &str, q: &str, body: Value) -> Reply {
    let query: Vec<(String, String)> = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let b = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    handle(s, K, m, p, &query, &b)
}

fn ok(r: Reply) -> Value {
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body.unwrap_or(Value::Null)
}

fn person(s: &mut Store, last: &str) -> String {
    let b = ok(call(
        s,
        "POST",
        "/clients",
        "",
        json!({"type": "person", "email": "a@b.c", "personDetails": {"firstName": "T", "lastName": last}}),
    ));
    b["id"].as_str().unwrap().to_string()
}

#[test]
fn checks_complete_with_the_test_data_outcome() {
    let mut s = Store::new(Duration::ZERO);
    for (last, outcome) in [
        ("Smith", "clear"),
        ("attention", "attention"),
        ("failed", "not_processed"),
    ] {
        let cid = person(&mut s, last);
        let chk = ok(call(
            &mut s,
            "POST",
            "/checks",
            "",
            json!({"clientId": cid, "type": "standard_screening_check"}),
        ));
        assert_eq!(chk["status"], "pending");
        assert_eq!(chk["entityName"], format!("T {last}"));
        let id = chk["id"].as_str().unwrap();
        let got = ok(call(
            &mut s,
            "GET",
            &format!("/checks/{id}"),
            "",
            Value::Null,
        ));
        assert_eq!(got["status"], "complete", "{last}");
        assert_eq!(got["result"]["outcome"], outcome, "{last}");
        let rep = ok(call(
            &mut s,
            "GET",
            "/reports",
            &format!("checkId={id}"),
            Value::Null,
        ));
        assert_eq!(rep["contentType"], "application/pdf");
        assert!(rep["data"].as_str().unwrap().starts_with("JVBERi0xLjQK"));
    }
}

#[test]
fn a_check_stays_pending_until_the_delay() {
    let mut s = Store::new(Duration::from_millis(150));
    let cid = person(&mut s, "Smith");
    let chk = ok(call(
        &mut s,
        "POST",
        "/checks",
        "",
        json!({"clientId": cid, "type": "extensive_screening_check"}),
    ));
    let id = chk["id"].as_str().unwrap();
    let got = ok(call(
        &mut s,
        "GET",
        &format!("/checks/{id}"),
        "",
        Value::Null,
    ));
    assert_eq!(got["status"], "pending");
    let r = call(
        &mut s,
        "GET",
        "/reports",
        &format!("checkId={id}"),
        Value::Null,
    );
    assert_eq!(
        (r.status, &r.body.unwrap()["contentType"]),
        (200, &json!("application/pdf")),
        "a pending check's report exists"
    );
    let r = call(
        &mut s,
        "POST",
        &format!("/checks/{id}"),
        "",
        json!({"enableMonitoring": true}),
    );
    assert_eq!(r.status, 422);
    std::thread::sleep(Duration::from_millis(200));
    let got = ok(call(
        &mut s,
        "GET",
        &format!("/checks/{id}"),
        "",
        Value::Null,
    ));
    assert_eq!(got["status"], "complete");
    let upd = ok(call(
        &mut s,
        "POST",
        &format!("/checks/{id}"),
        "",
        json!({"enableMonitoring": true}),
    ));
    assert_eq!(upd["enableMonitoring"], true);
}

#[test]
fn check_type_and_its_inputs_are_validated() {
    let mut s = Store::new(Duration::ZERO);
    let cid = person(&mut s, "Smith");
    let r = call(
        &mut s,
        "POST",
        "/checks",
        "",
        json!({"clientId": cid, "type": "standard_screening_chek"}),
    );
    assert_eq!((r.status, &r.body.unwrap()["param"]), (400, &json!("type")));
    let r = call(
        &mut s,
        "POST",
        "/checks",
        "",
        json!({"clientId": cid, "type": "document_check"}),
    );
    assert_eq!(
        (r.status, &r.body.unwrap()["param"]),
        (400, &json!("documentId"))
    );
    let r = call(
        &mut s,
        "POST",
        "/checks",
        "",
        json!({"clientId": cid, "type": "document_check", "documentId": "5f0000000000000000000000"}),
    );
    assert_eq!(r.status, 404);
}

#[test]
fn token_targets_follow_the_match_pattern_rule() {
    let mut s = Store::new(Duration::ZERO);
    let cid = person(&mut s, "Smith");
    for (body, status) in [
        (json!({"clientId": cid, "referrer": "*://*/*"}), 200),
        (
            json!({"clientId": cid, "referrer": "https://*.example.com/kyc/*"}),
            200,
        ),
        (json!({"clientId": cid, "appId": "com.example.app"}), 200),
        (json!({"clientId": cid, "referrer": "random stuff"}), 400),
        (json!({"clientId": cid, "referrer": "ftp://x.com/*"}), 400),
        (json!({"clientId": cid, "appId": "random stuff"}), 400),
    ] {
        let r = call(&mut s, "POST", "/tokens", "", body.clone());
        assert_eq!(r.status, status, "{body}");
    }
}

#[test]
fn the_audit_log_records_changes_and_filters() {
    let mut s = Store::new(Duration::ZERO);
    let cid = person(&mut s, "Smith");
    ok(call(
        &mut s,
        "POST",
        &format!("/clients/{cid}"),
        "",
        json!({"personDetails": {"firstName": "Joe"}, "lastActionBy": "member1"}),
    ));
    let addr = ok(call(
        &mut s,
        "POST",
        "/addresses",
        "",
        json!({"clientId": cid, "line": "1 Road", "city": "Town", "country": "GB"}),
    ));
    let aid = addr["id"].as_str().unwrap();
    assert_eq!(
        call(
            &mut s,
            "DELETE",
            &format!("/addresses/{aid}"),
            "",
            Value::Null
        )
        .status,
        204
    );
    let all = ok(call(
        &mut s,
        "GET",
        "/auditLogs",
        &format!("clientId={cid}"),
        Value::Null,
    ));
    let actions: Vec<(&str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["trigger"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("deleteAddress", "delete"),
            ("createAddress", "create"),
            ("updateClient", "update"),
            ("createClient", "create")
        ]
    );
    let upd = ok(call(
        &mut s,
        "GET",
        "/auditLogs",
        "action=update&resourceType=client",
        Value::Null,
    ));
    assert_eq!(upd["totalItems"], 1);
    let entry = &upd["items"][0];
    assert_eq!(entry["memberId"], "member1");
    assert_eq!(entry["resourceId"], cid.as_str());
    let diff = entry["diff"].as_array().unwrap();
    assert!(diff.contains(&json!({"action": "update", "path": ["personDetails", "firstName"], "old": "T", "new": "Joe"})), "{diff:?}");
    let id = entry["id"].as_str().unwrap();
    assert_eq!(
        ok(call(
            &mut s,
            "GET",
            &format!("/auditLogs/{id}"),
            "",
            Value::Null
        ))["id"],
        id
    );
    let r = call(
        &mut s,
        "GET",
        "/auditLogs/5f0000000000000000000000",
        "",
        Value::Null,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn live_videos_workflow_sessions_and_unknown_ids() {
    let mut s = Store::new(Duration::ZERO);
    let cid = person(&mut s, "attention");
    let v = ok(call(
        &mut s,
        "POST",
        "/liveVideos",
        "",
        json!({"clientId": cid}),
    ));
    assert_eq!(v["language"], "en");
    assert!(!v["challenges"].as_array().unwrap().is_empty());
    let vid = v["id"].as_str().unwrap();
    ok(call(
        &mut s,
        "GET",
        &format!("/liveVideos/{vid}"),
        "",
        Value::Null,
    ));
    let flow = ok(call(
        &mut s,
        "POST",
        "/flow/sessions",
        "",
        json!({"clientId": cid, "workflowTemplateId": "wt1"}),
    ));
    assert!(flow["redirectUrl"].is_string());
    let list = ok(call(
        &mut s,
        "GET",
        "/workflowSessions",
        &format!("clientId={cid}"),
        Value::Null,
    ));
    let ws = list["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["items"][0]["status"], "started");
    let done = ok(call(
        &mut s,
        "POST",
        &format!("/workflowSessions/{ws}/complete"),
        "",
        Value::Null,
    ));
    assert_eq!(done["status"], "processing");
    let got = ok(call(
        &mut s,
        "GET",
        &format!("/workflowSessions/{ws}"),
        "",
        Value::Null,
    ));
    assert_eq!(
        (&got["status"], &got["outcome"]),
        (&json!("complete"), &json!("attention"))
    );
    for p in [
        "/teamMembers/5f0000000000000000000000",
        "/customLists/5f0000000000000000000000",
        "/workflowSessions/5f0000000000000000000000",
        "/liveVideos/5f0000000000000000000000",
    ] {
        assert_eq!(call(&mut s, "GET", p, "", Value::Null).status, 404, "{p}");
    }
}

#[test]
fn custom_list_and_company_lookup_answer_with_their_documented_fields() {
    let mut s = Store::new(Duration::ZERO);
    let lists = ok(call(&mut s, "GET", "/customLists", "", Value::Null));
    let id = lists["items"][0]["id"].as_str().unwrap().to_string();
    let rec = ok(call(
        &mut s,
        "POST",
        &format!("/customLists/{id}/records"),
        "",
        json!({"entityType": "person", "names": [{"firstName": "A", "lastName": "B", "type": "primary"}]}),
    ));
    assert!(rec["id"].is_string());
    let list = ok(call(
        &mut s,
        "GET",
        &format!("/customLists/{id}"),
        "",
        Value::Null,
    ));
    for f in ["name", "personCount", "companyCount", "createdAt"] {
        assert!(list.get(f).is_some(), "{f} in {list}");
    }
    assert_eq!(list["personCount"], 1);
    let found = ok(call(
        &mut s,
        "POST",
        "/lookup/companies",
        "",
        json!({"companyName": "Acme", "incorporationCountry": "GB"}),
    ));
    let cid = found["items"][0]["id"].as_str().unwrap();
    let details = ok(call(
        &mut s,
        "GET",
        &format!("/lookup/companies/{cid}"),
        "",
        Value::Null,
    ));
    for f in [
        "name",
        "registrationNumber",
        "officers",
        "owners",
        "filings",
        "industryCodes",
    ] {
        assert!(details.get(f).is_some(), "{f} in {details}");
    }
    let r = call(
        &mut s,
        "GET",
        "/lookup/companies/5f0000000000000000000000",
        "",
        Value::Null,
    );
    assert_eq!(r.status, 404);
    let r = call(
        &mut s,
        "POST",
        "/lookup/companies",
        "",
        json!({"companyName": "Acme"}),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn the_audit_log_keeps_only_the_newest_entries_up_to_its_cap() {
    let mut s = Store::new(Duration::ZERO).with_audit_cap(2);
    let cid = person(&mut s, "Smith");
    for email in ["x@y.z", "y@y.z"] {
        ok(call(
            &mut s,
            "POST",
            &format!("/clients/{cid}"),
            "",
            json!({"email": email}),
        ));
    }
    let all = ok(call(&mut s, "GET", "/auditLogs", "", Value::Null));
    assert_eq!(all["totalItems"], 2);
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "update")
    );
}

#[test]
fn images_are_read_and_deleted_by_side_with_complycubes_content_types() {
    let mut s = Store::new(Duration::ZERO);
    let cid = person(&mut s, "Smith");
    let doc = ok(call(
        &mut s,
        "POST",
        "/documents",
        "",
        json!({"clientId": cid, "type": "passport"}),
    ));
    let did = doc["id"].as_str().unwrap();
    let up = ok(call(
        &mut s,
        "POST",
        &format!("/documents/{did}/upload/front"),
        "",
        json!({"fileName": "front.jpg", "data": "/9j/AAAA"}),
    ));
    assert_eq!(up["contentType"], "image/jpg");
    let down = ok(call(
        &mut s,
        "GET",
        &format!("/documents/{did}/download/front"),
        "",
        Value::Null,
    ));
    assert_eq!(down["fileName"], "front.jpg");
    let r = call(
        &mut s,
        "GET",
        &format!("/documents/{did}/download/back"),
        "",
        Value::Null,
    );
    assert_eq!(r.status, 404, "no back image");
    assert_eq!(
        call(
            &mut s,
            "DELETE",
            &format!("/documents/{did}/front"),
            "",
            Value::Null
        )
        .status,
        204
    );
    let r = call(
        &mut s,
        "GET",
        &format!("/documents/{did}/download/front"),
        "",
        Value::Null,
    );
    assert_eq!(r.status, 404, "deleted");
    let photo = ok(call(
        &mut s,
        "POST",
        "/livePhotos",
        "",
        json!({"clientId": cid, "data": "/9j/AAAA"}),
    ));
    for f in [
        "downloadLink",
        "contentType",
        "size",
        "performLivenessCheck",
    ] {
        assert!(photo.get(f).is_some(), "{f} in {photo}");
    }
    let pid = photo["id"].as_str().unwrap();
    let down = ok(call(
        &mut s,
        "GET",
        &format!("/livePhotos/{pid}/download"),
        "",
        Value::Null,
    ));
    assert_eq!(down["contentType"], "images/jpg");
}

#[test]
fn screening_matches_are_validated_one_by_one_until_clear() {
    let mut s = Store::new(Duration::from_millis(100));
    let b = ok(call(
        &mut s,
        "POST",
        "/clients",
        "",
        json!({"type": "person", "email": "a@b.c", "personDetails": {"firstName": "Don", "middleName": "medium-risk", "lastName": "Juan"}}),
    ));
    let cid = b["id"].as_str().unwrap();
    let chk = ok(call(
        &mut s,
        "POST",
        "/checks",
        "",
        json!({"clientId": cid, "type": "extensive_screening_check"}),
    ));
    let id = chk["id"].as_str().unwrap();
    let r = call(
        &mut s,
        "POST",
        &format!("/checks/{id}/validate"),
        "",
        json!({"outcome": "rejected"}),
    );
    assert_eq!(r.status, 422, "pending: {:?}", r.body);
    std::thread::sleep(Duration::from_millis(150));
    let got = ok(call(
        &mut s,
        "GET",
        &format!("/checks/{id}"),
        "",
        Value::Null,
    ));
    assert_eq!(got["result"]["outcome"], "attention");
    let matches = got["result"]["breakdown"]["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1);
    let mid = matches[0]["id"].as_str().unwrap();
    let r = call(
        &mut s,
        "POST",
        &format!("/checks/{id}/validate"),
        "",
        json!({"outcome": "rejected"}),
    );
    assert_eq!(
        (r.status, &r.body.unwrap()["param"]),
        (400, &json!("matchId"))
    );
    let v = ok(call(
        &mut s,
        "POST",
        &format!("/checks/{id}/validate"),
        "",
        json!({"outcome": "rejected", "matchId": mid}),
    ));
    assert_eq!(v["outcome"], "clear");
    let got = ok(call(
        &mut s,
        "GET",
        &format!("/checks/{id}"),
        "",
        Value::Null,
    ));
    assert_eq!(got["result"]["outcome"], "clear");
}

#[test]
fn the_account_owner_is_a_team_member_found_by_role() {
    let mut s = Store::new(Duration::ZERO);
    let owners = ok(call(
        &mut s,
        "GET",
        "/teamMembers",
        "role=owner",
        Value::Null,
    ));
    assert_eq!(owners["totalItems"], 1);
    let id = owners["items"][0]["id"].as_str().unwrap();
    assert_eq!(
        ok(call(
            &mut s,
            "GET",
            &format!("/teamMembers/{id}"),
            "",
            Value::Null
        ))["role"],
        "owner"
    );
    let none = ok(call(
        &mut s,
        "GET",
        "/teamMembers",
        "role=analyst",
        Value::Null,
    ));
    assert_eq!(none["totalItems"], 0);
}

#[test]
fn company_ids_are_country_and_registration_number_in_hex() {
    let mut s = Store::new(Duration::ZERO);
    let found = ok(call(
        &mut s,
        "POST",
        "/lookup/companies",
        "",
        json!({"companyName": "Cledara", "incorporationCountry": "GB"}),
    ));
    assert_eq!(found["totalItems"], 2);
    let item = &found["items"][0];
    assert!(
        item.get("owners").is_none() && item.get("sourceUrl").is_some(),
        "{item}"
    );
    let got = ok(call(
        &mut s,
        "GET",
        "/lookup/companies/67625f5f3131343535333733",
        "",
        Value::Null,
    ));
    assert_eq!(
        (&got["registrationNumber"], &got["incorporationCountry"]),
        (&json!("11455373"), &json!("GB"))
    );
    let r = call(
        &mut s,
        "GET",
        "/lookup/companies/non existent company id",
        "",
        Value::Null,
    );
    assert_eq!(r.status, 404);
}
