//! Configuration in two layers: [`RawConfig`] is the TOML file as written (serde, unknown keys
//! refused), [`Settings`] is what the daemon runs on — paths resolved against the config file's
//! folder, model files read and checksummed, label maps parsed, thresholds in range. Every
//! problem is collected and reported together, so a technician fixes a config in one go.
//! `vitrine validate` and `vitrine serve` go through the same [`Settings::load`].

pub mod model;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capture::SourceConfig;
use crate::catalog::IndexParams;
use crate::http::serve::ConnLimits;
use crate::recommend::TrackerSettings;
use crate::vision::fusion::{RawSimilarity, Recipe};
use crate::vision::geometry::NmsParams;
use crate::vision::preprocess::ResizeMode;
use crate::vision::regions::{BodyGates, RegionSettings};
use crate::vision::runtime::{Provider, SessionOptions};
use model::{DetectorSpec, EmbedderSpec, ModelSpec, PoseSpec};

/// The demo configuration shipped at the project root; `vitrine serve` without `--config` uses it.
pub const DEMO_CONFIG: &str = "vitrine.toml";

#[derive(Debug, thiserror::Error)]
#[error("configuration {path} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub runtime: RawRuntime,
    pub camera: SourceConfig,
    pub detector: RawDetector,
    #[serde(default)]
    pub regions: RegionSettings,
    pub embedder: RawEmbedder,
    #[serde(default)]
    pub similarity: RawSimilarity,
    /// A pose model for garment regions from the body and a person mask; none: the fixed layout.
    #[serde(default)]
    pub pose: Option<RawPose>,
    pub catalog: RawCatalog,
    #[serde(default)]
    pub recommend: RawRecommend,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub appliance: RawAppliance,
}

/// Who this box is in a chain of stores: the roll-out bucket and the fleet's metrics use it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppliance {
    /// Stable id of this box; none: the machine id (/etc/machine-id).
    #[serde(default)]
    pub id: Option<String>,
    /// The store this box stands in, as HQ names it (e.g. "paris-rivoli").
    #[serde(default)]
    pub store: String,
}

