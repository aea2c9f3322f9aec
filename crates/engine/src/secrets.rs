//! The master key that encrypts HMAC secrets at rest (XChaCha20-Poly1305), and the
//! generation and hashing of API credentials. Secrets never reach a log: the types
//! holding them print as `***`.

use std::fmt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::EngineError;

/// 32 bytes, written as 64 hex characters in its file or environment variable.
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key must be 64 hex characters (32 bytes)")]
    Malformed,
    #[error("cannot read master key file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot write master key file {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

impl MasterKey {
    pub fn from_hex(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| MasterKeyError::Malformed)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| MasterKeyError::Malformed)?;
        Ok(Self { cipher: XChaCha20Poly1305::new(&key.into()) })
    }

    pub fn from_file(path: &Path) -> Result<Self, MasterKeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| MasterKeyError::Read { path: path.display().to_string(), error })?;
        Self::from_hex(&text)
    }

    /// A new random key written to `path` (mode 0600). Returns the key.
    pub fn generate_into(path: &Path) -> Result<Self, MasterKeyError> {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let text = hex::encode(key);
        let write_err = |error| MasterKeyError::Write { path: path.display().to_string(), error };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        write_private(path, &text).map_err(write_err)?;
        Self::from_hex(&text)
    }

    /// Encrypts a secret; returns (nonce, ciphertext).
    pub fn encrypt(&self, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        (nonce.to_vec(), ciphertext)
    }

    pub fn decrypt(&self, nonce: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, EngineError> {
        if nonce.len() != 24 {
            return Err(EngineError::Decrypt);
        }
        self.cipher.decrypt(XNonce::from_slice(nonce), ciphertext).map_err(|_| EngineError::Decrypt)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Random ASCII letters and digits.
pub fn random_alphanumeric(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

/// Random lowercase hex of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// How bearer tokens are stored: hex SHA-256. Tokens carry 190+ bits of entropy, so a
/// fast hash is enough (no password stretching needed) and lookup stays cheap.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_and_refuses_a_wrong_key() {
        let k1 = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let k2 = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        let (nonce, ct) = k1.encrypt(b"s3cret");
        assert_ne!(ct, b"s3cret");
        assert_eq!(k1.decrypt(&nonce, &ct).unwrap(), b"s3cret");
        assert!(matches!(k2.decrypt(&nonce, &ct), Err(EngineError::Decrypt)));
        assert!(matches!(MasterKey::from_hex("abcd"), Err(MasterKeyError::Malformed)));
        assert_eq!(format!("{k1:?}"), "MasterKey(***)");
    }
}
