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
        #[arg(long)]
        json: bool,
    },
    /// Catalog tools for store staff.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
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
                on_staff_listen: Box::new(|addr| {
                    println!("vitrine staff API listening on http://{addr}/api/catalog");
                }),
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
            json,
        } => {
            let settings = load(config)?;
            let report = vitrine::bench::run(
                &settings,
                &vitrine::bench::BenchOptions {
                    frames,
                    warmup,
                    no_cache,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Catalog { command } => catalog(command),
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
            let settings = load(config)?;
            let n = vitrine::build_catalog(&settings, &images, &meta, &out, &version)?;
            println!("wrote {n} items to {}", out.display());
        }
        CatalogCommand::Import {
            config,
            bundle,
            no_activate,
            label,
        } => {
            let settings = load(config)?;
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
            let settings = load(config)?;
            println!("{}", cli::verify(&settings, &bundle)?);
        }
        CatalogCommand::List { config, json } => {
            let settings = load(config)?;
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
            let settings = load(config)?;
            let info = cli::activate(&settings, &id)?;
            println!("version {} ('{}') is now active", info.id, info.label);
        }
        CatalogCommand::Rollback { config } => {
            let settings = load(config)?;
            let info = cli::rollback(&settings)?;
            println!("rolled back to version {} ('{}')", info.id, info.label);
        }
    }
    Ok(())
}
