//! [`StaticAdmins`]: a fixed set of admin user ids.

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;

use super::{AdminCheck, AdminCheckError};
use crate::identity::Identity;

/// Admins from a fixed list of user ids (usually emails), compared without
/// regard to ASCII case.
///
/// Only ASCII letters are folded: full Unicode folding would let look-alike
/// ids such as `\u{212A}ate@example.com` (KELVIN SIGN) match `kate@example.com`.
///
/// ```
/// use metrics_core::{AdminCheck, Identity, StaticAdmins};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admins = StaticAdmins::parse(" Ada@Example.com, ,grace@example.com ");
/// assert!(admins.is_admin(&Identity::new("ada@example.com")).await.unwrap());
/// assert!(!admins.is_admin(&Identity::new("eve@example.com")).await.unwrap());
/// assert_eq!(admins.len(), 2);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct StaticAdmins {
    // Stored ASCII-lowercased.
    users: HashSet<Box<str>>,
}

impl StaticAdmins {
    /// The environment variable [`StaticAdmins::from_env`] reads.
    pub const ENV: &'static str = "ADMIN_USERS";

    /// Admins from a list of user ids; surrounding whitespace is trimmed and
    /// empty entries are ignored.
    pub fn new<I, S>(users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let users = users
            .into_iter()
            .filter_map(|u| {
                let u = u.as_ref().trim();
                (!u.is_empty()).then(|| u.to_ascii_lowercase().into_boxed_str())
            })
            .collect();
        Self { users }
    }

    /// Admins from a comma-separated list (`"ada@example.com, grace@example.com"`).
    pub fn parse(list: &str) -> Self {
        Self::new(list.split(','))
    }

    /// Admins from the `ADMIN_USERS` environment variable (comma-separated).
    /// Unset, empty or not valid UTF-8 means nobody is an admin.
    pub fn from_env() -> Self {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    // Tests pass their own lookup: changing the process environment is
    // `unsafe` in edition 2024 and racy across parallel tests.
    fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Self {
        var(Self::ENV)
            .map(|list| Self::parse(&list))
            .unwrap_or_default()
    }

    /// How many distinct admins the list holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody is an admin.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user_id` is on the list (ASCII case-insensitive).
    pub fn contains(&self, user_id: &str) -> bool {
        // Most ids are already lowercase: skip the allocation then.
        if user_id.bytes().any(|b| b.is_ascii_uppercase()) {
            self.users.contains(user_id.to_ascii_lowercase().as_str())
        } else {
            self.users.contains(user_id)
        }
    }
}

impl fmt::Debug for StaticAdmins {
    // Emails are personal data: show how many, not who.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticAdmins")
            .field("len", &self.users.len())
            .finish()
    }
}

#[async_trait]
impl AdminCheck for StaticAdmins {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        Ok(self.contains(identity.user_id().as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_ignores_empties_and_folds_ascii_case() {
        let admins =
            StaticAdmins::parse("  Ada@Example.COM ,,  , grace@example.com,ada@example.com");
        assert_eq!(admins.len(), 2);
        assert!(admins.contains("ada@example.com"));
        assert!(admins.contains("ADA@EXAMPLE.COM"));
        assert!(admins.contains("Grace@example.com"));
        assert!(!admins.contains("ada@example.co"));
        assert!(!admins.contains(" ada@example.com"));
        assert!(!admins.contains(""));
    }

    #[test]
    fn unicode_look_alikes_do_not_match() {
        let admins = StaticAdmins::parse("kate@example.com");
        assert!(!admins.contains("\u{212A}ate@example.com"));
    }

    #[test]
    fn from_env_reads_admin_users() {
        let admins = StaticAdmins::from_env_with(|name| {
            (name == "ADMIN_USERS").then(|| "ada@example.com, bob@example.com".to_owned())
        });
        assert_eq!(admins.len(), 2);
        assert!(admins.contains("bob@example.com"));

        assert!(StaticAdmins::from_env_with(|_| None).is_empty());
        assert!(StaticAdmins::from_env_with(|_| Some(" , ".to_owned())).is_empty());
    }

    #[test]
    fn debug_does_not_list_users() {
        let admins = StaticAdmins::parse("ada@example.com");
        let shown = format!("{admins:?}");
        assert!(!shown.contains("ada"), "{shown}");
        assert!(shown.contains("len: 1"), "{shown}");
    }

    #[tokio::test]
    async fn checks_the_identity_user_id() {
        let admins = StaticAdmins::new(["ada@example.com"]);
        assert!(
            admins
                .is_admin(&Identity::new("Ada@example.com"))
                .await
                .unwrap()
        );
        assert!(
            !admins
                .is_admin(&Identity::new("bob@example.com"))
                .await
                .unwrap()
        );
        assert!(
            !StaticAdmins::default()
                .is_admin(&Identity::new("ada@example.com"))
                .await
                .unwrap()
        );
    }
}
