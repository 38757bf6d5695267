//! Unit tests of the checks config makes itself.

use super::*;

#[test]
fn cert_sans_are_uris_or_dns_names() {
    assert_eq!(
        normalise_san("spiffe://corp/ns/kyc/sa/x").as_deref(),
        Some("spiffe://corp/ns/kyc/sa/x")
    );
    assert_eq!(
        normalise_san("dns:Reports.KYC.svc").as_deref(),
        Some("dns:reports.kyc.svc")
    );
    for bad in [
        "",
        "dns:",
        "onboarding",
        "://x",
        "spiffe://",
        "dns:a b",
        "spiffe://a b",
    ] {
        assert_eq!(normalise_san(bad), None, "{bad}");
    }
}
