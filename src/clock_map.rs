//! A bounded map with second-chance ("clock") eviction, the one both
//! in-memory caches use (verified tokens, SQLite's recent jobs). Entries
//! sit in a ring of slots; a lookup marks its entry used. When a new entry
//! needs room, the hand walks the ring: a used entry loses its mark and
//! stays, the first unused one leaves and the new entry takes its slot. So
//! the map never holds more than its capacity, every entry it holds can be
//! found (any number of lookups, in any order, move nothing and drop
//! nothing), an entry in use stays however many new ones arrive, and room
//! is made one entry at a time.
//!
//! The hash index maps a key to its slot and nothing more: the entries
//! themselves sit in one array the hand walks in order, so making room
//! touches the index twice (the key that leaves, the key that comes)
//! however far the hand goes. No locking here: callers hold their own.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct ClockMap<K, V> {
    /// Entries at most; 0 keeps nothing.
    capacity: usize,
    /// Each key's slot.
    index: HashMap<K, usize>,
    /// The ring. Never longer than the capacity; `None` is a slot a
    /// removal emptied, listed in `free`.
    slots: Vec<Option<Slot<K, V>>>,
    /// Emptied slots, filled again before the ring grows.
    free: Vec<usize>,
    /// The slot the hand looks at next.
    hand: usize,
}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    /// Looked up since the hand last passed.
    used: bool,
}

impl<K: Hash + Eq + Clone, V> ClockMap<K, V> {
    /// A map of at most `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
        }
    }

    /// Entries at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether this map keeps anything at all.
    pub(crate) fn keeps(&self) -> bool {
        self.capacity > 0
    }

    /// The entry for `key`, marked used.
    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.slots.get_mut(*self.index.get(key)?)?.as_mut()?;
        slot.used = true;
        Some(&slot.value)
    }

    /// Stores `value` for `key`: in place of an older one, or as a new
    /// entry, making room if the map is full. Returns the entry that left
    /// to make room (callers that hold a lock drop it after unlocking).
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if !self.keeps() {
            return None;
        }
        if let Some(&at) = self.index.get(&key)
            && let Some(Some(slot)) = self.slots.get_mut(at)
        {
            slot.value = value;
            slot.used = true;
            return None;
        }
        let (at, evicted) = if self.index.len() < self.capacity {
            (self.empty_slot(), None)
        } else {
            self.evict()
        };
        self.index.insert(key.clone(), at);
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Some(Slot {
                key,
                value,
                used: false,
            });
        }
        evicted
    }

    /// A slot nobody holds, for a map with room: one a removal emptied, or
    /// a new one at the end of the ring.
    fn empty_slot(&mut self) -> usize {
        if let Some(at) = self.free.pop() {
            return at;
        }
        if self.slots.len() == self.slots.capacity() {
            // Grow as a vector does, but never past the map's capacity.
            let room = self.slots.len().max(4);
            self.slots
                .reserve_exact(room.min(self.capacity - self.slots.len()));
        }
        self.slots.push(None);
        self.slots.len() - 1
    }

    /// Walks the hand to the first unused entry and takes it out of a full
    /// map: its slot, and what it held.
    fn evict(&mut self) -> (usize, Option<(K, V)>) {
        // A full map has every slot taken (none free, none beyond the
        // capacity), and the hand clears each mark it passes, so this ends
        // within two turns of the ring.
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let at = self.hand;
            self.hand += 1;
            let Some(taken) = self.slots.get_mut(at) else {
                return (self.empty_slot(), None);
            };
            match taken {
                Some(slot) if slot.used => slot.used = false,
                Some(_) => {
                    let left = taken.take().map(|slot| {
                        self.index.remove(&slot.key);
                        (slot.key, slot.value)
                    });
                    return (at, left);
                }
                None => {
                    self.free.retain(|&free| free != at);
                    return (at, None);
                }
            }
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(at) = self.index.remove(key)
            && let Some(slot) = self.slots.get_mut(at)
        {
            *slot = None;
            self.free.push(at);
        }
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded, keeping what is used, one entry at a time.
    #[test]
    fn bounded_keeping_what_is_used_and_never_emptied_at_once() {
        let mut map = ClockMap::new(4);
        map.insert(0, "busy");
        for n in 1..=100 {
            let before = map.len();
            let evicted = map.insert(n, "new");
            assert!(map.len() >= before, "more than one entry left at {n}");
            assert_ne!(evicted.map(|(k, _)| k), Some(0), "the entry in use went");
            assert_eq!(map.get(&0), Some(&"busy"), "the entry in use went at {n}");
            assert!(map.len() <= 4, "{} held at {n}", map.len());
        }
        assert!(!map.contains_key(&1));
        assert!(map.contains_key(&100));
        map.insert(100, "newer");
        assert_eq!(map.get(&100), Some(&"newer"));
        map.remove(&100);
        assert!(!map.contains_key(&100));
    }

    /// A working set as large as the map stays whole however it is looked
    /// up: lookups never make room, so nothing leaves until something new
    /// arrives. (A map that makes room on lookups, as two generations of
    /// half the size each do, loses about a fifth of such a set to every
    /// pass over it in random order.)
    #[test]
    fn a_full_working_set_looked_up_in_any_order_stays() {
        let mut map = ClockMap::new(2500);
        for n in 0..2500u32 {
            assert!(map.insert(n, n).is_none());
        }
        // A fixed shuffle: a multiplier coprime with 2500 visits each once.
        for pass in 0..5u32 {
            for i in 0..2500u32 {
                let n = (i * 1013 + pass * 7) % 2500;
                assert_eq!(map.get(&n), Some(&n), "{n} was lost on pass {pass}");
            }
        }
        assert_eq!(map.len(), 2500);
        // The next new entry takes the place of exactly one.
        assert!(map.insert(9999, 0).is_some());
        assert_eq!(map.len(), 2500);
    }

    /// Unused entries leave before used ones, oldest first.
    #[test]
    fn unused_entries_leave_first() {
        let mut map = ClockMap::new(3);
        for n in 0..3 {
            map.insert(n, ());
        }
        map.get(&0);
        map.get(&2);
        assert_eq!(map.insert(3, ()).map(|(k, _)| k), Some(1));
        // 0 and 2 lost their marks on the way: the oldest of them goes next.
        assert_eq!(map.insert(4, ()).map(|(k, _)| k), Some(0));
    }

    /// Removing and storing the same keys again and again, with the map
    /// never full, reuses the emptied slots: the ring stays within the
    /// capacity, and a full map still makes room one entry at a time.
    #[test]
    fn the_ring_stays_bounded_when_keys_come_and_go() {
        let mut map = ClockMap::new(8);
        for n in 0..10_000u32 {
            map.insert(n % 3, n);
            map.remove(&(n % 3));
            assert!(
                map.slots.len() <= 3,
                "{} slots on the ring",
                map.slots.len()
            );
        }
        for n in 0..8u32 {
            map.insert(n, n);
        }
        for n in 8..100u32 {
            assert!(map.insert(n, n).is_some(), "a full map made room for {n}");
            assert_eq!(map.len(), 8);
        }
        assert_eq!(map.slots.len(), 8);
        assert!(
            map.slots.capacity() <= 8,
            "{} slots reserved",
            map.slots.capacity()
        );
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut map = ClockMap::new(0);
        assert!(!map.keeps());
        assert!(map.insert(1, ()).is_none());
        assert_eq!(map.len(), 0);
        assert!(map.get(&1).is_none());
    }
}