/// Where the box id is read when the config names none.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// The machine id systemd (or, on older images, D-Bus) keeps; the host name where a container
/// has neither, so a config without `appliance.id` still loads there.
fn machine_id() -> String {
    [MACHINE_ID, "/var/lib/dbus/machine-id", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

impl RawAppliance {
    fn settings(&self, problems: &mut Vec<String>) -> ApplianceSettings {
        let fits = |s: &str| {
            s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let id = match &self.id {
            Some(id) => id.trim().to_string(),
            None => machine_id(),
        };
        if id.is_empty() {
            problems.push(format!(
                "appliance.id is not set and {MACHINE_ID} is missing or empty: give the box an id (appliance.id = \"store-0042\")"
            ));
        } else if !fits(&id) {
            problems.push(format!(
                "appliance.id = {id:?} must be 1–64 letters, digits, '-', '_' or '.'"
            ));
        }
        if !fits(&self.store) {
            problems.push(format!(
                "appliance.store = {:?} must be at most 64 letters, digits, '-', '_' or '.'",
                self.store
            ));
        }
        ApplianceSettings {
            id,
            store: self.store.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Optional separate address for the staff catalog API.
    #[serde(default)]
    pub staff_listen: Option<String>,
    /// Shows the camera image on the display page. Off by default: shoppers' images never leave
    /// the pipeline unless a technician turns this on.
    #[serde(default)]
    pub debug_view: bool,
    /// Open HTTP connections at most (both listeners together).
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// Seconds a client gets to send a request's headers (also the keep-alive idle timeout).
    #[serde(default = "header_timeout_s")]
    pub header_timeout_s: u64,
    /// Seconds a connection may stay silent while no handler is working on it.
    #[serde(default = "idle_timeout_s")]
    pub idle_timeout_s: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            staff_listen: None,
            debug_view: false,
            max_connections: max_connections(),
            header_timeout_s: header_timeout_s(),
            idle_timeout_s: idle_timeout_s(),
        }
    }
}

fn max_connections() -> usize {
    1024
}
fn header_timeout_s() -> u64 {
    10
}
fn idle_timeout_s() -> u64 {
    60
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

impl RawServer {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=65536).contains(&self.max_connections) {
            p.push(format!(
                "server.max_connections = {} must be between 1 and 65536",
                self.max_connections
            ));
        }
        if !(1..=300).contains(&self.header_timeout_s) {
            p.push(format!(
                "server.header_timeout_s = {} must be between 1 and 300",
                self.header_timeout_s
            ));
        }
        // The display's event stream is silent between pings; it must outlive them.
        let ping = crate::http::display::PING_INTERVAL.as_secs();
        if !(ping + 5..=3600).contains(&self.idle_timeout_s) {
            p.push(format!(
                "server.idle_timeout_s = {} must be between {} (the display's ping interval + 5) and 3600",
                self.idle_timeout_s,
                ping + 5
            ));
        }
        p
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// Path of libonnxruntime.so; else ORT_DYLIB_PATH, else the project's `.runtime/` folder.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub require_gpu: bool,
    #[serde(default)]
    pub tensorrt_cache: Option<PathBuf>,
    #[serde(default)]
    pub intra_threads: usize,
    /// Let ONNX Runtime's threads spin between runs (lower latency, a core burnt while idle).
    #[serde(default)]
    pub spinning: bool,
}

impl Default for RawRuntime {
    fn default() -> Self {
        Self {
            onnxruntime: None,
            providers: default_providers(),
            require_gpu: false,
            tensorrt_cache: None,
            intra_threads: 0,
            spinning: false,
        }
    }
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    pub model: PathBuf,
    #[serde(default = "score")]
    pub score_threshold: f32,
    #[serde(default = "iou")]
    pub iou_threshold: f32,
    #[serde(default = "maxdet")]
    pub max_detections: usize,
    #[serde(default)]
    pub resize: ResizeMode,
}

fn score() -> f32 {
    0.4
}
fn iou() -> f32 {
    0.5
}
fn maxdet() -> usize {
    50
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedder {
    pub model: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPose {
    pub model: PathBuf,
    /// Below this pose confidence a person gets no garment region (the model invents limbs).
    #[serde(default = "half")]
    pub min_confidence: f32,
    /// A region needs its keypoints at least this visible (no bottom for a waist-up shopper).
    #[serde(default = "half")]
    pub min_visibility: f32,
    /// Pixels whose person probability is below this are not the shopper; 0 turns masking off.
    #[serde(default = "half")]
    pub mask_threshold: f32,
    /// What replaces the pixels off the shopper: the catalog photos' background.
    #[serde(default = "white")]
    pub background: [u8; 3],
    /// Crops with less of the shopper than this share are not embedded.
    #[serde(default = "min_share")]
    pub min_garment_share: f32,
    /// A shopper's body (and so their garments' embeddings) is looked at again after this long
    /// even when they stand still.
    #[serde(default = "pose_refresh")]
    pub refresh_ms: u64,
}

fn pose_refresh() -> u64 {
    3000
}

fn half() -> f32 {
    0.5
}
fn white() -> [u8; 3] {
    [255, 255, 255]
}
fn min_share() -> f32 {
    0.2
}

impl RawPose {
    /// Checks the thresholds and loads the model's TOML; every problem goes to `problems`.
    fn settings(&self, base: &Path, problems: &mut Vec<String>) -> Option<PoseSettings> {
        for (key, v) in [
            ("min_confidence", self.min_confidence),
            ("min_visibility", self.min_visibility),
            ("mask_threshold", self.mask_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("pose.{key} = {v} must be between 0 and 1"));
            }
        }
        if self.refresh_ms < 100 {
            problems.push(format!(
                "pose.refresh_ms = {} must be at least 100",
                self.refresh_ms
            ));
        }
        if !(0.0..1.0).contains(&self.min_garment_share) {
            problems.push(format!(
                "pose.min_garment_share = {} must be at least 0 and below 1",
                self.min_garment_share
            ));
        }
        let spec = ModelSpec::pose(&base.join(&self.model))
            .map_err(|p| problems.extend(p))
            .ok()?;
        Some(PoseSettings {
            spec,
            gates: BodyGates {
                min_confidence: self.min_confidence,
                min_visibility: self.min_visibility,
            },
            mask_threshold: self.mask_threshold,
            background: self.background,
            min_garment_share: self.min_garment_share,
            refresh: std::time::Duration::from_millis(self.refresh_ms),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// The catalog bundle imported as the first version when the data folder has none.
    pub path: PathBuf,
    #[serde(default)]
    pub index: IndexParams,
    /// Where catalog versions live (systemd: the state directory, /var/lib/vitrine).
    #[serde(default = "data_dir")]
    pub data_dir: PathBuf,
    /// Versions kept on disk; older ones are pruned (never the active one or its rollback).
    #[serde(default = "versions_kept")]
    pub versions_kept: usize,
    /// Largest bundle upload accepted by the staff API.
    #[serde(default = "upload_limit_mb")]
    pub upload_limit_mb: u64,
    /// Most an uploaded archive may unpack to, in all: a decompression bomb stops here.
    #[serde(default = "unpack_limit_mb")]
    pub unpack_limit_mb: u64,
    /// Threads that build a new index; 0: one per core.
    #[serde(default)]
    pub import_threads: usize,
    /// CPU priority (nice, 0–19) of those threads, so the live pipeline keeps its frame rate.
    #[serde(default = "import_nice")]
    pub import_nice: i32,
    /// File holding the staff API's bearer token (e.g. a systemd credential).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the staff API's bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Seconds an upload may send nothing before it is abandoned and the catalog freed.
    #[serde(default = "receive_timeout_s")]
    pub receive_timeout_s: u64,
    /// A catalog channel this box follows (README, "Subscribing a box"); none: staff imports only.
    #[serde(default)]
    pub channel: Option<RawChannel>,
}

/// `[catalog.channel]`: where HQ publishes this box's catalog, and whose signature it carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    /// `s3://bucket/prefix`, `https://host/prefix` (`http://` too) or `file:///folder`.
    pub url: String,
    /// The publisher's minisign public keys: files (`hq.pub`) or the key itself (the base64
    /// line). Two while HQ rotates its key.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// S3 keys in AWS's credentials-file or environment-file form; without it, `AWS_*` from the
    /// environment, else unsigned requests (a public bucket). Never the keys themselves here.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// An S3-compatible endpoint (`https://s3.example.net`); without it, `AWS_ENDPOINT` or AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Seconds between polls, each shifted by up to ±`poll_jitter` of it at random.
    #[serde(default = "poll_interval_s")]
    pub poll_interval_s: u64,
    #[serde(default = "poll_jitter")]
    pub poll_jitter: f64,
    /// Stay on this version label: any other offer is not taken.
    #[serde(default)]
    pub pin: Option<String>,
    /// Seconds to connect, and that a transfer may stall, before a request is given up.
    #[serde(default = "channel_timeout_s")]
    pub timeout_s: u64,
}

fn poll_interval_s() -> u64 {
    300
}
fn poll_jitter() -> f64 {
    0.2
}
fn channel_timeout_s() -> u64 {
    30
}

impl RawChannel {
    /// Checks every key and reads the files it names; every problem goes to `problems`.
    fn settings(&self, base: &Path, problems: &mut Vec<String>) -> Option<ChannelSettings> {
        use crate::catalog::channel::TrustedKeys;
        use crate::catalog::channel::store::{CredentialsProblem, StoreConfig, read_credentials};
        use crate::catalog::channel::url::{ChannelUrl, Side};
        let before = problems.len();
        let url = ChannelUrl::new(&self.url, Side::Subscribe)
            .map_err(|e| problems.push(e.to_string()))
            .ok();
        let s3 = url.as_ref().is_some_and(ChannelUrl::is_s3);
        let mut texts = Vec::new();
        for (i, entry) in self.public_keys.iter().enumerate() {
            // A key's own text parses; anything else names a file.
            if TrustedKeys::parse(std::slice::from_ref(entry)).is_ok() {
                texts.push(entry.clone());
                continue;
            }
            let path = base.join(entry);
            match std::fs::read_to_string(&path) {
                Ok(t) => match TrustedKeys::parse(std::slice::from_ref(&t)) {
                    Ok(_) => texts.push(t),
                    Err(e) => problems.push(format!(
                        "catalog.channel.public_keys[{i}]: {}: {}",
                        path.display(),
                        e.replace("public key 1 ", "")
                    )),
                },
                Err(e) => problems.push(format!(
                    "catalog.channel.public_keys[{i}] is neither a minisign public key nor a readable file ({}: {e}); give HQ's vitrine.pub or its key line",
                    path.display()
                )),
            }
        }
        if self.public_keys.is_empty() {
            problems.push(
                "catalog.channel.public_keys is empty: a box must know its publisher's key (HQ's vitrine.pub)".into(),
            );
        }
        let keys = TrustedKeys::parse(&texts).ok();
        let mut store = StoreConfig::default();
        match &self.credentials_file {
            Some(_) if !s3 && url.is_some() => {
                problems.push("catalog.channel.credentials_file is only for s3:// channels (an HTTP origin or a folder is read without keys)".into());
            }
            Some(f) => {
                let path = base.join(f);
                let problem = match read_credentials(&path) {
                    Ok(settings) => {
                        store.options = settings;
                        // A box's file is there for its S3 keys: one without them is a mistake.
                        (!store.has_key_pair()).then_some(CredentialsProblem::HalfKeyPair)
                    }
                    Err(e) => Some(e),
                };
                match problem {
                    None => {}
                    Some(CredentialsProblem::Unreadable(e)) => problems.push(format!(
                        "catalog.channel.credentials_file {} cannot be read ({e})",
                        path.display()
                    )),
                    Some(e) => problems.push(format!(
                        "catalog.channel.credentials_file {}: {e}",
                        path.display()
                    )),
                }
            }
            None => {}
        }
        if let Some(ep) = &self.endpoint {
            if url.is_some() && !s3 {
                problems.push("catalog.channel.endpoint is only for s3:// channels".into());
            } else if !(ep.starts_with("http://") || ep.starts_with("https://")) || ep.contains('@')
            {
                problems.push(format!(
                    "catalog.channel.endpoint = {ep:?} must be an http:// or https:// address without credentials"
                ));
            }
        }
        if !(1..=86_400).contains(&self.poll_interval_s) {
            problems.push(format!(
                "catalog.channel.poll_interval_s = {} must be between 1 and 86400",
                self.poll_interval_s
            ));
        }
        if !(0.0..=0.5).contains(&self.poll_jitter) {
            problems.push(format!(
                "catalog.channel.poll_jitter = {} must be between 0 and 0.5 (a share of the interval)",
                self.poll_jitter
            ));
        }
        if !(1..=600).contains(&self.timeout_s) {
            problems.push(format!(
                "catalog.channel.timeout_s = {} must be between 1 and 600",
                self.timeout_s
            ));
        }
        if self.pin.as_deref().is_some_and(|p| p.trim().is_empty()) {
            problems
                .push("catalog.channel.pin is empty: name a version label, or remove it".into());
        }
        if problems.len() > before {
            return None;
        }
        // Applied in order: the config's endpoint and region win over the file's and the
        // environment's.
        if let Some(ep) = &self.endpoint {
            let plain = ep.starts_with("http://");
            store.options.push(("aws_endpoint".into(), ep.clone()));
            store
                .options
                .push(("aws_allow_http".into(), plain.to_string()));
        }
        if let Some(r) = &self.region {
            store.options.push(("aws_region".into(), r.clone()));
        }
        Some(ChannelSettings {
            url: url?,
            keys: keys?,
            store,
            poll_interval: std::time::Duration::from_secs(self.poll_interval_s),
            jitter: self.poll_jitter,
            pin: self.pin.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_s),
        })
    }
}

fn receive_timeout_s() -> u64 {
    30
}

fn data_dir() -> PathBuf {
    "data".into()
}
fn versions_kept() -> usize {
    5
}
fn upload_limit_mb() -> u64 {
    2048
}
/// Unpacked bundles go to disk, not memory, but a Jetson's 8 GB box has little of either to
/// spare: room for a full-size upload plus a compressible items.jsonl, no more.
fn unpack_limit_mb() -> u64 {
    3072
}
fn import_nice() -> i32 {
    10
}

/// The staff API's bearer token. Never printed: `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct StaffToken(String);

impl StaffToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StaffToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaffToken(<{} characters>)", self.0.len())
    }
}

/// Shortest staff token accepted: guessing 16 random characters over the network is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

impl RawCatalog {
    /// Reads the staff token from the file or variable the config names.
    fn token(&self, base: &Path, problems: &mut Vec<String>) -> Option<StaffToken> {
        let (value, from) = match (&self.token_file, &self.token_env) {
            (Some(_), Some(_)) => {
                problems
                    .push("catalog.token_file and catalog.token_env are both set: keep one".into());
                return None;
            }
            (None, None) => return None,
            (Some(f), None) => {
                let path = base.join(f);
                match std::fs::read_to_string(&path) {
                    Ok(t) => (t, format!("catalog.token_file {}", path.display())),
                    Err(e) => {
                        problems.push(format!(
                            "catalog.token_file {} cannot be read ({e}); create it with a random token of at least {MIN_TOKEN_LEN} characters",
                            path.display()
                        ));
                        return None;
                    }
                }
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(t) => (t, format!("environment variable {var} (catalog.token_env)")),
                Err(_) => {
                    problems.push(format!(
                        "catalog.token_env names {var}, which is not set; set it (systemd: EnvironmentFile=) or use catalog.token_file"
                    ));
                    return None;
                }
            },
        };
        let token = value.trim().to_string();
        if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            problems.push(format!(
                "the staff token in {from} must be at least {MIN_TOKEN_LEN} characters without spaces (e.g. `openssl rand -hex 24`)"
            ));
            return None;
        }
        Some(StaffToken(token))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecommend {
    #[serde(default = "topk")]
    pub top_k: usize,
    #[serde(default)]
    pub tracking: TrackerSettings,
}

impl Default for RawRecommend {
    fn default() -> Self {
        Self {
            top_k: topk(),
            tracking: TrackerSettings::default(),
        }
    }
}

fn topk() -> usize {
    6
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// `/readyz` fails when no frame was processed for this long.
    #[serde(default = "stale")]
    pub frame_stale_ms: u64,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            frame_stale_ms: stale(),
        }
    }
}

fn stale() -> u64 {
    5000
}

// ---------------------------------------------------------------------------------------------
// Validated settings

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub staff_listen: Option<SocketAddr>,
    pub debug_view: bool,
    pub limits: ConnLimits,
}

#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub library: Option<PathBuf>,
    pub session: SessionOptions,
}

