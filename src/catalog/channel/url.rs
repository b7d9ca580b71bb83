//! What a channel URL means, for both sides: HQ's `vitrine catalog publish --channel URL` and a
//! box's `[catalog.channel] url`. One parser turns the text into a [`ChannelUrl`] (kind of
//! store, bucket or host, prefix), names the objects under it, and refuses what a side cannot
//! use with an error naming the problem and the fix. [`super::store`] opens it.
//!
//! | URL | store | HQ publishes | a box reads |
//! | --- | --- | --- | --- |
//! | `s3://bucket/prefix` (`s3a://` for HQ) | S3 or S3-compatible | yes | yes |
//! | `gs://bucket/prefix` | Google Cloud Storage | yes | no: its HTTPS address |
//! | `az://container/prefix` (`azure`, `abfs[s]`, `adl`) | Azure Blob Storage | yes | no: its HTTPS address |
//! | `https://host/prefix`, `http://host/prefix` | an HTTP origin or CDN | no: read-only | yes |
//! | `file:///folder` (`file://localhost/folder`) | a local folder | yes | yes |
//! | `folder` (no scheme) | a local folder | yes | no |
//!
//! Credentials never travel in the URL: a user name, password, query or fragment (where a
//! pre-signed URL keeps its signature) is refused, and a refused URL is echoed with those parts
//! replaced by `***`. So a parsed URL's text ([`Display`](std::fmt::Display)) cannot hold a secret,
//! and it is what logs, `/api/status`, version sources and publish reports show.

use std::path::Path as FsPath;

use object_store::path::Path;

/// Who reads the URL: what it may name differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// HQ's `publish`: writes, so an HTTP origin is refused and a folder is created.
    Publish,
    /// A box's `[catalog.channel]`: reads S3, an HTTP origin or a `file://` folder.
    Subscribe,
}

/// What kind of store a channel URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3,
    Gcs,
    Azure,
    /// A plain HTTP(S) origin: boxes read from it, nothing can publish to it.
    Http,
    Folder,
}

/// A parsed channel URL, checked for its side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelUrl {
    kind: Kind,
    side: Side,
    /// `s3://bucket`, `https://host:port` (the scheme lower-cased), or the folder's path.
    root: String,
    /// The channel's prefix inside the bucket or origin, without outer slashes ("" for its top
    /// and for folders).
    prefix: String,
    /// What is shown. A box keys its remembered sequence on it (`data/channel/state.json`):
    /// a change in how a URL is written out makes every box forget its replay protection.
    text: String,
}

/// Why a channel URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    Empty,
    /// A box was given no scheme (HQ takes that as a folder path).
    NotAUrl,
    UnknownScheme(String),
    /// A store a box does not read directly (`gs`, `az`, …).
    NotForBoxes(String),
    /// HQ was given an HTTP origin, which cannot be written.
    ReadOnly,
    UserInfo,
    QueryOrFragment,
    NoBucket,
    /// Not an S3 bucket name.
    BadBucket(String),
    NoHost,
    RelativeFile,
    /// A prefix (or folder) with an empty, `.`, `..` or control-character part.
    BadPath(String),
    /// An object name under the channel that is not a plain relative name.
    BadObject(String),
}

/// A refused channel URL: which side read it, the URL with any secret replaced, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UrlError {
    pub side: Side,
    /// The URL as given, redacted ([`redact`]).
    pub url: String,
    pub problem: UrlProblem,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use UrlProblem as P;
        let box_side = self.side == Side::Subscribe;
        match self.side {
            Side::Subscribe => write!(f, "catalog.channel.url = \"{}\": ", self.url)?,
            Side::Publish => write!(f, "channel URL '{}': ", self.url)?,
        }
        let schemes = if box_side {
            "s3://bucket/prefix (S3 or an S3-compatible store), https://host/prefix (an origin or CDN) or file:///folder"
        } else {
            "s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///folder or a folder path"
        };
        let credentials = if box_side {
            "credentials go in catalog.channel.credentials_file or the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); an https:// origin is served without them"
        } else {
            "credentials go in the environment or a --credentials file (AWS_*, GOOGLE_*, AZURE_*)"
        };
        match &self.problem {
            P::Empty => write!(f, "it is empty: use {schemes}"),
            P::NotAUrl => write!(f, "not a URL: use {schemes}"),
            P::UnknownScheme(s) => write!(f, "scheme '{s}' is not supported; use {schemes}"),
            P::NotForBoxes(s) => write!(
                f,
                "scheme '{s}' is not supported by a box; give it the bucket's https:// address (or a CDN in front of it), or publish to an s3:// bucket"
            ),
            P::ReadOnly => f.write_str(
                "an HTTP origin is read-only: publish to the bucket or folder behind it (s3://…, gs://…, az://…, file://…) and let the origin serve that",
            ),
            P::UserInfo => write!(
                f,
                "a user name or password does not belong in the URL (it would show in logs and /api/status); {credentials}"
            ),
            P::QueryOrFragment => write!(
                f,
                "a channel URL takes no query or fragment (a token in it would show in logs and /api/status); {credentials}"
            ),
            P::NoBucket => f.write_str("no bucket: write s3://bucket/prefix"),
            P::BadBucket(b) => write!(
                f,
                "'{b}' is not a bucket name (3–63 lower-case letters, digits, '-' or '.')"
            ),
            P::NoHost => f.write_str("no host: write https://host/prefix"),
            P::RelativeFile => f.write_str(
                "a file URL needs an absolute folder: file:///srv/channel (or give HQ the plain path)",
            ),
            P::BadPath(p) => write!(
                f,
                "the path '{p}' has an empty, '.' or '..' part (or a control character): write it as a/b/c"
            ),
            P::BadObject(name) => write!(
                f,
                "object name '{name}' is not a plain relative name (a/b/c, no '.' or '..')"
            ),
        }
    }
}

