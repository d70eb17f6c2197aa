//! The sandbox's own reading and writing of what a client sends: percent escapes and Basic credentials. Written
//! here, apart from the poller's, so that a bug in the poller's encoders fails the tests instead of being
//! agreed with.

/// Percent-encodes a path segment or query value (RFC 3986: all but unreserved characters).
pub fn encode(s: &str) -> String {
    const UNRESERVED: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    s.bytes()
        .map(|b| {
            if UNRESERVED.as_bytes().contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Percent-decodes a path segment or query value; one with a malformed escape is kept as it came.
pub fn decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = (b == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| {
                u8::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| !hex.starts_with('+'))
            });
        match escaped {
            Some(byte) => {
                out.push(byte);
                rest = &tail[2..];
            }
            None if b == b'%' => return s.to_string(),
            None => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// `Basic base64(user:secret)`, as a client must send it.
pub fn basic(user: &str, secret: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{secret}").into_bytes();
    let mut encoded = String::new();
    for group in bytes.chunks(3) {
        let bits = group
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                encoded.push(char::from(ALPHABET[(bits >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_rfc_3986() {
        assert_eq!(encode("B 1/x+é"), "B%201%2Fx%2B%C3%A9");
        assert_eq!(decode("B%201%2fx%2B%C3%A9"), "B 1/x+é");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%+1"), "%+1");
    }

    #[test]
    fn basic_credentials_as_rfc_7617() {
        // RFC 7617, section 2: Aladdin / open sesame.
        assert_eq!(
            basic("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic("a", ""), "Basic YTo=");
    }
}
