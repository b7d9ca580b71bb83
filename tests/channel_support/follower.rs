//! A box that follows a test channel: the demo config (through `tests/common`) with a seed
//! catalog and data folder of the test's own, `[appliance] id` and `[catalog.channel]` as the
//! test says. The daemon itself is `tests/common`'s, started with `Daemon::with_config`.

use std::path::{Path, PathBuf};

use vitrine::catalog::EmbedderFingerprint;
use vitrine::catalog::synth::Embeddings;

use crate::channel_support::publish::Key;
use crate::common::catalog::{bundle, fingerprint, set_key};
use crate::common::config_in;

/// Writes a seed catalog folder of `n` items `seed-<i>`.
pub fn seed(dir: &Path, n: usize) -> PathBuf {
    bundle(dir, "seed", n, Embeddings::Inline, 7);
    dir.into()
}

/// A config in `work/vitrine.toml`: the demo one with this checkout's models and frames, port 0,
/// `seed` and `data`, the box id, and `channel` as `[catalog.channel]`.
pub fn config(
    work: &Path,
    seed: &Path,
    data: &Path,
    box_id: &str,
    channel: toml::Table,
) -> PathBuf {
    let p = config_in(work, |t| t);
    let path = |p: &Path| toml::Value::from(p.display().to_string());
    set_key(&p, "server", "listen", "127.0.0.1:0".into());
    set_key(&p, "catalog", "path", path(seed));
    set_key(&p, "catalog", "data_dir", path(data));
    set_key(&p, "catalog", "versions_kept", 20.into());
    set_key(&p, "catalog", "channel", channel.into());
    set_key(&p, "appliance", "id", box_id.into());
    set_key(&p, "appliance", "store", "test-store".into());
    p
}

/// `[catalog.channel]` for `url`, trusting `key_file`, polling every second.
pub fn channel(url: &str, key_file: &Path) -> toml::Table {
    let mut c = toml::Table::new();
    c.insert("url".into(), url.into());
    c.insert(
        "public_keys".into(),
        toml::Value::Array(vec![key_file.display().to_string().into()]),
    );
    c.insert("poll_interval_s".into(), 1.into());
    c.insert("poll_jitter".into(), 0.2.into());
    c.insert("timeout_s".into(), 5.into());
    c
}

/// A box that follows the channel at `url` and is inside any roll-out: HQ's key (its public
/// half written to `w/hq.pub`), the running embedder's fingerprint, the box's data folder
/// (`w/data`) and its config, seeded with 20 items.
pub struct Following {
    pub key: Key,
    pub fp: EmbedderFingerprint,
    pub data: PathBuf,
    pub cfg: PathBuf,
}

pub fn following(w: &Path, url: &str) -> Following {
    let key = Key::generate();
    let seed = seed(&w.join("seed"), 20);
    let data = w.join("data");
    let pubkey = key.write_public(&w.join("hq.pub"));
    let cfg = config(w, &seed, &data, &box_id(true, 100), channel(url, &pubkey));
    Following {
        key,
        fp: fingerprint(),
        data,
        cfg,
    }
}

/// A box id whose roll-out bucket is below (`true`) or at/above (`false`) `percent`.
pub fn box_id(below: bool, percent: u8) -> String {
    use vitrine::catalog::channel::doc::rollout_bucket;
    (0..10_000)
        .map(|i| format!("test-box-{i}"))
        .find(|id| (rollout_bucket(id) < percent) == below)
        .expect("some box id falls on each side")
}
