//! Email addresses as account identifiers: normalised (Unicode NFKC, then lower case)
//! so that visually identical spellings are one account, and checked for a plausible
//! shape. Deliverability is not checked.

use unicode_normalization::UnicodeNormalization;

/// Longest accepted address, in bytes after normalisation (RFC 5321 path limit).
const MAX_LEN: usize = 254;

/// A normalised email address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

/// Why an address was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("email must look like name@example.com")]
pub struct InvalidEmail;

impl Email {
    /// Normalises and validates an address.
    ///
    /// # Errors
    /// [`InvalidEmail`] for an empty or over-long address, one without exactly one `@`
    /// between a non-empty local part and a dotted domain, or one containing spaces or
    /// control characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let normalised: String = raw.trim().nfkc().collect::<String>().to_lowercase();
        if normalised.is_empty() || normalised.len() > MAX_LEN {
            return Err(InvalidEmail);
        }
        if normalised
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidEmail);
        }
        let (local, domain) = normalised.split_once('@').ok_or(InvalidEmail)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty() || !domain_ok {
            return Err(InvalidEmail);
        }
        Ok(Email(normalised))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_width_variants_are_one_address() {
        let plain = Email::parse("alice@example.com").expect("valid");
        assert_eq!(Email::parse("Alice@Example.COM").expect("valid"), plain);
        // Full-width letters normalise to ASCII under NFKC.
        assert_eq!(
            Email::parse("ａｌｉｃｅ@example.com").expect("valid"),
            plain
        );
        assert_eq!(Email::parse("  alice@example.com ").expect("valid"), plain);
    }

    #[test]
    fn composed_and_decomposed_spellings_match() {
        let nfc = Email::parse("jos\u{e9}@example.com").expect("valid");
        let nfd = Email::parse("jose\u{301}@example.com").expect("valid");
        assert_eq!(nfc, nfd);
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a@b@example.com",
            "al ice@example.com",
            "alice@example..com",
            "alice@.example.com",
        ] {
            assert_eq!(Email::parse(bad), Err(InvalidEmail), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(InvalidEmail));
    }
}
