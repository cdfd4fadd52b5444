//! [`DatabricksAdminCheck`]: admin groups from the Databricks workspace
//! (feature `databricks`).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Url, header};
use serde::Deserialize;

use super::{AdminCheck, AdminCheckError};
use crate::identity::Identity;

/// Asks the Databricks workspace whether the caller is an admin: a SCIM
/// `Me` request (`GET /api/2.0/preview/scim/v2/Me`) made with the caller's
/// own access token (the identity's [`AccessToken`](crate::AccessToken), which
/// the Databricks Apps proxy forwards as `X-Forwarded-Access-Token`).
///
/// The caller is an admin when one of their groups has a `display` name
/// equal to one of the admin groups (default `admins`, `workspace_admins`,
/// `administrators`), ignoring case. The comparison is exact otherwise:
/// `admins-readonly` or `workspace admins` do not match.
///
/// Every failure is an [`AdminCheckError`] (the guard's 503): no token
/// ([`MissingToken`](AdminCheckError::MissingToken), no request is sent),
/// connection errors, the timeout (default 10 s), a non-2xx status
/// (redirects are not followed, so the token never travels elsewhere), a
/// malformed or oversized (> 1 MiB) body. A body without `groups` means "no
/// groups": not an admin.
///
/// Every request goes to the workspace; wrap the check in a
/// [`CachedAdminCheck`](crate::CachedAdminCheck), as [`from_env`](Self::from_env)
/// users normally do. The token is sent only in the `Authorization` header
/// (marked sensitive) and never logged or shown in `Debug`.
///
/// ```no_run
/// use metrics_core::{AccessToken, AdminCheck, CachedAdminCheck, DatabricksAdminCheck, Identity};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // DATABRICKS_HOST=adb-1234.5.azuredatabricks.net, optional ADMIN_GROUPS=admins,metrics-admins
/// let admins = CachedAdminCheck::new(DatabricksAdminCheck::from_env()?);
/// let caller = Identity::new("ada@example.com").with_access_token(AccessToken::new("dapi..."));
/// let is_admin = admins.is_admin(&caller).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DatabricksAdminCheck {
    me_url: Url,
    // Lowercased, trimmed, non-empty.
    admin_groups: Vec<Box<str>>,
    timeout: Duration,
    client: reqwest::Client,
}

/// Configures a [`DatabricksAdminCheck`]; from
/// [`DatabricksAdminCheck::builder`].
#[derive(Debug)]
#[must_use]
pub struct DatabricksAdminCheckBuilder {
    host: String,
    admin_groups: Option<Vec<Box<str>>>,
    timeout: Duration,
    client: Option<reqwest::Client>,
}

/// A [`DatabricksAdminCheck`] configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabricksConfigError {
    /// `DATABRICKS_HOST` is unset or empty.
    #[error(
        "DATABRICKS_HOST is not set; set it to the workspace host (e.g. adb-1234.5.azuredatabricks.net)"
    )]
    MissingHost,
    /// The host is not a usable `https://` URL.
    #[error("invalid Databricks host {host:?}: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The builder was given an admin group list without a single usable name.
    #[error("no admin groups given (all entries were empty); nobody could ever be an admin")]
    NoAdminGroups,
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client for the Databricks admin check: {0}")]
    Client(#[source] reqwest::Error),
}

// ===== impl DatabricksAdminCheck =====

