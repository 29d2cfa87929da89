//! The extended (YAML) Procfile: serde with serde_norway, so each error carries the
//! path of the offending key (`web.cron`) and its line and column.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_norway::Value;

use super::{ProcessSettings, Procfile, ProcfileError, is_name_char};
use crate::error::Error;
use crate::formation::ProcessSize;
use crate::pipeline::RELEASE_PROCESS;
use crate::schedule::Schedule;
use crate::scheduler::PortMapping;

/// The keys a process type takes in the extended form.
const KEYS: [&str; 7] = [
    "command",
    "cron",
    "noservice",
    "ports",
    "environment",
    "healthcheck",
    "size",
];

/// What reading a Procfile as YAML found.
pub(super) enum Outcome {
    /// It is in the extended form: the result of parsing it.
    Extended(Result<Procfile, ProcfileError>),
    /// It is valid YAML but not the extended form.
    NotExtended,
    /// It is not valid YAML: the error, worded for the extended form.
    BrokenYaml(ProcfileError),
}

/// Reads `input` as YAML and parses it when it is the extended form. With
/// `flow_only`, the standard form parsed it too, and only entries that YAML reads as
/// mappings of extended keys make it extended.
pub(super) fn parse(input: &str, flow_only: bool) -> Outcome {
    let text = input.strip_prefix('\u{feff}').unwrap_or(input);
    let value: Value = match serde_norway::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            // Duplicate keys: the extended parser says which process type, and where.
            if err.to_string().starts_with("duplicate entry")
                && let Err(err) = serde_norway::from_str::<Document>(text)
            {
                return Outcome::BrokenYaml(located(text, &err));
            }
            let mut error = located(text, &err);
            error.message = format!("not a valid extended (YAML) Procfile: {}", error.message);
            return Outcome::BrokenYaml(error);
        }
    };
    let Value::Mapping(map) = value else {
        return Outcome::NotExtended;
    };
    let nested: Vec<_> = map.values().filter_map(Value::as_mapping).collect();
    let known_keys = |m: &&serde_norway::Mapping| {
        !m.is_empty()
            && m.keys()
                .all(|k| k.as_str().is_some_and(|k| KEYS.contains(&k)))
    };
    if nested.is_empty() || (flow_only && !nested.iter().all(known_keys)) {
        return Outcome::NotExtended;
    }
    Outcome::Extended(
        serde_norway::from_str::<Document>(text)
            .map(|document| document.0)
            .map_err(|err| located(text, &err)),
    )
}

/// A serde_norway error as a [`ProcfileError`]: its position (when it has one), the
/// line there, and its message without the position it ends with.
fn located(text: &str, err: &serde_norway::Error) -> ProcfileError {
    let mut message = err.to_string();
    let Some(location) = err.location() else {
        return ProcfileError {
            line: 0,
            column: 0,
            line_text: String::new(),
            message,
        };
    };
    let at = format!(" at line {} column {}", location.line(), location.column());
    if let Some(i) = message.find(&at) {
        message.replace_range(i..i + at.len(), "");
    }
    let line_text = text
        .split('\n')
        .nth(location.line().saturating_sub(1))
        .unwrap_or_default();
    ProcfileError {
        line: location.line(),
        column: location.column(),
        line_text: line_text
            .strip_suffix('\r')
            .unwrap_or(line_text)
            .to_string(),
        message,
    }
}

/// The whole extended Procfile.
struct Document(Procfile);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of process types")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut procfile = Procfile {
            extended: true,
            ..Procfile::default()
        };
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key_seed(NameSeed { seen: &mut seen })? {
            let entry = map.next_value_seed(EntrySeed { name: &name })?;
            procfile.processes.push((name.clone(), entry.command));
            procfile.settings.insert(name, entry.settings);
        }
        Ok(Document(procfile))
    }
}

/// A process type's name, checked (and told apart from the names before it) as it is
/// read, so the error points at it.
struct NameSeed<'a> {
    seen: &'a mut HashSet<String>,
}

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for NameSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a process type name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
        if name.is_empty() || !name.chars().all(is_name_char) {
            return Err(E::custom(format!(
                "{name:?} is not a process type name (use letters, digits, '_' and '-')"
            )));
        }
        if !self.seen.insert(name.to_string()) {
            return Err(E::custom(format!(
                "process type \"{name}\" is defined twice"
            )));
        }
        Ok(name.to_string())
    }
}

