//! When a certificate expires: its tbsCertificate's validity.notAfter, as RFC 3339 (for
//! `/status`, so an operator sees a certificate about to lapse before clients do).
//! <https://www.rfc-editor.org/rfc/rfc5280#section-4.1.2.5>

use super::endpoint::{expect, malformed, read, CONTEXT_0, SEQUENCE};
use super::EndPointError;

const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's notAfter as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn not_after(cert: &[u8]) -> Result<String, EndPointError> {
    let (certificate, _) = expect(cert, SEQUENCE, "Certificate is not a SEQUENCE")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut rest = tbs;
    // version [0] (optional), serialNumber, signature, issuer, then validity.
    let mut field = 0;
    while let Some(element) = read(rest)? {
        if element.tag == CONTEXT_0 && field == 0 {
            rest = element.rest;
            continue;
        }
        if field == 3 {
            let not_before = read(element.contents)?.ok_or(malformed("no notBefore"))?;
            return time(not_before.rest);
        }
        (rest, field) = (element.rest, field + 1);
    }
    Err(malformed("no validity"))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(input: &[u8]) -> Result<String, EndPointError> {
    let element = read(input)?.ok_or(malformed("no notAfter"))?;
    let text = std::str::from_utf8(element.contents).map_err(|_| malformed("time not ASCII"))?;
    let digits = text.strip_suffix('Z').ok_or(malformed("time not in UTC"))?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("time not digits"));
    }
    let full = match (element.tag, digits.len()) {
        (UTC_TIME, 12) if digits < "50" => format!("20{digits}"),
        (UTC_TIME, 12) => format!("19{digits}"),
        (GENERALIZED_TIME, 14) => digits.to_owned(),
        _ => return Err(malformed("not a UTCTime or GeneralizedTime")),
    };
    let part = |range: std::ops::Range<usize>| full.get(range).unwrap_or_default();
    Ok(format!(
        "{}-{}-{}T{}:{}:{}Z",
        part(0..4),
        part(4..6),
        part(6..8),
        part(8..10),
        part(10..12),
        part(12..14)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_of_a_certificate_and_refuses_garbage() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()).unwrap(), "2031-07-09T00:00:00Z");
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()).unwrap(), "2051-01-02T00:00:00Z");
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = not_after(&der[..cut]);
        }
        assert!(not_after(b"\x30\x00").is_err());
    }
}