#[derive(Debug, Clone)]
pub struct DetectorSettings {
    pub spec: DetectorSpec,
    pub nms: NmsParams,
    pub resize: ResizeMode,
}

#[derive(Debug, Clone)]
pub struct EmbedderSettings {
    pub spec: EmbedderSpec,
}

#[derive(Debug, Clone)]
pub struct PoseSettings {
    pub spec: PoseSpec,
    pub gates: BodyGates,
    pub mask_threshold: f32,
    pub background: [u8; 3],
    pub min_garment_share: f32,
    pub refresh: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// The seed bundle (imported when the data folder has no version yet).
    pub path: PathBuf,
    pub index: IndexParams,
    pub data_dir: PathBuf,
    pub versions_kept: usize,
    /// Bytes.
    pub upload_limit: u64,
    /// Bytes an upload may unpack to, in all.
    pub unpack_limit: u64,
    pub import_threads: usize,
    pub import_nice: i32,
    /// `None`: the staff API refuses every request.
    pub token: Option<StaffToken>,
    /// An upload silent for this long is abandoned.
    pub receive_timeout: std::time::Duration,
    /// `None`: no catalog channel.
    pub channel: Option<ChannelSettings>,
}

/// `[catalog.channel]`, checked: keys parsed, credentials read.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    pub url: crate::catalog::channel::url::ChannelUrl,
    pub keys: crate::catalog::channel::TrustedKeys,
    /// How the store is reached: the credentials file's settings, then `endpoint` and
    /// `region`, over the environment.
    pub store: crate::catalog::channel::store::StoreConfig,
    pub poll_interval: std::time::Duration,
    /// Share of the interval (0–0.5) each wait is shifted by at random.
    pub jitter: f64,
    pub pin: Option<String>,
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct ApplianceSettings {
    /// This box's id (`appliance.id`, else the machine id).
    pub id: String,
    /// The store's name; may be empty.
    pub store: String,
}

