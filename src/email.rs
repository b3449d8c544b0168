//! Email addresses as account identifiers: normalised (Unicode NFKC, lower case, NFKC
//! again) so that visually identical spellings are one account, and checked for a
//! plausible shape. Deliverability is not checked.

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
    /// Normalises and validates an address: trims it, applies Unicode NFKC, lower-cases
    /// it, and applies NFKC again, because lower-casing can leave a letter and its
    /// combining mark that NFKC composes (`J` + caron has no precomposed form, `j` +
    /// caron does: `ǰ`). Normalising an already normalised address changes nothing.
    ///
    /// # Errors
    /// [`InvalidEmail`] for an empty or over-long address, one without exactly one `@`
    /// between a non-empty local part and a dotted domain, or one containing spaces or
    /// control characters.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokend::email::{Email, InvalidEmail};
    ///
    /// let email = Email::parse("  Ａlice@Example.COM ")?;
    /// assert_eq!(email.as_str(), "alice@example.com");
    /// // A capital J with a combining caron is the address spelt with `ǰ`.
    /// assert_eq!(Email::parse("J\u{30C}o@example.com")?.as_str(), "\u{1F0}o@example.com");
    /// assert_eq!(Email::parse("alice@localhost"), Err(InvalidEmail));
    /// # Ok::<(), InvalidEmail>(())
    /// ```
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let lowered = raw.trim().nfkc().collect::<String>().to_lowercase();
        let normalised: String = lowered.nfkc().collect();
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
    fn letters_that_compose_only_in_lower_case_match_their_precomposed_form() {
        // J, W, Y, T and H with these marks have no precomposed capital, so NFKC keeps
        // them apart until lower-casing makes a pair that NFKC composes.
        for (decomposed, precomposed) in [
            ("J\u{30C}ohn@example.com", "\u{1F0}ohn@example.com"),
            ("W\u{30A}@example.com", "\u{1E98}@example.com"),
            ("Y\u{30A}@example.com", "\u{1E99}@example.com"),
            ("T\u{308}@example.com", "\u{1E97}@example.com"),
            ("H\u{331}@example.com", "\u{1E96}@example.com"),
        ] {
            let a = Email::parse(decomposed).expect("valid");
            let b = Email::parse(precomposed).expect("valid");
            assert_eq!(a, b, "{decomposed:?}");
            assert_eq!(
                Email::parse(a.as_str()).expect("valid"),
                a,
                "{decomposed:?}"
            );
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        // Capital letters, dotted İ, capital ẞ, the Kelvin sign and Σ, bare and with
        // combining marks: the normalised form is a fixed point.
        let marks = [
            '\u{300}', '\u{301}', '\u{307}', '\u{308}', '\u{30A}', '\u{30C}', '\u{331}',
        ];
        for letter in ('A'..='Z').chain(['\u{130}', '\u{1E9E}', '\u{212A}', '\u{3A3}']) {
            for mark in std::iter::once(None).chain(marks.map(Some)) {
                let raw: String = std::iter::once(letter).chain(mark).collect();
                let once = Email::parse(&format!("{raw}x@example.com")).expect("valid");
                let twice = Email::parse(once.as_str()).expect("still valid");
                assert_eq!(once, twice, "{raw:?}");
            }
        }
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
