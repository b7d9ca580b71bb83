//! A small publisher for the subscriber's tests: signs bundles and channel documents with a
//! minisign key as HQ's `vitrine catalog publish` does, and writes them where a server serves
//! them (a folder nginx or a `file://` channel reads, or an s3s-fs bucket through a PUT).
//! Deliberately apart from the real publisher, so these tests can also write what it never
//! would: a replayed document, a tampered bundle, a signature by a stranger's key.

use std::path::{Path, PathBuf};

use vitrine::catalog::EmbedderFingerprint;
use vitrine::catalog::channel::doc::{self, ChannelDocument, FORMAT, bundle_object_name};
use vitrine::catalog::synth::{self, Embeddings};

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A publisher's key pair.
pub struct Key {
    sk: minisign::SecretKey,
    /// The public key as `minisign.pub` holds it (comment line + base64).
    pub public: String,
}

impl Key {
    pub fn generate() -> Key {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
        Key {
            public: kp.pk.to_box().expect("public key box").into_string(),
            sk: kp.sk,
        }
    }

    pub fn sign(&self, bytes: &[u8]) -> String {
        minisign::sign(None, &self.sk, std::io::Cursor::new(bytes), None, None)
            .expect("sign")
            .into_string()
    }

    /// Writes the public key to `path` (what a box's `public_keys` names).
    pub fn write_public(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.public).expect("write public key");
        path.into()
    }
}

/// A `.tar.gz` bundle of `n` items `<prefix>-<i>` made for `fingerprint`, with `label` as its
/// manifest version.
pub fn bundle(
    work: &Path,
    prefix: &str,
    n: usize,
    fingerprint: &EmbedderFingerprint,
    seed: u64,
) -> Vec<u8> {
    let dir = work.join(format!("bundle-{prefix}"));
    synth::write_bundle(
        &dir,
        prefix,
        n,
        n.min(8),
        fingerprint,
        Embeddings::Inline,
        prefix,
        seed,
    )
    .expect("bundle");
    let out = work.join(format!("{prefix}.tar.gz"));
    vitrine::catalog::bundle::pack_tar_gz(&dir, &out).expect("pack");
    std::fs::read(&out).expect("read archive")
}

/// A signed channel document for `bundle`.
pub fn document(
    key: &Key,
    sequence: u64,
    version: &str,
    bundle: &[u8],
    embedder: Option<EmbedderFingerprint>,
    rollout_percent: u8,
    revoked: &[&str],
) -> ChannelDocument {
    let sha = sha256_hex(bundle);
    let mut d = ChannelDocument {
        format: FORMAT.into(),
        sequence,
        version: version.into(),
        bundle: bundle_object_name(&sha, "tar.gz"),
        size: bundle.len() as u64,
        sha256: sha,
        bundle_signature: key.sign(bundle),
        embedder,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        rollout_percent,
        revoked: revoked.iter().map(|s| s.to_string()).collect(),
        signature: String::new(),
    };
    resign(key, &mut d);
    d
}

/// Signs `d` again after an edit.
pub fn resign(key: &Key, d: &mut ChannelDocument) {
    d.signature = key.sign(&d.signed_bytes());
}

/// Where a test channel's objects go.
pub enum Target<'a> {
    /// A folder served as the channel's root (nginx's `root`, or a `file://` channel).
    Folder(&'a Path),
    /// An s3s-fs bucket and prefix, written through object_store (signed when `keys` are given).
    S3 {
        endpoint: &'a str,
        bucket: &'a str,
        prefix: &'a str,
        keys: Option<(&'a str, &'a str)>,
    },
}

impl Target<'_> {
    pub fn put(&self, name: &str, bytes: &[u8]) {
        match self {
            Target::Folder(root) => {
                let p = root.join(name);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                // Write beside and rename: a server must never serve a half-written object.
                let tmp = p.with_extension("tmp-write");
                std::fs::write(&tmp, bytes).expect("write object");
                // nginx's ETag is the modification second and the size: two documents of one
                // length written within a second would share it. Real publishes are minutes
                // apart; here each write gets a second of its own.
                static LAST: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
                let mut last = LAST.lock().expect("mtime clock");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                *last = now.max(*last + 1);
                let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*last);
                std::fs::File::options()
                    .write(true)
                    .open(&tmp)
                    .and_then(|f| f.set_modified(mtime))
                    .expect("set mtime");
                std::fs::rename(&tmp, &p).expect("rename object");
            }
            Target::S3 {
                endpoint,
                bucket,
                prefix,
                keys,
            } => {
                use object_store::ObjectStoreExt;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(*endpoint)
                    .with_allow_http(true)
                    .with_region("us-east-1")
                    .with_bucket_name(*bucket);
                b = match keys {
                    Some((id, secret)) => b.with_access_key_id(*id).with_secret_access_key(*secret),
                    None => b.with_skip_signature(true),
                };
                let store = b.build().expect("S3 client");
                let path = object_store::path::Path::from(format!("{prefix}/{name}"));
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(store.put(&path, bytes.to_vec().into()))
                    .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
            }
        }
    }

    /// Uploads the bundle, then the document (a box never sees a document naming a missing
    /// bundle).
    pub fn publish(&self, bundle: &[u8], d: &ChannelDocument) {
        self.put(&d.bundle, bundle);
        self.put_document(d);
    }

    pub fn put_document(&self, d: &ChannelDocument) {
        self.put(
            doc::DOCUMENT,
            &serde_json::to_vec_pretty(d).expect("document json"),
        );
    }
}
