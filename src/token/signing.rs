//! The Ed25519 implementation that signs access tokens: ring by default, aws-lc-rs
//! with the `aws-lc-rs` cargo feature (about three times faster per signature on x86-64;
//! it builds a C library, so it is opt-in). Both read and write the same PKCS#8 key
//! files, so a keyring moves between them unchanged.

#[cfg(feature = "aws-lc-rs")]
pub use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
#[cfg(not(feature = "aws-lc-rs"))]
pub use ring::signature::{Ed25519KeyPair, KeyPair};

/// Name of the backend, for the start-up summary.
pub const BACKEND: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "ring"
};

/// A new key pair as a PKCS#8 v2 document.
pub fn generate_pkcs8() -> Vec<u8> {
    #[cfg(feature = "aws-lc-rs")]
    let rng = aws_lc_rs::rand::SystemRandom::new();
    #[cfg(not(feature = "aws-lc-rs"))]
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .expect("the system random source does not fail once initialised")
        .as_ref()
        .to_vec()
}
