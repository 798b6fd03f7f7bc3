//! # deai-types
//!
//! The bottom of the deai dependency graph: identifiers and hashes that every other crate
//! shares (a model is named by the SHA-256 of its weights file; receipts, jobs and blocks
//! will be named the same way).
//!
//! Owns: [`Hash256`], [`ModelId`], their text/serde forms, and the canonical binary
//! [`codec`] that ledger transactions and blocks are encoded with.
//! Must never depend on: any other deai crate, any I/O, clock or randomness.

pub mod codec;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest. Displayed and serialized as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash256(pub [u8; 32]);

/// Errors from parsing identifiers given as text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("expected 64 hex characters, got {0} characters")]
    Length(usize),
    #[error("invalid hex: {0}")]
    Hex(String),
}

impl Hash256 {
    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// SHA-256 over the concatenation of `parts`, each prefixed by its length as u64 LE, so
    /// that different splits of the same bytes never collide.
    pub fn digest_parts(domain: &str, parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        h.update((domain.len() as u64).to_le_bytes());
        h.update(domain.as_bytes());
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Self(h.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({})", self.short())
    }
}

impl FromStr for Hash256 {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(ParseError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| ParseError::Hex(e.to_string()))?;
        Ok(Self(out))
    }
}

impl Serialize for Hash256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A model's identity: the SHA-256 of its weights file, exactly as stored on disk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelId(pub Hash256);

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelId({})", self.0.short())
    }
}

impl FromStr for ModelId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_known_vector() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(
            Hash256::digest(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_roundtrip_and_errors() {
        let h = Hash256::digest(b"x");
        assert_eq!(h.to_hex().parse::<Hash256>().unwrap(), h);
        assert_eq!("abc".parse::<Hash256>(), Err(ParseError::Length(3)));
        assert!(matches!(
            "z".repeat(64).parse::<Hash256>(),
            Err(ParseError::Hex(_))
        ));
        let json = serde_json::to_string(&ModelId(h)).unwrap();
        assert_eq!(serde_json::from_str::<ModelId>(&json).unwrap(), ModelId(h));
        assert!(serde_json::from_str::<ModelId>("\"00\"").is_err());
    }

    #[test]
    fn digest_parts_is_split_sensitive() {
        let a = Hash256::digest_parts("d", &[b"ab", b"c"]);
        let b = Hash256::digest_parts("d", &[b"a", b"bc"]);
        let c = Hash256::digest_parts("e", &[b"ab", b"c"]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
