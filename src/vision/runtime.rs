//! ONNX Runtime: finding and loading the shared library, building sessions with the configured
//! execution providers, and finding out which provider really runs a model. The session steps
//! every model adapter shares (open and check the image input, one batch run, read the warm-up
//! profile) live here too, so the detector, the embedder and the pose model differ only in
//! their own pre- and postprocessing.
//!
//! `ort` is built with `load-dynamic`: the library is found at start-up, not linked. ort panics
//! when it cannot find one, so we resolve and check the path ourselves first and say what to run.
//! Registering a GPU provider can "succeed" and still leave every node on the CPU (a CPU-only
//! library, or Jetson builds that report success), so the provider in use is read from the
//! session's own profile of the warm-up run, never taken from what was asked for.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionOutputs};
use serde::{Deserialize, Serialize};

use super::preprocess::{DType, InputSpec};
use super::{ModelError, ProviderReport};

/// Where `scripts/bootstrap` puts the library, relative to the project root.
pub const PROJECT_RUNTIME_DIR: &str = ".runtime/onnxruntime";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime's shared library was not found (looked in: {searched}). Run `scripts/bootstrap` to place it in \
         {PROJECT_RUNTIME_DIR}/, or set `runtime.onnxruntime` in the config (or ORT_DYLIB_PATH) to a libonnxruntime.so of version 1.17 or newer"
    )]
    LibraryMissing { searched: String },
    #[error(
        "cannot load ONNX Runtime from {path}: {message}. Use a libonnxruntime.so of version 1.17 or newer built for this machine"
    )]
    LibraryLoad { path: PathBuf, message: String },
    #[error(
        "ONNX Runtime was already loaded from {loaded}; cannot switch to {requested} in the same process"
    )]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },
}

/// Execution providers a config may ask for, tried in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    Tensorrt,
}

impl Provider {
    /// The name ONNX Runtime uses in profiles and logs.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Tensorrt => "TensorrtExecutionProvider",
        }
    }

    pub fn is_gpu(self) -> bool {
        !matches!(self, Provider::Cpu)
    }
}

/// Session options shared by every model of the daemon (validated in config).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    pub providers: Vec<Provider>,
    pub require_gpu: bool,
    pub tensorrt_cache: Option<PathBuf>,
    /// Threads for one operator; 0 lets ONNX Runtime choose (one per core).
    pub intra_threads: usize,
    /// Let ONNX Runtime's worker threads spin between runs. Slightly lower latency, but a core
    /// burnt while waiting for the next frame: off by default on an appliance that runs for months.
    pub spinning: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            providers: vec![Provider::Cpu],
            require_gpu: false,
            tensorrt_cache: None,
            intra_threads: 0,
            spinning: false,
        }
    }
}

struct Loaded {
    path: PathBuf,
    env: Environment,
}

static RUNTIME: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// Candidate library paths, most specific first.
pub fn candidate_paths(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = configured {
        out.push(p.to_path_buf());
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        // As ort does: a relative path is relative to the executable's folder first.
        if p.is_relative()
            && let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            out.push(dir.join(&p));
        }
        out.push(p);
        return out;
    }
    let mut roots = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("libonnxruntime.so"));
        out.push(dir.join("../lib/libonnxruntime.so"));
        // A binary under target/{debug,release}/ (or its deps/) finds the project's folder above it.
        roots.extend(dir.ancestors().take(4).map(Path::to_path_buf));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    for r in roots {
        out.push(r.join(PROJECT_RUNTIME_DIR).join("libonnxruntime.so"));
    }
    out.push(PathBuf::from("/usr/local/lib/libonnxruntime.so"));
    out.push(PathBuf::from("/usr/lib/libonnxruntime.so"));
    out.dedup();
    out
}

/// Points this process's temporary files at `dir` (created if missing), which the daemon passes
/// as a folder inside its data folder. ONNX Runtime's bundled logging SDK writes a session file
/// (`.ses`) to `TMPDIR` when its environment starts, telemetry off or not; a box must write
/// nowhere but its data folder, and `TMPDIR` is the only handle on that file.
///
/// Call it before any other thread starts: the environment is process-wide and changing it
/// while another thread reads it is undefined behaviour.
pub fn confine_temp_files(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // SAFETY: the caller starts no thread before this returns (see above), so no other thread
    // can be reading the environment.
    unsafe { std::env::set_var("TMPDIR", dir) };
    Ok(())
}

