//! Token costs on the refresh path, one function at a time: access-token signing (the
//! crate's signer against the alternatives weighed for it), refresh-token generation,
//! parsing and hashing, and access-token verification.
//!
//! Run with `cargo bench --bench tokens`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::Signer as _;
use tokend::ids::{SessionId, UserId};
use tokend::token::access::{AccessSigner, AccessVerifier, Claims};
use tokend::token::keyring::{Keyring, file};
use tokend::token::refresh::{RefreshToken, TokenHasher};
use tokend::token::signing::KeyPair as _;

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "example-api";
const TTL_SECS: u64 = 600;

/// A keyring file written by the real `keys generate` code, loaded back, and the
/// PKCS#8 document of its signing key (the form jsonwebtoken's encoder takes).
struct Keys {
    keyring: Arc<Keyring>,
    pkcs8: Vec<u8>,
}

fn keys(dir: &Path) -> Keys {
    let path = dir.join("keys.json");
    let kid = file::generate(&path, false).expect("write a keyring");
    let keyring = Keyring::load(&path).expect("load the keyring");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the keyring"))
            .expect("keyring JSON");
    let entry = doc["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .expect("the signing key is listed");
    let pkcs8 = B64
        .decode(entry["pkcs8"].as_str().expect("pkcs8 text"))
        .expect("pkcs8 base64");
    Keys {
        keyring: Arc::new(keyring),
        pkcs8,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// ring writes PKCS#8 v2 documents with the 32-byte seed at a fixed offset; the
/// public keys are compared below, so a layout change cannot go unnoticed.
fn dalek_key(pkcs8: &[u8], ring_public: &[u8]) -> ed25519_dalek::SigningKey {
    let seed: [u8; 32] = pkcs8[16..48].try_into().expect("32-byte seed");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    assert_eq!(
        key.verifying_key().as_bytes().as_slice(),
        ring_public,
        "ed25519-dalek must sign with the same key as ring"
    );
    key
}

fn signing(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let Keys { keyring, pkcs8 } = keys(dir.path());
    let signer = AccessSigner::new(keyring.clone(), ISSUER, AUDIENCE, TTL_SECS);
    let rng = ring::rand::SystemRandom::new();
    let (user, session) = (UserId::generate(&rng), SessionId::generate(&rng));
    let jti = "AAAAAAAAAAAAAAAAAAAAAA";
    let now = now_secs();
    let pair = &keyring.signing_key().pair;
    let kid = keyring.signing_key().kid.clone();

    let claims = Claims {
        iss: ISSUER.to_owned(),
        sub: user.as_str().to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + TTL_SECS,
        jti: jti.to_owned(),
        sid: session.as_str().to_owned(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid);
    let encoding_key = jsonwebtoken::EncodingKey::from_ed_der(&pkcs8);

    // The signing input of a real token, for the bare-signature comparisons.
    let token = signer.sign(&user, &session, jti, now);
    let input = token.rsplit_once('.').expect("three parts").0.to_owned();
    let dalek = dalek_key(&pkcs8, pair.public_key().as_ref());

    let mut group = c.benchmark_group("sign_access_token");
    // With `--features aws-lc-rs` the crate's signer (and `pair`) use aws-lc-rs.
    let backend = tokend::token::signing::BACKEND;
    group.bench_function(format!("access_signer_{backend}_cached"), |b| {
        b.iter(|| signer.sign(black_box(&user), black_box(&session), jti, now));
    });
    group.bench_function("jsonwebtoken_encode_pkcs8", |b| {
        b.iter(|| {
            jsonwebtoken::encode(black_box(&header), black_box(&claims), &encoding_key)
                .expect("encode")
        });
    });
    group.bench_function(format!("signature_only_{backend}"), |b| {
        b.iter(|| pair.sign(black_box(input.as_bytes())));
    });
    group.bench_function("signature_only_ed25519_dalek", |b| {
        b.iter(|| dalek.sign(black_box(input.as_bytes())));
    });
    group.finish();
}

fn refresh_tokens(c: &mut Criterion) {
    let rng = ring::rand::SystemRandom::new();
    let hasher = TokenHasher::new(&[7u8; 32]);
    let token = RefreshToken::generate(&rng, UserId::generate(&rng), SessionId::generate(&rng));
    let wire = token.encode();

    let mut group = c.benchmark_group("refresh_token");
    group.bench_function("generate", |b| {
        b.iter(|| RefreshToken::generate(&rng, UserId::generate(&rng), SessionId::generate(&rng)));
    });
    group.bench_function("encode", |b| b.iter(|| black_box(&token).encode()));
    group.bench_function("parse", |b| {
        b.iter(|| RefreshToken::parse(black_box(&wire)).expect("valid token"));
    });
    group.bench_function("hash", |b| b.iter(|| hasher.hash(black_box(&token))));
    // What one refresh derives: the successor and the hashes of both tokens.
    group.bench_function("successor_and_both_hashes", |b| {
        b.iter(|| {
            let next = hasher.successor(black_box(&token));
            (hasher.hash(&token), hasher.hash(&next), next)
        });
    });
    group.finish();
}

fn verification(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let Keys { keyring, .. } = keys(dir.path());
    let signer = AccessSigner::new(keyring.clone(), ISSUER, AUDIENCE, TTL_SECS);
    let verifier = AccessVerifier::new(&keyring, ISSUER, AUDIENCE);
    let rng = ring::rand::SystemRandom::new();
    let now = now_secs();
    let token = signer.sign(
        &UserId::generate(&rng),
        &SessionId::generate(&rng),
        "AAAAAAAAAAAAAAAAAAAAAA",
        now,
    );
    let (input, signature) = token.rsplit_once('.').expect("three parts");
    let signature = B64.decode(signature).expect("signature base64");
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        keyring.signing_key().pair.public_key().as_ref().to_vec(),
    );

    let mut group = c.benchmark_group("verify_access_token");
    group.bench_function("access_verifier_jsonwebtoken", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&token), now)
                .expect("valid token")
        });
    });
    group.bench_function("signature_only_ring", |b| {
        b.iter(|| {
            public
                .verify(black_box(input.as_bytes()), &signature)
                .expect("valid signature")
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = signing, refresh_tokens, verification
}
criterion_main!(benches);