#[derive(Debug, Clone)]
pub struct RecommendSettings {
    pub top_k: usize,
    pub tracking: TrackerSettings,
}

/// Everything the daemon needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    pub server: ServerSettings,
    pub runtime: RuntimeSettings,
    pub camera: SourceConfig,
    pub detector: DetectorSettings,
    pub regions: RegionSettings,
    pub embedder: EmbedderSettings,
    /// How the embedding and the garment's colour make the searched vector (`[similarity]`).
    pub similarity: Recipe,
    /// `None`: garment regions from the fixed body layout, crops unmasked.
    pub pose: Option<PoseSettings>,
    pub catalog: CatalogSettings,
    pub recommend: RecommendSettings,
    pub frame_stale: std::time::Duration,
    pub appliance: ApplianceSettings,
}

/// The config used when none is named: `./vitrine.toml`, else the one in the project checkout the
/// binary was built from.
pub fn default_config_path() -> PathBuf {
    let cwd = PathBuf::from(DEMO_CONFIG);
    if cwd.is_file() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_CONFIG)
}

impl Settings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: path.into(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(vec![format!("cannot read the file: {e}")]))?;
        let raw: RawConfig = toml::from_str(&text)
            .map_err(|e| fail(vec![e.to_string().trim().replace('\n', "\n    ")]))?;
        Self::from_raw(raw, path)
    }

    /// [`Self::load`] for commands that never serve the staff API (`vitrine catalog …`): the
    /// staff token is not read, so they work where it lives only in the service's environment
    /// (`catalog.token`: `None`).
    pub fn load_without_token(path: &Path) -> Result<Self, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: path.into(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(vec![format!("cannot read the file: {e}")]))?;
        let mut raw: RawConfig = toml::from_str(&text)
            .map_err(|e| fail(vec![e.to_string().trim().replace('\n', "\n    ")]))?;
        raw.catalog.token_file = None;
        raw.catalog.token_env = None;
        Self::from_raw(raw, path)
    }

    pub fn from_raw(raw: RawConfig, path: &Path) -> Result<Self, ConfigError> {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut problems: Vec<String> = Vec::new();
        let (listen, staff_listen) = raw.server.addresses(&mut problems);
        let runtime = raw.runtime.settings(base, &mut problems);
        let mut camera = raw.camera.clone();
        camera.resolve_paths(base);
        for p in camera.paths() {
            if !p.exists() {
                problems.push(format!("camera path {} does not exist", p.display()));
            }
        }
        problems.extend(raw.detector.problems());
        let detector = model_spec(
            ModelSpec::detector(&base.join(&raw.detector.model)),
            &mut problems,
        );
        problems.extend(raw.regions.problems());
        if let Some(spec) = &detector {
            problems.extend(unknown_region_labels(&raw.regions, spec));
        }
        let embedder = model_spec(
            ModelSpec::embedder(&base.join(&raw.embedder.model)),
            &mut problems,
        );
        let pose = raw.pose.as_ref().map(|p| p.settings(base, &mut problems));
        let catalog = raw.catalog.settings(base, &mut problems);
        if !(1..=50).contains(&raw.recommend.top_k) {
            problems.push(format!(
                "recommend.top_k = {} must be between 1 and 50",
                raw.recommend.top_k
            ));
        }
        problems.extend(raw.recommend.tracking.problems());
        let similarity = raw.similarity.validate().unwrap_or_else(|p| {
            problems.extend(p);
            Recipe::default()
        });
        if raw.health.frame_stale_ms < 100 {
            problems.push("health.frame_stale_ms must be at least 100".into());
        }
        let appliance = raw.appliance.settings(&mut problems);

        let d = &raw.detector;
        match (problems.is_empty(), listen, detector, embedder) {
            (true, Some(listen), Some(detector), Some(embedder)) => Ok(Settings {
                config_path: path.into(),
                server: ServerSettings {
                    listen,
                    staff_listen,
                    debug_view: raw.server.debug_view,
                    limits: ConnLimits {
                        max_connections: raw.server.max_connections,
                        header_timeout: std::time::Duration::from_secs(raw.server.header_timeout_s),
                        idle_timeout: std::time::Duration::from_secs(raw.server.idle_timeout_s),
                    },
                },
                runtime,
                camera,
                detector: DetectorSettings {
                    spec: detector,
                    nms: NmsParams {
                        score_threshold: d.score_threshold,
                        iou_threshold: d.iou_threshold,
                        max_detections: d.max_detections,
                    },
                    resize: d.resize,
                },
                regions: raw.regions,
                embedder: EmbedderSettings { spec: embedder },
                similarity,
                pose: pose.flatten(),
                catalog,
                recommend: RecommendSettings {
                    top_k: raw.recommend.top_k,
                    tracking: raw.recommend.tracking,
                },
                frame_stale: std::time::Duration::from_millis(raw.health.frame_stale_ms),
                appliance,
            }),
            _ => Err(ConfigError {
                path: path.into(),
                problems,
            }),
        }
    }
}