/// Loads ONNX Runtime once per process and returns its environment.
pub fn environment(configured: Option<&Path>) -> Result<Environment, RuntimeError> {
    let candidates = candidate_paths(configured);
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    let loaded = RUNTIME.get_or_init(|| {
        let Some(path) = found.clone() else {
            return Err(String::new());
        };
        let env = ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                b.with_name("vitrine")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| e.to_string())
            });
        env.map(|env| Loaded { path, env })
    });
    match loaded {
        Ok(l) => {
            if let Some(req) = found.filter(|f| configured.is_some() && f != &l.path) {
                return Err(RuntimeError::AlreadyLoaded {
                    loaded: l.path.clone(),
                    requested: req,
                });
            }
            Ok(l.env.clone())
        }
        Err(msg) if msg.is_empty() => Err(RuntimeError::LibraryMissing {
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        Err(msg) => Err(RuntimeError::LibraryLoad {
            path: found.unwrap_or_default(),
            message: msg.clone(),
        }),
    }
}

/// The library that was loaded, for status pages.
pub fn loaded_library() -> Option<PathBuf> {
    RUNTIME
        .get()
        .and_then(|r| r.as_ref().ok())
        .map(|l| l.path.clone())
}

/// A session and what we know about how it was made.
pub struct BuiltSession {
    pub session: Session,
    /// The provider whose registration succeeded (what was asked for and accepted).
    pub registered: Provider,
    /// Why earlier providers in the list were skipped.
    pub skipped: Vec<String>,
}

fn map_err<T>(r: Result<T, ort::Error<SessionBuilder>>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn base_builder(
    env: &Environment,
    opts: &SessionOptions,
    profile: Option<&Path>,
) -> Result<SessionBuilder, String> {
    let mut b = Session::builder(env).map_err(|e| e.to_string())?;
    b = map_err(b.with_optimization_level(GraphOptimizationLevel::All))?;
    if opts.intra_threads > 0 {
        b = map_err(b.with_intra_threads(opts.intra_threads))?;
    }
    // One model runs at a time on a stage thread: parallel inter-op threads only add contention.
    b = map_err(b.with_inter_threads(1))?;
    b = map_err(b.with_intra_op_spinning(opts.spinning))?;
    b = map_err(b.with_inter_op_spinning(opts.spinning))?;
    if let Some(prefix) = profile {
        b = map_err(b.with_profiling(prefix))?;
    }
    Ok(b)
}

#[cfg(feature = "gpu")]
fn register_gpu(
    b: SessionBuilder,
    p: Provider,
    opts: &SessionOptions,
) -> Result<SessionBuilder, String> {
    use ort::ep;
    let dispatch = match p {
        Provider::Cuda => ep::CUDA::default().build().error_on_failure(),
        Provider::Tensorrt => {
            let mut trt = ep::TensorRT::default().with_int8(true).with_fp16(true);
            if let Some(dir) = &opts.tensorrt_cache {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display().to_string())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display().to_string());
            }
            trt.build().error_on_failure()
        }
        Provider::Cpu => return Ok(b),
    };
    map_err(b.with_execution_providers([dispatch]))
}

#[cfg(not(feature = "gpu"))]
fn register_gpu(
    _b: SessionBuilder,
    p: Provider,
    _opts: &SessionOptions,
) -> Result<SessionBuilder, String> {
    Err(format!(
        "this vitrine binary was built without GPU support; rebuild with `--features gpu` to use {}",
        p.ort_name()
    ))
}

