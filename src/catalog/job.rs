//! The record of each catalog write (an upload's import, a seed import, an item edit): what it
//! is, where it stands, how it ended. Staff follow it through `GET /api/catalog/jobs/{id}`, the
//! CLI draws its progress bar from it, and the benchmark times its stages.
//!
//! The writer ([`super::import::CatalogService`]) creates and advances jobs; everyone else only
//! reads their [`JobStatus`]. The last [`JOBS_KEPT`] are remembered, in memory only: a restart
//! forgets them, the versions they made stay in the data folder.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::CatalogError;
use super::store::VersionInfo;

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// The seed folder imported at start-up into an empty data folder.
    Seed,
    /// A bundle imported (upload, CLI, channel).
    Import,
    /// Single-item edits.
    Edit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// The step a job is at, in the order an import passes them (an edit skips some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Starting,
    Receiving,
    Unpacking,
    Validating,
    Embedding,
    Indexing,
    Saving,
    Activating,
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Receiving => "receiving",
            Stage::Unpacking => "unpacking",
            Stage::Validating => "validating",
            Stage::Embedding => "embedding",
            Stage::Indexing => "indexing",
            Stage::Saving => "saving",
            Stage::Activating => "activating",
            Stage::Done => "done",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's state, as `GET /api/catalog/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    pub stage: Stage,
    /// Progress within the stage (bytes received, items embedded, vectors indexed).
    pub done: u64,
    pub total: u64,
    pub started: String,
    pub finished: Option<String>,
    /// The version the job created.
    pub version: Option<String>,
    pub activated: bool,
    pub error: Option<String>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// A write that failed, with the job that recorded it when that job's report tells more than
/// the error (progress, the bundle's problems). Refusals before any catalog work (busy, upload
/// too large, stalled) carry none.
#[derive(Debug)]
pub struct JobError {
    pub error: CatalogError,
    pub job: Option<String>,
}

impl From<CatalogError> for JobError {
    fn from(error: CatalogError) -> Self {
        JobError { error, job: None }
    }
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub struct Job {
    status: Mutex<JobStatus>,
}

impl Job {
    fn new(id: String, kind: JobKind) -> Self {
        Self {
            status: Mutex::new(JobStatus {
                id,
                kind,
                state: JobState::Running,
                stage: Stage::Starting,
                done: 0,
                total: 0,
                started: now_rfc3339(),
                finished: None,
                version: None,
                activated: false,
                error: None,
                problems: vec![],
                warnings: vec![],
            }),
        }
    }

    fn edit(&self, f: impl FnOnce(&mut JobStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn status(&self) -> JobStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn id(&self) -> String {
        self.status().id
    }

    pub(crate) fn stage(&self, stage: Stage, total: u64) {
        self.edit(|s| {
            s.stage = stage;
            s.done = 0;
            s.total = total;
        });
    }

    pub(crate) fn progress(&self, done: u64) {
        self.edit(|s| s.done = done);
    }

    /// Progress when the total is only learnt along the way (rebuilds of edited groups).
    pub(crate) fn progress_of(&self, done: u64, total: u64) {
        self.edit(|s| {
            s.done = done;
            s.total = total;
        });
    }

    /// Marks the job failed before any catalog work started (e.g. an upload refused).
    pub(crate) fn fail(&self, e: &CatalogError) {
        self.finish(&Err(e.clone_shallow()), false);
    }

    pub(crate) fn finish(&self, result: &Result<VersionInfo, CatalogError>, activated: bool) {
        self.edit(|s| {
            s.finished = Some(now_rfc3339());
            match result {
                Ok(info) => {
                    s.state = JobState::Succeeded;
                    s.stage = Stage::Done;
                    s.version = Some(info.id.clone());
                    s.activated = activated;
                    s.warnings = info.warnings.clone();
                }
                Err(e) => {
                    s.state = JobState::Failed;
                    s.error = Some(e.summary());
                    s.problems = e.problems().to_vec();
                }
            }
        });
    }
}

/// Jobs remembered for `GET /api/catalog/jobs`.
pub const JOBS_KEPT: usize = 50;

/// The last [`JOBS_KEPT`] jobs, oldest first.
#[derive(Default)]
pub(crate) struct Jobs {
    list: Mutex<VecDeque<Arc<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    /// Ids are unique within a run and unlikely to repeat across restarts (the clock is in
    /// them), so a staff script polling an old id after a restart is told "no such job".
    pub fn start(&self, kind: JobKind) -> Arc<Job> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let job = Arc::new(Job::new(format!("j{secs:x}-{n}"), kind));
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.push_back(job.clone());
        while list.len() > JOBS_KEPT {
            list.pop_front();
        }
        job
    }

    pub fn status(&self, id: &str) -> Result<JobStatus, CatalogError> {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|j| j.status())
            .find(|s| s.id == id)
            .ok_or_else(|| CatalogError::NoSuchJob(id.into()))
    }

    /// Newest first.
    pub fn statuses(&self) -> Vec<JobStatus> {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .map(|j| j.status())
            .collect()
    }

    /// The job that holds the writer now, for a "busy" answer that names it.
    pub fn running_write(&self) -> Option<(String, Stage)> {
        self.statuses()
            .into_iter()
            .find(|j| j.state == JobState::Running && j.stage != Stage::Receiving)
            .map(|j| (j.id, j.stage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_stages_keep_the_strings_staff_scripts_read() {
        let jobs = Jobs::default();
        let job = jobs.start(JobKind::Import);
        job.stage(Stage::Receiving, 10);
        let v = serde_json::to_value(job.status()).expect("json");
        assert_eq!(
            (&v["kind"], &v["state"], &v["stage"]),
            (
                &serde_json::json!("import"),
                &serde_json::json!("running"),
                &serde_json::json!("receiving")
            )
        );
        assert_eq!(jobs.running_write(), None, "receiving holds no writer");
        job.fail(&CatalogError::EmptyUpload);
        let v = serde_json::to_value(job.status()).expect("json");
        assert_eq!(v["state"], "failed");
        assert_eq!(v["error"], CatalogError::EmptyUpload.to_string());
        for (stage, text) in [
            (Stage::Starting, "starting"),
            (Stage::Unpacking, "unpacking"),
            (Stage::Validating, "validating"),
            (Stage::Embedding, "embedding"),
            (Stage::Indexing, "indexing"),
            (Stage::Saving, "saving"),
            (Stage::Activating, "activating"),
            (Stage::Done, "done"),
        ] {
            assert_eq!(serde_json::to_value(stage).expect("json"), text);
            assert_eq!(stage.to_string(), text);
        }
    }

    #[test]
    fn only_the_newest_jobs_are_kept() {
        let jobs = Jobs::default();
        let first = jobs.start(JobKind::Edit).id();
        let edit = jobs.start(JobKind::Edit);
        edit.stage(Stage::Indexing, 0);
        assert_eq!(jobs.running_write(), Some((edit.id(), Stage::Indexing)));
        for _ in 0..JOBS_KEPT {
            jobs.start(JobKind::Import);
        }
        assert!(matches!(
            jobs.status(&first),
            Err(CatalogError::NoSuchJob(id)) if id == first
        ));
        assert_eq!(jobs.statuses().len(), JOBS_KEPT);
        assert_ne!(jobs.statuses()[0].id, edit.id(), "newest first");
    }
}
