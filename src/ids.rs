//! Random identifiers for users and sessions: 128 bits from the system CSPRNG, written
//! as 22 characters of unpadded base64url, which is safe in URLs, Redis keys and the
//! refresh token format.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;

const ID_BYTES: usize = 16;
const ID_CHARS: usize = 22;

fn generate(rng: &ring::rand::SystemRandom) -> String {
    let bytes: [u8; ID_BYTES] = ring::rand::generate(rng)
        .expect("the system random source does not fail once initialised")
        .expose();
    B64.encode(bytes)
}

fn is_valid(raw: &str) -> bool {
    let mut buf = [0u8; ID_BYTES];
    raw.len() == ID_CHARS && matches!(B64.decode_slice(raw, &mut buf), Ok(ID_BYTES))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random identifier.
            pub fn generate(rng: &ring::rand::SystemRandom) -> Self {
                Self(generate(rng))
            }

            /// Accepts only the exact 22-character base64url form.
            pub fn parse(raw: &str) -> Option<Self> {
                is_valid(raw).then(|| Self(raw.to_owned()))
            }

            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a user; the `sub` claim of access tokens.
    UserId
);
id_type!(
    /// Identifies one session (one login on one device); the `sid` claim.
    SessionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_and_differ() {
        let rng = ring::rand::SystemRandom::new();
        let a = UserId::generate(&rng);
        let b = UserId::generate(&rng);
        assert_ne!(a, b);
        assert_eq!(UserId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn ids_of_the_wrong_shape_are_refused() {
        for bad in [
            "",
            "abc",
            "{u:x}aaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaa.a",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }
}
