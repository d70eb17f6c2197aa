//! Keeps secrets and personal data out of logs: the carrier token as a type that cannot print itself, and the
//! masking of phone numbers.

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
}
