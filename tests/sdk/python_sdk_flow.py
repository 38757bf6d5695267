"""Drive the gateway with the official ComplyCube Python SDK (pip package
`complycube`), exactly as an internal service would: only the base URL and
the key change (the key is the caller's gateway token).

Usage: python_sdk_flow.py GATEWAY_URL TOKEN
Prints one JSON object with what each step saw; the Rust test asserts on it.
"""
import json
import sys

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
print(json.dumps(out))