impl DatabricksAdminCheck {
    /// Environment variable holding the workspace host.
    pub const HOST_ENV: &'static str = "DATABRICKS_HOST";
    /// Environment variable holding the comma-separated admin groups.
    pub const GROUPS_ENV: &'static str = "ADMIN_GROUPS";
    /// The admin groups used unless configured otherwise.
    pub const DEFAULT_ADMIN_GROUPS: [&'static str; 3] =
        ["admins", "workspace_admins", "administrators"];
    /// The request timeout used unless configured otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The SCIM endpoint asked.
    pub const ME_PATH: &'static str = "/api/2.0/preview/scim/v2/Me";
    /// Largest SCIM answer read; anything bigger is an error.
    pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

    /// Starts configuring a check against `host` (`adb-1.2.azuredatabricks.net`
    /// or `https://adb-1.2.azuredatabricks.net`; `http://` only for loopback
    /// addresses, such as a local test server).
    pub fn builder(host: impl Into<String>) -> DatabricksAdminCheckBuilder {
        DatabricksAdminCheckBuilder {
            host: host.into(),
            admin_groups: None,
            timeout: Self::DEFAULT_TIMEOUT,
            client: None,
        }
    }

    /// A check configured from `DATABRICKS_HOST` (required) and
    /// `ADMIN_GROUPS` (optional, comma-separated; entries trimmed, empty
    /// entries ignored; unset or without any name means the defaults).
    pub fn from_env() -> Result<Self, DatabricksConfigError> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    // Tests pass their own lookup: changing the process environment is
    // `unsafe` in edition 2024 and racy across parallel tests.
    fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Result<Self, DatabricksConfigError> {
        let host = var(Self::HOST_ENV)
            .filter(|h| !h.trim().is_empty())
            .ok_or(DatabricksConfigError::MissingHost)?;
        let mut builder = Self::builder(host);
        if let Some(groups) = var(Self::GROUPS_ENV) {
            let groups = parse_groups(groups.split(','));
            if !groups.is_empty() {
                builder.admin_groups = Some(groups);
            }
        }
        builder.build()
    }

    /// The admin group names, lowercased.
    pub fn admin_groups(&self) -> impl Iterator<Item = &str> {
        self.admin_groups.iter().map(|g| &**g)
    }

    /// The URL asked (`<host>/api/2.0/preview/scim/v2/Me`).
    pub fn me_url(&self) -> &str {
        self.me_url.as_str()
    }

    fn is_admin_group(&self, display: &str) -> bool {
        let display = display.to_lowercase();
        self.admin_groups.iter().any(|g| **g == *display)
    }

    fn request_error(&self, err: reqwest::Error) -> AdminCheckError {
        if err.is_timeout() {
            AdminCheckError::Timeout(self.timeout)
        } else {
            AdminCheckError::unavailable(err)
        }
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, AdminCheckError> {
        let too_large = || {
            AdminCheckError::invalid_response(format!(
                "SCIM Me answer larger than {} bytes",
                Self::MAX_RESPONSE_BYTES
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > Self::MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(e))? {
            if body.len() + chunk.len() > Self::MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The part of the SCIM `Me` answer we read.
#[derive(Deserialize)]
struct Me {
    #[serde(default)]
    groups: Option<Vec<Group>>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    display: Option<String>,
}

#[async_trait]
impl AdminCheck for DatabricksAdminCheck {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        let token = identity
            .access_token()
            .ok_or(AdminCheckError::MissingToken)?;
        let response = self
            .client
            .get(self.me_url.clone())
            // `bearer_auth` marks the header sensitive, so it is redacted
            // from reqwest's and hyper's own Debug output and logs.
            .bearer_auth(token.expose())
            .header(header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(AdminCheckError::Status {
                status: status.as_u16(),
            });
        }
        let body = self.read_body(response).await?;
        let me: Me = serde_json::from_slice(&body).map_err(AdminCheckError::invalid_response)?;
        let is_admin = me
            .groups
            .unwrap_or_default()
            .iter()
            .filter_map(|g| g.display.as_deref())
            .any(|display| self.is_admin_group(display));
        tracing::debug!(user = %identity.user_id(), is_admin, "databricks admin check");
        Ok(is_admin)
    }
}

impl fmt::Debug for DatabricksAdminCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksAdminCheck")
            .field("me_url", &self.me_url.as_str())
            .field("admin_groups", &self.admin_groups)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// ===== impl DatabricksAdminCheckBuilder =====

impl DatabricksAdminCheckBuilder {
    /// The group names that make a member an admin, replacing the defaults.
    /// Names are trimmed and compared ignoring case; empty names are
    /// ignored, and a list with no name at all fails in [`build`](Self::build).
    pub fn admin_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.admin_groups = Some(parse_groups(groups));
        self
    }

    /// The timeout of each SCIM request, connect to last byte (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses this HTTP client (for proxies or custom roots). Redirects should
    /// stay disabled, as in the default client, so the token is never sent
    /// to another host; the timeout is applied per request regardless.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Validates the host and builds the check.
    pub fn build(self) -> Result<DatabricksAdminCheck, DatabricksConfigError> {
        let me_url = me_url(&self.host)?;
        let admin_groups = match self.admin_groups {
            Some(groups) if groups.is_empty() => return Err(DatabricksConfigError::NoAdminGroups),
            Some(groups) => groups,
            None => parse_groups(DatabricksAdminCheck::DEFAULT_ADMIN_GROUPS),
        };
        let client = match self.client {
            Some(client) => client,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.timeout)
                .build()
                .map_err(DatabricksConfigError::Client)?,
        };
        Ok(DatabricksAdminCheck {
            me_url,
            admin_groups,
            timeout: self.timeout,
            client,
        })
    }
}

fn parse_groups<I, S>(groups: I) -> Vec<Box<str>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut parsed: Vec<Box<str>> = Vec::new();
    for group in groups {
        let group = group.as_ref().trim();
        if group.is_empty() {
            continue;
        }
        // Group names are case-insensitive in the original rule (Python
        // `.lower()`); they are created by workspace admins, so Unicode
        // folding does not let users forge a match.
        let group = group.to_lowercase().into_boxed_str();
        if !parsed.contains(&group) {
            parsed.push(group);
        }
    }
    parsed
}

fn me_url(host: &str) -> Result<Url, DatabricksConfigError> {
    let invalid = |reason| DatabricksConfigError::InvalidHost {
        host: host.to_owned(),
        reason,
    };
    let trimmed = host.trim();
    if trimmed.is_empty() {
        return Err(DatabricksConfigError::MissingHost);
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|_| invalid("not a valid URL"))?;
    let Some(name) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid("no host name"));
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        // Tokens travel in clear over http: only for a server on this machine.
        "http" if loopback => {}
        "http" => {
            return Err(invalid(
                "http:// is only accepted for loopback hosts; use https://",
            ));
        }
        _ => return Err(invalid("the scheme must be https://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the host URL are not allowed"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(invalid("give the host only, without a path"));
    }
    url.set_path(DatabricksAdminCheck::ME_PATH);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn groups(check: &DatabricksAdminCheck) -> Vec<&str> {
        check.admin_groups().collect()
    }

    #[test]
    fn host_with_or_without_scheme() {
        for host in [
            "adb-1.2.azuredatabricks.net",
            "https://adb-1.2.azuredatabricks.net",
            "https://adb-1.2.azuredatabricks.net/",
            "  adb-1.2.azuredatabricks.net/ ",
        ] {
            assert_eq!(
                me_url(host).unwrap().as_str(),
                "https://adb-1.2.azuredatabricks.net/api/2.0/preview/scim/v2/Me",
                "{host}"
            );
        }
        assert_eq!(
            me_url("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/api/2.0/preview/scim/v2/Me"
        );
        assert!(me_url("http://localhost:1").is_ok());
        assert!(me_url("http://[::1]:1").is_ok());
    }

    #[test]
    fn unusable_hosts_are_refused() {
        for host in [
            "http://adb-1.2.azuredatabricks.net",
            "ftp://adb-1.2.azuredatabricks.net",
            "https://user:pw@adb-1.2.azuredatabricks.net",
            "https://adb-1.2.azuredatabricks.net/some/path",
            "https://adb-1.2.azuredatabricks.net/?x=1",
            "https://",
            "not a host",
        ] {
            assert!(
                matches!(me_url(host), Err(DatabricksConfigError::InvalidHost { .. })),
                "{host}: {:?}",
                me_url(host)
            );
        }
        assert!(matches!(
            me_url("  "),
            Err(DatabricksConfigError::MissingHost)
        ));
    }

    #[test]
    fn from_env_defaults() {
        let check =
            DatabricksAdminCheck::from_env_with(env(&[("DATABRICKS_HOST", "adb.example.net")]))
                .unwrap();
        assert_eq!(
            groups(&check),
            ["admins", "workspace_admins", "administrators"]
        );
        assert_eq!(
            check.me_url(),
            "https://adb.example.net/api/2.0/preview/scim/v2/Me"
        );
        assert_eq!(check.timeout, Duration::from_secs(10));
    }

    #[test]
    fn from_env_admin_groups_trimmed_lowercased_empties_ignored() {
        let check = DatabricksAdminCheck::from_env_with(env(&[
            ("DATABRICKS_HOST", "https://adb.example.net"),
            ("ADMIN_GROUPS", " Data-Admins ,, ,platform team,DATA-ADMINS"),
        ]))
        .unwrap();
        assert_eq!(groups(&check), ["data-admins", "platform team"]);

        for blank in ["", " ", ",,", " , "] {
            let check = DatabricksAdminCheck::from_env_with(env(&[
                ("DATABRICKS_HOST", "adb.example.net"),
                ("ADMIN_GROUPS", blank),
            ]))
            .unwrap();
            assert_eq!(groups(&check).len(), 3, "{blank:?} means the defaults");
        }
    }

    #[test]
    fn from_env_needs_a_host() {
        assert!(matches!(
            DatabricksAdminCheck::from_env_with(env(&[])),
            Err(DatabricksConfigError::MissingHost)
        ));
        assert!(matches!(
            DatabricksAdminCheck::from_env_with(env(&[("DATABRICKS_HOST", " ")])),
            Err(DatabricksConfigError::MissingHost)
        ));
    }

    #[test]
    fn builder_refuses_an_empty_group_list() {
        assert!(matches!(
            DatabricksAdminCheck::builder("adb.example.net")
                .admin_groups([" ", ""])
                .build(),
            Err(DatabricksConfigError::NoAdminGroups)
        ));
    }

    #[test]
    fn group_match_is_exact_but_case_insensitive() {
        let check = DatabricksAdminCheck::builder("adb.example.net")
            .build()
            .unwrap();
        for yes in ["admins", "ADMINS", "Workspace_Admins", "administrators"] {
            assert!(check.is_admin_group(yes), "{yes}");
        }
        for no in [
            "admin",
            "admins-readonly",
            " admins",
            "workspace admins",
            "administrators2",
            "",
        ] {
            assert!(!check.is_admin_group(no), "{no}");
        }
    }

    #[test]
    fn debug_has_no_client_internals() {
        let check = DatabricksAdminCheck::builder("adb.example.net")
            .build()
            .unwrap();
        let shown = format!("{check:?}");
        assert!(shown.contains("adb.example.net"), "{shown}");
        assert!(shown.contains("workspace_admins"), "{shown}");
    }
}
