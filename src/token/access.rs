//! Access tokens: compact JWS with `alg: EdDSA`, signed through ring with the cached
//! key pair, and verified with jsonwebtoken (an implementation we did not write) against
//! the keyring's public keys, chosen by `kid`.

use std::collections::HashMap;
use std::sync::Arc;

use super::signing::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::keyring::Keyring;
use crate::ids::{SessionId, UserId};

/// Seconds of clock skew tolerated when checking `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;

/// The claims of an access token, as issued and as verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer (`TOKEND_ISSUER`).
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// Audience (`TOKEND_AUDIENCE`).
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// The session the token was issued for.
    pub sid: String,
}

#[derive(Serialize)]
struct ClaimsRef<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    sid: &'a str,
}

/// Signs access tokens with the keyring's signing key.
pub struct AccessSigner {
    keyring: Arc<Keyring>,
    /// `base64url(header) + "."`, encoded once: the header never changes.
    header_prefix: String,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl AccessSigner {
    /// A signer for tokens of `ttl_secs` seconds.
    pub fn new(keyring: Arc<Keyring>, issuer: &str, audience: &str, ttl_secs: u64) -> Self {
        let header = serde_json::json!({
            "alg": "EdDSA",
            "typ": "JWT",
            "kid": keyring.signing_key().kid,
        });
        let mut header_prefix = B64.encode(header.to_string());
        header_prefix.push('.');
        Self {
            keyring,
            header_prefix,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        }
    }

    /// Lifetime of issued tokens, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Signs a token for `user` and `session`, issued at `now_secs`.
    pub fn sign(&self, user: &UserId, session: &SessionId, jti: &str, now_secs: u64) -> String {
        let claims = ClaimsRef {
            iss: &self.issuer,
            sub: user.as_str(),
            aud: &self.audience,
            iat: now_secs,
            exp: now_secs + self.ttl_secs,
            jti,
            sid: session.as_str(),
        };
        let json = serde_json::to_vec(&claims).expect("claims of strings and integers serialize");
        let mut token = String::with_capacity(self.header_prefix.len() + json.len() * 4 / 3 + 90);
        token.push_str(&self.header_prefix);
        B64.encode_string(&json, &mut token);
        let signature = self.keyring.signing_key().pair.sign(token.as_bytes());
        token.push('.');
        B64.encode_string(signature.as_ref(), &mut token);
        token
    }
}

/// Why an access token was refused; clients only ever see `invalid_token`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessTokenError {
    /// Not a compact JWS, bad encoding, or bad JSON.
    #[error("malformed token")]
    Malformed,
    /// Header names an algorithm other than EdDSA.
    #[error("algorithm not allowed")]
    Algorithm,
    /// Header has no `kid`, or one not in our keyring.
    #[error("unknown key id")]
    UnknownKey,
    /// Signature does not verify.
    #[error("bad signature")]
    Signature,
    /// Past `exp` (beyond the leeway).
    #[error("expired")]
    Expired,
    /// Issuer, audience, `nbf` or `iat` check failed, or a claim is missing.
    #[error("claims rejected")]
    Claims,
}

impl AccessTokenError {
    /// Short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_kid",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::Claims => "claims",
        }
    }
}

/// Verifies access tokens against the keyring's public keys.
pub struct AccessVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

/// Longest access token accepted for verification, in bytes.
const MAX_TOKEN_LEN: usize = 4096;

impl AccessVerifier {
    /// A verifier for tokens from `issuer` to `audience`, signed by any keyring key.
    pub fn new(keyring: &Keyring, issuer: &str, audience: &str) -> Self {
        let keys = keyring
            .keys()
            .iter()
            .map(|k| {
                (
                    k.kid.clone(),
                    DecodingKey::from_ed_der(k.pair.public_key().as_ref()),
                )
            })
            .collect();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        Self { keys, validation }
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    /// [`AccessTokenError`] for anything but a well-formed EdDSA token from a keyring
    /// key with valid issuer, audience and times. Keys named inside the token (`jwk`,
    /// `jku`, `x5u`) are never used.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, AccessTokenError> {
        use jsonwebtoken::errors::ErrorKind;

        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(AccessTokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AccessTokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AccessTokenError::Algorithm);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(AccessTokenError::UnknownKey)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => AccessTokenError::Signature,
                    ErrorKind::ExpiredSignature => AccessTokenError::Expired,
                    ErrorKind::InvalidAlgorithm => AccessTokenError::Algorithm,
                    ErrorKind::InvalidToken
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_) => AccessTokenError::Malformed,
                    _ => AccessTokenError::Claims,
                }
            })?;
        if data.claims.iat > now_secs + LEEWAY_SECS {
            return Err(AccessTokenError::Claims);
        }
        Ok(data.claims)
    }
}