/// Builds a session for `model`, trying the providers in order. A profile of the first run is
/// requested (`profile_prefix`) so the caller can detect the provider actually in use.
pub fn build_session(
    env: &Environment,
    model: &Path,
    opts: &SessionOptions,
    profile_prefix: Option<&Path>,
) -> Result<BuiltSession, String> {
    let mut skipped = Vec::new();
    // CPU is the last resort unless the config says the GPU is required.
    let mut order: Vec<Provider> = opts
        .providers
        .iter()
        .copied()
        .filter(|p| !opts.require_gpu || p.is_gpu())
        .collect();
    if !opts.require_gpu && !order.contains(&Provider::Cpu) {
        order.push(Provider::Cpu);
    }
    for p in order {
        let attempt = base_builder(env, opts, profile_prefix).and_then(|b| {
            if p.is_gpu() {
                register_gpu(b, p, opts)
            } else {
                Ok(b)
            }
        });
        match attempt.and_then(|mut b| b.commit_from_file(model).map_err(|e| e.to_string())) {
            Ok(session) => {
                return Ok(BuiltSession {
                    session,
                    registered: p,
                    skipped,
                });
            }
            Err(e) => skipped.push(format!("{}: {e}", p.ort_name())),
        }
    }
    Err(format!(
        "no execution provider could run {} ({}){}",
        model.display(),
        skipped.join("; "),
        if opts.require_gpu {
            "; the config requires a GPU (`runtime.require_gpu = true`)"
        } else {
            ""
        }
    ))
}

