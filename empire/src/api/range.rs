//! Heroku's list ranges: `Range: name ..; max=10`, `Range: version ]3..; max=20,
//! order=desc`. A list asked with a range answers at most `max` items from the start
//! value on, `206 Partial Content` with a `Next-Range` header when more follow and
//! `200` when it is complete. A list asked without one is answered whole.

use std::cmp::Ordering;

use axum::http::HeaderMap;

use super::error::ApiError;

/// Items answered when the range gives no `max`.
pub const DEFAULT_MAX: usize = 200;
/// The most items one page may hold.
pub const MAX_MAX: usize = 1000;

/// A parsed `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRange {
    /// The field to order and start by; the list's own default when `None`.
    pub field: Option<String>,
    /// The first value (inclusive; exclusive after `]`).
    pub start: Option<String>,
    /// Whether `start` itself is left out (`]start..`).
    pub exclusive: bool,
    /// At most this many items.
    pub max: usize,
    /// Newest/largest first.
    pub descending: bool,
}

/// The value an item is ordered by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RangeKey {
    /// A number (release versions).
    Num(u64),
    /// Text (names, hostnames).
    Text(String),
}

impl RangeKey {
    fn parse_like(&self, text: &str) -> Option<RangeKey> {
        match self {
            RangeKey::Num(_) => text.trim_start_matches('v').parse().ok().map(RangeKey::Num),
            RangeKey::Text(_) => Some(RangeKey::Text(text.to_string())),
        }
    }

    fn render(&self) -> String {
        match self {
            RangeKey::Num(n) => n.to_string(),
            RangeKey::Text(t) => t.clone(),
        }
    }
}

/// A list item that can be paged.
pub trait Ranged {
    /// The fields a range may name; the first is the default.
    const FIELDS: &'static [&'static str];
    /// The item's value of `field` (one of [`Ranged::FIELDS`]).
    fn range_key(&self, field: &str) -> RangeKey;
}

impl ListRange {
    /// Reads the `Range` header, if any.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<ListRange>, ApiError> {
        match headers.get("range") {
            None => Ok(None),
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| ApiError::bad_request("the Range header is not text"))?;
                ListRange::parse(text).map(Some)
            }
        }
    }

    /// Parses `[<field>] [<start>]..[<end>][; max=<n>][, order=asc|desc]`.
    pub fn parse(text: &str) -> Result<ListRange, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "invalid Range {text:?}: {why} (expected e.g. `name ..; max=100` or `version ]3..; max=20, order=desc`)"
            ))
        };
        let mut parts = text.split([';', ',']).map(str::trim);
        let spec = parts.next().unwrap_or_default();
        let mut range = ListRange {
            field: None,
            start: None,
            exclusive: false,
            max: DEFAULT_MAX,
            descending: false,
        };
        let (before, _end) = spec.split_once("..").ok_or_else(|| bad("no `..`"))?;
        let mut words = before.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => {}
            (Some(field), None, _) => range.field = Some(field.to_string()),
            (Some(field), Some(start), None) => {
                range.field = Some(field.to_string());
                let (start, exclusive) = match start.strip_prefix(']') {
                    Some(rest) => (rest, true),
                    None => (start, false),
                };
                range.exclusive = exclusive;
                if !start.is_empty() {
                    range.start = Some(start.to_string());
                }
            }
            _ => return Err(bad("too many words before `..`")),
        }
        for part in parts.filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            match key.trim() {
                "max" => {
                    let max: usize = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("max is not a whole number"))?;
                    range.max = if max == 0 {
                        DEFAULT_MAX
                    } else {
                        max.min(MAX_MAX)
                    };
                }
                "order" => {
                    range.descending = match value.trim() {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err(bad("order is asc or desc")),
                    }
                }
                _ => return Err(bad("unknown parameter")),
            }
        }
        Ok(range)
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The `Next-Range` header value when more items follow.
    pub next_range: Option<String>,
}

