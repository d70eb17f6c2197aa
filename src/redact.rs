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

/// This many digits or more, in one run or in groups joined by separators, are taken for a phone number in
/// outside text: E.164 numbers have 8 to 15 digits with the country code, local ones 7 or more.
const PHONE_DIGITS: usize = 7;

/// Masks every phone number in text that comes from outside the poller (a carrier's status word, error text or
/// body, a listing entry, a request path), as [`mask_phone`] does: of seven or more digits, in one run or in
/// groups joined by one or two separators (space, `-`, `.`, `(`, `)`, no-break space, or their percent escapes),
/// only the first two and last three digits are left. So every spelling is caught: `+4915112345678`,
/// `4915112345678`, `%2B4915112345678`, `+49 151 1234 5678`, `(0151) 1234-5678`, `%2B49%20151%2012345678`.
/// Dates (`2025-12-01`), IPv4 addresses and UUIDs are not joined into numbers (a run of seven digits within
/// one is still masked); shorter numbers (error codes, HTTP statuses) are kept. Masking twice changes nothing.
pub fn mask_text(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    if bytes.iter().filter(|b| b.is_ascii_digit()).count() < PHONE_DIGITS {
        return Cow::Borrowed(text);
    }
    let mut masked = bytes.to_vec();
    // Read twice: with escaped separators (`%20`) joining groups, and with every `%` standing alone, so that the
    // digits of an escape count where a number follows it (`%2000000`).
    for escapes in [true, false] {
        mask_numbers(&tokens(bytes, escapes), &mut masked);
    }
    // Only ASCII digits were replaced, each by an ASCII character: still UTF-8.
    match String::from_utf8(masked) {
        Ok(masked) => Cow::Owned(masked),
        Err(_) => Cow::Owned("(text not shown)".to_string()),
    }
}

/// [`mask_text`] of an owned text, which is given back as it is when nothing is masked (no new allocation: the
/// carrier seam cleans every word of every report).
pub fn mask_owned(text: String) -> String {
    match mask_text(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(masked) => masked,
    }
}

/// An error as shown in logs, stored errors and on stderr: with its causes, and every number masked (a
/// database's error may quote the row it failed on, PostgreSQL's "Failing row contains (...)").
pub fn error_text(e: &anyhow::Error) -> String {
    mask_owned(format!("{e:#}"))
}

/// Masks, in `masked`, the digits of every number that `tokens` (of the same text) hold.
fn mask_numbers(tokens: &[Token], masked: &mut [u8]) {
    let mut i = 0;
    while i < tokens.len() {
        let first = match tokens[i] {
            Token::Digits(group) => group,
            Token::Kept(range) => {
                mask_runs(masked, range);
                i += 1;
                continue;
            }
            Token::Join | Token::Other => {
                i += 1;
                continue;
            }
        };
        // A chain: digit groups with one or two separators between each and the next.
        let mut groups = vec![first];
        let mut next = i + 1;
        loop {
            let joins = tokens[next..]
                .iter()
                .take_while(|t| matches!(t, Token::Join))
                .count();
            match tokens.get(next + joins) {
                Some(Token::Digits(group)) if (1..=2).contains(&joins) => {
                    groups.push(*group);
                    next += joins + 1;
                }
                _ => break,
            }
        }
        let digits: usize = groups.iter().map(|(start, end)| end - start).sum();
        if digits >= PHONE_DIGITS {
            let positions = groups.iter().flat_map(|&(start, end)| start..end);
            for (n, at) in positions.enumerate() {
                if n >= 2 && n < digits - 3 {
                    masked[at] = b'*';
                }
            }
        }
        i = next;
    }
}

/// A piece of outside text, for [`mask_text`].
#[derive(Clone, Copy)]
enum Token {
    /// A run of digits (or of digits masked already): its byte range.
    Digits((usize, usize)),
    /// A separator that may stand inside a written number.
    Join,
    /// A date, an IPv4 address or a UUID: its byte range, never joined into a number.
    Kept((usize, usize)),
    /// Anything else: it ends a number.
    Other,
}

