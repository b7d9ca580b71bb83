//! The publisher's key pair: `vitrine catalog keygen` writes it, `vitrine catalog publish` signs
//! with it.
//!
//! Both files are in minisign's formats, so `minisign -Vm bundle.tar.gz -P …` (or rsign2) can
//! check a published bundle by hand, and a key made with `minisign -G` can publish:
//! - `vitrine.key`: the secret key, mode 0600, encrypted with a password when
//!   [`PASSWORD_ENV`] is set (scrypt, as minisign does), else unencrypted with a warning — HQ
//!   may keep it in a secrets manager or an HSM-backed file system instead;
//! - `vitrine.pub`: the public key each box lists in `catalog.channel.public_keys`.
//!
//! The password is read from the environment only, never from the command line (where `ps` and
//! shell histories would show it) and never prompted for, so publishing runs unattended in CI.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable holding the secret key's password.
pub const PASSWORD_ENV: &str = "VITRINE_KEY_PASSWORD";
pub const SECRET_FILE: &str = "vitrine.key";
pub const PUBLIC_FILE: &str = "vitrine.pub";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{0} already exists: keygen never overwrites a key (boxes trust the old one); move it away or choose another --out"
    )]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the secret key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a minisign secret key: {why}")]
    NotAKey { path: PathBuf, why: String },
    #[error("{path} is encrypted: set {PASSWORD_ENV} to its password")]
    NeedPassword { path: PathBuf },
    #[error("{path}: the password in {PASSWORD_ENV} does not open it ({why})")]
    WrongPassword { path: PathBuf, why: String },
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// What `keygen` wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    pub secret: PathBuf,
    pub public: PathBuf,
    /// The key id minisign prints (16 hex digits), which signatures name.
    pub key_id: String,
    pub encrypted: bool,
}

/// A key id as minisign shows it.
pub fn key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&keynum[..8.min(keynum.len())]);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// Writes a new key pair into `dir` (created if missing), encrypted with `password` when given.
/// Refuses to overwrite either file.
pub fn keygen(dir: &Path, password: Option<String>) -> Result<Generated, KeyError> {
    let secret = dir.join(SECRET_FILE);
    let public = dir.join(PUBLIC_FILE);
    for p in [&secret, &public] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.into(),
        source,
    })?;
    let encrypted = password.is_some();
    let kp = match password {
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| KeyError::Generate(e.to_string()))?;
    let id = key_id(kp.pk.keynum());
    let comment = if encrypted {
        format!("vitrine secret key {id}, encrypted")
    } else {
        format!("vitrine secret key {id}, NOT encrypted")
    };
    let sk_text = kp
        .sk
        .to_box(Some(&comment))
        .map_err(|e| KeyError::Generate(e.to_string()))?
        .into_string();
    let pk_text = kp
        .pk
        .to_box()
        .map_err(|e| KeyError::Generate(e.to_string()))?
        .into_string();
    write_new(&secret, sk_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, pk_text.as_bytes(), 0o644) {
        // Half a key pair is of no use and would block the next keygen.
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }
    Ok(Generated {
        secret,
        public,
        key_id: id,
        encrypted,
    })
}

/// Creates `path` (never replacing a file) with `mode` from the start, so the secret key is never
/// readable by others even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let werr = |source| KeyError::Write {
        path: path.into(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.into())
        } else {
            werr(e)
        }
    })?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)
}

/// A secret key ready to sign, and its public half.
#[derive(Clone)]
pub struct SigningKey {
    pub secret: minisign::SecretKey,
    pub public: minisign::PublicKey,
    pub key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

impl SigningKey {
    /// Reads a minisign secret key, decrypting it with `password` when it is encrypted.
    pub fn load(path: &Path, password: Option<String>) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        let not_a_key = |why: String| KeyError::NotAKey {
            path: path.into(),
            why,
        };
        if text.lines().count() < 2 {
            return Err(not_a_key(
                "expected an 'untrusted comment:' line and the key (vitrine catalog keygen writes one)".into(),
            ));
        }
        let sk_box =
            minisign::SecretKeyBox::from_string(&text).map_err(|e| not_a_key(e.to_string()))?;
        let secret = match minisign::SecretKey::from_unencrypted_box(sk_box.clone()) {
            Ok(sk) => sk,
            // minisign says "Key might be encrypted" for a key with a KDF; anything else is a
            // broken file.
            Err(e) if e.to_string().contains("encrypted") => {
                let Some(pw) = password else {
                    return Err(KeyError::NeedPassword { path: path.into() });
                };
                minisign::SecretKey::from_box(sk_box, Some(pw)).map_err(|e| {
                    KeyError::WrongPassword {
                        path: path.into(),
                        why: e.to_string(),
                    }
                })?
            }
            Err(e) => return Err(not_a_key(e.to_string())),
        };
        let public =
            minisign::PublicKey::from_secret_key(&secret).map_err(|e| not_a_key(e.to_string()))?;
        Ok(Self {
            key_id: key_id(public.keynum()),
            secret,
            public,
        })
    }

    /// The public key in minisign's text form (what a box trusts).
    pub fn public_text(&self) -> String {
        self.public
            .to_box()
            .map(|b| b.into_string())
            .unwrap_or_default()
    }

    /// Signs a stream (minisign's prehashed signature: BLAKE2b-512 of the data, then Ed25519),
    /// returning the `.minisig` text.
    pub fn sign(&self, data: impl std::io::Read, what: &str) -> Result<String, String> {
        let trusted = format!(
            "timestamp:{} {what}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        let untrusted = format!("signature from vitrine secret key {}", self.key_id);
        minisign::sign(
            Some(&self.public),
            &self.secret,
            data,
            Some(&trusted),
            Some(&untrusted),
        )
        .map(|b| b.into_string())
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::channel::TrustedKeys;

    #[test]
    fn keygen_writes_a_private_secret_key_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let g = keygen(dir.path(), None).unwrap();
        assert!(!g.encrypted);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&g.secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let before = std::fs::read(&g.secret).unwrap();
        let e = keygen(dir.path(), None).unwrap_err();
        assert!(matches!(e, KeyError::Exists(_)), "{e}");
        assert_eq!(std::fs::read(&g.secret).unwrap(), before);

        // What it signs verifies with the public file, as a box reads it.
        let key = SigningKey::load(&g.secret, None).unwrap();
        assert_eq!(key.key_id, g.key_id);
        let public = std::fs::read_to_string(&g.public).unwrap();
        let trusted = TrustedKeys::parse(&[public]).unwrap();
        let sig = key.sign(&b"bundle"[..], "test").unwrap();
        trusted.verify("bundle", b"bundle", &sig).unwrap();
        trusted
            .verify_reader("bundle", &b"bundle"[..], &sig)
            .unwrap();
        assert!(trusted.verify("bundle", b"bundlf", &sig).is_err());
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let g = keygen(dir.path(), Some("correct horse".into())).unwrap();
        assert!(g.encrypted);
        let e = SigningKey::load(&g.secret, None).unwrap_err();
        assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
        let e = SigningKey::load(&g.secret, Some("wrong".into())).unwrap_err();
        assert!(matches!(e, KeyError::WrongPassword { .. }), "{e}");
        let key = SigningKey::load(&g.secret, Some("correct horse".into())).unwrap();
        assert_eq!(key.key_id, g.key_id);
        // A public key is not a secret key.
        let e = SigningKey::load(&g.public, None).unwrap_err();
        assert!(matches!(e, KeyError::NotAKey { .. }), "{e}");
    }
}
