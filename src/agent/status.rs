//! What `r2a-node status` reports: who the node is and, for every step (the common
//! steps, then the role's join steps), whether it is done, pending, waiting or failed,
//! when, and what it found or did.
//!
//! Done comes from the markers under `/var/lib/r2a/done/`, which survive reboots; a
//! failure comes from `/run/r2a/status.json`, which the last run wrote and a reboot
//! clears (the next run tries again). Join steps that wait or failed in this boot come
//! from `/run/r2a/join.json` ([`crate::agent::join::JOIN_STATUS_FILE`]).

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::config::RoleView;
use super::identity::{Identity, read_recorded};
use super::join::{JoinState, JoinStatus};
use super::markers::read_marker;
use super::root::Root;
use super::steps::step_names;
use crate::fsutil::{read_optional, write_atomic};

/// The report of the last run.
pub const STATUS_FILE: &str = "/run/r2a/status.json";

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its marker exists.
    Done,
    /// Not reached yet.
    Pending,
    /// A join step waiting for its peers or a service.
    Waiting,
    /// The last run stopped in it.
    Failed,
}

/// One step's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    /// The step's name.
    pub step: String,
    /// Where it stands.
    pub state: State,
    /// When it was done or failed, RFC 3339 in UTC.
    pub when: Option<String>,
    /// What it found or did, or why it failed.
    pub detail: String,
}

/// What stopped the last run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The step it stopped in; none when it stopped before the steps (configuration,
    /// identity).
    pub step: Option<String>,
    /// Whether it is a configuration error (a retry will not help).
    pub configuration: bool,
    /// The error, with its causes.
    pub message: String,
    /// When, RFC 3339 in UTC.
    pub at: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Who the node is, once recorded.
    pub identity: Option<Identity>,
    /// Every common step, in order.
    pub steps: Vec<StepStatus>,
    /// The role's join steps, in order.
    #[serde(default)]
    pub join: Vec<StepStatus>,
    /// What stopped the last run, if it stopped.
    pub failure: Option<Failure>,
}

impl Report {
    /// Builds the report from the identity record, the markers and `failure`.
    pub fn collect(root: &Root, failure: Option<Failure>) -> anyhow::Result<Report> {
        let identity = read_recorded(root)?.map(|recorded| recorded.identity);
        let mut steps = Vec::new();
        for name in step_names() {
            let failed_here = failure
                .as_ref()
                .filter(|failure| failure.step.as_deref() == Some(name));
            let status = match (failed_here, read_marker(root, name)?) {
                (Some(failure), _) => StepStatus {
                    step: name.to_string(),
                    state: State::Failed,
                    when: Some(failure.at.clone()),
                    detail: failure.message.clone(),
                },
                (None, Some(marker)) => StepStatus {
                    step: name.to_string(),
                    state: State::Done,
                    when: Some(marker.done_at),
                    detail: marker.detail,
                },
                (None, None) => StepStatus {
                    step: name.to_string(),
                    state: State::Pending,
                    when: None,
                    detail: String::new(),
                },
            };
            steps.push(status);
        }
        Ok(Report {
            identity,
            steps,
            join: join_steps(root)?,
            failure,
        })
    }

    /// The current report: markers as they are now, plus the failure the last run
    /// recorded in [`STATUS_FILE`], if any.
    pub fn current(root: &Root) -> anyhow::Result<Report> {
        let path = root.path(STATUS_FILE);
        let last_run: Option<Report> = match read_optional(&path)? {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            ),
            None => None,
        };
        Report::collect(root, last_run.and_then(|report| report.failure))
    }

    /// Writes the report to [`STATUS_FILE`], unless it already says the same.
    pub fn save(&self, root: &Root) -> anyhow::Result<()> {
        let path = root.path(STATUS_FILE);
        let mut json = serde_json::to_string_pretty(self).context("encoding the status")?;
        json.push('\n');
        if read_optional(&path)?.as_deref() == Some(json.as_str()) {
            return Ok(());
        }
        write_atomic(&path, json.as_bytes(), 0o644)
    }

    /// Whether every step is done.
    pub fn all_done(&self) -> bool {
        self.steps.iter().all(|step| step.state == State::Done)
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let mut text = match &self.identity {
            Some(identity) => format!(
                "node {} ({}) of cluster {}, role {}; found by {}: {}\n",
                identity.node,
                identity.address,
                identity.cluster,
                identity.role,
                identity.source,
                identity.evidence
            ),
            None => "node not identified yet\n".to_string(),
        };
        let rows: Vec<[&str; 4]> = self
            .steps
            .iter()
            .chain(&self.join)
            .map(|step| {
                let state = match step.state {
                    State::Done => "done",
                    State::Pending => "pending",
                    State::Waiting => "waiting",
                    State::Failed => "failed",
                };
                // Only the first line of a multi-line error fits a table row.
                let detail = step.detail.lines().next().unwrap_or_default();
                [
                    &step.step,
                    state,
                    step.when.as_deref().unwrap_or("-"),
                    detail,
                ]
            })
            .collect();
        let header = ["STEP", "STATE", "WHEN", "DETAIL"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line = format!(
                "{:w0$}  {:w1$}  {:w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
            text.push_str(line.trim_end());
            text.push('\n');
        }
        if let Some(failure) = &self.failure {
            let kind = if failure.configuration {
                "configuration error"
            } else {
                "error"
            };
            text.push_str(&format!("{kind}: {}\n", failure.message));
        }
        text
    }
}

