//! Root only: the Deployment controller on the local runtime. Relabelling a Deployment's pod template
//! replaces its pod (Kubernetes' rolling update: one extra pod at most while the new one starts), and
//! going back to the first template leaves one pod again, of the first template's hash.

mod common;

use std::time::{Duration, Instant};

use common::*;

const STEP: Duration = Duration::from_secs(90);

/// `(name, pod-template-hash, phase, version label)` of every sleep pod in `legacy`.
fn sleep_pods(c: &Cluster) -> Vec<(String, String, String, String)> {
    let out = c.ok(&[
        "get",
        "pod",
        "-n",
        "legacy",
        "-l",
        "app=sleep",
        "-o",
        "json",
    ]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| {
            let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (
                field(&pod["metadata"]["name"]),
                field(&pod["metadata"]["labels"]["pod-template-hash"]),
                field(&pod["status"]["phase"]),
                field(&pod["metadata"]["labels"]["version"]),
            )
        })
        .collect()
}

/// Polls until exactly one Running pod with `version` is left; every poll on the way sees at most two.
fn settle_on_one(c: &Cluster, version: &str) -> (String, String) {
    let deadline = Instant::now() + STEP;
    loop {
        let pods = sleep_pods(c);
        assert!(
            pods.len() <= 2,
            "maxSurge 1 allows two pods at most: {pods:?}"
        );
        if let [(name, hash, phase, v)] = pods.as_slice()
            && phase == "Running"
            && v == version
        {
            return (name.clone(), hash.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no single running pod with version {version:?} after {STEP:?}: {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn root_relabelling_a_template_and_back_leaves_one_replica() {
    let c = Cluster::up();
    c.ok(&["create", "ns", "legacy"]);
    let sample = std::fs::read_to_string(samples().join("sleep/sleep.yaml")).unwrap();
    let apply = |yaml: &str| {
        let path = c.home.path().join("sleep.yaml");
        std::fs::write(&path, yaml).unwrap();
        c.ok(&["apply", "-f", path.to_str().unwrap(), "-n", "legacy"]);
    };

    apply(&sample);
    let (first, first_hash) = settle_on_one(&c, "");

    let relabelled = sample.replace(
        "      labels:\n        app: sleep\n",
        "      labels:\n        app: sleep\n        version: v2\n",
    );
    assert_ne!(relabelled, sample, "the sample's template labels moved");
    apply(&relabelled);
    let (second, second_hash) = settle_on_one(&c, "v2");
    assert_ne!(second, first);
    assert_ne!(second_hash, first_hash);

    apply(&sample);
    let (third, third_hash) = settle_on_one(&c, "");
    assert_ne!(third, second);
    assert_ne!(third, first, "a new pod: the first one was deleted");
    assert_eq!(third_hash, first_hash, "the first template's hash again");
    // Nothing else comes or goes once settled.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sleep_pods(&c).len(), 1);
}
