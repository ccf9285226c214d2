//! A small address allocator for pod IPs and service VIPs; the caller persists it (it is serde-able).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::names::{GATEWAY, POD_NETWORK, SERVICE_NETWORK};

/// Allocates addresses of one range to owners (e.g. `"foo/httpbin-6d8f9c7b5-x2x9z"`).
///
/// Allocation is idempotent per owner, and walks forward from the last allocation so a released
/// address is not handed out again at once (a stale connection to it would reach the wrong pod).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    first: Ipv4Addr,
    last: Ipv4Addr,
    next: Ipv4Addr,
    allocated: BTreeMap<Ipv4Addr, String>,
}

impl Ipam {
    /// Pod addresses: 198.18.0.2 – 198.18.255.254 (198.18.0.1 is the node's gateway).
    pub fn pods() -> Self {
        let (base, _) = POD_NETWORK;
        let first = Ipv4Addr::from(u32::from(GATEWAY) + 1);
        Self::new(first, Ipv4Addr::from(u32::from(base) + 0xfffe))
    }

    /// Service VIPs: 198.19.0.1 – 198.19.255.254.
    pub fn services() -> Self {
        let (base, _) = SERVICE_NETWORK;
        Self::new(
            Ipv4Addr::from(u32::from(base) + 1),
            Ipv4Addr::from(u32::from(base) + 0xfffe),
        )
    }

    /// An allocator over `first..=last`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        Ipam {
            first,
            last,
            next: first,
            allocated: BTreeMap::new(),
        }
    }

    fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }

    /// The owner's address, allocating a free one if it has none.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr> {
        if let Some(existing) = self.address_of(owner) {
            return Ok(existing);
        }
        let (first, last) = (u32::from(self.first), u32::from(self.last));
        let size = last - first + 1;
        let start = u32::from(self.next).clamp(first, last) - first;
        for offset in 0..size {
            let candidate = Ipv4Addr::from(first + (start + offset) % size);
            if let std::collections::btree_map::Entry::Vacant(slot) =
                self.allocated.entry(candidate)
            {
                slot.insert(owner.to_owned());
                self.next = Ipv4Addr::from(first + (start + offset + 1) % size);
                return Ok(candidate);
            }
        }
        Err(RuntimeError::PoolExhausted {
            range: self.range(),
        })
    }

    /// Records an address chosen elsewhere (e.g. a Service's explicit `clusterIP`).
    pub fn reserve(&mut self, ip: Ipv4Addr, owner: &str) -> Result<()> {
        if ip < self.first || ip > self.last {
            return Err(RuntimeError::OutOfRange {
                ip,
                range: self.range(),
            });
        }
        match self.allocated.get(&ip) {
            Some(holder) if holder != owner => Err(RuntimeError::AddressTaken {
                ip,
                owner: holder.clone(),
            }),
            _ => {
                self.allocated.insert(ip, owner.to_owned());
                Ok(())
            }
        }
    }

    /// Frees the owner's address; returns it if there was one.
    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let ip = self.address_of(owner)?;
        self.allocated.remove(&ip);
        Some(ip)
    }

    /// The owner's current address.
    pub fn address_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.allocated
            .iter()
            .find(|(_, holder)| holder.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    /// How many addresses are held.
    pub fn len(&self) -> usize {
        self.allocated.len()
    }

    /// True when nothing is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_is_idempotent_and_skips_gateway() {
        let mut pods = Ipam::pods();
        let a = pods.allocate("foo/a").unwrap();
        assert_eq!(a, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(pods.allocate("foo/a").unwrap(), a);
        let b = pods.allocate("foo/b").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            Ipam::services().allocate("foo/httpbin").unwrap(),
            Ipv4Addr::new(198, 19, 0, 1)
        );
    }

    #[test]
    fn released_addresses_are_not_reused_immediately_and_pool_exhausts() {
        let mut small = Ipam::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 3));
        let a = small.allocate("a").unwrap();
        small.release("a");
        let b = small.allocate("b").unwrap();
        assert_ne!(a, b);
        small.allocate("c").unwrap();
        assert_eq!(
            small.allocate("d").unwrap(),
            a,
            "wraps around to the freed address"
        );
        assert!(matches!(
            small.allocate("e"),
            Err(RuntimeError::PoolExhausted { .. })
        ));
    }

    #[test]
    fn reserve_checks_range_and_owner_and_round_trips_through_json() {
        let mut vips = Ipam::services();
        vips.reserve(Ipv4Addr::new(198, 19, 0, 10), "foo/httpbin")
            .unwrap();
        assert!(
            vips.reserve(Ipv4Addr::new(198, 19, 0, 10), "bar/httpbin")
                .is_err()
        );
        assert!(vips.reserve(Ipv4Addr::new(10, 0, 0, 1), "x").is_err());
        let json = serde_json::to_string(&vips).unwrap();
        let back: Ipam = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vips);
        assert_eq!(
            back.address_of("foo/httpbin"),
            Some(Ipv4Addr::new(198, 19, 0, 10))
        );
    }
}