/// The JWKS document, serialized once, with its entity tag.
pub struct Jwks {
    /// The JSON body.
    pub body: bytes::Bytes,
    /// Strong entity tag, quoted.
    pub etag: String,
}

impl Jwks {
    /// Builds the JWKS of every keyring key.
    pub fn new(keyring: &Keyring) -> Self {
        let keys: Vec<_> = keyring
            .keys()
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": B64.encode(k.pair.public_key().as_ref()),
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "keys": keys }))
            .expect("a JSON value serializes");
        let etag = format!("\"{}\"", &blake3::hash(&body).to_hex()[..32]);
        Self {
            body: body.into(),
            etag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Arc<Keyring>, AccessSigner, AccessVerifier) {
        let keyring = Arc::new(Keyring::ephemeral(&ring::rand::SystemRandom::new()));
        let signer = AccessSigner::new(keyring.clone(), "https://issuer", "api", 600);
        let verifier = AccessVerifier::new(&keyring, "https://issuer", "api");
        (keyring, signer, verifier)
    }

    fn ids() -> (UserId, SessionId) {
        let rng = ring::rand::SystemRandom::new();
        (UserId::generate(&rng), SessionId::generate(&rng))
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn signed_tokens_verify_with_all_claims() {
        let (keyring, signer, verifier) = setup();
        let (user, session) = ids();
        let token = signer.sign(&user, &session, "jti-1", now());
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(
            header.kid.as_deref(),
            Some(keyring.signing_key().kid.as_str())
        );
        let claims = verifier.verify(&token, now()).expect("valid");
        assert_eq!(claims.sub, user.as_str());
        assert_eq!(claims.sid, session.as_str());
        assert_eq!(claims.exp - claims.iat, 600);
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            ("https://issuer", "api")
        );
    }

    #[test]
    fn tokens_from_another_keyring_or_audience_fail() {
        let (_, signer, _) = setup();
        let (_, _, other_verifier) = setup();
        let (user, session) = ids();
        let token = signer.sign(&user, &session, "j", now());
        assert_eq!(
            other_verifier.verify(&token, now()),
            Err(AccessTokenError::UnknownKey)
        );

        let (keyring, signer, _) = setup();
        let wrong_aud = AccessVerifier::new(&keyring, "https://issuer", "other");
        let token = signer.sign(&user, &session, "j", now());
        assert_eq!(
            wrong_aud.verify(&token, now()),
            Err(AccessTokenError::Claims)
        );
    }

    #[test]
    fn expired_and_future_tokens_fail() {
        let (_, signer, verifier) = setup();
        let (user, session) = ids();
        let old = signer.sign(&user, &session, "j", now() - 600 - LEEWAY_SECS - 5);
        assert_eq!(verifier.verify(&old, now()), Err(AccessTokenError::Expired));
        let future = signer.sign(&user, &session, "j", now() + 3600);
        assert_eq!(
            verifier.verify(&future, now()),
            Err(AccessTokenError::Claims)
        );
    }

    #[test]
    fn tampered_and_broken_tokens_fail() {
        let (_, signer, verifier) = setup();
        let (user, session) = ids();
        let token = signer.sign(&user, &session, "j", now());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = B64.encode(br#"{"sub":"someone-else"}"#);
        parts[1] = &forged_claims;
        assert!(verifier.verify(&parts.join("."), now()).is_err());

        let none_header = B64.encode(br#"{"alg":"none","kid":"x"}"#);
        let alg_none = format!("{none_header}.{}.", B64.encode(b"{}"));
        assert!(verifier.verify(&alg_none, now()).is_err());
        let huge = "a".repeat(10_000);
        for bad in ["", "a.b", "a.b.c.d", "!!!.@@@.###", huge.as_str()] {
            assert!(verifier.verify(bad, now()).is_err(), "{bad:?}");
        }
    }

    fn sign_raw(
        pair: &super::super::signing::Ed25519KeyPair,
        header: &str,
        claims: &str,
    ) -> String {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let sig = pair.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    fn claims_json(now: u64, extra: &str) -> String {
        format!(
            r#"{{"iss":"https://issuer","sub":"u","aud":"api","iat":{now},"exp":{},"jti":"j","sid":"s"{extra}}}"#,
            now + 600
        )
    }

    #[test]
    fn keys_named_inside_a_token_are_never_used() {
        let (keyring, _, verifier) = setup();
        let rng = ring::rand::SystemRandom::new();
        let attacker = Keyring::ephemeral(&rng);
        let attacker_pair = &attacker.signing_key().pair;
        let x = B64.encode(attacker_pair.public_key().as_ref());
        let kid = &keyring.signing_key().kid;
        for header in [
            format!(
                r#"{{"alg":"EdDSA","kid":"{kid}","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}}}"#
            ),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","jku":"http://127.0.0.1:9/jwks.json"}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","x5u":"http://127.0.0.1:9/cert.pem"}}"#),
        ] {
            let token = sign_raw(attacker_pair, &header, &claims_json(now(), ""));
            assert_eq!(
                verifier.verify(&token, now()),
                Err(AccessTokenError::Signature),
                "{header}"
            );
        }
        let token = sign_raw(
            attacker_pair,
            &format!(r#"{{"alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}}}"#),
            &claims_json(now(), ""),
        );
        assert_eq!(
            verifier.verify(&token, now()),
            Err(AccessTokenError::UnknownKey)
        );
    }

    #[test]
    fn not_before_and_algorithms_are_enforced() {
        let (keyring, _, verifier) = setup();
        let pair = &keyring.signing_key().pair;
        let kid = &keyring.signing_key().kid;
        let header = format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#);
        let ok = sign_raw(pair, &header, &claims_json(now(), ""));
        assert!(verifier.verify(&ok, now()).is_ok());
        let early = sign_raw(
            pair,
            &header,
            &claims_json(now(), &format!(r#","nbf":{}"#, now() + 600)),
        );
        assert_eq!(
            verifier.verify(&early, now()),
            Err(AccessTokenError::Claims)
        );
        let within_leeway = sign_raw(
            pair,
            &header,
            &claims_json(now(), &format!(r#","nbf":{}"#, now() + 10)),
        );
        assert!(verifier.verify(&within_leeway, now()).is_ok());
        for alg in ["HS256", "RS256", "ES256", "none"] {
            let h = format!(r#"{{"alg":"{alg}","kid":"{kid}"}}"#);
            let token = sign_raw(pair, &h, &claims_json(now(), ""));
            assert!(verifier.verify(&token, now()).is_err(), "{alg}");
        }
        let no_kid = sign_raw(pair, r#"{"alg":"EdDSA"}"#, &claims_json(now(), ""));
        assert_eq!(
            verifier.verify(&no_kid, now()),
            Err(AccessTokenError::UnknownKey)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics_or_verifies(input in ".{0,600}") {
            let (_, _, verifier) = setup_static();
            proptest::prop_assert!(verifier.verify(&input, now()).is_err());
        }

        #[test]
        fn mutated_tokens_never_verify(pos in 0usize..400, byte in proptest::num::u8::ANY) {
            let (_, signer, verifier) = setup_static();
            let (user, session) = ids();
            let token = signer.sign(&user, &session, "jti", now());
            let mut bytes = token.clone().into_bytes();
            let at = pos % bytes.len();
            proptest::prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            if let Ok(mutated) = String::from_utf8(bytes) {
                // Changing only the unused trailing bits of the last base64 character
                // may decode to the same signature; anything else must fail.
                if let Ok(claims) = verifier.verify(&mutated, now()) {
                    proptest::prop_assert_eq!(claims.sub, user.as_str().to_owned());
                    proptest::prop_assert!(at + 1 == token.len());
                }
            }
        }
    }

    fn setup_static() -> &'static (Arc<Keyring>, AccessSigner, AccessVerifier) {
        static SETUP: std::sync::OnceLock<(Arc<Keyring>, AccessSigner, AccessVerifier)> =
            std::sync::OnceLock::new();
        SETUP.get_or_init(setup)
    }

    #[test]
    fn jwks_lists_every_key_with_a_stable_etag() {
        let (keyring, _, _) = setup();
        let jwks = Jwks::new(&keyring);
        let doc: serde_json::Value = serde_json::from_slice(&jwks.body).expect("json");
        assert_eq!(doc["keys"][0]["kid"], keyring.signing_key().kid.as_str());
        assert_eq!(doc["keys"][0]["crv"], "Ed25519");
        assert_eq!(jwks.etag, Jwks::new(&keyring).etag);
    }
}
