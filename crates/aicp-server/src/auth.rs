//! The server's secrets, and whether a call's credentials match the one its route needs. Which
//! secret a route or method needs is its class in the admission table
//! (`crate::admission::table`):
//!
//! - open routes (health and readiness, `/metrics`, `/docs`, `/openapi.json`, the web page)
//!   need none;
//! - reads and inference (model listings and metadata, statistics, the repository index,
//!   inference) need the API key when the server has one (`--api-key`);
//! - admin routes (loading and unloading models) are off unless the server has an admin token
//!   (`--admin-token`), and then need it.
//!
//! A credential comes as `Authorization: Bearer <secret>` (HTTP and gRPC metadata alike) or, for
//! the API key, `X-API-Key: <secret>`. Secrets are compared in constant time.

use aicp_core::{Error, ErrorKind};
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::Api;

/// The server's secrets.
#[derive(Clone, Default)]
pub struct Access {
    api_key: Option<String>,
    admin_token: Option<String>,
}

impl std::fmt::Debug for Access {
    /// Says which secrets are set, never what they are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The secret a route needs (its class, in the admission table, says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// The API key, when the server has one.
    ApiKey,
    /// The admin token; without one, the route is off.
    AdminToken,
}

impl Access {
    /// Empty secrets count as unset.
    pub fn new(api_key: Option<String>, admin_token: Option<String>) -> Self {
        Self {
            api_key: api_key.filter(|k| !k.is_empty()),
            admin_token: admin_token.filter(|t| !t.is_empty()),
        }
    }

    /// Whether a request with these credentials may use a route that needs `secret`.
    pub(crate) fn check(&self, secret: Secret, credentials: Credentials<'_>) -> Result<(), Error> {
        match secret {
            Secret::ApiKey => {
                let Some(key) = &self.api_key else {
                    return Ok(());
                };
                let given = credentials.bearer.or(credentials.api_key);
                if given.is_some_and(|given| same(given, key)) {
                    return Ok(());
                }
                Err(Error::new(
                    ErrorKind::Unauthorized,
                    match given {
                        None => {
                            "this server needs an API key: send it as \"Authorization: Bearer <key>\" or \"X-API-Key: <key>\""
                        }
                        Some(_) => "the API key is wrong",
                    },
                ))
            }
            Secret::AdminToken => {
                let Some(token) = &self.admin_token else {
                    return Err(Error::new(
                        ErrorKind::Forbidden,
                        "model management is off: start the server with --admin-token \
                         (or AICP_ADMIN_TOKEN) to load and unload models over the API",
                    ));
                };
                match credentials.bearer {
                    Some(given) if same(given, token) => Ok(()),
                    Some(_) => Err(Error::new(
                        ErrorKind::Unauthorized,
                        "the admin token is wrong",
                    )),
                    None => Err(Error::new(
                        ErrorKind::Unauthorized,
                        "model management needs the admin token: send \"Authorization: Bearer <token>\"",
                    )),
                }
            }
        }
    }
}

/// Constant-time equality: how long it takes says nothing about how much of a guess was right.
fn same(given: &str, secret: &str) -> bool {
    given.as_bytes().ct_eq(secret.as_bytes()).into()
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// From `Authorization: Bearer <secret>`.
    pub bearer: Option<&'a str>,
    /// From `X-API-Key`.
    pub api_key: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// Reads them from `authorization` and `x-api-key` values (HTTP headers or gRPC metadata).
    pub fn from_values(authorization: Option<&'a str>, api_key: Option<&'a str>) -> Self {
        let bearer = authorization.and_then(|value| {
            let (scheme, secret) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
        });
        Self {
            bearer,
            api_key: api_key.map(str::trim),
        }
    }

    pub fn from_headers(headers: &'a HeaderMap) -> Self {
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self::from_values(value("authorization"), value("x-api-key"))
    }
}

impl Access {
    /// Why a request may not use a route that needs `secret`, answered in the shape of `api`
    /// (a 401 with `WWW-Authenticate: Bearer`, or a 403); `None` when it may.
    pub(crate) fn refusal(&self, secret: Secret, request: &Request, api: Api) -> Option<Response> {
        self.check(secret, Credentials::from_headers(request.headers()))
            .err()
            .map(|error| {
                let unauthorized = error.kind == ErrorKind::Unauthorized;
                let mut response = api.error(error);
                if unauthorized {
                    response.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        axum::http::HeaderValue::from_static("Bearer"),
                    );
                }
                response
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(secret: &str) -> String {
        format!("Bearer {secret}")
    }

    #[test]
    fn without_secrets_inference_is_open_and_admin_is_off() {
        let access = Access::new(None, Some(String::new()));
        assert!(access.check(Secret::ApiKey, Credentials::default()).is_ok());
        let error = access
            .check(Secret::AdminToken, Credentials::default())
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Forbidden);
        assert!(error.message.contains("--admin-token"), "{error}");
    }

    #[test]
    fn the_api_key_comes_as_bearer_or_header() {
        let access = Access::new(Some("k3y".into()), None);
        let header = bearer("k3y");
        for credentials in [
            Credentials::from_values(Some(&header), None),
            Credentials::from_values(Some("bearer   k3y "), None),
            Credentials::from_values(None, Some("k3y")),
        ] {
            assert!(
                access.check(Secret::ApiKey, credentials).is_ok(),
                "{credentials:?}"
            );
        }
        for (credentials, says) in [
            (Credentials::default(), "needs an API key"),
            (Credentials::from_values(Some("Bearer k3"), None), "wrong"),
            (
                Credentials::from_values(Some("Basic k3y"), None),
                "needs an API key",
            ),
            (Credentials::from_values(None, Some("k3yy")), "wrong"),
        ] {
            let error = access.check(Secret::ApiKey, credentials).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unauthorized);
            assert!(error.message.contains(says), "{error}");
        }
    }

    #[test]
    fn admin_needs_the_admin_token_not_the_api_key() {
        let access = Access::new(Some("key".into()), Some("t0ken".into()));
        let token = bearer("t0ken");
        assert!(
            access
                .check(
                    Secret::AdminToken,
                    Credentials::from_values(Some(&token), None)
                )
                .is_ok()
        );
        let key = bearer("key");
        for credentials in [
            Credentials::default(),
            Credentials::from_values(Some(&key), None),
            Credentials::from_values(None, Some("t0ken")),
        ] {
            let error = access.check(Secret::AdminToken, credentials).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unauthorized, "{credentials:?}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let access = Access::new(Some("key".into()), Some("t0ken".into()));
        let shown = format!("{access:?}");
        assert!(
            !shown.contains("key\"") && !shown.contains("t0ken"),
            "{shown}"
        );
    }
}
