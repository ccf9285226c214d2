//! Evaluation allocates nothing in the common path (no AUDIT match): checked with a counting allocator
//! that counts only the allocations of the thread under test.
#![allow(
    unsafe_code,
    reason = "a counting GlobalAlloc is the only way to observe allocations"
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use common::{mtls_from, plaintext, policy, tcp, with_path};
use ironmesh_authz::AuthzIndex;
use serde_json::json;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; the counter is a thread-local Cell that never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn evaluate_allocates_nothing_without_audit_matches() {
    let policies = vec![
        policy(
            "foo",
            "deny-headers",
            json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["bar"]}}], "to": [{"operation": {"paths": ["/headers"]}}]}]}),
        ),
        policy(
            "foo",
            "allow-foo",
            json!({"rules": [{"from": [{"source": {"namespaces": ["foo"]}}], "when": [{"key": "request.headers[user-agent]", "values": ["curl*"]}]}]}),
        ),
        policy(
            "istio-system",
            "audit-admin",
            json!({"action": "AUDIT", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/24"]}}], "to": [{"operation": {"paths": ["/admin*"]}}]}]}),
        ),
    ];
    let index = AuthzIndex::new(policies, "istio-system").expect("valid");
    let applied = index.policies_for("foo", &BTreeMap::new());
    // On TCP the AUDIT's HTTP-only `paths` count as matching (as for DENY), so use a source outside its ipBlocks.
    let from_other_subnet = ironmesh_authz::Request {
        source_ip: "10.9.0.1".parse().expect("ip"),
        ..mtls_from("foo")
    };
    let requests = [
        mtls_from("foo"),
        with_path(mtls_from("bar"), "/headers"),
        mtls_from("bar"),
        plaintext(),
        tcp(from_other_subnet),
    ];
    let mut outcomes = Vec::with_capacity(requests.len());
    let count = allocations_during(|| {
        for request in &requests {
            outcomes.push(applied.evaluate(request).allowed);
        }
    });
    assert_eq!(outcomes, [true, false, false, false, false]);
    assert_eq!(count, 0, "evaluate allocated {count} times");

    // An AUDIT match is the one case that allocates (the audited list).
    let audited = with_path(mtls_from("foo"), "/admin");
    assert!(allocations_during(|| assert_eq!(applied.evaluate(&audited).audited.len(), 1)) > 0);
}
