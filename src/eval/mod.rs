//! Evaluation and dataset tools for the people who train models for Vitrine: score a detector
//! the way the source project did (TF Object Detection API PASCAL AP), and catch by machine the
//! three things that beat it — shifted labels, boxes normalised against the wrong image size, and
//! dirty data cleaned by hand.
//!
//! Data enters through [`formats`] (JSONL, DeepFashion, DeepFashion2, retrieval pairs) as
//! [`formats::Dataset`]s of labelled pixel boxes, optionally renamed by a [`taxonomy`], and goes
//! to one of:
//! - [`ap`]: AP per category and mAP, predictions against ground truth;
//! - [`labelmap_tools`]: label maps made from DeepFashion and checked against models and data;
//! - [`lint`]: the dataset's problems, with a cleaned copy;
//! - [`paste`]: retrieval pairs made by pasting catalog photos onto street backgrounds;
//! - [`retrieval`]: recall@k of embedder + catalog index;
//! - [`relevance`]: colour fidelity of what the whole pipeline shows ([`lab`] measures colour,
//!   [`sheet`] draws the contact sheet).
//!
//! [`models`] builds the detector and embedder these need from a config file; [`cli`] holds the
//! `vitrine eval | dataset | labels` subcommands, which only parse arguments and call the above.

pub mod ap;
pub mod cli;
pub mod formats;
pub mod lab;
pub mod labelmap_tools;
pub mod lint;
pub mod models;
pub mod paste;
pub mod relevance;
pub mod retrieval;
pub mod sheet;
pub mod taxonomy;

use std::path::PathBuf;

use crate::catalog::CatalogError;
use crate::config::ConfigError;
use crate::vision::ModelError;
use crate::vision::labels::LabelError;

/// Errors of the evaluation tools; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    // `reason`, not `source`: the message already says it, and a `source` would be printed
    // twice by the binary's error chain.
    #[error("cannot read {path}: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("cannot write {path}: {reason}")]
    Write {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path} has problems:\n  {}", .problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("cannot decode image {path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}
