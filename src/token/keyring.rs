//! The keyring: Ed25519 signing keys with their `kid`s, and the secret that keys
//! refresh-token hashes. Loaded once from the `TOKEND_KEYS` file (made by
//! `tokend keys generate`) or generated in memory for a local trial.
//!
//! File format (JSON, mode 0600):
//! `{"version": 1, "signing_kid": "...", "token_secret": "<base64url>",
//!   "keys": [{"kid": "...", "pkcs8": "<base64url>", "created_at": "<RFC 3339>"}]}`.
//! Every key in the file is published in the JWKS; only `signing_kid` signs. A key is
//! rotated in by adding it (published, not signing), promoting it once every instance
//! publishes it, and removing the old one after the access-token lifetime has passed.

use std::fmt;
use std::path::Path;

use super::signing::{self, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// Why a keyring could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read or written.
    #[error("cannot access keyring file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a keyring.
    #[error("keyring file is not valid: {0}")]
    Format(String),
    /// A key named on the command line is not in the keyring.
    #[error("no key with kid {0:?} in the keyring")]
    UnknownKid(String),
    /// The signing key was named for removal.
    #[error("the signing key cannot be removed; promote another key first")]
    RemovingSigningKey,
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    version: u32,
    signing_kid: String,
    token_secret: String,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    kid: String,
    pkcs8: String,
    created_at: String,
}

/// One Ed25519 key pair, parsed once.
pub struct KeyPair {
    /// Key id, derived from the public key.
    pub kid: String,
    /// The parsed key pair; signing uses it directly.
    pub pair: Ed25519KeyPair,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// All keys tokend signs or verifies with, plus the refresh-token secret.
pub struct Keyring {
    /// Index into `keys` of the signing key.
    signing: usize,
    /// Signing key first added; every one is published.
    keys: Vec<KeyPair>,
    /// Secret that keys refresh-token hashing and rotation.
    token_secret: [u8; 32],
    /// Whether this keyring was generated at start and dies with the process.
    ephemeral: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("signing_kid", &self.signing_key().kid)
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

fn kid_for(public_key: &[u8]) -> String {
    let digest = blake3::hash(public_key);
    B64.encode(&digest.as_bytes()[..12])
}

fn new_pkcs8(_rng: &ring::rand::SystemRandom) -> Vec<u8> {
    signing::generate_pkcs8()
}

fn parse_pair(pkcs8: &[u8]) -> Result<KeyPair, KeyringError> {
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|_| KeyringError::Format("a key is not an Ed25519 PKCS#8 document".into()))?;
    Ok(KeyPair {
        kid: kid_for(pair.public_key().as_ref()),
        pair,
    })
}

/// Reads the JSON of a keyring file. Parse errors name the line and the kind of
/// problem only: serde's messages can quote values, and these values are secrets.
fn read_file(path: &Path) -> Result<KeyringFile, KeyringError> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .map_err(|e| KeyringError::Format(format!("line {}: {:?} error", e.line(), e.classify())))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Keyring {
    /// A fresh single-key keyring held only in memory.
    pub fn ephemeral(rng: &ring::rand::SystemRandom) -> Self {
        let pair = parse_pair(&new_pkcs8(rng)).expect("a freshly generated key parses");
        Self {
            signing: 0,
            keys: vec![pair],
            token_secret: ring::rand::generate(rng)
                .expect("the system random source does not fail once initialised")
                .expose(),
            ephemeral: true,
        }
    }

    /// Whether the file at `path` can be read by users other than its owner.
    pub fn is_exposed(path: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            false
        }
    }

    /// Loads and checks a keyring file.
    ///
    /// # Errors
    /// [`KeyringError`] if the file cannot be read, is not JSON of the format above,
    /// holds a key that is not Ed25519, or names a signing key it does not hold.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        Self::from_file(&read_file(path)?)
    }

    fn from_file(file: &KeyringFile) -> Result<Self, KeyringError> {
        if file.version != 1 {
            return Err(KeyringError::Format(format!(
                "unsupported version {}",
                file.version
            )));
        }
        let secret = B64
            .decode(&file.token_secret)
            .ok()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or_else(|| {
                KeyringError::Format("token_secret must be 32 bytes of base64url".into())
            })?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in &file.keys {
            let der = B64
                .decode(&entry.pkcs8)
                .map_err(|_| KeyringError::Format("a key is not base64url".into()))?;
            let pair = parse_pair(&der)?;
            if pair.kid != entry.kid {
                return Err(KeyringError::Format(format!(
                    "kid {:?} does not match its key",
                    entry.kid
                )));
            }
            keys.push(pair);
        }
        let signing = keys
            .iter()
            .position(|k| k.kid == file.signing_kid)
            .ok_or_else(|| KeyringError::UnknownKid(file.signing_kid.clone()))?;
        Ok(Self {
            signing,
            keys,
            token_secret: secret,
            ephemeral: false,
        })
    }

    /// The key that signs new access tokens.
    pub fn signing_key(&self) -> &KeyPair {
        &self.keys[self.signing]
    }

    /// Every published key, the signing key included.
    pub fn keys(&self) -> &[KeyPair] {
        &self.keys
    }

    /// The secret that keys refresh-token hashes and rotation.
    pub fn token_secret(&self) -> &[u8; 32] {
        &self.token_secret
    }

    /// Whether the keyring was generated at start and will not survive a restart.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }
}

