//! Keeps secrets and personal data out of logs and stored errors: the carrier token as a type that cannot print
//! itself, the masking of phone numbers, of any text that comes from outside (a carrier's words, a request path),
//! and the label that names a request without its number or secrets.

use std::borrow::Cow;
use std::fmt;

/// The carrier's API token. `Debug` and `Display` print `(redacted)`, so a config can be logged safely; the only
/// way to the value is [`CarrierToken::expose`], used where the `Authorization` header is built.
#[derive(Clone, PartialEq, Eq)]
pub struct CarrierToken(String);

impl CarrierToken {
    /// Trims surrounding whitespace (a token file usually ends with a newline); `None` when nothing is left.
    pub fn new(raw: &str) -> Option<CarrierToken> {
        let token = raw.trim();
        (!token.is_empty()).then(|| CarrierToken(token.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CarrierToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for CarrierToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// Masks a phone number for logs: keeps a leading `+` and the country code's first two digits, and the last
/// three digits, so an engineer can still tell numbers apart without the log holding them.
/// `+4915112345678` becomes `+49********678`; numbers of six digits or fewer are masked whole.
pub fn mask_phone(phone: &str) -> String {
    let (plus, digits) = match phone.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", phone),
    };
    let chars: Vec<char> = digits.chars().collect();
    if chars.len() <= 6 {
        return format!("{plus}{}", "*".repeat(chars.len()));
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{plus}{head}{}{tail}", "*".repeat(chars.len() - 5))
}

/// Runs of this many digits or more are taken for phone numbers in outside text: E.164 numbers have 8 to 15
/// digits with the country code, local ones 7 or more.
const PHONE_DIGITS: usize = 7;

/// Masks every run of seven or more digits in text that comes from outside the poller (a carrier's status
/// word, error text or body, a listing entry, a request path), as [`mask_phone`] does: whatever the spelling of
/// a number (`+4915112345678`, `4915112345678`, `%2B4915112345678`, in JSON or a path), only its first two and
/// last three digits are left. Shorter numbers (error codes, HTTP statuses, dates) are kept. Masking twice
/// changes nothing.
pub fn mask_text(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let long_run = bytes
        .split(|b| !b.is_ascii_digit())
        .any(|run| run.len() >= PHONE_DIGITS);
    if !long_run {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let run = &rest[..len];
        if len >= PHONE_DIGITS {
            out.push_str(&run[..2]);
            out.extend(std::iter::repeat_n('*', len - 5));
            out.push_str(&run[len - 3..]);
        } else {
            out.push_str(run);
        }
        rest = &rest[len..];
    }
    Cow::Owned(out)
}

/// Query parameters whose values are secrets wherever they appear (a signature, a key): shown as `***`.
const SECRET_PARAMETERS: [&str; 8] = [
    "token",
    "secret",
    "key",
    "password",
    "signature",
    "sig",
    "auth",
    "credential",
];

/// Whether a parameter's name says its value is a secret (`api_secret`, `token`, `X-Signature`).
fn secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_PARAMETERS.iter().any(|s| lower.contains(s))
}

/// Masks the value of every `name=value` in `text` whose name says it is a secret, up to the next `&`, space,
/// quote or bracket: for lines of the libraries, which may quote a URL or a connection string.
pub fn mask_secrets(text: &str) -> Cow<'_, str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::new();
    let mut copied = 0;
    for (at, _) in text.match_indices('=') {
        if at < copied {
            continue;
        }
        let start = text[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_name(*c))
            .last()
            .map_or(at, |(i, _)| i);
        if start == at || !secret_name(&text[start..at]) {
            continue;
        }
        let value = at + 1;
        let end = text[value..]
            .find(|c: char| c == '&' || c.is_whitespace() || "\"'<>(){}[],;".contains(c))
            .map_or(text.len(), |e| value + e);
        if end == value {
            continue;
        }
        out.push_str(&text[copied..value]);
        out.push_str("***");
        copied = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// How a request is named in logs and stored errors: its path and query as sent, with every phone number masked
/// ([`mask_text`]) and the value of every parameter that looks like a secret (`api_secret=`, `token=`) replaced
/// by `***`. The base URL is left out: it is the carrier's, known from the configuration.
pub fn request_label(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let mut label = mask_text(path).into_owned();
    if let Some(query) = query {
        label.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                label.push('&');
            }
            let (key, value) = match pair.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (pair, None),
            };
            label.push_str(&mask_text(key));
            match value {
                Some(_) if secret_name(key) => label.push_str("=***"),
                Some(value) => {
                    label.push('=');
                    label.push_str(&mask_text(value));
                }
                None => {}
            }
        }
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_prints_itself() {
        let token = CarrierToken::new("s3cr3t-value\n").unwrap();
        assert_eq!(format!("{token}"), "(redacted)");
        assert_eq!(format!("{token:?}"), "(redacted)");
        assert_eq!(format!("{:?}", Some(&token)), "Some((redacted))");
        assert_eq!(token.expose(), "s3cr3t-value");
    }

    #[test]
    fn empty_token_is_refused() {
        assert!(CarrierToken::new("").is_none());
        assert!(CarrierToken::new(" \n\t").is_none());
    }

    #[test]
    fn phone_keeps_country_code_and_last_digits() {
        assert_eq!(mask_phone("+4915112345678"), "+49********678");
        assert_eq!(mask_phone("15551234567"), "15******567");
        assert_eq!(mask_phone("+12345"), "+*****");
        assert_eq!(mask_phone(""), "");
        assert!(!mask_phone("+4915112345678").contains("12345"));
    }

    #[test]
    fn numbers_in_outside_text_are_masked_in_every_spelling() {
        for (raw, masked) in [
            ("+4915112345678", "+49********678"),
            ("4915112345678", "49********678"),
            ("%2B4915112345678", "%2B49********678"),
            (
                r#"{"to":"+4915112345678","status":"x"}"#,
                r#"{"to":"+49********678","status":"x"}"#,
            ),
            (
                "delivery_report/%2B4915112345678?x=1",
                "delivery_report/%2B49********678?x=1",
            ),
            ("1234567", "12**567"),
            ("é4915112345678é", "é49********678é"),
        ] {
            assert_eq!(mask_text(raw), masked, "{raw:?}");
            assert_eq!(mask_text(masked), masked, "masking twice: {masked:?}");
        }
        // Codes, statuses and times stay readable.
        for kept in [
            "HTTP 400",
            "error 30003",
            "2025-12-01T09:00:00Z",
            "123456",
            "",
        ] {
            assert!(matches!(mask_text(kept), Cow::Borrowed(_)), "{kept:?}");
        }
    }

    #[test]
    fn a_request_label_holds_no_number_and_no_secret() {
        assert_eq!(
            request_label("/xms/v1/plan/batches/B1/delivery_report/%2B4915112345678"),
            "/xms/v1/plan/batches/B1/delivery_report/%2B49********678"
        );
        assert_eq!(
            request_label(
                "/search/messages?api_key=abcd1234&api_secret=s3cr3t&ids=a,b&to=4915112345678"
            ),
            "/search/messages?api_key=***&api_secret=***&ids=a,b&to=49********678"
        );
        assert_eq!(request_label("/a?flag&Token=x"), "/a?flag&Token=***");
    }

    #[test]
    fn secret_values_in_library_lines_are_masked() {
        assert_eq!(
            mask_secrets(r#"location: "https://h/x?token=abc&to=1", password=pw dbname=d"#),
            r#"location: "https://h/x?token=***&to=1", password=*** dbname=d"#
        );
        assert_eq!(mask_secrets("a=b c= token="), "a=b c= token=");
        assert!(matches!(mask_secrets("é=é"), Cow::Borrowed(_)));
    }
}