/// A model spec when it loaded; its problems join the config's otherwise.
fn model_spec<T>(loaded: Result<T, Vec<String>>, problems: &mut Vec<String>) -> Option<T> {
    loaded.map_err(|p| problems.extend(p)).ok()
}

/// Region labels the detector's label map does not have (a typo would silently never match).
fn unknown_region_labels(regions: &RegionSettings, spec: &DetectorSpec) -> Vec<String> {
    let known: Vec<&str> = spec.labels.iter().map(|(_, n)| n).collect();
    regions
        .labels_used()
        .filter(|label| spec.labels.id_of(label).is_none())
        .map(|label| {
            format!(
                "regions: label '{label}' is not in the detector's label map {} (it has: {})",
                spec.labels.source().display(),
                known.join(", ")
            )
        })
        .collect()
}

impl RawServer {
    /// The two listen addresses, parsed, and whether they clash.
    fn addresses(&self, problems: &mut Vec<String>) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let mut addr = |what: &str, s: &str| match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "server.{what} = '{s}' is not an address:port such as 127.0.0.1:8080"
                ));
                None
            }
        };
        let listen = addr("listen", &self.listen);
        let staff_listen = self
            .staff_listen
            .as_deref()
            .and_then(|s| addr("staff_listen", s));
        if let (Some(a), Some(b)) = (listen, staff_listen)
            && a.port() == b.port()
            && a.port() != 0
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        {
            problems.push(format!("server.listen ({a}) and server.staff_listen ({b}) clash: give the staff API its own port"));
        }
        problems.extend(self.problems());
        (listen, staff_listen)
    }
}

