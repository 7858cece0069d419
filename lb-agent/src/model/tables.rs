//! Maglev tables as shared values, and a memo of their builds.
//!
//! A table is a pure function of the arguments of [`maglev::build`]: the live backends
//! in fill order and the size. [`Tables`] keys each built table by exactly those
//! arguments, so a service whose endpoints did not change gets the very table it had,
//! and services with identical inputs (the node rings of `Cluster` services spread the
//! same way) share one. The memo never changes a result, only how often it is computed:
//! [`super::desired_state_with`] returns what [`super::desired_state`] does whatever
//! the memo holds.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    net::Ipv4Addr,
    sync::Arc,
};

use lb_common::{
    maglev::{self, Backend},
    types::RING_EMPTY,
};

/// One Maglev table: a backend address per slot, [`Ipv4Addr::UNSPECIFIED`] marking an
/// empty slot. Cloning shares the slots; equality is by content.
///
/// A table has few distinct backends, so it is kept as an index into them per slot:
/// two bytes a slot instead of four, which halves the largest thing the agent holds (a
/// pod table per service, 1,000 x 4093 slots at 1,000 services).
#[derive(Clone, Debug, Eq)]
pub struct Table(Arc<Slots>);

/// How a table's slots are stored. The form follows from the content alone, so derived
/// equality and hashing compare contents.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Slots {
    /// Each slot's backend as an index into `members` (in order of first appearance).
    Indexed {
        members: Box<[Ipv4Addr]>,
        slots: Box<[u16]>,
    },
    /// More distinct backends than a `u16` counts (larger than any table the agent
    /// builds or reads back: those have at most 16381 slots).
    Plain(Box<[Ipv4Addr]>),
}

impl Table {
    pub fn len(&self) -> usize {
        match &*self.0 {
            Slots::Indexed { slots, .. } => slots.len(),
            Slots::Plain(slots) => slots.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend in slot `index`, if the table has that slot.
    pub fn get(&self, index: usize) -> Option<Ipv4Addr> {
        match &*self.0 {
            Slots::Indexed { members, slots } => slots
                .get(index)
                .and_then(|member| members.get(usize::from(*member)))
                .copied(),
            Slots::Plain(slots) => slots.get(index).copied(),
        }
    }

    /// Every slot's backend, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..self.len()).filter_map(|index| self.get(index))
    }

    pub fn to_vec(&self) -> Vec<Ipv4Addr> {
        self.iter().collect()
    }

    /// Whether some slot holds `address`.
    #[cfg(test)]
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        match &*self.0 {
            Slots::Indexed { members, .. } => members.contains(&address),
            Slots::Plain(slots) => slots.contains(&address),
        }
    }
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        // Tables from one memo are shared, so most comparisons end at the pointer.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Hash for Table {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl From<Vec<Ipv4Addr>> for Table {
    fn from(table: Vec<Ipv4Addr>) -> Self {
        let mut members: Vec<Ipv4Addr> = Vec::new();
        let mut index_of: HashMap<Ipv4Addr, u16> = HashMap::new();
        let mut slots = Vec::with_capacity(table.len());
        for address in &table {
            let index = match index_of.get(address) {
                Some(index) => *index,
                None => match u16::try_from(members.len()) {
                    Ok(index) => {
                        index_of.insert(*address, index);
                        members.push(*address);
                        index
                    }
                    Err(_) => return Self(Arc::new(Slots::Plain(table.into()))),
                },
            };
            slots.push(index);
        }
        Self(Arc::new(Slots::Indexed {
            members: members.into(),
            slots: slots.into(),
        }))
    }
}

/// One backend of a table being asked for: what [`Backend`] borrows, owned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Entry {
    id: Box<[u8]>,
    addr: u32,
    weight: u32,
}

/// Everything a build depends on. Backends are kept as `build` uses them (absent ones
/// dropped, in fill order), so inputs listed in another order share a table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    size: usize,
    backends: Vec<Entry>,
}

