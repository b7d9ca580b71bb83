//! The channel document and its signatures.
//!
//! A channel is a prefix in object storage (or on an HTTPS origin) holding `channel.json` and the
//! bundles under `bundles/`. The document names one bundle by object name, size and SHA-256, and
//! carries two minisign (Ed25519) signatures made with the publisher's key:
//! - `bundle_signature` over the bundle's bytes, checked before anything is unpacked;
//! - `signature` over the document itself, so the sequence number, roll-out percentage and
//!   revocations cannot be edited by whoever can write to the bucket. Without it a replayed or
//!   altered document could roll a store back to a version it had left.
//!
//! The document's signed bytes are its compact JSON with `signature` empty. Both sides serialise
//! the same struct with the same serde_json, field order fixed by the declaration, and unknown
//! fields are refused, so there is no canonicalisation to get wrong.

use serde::{Deserialize, Serialize};

use crate::catalog::EmbedderFingerprint;

/// The document's format tag; a box refuses any other.
pub const FORMAT: &str = "vitrine-channel/1";
/// The object a box polls, under the channel's prefix.
pub const DOCUMENT: &str = "channel.json";
/// Largest channel document a box reads: a few hundred bytes plus the revocation list.
pub const DOCUMENT_MAX: u64 = 256 * 1024;

/// The channel document (`channel.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDocument {
    /// [`FORMAT`].
    pub format: String,
    /// Grows by one with every publish; a box refuses a document whose sequence is below the
    /// highest it has accepted (a replayed old document).
    pub sequence: u64,
    /// The bundle's `manifest.json` version (the label staff see), e.g. "spring-2027".
    pub version: String,
    /// The bundle's object name relative to the channel prefix ([`bundle_object_name`]).
    pub bundle: String,
    /// Bytes of the bundle object.
    pub size: u64,
    /// Lower-case hex SHA-256 of the bundle object.
    pub sha256: String,
    /// The minisign signature (the four-line `.minisig` text) of the bundle object.
    pub bundle_signature: String,
    /// The embedder the bundle's vectors were made with, from its manifest; `None` for an
    /// images-only bundle (the box embeds it). Lets a box refuse before downloading.
    pub embedder: Option<EmbedderFingerprint>,
    /// When HQ published this document, RFC 3339 UTC.
    pub created: String,
    /// Share of boxes (0–100) that take this version; a box is in when
    /// [`rollout_bucket`]`(box_id) < rollout_percent`.
    pub rollout_percent: u8,
    /// Versions no box may run; a box serving one of them keeps serving it until a newer version
    /// is offered, but never imports it again.
    #[serde(default)]
    pub revoked: Vec<String>,
    /// The minisign signature of [`ChannelDocument::signed_bytes`].
    pub signature: String,
}

/// Why a box refused what its channel offered. The `as_str` names label
/// `vitrine_channel_refusals_total{reason}` and appear in `/api/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Not JSON, not this format, too large, or a field out of range.
    Malformed,
    /// Signed (document or bundle) with a key this box does not trust.
    UnknownKey,
    /// A trusted key's id, but the signature does not verify: altered after signing.
    BadSignature,
    /// The sequence number is below the highest this box accepted.
    SequenceBackwards,
    /// The offered version is listed as revoked.
    Revoked,
    /// Made with another embedder or recipe than the box runs.
    Fingerprint,
    /// The downloaded bundle's size differs from the document's.
    Size,
    /// The downloaded bundle's SHA-256 differs from the document's.
    Digest,
    /// The bundle verified but failed the import checks every bundle passes.
    Invalid,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 9] = [
        Self::Malformed,
        Self::UnknownKey,
        Self::BadSignature,
        Self::SequenceBackwards,
        Self::Revoked,
        Self::Fingerprint,
        Self::Size,
        Self::Digest,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::SequenceBackwards => "sequence_backwards",
            Self::Revoked => "revoked",
            Self::Fingerprint => "fingerprint",
            Self::Size => "size",
            Self::Digest => "digest",
            Self::Invalid => "invalid",
        }
    }
}

/// A refusal with its reason and a sentence for the technician.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DocError {
    pub reason: RefusalReason,
    pub message: String,
}