/// Counts the nodes each provider ran in an ONNX Runtime profile (a JSON array of trace events)
/// and returns the provider that ran most of them, with the counts for status pages.
pub fn provider_from_profile(profile_json: &str) -> Option<(String, Vec<(String, usize)>)> {
    let events: Vec<serde_json::Value> = serde_json::from_str(profile_json).ok()?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for ev in &events {
        if ev.get("cat").and_then(|c| c.as_str()) != Some("Node") {
            continue;
        }
        let Some(p) = ev
            .get("args")
            .and_then(|a| a.get("provider"))
            .and_then(|p| p.as_str())
        else {
            continue;
        };
        match counts.iter_mut().find(|(n, _)| n == p) {
            Some((_, c)) => *c += 1,
            None => counts.push((p.to_string(), 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = counts.first()?.0.clone();
    Some((top, counts))
}

/// One run of a model with a single f32 input over a batch laid out in `data`; the time inside
/// ONNX Runtime is added to `spent`, so each model reports its own share of a frame. Errors are
/// ONNX Runtime's text, for the caller to name its model.
pub fn run_batch<'s>(
    session: &'s mut Session,
    input: &str,
    shape: [usize; 4],
    data: &[f32],
    spent: &mut Duration,
) -> Result<SessionOutputs<'s>, String> {
    let tensor =
        ort::value::TensorRef::from_array_view((shape, data)).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let outputs = session.run(ort::inputs![input => tensor]);
    *spent += t.elapsed();
    outputs.map_err(|e| e.to_string())
}

/// Static dimensions of a graph outlet (`-1` for dynamic ones).
pub(crate) fn outlet_shape(session: &Session, name: &str, inputs: bool) -> Option<Vec<i64>> {
    let list = if inputs {
        session.inputs()
    } else {
        session.outputs()
    };
    list.iter().find(|o| o.name() == name).and_then(|o| {
        o.dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
    })
}

/// The names of a graph's inputs or outputs, for error messages.
pub(crate) fn names(session: &Session, inputs: bool) -> String {
    let list = if inputs {
        session.inputs()
    } else {
        session.outputs()
    };
    list.iter()
        .map(|o| o.name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the session of model `name` with its warm-up profile on, checks its image input
/// against the config and returns it. Every model adapter opens its session here, runs its
/// warm-up, then calls [`finish_profile`].
pub(crate) fn open_session(
    env: &Environment,
    name: &str,
    model_path: &Path,
    config_path: &Path,
    input: &InputSpec,
    opts: &SessionOptions,
) -> Result<BuiltSession, ModelError> {
    let built =
        build_session(env, model_path, opts, Some(&profile_prefix(name))).map_err(|message| {
            if message.contains("no execution provider could run") && !opts.require_gpu {
                ModelError::Load {
                    path: model_path.into(),
                    message,
                }
            } else {
                ModelError::Provider(message)
            }
        })?;
    let mismatch = |message: String| ModelError::Mismatch {
        path: model_path.into(),
        config: config_path.into(),
        message,
    };
    let Some(shape) = outlet_shape(&built.session, &input.name, true) else {
        return Err(mismatch(format!(
            "the graph has no input '{}' (its inputs: {})",
            input.name,
            names(&built.session, true)
        )));
    };
    let expect = input.shape(1);
    if shape.len() != 4 {
        return Err(mismatch(format!(
            "input '{}' has rank {} but an image input needs rank 4",
            input.name,
            shape.len()
        )));
    }
    for (axis, (&got, &want)) in shape.iter().zip(expect.iter()).enumerate().skip(1) {
        if got >= 0 && got as usize != want {
            return Err(mismatch(format!(
                "input '{}' has shape {shape:?} but the config ({:?} {}×{}) implies {expect:?} (axis {axis} differs)",
                input.name, input.layout, input.width, input.height
            )));
        }
    }
    let want_ty = match input.dtype {
        DType::F32 => ort::value::TensorElementType::Float32,
        DType::U8 => ort::value::TensorElementType::Uint8,
    };
    let got_ty = built
        .session
        .inputs()
        .iter()
        .find(|o| o.name() == input.name)
        .and_then(|o| o.dtype().tensor_type());
    if got_ty.is_some_and(|t| t != want_ty) {
        return Err(mismatch(format!(
            "input '{}' takes {got_ty:?} but the config says {:?}",
            input.name, input.dtype
        )));
    }
    Ok(built)
}

/// Ends the warm-up profile and works out which provider really ran the model.
pub(crate) fn finish_profile(
    session: &mut Session,
    model: &str,
    built_registered: Provider,
    skipped: Vec<String>,
    opts: &SessionOptions,
    warmup: Duration,
) -> Result<ProviderReport, ModelError> {
    let file = session.end_profiling().map_err(|e| ModelError::Run {
        model: model.into(),
        message: e.to_string(),
    })?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let (in_use, nodes) = provider_from_profile(&text)
        .unwrap_or_else(|| (built_registered.ort_name().to_string(), Vec::new()));
    let report = ProviderReport {
        model: model.into(),
        requested: opts
            .providers
            .iter()
            .map(|p| p.ort_name().to_string())
            .collect(),
        registered: built_registered.ort_name().into(),
        in_use: in_use.clone(),
        nodes,
        skipped,
        warmup_ms: warmup.as_secs_f64() * 1e3,
    };
    let wanted_gpu = opts.providers.iter().any(|p| p.is_gpu());
    if wanted_gpu && in_use == Provider::Cpu.ort_name() {
        let msg = format!(
            "{model}: a GPU provider was requested ({}) but the warm-up ran on {in_use}{}",
            report.requested.join(", "),
            if report.skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", report.skipped.join("; "))
            }
        );
        if opts.require_gpu {
            return Err(ModelError::Provider(format!(
                "{msg}; the config requires a GPU (`runtime.require_gpu = true`)"
            )));
        }
        tracing::warn!("{msg}; continuing on the CPU");
    }
    Ok(report)
}

fn profile_prefix(model: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vitrine-profile-{}-{model}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_parsing_counts_nodes_per_provider() {
        let json = r#"[
            {"cat": "Session", "name": "model_run"},
            {"cat": "Node", "name": "conv_kernel_time", "args": {"provider": "CUDAExecutionProvider"}},
            {"cat": "Node", "name": "a", "args": {"provider": "CPUExecutionProvider"}},
            {"cat": "Node", "name": "b", "args": {"provider": "CUDAExecutionProvider"}}
        ]"#;
        let (top, counts) = provider_from_profile(json).expect("parsed");
        assert_eq!(top, "CUDAExecutionProvider");
        assert_eq!(
            counts,
            vec![
                ("CUDAExecutionProvider".to_string(), 2),
                ("CPUExecutionProvider".to_string(), 1)
            ]
        );
        assert_eq!(provider_from_profile("[]"), None);
    }

    #[test]
    fn configured_path_is_the_only_candidate() {
        let p = Path::new("/opt/ort/libonnxruntime.so.1.17.0");
        assert_eq!(candidate_paths(Some(p)), vec![p.to_path_buf()]);
    }
}
