//! A bounded map in two generations, the eviction both in-memory caches
//! use (verified tokens, SQLite's recent jobs): new entries go into the
//! young generation; an entry found in the old one moves back to the young
//! one; when the young one is full it becomes the old one and the old one
//! is retired whole. So an entry in use stays however many new ones
//! arrive, the map never holds more than two generations, and a full map
//! never empties at once. No locking here: callers hold their own.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct Generations<K, V> {
    /// Entries per generation; 0 keeps nothing.
    half: usize,
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

/// A generation retired to make room. Callers that hold a lock drop it
/// after unlocking.
pub(crate) type Retired<K, V> = Option<HashMap<K, V>>;

impl<K: Hash + Eq, V> Generations<K, V> {
    /// A map of at most `capacity` entries (rounded down to an even number;
    /// below 2 it keeps nothing).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            half: capacity / 2,
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    /// Whether this map keeps anything at all.
    pub(crate) fn keeps(&self) -> bool {
        self.half > 0
    }

    fn make_room(&mut self) -> Retired<K, V> {
        if self.young.len() < self.half {
            return None;
        }
        let young = std::mem::take(&mut self.young);
        Some(std::mem::replace(&mut self.old, young))
    }

    /// The entry for `key`, moved back to the young generation if it was
    /// old (which may retire the old generation).
    pub(crate) fn get<Q>(&mut self, key: &Q) -> (Option<&V>, Retired<K, V>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.young.contains_key(key) {
            return (self.young.get(key), None);
        }
        let Some((key, value)) = self.old.remove_entry(key) else {
            return (None, None);
        };
        let retired = self.make_room();
        // Not in the young generation (looked up above).
        let value = self.young.entry(key).or_insert(value);
        (Some(value), retired)
    }

    /// Stores `value` for `key` (replacing any older one) in the young
    /// generation, unless this map keeps nothing.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Retired<K, V> {
        if !self.keeps() {
            return None;
        }
        self.old.remove(&key);
        let retired = self.make_room();
        self.young.insert(key, value);
        retired
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.remove(key);
        self.old.remove(key);
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.contains_key(key) || self.old.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_keeping_what_is_used_and_never_emptied_at_once() {
        let mut map = Generations::new(4);
        map.insert(0, "busy");
        for n in 1..=100 {
            let retired = map.insert(n, "new");
            assert!(retired.is_none() || map.len() >= 2, "emptied at {n}");
            assert_eq!(map.get(&0).0, Some(&"busy"), "the entry in use went at {n}");
            assert!(map.len() <= 4, "{} held at {n}", map.len());
        }
        assert!(!map.contains_key(&1));
        assert!(map.contains_key(&100));
        map.insert(100, "newer");
        assert_eq!(map.get(&100).0, Some(&"newer"));
        map.remove(&100);
        assert!(!map.contains_key(&100));
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut map = Generations::new(1);
        assert!(!map.keeps());
        assert!(map.insert(1, ()).is_none());
        assert_eq!(map.len(), 0);
    }
}