impl DocError {
    pub fn new(reason: RefusalReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The publisher keys a box accepts: usually one, two while HQ rotates its key.
#[derive(Debug, Clone)]
pub struct TrustedKeys(Vec<minisign_verify::PublicKey>);

impl TrustedKeys {
    /// Reads public keys as `minisign` writes them (`minisign.pub`: an untrusted comment line and
    /// the base64 key) or as the bare base64 line.
    pub fn parse(texts: &[String]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let t = t.trim();
            let key = if t.lines().count() > 1 {
                minisign_verify::PublicKey::decode(t)
            } else {
                minisign_verify::PublicKey::from_base64(t)
            };
            keys.push(
                key.map_err(|e| format!("public key {} is not a minisign public key: {e}", i + 1))?,
            );
        }
        if keys.is_empty() {
            return Err("no public key: a box must know its publisher's key".into());
        }
        Ok(Self(keys))
    }

    /// Checks `sig` (minisign text) over `bytes` against every trusted key. A signature whose key
    /// id matches none of them is [`RefusalReason::UnknownKey`]; one that matches but does not
    /// verify is [`RefusalReason::BadSignature`].
    pub fn verify(&self, what: &str, bytes: &[u8], sig: &str) -> Result<(), DocError> {
        let sig = minisign_verify::Signature::decode(sig).map_err(|e| {
            DocError::new(
                RefusalReason::Malformed,
                format!("{what}: the signature is not minisign text: {e}"),
            )
        })?;
        self.check(what, |key| key.verify(bytes, &sig, false))
    }

    /// [`Self::verify`] for a file read in chunks (bundles are too large to hold in memory).
    pub fn verify_reader(
        &self,
        what: &str,
        mut reader: impl std::io::Read,
        sig: &str,
    ) -> Result<(), DocError> {
        let sig = minisign_verify::Signature::decode(sig).map_err(|e| {
            DocError::new(
                RefusalReason::Malformed,
                format!("{what}: the signature is not minisign text: {e}"),
            )
        })?;
        let Some(key) = self.0.iter().find(|k| k.verify_stream(&sig).is_ok()) else {
            return Err(unknown_key(what));
        };
        let mut v = key
            .verify_stream(&sig)
            .map_err(|e| DocError::new(RefusalReason::BadSignature, format!("{what}: {e}")))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                DocError::new(RefusalReason::Size, format!("{what}: cannot read it: {e}"))
            })?;
            if n == 0 {
                break;
            }
            v.update(&buf[..n]);
        }
        v.finalize().map_err(|_| bad_signature(what))
    }

    fn check(
        &self,
        what: &str,
        verify: impl Fn(&minisign_verify::PublicKey) -> Result<(), minisign_verify::Error>,
    ) -> Result<(), DocError> {
        let mut known = false;
        for key in &self.0 {
            match verify(key) {
                Ok(()) => return Ok(()),
                Err(minisign_verify::Error::UnexpectedKeyId) => {}
                Err(_) => known = true,
            }
        }
        Err(if known {
            bad_signature(what)
        } else {
            unknown_key(what)
        })
    }
}

fn unknown_key(what: &str) -> DocError {
    DocError::new(
        RefusalReason::UnknownKey,
        format!("{what} is signed by a key this box does not trust (catalog.channel.public_keys)"),
    )
}

fn bad_signature(what: &str) -> DocError {
    DocError::new(
        RefusalReason::BadSignature,
        format!("{what}: the signature does not match: it was altered after signing"),
    )
}

impl ChannelDocument {
    /// The bytes [`Self::signature`] signs: the compact JSON with `signature` empty.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature.clear();
        serde_json::to_vec(&unsigned).expect("a channel document always serialises")
    }

    /// Parses a document as fetched, bounded by [`DOCUMENT_MAX`], and checks its signature and
    /// fields. The sequence, revocation and fingerprint checks need the box's state and are the
    /// subscriber's.
    pub fn parse_verified(bytes: &[u8], keys: &TrustedKeys) -> Result<Self, DocError> {
        let malformed = |m: String| DocError::new(RefusalReason::Malformed, m);
        if bytes.len() as u64 > DOCUMENT_MAX {
            return Err(malformed(format!(
                "{DOCUMENT} is {} bytes, more than the {DOCUMENT_MAX} a channel document can be",
                bytes.len()
            )));
        }
        let doc: Self = serde_json::from_slice(bytes)
            .map_err(|e| malformed(format!("{DOCUMENT} is not a channel document: {e}")))?;
        if doc.format != FORMAT {
            return Err(malformed(format!(
                "{DOCUMENT}: format \"{}\" is not \"{FORMAT}\"",
                doc.format
            )));
        }
        keys.verify(DOCUMENT, &doc.signed_bytes(), &doc.signature)?;
        doc.check_fields().map_err(malformed)?;
        Ok(doc)
    }

    /// Field checks that hold for any channel: a sane object name, digest and percentage.
    pub fn check_fields(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.rollout_percent > 100 {
            problems.push(format!(
                "rollout_percent {} is above 100",
                self.rollout_percent
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!("sha256 '{}' is not 64 hex digits", self.sha256));
        }
        if !self.bundle.starts_with("bundles/")
            || self
                .bundle
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            problems.push(format!(
                "bundle '{}' is not an object under bundles/",
                self.bundle
            ));
        }
        if self.version.trim().is_empty() {
            problems.push("version is empty".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{DOCUMENT}: {}", problems.join("; ")))
        }
    }
}

/// The object name a bundle is published under: content-addressed, so publishing the same bytes
/// twice writes the same object, and a box's partial download can never mix two bundles.
/// `extension` is the archive's: "tar" or "tar.gz".
pub fn bundle_object_name(sha256: &str, extension: &str) -> String {
    format!("bundles/{sha256}.{extension}")
}

