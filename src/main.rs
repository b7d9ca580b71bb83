//! The `vitrine` binary: parses the command line, loads the config, sets up logging and hands
//! over to the library. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use vitrine::config::{Settings, default_config_path};

#[derive(Parser)]
#[command(
    name = "vitrine",
    version,
    about = "In-store camera appliance: shoppers' garments to similar catalog items"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: camera → detector → embedder → catalog → display.
    Serve {
        /// Config file; without it, the bundled demo (vitrine.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides server.listen, e.g. 127.0.0.1:0 for any free port.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check a config and its models; exits non-zero listing every problem.
    Validate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print each image's detections as one JSON line (boxes in the image's pixels).
    Detect {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Run the pipeline over the replay frames as fast as possible and report timings
    /// (`vitrine bench http` load-tests a running daemon's HTTP side, `vitrine bench catalog`
    /// measures the catalog).
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        target: Option<BenchTarget>,
        #[command(flatten)]
        pipeline: PipelineBench,
    },
    /// Catalog tools for store staff.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Score models: detections (AP/mAP, TF OD API PASCAL), retrieval (recall@k) and the colour
    /// relevance of what the display shows.
    Eval {
        #[command(subcommand)]
        command: vitrine::eval::cli::EvalCommand,
    },
    /// Dataset tools: lint (with a cleaned copy), conversion to JSONL, pasted-catalog pairs.
    Dataset {
        #[command(subcommand)]
        command: vitrine::eval::cli::DatasetCommand,
    },
    /// Label-map tools: make from DeepFashion, check against models and data, apply a taxonomy.
    Labels {
        #[command(subcommand)]
        command: vitrine::eval::cli::LabelsCommand,
    },
}

