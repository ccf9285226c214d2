//! The rig of the proxy's root tests: network namespaces joined by veth pairs, and the processes started
//! in them, all removed on drop even when an assertion failed.
#![allow(dead_code)]

use std::process::{Child, Command};

/// Everything the test created, removed on drop even when an assertion failed.
pub struct Topology {
    pub namespaces: Vec<String>,
    pub children: Vec<Child>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

pub fn sh(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Topology {
    pub fn netns(&mut self, name: &str) {
        sh(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    pub fn veth(&self, (a, a_ip): (&str, &str), (b, b_ip): (&str, &str), tag: &str) {
        let (a_if, b_if) = (format!("v{tag}a"), format!("v{tag}b"));
        sh(&[
            "ip", "link", "add", &a_if, "netns", a, "type", "veth", "peer", "name", &b_if, "netns",
            b,
        ]);
        for (ns, interface, address) in [(a, &a_if, a_ip), (b, &b_if, b_ip)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                interface,
            ]);
            sh(&["ip", "-n", ns, "link", "set", interface, "up"]);
        }
    }
}
