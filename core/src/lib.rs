//! Empire's core: the domain types every crate shares, the [`store::Store`] with its
//! SQLite implementation, the progress sink, and the deploy [`pipeline`].
//!
//! This crate knows no Docker, AWS or SSH. External systems reach it through the traits
//! [`build::ImageBuilder`] and [`scheduler::Scheduler`], implemented by `empire-builder`
//! and `empire-deployer`, and the binary wires the real implementations together.

pub mod app;
pub mod build;
pub mod domain;
pub mod error;
pub mod event;
pub mod formation;
pub mod pipeline;
pub mod procfile;
pub mod progress;
pub mod push_event;
pub mod registry_errors;
pub mod release;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod user;

pub use error::{Error, Result};
