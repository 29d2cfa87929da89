//! What handlers take from a request: the authenticated user, JSON bodies, app names
//! from the path, and the version check of the `Accept` header.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, AUTHORIZATION, HOST};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use empire_core::Error;
use empire_core::app::AppName;
use empire_core::user::User;
use serde::de::DeserializeOwned;

use super::ApiState;
use super::error::ApiError;

/// Credentials from the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The Basic auth user name, if Basic auth was used.
    pub username: Option<String>,
    /// The API token.
    pub token: String,
}

impl Credentials {
    /// Reads `Authorization: Basic base64(user:token)` (the token is the password, the
    /// user name is ignored; a lone user name with an empty password is taken as the
    /// token, as `curl -u TOKEN:` sends it) or `Authorization: Bearer <token>`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Credentials, ApiError> {
        let missing = || {
            ApiError::unauthorized(
                "no API token given: send it as the password of HTTP Basic auth (as a .netrc \
                 entry does) or as `Authorization: Bearer <token>`; `empire tokens create <user>` \
                 makes one",
            )
        };
        let value = headers.get(AUTHORIZATION).ok_or_else(missing)?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?
            .trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() {
                return Err(missing());
            }
            return Ok(Credentials {
                username: None,
                token: rest.to_string(),
            });
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiError::unauthorized(format!(
                "unsupported authorization scheme {scheme:?}: use Basic or Bearer"
            )));
        }
        let decoded = STANDARD
            .decode(rest)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| ApiError::unauthorized("the Basic credentials are not base64 text"))?;
        let (username, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
        let token = if password.is_empty() {
            username
        } else {
            password
        };
        if token.is_empty() {
            return Err(missing());
        }
        Ok(Credentials {
            username: Some(username.to_string()).filter(|u| !u.is_empty()),
            token: token.to_string(),
        })
    }
}

/// The user the request's API token belongs to.
#[derive(Debug, Clone)]
pub struct Actor(pub User);

impl FromRequestParts<ApiState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let credentials = Credentials::from_headers(&parts.headers)?;
        let user = state.platform.user_by_token(&credentials.token).await?;
        Ok(Actor(user))
    }
}

/// A JSON request body. Malformed JSON is a 400 `bad_request`; well-formed JSON of the
/// wrong shape is a 422 `invalid_params` naming the path of the offending field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|err| ApiError::bad_request(format!("reading the request body: {err}")))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body is the type's default.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|err| ApiError::bad_request(format!("reading the request body: {err}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// Parses a JSON body into `T` with errors that say where the problem is.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty: send a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() {
            let message = if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            };
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_params",
                format!("invalid body: {message}"),
            )
        } else {
            ApiError::bad_request(format!("the request body is not valid JSON: {inner}"))
        }
    })?;
    deserializer.end().map_err(|err| {
        ApiError::bad_request(format!("the request body is not valid JSON: {err}"))
    })?;
    Ok(value)
}

/// A text field of a body that must be given and not blank.
pub fn required(
    value: Option<String>,
    field: &'static str,
    hint: &str,
) -> Result<String, ApiError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::invalid(field, hint))
}

/// An app name from the path; a name that cannot exist is simply not found.
pub fn app_name(name: &str) -> Result<AppName, ApiError> {
    AppName::new(name).map_err(|_| ApiError::from(Error::not_found("app", name)))
}

/// The host name (without port) the client used to reach the API.
pub fn request_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    // `[::1]:5000`, `example.com:5000`, `example.com`.
    if let Some(rest) = host.strip_prefix('[') {
        return format!("[{}]", rest.split(']').next().unwrap_or_default());
    }
    host.rsplit_once(':')
        .map_or(host, |(name, _)| name)
        .to_string()
}

/// Refuses an `Accept` header that asks for another version of Heroku's API; plain
/// JSON, `*/*` and no header at all are served.
pub async fn check_accept(request: Request, next: Next) -> Response {
    if let Some(accept) = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok())
        && let Err(err) = accepts_v3(accept)
    {
        return err.into_response();
    }
    next.run(request).await
}