impl RawRuntime {
    fn settings(&self, base: &Path, problems: &mut Vec<String>) -> RuntimeSettings {
        let library = self.onnxruntime.as_ref().map(|p| base.join(p));
        if let Some(l) = library.as_ref().filter(|l| !l.is_file()) {
            problems.push(format!("runtime.onnxruntime = {} does not exist (run scripts/bootstrap, or point it at a libonnxruntime.so)", l.display()));
        }
        if self.providers.is_empty() {
            problems.push("runtime.providers is empty: list at least \"cpu\"".into());
        }
        if self.require_gpu && !self.providers.iter().any(|p| p.is_gpu()) {
            problems.push("runtime.require_gpu is set but runtime.providers names no GPU provider (\"cuda\" or \"tensorrt\")".into());
        }
        RuntimeSettings {
            library,
            session: SessionOptions {
                providers: self.providers.clone(),
                require_gpu: self.require_gpu,
                tensorrt_cache: self.tensorrt_cache.as_ref().map(|p| base.join(p)),
                intra_threads: self.intra_threads,
                spinning: self.spinning,
            },
        }
    }
}

impl RawDetector {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.score_threshold > 0.0 && self.score_threshold <= 1.0) {
            problems.push(format!(
                "detector.score_threshold = {} must be in (0, 1]",
                self.score_threshold
            ));
        }
        if !(self.iou_threshold > 0.0 && self.iou_threshold <= 1.0) {
            problems.push(format!(
                "detector.iou_threshold = {} must be in (0, 1]",
                self.iou_threshold
            ));
        }
        if !(1..=1000).contains(&self.max_detections) {
            problems.push(format!(
                "detector.max_detections = {} must be between 1 and 1000",
                self.max_detections
            ));
        }
        problems
    }
}