/// `url` as it may be shown: a user name and password, and a query or fragment (which could
/// hold a signature), replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let (rest, query) = match rest.find(['?', '#']) {
        Some(i) => (&rest[..i], "?***"),
        None => (rest, ""),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let slash = if rest.contains('/') { "/" } else { "" };
    format!("{scheme}://{authority}{slash}{path}{query}")
}

/// `path` without outer slashes, checked as an object-store path.
fn clean_path(path: &str) -> Result<String, UrlProblem> {
    let trimmed = path.trim_matches('/');
    if !trimmed.is_empty() {
        Path::parse(trimmed).map_err(|_| UrlProblem::BadPath(path.into()))?;
    }
    Ok(trimmed.into())
}

/// S3's rule (and what a box has always checked): a bucket no box can name is refused at HQ too.
fn s3_bucket(bucket: &str) -> Result<(), UrlProblem> {
    if bucket.is_empty() {
        return Err(UrlProblem::NoBucket);
    }
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(UrlProblem::BadBucket(bucket.into()))
    }
}

impl ChannelUrl {
    /// Parses `url` for `side`; see the module header for what each side takes.
    pub fn new(url: &str, side: Side) -> Result<Self, UrlError> {
        Self::parse_as(url, side).map_err(|problem| UrlError {
            side,
            url: redact(url),
            problem,
        })
    }

