//! Content digests: `sha256:<64 hex>` on the wire, `sha256-<64 hex>` as a blob file name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::StoreError;

/// A sha256 digest. The hex is always stored in lower case, so two digests that differ
/// only in the case of their hex compare equal and name the same blob file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parse `sha256:<hex>` or `sha256-<hex>` (Ollama's `^sha256[:-][0-9a-fA-F]{64}$`).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Self::parse_opt(s).ok_or_else(|| StoreError::InvalidDigest(s.to_string()))
    }

    fn parse_opt(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("sha256")?;
        let hex = rest.strip_prefix(':').or_else(|| rest.strip_prefix('-'))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Digest {
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// Parse a blob file name (`sha256-<hex>`, or the legacy `sha256:<hex>`).
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::parse_opt(name)
    }

    /// The digest of a 32-byte sha256 output.
    pub fn from_sha256(bytes: [u8; 32]) -> Self {
        Digest {
            hex: hex::encode(bytes),
        }
    }

    /// Hash `bytes` and return their digest.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// The 64 lower-case hex characters.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The blob file name, `sha256-<hex>`.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.hex)
    }

    /// Ollama's short form used in progress messages (`pulling <12 hex>`).
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Every digest-looking substring (`sha256[:-]<64 hex>`) in `bytes`. Used to find the
/// blobs a file refers to even when it does not parse as a manifest.
pub(crate) fn scan_digests(bytes: &[u8]) -> Vec<Digest> {
    const PREFIX: &[u8] = b"sha256";
    let mut found = Vec::new();
    let mut i = 0;
    while i + PREFIX.len() + 65 <= bytes.len() {
        let window = &bytes[i..];
        if window.starts_with(PREFIX) && matches!(window[PREFIX.len()], b':' | b'-') {
            let hex = &window[PREFIX.len() + 1..PREFIX.len() + 65];
            if hex.iter().all(u8::is_ascii_hexdigit) {
                if let Ok(hex) = std::str::from_utf8(hex) {
                    found.push(Digest {
                        hex: hex.to_ascii_lowercase(),
                    });
                }
                i += PREFIX.len() + 65;
                continue;
            }
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa";

    #[test]
    fn parses_both_separators() {
        let a = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let b = Digest::parse(&format!("sha256-{HEX}")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), format!("sha256:{HEX}"));
        assert_eq!(a.file_name(), format!("sha256-{HEX}"));
        assert_eq!(a.short(), "6a0746a1ec1a");
    }

    #[test]
    fn upper_case_hex_is_normalised() {
        let d = Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).unwrap();
        assert_eq!(d.hex(), HEX);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            String::new(),
            "sha256:".into(),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            format!("sha512:{HEX}"),
            format!("SHA256:{HEX}"),
            format!("sha256_{HEX}"),
            format!("sha256:{}g", &HEX[1..]),
            format!(" sha256:{HEX}"),
            format!("sha256:../../{}", &HEX[6..]),
        ] {
            let err = Digest::parse(&bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidDigest(_)), "{bad}");
            assert_eq!(err.to_string(), "invalid digest format");
        }
    }

    #[test]
    fn of_bytes_matches_known_value() {
        assert_eq!(
            Digest::of_bytes(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::parse(&format!("sha256-{HEX}")).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"sha256:{HEX}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"nope\"").is_err());
    }

    #[test]
    fn scan_finds_digests_in_text() {
        let text = format!(
            "{{\"digest\":\"sha256:{HEX}\"}} junk sha256-{} sha256:short",
            HEX.to_uppercase()
        );
        let found = scan_digests(text.as_bytes());
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|d| d.hex() == HEX));
        assert!(scan_digests(b"").is_empty());
    }
}
