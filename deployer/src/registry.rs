//! The registry release images are pushed to, as the docker scheduler pulls from it.
//!
//! A release records its image by digest under the registry's *name*
//! (`<name>/<prefix>/<app>@sha256:…`). The engine has that reference only when it pushed
//! to the name itself; with `--registry-endpoint`, or once the local image was pruned,
//! the scheduler pulls it from the endpoint with the registry's credentials before it
//! creates containers. The credentials come from whoever pushes (the builder, with its
//! basic login or its cached ECR token), through this trait: the deployer never holds
//! auth logic of its own.

use async_trait::async_trait;

/// A username and password for the registry, sent to the engine as `X-Registry-Auth`.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The username (`AWS` for an ECR token).
    pub username: String,
    /// The password (the token for ECR).
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A registry the docker scheduler pulls a release's image from when the engine does
/// not have it.
#[async_trait]
pub trait ImageRegistry: Send + Sync + std::fmt::Debug {
    /// `HOST[:PORT]` as image references name the registry (`--registry` without its
    /// prefix).
    fn name(&self) -> &str;

    /// `HOST[:PORT]` the engine pulls from: the name unless `--registry-endpoint`.
    fn endpoint(&self) -> &str;

    /// The login to pull with (`None` for an open registry). `renew` asks for fresh
    /// credentials after the registry refused the last ones (a cached ECR token).
    async fn login(&self, renew: bool) -> Result<Option<RegistryLogin>, String>;
}

/// The reference to pull for `image` when it names `registry`: the registry's name
/// replaced by its endpoint (`localhost:5000/p/app@sha256:…` →
/// `127.0.0.1:5000/p/app@sha256:…`). `None` for an image of any other registry or a
/// local tag.
pub(crate) fn pull_reference(registry: &dyn ImageRegistry, image: &str) -> Option<String> {
    let rest = image.strip_prefix(registry.name())?.strip_prefix('/')?;
    (!rest.is_empty()).then(|| format!("{}/{rest}", registry.endpoint()))
}

/// `repo` and the tag or digest of a reference (`a/b@sha256:…` → (`a/b`, `sha256:…`),
/// `host:5000/a:v1` → (`host:5000/a`, `v1`), `a` → (`a`, `latest`)).
pub(crate) fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let last = reference.rfind('/').map_or(0, |at| at + 1);
    match reference[last..].rfind(':') {
        Some(at) => (&reference[..last + at], &reference[last + at + 1..]),
        None => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(&'static str, &'static str);

    #[async_trait]
    impl ImageRegistry for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn endpoint(&self) -> &str {
            self.1
        }
        async fn login(&self, _renew: bool) -> Result<Option<RegistryLogin>, String> {
            Ok(None)
        }
    }

    #[test]
    fn maps_the_registry_name_to_its_endpoint() {
        let registry = Fixed("localhost:5000", "127.0.0.1:5000");
        assert_eq!(
            pull_reference(&registry, "localhost:5000/p/app@sha256:ab").as_deref(),
            Some("127.0.0.1:5000/p/app@sha256:ab")
        );
        assert_eq!(pull_reference(&registry, "empire/app:v2"), None);
        assert_eq!(pull_reference(&registry, "localhost:50001/app:v1"), None);
        assert_eq!(pull_reference(&registry, "localhost:5000/"), None);
        let same = Fixed("127.0.0.1:5000", "127.0.0.1:5000");
        assert_eq!(
            pull_reference(&same, "127.0.0.1:5000/app:v1").as_deref(),
            Some("127.0.0.1:5000/app:v1")
        );
    }

    #[test]
    fn splits_references() {
        assert_eq!(
            split_reference("127.0.0.1:5000/p/app@sha256:ab"),
            ("127.0.0.1:5000/p/app", "sha256:ab")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/p/app:v3"),
            ("127.0.0.1:5000/p/app", "v3")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
    }
}
