//! Formation: how many instances of each process type run, and how big they are. It
//! lives on the app, not in releases; scaling makes no release.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// CPU shares and memory of one process instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessSize {
    /// Docker CPU shares (1024 = one CPU's worth when contended).
    pub cpu_shares: u32,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
}

const MB: u64 = 1024 * 1024;
const GB: u64 = 1024 * MB;

impl ProcessSize {
    /// `1X`: 256 CPU shares, 512 MB (the default).
    pub const X1: ProcessSize = ProcessSize {
        cpu_shares: 256,
        memory_bytes: 512 * MB,
    };
    /// `2X`: 512 CPU shares, 1 GB.
    pub const X2: ProcessSize = ProcessSize {
        cpu_shares: 512,
        memory_bytes: GB,
    };
    /// `PX`: 1024 CPU shares, 6 GB.
    pub const PX: ProcessSize = ProcessSize {
        cpu_shares: 1024,
        memory_bytes: 6 * GB,
    };

    /// Parses Empire's size grammar: `1X`, `2X`, `PX`, or `<cpu shares>:<memory>` where
    /// memory is bytes or a number with `KB`, `MB` or `GB` (`512:1GB`).
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_uppercase().as_str() {
            "1X" => return Ok(ProcessSize::X1),
            "2X" => return Ok(ProcessSize::X2),
            "PX" => return Ok(ProcessSize::PX),
            _ => {}
        }
        let invalid = || {
            Error::invalid(
                "size",
                format!(
                    "{text:?} is not a size: use 1X, 2X, PX or <cpu shares>:<memory> such as 512:1GB"
                ),
            )
        };
        let (cpu, memory) = text.split_once(':').ok_or_else(invalid)?;
        let cpu_shares: u32 = cpu.parse().map_err(|_| invalid())?;
        let memory_bytes = parse_memory(memory).ok_or_else(invalid)?;
        if !(2..=262_144).contains(&cpu_shares) || memory_bytes < 6 * MB {
            return Err(Error::invalid(
                "size",
                format!("{text:?} is out of range: CPU shares 2-262144, memory at least 6MB"),
            ));
        }
        Ok(ProcessSize {
            cpu_shares,
            memory_bytes,
        })
    }
}

impl Default for ProcessSize {
    fn default() -> Self {
        ProcessSize::X1
    }
}

impl fmt::Display for ProcessSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProcessSize::X1 => f.write_str("1X"),
            ProcessSize::X2 => f.write_str("2X"),
            ProcessSize::PX => f.write_str("PX"),
            ProcessSize {
                cpu_shares,
                memory_bytes,
            } => {
                if memory_bytes % GB == 0 {
                    write!(f, "{cpu_shares}:{}GB", memory_bytes / GB)
                } else if memory_bytes % MB == 0 {
                    write!(f, "{cpu_shares}:{}MB", memory_bytes / MB)
                } else {
                    write!(f, "{cpu_shares}:{memory_bytes}")
                }
            }
        }
    }
}

fn parse_memory(text: &str) -> Option<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let (number, unit) = match upper.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => upper.split_at(i),
        None => (upper.as_str(), ""),
    };
    let number: u64 = number.parse().ok()?;
    let unit = match unit {
        "" | "B" => 1,
        "K" | "KB" => 1024,
        "M" | "MB" => MB,
        "G" | "GB" => GB,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// One process type's entry in an app's formation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFormation {
    /// The process type.
    pub process: String,
    /// How many instances run.
    pub quantity: u32,
    /// How big each instance is.
    pub size: ProcessSize,
}

/// A requested change to one process type: `web=3`, `worker=2:2X`, `web=1:512:1GB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRequest {
    /// The process type.
    pub process: String,
    /// The new count, if given.
    pub quantity: Option<u32>,
    /// The new size, if given.
    pub size: Option<ProcessSize>,
}

impl ScaleRequest {
    /// Parses `type=count[:size]` (also `type=:size` to resize only).
    pub fn parse(text: &str) -> Result<Self> {
        let (process, rest) = text.split_once('=').ok_or_else(|| {
            Error::invalid(
                "scale",
                format!(
                    "{text:?}: expected <process>=<count>[:<size>], such as web=3 or worker=2:2X"
                ),
            )
        })?;
        if process.is_empty()
            || !process
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::invalid(
                "process",
                format!("{process:?} is not a process type name"),
            ));
        }
        let (count, size) = match rest.split_once(':') {
            Some((count, size)) => (count, Some(ProcessSize::parse(size)?)),
            None => (rest, None),
        };
        let quantity = if count.is_empty() {
            None
        } else {
            Some(count.parse::<u32>().map_err(|_| {
                Error::invalid(
                    "quantity",
                    format!("{count:?} for {process} is not a count: use a whole number 0 or more"),
                )
            })?)
        };
        if quantity.is_none() && size.is_none() {
            return Err(Error::invalid(
                "scale",
                format!("{text:?} gives neither a count nor a size"),
            ));
        }
        Ok(ScaleRequest {
            process: process.to_string(),
            quantity,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_explicit_sizes() {
        assert_eq!(ProcessSize::parse("1X").unwrap(), ProcessSize::X1);
        assert_eq!(ProcessSize::parse("px").unwrap(), ProcessSize::PX);
        let size = ProcessSize::parse("512:1GB").unwrap();
        assert_eq!(size, ProcessSize::X2);
        let size = ProcessSize::parse("100:256MB").unwrap();
        assert_eq!(size.cpu_shares, 100);
        assert_eq!(size.memory_bytes, 256 * MB);
        assert_eq!(size.to_string(), "100:256MB");
        assert!(ProcessSize::parse("3X").is_err());
        assert!(ProcessSize::parse("512:1TB").is_err());
        assert!(ProcessSize::parse("1:1GB").is_err());
    }

    #[test]
    fn parses_scale_requests() {
        let r = ScaleRequest::parse("web=3").unwrap();
        assert_eq!(
            (r.process.as_str(), r.quantity, r.size),
            ("web", Some(3), None)
        );
        let r = ScaleRequest::parse("worker=2:2X").unwrap();
        assert_eq!(r.size, Some(ProcessSize::X2));
        let r = ScaleRequest::parse("web=2:512:1GB").unwrap();
        assert_eq!((r.quantity, r.size), (Some(2), Some(ProcessSize::X2)));
        let r = ScaleRequest::parse("web=:PX").unwrap();
        assert_eq!((r.quantity, r.size), (None, Some(ProcessSize::PX)));
        for bad in ["web", "web=-1", "web=x", "=3", "w b=1", "web="] {
            assert!(ScaleRequest::parse(bad).is_err(), "{bad}");
        }
        let err = ScaleRequest::parse("web=-1").unwrap_err().to_string();
        assert!(err.contains("quantity"), "{err}");
    }
}