/// Edits keyring files for the `tokend keys` commands.
pub mod file {
    use super::*;

    fn read(path: &Path) -> Result<KeyringFile, KeyringError> {
        let file = read_file(path)?;
        Keyring::from_file(&file)?;
        Ok(file)
    }

    fn write(path: &Path, file: &KeyringFile, create_new: bool) -> Result<(), KeyringError> {
        use std::io::Write as _;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt as _;

        let json =
            serde_json::to_vec_pretty(file).map_err(|e| KeyringError::Format(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        if create_new && path.exists() {
            return Err(KeyringError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists; pass --force to replace it", path.display()),
            )));
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    fn new_entry(rng: &ring::rand::SystemRandom) -> KeyEntry {
        let der = new_pkcs8(rng);
        let kid = parse_pair(&der)
            .expect("a freshly generated key parses")
            .kid;
        KeyEntry {
            kid,
            pkcs8: B64.encode(der),
            created_at: now_rfc3339(),
        }
    }

    /// Writes a new keyring with one signing key and a fresh token secret; returns the kid.
    ///
    /// # Errors
    /// The file exists and `force` is false, or it cannot be written.
    pub fn generate(path: &Path, force: bool) -> Result<String, KeyringError> {
        let rng = ring::rand::SystemRandom::new();
        let entry = new_entry(&rng);
        let secret: [u8; 32] = ring::rand::generate(&rng)
            .expect("the system random source does not fail once initialised")
            .expose();
        let kid = entry.kid.clone();
        let file = KeyringFile {
            version: 1,
            signing_kid: kid.clone(),
            token_secret: B64.encode(secret),
            keys: vec![entry],
        };
        write(path, &file, !force)?;
        Ok(kid)
    }

    /// Adds a key that is published but does not sign yet; returns its kid.
    ///
    /// # Errors
    /// The file cannot be read, parsed or written.
    pub fn add(path: &Path) -> Result<String, KeyringError> {
        let mut file = read(path)?;
        let entry = new_entry(&ring::rand::SystemRandom::new());
        let kid = entry.kid.clone();
        file.keys.push(entry);
        write(path, &file, false)?;
        Ok(kid)
    }

    /// Makes `kid` the signing key.
    ///
    /// # Errors
    /// `kid` is not in the file, or the file cannot be read or written.
    pub fn promote(path: &Path, kid: &str) -> Result<(), KeyringError> {
        let mut file = read(path)?;
        if !file.keys.iter().any(|k| k.kid == kid) {
            return Err(KeyringError::UnknownKid(kid.to_owned()));
        }
        file.signing_kid = kid.to_owned();
        write(path, &file, false)
    }

    /// Removes a key that no longer signs, once its last token has expired.
    ///
    /// # Errors
    /// `kid` is not in the file or is the signing key, or the file cannot be written.
    pub fn remove(path: &Path, kid: &str) -> Result<(), KeyringError> {
        let mut file = read(path)?;
        if file.signing_kid == kid {
            return Err(KeyringError::RemovingSigningKey);
        }
        let before = file.keys.len();
        file.keys.retain(|k| k.kid != kid);
        if file.keys.len() == before {
            return Err(KeyringError::UnknownKid(kid.to_owned()));
        }
        write(path, &file, false)
    }

    /// Lists `(kid, created_at, signing)` for each key.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn list(path: &Path) -> Result<Vec<(String, String, bool)>, KeyringError> {
        let file = read(path)?;
        Ok(file
            .keys
            .iter()
            .map(|k| {
                (
                    k.kid.clone(),
                    k.created_at.clone(),
                    k.kid == file.signing_kid,
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_file_loads_and_rotates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.json");
        let first = file::generate(&path, false).expect("generate");
        assert!(
            file::generate(&path, false).is_err(),
            "refuses to overwrite"
        );
        let ring = Keyring::load(&path).expect("load");
        assert_eq!(ring.signing_key().kid, first);

        let second = file::add(&path).expect("add");
        let ring = Keyring::load(&path).expect("load");
        assert_eq!(ring.signing_key().kid, first, "a new key does not sign yet");
        assert_eq!(ring.keys().len(), 2);

        file::promote(&path, &second).expect("promote");
        assert!(file::remove(&path, &second).is_err(), "signing key stays");
        file::remove(&path, &first).expect("remove");
        let ring = Keyring::load(&path).expect("load");
        assert_eq!(ring.signing_key().kid, second);
        assert_eq!(ring.keys().len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn keyring_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.json");
        file::generate(&path, false).expect("generate");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }

    #[test]
    fn broken_files_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.json");
        std::fs::write(
            &path,
            r#"{"version":1,"signing_kid":"x","token_secret":"c2VjcmV0","keys":[]}"#,
        )
        .expect("write");
        let err = Keyring::load(&path)
            .expect_err("bad secret length")
            .to_string();
        assert!(!err.contains("c2VjcmV0"));
        std::fs::write(&path, "not json").expect("write");
        assert!(Keyring::load(&path).is_err());
    }

    #[test]
    fn debug_lists_kids_only() {
        let ring = Keyring::ephemeral(&ring::rand::SystemRandom::new());
        let shown = format!("{ring:?}");
        assert!(shown.contains(&ring.signing_key().kid));
        assert!(!shown.contains(&B64.encode(ring.token_secret())));
    }
}
