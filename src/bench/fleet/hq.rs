//! HQ's side of the fleet bench: synthetic bundles published with the real
//! [`publish`](crate::catalog::channel::publish::publish) (the import checks, the signature,
//! prebuilt indexes when asked) into HQ's own channel folder, then made what the origin serves,
//! bundle first and document last, at the moment the bench chooses. Publishing a 100,000-item
//! bundle (checks, index build) takes minutes of CPU: it happens before the timed part, so the
//! roll-out measures what the boxes do, not what HQ did.

use std::path::{Path, PathBuf};

use super::{FleetError, fail};
use crate::catalog::EmbedderFingerprint;
use crate::catalog::channel::doc::{self, ChannelDocument};
use crate::catalog::channel::keys::{SigningKey, key_id};
use crate::catalog::channel::publish::{PublishOptions, publish};
use crate::catalog::index::IndexParams;
use crate::catalog::synth::{self, Embeddings};

/// A version published to HQ's folder and not yet served.
pub struct Staged {
    pub doc: ChannelDocument,
    /// The document as HQ wrote it.
    document: Vec<u8>,
    bundle: PathBuf,
}

pub struct Publisher {
    key: SigningKey,
    /// The origin's folder (what nginx serves).
    served: PathBuf,
    /// HQ's own channel folder.
    staging: PathBuf,
    work: PathBuf,
    pub fingerprint: EmbedderFingerprint,
    /// Build the boxes' indexes into the bundle with these parameters.
    index: Option<IndexParams>,
}

impl Publisher {
    /// A throw-away key; bundles for `fingerprint`.
    pub fn new(
        served: PathBuf,
        work: PathBuf,
        fingerprint: EmbedderFingerprint,
        index: Option<IndexParams>,
    ) -> Result<Self, FleetError> {
        let kp = minisign::KeyPair::generate_unencrypted_keypair()
            .map_err(|e| FleetError(format!("generating a key pair: {e}")))?;
        let key = SigningKey {
            key_id: key_id(kp.pk.keynum()),
            secret: kp.sk,
            public: kp.pk,
        };
        let staging = work.join("channel");
        std::fs::create_dir_all(&staging).map_err(fail("creating HQ's channel folder"))?;
        Ok(Self {
            key,
            served,
            staging,
            work,
            fingerprint,
            index,
        })
    }

    /// The public key a box trusts.
    pub fn public(&self) -> String {
        self.key.public_text()
    }

    /// Writes a synthetic bundle of `items` labelled `version` (npy vectors, as HQ exports
    /// them) and publishes it to HQ's folder.
    pub async fn stage(&self, version: &str, items: usize) -> Result<Staged, FleetError> {
        let dir = self.work.join(format!("bundle-{version}"));
        let seed = version.bytes().map(u64::from).sum();
        synth::write_bundle(
            &dir,
            version,
            items,
            items.min(8),
            &self.fingerprint,
            Embeddings::Npy,
            version,
            seed,
        )
        .map_err(|e| FleetError(format!("synthetic bundle: {e}")))?;
        let mut opts = PublishOptions::new(dir, self.staging.display().to_string());
        opts.rollout = Some(100);
        opts.index = self.index;
        let report = publish(&opts, &self.key)
            .await
            .map_err(|e| FleetError(format!("publishing {version}: {e}")))?;
        let document = std::fs::read(self.staging.join(doc::DOCUMENT))
            .map_err(fail("reading HQ's channel document"))?;
        let doc: ChannelDocument = serde_json::from_slice(&document)
            .map_err(|e| FleetError(format!("HQ's channel document: {e}")))?;
        Ok(Staged {
            doc,
            document,
            bundle: self.staging.join(&report.bundle),
        })
    }

    /// Makes `staged` what the origin serves: its bundle, then its document.
    pub fn serve(&self, staged: &Staged) -> Result<(), FleetError> {
        let bytes = std::fs::read(&staged.bundle).map_err(fail("reading a staged bundle"))?;
        put(&self.served.join(&staged.doc.bundle), &bytes)?;
        put(&self.served.join(doc::DOCUMENT), &staged.document)
    }
}

/// Writes beside and renames: nginx must never serve a half-written object.
fn put(p: &Path, bytes: &[u8]) -> Result<(), FleetError> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(fail(format!("creating {}", dir.display())))?;
    }
    let tmp = p.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).map_err(fail(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, p).map_err(fail(format!("renaming to {}", p.display())))
}
