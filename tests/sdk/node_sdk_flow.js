// Drive the gateway with the official ComplyCube Node SDK (npm package
// `@complycube/api`, pinned in tests/sdk/node/package.json), exactly as an
// internal service would: only the base URL and the key change (the key is
// the caller's gateway token).
//
// Usage: node node_sdk_flow.js GATEWAY_URL TOKEN
// Prints one JSON object with what each step saw; tests/it/sdk.rs asserts on it.
"use strict";
const path = require("path");
const { ComplyCube } = require(path.join(__dirname, "node", "node_modules", "@complycube", "api"));

const [url, token] = process.argv.slice(2);
const out = {};

function clientFor(key) {
  const cc = new ComplyCube({ apiKey: key });
  // No constructor option for the base URL; the axios instance is public.
  cc.axiosInstance.defaults.baseURL = `${url}/v1`;
  return cc;
}

async function err(fn) {
  try {
    await fn();
  } catch (e) {
    return {
      raised: e.constructor.name,
      statusCode: e.statusCode ?? null,
      type: e.type ?? null,
      param: e.param ?? null,
      message: String(e.message),
    };
  }
  return { raised: null };
}

function fakeJpeg(size) {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7) % 251;
  b.set([0xff, 0xd8, 0xff, 0xe0], 0);
  return b.toString("base64");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const cc = clientFor(token);
  const person = await cc.client.create({
    type: "person",
    email: "node.person@example.com",
    personDetails: { firstName: "Node", lastName: "Person" },
  });
  out.person_type = person.type;
  const company = await cc.client.create({
    type: "company",
    email: "node.company@example.com",
    companyDetails: { name: "Node Ltd" },
  });
  out.company_type = company.type;
  const updated = await cc.client.update(person.id, { key1: "value1", email: "node.updated@example.com" });
  out.unknown_field_kept = "key1" in updated;
  out.unknown_field_email = updated.email;
  const listed = await cc.client.list({ pageSize: 10 });
  out.list_has_person = listed.some((c) => c.id === person.id);
  const addr = await cc.address.create(person.id, { line: "1 Node Street", city: "London", country: "GB" });
  out.address_client = addr.clientId;
  const doc = await cc.document.create(person.id, { type: "passport", issuingCountry: "GB" });
  const img = await cc.document.upload(doc.id, { fileName: "front.jpg", data: fakeJpeg(3 * 1024 * 1024) }, "front");
  out.upload_side = img.documentSide;
  out.upload_size = img.size;
  const photo = await cc.livePhoto.upload(person.id, { data: fakeJpeg(40 * 1024) });
  let check = await cc.check.create(person.id, { type: "identity_check", documentId: doc.id, livePhotoId: photo.id });
  out.check_initial_status = check.status;
  const started = Date.now();
  let polls = 0;
  while (check.status === "pending" && Date.now() - started < 15000) {
    await sleep(100);
    polls += 1;
    check = await cc.check.get(check.id);
  }
  out.check_status = check.status;
  out.check_outcome = check.result ? check.result.outcome : null;
  out.check_polls = polls;
  const report = await cc.report.generate({ checkId: check.id });
  out.report_content_type = report.contentType;
  out.report_is_pdf = Buffer.from(report.data, "base64").subarray(0, 4).toString() === "%PDF";
  const hook = await cc.webhook.create({ url: "https://hooks.example/node", enabled: true, events: ["check.completed"] });
  out.webhook_secret = Boolean(hook.secret);
  const hook2 = await cc.webhook.update(hook.id, { ...hook, enabled: false });
  out.webhook_updated_enabled = hook2.enabled;
  await cc.webhook.delete(hook.id);
  out.webhook_after_delete = await err(() => cc.webhook.get(hook.id));
  await cc.client.delete(company.id);
  out.company_after_delete = await err(() => cc.client.get(company.id));
  out.bad_token = await err(() => clientFor("cgw_not_a_real_token").client.list());
  out.not_found = await err(() => cc.client.get("5f0000000000000000000000"));
  out.schema = await err(() =>
    cc.client.create({ type: "person", email: "x@example.com", personDetails: { firstName: "A", lastName: "B", dob: "1990-13-01" } }),
  );
  out.schema_check_type = await err(() => cc.check.create(person.id, { type: "standard_screening_chek" }));
  await cc.client.delete(person.id);
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(`node SDK flow failed: ${e.constructor.name}: ${e.message}`);
  process.exit(1);
});
