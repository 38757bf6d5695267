"""Drive the gateway with the official ComplyCube Python SDK (pip package
`complycube`), exactly as an internal service would: only the base URL and
the key change (the key is the caller's gateway token).

Usage: python_sdk_flow.py GATEWAY_URL TOKEN
Prints one JSON object with what each step saw; the Rust test asserts on it.
"""
import base64
import json
import sys
import time

import complycube
from complycube.error import ComplyCubeAPIError

url, token = sys.argv[1], sys.argv[2]
out = {}


def client_for(key):
    cc = complycube.ComplyCubeClient(api_key=key)
    cc.base_url = url + "/v1"
    return cc


def err(fn):
    try:
        fn()
    except ComplyCubeAPIError as e:
        return {"raised": "ComplyCubeAPIError", "message": str(e)}
    except Exception as e:  # noqa: BLE001 - a crash inside the SDK is what we test against
        return {"raised": type(e).__name__, "message": str(e)}
    return {"raised": None}


cc = client_for(token)
created = cc.clients.create(
    type="person",
    email="sdk.person@example.com",
    personDetails={"firstName": "Sdk", "lastName": "Person", "dob": "1980-02-29"},
)
out["created_id"] = created.id
out["created_type"] = created.type
updated = cc.clients.update(created.id, email="sdk.updated@example.com", type="company")
out["updated_email"] = updated.email
out["updated_type"] = updated.type
got = cc.clients.get(created.id)
out["got_email"] = got.email
out["got_dob"] = got.person_details.dob if hasattr(got, "person_details") and got.person_details else None
listed = cc.clients.list(pageSize=10)
out["list_total"] = listed.total_items
out["list_ids"] = [c.id for c in listed]
cc.clients.delete(created.id)
out["after_delete"] = err(lambda: cc.clients.get(created.id))
out["bad_token"] = err(lambda: client_for("cgw_not_a_real_token").clients.list())
out["raw_key"] = err(lambda: client_for("test_someonesrealcomplycubekey").clients.list())
out["not_found"] = err(lambda: cc.clients.get("5f0000000000000000000000"))
out["schema"] = err(
    lambda: cc.clients.create(type="person", email="x@example.com", personDetails={"firstName": "A", "lastName": "B", "dob": "1990-13-01"})
)
out["missing_details"] = err(lambda: cc.clients.create(type="person", email="x@example.com"))


def fake_jpeg(size):
    """A JPEG-looking payload of `size` bytes, base64-encoded."""
    body = bytes((i * 7) % 251 for i in range(size - 4))
    return base64.b64encode(b"\xff\xd8\xff\xe0" + body).decode()


# The whole KYC flow a service team writes, issue 20.
person = cc.clients.create(
    type="person",
    email="flow.person@example.com",
    personDetails={"firstName": "Flow", "lastName": "Person"},
)
company = cc.clients.create(
    type="company", email="flow.company@example.com", companyDetails={"name": "Flow Ltd"}
)
out["company_type"] = company.type
extra = cc.clients.update(person.id, key1="value1", email="flow.updated@example.com")
out["unknown_field_kept"] = hasattr(extra, "key1")
out["unknown_field_email"] = extra.email
addr = cc.addresses.create(person.id, line="1 Flow Street", city="London", country="GB", postalCode="N1 1AA")
out["address_client"] = addr.client_id
doc = cc.documents.create(person.id, "passport", issuingCountry="GB")
big = fake_jpeg(3 * 1024 * 1024)
img = cc.documents.upload(doc.id, "front", fileName="front.jpg", data=big)
out["upload_side"] = img.document_side
out["upload_size"] = img.size
photo = cc.livephotos.upload(person.id, fake_jpeg(40 * 1024))
check = cc.checks.create(person.id, "identity_check", documentId=doc.id, livePhotoId=photo.id)
out["check_initial_status"] = check.status
started = time.monotonic()
polls = 0
while check.status == "pending" and time.monotonic() - started < 15:
    time.sleep(0.1)
    polls += 1
    check = cc.checks.get(check.id)
out["check_status"] = check.status
out["check_outcome"] = check.result.outcome if check.result else None
out["check_polls"] = polls
report = cc.reports.generate_check_report(check.id)
out["report_content_type"] = report.content_type
out["report_is_pdf"] = base64.b64decode(report.data).startswith(b"%PDF")
hook = cc.webhooks.create(
    "https://hooks.example/flow", True, ["check.completed"], description="flow test"
)
out["webhook_secret"] = bool(hook.secret)
# The model as the SDK gives it back (secret, timestamps); `id` is update()'s own positional argument, so it cannot
# also travel as a field from Python.
whole = {k: v for k, v in hook.to_dict().items() if k != "id"}
whole["enabled"] = False
hook2 = cc.webhooks.update(hook.id, **whole)
out["webhook_updated_enabled"] = hook2.enabled
cc.webhooks.delete(hook.id)
out["webhook_after_delete"] = err(lambda: cc.webhooks.get(hook.id))
cc.clients.delete(company.id)
out["company_after_delete"] = err(lambda: cc.clients.get(company.id))
out["schema_check_type"] = err(lambda: cc.checks.create(person.id, "standard_screening_chek"))
print(json.dumps(out))
