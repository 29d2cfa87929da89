//! The seam between the pipeline and whatever turns a commit into an image.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::app::AppName;
use crate::error::Result;
use crate::progress::Progress;
use crate::release::ConfigVars;

/// What to build: one commit of an app's repository.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The app being built.
    pub app: AppName,
    /// The release number the image is for (tagged `empire/<app>:v<N>`).
    pub version: u32,
    /// The app's bare repository.
    pub repo_path: PathBuf,
    /// Extra object directories to read (a push's quarantine, before refs move).
    pub object_dirs: Vec<PathBuf>,
    /// The commit to build.
    pub commit: String,
    /// The app's config vars, for build steps that read them.
    pub config: ConfigVars,
    /// Build without any cache (`git push -o no-cache`).
    pub no_cache: bool,
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The reference the scheduler runs: a local tag or a registry digest reference.
    pub image: String,
    /// The image ID (`sha256:…`).
    pub image_id: String,
    /// The commit's `Procfile`, if it has one.
    pub procfile: Option<String>,
}

/// Builds images from commits. Implemented by `empire-builder` on the Docker engine.
#[async_trait]
pub trait ImageBuilder: Send + Sync {
    /// Builds the commit, streaming its output to `progress` line by line as it comes.
    /// A failing build returns [`crate::Error::Build`] with the reason.
    async fn build(&self, request: &BuildRequest, progress: &Progress) -> Result<BuiltImage>;

    /// Removes the app's local images except those of the releases in `keep`. Builders
    /// that keep no local images have nothing to prune.
    async fn prune(&self, _app: &AppName, _keep: &[u32]) -> Result<()> {
        Ok(())
    }
}
