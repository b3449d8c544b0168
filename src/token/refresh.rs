//! Refresh tokens: format, parsing, rotation and hashing.
//!
//! A token reads `v1.<user id>.<session id>.<secret>`: the ids let the server find the
//! user's store slot and the session without a lookup, the 256-bit secret is what
//! proves possession. The store keeps only `hash(secret)`, a BLAKE3 hash keyed with a
//! server secret. The successor of a secret is derived, not drawn:
//! `next = keyed-BLAKE3(rotation key, secret)`, so a replay within the grace window
//! recomputes the very successor the first rotation issued and the session never forks.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::ids::{SessionId, UserId};

const PREFIX: &str = "v1";

/// Length of the random part of a refresh token, in bytes.
pub const SECRET_LEN: usize = 32;

/// A refresh token as presented or issued. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// Owner of the session; selects the store slot.
    pub user_id: UserId,
    /// The session this token belongs to.
    pub session_id: SessionId,
    secret: [u8; SECRET_LEN],
}

/// Why a presented string is not a refresh token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed refresh token")]
pub struct MalformedToken;

/// The stored form of a refresh token: a keyed BLAKE3 hash of its secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash([redacted])")
    }
}

impl RefreshToken {
    /// A token for a new session, with a secret from the system's CSPRNG.
    pub fn generate(
        rng: &ring::rand::SystemRandom,
        user_id: UserId,
        session_id: SessionId,
    ) -> Self {
        let secret: [u8; SECRET_LEN] = ring::rand::generate(rng)
            .expect("the system random source does not fail once initialised")
            .expose();
        Self {
            user_id,
            session_id,
            secret,
        }
    }

    /// Parses the wire form.
    ///
    /// # Errors
    /// [`MalformedToken`] unless the string has the four dot-separated parts with the
    /// right prefix and the exact encoded lengths; nothing longer is decoded.
    pub fn parse(raw: &str) -> Result<Self, MalformedToken> {
        if raw.len() > 128 {
            return Err(MalformedToken);
        }
        let mut parts = raw.split('.');
        let (Some(PREFIX), Some(user), Some(session), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(MalformedToken);
        };
        let user_id = UserId::parse(user).ok_or(MalformedToken)?;
        let session_id = SessionId::parse(session).ok_or(MalformedToken)?;
        let mut bytes = [0u8; SECRET_LEN];
        match B64.decode_slice(secret, &mut bytes) {
            Ok(SECRET_LEN) if secret.len() == 43 => {}
            _ => return Err(MalformedToken),
        }
        Ok(Self {
            user_id,
            session_id,
            secret: bytes,
        })
    }

    /// The wire form; only ever placed in a response body or cookie.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(92);
        out.push_str(PREFIX);
        out.push('.');
        out.push_str(self.user_id.as_str());
        out.push('.');
        out.push_str(self.session_id.as_str());
        out.push('.');
        B64.encode_string(self.secret, &mut out);
        out
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Hashes and rotates refresh tokens with keys derived from the server's token secret.
#[derive(Clone)]
pub struct TokenHasher {
    hash_key: [u8; 32],
    rotate_key: [u8; 32],
}

impl fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHasher([redacted])")
    }
}

impl TokenHasher {
    /// Derives the hashing and rotation keys from the keyring's token secret.
    pub fn new(token_secret: &[u8]) -> Self {
        Self {
            hash_key: blake3::derive_key("tokend 2026-12 refresh token storage hash", token_secret),
            rotate_key: blake3::derive_key("tokend 2026-12 refresh token rotation", token_secret),
        }
    }

    /// The stored hash of a token.
    pub fn hash(&self, token: &RefreshToken) -> TokenHash {
        TokenHash(*blake3::keyed_hash(&self.hash_key, &token.secret).as_bytes())
    }

