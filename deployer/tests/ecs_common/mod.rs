//! What the ECS tests share lives in `empire_deployer::ecs::testing` (the
//! `test-support` feature), so tests/tests/ecs.rs uses the same moto set-up and proxy.

#![allow(unused_imports)]

pub use empire_deployer::ecs::testing::*;
