//! Registry credentials from Amazon ECR (`--registry-auth ecr`).
//!
//! `GetAuthorizationToken` gives a base64 `AWS:<password>` token that Docker sends to the
//! registry as basic auth. The token is cached until shortly before it expires, so pushes
//! do not call ECR each time, and a push's repository is created on its first push
//! (`DescribeRepositories`, then `CreateRepository` when it is missing).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use base64::Engine;

/// How long an ECR authorization token lives, as AWS documents it. A token whose stated
/// expiry has already passed when it arrives (a clock far off, or an emulator that
/// answers with a fixed date) is kept this long instead; a push it fails is retried once
/// with a fresh token.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// A cached token is renewed this long before it expires, so no push starts with a token
/// about to lapse.
const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);

/// How to reach the ECR API. Anything left unset comes from the standard AWS sources
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the
/// profile files, an instance role, …).
#[derive(Clone, Default)]
pub struct EcrSettings {
    /// The ECR API's URL instead of AWS's (an emulator such as moto).
    pub endpoint_url: Option<String>,
    /// The AWS region; a registry named `<account>.dkr.ecr.<region>.amazonaws.com`
    /// overrides it with its own.
    pub region: Option<String>,
    /// A static access key id and secret access key.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for EcrSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrSettings")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(id, _)| (id, "<secret>")),
            )
            .finish()
    }
}

/// Username and password for the registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A token from `GetAuthorizationToken` and until when it may be used.
struct Token {
    login: Login,
    renew_at: SystemTime,
}

/// The account and region of a registry named `<account>.dkr.ecr.<region>.amazonaws.com`
/// (or `.amazonaws.com.cn`, or `dkr.ecr-fips`).
pub fn parse_ecr_host(host: &str) -> Option<(String, String)> {
    let host = host.split(':').next()?;
    let mut parts = host.split('.');
    let account = parts.next()?;
    let dkr = parts.next()?;
    let ecr = parts.next()?;
    let region = parts.next()?;
    let domain = parts.next()?;
    let valid = account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && (ecr == "ecr" || ecr == "ecr-fips")
        && !region.is_empty()
        && domain == "amazonaws";
    valid.then(|| (account.to_string(), region.to_string()))
}

/// An ECR client with cached credentials for one registry.
pub(crate) struct EcrAuth {
    client: aws_sdk_ecr::Client,
    /// The registry's account when its name says it.
    registry_id: Option<String>,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Repositories known to exist (checked or created by this process).
    repositories: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for EcrAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrAuth")
            .field("registry_id", &self.registry_id)
            .finish_non_exhaustive()
    }
}