/// A box's place in the staged roll-out, 0–99, stable for its id: the first eight bytes of
/// SHA-256("vitrine-rollout:" + box id), modulo 100. A box takes a version when this is below
/// the document's `rollout_percent`, so raising the percentage only ever adds boxes.
pub fn rollout_bucket(box_id: &str) -> u8 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("vitrine-rollout:{box_id}").as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().expect("eight bytes"));
    (n % 100) as u8
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh key pair: (secret key for `minisign::sign`, public key text for [`TrustedKeys`]).
    pub fn keypair() -> (minisign::SecretKey, String) {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
        let public = kp.pk.to_box().expect("public key box").into_string();
        (kp.sk, public)
    }

    pub fn sign(sk: &minisign::SecretKey, bytes: &[u8]) -> String {
        minisign::sign(None, sk, std::io::Cursor::new(bytes), None, None)
            .expect("sign")
            .into_string()
    }

    fn document(sk: &minisign::SecretKey) -> ChannelDocument {
        let bundle = b"bundle bytes";
        let mut doc = ChannelDocument {
            format: FORMAT.into(),
            sequence: 3,
            version: "spring-2027".into(),
            bundle: bundle_object_name(&"ab".repeat(32), "tar.gz"),
            size: bundle.len() as u64,
            sha256: "ab".repeat(32),
            bundle_signature: sign(sk, bundle),
            embedder: None,
            created: "2026-12-01T00:00:00Z".into(),
            rollout_percent: 100,
            revoked: vec![],
            signature: String::new(),
        };
        doc.signature = sign(sk, &doc.signed_bytes());
        doc
    }

    #[test]
    fn a_signed_document_verifies_and_an_edited_one_does_not() {
        let (sk, pk) = keypair();
        let keys = TrustedKeys::parse(&[pk]).unwrap();
        let doc = document(&sk);
        let bytes = serde_json::to_vec_pretty(&doc).unwrap();
        assert_eq!(ChannelDocument::parse_verified(&bytes, &keys).unwrap(), doc);

        let mut edited = doc.clone();
        edited.sequence = 99;
        let bytes = serde_json::to_vec(&edited).unwrap();
        let e = ChannelDocument::parse_verified(&bytes, &keys).unwrap_err();
        assert_eq!(e.reason, RefusalReason::BadSignature, "{e}");
    }

    #[test]
    fn another_publishers_key_is_unknown_and_a_second_trusted_key_is_accepted() {
        let (sk, pk) = keypair();
        let (other_sk, other_pk) = keypair();
        let doc = document(&other_sk);
        let bytes = serde_json::to_vec(&doc).unwrap();
        let only_first = TrustedKeys::parse(std::slice::from_ref(&pk)).unwrap();
        let e = ChannelDocument::parse_verified(&bytes, &only_first).unwrap_err();
        assert_eq!(e.reason, RefusalReason::UnknownKey, "{e}");
        // During a key rotation a box trusts both keys.
        let both = TrustedKeys::parse(&[pk, other_pk]).unwrap();
        ChannelDocument::parse_verified(&bytes, &both).unwrap();
        // The first key alone still verifies its own documents.
        let own = serde_json::to_vec(&document(&sk)).unwrap();
        ChannelDocument::parse_verified(&own, &only_first).unwrap();
    }

    #[test]
    fn bundle_signature_checks_streamed_bytes() {
        let (sk, pk) = keypair();
        let keys = TrustedKeys::parse(&[pk]).unwrap();
        let data = vec![7u8; 3 << 20];
        let sig = sign(&sk, &data);
        keys.verify_reader("bundle", &data[..], &sig).unwrap();
        let mut flipped = data.clone();
        flipped[1 << 20] ^= 1;
        let e = keys
            .verify_reader("bundle", &flipped[..], &sig)
            .unwrap_err();
        assert_eq!(e.reason, RefusalReason::BadSignature, "{e}");
    }

    #[test]
    fn unknown_fields_and_bad_object_names_are_malformed() {
        let (sk, pk) = keypair();
        let keys = TrustedKeys::parse(&[pk]).unwrap();
        let mut v = serde_json::to_value(document(&sk)).unwrap();
        v["extra"] = 1.into();
        let e =
            ChannelDocument::parse_verified(&serde_json::to_vec(&v).unwrap(), &keys).unwrap_err();
        assert_eq!(e.reason, RefusalReason::Malformed);

        let mut doc = document(&sk);
        doc.bundle = "bundles/../../etc/passwd".into();
        doc.signature = sign(&sk, &doc.signed_bytes());
        let e =
            ChannelDocument::parse_verified(&serde_json::to_vec(&doc).unwrap(), &keys).unwrap_err();
        assert_eq!(e.reason, RefusalReason::Malformed, "{e}");
    }

    #[test]
    fn rollout_buckets_are_stable_and_spread() {
        assert_eq!(rollout_bucket("store-0042"), rollout_bucket("store-0042"));
        let under_half = (0..1000)
            .filter(|i| rollout_bucket(&format!("box-{i}")) < 50)
            .count();
        assert!((430..570).contains(&under_half), "{under_half}");
    }
}