/// One process type.
struct Entry {
    command: String,
    settings: ProcessSettings,
}

/// Parses one process type's entry, knowing its name.
struct EntrySeed<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = Entry;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Entry, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command or a mapping of settings (command, cron, noservice, …)")
    }

    fn visit_str<E: de::Error>(self, command: &str) -> Result<Entry, E> {
        let command = command.trim();
        if command.is_empty() {
            return Err(E::custom(format!(
                "process type \"{}\" has an empty command",
                self.name
            )));
        }
        Ok(Entry {
            command: command.to_string(),
            settings: ProcessSettings::default(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
        let raw = RawProcess::deserialize(MapAccessDeserializer::new(map))?;
        let settings = ProcessSettings {
            cron: raw.cron.map(|c| c.0),
            noservice: raw.noservice,
            ports: raw.ports.into_iter().map(|p| p.0).collect(),
            environment: raw
                .environment
                .into_iter()
                .map(|(k, v)| (k.0, v.0))
                .collect(),
            healthcheck: raw.healthcheck.map(|h| h.0),
            size: raw.size.map(|s| s.0),
        };
        let scheduled = settings.cron.is_some() || settings.noservice;
        if settings.cron.is_some() && settings.noservice {
            return Err(de::Error::custom(
                "`cron` and `noservice` exclude each other (a cron process already runs only on its schedule)",
            ));
        }
        if self.name == RELEASE_PROCESS && settings != ProcessSettings::default() {
            return Err(de::Error::custom(
                "the release process runs once before each deploy with the app's config; it takes only `command`",
            ));
        }
        if scheduled && !settings.ports.is_empty() {
            return Err(de::Error::custom(
                "`ports` apply only to a service, and a cron or noservice process is none",
            ));
        }
        if scheduled && settings.healthcheck.is_some() {
            return Err(de::Error::custom(
                "`healthcheck` applies only to a service, and a cron or noservice process is none",
            ));
        }
        Ok(Entry {
            command: raw.command.0,
            settings,
        })
    }
}

/// The keys of a process type, each checked as it is read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    command: Command,
    #[serde(default)]
    cron: Option<Cron>,
    #[serde(default)]
    noservice: bool,
    #[serde(default)]
    ports: Vec<Port>,
    #[serde(default)]
    environment: BTreeMap<EnvName, EnvValue>,
    #[serde(default)]
    healthcheck: Option<Healthcheck>,
    #[serde(default)]
    size: Option<Size>,
}

/// `command`: a string, or a list of words.
struct Command(String);

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command string or a list of words")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                let v = v.trim();
                if v.is_empty() {
                    return Err(E::custom("the command is empty"));
                }
                Ok(Command(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut words = Vec::new();
                while let Some(word) = seq.next_element::<Word>()? {
                    words.push(shell_quote(&word.0));
                }
                if words.is_empty() {
                    return Err(de::Error::custom("the command list is empty"));
                }
                Ok(Command(words.join(" ")))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

/// One word of a command list: a string or a number.
struct Word(String);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked::scalar("a word", |w| Ok(Word(w))))
    }
}

/// Reads a string (also a number or boolean as text, when `scalars`) and checks it
/// inside the visitor, so serde_norway gives the error the key's path and position.
struct Checked<T> {
    expecting: &'static str,
    scalars: bool,
    check: fn(String) -> Result<T, String>,
}

impl<T> Checked<T> {
    fn string(expecting: &'static str, check: fn(String) -> Result<T, String>) -> Self {
        Checked {
            expecting,
            scalars: false,
            check,
        }
    }

    fn scalar(expecting: &'static str, check: fn(String) -> Result<T, String>) -> Self {
        Checked {
            expecting,
            scalars: true,
            check,
        }
    }