fn accepts_v3(accept: &str) -> Result<(), ApiError> {
    for media in accept.split(',') {
        let mut params = media.split(';').map(str::trim);
        let kind = params.next().unwrap_or_default();
        if !kind.eq_ignore_ascii_case("application/vnd.heroku+json") {
            continue;
        }
        let version = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("version"))
            .map(|(_, v)| v.trim().trim_matches('"'));
        match version {
            Some("3") => {}
            other => {
                return Err(ApiError::new(
                    axum::http::StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    format!(
                        "this server speaks version 3 of the API (Accept: application/vnd.heroku+json; version=3), not {}",
                        other.map_or("an unversioned one".to_string(), |v| format!("version {v}"))
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        map
    }

    #[test]
    fn reads_basic_and_bearer_tokens() {
        let basic = format!("Basic {}", STANDARD.encode("alice:emp_secret"));
        let creds = Credentials::from_headers(&headers(&basic)).unwrap();
        assert_eq!(creds.token, "emp_secret");
        assert_eq!(creds.username.as_deref(), Some("alice"));

        let token_only = format!("Basic {}", STANDARD.encode("emp_secret:"));
        assert_eq!(
            Credentials::from_headers(&headers(&token_only))
                .unwrap()
                .token,
            "emp_secret"
        );

        let bearer = Credentials::from_headers(&headers("Bearer emp_x")).unwrap();
        assert_eq!((bearer.username, bearer.token.as_str()), (None, "emp_x"));
    }

    #[test]
    fn refuses_missing_and_malformed_credentials() {
        let err = Credentials::from_headers(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.status.as_u16(), 401);
        assert!(err.message.contains("no API token"), "{}", err.message);
        for bad in ["Basic !!!", "Digest abc", "Bearer ", "Basic Og=="] {
            let err = Credentials::from_headers(&headers(bad)).unwrap_err();
            assert_eq!(err.status.as_u16(), 401, "{bad}");
        }
    }

    #[test]
    fn body_errors_name_the_problem() {
        let err = parse_json::<serde_json::Value>(b"{nope").unwrap_err();
        assert_eq!((err.status.as_u16(), err.id), (400, "bad_request"));
        assert!(err.message.contains("not valid JSON"), "{}", err.message);

        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Form {
            name: String,
        }
        let err = parse_json::<Form>(br#"{"name": 3}"#).unwrap_err();
        assert_eq!((err.status.as_u16(), err.id), (422, "invalid_params"));
        assert!(err.message.contains("name"), "{}", err.message);
        let err = parse_json::<Form>(b"{}").unwrap_err();
        assert!(
            err.message.contains("missing field `name`"),
            "{}",
            err.message
        );
        let err = parse_json::<Form>(b"").unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
    }

    #[test]
    fn accepts_version_3_json_and_anything_generic() {
        for ok in [
            "application/vnd.heroku+json; version=3",
            "application/json",
            "*/*",
            "text/plain, application/vnd.heroku+json; version=3",
        ] {
            accepts_v3(ok).unwrap();
        }
        for bad in [
            "application/vnd.heroku+json; version=2",
            "application/vnd.heroku+json",
        ] {
            assert_eq!(accepts_v3(bad).unwrap_err().status.as_u16(), 406, "{bad}");
        }
    }

    #[test]
    fn finds_the_host_name() {
        let mut map = HeaderMap::new();
        assert_eq!(request_host(&map), "localhost");
        map.insert(HOST, HeaderValue::from_static("example.com:5000"));
        assert_eq!(request_host(&map), "example.com");
        map.insert(HOST, HeaderValue::from_static("[::1]:5000"));
        assert_eq!(request_host(&map), "[::1]");
    }

    #[test]
    fn impossible_app_names_are_not_found() {
        let err = app_name("Bad_Name").unwrap_err();
        assert_eq!(err.status.as_u16(), 404);
        assert_eq!(err.message, "app not found: Bad_Name");
    }
}
