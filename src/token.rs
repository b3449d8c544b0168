//! Token formats: signed access tokens, opaque rotating refresh tokens, and the keyring
//! that holds the keys for both.

pub mod access;
pub mod keyring;
pub mod refresh;
pub mod signing;
