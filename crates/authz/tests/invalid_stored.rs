//! An invalid policy that is stored anyway (on Kubernetes: before the validating webhook is installed, or
//! while it is down) is enforced as a fail-closed stand-in, never left out: leaving out a DENY would allow
//! what it denies, and leaving out a workload's only ALLOW would allow everything.

mod common;

use std::collections::BTreeMap;

use common::{mtls_from, policy};
use ironmesh_authz::{AuthzIndex, DEFAULT_ROOT_NAMESPACE, PolicyObject};
use serde_json::json;

/// An `ipBlocks` entry that is no address or CIDR, so the policy is invalid.
const BAD_RULES: &str = r#"[{"from": [{"source": {"ipBlocks": ["not-an-address"]}}]}]"#;

fn invalid(action: Option<&str>, selector: Option<serde_json::Value>) -> PolicyObject {
    let mut spec = json!({"rules": serde_json::from_str::<serde_json::Value>(BAD_RULES).unwrap()});
    if let Some(action) = action {
        spec["action"] = json!(action);
    }
    if let Some(selector) = selector {
        spec["selector"] = selector;
    }
    policy("foo", "broken", spec)
}

fn allowed(policies: Vec<PolicyObject>, labels: &[(&str, &str)]) -> bool {
    let (index, errors) = AuthzIndex::closing_invalid(policies, DEFAULT_ROOT_NAMESPACE);
    assert_eq!(
        errors.len(),
        1,
        "the invalid policy is reported: {errors:?}"
    );
    assert!(
        errors[0].to_string().contains("foo/broken"),
        "{}",
        errors[0]
    );
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    index
        .policies_for("foo", &labels)
        .evaluate(&mtls_from("bar"))
        .allowed
}

/// (case, policies, workload labels, allowed)
type Row = (
    &'static str,
    Vec<PolicyObject>,
    &'static [(&'static str, &'static str)],
    bool,
);

#[test]
fn invalid_stored_policies_fail_closed() {
    let httpbin: &[(&str, &str)] = &[("app", "httpbin")];
    let sleep: &[(&str, &str)] = &[("app", "sleep")];
    let allow_all = || policy("foo", "allow-all", json!({"rules": [{}]}));
    let select_httpbin = || Some(json!({"matchLabels": {"app": "httpbin"}}));
    let rows: Vec<Row> = vec![
        (
            "an invalid DENY denies every request in its scope, beside an ALLOW that allows all",
            vec![invalid(Some("DENY"), select_httpbin()), allow_all()],
            httpbin,
            false,
        ),
        (
            "an invalid DENY keeps its selector: another workload is not affected",
            vec![invalid(Some("DENY"), select_httpbin()), allow_all()],
            sleep,
            true,
        ),
        (
            "an invalid CUSTOM denies like an invalid DENY",
            vec![invalid(Some("CUSTOM"), None)],
            sleep,
            false,
        ),
        (
            "an invalid ALLOW, the workload's only policy, allows nothing",
            vec![invalid(Some("ALLOW"), None)],
            httpbin,
            false,
        ),
        (
            "no action is ALLOW: the stand-in allows nothing",
            vec![invalid(None, select_httpbin())],
            httpbin,
            false,
        ),
        (
            "an action that cannot be read denies",
            vec![invalid(Some("PERMIT"), None)],
            httpbin,
            false,
        ),
        (
            "a selector that cannot be read widens the stand-in to the whole namespace",
            vec![
                invalid(Some("DENY"), Some(json!({"matchLabels": "app=httpbin"}))),
                allow_all(),
            ],
            sleep,
            false,
        ),
        (
            "an invalid AUDIT never changes a decision",
            vec![invalid(Some("AUDIT"), None), allow_all()],
            httpbin,
            true,
        ),
    ];
    let wrong: Vec<String> = rows
        .into_iter()
        .filter_map(|(case, policies, labels, want)| {
            let got = allowed(policies, labels);
            (got != want).then(|| format!("{case}: allowed={got}, want {want}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