/// The HTTP client of the AWS SDK: hyper with rustls on ring (plain HTTP works too, for
/// an emulator on loopback).
fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl EcrAuth {
    /// Sets up the ECR client for the registry named `host`.
    pub(crate) async fn new(settings: &EcrSettings, host: &str) -> EcrAuth {
        let (registry_id, host_region) = match parse_ecr_host(host) {
            Some((account, region)) => (Some(account), Some(region)),
            None => (None, None),
        };
        let region = host_region.or_else(|| settings.region.clone());
        let config = match (&region, &settings.credentials) {
            // Everything is given: no need to look anywhere else (and no instance
            // metadata lookups).
            (Some(region), Some((id, secret))) => {
                let mut builder = aws_sdk_ecr::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .http_client(http_client())
                    .region(Region::new(region.clone()))
                    .credentials_provider(Credentials::new(
                        id.clone(),
                        secret.clone(),
                        None,
                        None,
                        "empire-settings",
                    ));
                if let Some(url) = &settings.endpoint_url {
                    builder = builder.endpoint_url(url.clone());
                }
                builder.build()
            }
            _ => {
                let mut loader =
                    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
                if let Some(url) = &settings.endpoint_url {
                    loader = loader.endpoint_url(url.clone());
                }
                if let Some(region) = &region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some((id, secret)) = &settings.credentials {
                    loader = loader.credentials_provider(Credentials::new(
                        id.clone(),
                        secret.clone(),
                        None,
                        None,
                        "empire-settings",
                    ));
                }
                let shared = loader.load().await;
                aws_sdk_ecr::config::Builder::from(&shared).build()
            }
        };
        EcrAuth {
            client: aws_sdk_ecr::Client::from_conf(config),
            registry_id,
            token: tokio::sync::Mutex::new(None),
            repositories: Mutex::new(HashSet::new()),
        }
    }

    /// The registry login: the cached token while it is valid, else a new one from
    /// `GetAuthorizationToken`. Returns whether the token is fresh from ECR.
    pub(crate) async fn login(&self) -> Result<(Login, bool), String> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && SystemTime::now() < token.renew_at
        {
            return Ok((token.login.clone(), false));
        }
        let token = self.fetch_token().await?;
        let login = token.login.clone();
        *cached = Some(token);
        Ok((login, true))
    }

    /// Forgets the cached token (the registry refused it).
    pub(crate) async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    async fn fetch_token(&self) -> Result<Token, String> {
        let output = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|err| api_error("GetAuthorizationToken", &err))?;
        let data = output
            .authorization_data()
            .first()
            .ok_or("ECR GetAuthorizationToken returned no authorization data")?;
        let encoded = data
            .authorization_token()
            .ok_or("ECR GetAuthorizationToken returned no token")?;
        let login = decode_token(encoded)?;
        let fetched = SystemTime::now();
        let expires = data
            .expires_at()
            .and_then(|at| SystemTime::try_from(*at).ok())
            .filter(|at| *at > fetched)
            .unwrap_or_else(|| {
                tracing::debug!("the ECR token's expiry has passed already; keeping it 12h");
                fetched + TOKEN_LIFETIME
            });
        let renew_at = expires
            .checked_sub(RENEW_BEFORE)
            .filter(|at| *at > fetched)
            .unwrap_or(expires);
        tracing::debug!(proxy = ?data.proxy_endpoint(), "fetched an ECR authorization token");
        Ok(Token { login, renew_at })
    }

    /// Makes sure the repository exists, creating it on first use. Returns whether it
    /// was created.
    pub(crate) async fn ensure_repository(&self, name: &str) -> Result<bool, String> {
        if self.repositories.lock().expect("lock").contains(name) {
            return Ok(false);
        }
        let described = self
            .client
            .describe_repositories()
            .set_registry_id(self.registry_id.clone())
            .repository_names(name)
            .send()
            .await;
        let created = match described {
            Ok(_) => false,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_repository_not_found_exception()) =>
            {
                match self
                    .client
                    .create_repository()
                    .set_registry_id(self.registry_id.clone())
                    .repository_name(name)
                    .send()
                    .await
                {
                    Ok(_) => true,
                    // Another gateway created it meanwhile.
                    Err(err)
                        if err
                            .as_service_error()
                            .is_some_and(|e| e.is_repository_already_exists_exception()) =>
                    {
                        false
                    }
                    Err(err) => return Err(api_error(&format!("CreateRepository {name}"), &err)),
                }
            }
            Err(err) => return Err(api_error(&format!("DescribeRepositories {name}"), &err)),
        };
        self.repositories
            .lock()
            .expect("lock")
            .insert(name.to_string());
        Ok(created)
    }
}

/// One line for a failed ECR call: the service's error code and message, or why the API
/// could not be reached.
fn api_error<E, R>(operation: &str, err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("ECR {operation}: {code}: {message}"),
                (Some(code), None) => format!("ECR {operation}: {code}"),
                _ => format!("ECR {operation}: {}", DisplayErrorContext(e)),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => format!(
            "ECR {operation}: cannot reach the ECR API: {}",
            root_cause(err)
        ),
        other => format!("ECR {operation}: {}", root_cause(other)),
    }
}

/// The innermost error of a chain, which says what actually happened.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Decodes a token: base64 of `AWS:<password>`.
fn decode_token(encoded: &str) -> Result<Login, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|err| format!("the ECR token is not base64: {err}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "the ECR token is not text".to_string())?;
    let (username, password) = text
        .split_once(':')
        .ok_or("the ECR token is not of the form user:password")?;
    Ok(Login {
        username: username.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ecr_registry_names() {
        assert_eq!(
            parse_ecr_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some(("123456789012".into(), "eu-west-1".into()))
        );
        assert_eq!(
            parse_ecr_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            Some(("123456789012".into(), "us-east-1".into()))
        );
        assert_eq!(parse_ecr_host("127.0.0.1:5000"), None);
        assert_eq!(parse_ecr_host("registry.example.com"), None);
        assert_eq!(parse_ecr_host("1234.dkr.ecr.us-east-1.amazonaws.com"), None);
    }

    #[test]
    fn decodes_tokens() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("AWS:pa:ss");
        let login = decode_token(&encoded).unwrap();
        assert_eq!(login.username, "AWS");
        assert_eq!(login.password, "pa:ss");
        assert!(decode_token("not base64!").is_err());
        let plain = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(decode_token(&plain).is_err());
    }
}