    /// The token that replaces `token` when it is rotated.
    pub fn successor(&self, token: &RefreshToken) -> RefreshToken {
        RefreshToken {
            user_id: token.user_id.clone(),
            session_id: token.session_id.clone(),
            secret: *blake3::keyed_hash(&self.rotate_key, &token.secret).as_bytes(),
        }
    }

    /// Whether `token` is an earlier link of the chain whose current hash is
    /// `current`, between 2 and `max_steps` rotations back. Such a token was genuinely
    /// issued and has been rotated away: presenting it is reuse. A forged token with a
    /// valid session id never matches, so it cannot be used to revoke a session.
    pub fn is_stale_ancestor(
        &self,
        token: &RefreshToken,
        current: &TokenHash,
        max_steps: u32,
    ) -> bool {
        let mut link = self.successor(token);
        for _ in 1..max_steps {
            link = self.successor(&link);
            if self.hash(&link) == *current {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> RefreshToken {
        let rng = ring::rand::SystemRandom::new();
        RefreshToken::generate(&rng, UserId::generate(&rng), SessionId::generate(&rng))
    }

    #[test]
    fn encoded_tokens_parse_back() {
        let t = token();
        let wire = t.encode();
        assert!(wire.starts_with("v1."));
        assert!(
            wire.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert_eq!(RefreshToken::parse(&wire), Ok(t));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let wire = token().encode();
        let cut = &wire[..wire.len() - 1];
        let extra = format!("{wire}A");
        let swapped = wire.replacen("v1", "v2", 1);
        let five = format!("{wire}.x");
        for bad in [
            "",
            "v1",
            "v1...",
            cut,
            extra.as_str(),
            swapped.as_str(),
            five.as_str(),
            "eyJhbGciOiJFZERTQSJ9.e30.sig",
        ] {
            assert_eq!(RefreshToken::parse(bad), Err(MalformedToken), "{bad:?}");
        }
    }

    #[test]
    fn successor_is_deterministic_and_differs() {
        let hasher = TokenHasher::new(b"server secret for tests, 32 bytes");
        let t = token();
        let a = hasher.successor(&t);
        assert_eq!(a, hasher.successor(&t));
        assert_ne!(a, t);
        assert_ne!(hasher.hash(&a), hasher.hash(&t));
        let other = TokenHasher::new(b"another server secret, 32 bytes!");
        assert_ne!(other.successor(&t), a);
        assert_ne!(other.hash(&t), hasher.hash(&t));
    }

    #[test]
    fn stale_ancestors_are_recognised_and_forgeries_are_not() {
        let hasher = TokenHasher::new(b"server secret for tests, 32 bytes");
        let first = token();
        let mut current = first.clone();
        for _ in 0..5 {
            current = hasher.successor(&current);
        }
        let current_hash = hasher.hash(&current);
        assert!(hasher.is_stale_ancestor(&first, &current_hash, 10));
        assert!(!hasher.is_stale_ancestor(&first, &current_hash, 4));
        let forged = RefreshToken {
            secret: [7; SECRET_LEN],
            ..first
        };
        assert!(!hasher.is_stale_ancestor(&forged, &current_hash, 1000));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_input_never_panics(input in ".{0,200}") {
            if let Ok(t) = RefreshToken::parse(&input) {
                proptest::prop_assert_eq!(t.encode(), input);
            }
        }

        #[test]
        fn parsing_token_shaped_input_accepts_only_canonical_tokens(
            user in "[A-Za-z0-9_-]{20,24}",
            session in "[A-Za-z0-9_-]{20,24}",
            secret in "[A-Za-z0-9_=.-]{40,46}",
        ) {
            let raw = format!("v1.{user}.{session}.{secret}");
            if let Ok(t) = RefreshToken::parse(&raw) {
                proptest::prop_assert_eq!(t.encode(), raw);
            }
        }
    }

    #[test]
    fn debug_redacts_the_secret() {
        let t = token();
        let wire = t.encode();
        let secret_part = wire.rsplit('.').next().expect("four parts");
        assert!(!format!("{t:?}").contains(secret_part));
    }
}