    fn parse_as(url: &str, side: Side) -> Result<Self, UrlProblem> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return match side {
                _ if url.trim().is_empty() => Err(UrlProblem::Empty),
                Side::Subscribe => Err(UrlProblem::NotAUrl),
                Side::Publish => Ok(Self::folder(side, url, url.into())),
            };
        };
        let scheme = scheme.to_ascii_lowercase();
        let kind = match (scheme.as_str(), side) {
            ("s3", _) | ("s3a", Side::Publish) => Kind::S3,
            ("gs", Side::Publish) => Kind::Gcs,
            ("az" | "azure" | "abfs" | "abfss" | "adl", Side::Publish) => Kind::Azure,
            ("http" | "https", Side::Subscribe) => Kind::Http,
            ("http" | "https", Side::Publish) => return Err(UrlProblem::ReadOnly),
            ("s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl", Side::Subscribe) => {
                return Err(UrlProblem::NotForBoxes(scheme));
            }
            ("file", _) => Kind::Folder,
            _ => return Err(UrlProblem::UnknownScheme(scheme)),
        };
        if rest.contains(['?', '#']) {
            return Err(UrlProblem::QueryOrFragment);
        }
        if kind == Kind::Folder {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(UrlProblem::RelativeFile);
            }
            let root = format!("/{}", clean_path(path)?);
            return Ok(Self::folder(side, &root, format!("file://{root}")));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(UrlProblem::UserInfo);
        }
        match kind {
            Kind::S3 => s3_bucket(authority)?,
            Kind::Http if authority.is_empty() => return Err(UrlProblem::NoHost),
            _ if authority.is_empty() => return Err(UrlProblem::NoBucket),
            _ => {}
        }
        let prefix = clean_path(path)?;
        let root = format!("{scheme}://{authority}");
        let text = if prefix.is_empty() {
            root.clone()
        } else {
            format!("{root}/{prefix}")
        };
        Ok(Self {
            kind,
            side,
            root,
            prefix,
            text,
        })
    }

    fn folder(side: Side, path: &str, text: String) -> Self {
        Self {
            kind: Kind::Folder,
            side,
            root: path.into(),
            prefix: String::new(),
            text,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn is_s3(&self) -> bool {
        self.kind == Kind::S3
    }

    /// The bucket or container (S3, GCS, Azure), or the host and port (HTTP).
    pub fn authority(&self) -> Option<&str> {
        match self.kind {
            Kind::Folder => None,
            _ => self.root.split_once("://").map(|(_, a)| a),
        }
    }

    /// `s3://bucket`, `https://host:port`: what an object-store builder is given.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The local folder of a `file://` URL or a plain path.
    pub fn folder_path(&self) -> Option<&FsPath> {
        (self.kind == Kind::Folder).then(|| FsPath::new(&self.root))
    }

    /// The channel's prefix in its bucket or origin: `a/b`, or "" for its top and for folders.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL as it may be shown anywhere.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// An object under the channel (`channel.json`, `bundles/…`), as a path relative to the
    /// channel's prefix.
    pub fn object(&self, name: &str) -> Result<Path, UrlError> {
        match Path::parse(name) {
            Ok(p) if !name.is_empty() && !name.starts_with('/') => Ok(p),
            _ => Err(UrlError {
                side: self.side,
                url: self.text.clone(),
                problem: UrlProblem::BadObject(name.into()),
            }),
        }
    }
}

impl std::fmt::Display for ChannelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(url: &str) -> [ChannelUrl; 2] {
        [Side::Publish, Side::Subscribe]
            .map(|s| ChannelUrl::new(url, s).unwrap_or_else(|e| panic!("{url}: {e}")))
    }

    #[test]
    fn s3_urls_name_their_bucket_and_prefix_on_both_sides() {
        for u in both("s3://fleet-eu/stores/paris/") {
            assert_eq!(u.kind(), Kind::S3);
            assert_eq!(
                (u.root(), u.authority(), u.prefix()),
                ("s3://fleet-eu", Some("fleet-eu"), "stores/paris")
            );
            assert_eq!(u.to_string(), "s3://fleet-eu/stores/paris");
            assert!(u.is_s3());
        }
        for u in both("S3://fleet") {
            assert_eq!((u.prefix(), u.as_str()), ("", "s3://fleet"));
        }
        let u = ChannelUrl::new("s3a://fleet/p", Side::Publish).unwrap();
        assert_eq!((u.kind(), u.root()), (Kind::S3, "s3a://fleet"));
    }

    #[test]
    fn gcs_and_azure_urls_are_for_publishing() {
        let u = ChannelUrl::new("gs://fleet", Side::Publish).unwrap();
        assert_eq!(
            (u.kind(), u.prefix(), u.as_str()),
            (Kind::Gcs, "", "gs://fleet")
        );
        for scheme in ["az", "azure", "abfs", "abfss", "adl"] {
            let u = ChannelUrl::new(&format!("{scheme}://container/p"), Side::Publish).unwrap();
            assert_eq!(
                (u.kind(), u.authority(), u.prefix()),
                (Kind::Azure, Some("container"), "p")
            );
        }
        for url in ["gs://fleet/eu", "az://container/eu", "s3a://fleet/eu"] {
            let e = ChannelUrl::new(url, Side::Subscribe).unwrap_err();
            assert!(matches!(e.problem, UrlProblem::NotForBoxes(_)), "{e}");
            assert!(e.to_string().contains("https:// address"), "{e}");
        }
    }

    #[test]
    fn http_origins_are_read_by_boxes_and_refused_for_publishing() {
        let u = ChannelUrl::new("https://cdn.example.com:8443/eu/", Side::Subscribe).unwrap();
        assert_eq!(
            (u.kind(), u.root(), u.prefix(), u.as_str()),
            (
                Kind::Http,
                "https://cdn.example.com:8443",
                "eu",
                "https://cdn.example.com:8443/eu"
            )
        );
        let u = ChannelUrl::new("HTTP://127.0.0.1:9", Side::Subscribe).unwrap();
        assert_eq!(
            (u.as_str(), u.authority()),
            ("http://127.0.0.1:9", Some("127.0.0.1:9"))
        );
        for url in ["http://127.0.0.1:9/channel", "https://cdn.example.com/eu"] {
            let e = ChannelUrl::new(url, Side::Publish).unwrap_err();
            assert_eq!(e.problem, UrlProblem::ReadOnly);
            let e = e.to_string();
            assert!(
                e.contains("read-only") && e.contains("publish to the bucket"),
                "{e}"
            );
        }
    }

    #[test]
    fn folders_are_file_urls_or_for_hq_plain_paths() {
        for u in both("file:///srv/channel/") {
            assert_eq!(u.kind(), Kind::Folder);
            assert_eq!(u.folder_path(), Some(FsPath::new("/srv/channel")));
            assert_eq!((u.prefix(), u.authority()), ("", None));
            assert_eq!(u.as_str(), "file:///srv/channel");
        }
        for u in both("file://localhost/srv/channel") {
            assert_eq!(u.as_str(), "file:///srv/channel");
        }
        let u = ChannelUrl::new("relative/folder", Side::Publish).unwrap();
        assert_eq!(u.folder_path(), Some(FsPath::new("relative/folder")));
        assert_eq!(u.as_str(), "relative/folder");
        let e = ChannelUrl::new("cdn.example.com/eu", Side::Subscribe).unwrap_err();
        assert_eq!(e.problem, UrlProblem::NotAUrl);
        assert!(e.to_string().contains("not a URL"), "{e}");
    }

    #[test]
    fn every_refusal_names_the_problem_and_never_a_secret() {
        use Side::{Publish as Hq, Subscribe as Sub};
        use UrlProblem as P;
        let cases = [
            (
                "s3://key:secret@bucket/p",
                Hq,
                P::UserInfo,
                "user name or password",
            ),
            (
                "s3://key:secret@bucket/x",
                Sub,
                P::UserInfo,
                "credentials go in catalog.channel.credentials_file",
            ),
            (
                "https://hq:secret@cdn.example.com/eu",
                Sub,
                P::UserInfo,
                "does not belong in the URL",
            ),
            (
                "https://cdn/p?sig=secret",
                Sub,
                P::QueryOrFragment,
                "no query",
            ),
            (
                "s3://bucket/p?X-Amz-Signature=secret",
                Hq,
                P::QueryOrFragment,
                "--credentials",
            ),
            ("s3://bucket/p#secret", Sub, P::QueryOrFragment, "no query"),
            ("file:///srv/ch?secret", Hq, P::QueryOrFragment, "no query"),
            (
                "ftp://host/p",
                Hq,
                P::UnknownScheme("ftp".into()),
                "use s3://",
            ),
            (
                "ftp://host/x",
                Sub,
                P::UnknownScheme("ftp".into()),
                "not supported",
            ),
            ("s3:///p", Hq, P::NoBucket, "no bucket"),
            ("s3:///p", Sub, P::NoBucket, "no bucket"),
            ("gs:///p", Hq, P::NoBucket, "no bucket"),
            ("az://", Hq, P::NoBucket, "no bucket"),
            (
                "s3://Bad_Bucket/x",
                Sub,
                P::BadBucket("Bad_Bucket".into()),
                "bucket name",
            ),
            ("s3://b/x", Hq, P::BadBucket("b".into()), "3–63"),
            ("https:///eu", Sub, P::NoHost, "no host"),
            ("file://relative/x", Sub, P::RelativeFile, "absolute"),
            ("file://relative", Hq, P::RelativeFile, "absolute folder"),
            (
                "s3://bucket/a/../b",
                Sub,
                P::BadPath("a/../b".into()),
                "'..'",
            ),
            ("s3://bucket/a//b", Hq, P::BadPath("a//b".into()), "empty"),
            ("https://cdn/./b", Sub, P::BadPath("./b".into()), "'.'"),
            (
                "file:///srv/../etc",
                Hq,
                P::BadPath("/srv/../etc".into()),
                "'..'",
            ),
            ("", Hq, P::Empty, "it is empty"),
            (" ", Sub, P::Empty, "it is empty"),
            ("http://127.0.0.1/ch", Hq, P::ReadOnly, "read-only"),
        ];
        for (url, side, problem, says) in cases {
            let e = ChannelUrl::new(url, side).unwrap_err();
            assert_eq!(e.problem, problem, "{url}");
            let shown = e.to_string();
            assert!(shown.contains(says), "{url}: {shown}");
            // The refusal quotes the URL, but never the secret in it.
            assert!(
                !shown.contains("secret") && !shown.contains("sig="),
                "{shown}"
            );
        }
        assert_eq!(
            ChannelUrl::new("https://hq:pw@cdn/eu?t=x", Side::Subscribe)
                .unwrap_err()
                .to_string(),
            "catalog.channel.url = \"https://***@cdn/eu?***\": a channel URL takes no query or fragment (a token in it would show in logs and /api/status); credentials go in catalog.channel.credentials_file or the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); an https:// origin is served without them"
        );
    }

    #[test]
    fn objects_are_named_under_the_channel() {
        let [u, _] = both("s3://fleet/eu");
        assert_eq!(u.object("bundles/x.tar").unwrap().as_ref(), "bundles/x.tar");
        for bad in ["", "/abs", "a/../b", "a//b", "."] {
            let e = u.object(bad).unwrap_err();
            assert_eq!(e.problem, UrlProblem::BadObject(bad.into()), "{bad}");
            assert!(e.to_string().contains("s3://fleet/eu"), "{e}");
        }
    }
}