/// The join steps of the image's role: this boot's [`JoinStatus`] where it has one,
/// else done by marker, else pending. An image whose role file cannot be read has none.
fn join_steps(root: &Root) -> anyhow::Result<Vec<StepStatus>> {
    let Ok(role) = RoleView::load(root) else {
        return Ok(Vec::new());
    };
    let this_boot = JoinStatus::load(root)?.unwrap_or_default();
    let mut lines = Vec::new();
    for name in &role.join {
        let current = this_boot
            .steps
            .iter()
            .find(|line| &line.step == name && line.state != JoinState::Pending);
        let line = match (current, read_marker(root, name)?) {
            (Some(current), _) => StepStatus {
                step: name.clone(),
                state: match current.state {
                    JoinState::Pending => State::Pending,
                    JoinState::Waiting => State::Waiting,
                    JoinState::Done => State::Done,
                    JoinState::Failed => State::Failed,
                },
                when: current.since.clone(),
                detail: current.detail.clone(),
            },
            (None, Some(marker)) => StepStatus {
                step: name.clone(),
                state: State::Done,
                when: Some(marker.done_at),
                detail: marker.detail,
            },
            (None, None) => StepStatus {
                step: name.clone(),
                state: State::Pending,
                when: None,
                detail: String::new(),
            },
        };
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::markers::write_marker;
    use crate::agent::testing::FakeRoot;

    fn failure_in(step: &str) -> Failure {
        Failure {
            step: Some(step.to_string()),
            configuration: false,
            message: "nft -f /etc/nftables.conf failed (exit status: 1):\nline 3: oops".to_string(),
            at: "2025-08-09T00:00:09Z".to_string(),
        }
    }

    #[test]
    fn steps_are_done_pending_or_failed() {
        let fake = FakeRoot::db();
        write_marker(&fake.root, "node-files", "nothing to install").unwrap();
        write_marker(&fake.root, "hostname", "hostname is db1").unwrap();
        let report = Report::collect(&fake.root, Some(failure_in("firewall"))).unwrap();
        let states: Vec<(&str, State)> = report
            .steps
            .iter()
            .map(|step| (step.step.as_str(), step.state))
            .collect();
        assert_eq!(
            states,
            [
                ("node-files", State::Done),
                ("hostname", State::Done),
                ("hosts", State::Pending),
                ("network", State::Pending),
                ("firewall", State::Failed),
                ("data-disk", State::Pending),
                ("grow-root", State::Pending),
            ]
        );
        assert!(!report.all_done());
    }

    #[test]
    fn the_json_report_has_a_stable_shape() {
        let fake = FakeRoot::db();
        write_marker(&fake.root, "hosts", "all listed").unwrap();
        let report = Report::collect(&fake.root, Some(failure_in("network"))).unwrap();
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["identity"], serde_json::Value::Null);
        assert_eq!(json["steps"][2]["step"], "hosts");
        assert_eq!(json["steps"][2]["state"], "done");
        assert_eq!(json["steps"][2]["detail"], "all listed");
        assert_eq!(json["steps"][3]["state"], "failed");
        assert_eq!(json["steps"][3]["when"], "2025-08-09T00:00:09Z");
        assert_eq!(json["steps"][4]["state"], "pending");
        assert_eq!(json["steps"][4]["when"], serde_json::Value::Null);
        assert_eq!(json["failure"]["step"], "network");
        assert_eq!(json["failure"]["configuration"], false);
    }

    #[test]
    fn a_saved_report_is_read_back_with_current_markers() {
        let fake = FakeRoot::db();
        Report::collect(&fake.root, Some(failure_in("firewall")))
            .unwrap()
            .save(&fake.root)
            .unwrap();
        write_marker(&fake.root, "node-files", "done since").unwrap();
        let current = Report::current(&fake.root).unwrap();
        assert_eq!(current.steps[0].state, State::Done);
        assert_eq!(current.steps[4].state, State::Failed);
    }

    #[test]
    fn the_table_has_a_row_per_step_and_the_error_last() {
        let fake = FakeRoot::db();
        write_marker(&fake.root, "node-files", "nothing to install").unwrap();
        let table = Report::collect(&fake.root, Some(failure_in("firewall")))
            .unwrap()
            .to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "node not identified yet");
        assert!(lines[1].starts_with("STEP        STATE    WHEN"), "{table}");
        assert!(lines[2].starts_with("node-files  done     20"), "{table}");
        assert!(
            lines[6].starts_with("firewall    failed   2025-08-09T00:00:09Z  nft -f"),
            "{table}"
        );
        assert!(!lines[6].contains("oops"), "one line per step: {table}");
        // The error itself is printed whole, stderr tail included.
        assert!(lines[9].starts_with("error: nft -f"), "{table}");
        assert_eq!(lines[10..], ["line 3: oops"], "{table}");
    }
}
