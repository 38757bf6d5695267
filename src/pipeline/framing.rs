//! The `framing` stage, first of all: an HTTP/1 request whose framing
//! another hop could read differently is refused before anything else
//! looks at it (RFC 9112). hyper has parsed the head already and keeps
//! repeated headers, so the checks run on the parsed request.
//!
//! Refused, each with the connection closed (400 unless said):
//! - `Transfer-Encoding` anything but one header holding exactly `chunked`
//!   (`chunked, chunked`, `gzip, chunked`, two headers...): a server may
//!   refuse codings it does not implement (§6.1), and a proxy that forwards
//!   what the next hop may frame differently is the smuggling risk.
//! - HTTP/1.1 without exactly one `Host`; HTTP/1.0 with more than one (§3.2).
//! - HTTP/1.0 with a body (`Content-Length` other than 0, or any
//!   `Transfer-Encoding`): 426 with `Upgrade: HTTP/1.1`. HTTP/1.0 has no
//!   chunked framing and no persistent-connection rules cubegate relies on;
//!   every client cubegate serves speaks HTTP/1.1.
//!
//! HTTP/2 frames bodies itself and carries the authority in `:authority`;
//! it is not checked here.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Version};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("Transfer-Encoding must be exactly one `chunked`")]
    TransferEncoding,
    #[error("an HTTP/1.1 request needs exactly one Host header")]
    Host,
    #[error("a request with a body needs HTTP/1.1")]
    Http10Body,
}

/// The stage: Ok when the head frames the request unambiguously.
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    if version != Version::HTTP_11 && version != Version::HTTP_10 {
        return Ok(());
    }
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let has_te = match (te.next(), te.next()) {
        (None, _) => false,
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => true,
        _ => return Err(FramingError::TransferEncoding),
    };
    let hosts = headers.get_all(HOST).iter().count();
    if hosts > 1 || (version == Version::HTTP_11 && hosts == 0) {
        return Err(FramingError::Host);
    }
    if version == Version::HTTP_10 {
        let has_length = headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != b"0");
        if has_te || has_length {
            return Err(FramingError::Http10Body);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: Version, headers: &[(&str, &str)]) -> Result<(), FramingError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        check(version, &h)
    }

    #[test]
    fn one_chunked_one_host_and_no_http10_body() {
        use FramingError as F;
        let v11 = Version::HTTP_11;
        let host = ("host", "gw");
        assert_eq!(head(v11, &[host]), Ok(()));
        assert_eq!(
            head(v11, &[host, ("transfer-encoding", " Chunked ")]),
            Ok(())
        );
        for te in [
            "chunked, chunked",
            "gzip, chunked",
            "identity, chunked",
            "gzip",
            "",
        ] {
            let got = head(v11, &[host, ("transfer-encoding", te)]);
            assert_eq!(got, Err(F::TransferEncoding), "{te}");
        }
        let two_te = [
            host,
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(head(v11, &two_te), Err(F::TransferEncoding));
        assert_eq!(head(v11, &[]), Err(F::Host));
        assert_eq!(head(v11, &[host, host]), Err(F::Host));
        let v10 = Version::HTTP_10;
        assert_eq!(head(v10, &[]), Ok(()));
        assert_eq!(head(v10, &[("content-length", "0")]), Ok(()));
        assert_eq!(head(v10, &[("content-length", "2")]), Err(F::Http10Body));
        assert_eq!(
            head(v10, &[("transfer-encoding", "chunked")]),
            Err(F::Http10Body)
        );
        assert_eq!(head(Version::HTTP_2, &[]), Ok(()));
    }
}
