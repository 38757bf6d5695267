//! Company and address lookups, shaped as ComplyCube's registry answers.
//!
//! A company's id is, as upstream, the hex of `<country>__<registration
//! number>` (`67625f5f3131343535333733` is `gb__11455373`). A search
//! (`companyName` and `incorporationCountry` required) finds two companies,
//! summaries only (no owners, officers, filings, industry codes or website);
//! their details are kept so `GET /lookup/companies/{id}` returns them. Any
//! other id of that form gets synthetic details; anything else is 404.
//! An address search (`line`, `postalCode`, `country` required) finds the
//! address searched for.

use serde_json::{Map, Value, json};

use super::{Ctx, Reply, required_str};
use crate::sandbox::store::{Kind, Obj, now_iso};

pub(super) fn lookups(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    let r = match (method, segs) {
        ("POST", ["lookup", "companies"]) => search_companies(c)?,
        ("GET", ["lookup", "companies", id]) => match c.store.get(c.key, Kind::Company, id) {
            Some(o) => Reply::ok(Value::Object(o.clone())),
            None => match decode_id(id) {
                Some((country, reg)) => Reply::ok(Value::Object(details(
                    &format!("SANDBOX COMPANY {reg}"),
                    &country,
                    &reg,
                ))),
                None => Reply::not_found("company", id),
            },
        },
        ("POST", ["lookup", "addresses"]) => {
            let b = c.obj()?;
            for f in ["line", "postalCode", "country"] {
                required_str(&b, f)?;
            }
            Reply::ok(json!({"totalItems": 1, "items": [{
                "line": b["line"], "city": "Sandbox City", "postalCode": b["postalCode"], "country": b["country"]
            }]}))
        }
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

fn search_companies(c: &mut Ctx<'_>) -> Result<Reply, Reply> {
    let b = c.obj()?;
    let name = required_str(&b, "companyName")?.to_uppercase();
    let country = required_str(&b, "incorporationCountry")?.to_uppercase();
    // A registration number that is the same for the same name.
    let h = name.bytes().fold(2_166_136_261_u32, |h, x| {
        (h ^ u32::from(x)).wrapping_mul(16_777_619)
    });
    let base = 10_000_000 + h % 80_000_000;
    let mut items = Vec::new();
    for (i, suffix) in ["LIMITED", "HOLDINGS LIMITED"].iter().enumerate() {
        let reg = (base + i as u32).to_string();
        let full = details(&format!("{name} {suffix}"), &country, &reg);
        let summary: Obj = full
            .iter()
            .filter(|(k, _)| {
                !["owners", "officers", "filings", "industryCodes"].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        c.store.insert(c.key, Kind::Company, full);
        items.push(Value::Object(summary));
    }
    Ok(Reply::ok(
        json!({"totalItems": items.len(), "items": items}),
    ))
}

/// `<country>__<registration number>` from a company id, if it is one.
fn decode_id(id: &str) -> Option<(String, String)> {
    if !id.len().is_multiple_of(2) || id.len() > 128 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(id.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (country, reg) = text.split_once("__")?;
    let ok = country.len() == 2
        && country.chars().all(|ch| ch.is_ascii_lowercase())
        && !reg.is_empty()
        && reg.chars().all(|ch| ch.is_ascii_alphanumeric());
    ok.then(|| (country.to_uppercase(), reg.to_string()))
}

/// A company's full registry record.
fn details(name: &str, country: &str, reg: &str) -> Obj {
    let id: String = format!("{}__{reg}", country.to_lowercase())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let now = now_iso();
    let v = json!({
        "id": id,
        "name": name,
        "registrationNumber": reg,
        "incorporationCountry": country,
        "incorporationDate": "2010-01-01",
        "incorporationType": "private_limited_company",
        "address": {"line": "1 Registry Road", "city": "Sandbox City", "postalCode": "SB1 1AA", "country": country},
        "active": true,
        "sourceUrl": format!("https://registry.example/{country}/{reg}"),
        "owners": [{
            "type": "person", "role": "shareholder", "entityType": "person", "entityName": "Jane Doe",
            "ownershipType": "direct", "firstName": "Jane", "lastName": "Doe", "dob": "1970-01-01",
            "nationality": country, "countryOfResidence": country,
            "address": {"line": "1 Registry Road", "city": "Sandbox City", "postalCode": "SB1 1AA", "country": country},
            "ownershipStructure": {"sharesPercentage": 100}
        }],
        "officers": [{
            "entityName": "Jane Doe", "role": "director", "occupation": "Director", "nationality": country,
            "firstName": "Jane", "lastName": "Doe", "active": true
        }],
        "filings": [{
            "name": "Annual accounts", "description": "Accounts for the year", "type": "accounts",
            "date": "2023-12-31", "fileUrl": format!("https://registry.example/{country}/{reg}/accounts.pdf")
        }],
        "industryCodes": [{"code": "62012", "description": "Business and domestic software development", "scheme": "SIC"}],
        "createdAt": now,
        "updatedAt": now,
    });
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}