    fn other<E: de::Error>(self, text: String, unexpected: de::Unexpected<'_>) -> Result<T, E> {
        if self.scalars {
            (self.check)(text).map_err(E::custom)
        } else {
            Err(E::invalid_type(unexpected, &self))
        }
    }
}

impl<T> Visitor<'_> for Checked<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(v.to_string()).map_err(E::custom)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        self.other(v.to_string(), de::Unexpected::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.other(v.to_string(), de::Unexpected::Signed(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.other(v.to_string(), de::Unexpected::Unsigned(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.other(v.to_string(), de::Unexpected::Float(v))
    }
}

/// Quotes a word for `/bin/sh` when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `cron`: a schedule that parses.
struct Cron(String);

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked::string(
            "a schedule such as \"*/10 * * * *\"",
            |text| match Schedule::parse(&text) {
                Ok(_) => Ok(Cron(text.trim().to_string())),
                Err(err) => Err(format!("{text:?} is not a schedule: {err}")),
            },
        ))
    }
}

/// One entry of `ports`.
struct Port(PortMapping);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl<'de> Visitor<'de> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a port such as "80", "80:8080" or "443:8080/https""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                parse_port(v, None).map(Port).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Port, A::Error> {
                // Empire's form: `- "5678": {protocol: tcp}`.
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Options {
                    protocol: String,
                }
                let Some((spec, options)) = map.next_entry::<String, Options>()? else {
                    return Err(de::Error::custom("an empty mapping is not a port"));
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "a port mapping has one entry: `- \"5678\": {protocol: tcp}`",
                    ));
                }
                parse_port(&spec, Some(&options.protocol))
                    .map(Port)
                    .map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// `80`, `80:8080`, `443:8080/https` (the protocol also from Empire's mapping form).
fn parse_port(text: &str, protocol: Option<&str>) -> Result<PortMapping, String> {
    let (ports, suffix) = match text.split_once('/') {
        Some((ports, protocol)) => (ports, Some(protocol)),
        None => (text, None),
    };
    let protocol = match (suffix, protocol) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{text:?} names its protocol twice (after '/' and in `protocol`)"
            ));
        }
        (Some(p), None) | (None, Some(p)) => Some(p.trim().to_ascii_lowercase()),
        (None, None) => None,
    };
    let number = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{text:?}: {s:?} is not a port (1-65535)"))
    };
    let (listener, container) = match ports.split_once(':') {
        Some((listener, container)) => (number(listener)?, number(container)?),
        None => {
            let port = number(ports)?;
            (port, port)
        }
    };
    let protocol = match protocol.as_deref() {
        None if listener == 443 => "https".to_string(),
        None => "http".to_string(),
        Some(p @ ("http" | "https" | "tcp")) => p.to_string(),
        Some(other) => {
            return Err(format!(
                "{text:?}: protocol {other:?} is not one of http, https, tcp"
            ));
        }
    };
    Ok(PortMapping {
        listener,
        container,
        protocol,
    })
}

/// A key of `environment`: a variable name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct EnvName(String);

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked::string("a variable name", |name| {
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid {
                Ok(EnvName(name))
            } else {
                Err(format!(
                    "{name:?} is not a variable name (letters, digits and '_', not starting with a digit)"
                ))
            }
        }))
    }
}

/// A value of `environment`: a string, number or boolean, as text.
struct EnvValue(String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked::scalar("a string, number or boolean", |v| {
            Ok(EnvValue(v))
        }))
    }
}

/// `healthcheck`: an HTTP path.
struct Healthcheck(String);

impl<'de> Deserialize<'de> for Healthcheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked::string("an HTTP path such as /health", |path| {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "{path:?} is not an HTTP path: it starts with '/' and has no spaces, such as /health"
                ));
            }
            Ok(Healthcheck(path))
        }))
    }
}

/// `size`: 1X, 2X, PX or `<cpu shares>:<memory>`.
struct Size(ProcessSize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked::scalar("a size such as 2X", |text| {
            match ProcessSize::parse(&text) {
                Ok(size) => Ok(Size(size)),
                Err(Error::Invalid { message, .. }) => Err(message),
                Err(other) => Err(other.to_string()),
            }
        }))
    }
}
