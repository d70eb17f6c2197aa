//! Percent-encoding (RFC 3986), the project's one encoder and one decoder: request paths and query values going
//! to the carrier, and the parts of a `postgres://` URL coming from the operator.

/// Percent-encodes one path segment or query value: everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes. A `%` not followed by two hex digits, or escapes that do not make UTF-8, are an error
/// that says what is wrong (never the text itself: it may be a password).
pub fn decode(s: &str) -> Result<String, String> {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (Some(high), Some(low)) => out.push((high << 4 | low) as u8),
            _ => {
                return Err(format!(
                    "a '%' at byte {} is not followed by two hex digits",
                    i + 1
                ));
            }
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| "its percent escapes do not decode to UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_undoes_encode() {
        for s in ["", "plain", "B 1/x", "+4915112345678", "é€😀", "%", "a%2"] {
            assert_eq!(decode(&encode(s)).as_deref(), Ok(s), "{s:?}");
        }
        assert_eq!(decode("B%201%2fx").as_deref(), Ok("B 1/x"));
    }

    #[test]
    fn malformed_escapes_are_errors_never_panics() {
        for bad in ["100%", "%zz", "%1é", "%é1", "a%", "%2", "%C3%28", "%FF"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert!(decode("%1é").unwrap_err().contains("byte 1"));
    }
}
