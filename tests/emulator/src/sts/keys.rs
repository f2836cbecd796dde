//! The AccessKeys STS knows: which secret and SecurityToken belong to each AccessKeyId, and
//! whose they are.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;

/// Who signed a request: the identity trust policies and permissions name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A RAM role, by name (`EcsRamRoleDemo`): the instance role's STS credentials from the
    /// metadata emulator, or credentials the STS emulator issued for an assumed role.
    Role(String),
    /// A RAM user with a long-term AccessKey, by name.
    User(String),
}

impl Principal {
    /// The name a [`TargetRole`](super::TargetRole)'s `trusted` and `permitted` lists use: the
    /// role's or user's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Role(name) | Self::User(name) => name,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Role(name) => write!(f, "role/{name}"),
            Self::User(name) => write!(f, "user/{name}"),
        }
    }
}

/// One AccessKey as STS would look it up.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// Whose key this is.
    pub principal: Principal,
    /// The AccessKeySecret.
    pub access_key_secret: String,
    /// The SecurityToken an `STS.` AccessKeyId must come with; `None` for a long-term key.
    pub security_token: Option<String>,
    /// When an STS key stops being accepted; `None` for a long-term key.
    pub expiration: Option<OffsetDateTime>,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("principal", &self.principal)
            .field("access_key_secret", &"** redacted **")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "** redacted **"),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// The AccessKeys the STS emulator accepts, by AccessKeyId. Cheap to clone: clones share one
/// store. The metadata emulator adds every credential generation it issues
/// ([`Emulator::key_store`](crate::Emulator::key_store)); the STS emulator adds the credentials
/// it issues; tests add long-term keys with [`KeyStore::add_long_term`].
#[derive(Clone, Default)]
pub struct KeyStore {
    keys: Arc<Mutex<HashMap<String, AccessKey>>>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyStore({} keys)", self.lock().len())
    }
}

impl KeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, AccessKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) `access_key_id`.
    pub fn insert(&self, access_key_id: &str, key: AccessKey) {
        self.lock().insert(access_key_id.to_owned(), key);
    }

    /// Adds a RAM user's long-term AccessKey (no SecurityToken, no expiration).
    pub fn add_long_term(&self, user: &str, access_key_id: &str, access_key_secret: &str) {
        self.insert(
            access_key_id,
            AccessKey {
                principal: Principal::User(user.to_owned()),
                access_key_secret: access_key_secret.to_owned(),
                security_token: None,
                expiration: None,
            },
        );
    }

    /// The key for `access_key_id`, if known.
    pub fn get(&self, access_key_id: &str) -> Option<AccessKey> {
        self.lock().get(access_key_id).cloned()
    }

    /// Forgets `access_key_id` (as if the key were deleted or the role detached).
    pub fn remove(&self, access_key_id: &str) -> bool {
        self.lock().remove(access_key_id).is_some()
    }

    /// Every AccessKeySecret and SecurityToken stored (the metadata emulator's generations and
    /// the STS emulator's issues alike), for tests that check none of them reached a log line.
    pub fn secrets(&self) -> Vec<String> {
        self.lock()
            .values()
            .flat_map(|k| [Some(k.access_key_secret.clone()), k.security_token.clone()])
            .flatten()
            .collect()
    }

    /// How many keys are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_lists_every_secret_and_token() {
        let keys = KeyStore::new();
        keys.add_long_term("alice", "LTAI-alice", "alice-secret");
        keys.insert(
            "STS.role",
            AccessKey {
                principal: Principal::Role("app".into()),
                access_key_secret: "role-secret".into(),
                security_token: Some("role-token".into()),
                expiration: None,
            },
        );
        let mut secrets = keys.secrets();
        secrets.sort();
        assert_eq!(secrets, ["alice-secret", "role-secret", "role-token"]);
    }
}
