//! Releases: immutable, numbered deploys of an image with its config and process types,
//! and the state machine every deploy walks through.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppName;
use crate::error::{Error, Result};

/// Config vars: the environment every process of a release gets.
pub type ConfigVars = BTreeMap<String, String>;

/// Process types: name → command. An empty command means the image's own CMD.
pub type ProcessTypes = BTreeMap<String, String>;

/// Where a release is in its deploy. Every transition is persisted, so a restarted
/// gateway knows which deploys it interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseStatus {
    /// Recorded, waiting for its build.
    Pending,
    /// The image is being built.
    Building,
    /// The image exists; its processes are rolling out.
    Deploying,
    /// The release served (it is or was the current release).
    Succeeded,
    /// The build or rollout failed; never current, never a rollback target.
    Failed,
}

impl ReleaseStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Pending => "pending",
            ReleaseStatus::Building => "building",
            ReleaseStatus::Deploying => "deploying",
            ReleaseStatus::Succeeded => "succeeded",
            ReleaseStatus::Failed => "failed",
        }
    }

    /// Whether the release is still on its way (not succeeded, not failed).
    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            ReleaseStatus::Pending | ReleaseStatus::Building | ReleaseStatus::Deploying
        )
    }

    /// Checks that moving from `self` to `next` is a legal transition.
    pub fn check_transition(self, next: ReleaseStatus) -> Result<()> {
        use ReleaseStatus::*;
        let legal = matches!(
            (self, next),
            (Pending, Building)
                | (Pending, Deploying)
                | (Building, Deploying)
                | (Deploying, Succeeded)
                | (Pending | Building | Deploying, Failed)
        );
        if legal {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "release cannot move from {} to {}",
                self.as_str(),
                next.as_str()
            )))
        }
    }
}

impl fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReleaseStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => ReleaseStatus::Pending,
            "building" => ReleaseStatus::Building,
            "deploying" => ReleaseStatus::Deploying,
            "succeeded" => ReleaseStatus::Succeeded,
            "failed" => ReleaseStatus::Failed,
            other => return Err(Error::invalid("release status", other.to_string())),
        })
    }
}

/// A numbered release of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The app it belongs to.
    pub app: AppName,
    /// v1, v2, … per app.
    pub version: u32,
    /// Where its deploy is.
    pub status: ReleaseStatus,
    /// The image reference the scheduler runs (a tag or `repo@sha256:…`).
    pub image: Option<String>,
    /// The image ID (`sha256:…`) the build produced.
    pub image_id: Option<String>,
    /// Process types from the Procfile (or the image's CMD as `web`).
    pub process_types: ProcessTypes,
    /// The raw Procfile, when the commit had one.
    pub procfile: Option<String>,
    /// The environment of every process.
    pub config: ConfigVars,
    /// The git commit it was built from.
    pub commit: Option<String>,
    /// Who started the deploy.
    pub user: String,
    /// What the release is (`Deploy 1a2b3c4`, `Rollback to v3`, …).
    pub description: String,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// When it was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What the pipeline knows of a release before the store numbers it.
#[derive(Debug, Clone, Default)]
pub struct NewRelease {
    /// The git commit, for pushes.
    pub commit: Option<String>,
    /// Who started the deploy.
    pub user: String,
    /// The description.
    pub description: String,
    /// The config vars it runs with.
    pub config: ConfigVars,
}

#[cfg(test)]
mod tests {
    use super::ReleaseStatus::*;

    #[test]
    fn walks_the_happy_path() {
        Pending.check_transition(Building).unwrap();
        Building.check_transition(Deploying).unwrap();
        Deploying.check_transition(Succeeded).unwrap();
    }

    #[test]
    fn refuses_to_leave_final_states() {
        for next in [Pending, Building, Deploying, Succeeded, Failed] {
            assert!(Failed.check_transition(next).is_err());
            assert!(Succeeded.check_transition(next).is_err());
        }
        assert!(Building.check_transition(Succeeded).is_err());
    }
}