/// The pieces of `bytes`; with `escapes`, an escaped separator (`%20`) is one.
fn tokens(bytes: &[u8], escapes: bool) -> Vec<Token> {
    let joins = |b: u8| matches!(b, b' ' | b'-' | b'.' | b'(' | b')');
    let hex = |b: u8| (b as char).to_digit(16);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if (i == 0 || !is_word(bytes[i - 1]))
            && let Some(len) = kept_len(&bytes[i..])
        {
            tokens.push(Token::Kept((i, i + len)));
            i += len;
            continue;
        }
        let b = bytes[i];
        let (token, len) = if digit(b) {
            let len = bytes[i..].iter().take_while(|b| digit(**b)).count();
            (Token::Digits((i, i + len)), len)
        } else if joins(b) {
            (Token::Join, 1)
        } else if bytes[i..].starts_with(&[0xC2, 0xA0]) {
            (Token::Join, 2)
        } else if let (true, b'%', Some(high), Some(low)) = (
            escapes,
            b,
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            let escaped = (high << 4 | low) as u8;
            (
                if joins(escaped) {
                    Token::Join
                } else {
                    Token::Other
                },
                3,
            )
        } else {
            (Token::Other, 1)
        };
        tokens.push(token);
        i += len;
    }
    tokens
}

/// A digit, or one masked already (so that masking twice changes nothing).
fn digit(b: u8) -> bool {
    b.is_ascii_digit() || b == b'*'
}

/// Whether a byte may continue a word, an address or an id (so that what follows it is not one of its own).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// The length of a date (`2025-12-01`), an IPv4 address or a UUID at the start of `bytes`, when one stands
/// there whole (not followed by more of a word).
fn kept_len(bytes: &[u8]) -> Option<usize> {
    let digits = |from: usize, to: usize| {
        bytes
            .get(from..to)
            .is_some_and(|b| b.iter().all(|b| digit(*b)))
    };
    let at = |i: usize, c: u8| bytes.get(i) == Some(&c);
    let ends = |len: usize| !bytes.get(len).copied().is_some_and(is_word);
    if digits(0, 4) && at(4, b'-') && digits(5, 7) && at(7, b'-') && digits(8, 10) {
        // A time may follow a date (`T09:00:00`): only more digits would make it something else.
        return (!bytes.get(10).is_some_and(|b| digit(*b))).then_some(10);
    }
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let uuid = (0..36).all(|i| {
        bytes.get(i).is_some_and(|b| {
            if DASHES.contains(&i) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit() || *b == b'*'
            }
        })
    });
    if uuid && ends(36) {
        return Some(36);
    }
    // IPv4: four groups of one to three digits joined by dots.
    let mut len = 0;
    for group in 0..4 {
        if group > 0 {
            if !at(len, b'.') {
                return None;
            }
            len += 1;
        }
        let n = bytes
            .get(len..)
            .unwrap_or_default()
            .iter()
            .take(4)
            .take_while(|b| digit(**b))
            .count();
        if !(1..=3).contains(&n) {
            return None;
        }
        len += n;
    }
    ends(len).then_some(len)
}

/// Masks the runs of seven digits or more within `range` (a date, an address or a UUID).
fn mask_runs(bytes: &mut [u8], (start, end): (usize, usize)) {
    let mut at = start;
    while at < end {
        let len = bytes[at..end].iter().take_while(|b| digit(**b)).count();
        if len >= PHONE_DIGITS {
            for b in &mut bytes[at + 2..at + len - 3] {
                *b = b'*';
            }
        }
        at += len.max(1);
    }
}

/// A URL with its password replaced by `***` (in the user part and in a `password=` parameter), for errors and
/// logs: `--db`, `--pushgateway`.
pub fn url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let (start, end) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
            out.replace_range(start..end, "***");
        }
    }
    if let Some(at) = out.find("password=") {
        let start = at + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
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
            ("+49 151 1234 5678", "+49 *** **** *678"),
            ("+49-151-1234-5678", "+49-***-****-*678"),
            ("(0151) 1234-5678", "(01**) ****-*678"),
            ("+49\u{a0}151\u{a0}12345678", "+49\u{a0}***\u{a0}*****678"),
            ("%2B49%20151%2012345678", "%2B49%20***%20*****678"),
            ("01.23.45.67.89", "01.**.**.*7.89"),
            (
                "at 2025-12-01 09:00:00 +0000",
                "at 2025-12-01 09:00:00 +0000",
            ),
            ("from 192.168.100.200:443", "from 192.168.100.200:443"),
            (
                "id 40000000-0000-4000-8000-000000000001",
                "id 40***000-0000-4000-8000-00*******001",
            ),
            (
                "call 4915112345678 or 0151 1234 5678.",
                "call 49********678 or 01** **** *678.",
            ),
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
            "Fri, 24 May 2019 17:18:28 +0000",
            "HTTP/1.1 503",
            "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        ] {
            assert_eq!(mask_text(kept), kept);
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
