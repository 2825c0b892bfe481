//! How many watch streams (WatchJob and WatchMyJobs together) each caller
//! may hold open at once, in this process. A page needs a handful; a
//! script that opens thousands would otherwise hold the server's memory
//! for as long as it likes. Services get their own, higher limit: a
//! backend may watch many jobs for many users.
//!
//! A [`WatchPermit`] travels with its stream and gives its place back when
//! the stream ends, however it ends. Nothing here may wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::domain::Caller;
use crate::error::Limit;

/// The open watch streams per caller.
#[derive(Debug)]
pub struct WatchQuota {
    per_user: usize,
    per_service: usize,
    open: Mutex<HashMap<Key, usize>>,
}

/// A caller, as counted: users and services have separate namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    service: bool,
    id: Box<str>,
}

impl WatchQuota {
    pub fn new(per_user: usize, per_service: usize) -> Arc<Self> {
        Arc::new(Self {
            per_user,
            per_service,
            open: Mutex::default(),
        })
    }

    /// A place for one more stream of `caller`, or the limit it reached.
    pub fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<WatchPermit, Limit> {
        let service = matches!(caller, Caller::Service(_));
        let limit = if service {
            self.per_service
        } else {
            self.per_user
        };
        let key = Key {
            service,
            id: caller.id().into(),
        };
        let mut open = self.open();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                open.remove(&key);
            }
            return Err(Limit::Watches { limit, service });
        }
        *count += 1;
        Ok(WatchPermit {
            quota: self.clone(),
            key,
        })
    }

    /// Streams `caller` holds now.
    #[cfg(test)]
    fn open_for(&self, caller: &Caller) -> usize {
        let key = Key {
            service: matches!(caller, Caller::Service(_)),
            id: caller.id().into(),
        };
        self.open().get(&key).copied().unwrap_or(0)
    }

    fn open(&self) -> MutexGuard<'_, HashMap<Key, usize>> {
        // Every use is a lookup and an update, never held across an await.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open watch stream's place; dropped with the stream.
#[derive(Debug)]
pub struct WatchPermit {
    quota: Arc<WatchQuota>,
    key: Key,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self.quota.open();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ServiceId, UserId};

    #[test]
    fn each_caller_gets_its_own_count_up_to_its_kind_of_limit() {
        let quota = WatchQuota::new(2, 3);
        let alice = Caller::User(UserId::parse("u", "alice").unwrap());
        let bob = Caller::User(UserId::parse("u", "bob").unwrap());
        // A service named like a user is counted apart from it.
        let svc = Caller::Service(ServiceId::parse("s", "alice").unwrap());

        let a1 = quota.acquire(&alice).unwrap();
        let _a2 = quota.acquire(&alice).unwrap();
        assert_eq!(
            quota.acquire(&alice).unwrap_err(),
            Limit::Watches {
                limit: 2,
                service: false
            }
        );
        let _b1 = quota.acquire(&bob).unwrap();
        let s: Vec<_> = (0..3).map(|_| quota.acquire(&svc).unwrap()).collect();
        assert_eq!(
            quota.acquire(&svc).unwrap_err(),
            Limit::Watches {
                limit: 3,
                service: true
            }
        );
        drop(a1);
        assert_eq!(quota.open_for(&alice), 1);
        let _a3 = quota.acquire(&alice).unwrap();
        drop(s);
        assert_eq!(quota.open_for(&svc), 0);
        assert!(quota.open().len() == 2, "emptied entries are removed");
    }

    #[test]
    fn a_zero_limit_refuses_everything_and_keeps_no_entry() {
        let quota = WatchQuota::new(0, 0);
        let alice = Caller::User(UserId::parse("u", "alice").unwrap());
        assert!(quota.acquire(&alice).is_err());
        assert!(quota.open().is_empty());
    }
}