impl Key {
    fn new(backends: &[Backend<'_>], size: usize) -> Self {
        let mut backends: Vec<Entry> = backends
            .iter()
            .filter(|backend| backend.weight > 0 && backend.addr != RING_EMPTY)
            .map(|backend| Entry {
                id: backend.id.into(),
                addr: backend.addr,
                weight: backend.weight,
            })
            .collect();
        backends.sort_unstable();
        Self { size, backends }
    }

    fn build(&self) -> Table {
        let backends: Vec<Backend<'_>> = self
            .backends
            .iter()
            .map(|entry| Backend {
                id: &entry.id,
                addr: entry.addr,
                weight: entry.weight,
            })
            .collect();
        let slots: Vec<Ipv4Addr> = maglev::build(&backends, self.size)
            .into_iter()
            .map(Ipv4Addr::from)
            .collect();
        Table::from(slots)
    }
}

/// A memo of table builds that keeps the tables of the latest pass: each
/// [`Tables::finish_pass`] forgets those the pass did not ask for, so the memo holds no
/// more than the state it produced (and shares those tables with it).
#[derive(Debug, Default)]
pub struct Tables {
    /// Tables of the previous pass not asked for yet in this one.
    previous: HashMap<Key, Table>,
    /// Tables this pass asked for.
    current: HashMap<Key, Table>,
}

impl Tables {
    /// The table [`maglev::build`] fills for `backends` and `size`.
    pub fn get(&mut self, backends: &[Backend<'_>], size: usize) -> Table {
        let key = Key::new(backends, size);
        if let Some(table) = self.current.get(&key) {
            return table.clone();
        }
        let table = self.previous.remove(&key).unwrap_or_else(|| key.build());
        self.current.insert(key, table.clone());
        table
    }

    /// Ends a pass: tables it did not ask for are dropped.
    pub fn finish_pass(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Tables held for the next pass.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.previous.len() + self.current.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes equal tables one shared value: for tables read back from the maps, which
/// arrive as separate copies (most node rings are identical).
#[derive(Debug, Default)]
pub struct Interner {
    seen: HashSet<Table>,
}

impl Interner {
    pub fn intern(&mut self, slots: Vec<Ipv4Addr>) -> Table {
        let table = Table::from(slots);
        match self.seen.get(&table) {
            Some(shared) => shared.clone(),
            None => {
                self.seen.insert(table.clone());
                table
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ip;

    fn backend(id: &'static str, address: &str, weight: u32) -> Backend<'static> {
        Backend {
            id: id.as_bytes(),
            addr: u32::from(ip(address)),
            weight,
        }
    }

    #[test]
    fn equal_inputs_share_one_build_whatever_their_order() {
        let a = backend("node1", "10.0.0.11", 2);
        let b = backend("node2", "10.0.0.12", 3);
        let absent = backend("node3", "10.0.0.13", 0);
        let mut tables = Tables::default();
        let first = tables.get(&[a, b], 16381);
        let second = tables.get(&[b, absent, a], 16381);
        assert!(Arc::ptr_eq(&first.0, &second.0));
        let slots: Vec<Ipv4Addr> = maglev::build(&[a, b], 16381)
            .into_iter()
            .map(Ipv4Addr::from)
            .collect();
        assert_eq!(first.to_vec(), slots);
        assert_ne!(tables.get(&[a], 16381), first);
        assert_eq!(tables.len(), 2);
    }

    #[test]
    fn the_next_pass_reuses_what_it_asks_for_again() {
        let a = backend("node1", "10.0.0.11", 1);
        let b = backend("node2", "10.0.0.12", 1);
        let mut tables = Tables::default();
        let kept = tables.get(&[a], 4093);
        tables.get(&[b], 4093);
        tables.finish_pass();
        assert!(Arc::ptr_eq(&tables.get(&[a], 4093).0, &kept.0));
        tables.finish_pass();
        assert_eq!(tables.len(), 1);
    }

    #[test]
    fn a_table_reads_back_what_it_was_given() {
        let given = vec![
            ip("10.0.0.12"),
            Ipv4Addr::UNSPECIFIED,
            ip("10.0.0.11"),
            ip("10.0.0.12"),
        ];
        let table = Table::from(given.clone());
        assert_eq!((table.len(), table.to_vec()), (4, given.clone()));
        assert_eq!((table.get(3), table.get(4)), (Some(ip("10.0.0.12")), None));
        assert!(table.contains(ip("10.0.0.11")) && !table.contains(ip("10.0.0.13")));
        assert_eq!(table, Table::from(given));
        assert_ne!(table, Table::from(vec![ip("10.0.0.12"); 4]));
    }

    #[test]
    fn a_table_with_more_backends_than_indices_keeps_them_all() {
        let given: Vec<Ipv4Addr> = (0..70_000u32).map(Ipv4Addr::from).collect();
        let table = Table::from(given.clone());
        assert!(matches!(*table.0, Slots::Plain(_)));
        assert_eq!(table.to_vec(), given);
    }

    #[test]
    fn interned_copies_are_one_table() {
        let mut interner = Interner::default();
        let one = interner.intern(vec![ip("10.0.0.11"); 7]);
        let two = interner.intern(vec![ip("10.0.0.11"); 7]);
        let other = interner.intern(vec![ip("10.0.0.12"); 7]);
        assert!(Arc::ptr_eq(&one.0, &two.0));
        assert_ne!(one, other);
    }
}