/// `vitrine bench` without a target: the frame pipeline.
#[derive(Args)]
struct PipelineBench {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 300)]
    frames: usize,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Re-embed every garment on every frame (no tracker embedding cache).
    #[arg(long)]
    no_cache: bool,
    /// Also run exact search for every query (untimed) and report how often the index agrees.
    #[arg(long)]
    check_exact: bool,
    /// Deliver frames at the camera rate (the replay's fps) and report the CPU used, as in the shop.
    #[arg(long)]
    paced: bool,
    /// Search this catalog folder instead of the config's (e.g. a 10,000-item benchmark catalog).
    #[arg(long)]
    catalog: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Simulate a fleet: N boxes poll a channel that nginx serves (started here) while a new
    /// version is published midway; server request rate, poll latency, bytes served, and the
    /// time until 99 % / 100 % of the boxes have verified the new version.
    Fleet {
        #[arg(long, default_value_t = 1000)]
        boxes: usize,
        /// Each box's poll interval (random jitter of ± 50 %, as the subscriber's).
        #[arg(long, default_value_t = 10.0)]
        interval_s: f64,
        /// The whole run; the new version is published at half of it.
        #[arg(long, default_value_t = 60.0)]
        duration_s: f64,
        /// Items in the synthetic bundles.
        #[arg(long, default_value_t = 200)]
        items: usize,
        /// A box config (models, camera): a real `vitrine serve` on it takes part as one more
        /// box, and the report gives its time to serve the new version and its frame rate.
        #[arg(long)]
        daemon_config: Option<PathBuf>,
        /// HQ builds the boxes' indexes into the bundles (as `catalog publish --with-index`).
        #[arg(long)]
        prebuilt: bool,
        #[arg(long)]
        json: bool,
    },
    /// Load-test a running daemon on this machine: pipeline frame rate alone and with display
    /// clients connected, then GET /api/recommendations at a fixed request rate.
    Http {
        /// The daemon's address (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:8080/")]
        url: String,
        /// Requests per second on /api/recommendations.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Length of the request phase, e.g. 20s.
        #[arg(long, default_value = "20s")]
        duration: humantime::Duration,
        /// Keep-alive connections the requests are spread over.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Display event streams held open while the frame rate is measured.
        #[arg(long, default_value_t = 50)]
        display_clients: usize,
        /// Length of each frame-rate measurement.
        #[arg(long, default_value = "10s")]
        window: humantime::Duration,
        /// Alternations of "pipeline alone" and "with display clients" (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
    /// Catalog targets: import + index time, restart time, recall@10 against exact search,
    /// search latency, and with --pipeline the frame rate during an import.
    Catalog {
        /// Config for the embedder's size and fingerprint, the index parameters and (with
        /// --pipeline) the models; without it a synthetic fingerprint of size --dim is used.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 100_000)]
        items: usize,
        #[arg(long, default_value_t = 256)]
        dim: usize,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// How the synthetic bundle carries its embeddings: npy or inline.
        #[arg(long, default_value = "npy")]
        embeddings: String,
        /// Import this bundle folder instead of a synthetic one.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// HNSW links per node (overrides the config).
        #[arg(long)]
        m: Option<usize>,
        #[arg(long)]
        ef_construction: Option<usize>,
        #[arg(long)]
        ef_search: Option<usize>,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        nice: Option<i32>,
        /// Measure the pipeline's frame rate before and during an import.
        #[arg(long)]
        pipeline: bool,
        /// With --pipeline: feed frames as fast as the pipeline takes them, not at the camera's
        /// rate.
        #[arg(long)]
        flat_out: bool,
        /// Keep the generated bundle and data folder here (reused by the next run).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Build the indexes into the bundle first (as `catalog publish --with-index` does at
        /// HQ) and measure an import that loads them.
        #[arg(long)]
        prebuilt: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Compute embeddings for product photos with the configured embedder and write a catalog folder.
    Build {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Folder of product images (item `image` paths are relative to it).
        #[arg(long)]
        images: PathBuf,
        /// JSONL of items: id, name, group, category, price, currency, image.
        #[arg(long)]
        meta: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "1")]
        version: String,
    },
    /// Check a bundle (folder, .tar or .tar.gz) and store it as a new version, activated unless
    /// --no-activate. Needs the daemon stopped; while it runs, upload to its staff API instead.
    Import {
        #[arg(long)]
        config: Option<PathBuf>,
        bundle: PathBuf,
        /// Store it without making it live.
        #[arg(long)]
        no_activate: bool,
        /// Label shown to staff (default: the manifest's version).
        #[arg(long)]
        label: Option<String>,
    },
    /// Check a bundle against the configured embedder without storing anything.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        bundle: PathBuf,
    },
    /// List the stored versions; `*` marks the active one.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Make a stored version the active one.
    Activate {
        #[arg(long)]
        config: Option<PathBuf>,
        id: String,
    },
    /// Go back to the version that was active before the current one.
    Rollback {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make HQ's key pair for catalog channels: DIR/vitrine.key (secret, mode 0600) and
    /// DIR/vitrine.pub (what boxes trust), in minisign's formats. The secret key is encrypted
    /// with $VITRINE_KEY_PASSWORD when it is set. Never overwrites.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a bundle as boxes will, sign it and publish it to a channel (HQ). Credentials come
    /// from the environment (AWS_*, GOOGLE_*, AZURE_*) or --credentials, never the command line.
    Publish {
        /// A bundle folder (packed to .tar.gz), .tar or .tar.gz.
        bundle: PathBuf,
        /// s3://bucket/prefix, gs://…, az://…, file:///folder or a folder (not http(s)://:
        /// origins are read-only).
        #[arg(long)]
        channel: String,
        /// The secret key (vitrine catalog keygen); its password from $VITRINE_KEY_PASSWORD.
        #[arg(long)]
        key: PathBuf,
        /// Share of boxes that take this version (default: 100 for a new version, the current
        /// share when re-publishing the same one).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        rollout: Option<u8>,
        /// Versions no box may import any more (added to those already revoked).
        #[arg(long, num_args = 1.., value_name = "VERSION")]
        revoke: Vec<String>,
        /// Build the boxes' indexes into the bundle, so they load instead of building them.
        #[arg(long)]
        with_index: bool,
        /// The boxes' config: its [catalog.index] and unpack limit are what they will use.
        #[arg(long)]
        config: Option<PathBuf>,
        /// HNSW links per node for --with-index (overrides the config).
        #[arg(long)]
        m: Option<usize>,
        #[arg(long)]
        ef_construction: Option<usize>,
        #[arg(long)]
        ef_search: Option<usize>,
        /// A file of NAME=value lines (AWS_ACCESS_KEY_ID=…), read after the environment.
        #[arg(long)]
        credentials: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    let path = config.unwrap_or_else(default_config_path);
    Ok(Settings::load(&path)?)
}

/// For `vitrine catalog …`: none of these talks to the staff API, so none needs its token.
fn load_offline(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    let path = config.unwrap_or_else(default_config_path);
    Ok(Settings::load_without_token(&path)?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn main() -> ExitCode {
    vitrine::telemetry::init_tracing();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vitrine serve`: the daemon until SIGTERM or ctrl-c.
fn serve(config: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<()> {
    let mut settings = load(config)?;
    if let Some(l) = listen {
        settings.server.listen = l
            .parse()
            .with_context(|| format!("--listen {l}: expected address:port, e.g. 127.0.0.1:8080"))?;
    }
    // Before the async runtime: no other thread may exist while TMPDIR changes.
    let tmp = settings.catalog.data_dir.join("tmp");
    vitrine::vision::runtime::confine_temp_files(&tmp)
        .with_context(|| format!("creating {} for temporary files", tmp.display()))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let hooks = vitrine::Hooks {
        on_listen: Box::new(|addr| {
            println!(
                "vitrine listening on http://{addr}/ (recommendations: http://{addr}/api/recommendations)"
            );
        }),
        on_ready: Box::new(|| println!("vitrine ready")),
        on_staff_listen: Box::new(|addr| {
            println!("vitrine staff API listening on http://{addr}/api/catalog");
        }),
        ..Default::default()
    };
    // Under systemd (Type=notify): READY=1, watchdog pings from the pipeline, STOPPING=1.
    let (hooks, stopping) =
        vitrine::systemd::with_notify(hooks, vitrine::systemd::Notifier::from_env());
    let shutdown = async move {
        shutdown_signal().await;
        stopping();
    };
    rt.block_on(vitrine::run(settings, shutdown, hooks))?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => serve(config, listen),
        Command::Validate { config } => {
            let settings = load(config)?;
            vitrine::check_models(&settings)?;
            println!("{}: OK", settings.config_path.display());
            Ok(())
        }
        Command::Detect { config, images } => {
            let settings = load(config)?;
            vitrine::detect_images(&settings, &images, &mut std::io::stdout())?;
            Ok(())
        }
        Command::Bench { target, pipeline } => match target {
            None => bench_pipeline(pipeline),
            Some(what @ BenchTarget::Http { .. }) => bench_http(what),
            Some(what @ BenchTarget::Catalog { .. }) => bench_catalog(what),
            Some(what @ BenchTarget::Fleet { .. }) => bench_fleet(what),
        },
        Command::Catalog { command } => catalog(command),
        Command::Eval { command } => Ok(vitrine::eval::cli::run_eval(command)?),
        Command::Dataset { command } => Ok(vitrine::eval::cli::run_dataset(command)?),
        Command::Labels { command } => Ok(vitrine::eval::cli::run_labels(command)?),
    }
}

fn catalog(command: CatalogCommand) -> anyhow::Result<()> {
    use vitrine::catalog::cli;
    match command {
        CatalogCommand::Build {
            config,
            images,
            meta,
            out,
            version,
        } => {
            let settings = load_offline(config)?;
            let n = vitrine::build_catalog(&settings, &images, &meta, &out, &version)?;
            println!("wrote {n} items to {}", out.display());
        }
        CatalogCommand::Import {
            config,
            bundle,
            no_activate,
            label,
        } => {
            let settings = load_offline(config)?;
            let info = cli::import(&settings, &bundle, !no_activate, label)?;
            println!(
                "stored version {} ('{}', {} items){}",
                info.id,
                info.label,
                info.item_count,
                if no_activate { "" } else { ", now active" }
            );
            for w in &info.warnings {
                println!("warning: {w}");
            }
        }
        CatalogCommand::Verify { config, bundle } => {
            let settings = load_offline(config)?;
            println!("{}", cli::verify(&settings, &bundle)?);
        }
        CatalogCommand::List { config, json } => {
            let settings = load_offline(config)?;
            let list = cli::list(&settings)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for v in list {
                    println!(
                        "{} {:<6} {:>8} items  {}  {:<24} {}",
                        if v.active { "*" } else { " " },
                        v.id,
                        v.items,
                        v.created,
                        v.label,
                        v.source
                    );
                }
            }
        }
        CatalogCommand::Activate { config, id } => {
            let settings = load_offline(config)?;
            let info = cli::activate(&settings, &id)?;
            println!("version {} ('{}') is now active", info.id, info.label);
        }
        CatalogCommand::Rollback { config } => {
            let settings = load_offline(config)?;
            let info = cli::rollback(&settings)?;
            println!("rolled back to version {} ('{}')", info.id, info.label);
        }
        CatalogCommand::Keygen { out } => {
            let g = cli::keygen(&out)?;
            println!(
                "wrote {} ({}) and {} (key id {}); give boxes the public key, keep the secret one at HQ",
                g.secret.display(),
                if g.encrypted {
                    "encrypted"
                } else {
                    "NOT encrypted"
                },
                g.public.display(),
                g.key_id
            );
        }
        what @ CatalogCommand::Publish { .. } => publish(what)?,
    }
    Ok(())
}

/// A benchmark's report: JSON for machines, its readable form for people.
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

fn bench_pipeline(args: PipelineBench) -> anyhow::Result<()> {
    let mut settings = load(args.config)?;
    if let Some(c) = args.catalog {
        settings.catalog.path = c;
    }
    let report = vitrine::bench::pipeline::run(
        &settings,
        &vitrine::bench::pipeline::BenchOptions {
            frames: args.frames,
            warmup: args.warmup,
            no_cache: args.no_cache,
            check_exact: args.check_exact,
            paced: args.paced,
        },
    )?;
    print_report(&report, args.json)
}

fn bench_fleet(what: BenchTarget) -> anyhow::Result<()> {
    let BenchTarget::Fleet {
        boxes,
        interval_s,
        duration_s,
        items,
        daemon_config,
        prebuilt,
        json,
    } = what
    else {
        anyhow::bail!("only the fleet benchmark is handled here");
    };
    let secs = |what: &str, s: f64| {
        anyhow::ensure!(
            s.is_finite() && s > 0.0,
            "--{what} must be a number of seconds above 0, not {s}"
        );
        Ok(std::time::Duration::from_secs_f64(s))
    };
    let opts = vitrine::bench::fleet::FleetOptions {
        boxes,
        interval: secs("interval-s", interval_s)?,
        jitter: 0.5,
        duration: secs("duration-s", duration_s)?,
        items,
        nginx: vitrine::bench::fleet::default_nginx(),
        daemon: match daemon_config {
            Some(config) => Some(vitrine::bench::fleet::RealBox {
                config,
                binary: std::env::current_exe().context("finding this binary")?,
            }),
            None => None,
        },
        prebuilt,
    };
    let report = vitrine::bench::fleet::run(&opts)?;
    print_report(&report, json)
}

fn bench_http(what: BenchTarget) -> anyhow::Result<()> {
    let BenchTarget::Http {
        url,
        rate,
        duration,
        connections,
        display_clients,
        window,
        rounds,
        json,
    } = what
    else {
        anyhow::bail!("only the HTTP benchmark is handled here");
    };
    use vitrine::bench::http;
    let opts = http::HttpBenchOptions {
        addr: http::parse_url(&url)?,
        rate,
        duration: duration.into(),
        connections,
        display_clients,
        window: window.into(),
        rounds,
    };
    let problems = opts.problems();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    // One thread: the load generator shares the machine with the daemon it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(http::run(&opts))?;
    print_report(&report, json)
}

fn publish(what: CatalogCommand) -> anyhow::Result<()> {
    let CatalogCommand::Publish {
        bundle,
        channel,
        key,
        rollout,
        revoke,
        with_index,
        config,
        m,
        ef_construction,
        ef_search,
        credentials,
        json,
    } = what
    else {
        anyhow::bail!("only publish is handled here");
    };
    use vitrine::catalog::channel::publish::PublishOptions;
    use vitrine::catalog::channel::store::StoreConfig;
    let mut opts = PublishOptions::new(bundle, channel);
    let mut params = vitrine::catalog::IndexParams::default();
    if let Some(c) = &config {
        let (p, limit) =
            vitrine::catalog::cli::box_catalog_settings(c).map_err(anyhow::Error::msg)?;
        params = p;
        opts.unpack_limit = limit;
    }
    params.max_connections = m.unwrap_or(params.max_connections);
    params.ef_construction = ef_construction.unwrap_or(params.ef_construction);
    params.ef_search = ef_search.unwrap_or(params.ef_search);
    let problems = params.problems();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    opts.index = with_index.then_some(params);
    opts.rollout = rollout;
    opts.revoke = revoke;
    opts.store = match &credentials {
        Some(f) => StoreConfig::default().with_credentials_file(f)?,
        None => StoreConfig::default(),
    };
    let r = vitrine::catalog::cli::publish(&opts, &key)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if !r.wrote_document {
        println!(
            "'{}' is already offered by {} at sequence {} with these settings: nothing written",
            r.version, r.channel, r.sequence
        );
        return Ok(());
    }
    println!(
        "published '{}' ({} items) to {}: sequence {}, roll-out {} %, {} ({} bytes, {})",
        r.version,
        r.items,
        r.channel,
        r.sequence,
        r.rollout_percent,
        r.bundle,
        r.size,
        if r.uploaded_bundle {
            "uploaded"
        } else {
            "already in the channel"
        }
    );
    if let Some(p) = r.prebuilt_index {
        println!(
            "prebuilt indexes: M = {}, ef_construction = {}",
            p.max_connections, p.ef_construction
        );
    }
    if !r.revoked.is_empty() {
        println!("revoked: {}", r.revoked.join(", "));
    }
    println!("signed by key {}", r.key_id);
    Ok(())
}

fn bench_catalog(what: BenchTarget) -> anyhow::Result<()> {
    let BenchTarget::Catalog {
        config,
        items,
        dim,
        queries,
        seed,
        embeddings,
        bundle,
        m,
        ef_construction,
        ef_search,
        threads,
        nice,
        pipeline,
        flat_out,
        work,
        prebuilt,
        json,
    } = what
    else {
        anyhow::bail!("only the catalog benchmark is handled here");
    };
    use vitrine::catalog::synth::Embeddings;
    let settings = match (config, pipeline) {
        (Some(c), _) => Some(load(Some(c))?),
        (None, true) => Some(load(None)?),
        (None, false) => None,
    };
    let mut params = settings
        .as_ref()
        .map(|s| s.catalog.index)
        .unwrap_or_default();
    params.max_connections = m.unwrap_or(params.max_connections);
    params.ef_construction = ef_construction.unwrap_or(params.ef_construction);
    params.ef_search = ef_search.unwrap_or(params.ef_search);
    let problems = params.problems();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    let opts = vitrine::bench::catalog::CatalogBenchOptions {
        items,
        dim,
        queries,
        seed,
        embeddings: match embeddings.as_str() {
            "inline" => Embeddings::Inline,
            "npy" => Embeddings::Npy,
            other => anyhow::bail!("--embeddings {other}: use npy or inline"),
        },
        bundle,
        params,
        import_threads: threads
            .or(settings.as_ref().map(|s| s.catalog.import_threads))
            .unwrap_or(0),
        import_nice: nice
            .or(settings.as_ref().map(|s| s.catalog.import_nice))
            .unwrap_or(10),
        pipeline,
        flat_out,
        work,
        prebuilt,
    };
    let report = vitrine::bench::catalog::run(settings.as_ref(), &opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