impl RawCatalog {
    fn settings(&self, base: &Path, problems: &mut Vec<String>) -> CatalogSettings {
        let path = base.join(&self.path);
        let data_dir = base.join(&self.data_dir);
        // The seed is only needed until the data folder has an active version of its own.
        if !path.join("items.jsonl").is_file() && !data_dir.join("ACTIVE").is_file() {
            problems.push(format!(
                "catalog.path {} holds no items.jsonl (build one with `vitrine catalog build`)",
                path.display()
            ));
        }
        problems.extend(self.index.problems());
        problems.extend(self.limit_problems());
        let token = self.token(base, problems);
        let channel = self
            .channel
            .as_ref()
            .and_then(|ch| ch.settings(base, problems));
        CatalogSettings {
            path,
            index: self.index,
            data_dir,
            versions_kept: self.versions_kept,
            upload_limit: self.upload_limit_mb << 20,
            unpack_limit: self.unpack_limit_mb << 20,
            import_threads: self.import_threads,
            import_nice: self.import_nice,
            token,
            receive_timeout: std::time::Duration::from_secs(self.receive_timeout_s),
            channel,
        }
    }

    fn limit_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=100).contains(&self.versions_kept) {
            problems.push(format!(
                "catalog.versions_kept = {} must be between 1 and 100",
                self.versions_kept
            ));
        }
        if !(1..=65536).contains(&self.upload_limit_mb) {
            problems.push(format!(
                "catalog.upload_limit_mb = {} must be between 1 and 65536",
                self.upload_limit_mb
            ));
        }
        if !(1..=65536).contains(&self.unpack_limit_mb) {
            problems.push(format!(
                "catalog.unpack_limit_mb = {} must be between 1 and 65536",
                self.unpack_limit_mb
            ));
        } else if self.unpack_limit_mb < self.upload_limit_mb {
            problems.push(format!(
                "catalog.unpack_limit_mb = {} is below catalog.upload_limit_mb = {}: an uncompressed .tar unpacks to its own size; raise it or lower the upload limit",
                self.unpack_limit_mb, self.upload_limit_mb
            ));
        }
        if !(0..=19).contains(&self.import_nice) {
            problems.push(format!(
                "catalog.import_nice = {} must be between 0 and 19",
                self.import_nice
            ));
        }
        if self.import_threads > 256 {
            problems.push(format!(
                "catalog.import_threads = {} must be at most 256 (0: one per core)",
                self.import_threads
            ));
        }
        if !(1..=3600).contains(&self.receive_timeout_s) {
            problems.push(format!(
                "catalog.receive_timeout_s = {} must be between 1 and 3600",
                self.receive_timeout_s
            ));
        }
        problems
    }
}
