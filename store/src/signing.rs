//! Signed releases: an Ed25519 signature over a release statement, in a DSSE envelope.
//!
//! Operators sign offline with `fleetpack-seed`; the origin never signs and never holds
//! a private key: it copies each release's envelope into `package_details.json` as it
//! was stored. Devices check the signature over DSSE's pre-authentication encoding, the
//! key, the binary's SHA-256 and size against the statement, that the statement has not
//! expired (a freeze attack serves old, once valid metadata) and that its sequence is not
//! lower than one they saw (a rollback attack serves an older signed release).

use std::path::Path;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The DSSE payload type of a release statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.fleetpack.release+json";

/// What a signature vouches for: this binary is release `version` of `app` on
/// `channel`, until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub app: String,
    pub channel: String,
    pub version: String,
    /// SHA-256 of the binary, lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// Strictly increasing per app and channel, over every statement signed for them.
    pub sequence: u64,
    /// RFC 3339, UTC.
    pub expires: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSignature {
    keyid: String,
    sig: String,
}

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{}` is not an Ed25519 private key in PKCS#8 PEM (as `fleetpack-seed keygen` writes it)",
        path.display()
    )]
    NotPrivateKey { path: std::path::PathBuf },
    #[error(
        "`{}` is not an Ed25519 public key: write its 32 bytes as 64 hex digits (as `fleetpack-seed keygen` does)",
        path.display()
    )]
    NotPublicKey { path: std::path::PathBuf },
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

/// Why an envelope does not vouch for a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{app} is not signed: the release carries no envelope")]
    Unsigned { app: String },
    #[error("the envelope of {app} is malformed: {reason}")]
    Malformed { app: String, reason: String },
    #[error("the envelope of {app} has payload type `{found}`, not `{PAYLOAD_TYPE}`")]
    PayloadType { app: String, found: String },
    #[error(
        "the envelope of {app} is signed by no trusted key (key ids {keyids:?}); add the key or rotate to a trusted one"
    )]
    UnknownKey { app: String, keyids: Vec<String> },
    #[error(
        "the signature on {app}'s statement does not verify with key {keyid}: the statement or the signature was changed"
    )]
    BadSignature { app: String, keyid: String },
    #[error("the statement of {app} says {field} `{signed}`, but the release has `{actual}`")]
    Mismatch {
        app: String,
        field: &'static str,
        signed: String,
        actual: String,
    },
    #[error(
        "the statement of {app} expired at {expires}: refuse it (a freeze attack serves old metadata)"
    )]
    Expired { app: String, expires: String },
    #[error(
        "the statement of {app} has sequence {sequence}, lower than {seen} already seen: refuse it (a rollback attack)"
    )]
    OldSequence {
        app: String,
        sequence: u64,
        seen: u64,
    },
}

/// An operator's private signing key.
pub struct ReleaseKey(SigningKey);

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ReleaseKey({})", self.keyid())
    }
}

impl ReleaseKey {
    /// A new key from the system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|error| KeyError::Random(error.to_string()))?;
        Ok(ReleaseKey(SigningKey::from_bytes(&secret)))
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        SigningKey::from_pkcs8_pem(&text)
            .map(ReleaseKey)
            .map_err(|_| KeyError::NotPrivateKey {
                path: path.to_owned(),
            })
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|error| KeyError::Random(error.to_string()))
    }

    /// The public key's 32 bytes as 64 hex digits.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    pub fn keyid(&self) -> String {
        keyid(&self.0.verifying_key())
    }

    /// `statement` signed, as the envelope's JSON text.
    pub fn sign(&self, statement: &Statement) -> String {
        let payload = serde_json::to_vec(statement).expect("a statement serializes");
        let signature = self.0.sign(&pae(PAYLOAD_TYPE, &payload));
        let envelope = Envelope {
            payload: BASE64.encode(&payload),
            payload_type: PAYLOAD_TYPE.to_owned(),
            signatures: vec![EnvelopeSignature {
                keyid: self.keyid(),
                sig: BASE64.encode(signature.to_bytes()),
            }],
        };
        serde_json::to_string(&envelope).expect("an envelope serializes")
    }
}

/// A key id: the SHA-256 of the raw 32-byte public key, lowercase hex.
fn keyid(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.to_bytes()))
}

/// DSSE's pre-authentication encoding: what is signed, so that neither the payload
/// type nor the payload can be changed without the signature failing.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut encoded = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    encoded.extend_from_slice(payload);
    encoded
}

/// The public keys a verifier trusts; several, so that keys can be rotated.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<VerifyingKey>);

impl TrustedKeys {
    /// Reads each public key file (64 hex digits).
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<Self, KeyError> {
        paths
            .iter()
            .map(|path| {
                let path = path.as_ref();
                let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let not_public = || KeyError::NotPublicKey {
                    path: path.to_owned(),
                };
                let bytes: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(not_public)?;
                VerifyingKey::from_bytes(&bytes).map_err(|_| not_public())
            })
            .collect::<Result<_, _>>()
            .map(TrustedKeys)
    }

    /// The statement `envelope` vouches for, when a trusted key signed it.
    pub fn open(&self, app: &str, envelope: &str) -> Result<Statement, VerifyError> {
        let malformed = |reason: String| VerifyError::Malformed {
            app: app.to_owned(),
            reason,
        };
        let envelope: Envelope =
            serde_json::from_str(envelope).map_err(|error| malformed(error.to_string()))?;
        if envelope.payload_type != PAYLOAD_TYPE {
            return Err(VerifyError::PayloadType {
                app: app.to_owned(),
                found: envelope.payload_type,
            });
        }
        let payload = BASE64
            .decode(&envelope.payload)
            .map_err(|error| malformed(format!("payload: {error}")))?;
        let signed = pae(&envelope.payload_type, &payload);
        let mut keyids = Vec::new();
        for signature in &envelope.signatures {
            let Some(key) = self.0.iter().find(|key| keyid(key) == signature.keyid) else {
                keyids.push(signature.keyid.clone());
                continue;
            };
            let bytes: [u8; 64] = BASE64
                .decode(&signature.sig)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| malformed("a signature is not 64 bytes of base64".to_owned()))?;
            key.verify(&signed, &Signature::from_bytes(&bytes))
                .map_err(|_| VerifyError::BadSignature {
                    app: app.to_owned(),
                    keyid: signature.keyid.clone(),
                })?;
            return serde_json::from_slice(&payload)
                .map_err(|error| malformed(format!("statement: {error}")));
        }
        Err(VerifyError::UnknownKey {
            app: app.to_owned(),
            keyids,
        })
    }
}

/// What a statement must say of the release a device is about to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    pub app: &'a str,
    pub channel: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
    pub size: u64,
}

/// Checks a verified statement against the release, the clock and the lowest sequence
/// still acceptable.
pub fn check(
    statement: &Statement,
    expected: &Expected<'_>,
    now: SystemTime,
    min_sequence: u64,
) -> Result<(), VerifyError> {
    let app = expected.app.to_owned();
    let fields = [
        ("app", &statement.app, expected.app),
        ("channel", &statement.channel, expected.channel),
        ("version", &statement.version, expected.version),
        ("sha256", &statement.sha256, expected.sha256),
    ];
    for (field, signed, actual) in fields {
        if signed != actual {
            return Err(VerifyError::Mismatch {
                app,
                field,
                signed: signed.clone(),
                actual: actual.to_owned(),
            });
        }
    }
    if statement.size != expected.size {
        return Err(VerifyError::Mismatch {
            app,
            field: "size",
            signed: statement.size.to_string(),
            actual: expected.size.to_string(),
        });
    }
    let expired = humantime::parse_rfc3339(&statement.expires).map_or(true, |at| at <= now);
    if expired {
        return Err(VerifyError::Expired {
            app,
            expires: statement.expires.clone(),
        });
    }
    if statement.sequence < min_sequence {
        return Err(VerifyError::OldSequence {
            app,
            sequence: statement.sequence,
            seen: min_sequence,
        });
    }
    Ok(())
}

/// The sequence number in an envelope's statement, read without checking the
/// signature: what the next statement for the same app and channel must exceed.
pub fn statement_sequence(envelope: &str) -> Option<u64> {
    let envelope: Envelope = serde_json::from_str(envelope).ok()?;
    let payload = BASE64.decode(envelope.payload).ok()?;
    let statement: Statement = serde_json::from_slice(&payload).ok()?;
    Some(statement.sequence)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn statement() -> Statement {
        Statement {
            app: "os_armv8".to_owned(),
            channel: "prod".to_owned(),
            version: "1.2.0".to_owned(),
            sha256: "ab".repeat(32),
            size: 1024,
            sequence: 7,
            expires: "2030-01-01T00:00:00Z".to_owned(),
        }
    }

    fn expected(statement: &Statement) -> Expected<'_> {
        Expected {
            app: &statement.app,
            channel: &statement.channel,
            version: &statement.version,
            sha256: &statement.sha256,
            size: statement.size,
        }
    }

    fn trusted(key: &ReleaseKey) -> TrustedKeys {
        TrustedKeys(vec![key.0.verifying_key()])
    }

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_signed_statement_opens_and_checks_until_it_expires() {
        let key = ReleaseKey::generate().expect("a key");
        let statement = statement();
        let envelope = key.sign(&statement);
        let opened = trusted(&key).open("os_armv8", &envelope).expect("verifies");
        assert_eq!(opened, statement);
        let now = humantime::parse_rfc3339("2029-12-31T23:59:59Z").expect("time");
        check(&opened, &expected(&statement), now, 7).expect("valid");
        assert!(matches!(
            check(
                &opened,
                &expected(&statement),
                now + Duration::from_secs(1),
                0
            ),
            Err(VerifyError::Expired { .. })
        ));
        assert!(matches!(
            check(&opened, &expected(&statement), now, 8),
            Err(VerifyError::OldSequence {
                sequence: 7,
                seen: 8,
                ..
            })
        ));
        assert_eq!(statement_sequence(&envelope), Some(7));
    }

    #[test]
    fn a_changed_payload_or_signature_or_another_key_is_refused() {
        let key = ReleaseKey::generate().expect("a key");
        let envelope: Envelope = serde_json::from_str(&key.sign(&statement())).expect("JSON");
        let mut payload = BASE64.decode(&envelope.payload).expect("base64");
        payload[10] ^= 1;
        let changed_payload = Envelope {
            payload: BASE64.encode(&payload),
            ..envelope.clone()
        };
        let mut sig = BASE64.decode(&envelope.signatures[0].sig).expect("base64");
        sig[0] ^= 1;
        let changed_signature = Envelope {
            signatures: vec![EnvelopeSignature {
                sig: BASE64.encode(&sig),
                ..envelope.signatures[0].clone()
            }],
            ..envelope.clone()
        };
        for changed in [changed_payload, changed_signature] {
            let text = serde_json::to_string(&changed).expect("JSON");
            assert!(matches!(
                trusted(&key).open("os_armv8", &text),
                Err(VerifyError::BadSignature { .. })
            ));
        }
        let other = ReleaseKey::generate().expect("a key");
        let text = serde_json::to_string(&envelope).expect("JSON");
        assert!(matches!(
            trusted(&other).open("os_armv8", &text),
            Err(VerifyError::UnknownKey { .. })
        ));
        // Rotation: a verifier trusting both keys accepts either.
        let both = TrustedKeys(vec![other.0.verifying_key(), key.0.verifying_key()]);
        assert!(both.open("os_armv8", &text).is_ok());
    }

    #[test]
    fn a_statement_for_another_release_is_refused() {
        let statement = statement();
        for (field, changed) in [
            (
                "app",
                Statement {
                    app: "other".to_owned(),
                    ..statement.clone()
                },
            ),
            (
                "version",
                Statement {
                    version: "1.1.0".to_owned(),
                    ..statement.clone()
                },
            ),
            (
                "sha256",
                Statement {
                    sha256: "cd".repeat(32),
                    ..statement.clone()
                },
            ),
        ] {
            let now = SystemTime::UNIX_EPOCH;
            assert!(
                matches!(
                    check(&changed, &expected(&statement), now, 0),
                    Err(VerifyError::Mismatch { field: found, .. }) if found == field
                ),
                "{field}"
            );
        }
    }

    #[test]
    fn keys_survive_their_files() {
        let key = ReleaseKey::generate().expect("a key");
        let dir = tempfile::tempdir().expect("temp dir");
        let private = dir.path().join("release.key");
        std::fs::write(&private, key.to_pem().expect("PEM")).expect("write");
        let public = dir.path().join("release.pub");
        std::fs::write(&public, format!("{}\n", key.public_hex())).expect("write");
        let read = ReleaseKey::read(&private).expect("reads");
        assert_eq!(read.keyid(), key.keyid());
        let envelope = read.sign(&statement());
        assert!(
            TrustedKeys::read(&[&public])
                .expect("reads")
                .open("a", &envelope)
                .is_ok()
        );
        assert_eq!(
            key.keyid(),
            hex::encode(Sha256::digest(hex::decode(key.public_hex()).expect("hex")))
        );
        std::fs::write(&public, "not a key").expect("write");
        assert!(matches!(
            TrustedKeys::read(&[&public]),
            Err(KeyError::NotPublicKey { .. })
        ));
    }
}
