use super::*;

fn call(s: &mut Store, key: &str, m: &str, p: &str, q: &str, body: Value) -> Reply {
    let query: Vec<(String, String)> = q
        .split('&')
        .filter(|x| !x.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let b = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    handle(s, key, m, p, &query, &b)
}

#[test]
fn person_client_needs_details_and_email() {
    let mut s = Store::new(std::time::Duration::ZERO);
    let r = call(
        &mut s,
        "test_k1",
        "POST",
        "/clients",
        "",
        json!({"type": "person", "email": "a@b.c"}),
    );
    assert_eq!(r.status, 400);
    let b = r.body.unwrap();
    assert_eq!(b["type"], "invalid_request");
    assert_eq!(b["param"], "personDetails");
    assert_eq!(
        b["message"],
        "'personDetails' must be provided when type is 'person'"
    );
    let r = call(
        &mut s,
        "test_k1",
        "POST",
        "/clients",
        "",
        json!({"type": "company", "companyDetails": {"name": "X"}}),
    );
    assert_eq!(r.body.unwrap()["param"], "email");
    let r = call(
        &mut s,
        "test_k1",
        "POST",
        "/clients",
        "",
        json!({"type": "robot", "email": "a@b.c"}),
    );
    assert_eq!(r.body.unwrap()["param"], "type");
}

#[test]
fn company_client_entity_name_and_dependents() {
    let mut s = Store::new(std::time::Duration::ZERO);
    let r = call(
        &mut s,
        "live_k1",
        "POST",
        "/clients",
        "",
        json!({"type": "company", "email": "x@y.z", "companyDetails": {"name": "Acme"}}),
    );
    assert_eq!(r.status, 200);
    let client = r.body.unwrap();
    assert_eq!(client["entityName"], "Acme");
    let cid = client["id"].as_str().unwrap();
    let r = call(
        &mut s,
        "live_k1",
        "POST",
        "/addresses",
        "",
        json!({"clientId": cid, "line": "1 Road", "city": "Town", "country": "GB"}),
    );
    assert_eq!(r.status, 200);
    let addr = r.body.unwrap();
    let r = call(
        &mut s,
        "live_k1",
        "GET",
        "/addresses",
        &format!("clientId={cid}"),
        Value::Null,
    );
    assert_eq!(r.body.unwrap()["items"][0]["id"], addr["id"]);
    let r = call(&mut s, "live_k1", "GET", "/addresses", "", Value::Null);
    assert_eq!(r.status, 400);
    let r = call(
        &mut s,
        "live_k1",
        "POST",
        "/documents",
        "",
        json!({"clientId": "5f0000000000000000000000", "type": "passport"}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body.unwrap()["message"],
        "Invalid client id '5f0000000000000000000000'"
    );
    let r = call(
        &mut s,
        "live_k1",
        "POST",
        "/checks",
        "",
        json!({"clientId": cid, "type": "standard_screening_check"}),
    );
    let check = r.body.unwrap();
    assert_eq!(check["status"], "pending");
    assert_eq!(check["clientId"], cid);
    let r = call(
        &mut s,
        "live_k1",
        "GET",
        "/static/screeningLists",
        "",
        Value::Null,
    );
    assert!(r.body.unwrap()[0].is_string());
    let r = call(&mut s, "live_k1", "GET", "/nope", "", Value::Null);
    assert_eq!(r.status, 404);
    assert_eq!(r.body.unwrap()["type"], "resource_not_found");
}

#[test]
fn document_upload_records_image_per_side() {
    let mut s = Store::new(std::time::Duration::ZERO);
    let c = call(
        &mut s,
        "test_k",
        "POST",
        "/clients",
        "",
        json!({"type": "person", "email": "a@b.c", "personDetails": {"firstName": "A", "lastName": "B"}}),
    )
    .body
    .unwrap();
    let d = call(
        &mut s,
        "test_k",
        "POST",
        "/documents",
        "",
        json!({"clientId": c["id"], "type": "passport"}),
    )
    .body
    .unwrap();
    let p = format!("/documents/{}/upload/front", d["id"].as_str().unwrap());
    for _ in 0..2 {
        let r = call(
            &mut s,
            "test_k",
            "POST",
            &p,
            "",
            json!({"fileName": "f.png", "data": "AAAA"}),
        );
        assert_eq!(r.status, 200);
    }
    let got = call(
        &mut s,
        "test_k",
        "GET",
        &format!("/documents/{}", d["id"].as_str().unwrap()),
        "",
        Value::Null,
    )
    .body
    .unwrap();
    assert_eq!(got["images"].as_array().unwrap().len(), 1);
    assert_eq!(got["images"][0]["contentType"], "image/png");
    let bad = format!("/documents/{}/upload/side", d["id"].as_str().unwrap());
    let r = call(
        &mut s,
        "test_k",
        "POST",
        &bad,
        "",
        json!({"fileName": "f.png", "data": "AAAA"}),
    );
    assert_eq!(r.status, 400);
}
