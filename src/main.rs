//! The `vitrine` binary: parses the command line, loads the config, sets up logging and hands
//! over to the library. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Run the pipeline over the replay frames as fast as possible and report timings.
    Bench {
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
    },
    /// Catalog tools for store staff.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Score models: detections (AP/mAP, TF OD API PASCAL) and retrieval (recall@k).
    Eval {
        #[command(subcommand)]
        command: vitrine::eval::cli::EvalCommand,
    },
    /// Dataset tools: lint (with a cleaned copy) and conversion to JSONL.
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
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    let path = config.unwrap_or_else(default_config_path);
    Ok(Settings::load(&path)?)
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => {
            let mut settings = load(config)?;
            if let Some(l) = listen {
                settings.server.listen = l.parse().with_context(|| {
                    format!("--listen {l}: expected address:port, e.g. 127.0.0.1:8080")
                })?;
            }
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let hooks = vitrine::Hooks {
                on_listen: Box::new(|addr| {
                    println!(
                        "vitrine listening on http://{addr}/ (recommendations: http://{addr}/api/recommendations)"
                    );
                }),
                on_ready: Box::new(|| println!("vitrine ready")),
                ..Default::default()
            };
            rt.block_on(vitrine::run(settings, shutdown_signal(), hooks))?;
            Ok(())
        }
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
        Command::Bench {
            config,
            frames,
            warmup,
            no_cache,
            check_exact,
            paced,
            catalog,
            json,
        } => {
            let mut settings = load(config)?;
            if let Some(c) = catalog {
                settings.catalog.path = c;
            }
            let report = vitrine::bench::run(
                &settings,
                &vitrine::bench::BenchOptions {
                    frames,
                    warmup,
                    no_cache,
                    check_exact,
                    paced,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Catalog {
            command:
                CatalogCommand::Build {
                    config,
                    images,
                    meta,
                    out,
                    version,
                },
        } => {
            let settings = load(config)?;
            let n = vitrine::build_catalog(&settings, &images, &meta, &out, &version)?;
            println!("wrote {n} items to {}", out.display());
            Ok(())
        }
        Command::Eval { command } => Ok(vitrine::eval::cli::run_eval(command)?),
        Command::Dataset { command } => Ok(vitrine::eval::cli::run_dataset(command)?),
        Command::Labels { command } => Ok(vitrine::eval::cli::run_labels(command)?),
    }
}
