//! Where the join steps stand: `/run/r2a/join.json`, written by `r2a-node join` after
//! every attempt and read by `r2a-node status` and the boot report. A reboot clears it;
//! the done markers stay.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::agent::root::Root;
use crate::fsutil::{read_optional, write_atomic};

/// The join steps' status of the running boot.
pub const JOIN_STATUS_FILE: &str = "/run/r2a/join.json";

/// Where one join step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinState {
    /// Not tried yet in this boot, and never done.
    Pending,
    /// Tried, and waiting for something (peers, a service, a retry after an error).
    Waiting,
    /// Reached its goal.
    Done,
    /// Stopped by a configuration error; a retry will not help.
    Failed,
}

/// One step's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinStepStatus {
    /// The step's name.
    pub step: String,
    /// Where it stands.
    pub state: JoinState,
    /// When it got there, RFC 3339 in UTC.
    pub since: Option<String>,
    /// What it did, or what it waits for, or why it failed.
    pub detail: String,
}

/// Every join step of the role, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinStatus {
    /// The steps.
    pub steps: Vec<JoinStepStatus>,
}

impl JoinStatus {
    /// Every step pending.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> JoinStatus {
        JoinStatus {
            steps: names
                .into_iter()
                .map(|name| JoinStepStatus {
                    step: name.to_string(),
                    state: JoinState::Pending,
                    since: None,
                    detail: String::new(),
                })
                .collect(),
        }
    }

    /// Records where `step` stands.
    pub fn set(&mut self, step: &str, state: JoinState, since: String, detail: String) {
        if let Some(line) = self.steps.iter_mut().find(|line| line.step == step) {
            line.state = state;
            line.since = Some(since);
            line.detail = detail;
        }
    }

    /// Whether every step is done.
    pub fn all_done(&self) -> bool {
        self.steps.iter().all(|line| line.state == JoinState::Done)
    }

    /// The first step that is not done, if any.
    pub fn first_unfinished(&self) -> Option<&JoinStepStatus> {
        self.steps.iter().find(|line| line.state != JoinState::Done)
    }

    /// Writes [`JOIN_STATUS_FILE`], unless it already says the same.
    pub fn save(&self, root: &Root) -> anyhow::Result<()> {
        let path = root.path(JOIN_STATUS_FILE);
        let mut json = serde_json::to_string_pretty(self).context("encoding the join status")?;
        json.push('\n');
        if read_optional(&path)?.as_deref() == Some(json.as_str()) {
            return Ok(());
        }
        write_atomic(&path, json.as_bytes(), 0o644)
    }

    /// Reads [`JOIN_STATUS_FILE`], if this boot wrote it.
    pub fn load(root: &Root) -> anyhow::Result<Option<JoinStatus>> {
        let path = root.path(JOIN_STATUS_FILE);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display()))
    }
}
