//! Empire deployer: runs releases. The `docker` backend ([`DockerScheduler`]) starts one
//! container per process instance on the local Docker engine and routes web traffic to
//! them through the built-in HTTP [`Router`], health-gated: a release takes traffic only
//! once all its processes are up, and a bad release never does. Scaling and restarts
//! follow the same health gate; one-off processes (`run`) run attached or detached, and
//! `logs` merges the output of an app's containers.

mod docker;
pub mod ecs;
mod error;
mod registry;
mod router;

pub use docker::{DockerScheduler, DockerSchedulerOptions};
pub use ecs::{EcsConfig, LaunchType};
pub use error::DeployerError;
pub use registry::{ImageRegistry, RegistryLogin};
pub use router::{Backend, Router, RouterBody};
