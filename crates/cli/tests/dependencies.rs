//! The CLI is a client: it links the API's types, the store's client and the home layout, never the
//! control plane, the CA, the runtime or the proxies' protocol. A CLI that links them becomes a second
//! owner of the control plane's state again (it once rewrote the CA's files itself), and would not work
//! far from the cluster (issue 13).

/// The names under `[dependencies]` of this crate's Cargo.toml.
fn normal_dependencies() -> Vec<String> {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("read the CLI's Cargo.toml");
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            names.push(name.to_owned());
        }
    }
    names
}

#[test]
fn the_cli_links_only_the_api_the_store_client_and_the_home_layout() {
    let names = normal_dependencies();
    assert!(
        names.iter().any(|n| n == "ironmesh-store"),
        "the manifest was not read: {names:?}"
    );
    let ours: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("ironmesh-"))
        .collect();
    for name in &ours {
        assert!(
            ["ironmesh-api", "ironmesh-store", "ironmesh-home"].contains(&name.as_str()),
            "the CLI depends on {name}; ask the control plane through the API instead (tests may use it \
             as a dev-dependency)"
        );
    }
}
