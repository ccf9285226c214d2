//! ROOT ONLY: the store on a small tmpfs this test mounts, filled to ENOSPC and then freed. Writes fail
//! while the disk is full, nothing half-written shows, and the store works again once space is back,
//! without being reopened by its owner. The Drop guard unmounts even when an assertion fails.
#![allow(unsafe_code, reason = "the root test checks geteuid through libc")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ironmesh_store::{ApplyItem, ApplyOptions, LabelSelector, ObjectKey, Reason, Store};
use serde_json::json;

/// A tmpfs mounted on a temporary directory; unmounted (lazily, so a leak cannot block it) on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "cannot mount a tmpfs (root needed)");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros into `path` until the file system is full; answers whether it hit ENOSPC.
fn fill(path: &PathBuf) -> bool {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    for _ in 0..10_000 {
        if let Err(error) = file.write_all(&block) {
            // Take the last few bytes too.
            let small = [0u8; 512];
            while file.write_all(&small).is_ok() {}
            return error.raw_os_error() == Some(libc::ENOSPC);
        }
    }
    false
}

fn namespace(name: &str) -> ApplyItem {
    // A large annotation, so one write needs more than the few bytes a full disk may have left.
    let padding = "x".repeat(64 * 1024);
    ApplyItem {
        object: json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": {"padding": padding}}}),
        origin: format!("{name}.yaml:1"),
    }
}

fn names(store: &Store) -> Vec<String> {
    store
        .list(Some("namespaces"), None, &LabelSelector::default())
        .unwrap()
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn root_a_full_disk_fails_writes_and_the_store_recovers_once_space_is_back() {
    assert!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "root_* tests need root (they mount a tmpfs)"
    );
    let disk = SmallDisk::mount("8m");
    let path = disk.path().join("store.redb");
    let store = Store::open(&path).unwrap();
    store
        .apply(&[namespace("before")], &ApplyOptions::default())
        .unwrap();

    let filler = disk.path().join("filler");
    assert!(fill(&filler), "the tmpfs should fill up");
    let mut failures = 0;
    for attempt in 0..20 {
        match store.apply(
            &[namespace(&format!("full-{attempt}"))],
            &ApplyOptions::default(),
        ) {
            Ok(_) => {}
            Err(error) => {
                assert_eq!(error.reason(), Reason::InternalError, "{error}");
                assert!(error.to_string().contains("disk space"), "{error}");
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "no write failed on a full disk");

    std::fs::remove_file(&filler).unwrap();
    // Space is back: the next write succeeds, with no restart of anything.
    store
        .apply(&[namespace("after")], &ApplyOptions::default())
        .expect("the store writes again once space is back");
    assert!(
        store
            .get(&ObjectKey::new("namespaces", None, "before"))
            .is_ok()
    );
    let seen = names(&store);
    assert!(
        seen.contains(&"before".to_owned()) && seen.contains(&"after".to_owned()),
        "{seen:?}"
    );
    // What the store answered as failed is not there (all-or-nothing), also after a reopen.
    let failed_and_present = |seen: &[String]| {
        (0..20)
            .filter(|attempt| seen.contains(&format!("full-{attempt}")))
            .count()
    };
    let succeeded_while_full = 20 - failures;
    assert_eq!(failed_and_present(&seen), succeeded_while_full, "{seen:?}");
    drop(store);
    let reopened = Store::open(&path).unwrap();
    let seen = names(&reopened);
    assert!(seen.contains(&"after".to_owned()), "{seen:?}");
    assert_eq!(failed_and_present(&seen), succeeded_while_full, "{seen:?}");
}