/// Applies `range` to `items` (all of them, unchanged, without a range).
pub fn paginate<T: Ranged>(items: Vec<T>, range: Option<&ListRange>) -> Result<Page<T>, ApiError> {
    let Some(range) = range else {
        return Ok(Page {
            items,
            next_range: None,
        });
    };
    let field = match &range.field {
        None => T::FIELDS[0],
        Some(field) => T::FIELDS
            .iter()
            .copied()
            .find(|f| f == field)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "cannot range this list by {field:?}: use {}",
                    T::FIELDS.join(" or ")
                ))
            })?,
    };
    let mut keyed: Vec<(RangeKey, T)> = items
        .into_iter()
        .map(|item| (item.range_key(field), item))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if range.descending {
        keyed.reverse();
    }
    if let (Some(start), Some((sample, _))) = (&range.start, keyed.first()) {
        let start = sample.parse_like(start).ok_or_else(|| {
            ApiError::bad_request(format!("the Range start {start:?} is not a valid {field}"))
        })?;
        keyed.retain(|(key, _)| {
            let order = if range.descending {
                start.cmp(key)
            } else {
                key.cmp(&start)
            };
            order == Ordering::Greater || (order == Ordering::Equal && !range.exclusive)
        });
    }
    let more = keyed.len() > range.max;
    keyed.truncate(range.max);
    let next_range = match keyed.last() {
        Some((last, _)) if more => Some(format!(
            "{field} ]{}..; max={}{}",
            last.render(),
            range.max,
            if range.descending { ", order=desc" } else { "" }
        )),
        _ => None,
    };
    Ok(Page {
        items: keyed.into_iter().map(|(_, item)| item).collect(),
        next_range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(u64, &'static str);

    impl Ranged for Item {
        const FIELDS: &'static [&'static str] = &["version", "name"];
        fn range_key(&self, field: &str) -> RangeKey {
            match field {
                "version" => RangeKey::Num(self.0),
                _ => RangeKey::Text(self.1.to_string()),
            }
        }
    }

    fn items() -> Vec<Item> {
        vec![Item(3, "c"), Item(1, "a"), Item(10, "j"), Item(2, "b")]
    }

    #[test]
    fn parses_heroku_ranges() {
        let r = ListRange::parse("name ..; max=1000").unwrap();
        assert_eq!(
            (r.field.as_deref(), r.start, r.max, r.descending),
            (Some("name"), None, 1000, false)
        );
        let r = ListRange::parse("version ]3..; max=20, order=desc").unwrap();
        assert_eq!(r.start.as_deref(), Some("3"));
        assert!(r.exclusive && r.descending);
        let r = ListRange::parse("version .., order=desc").unwrap();
        assert_eq!((r.max, r.descending), (DEFAULT_MAX, true));
        let r = ListRange::parse("id b..").unwrap();
        assert_eq!((r.start.as_deref(), r.exclusive), (Some("b"), false));
        assert_eq!(ListRange::parse("..; max=5000").unwrap().max, MAX_MAX);
        for bad in [
            "name",
            "name ..; max=x",
            "name ..; order=up",
            "a b c..",
            "name ..; foo=1",
        ] {
            assert_eq!(
                ListRange::parse(bad).unwrap_err().status.as_u16(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn pages_in_order_with_a_next_range() {
        let range = ListRange::parse("version ..; max=2").unwrap();
        let page = paginate(items(), Some(&range)).unwrap();
        assert_eq!(page.items, vec![Item(1, "a"), Item(2, "b")]);
        let next = page.next_range.unwrap();
        assert_eq!(next, "version ]2..; max=2");
        let page = paginate(items(), Some(&ListRange::parse(&next).unwrap())).unwrap();
        assert_eq!(page.items, vec![Item(3, "c"), Item(10, "j")]);
        assert_eq!(page.next_range, None);
    }

    #[test]
    fn pages_descending_and_by_other_fields() {
        let range = ListRange::parse("version 3..; max=5, order=desc").unwrap();
        let page = paginate(items(), Some(&range)).unwrap();
        assert_eq!(page.items, vec![Item(3, "c"), Item(2, "b"), Item(1, "a")]);
        let range = ListRange::parse("name b..; max=2").unwrap();
        let page = paginate(items(), Some(&range)).unwrap();
        assert_eq!(page.items, vec![Item(2, "b"), Item(3, "c")]);
        assert_eq!(page.next_range.as_deref(), Some("name ]c..; max=2"));
        let err = paginate(items(), Some(&ListRange::parse("size ..").unwrap())).unwrap_err();
        assert!(err.message.contains("version or name"), "{}", err.message);
    }

    #[test]
    fn no_range_is_the_whole_list_unchanged() {
        let page = paginate(items(), None).unwrap();
        assert_eq!(page.items, items());
        assert_eq!(page.next_range, None);
    }
}
