//! AWS Signature Version 4 for Amazon OpenSearch Service (`es`) and
//! OpenSearch Serverless (`aoss`, which also wants the payload hash header).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

/// Which service the endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigV4Service {
    /// Amazon OpenSearch Service / Elasticsearch Service domains.
    Es,
    /// OpenSearch Serverless collections.
    Aoss,
}

impl SigV4Service {
    pub fn name(self) -> &'static str {
        match self {
            SigV4Service::Es => "es",
            SigV4Service::Aoss => "aoss",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing the request failed: {0}")]
pub struct SigningFailed(String);

/// Who signs, for which service (its SigV4 name: `es`, `aoss`,
/// `secretsmanager`, ...) and region.
pub struct Signer<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub credentials: &'a Credentials,
}

impl Signer<'_> {
    /// The headers that sign this request: `authorization`, `x-amz-date`,
    /// `x-amz-security-token` with temporary credentials, and
    /// `x-amz-content-sha256` for `aoss`.
    pub fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, SigningFailed> {
        let failed = |e: &dyn std::fmt::Display| SigningFailed(e.to_string());
        let identity = self.credentials.clone().into();
        let mut settings = SigningSettings::default();
        if self.service == SigV4Service::Aoss.name() {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let request = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body)).map_err(|e| failed(&e))?;
        let (instructions, _signature) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        let (headers, _query) = instructions.into_parts();
        Ok(headers.into_iter().map(|h| (h.name().to_owned(), h.value().to_owned())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2015-08-30T12:36:00Z, the date of the AWS SigV4 test suite.
    fn fixed_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    const URL: &str = "https://search-taxi.us-east-1.es.amazonaws.com/_bulk";
    const BODY: &[u8] = b"abc";

    #[test]
    fn es_with_a_session_token() {
        let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Some("SESSION".into()), None, "test");
        let signer = Signer { service: SigV4Service::Es.name(), region: "us-east-1", credentials: &credentials };
        let headers = signer.headers("POST", URL, &[("content-type", "application/x-ndjson")], BODY, fixed_time()).unwrap();
        assert_eq!(header(&headers, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&headers, "x-amz-security-token"), Some("SESSION"));
        assert_eq!(header(&headers, "x-amz-content-sha256"), None, "es does not need the payload hash header");
        let authorization = header(&headers, "authorization").unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/es/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="),
            "{authorization}"
        );
        let signature = authorization.rsplit("Signature=").next().unwrap();
        assert_eq!(signature.len(), 64);
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));

        // Same inputs, same signature; another body, another signature.
        let again = signer.headers("POST", URL, &[("content-type", "application/x-ndjson")], BODY, fixed_time()).unwrap();
        assert_eq!(header(&again, "authorization"), Some(authorization));
        let other = signer.headers("POST", URL, &[("content-type", "application/x-ndjson")], b"abd", fixed_time()).unwrap();
        assert_ne!(header(&other, "authorization"), Some(authorization));
    }

    #[test]
    fn aoss_adds_the_payload_hash() {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let signer = Signer { service: SigV4Service::Aoss.name(), region: "eu-west-1", credentials: &credentials };
        let headers = signer.headers("POST", URL, &[], BODY, fixed_time()).unwrap();
        // SHA-256 of "abc".
        assert_eq!(header(&headers, "x-amz-content-sha256"), Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        assert_eq!(header(&headers, "x-amz-security-token"), None, "no session token, no header");
        let authorization = header(&headers, "authorization").unwrap();
        assert!(
            authorization.contains("/20150830/eu-west-1/aoss/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date,"),
            "{authorization}"
        );
    }
}
