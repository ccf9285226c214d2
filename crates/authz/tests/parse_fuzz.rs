//! Parser robustness (STYLE: a fuzz target for every parser, here as proptest): arbitrary JSON specs
//! never panic, only succeed or fail with a field path; path normalization never panics and is idempotent.

use ironmesh_authz::{AuthorizationPolicy, normalize_path};
use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON built from the keys and values policies use, so the generator reaches deep into the schema.
fn policy_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(vec![
            "ALLOW",
            "DENY",
            "AUDIT",
            "CUSTOM",
            "*",
            "foo*",
            "*bar",
            "a*b",
            "10.0.0.0/8",
            "::1",
            "8000",
            "70000",
            "request.headers[x]",
            "source.ip",
            "destination.port",
            "/a/{*}",
            "",
        ])
        .prop_map(Value::from),
    ];
    let keys = proptest::sample::select(vec![
        "action",
        "rules",
        "selector",
        "matchLabels",
        "from",
        "to",
        "when",
        "source",
        "operation",
        "key",
        "values",
        "notValues",
        "principals",
        "notNamespaces",
        "ipBlocks",
        "ports",
        "paths",
        "hosts",
        "x",
    ]);
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((keys.clone(), inner), 0..4).prop_map(
                |fields| Value::Object(
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )
            ),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_specs_parse_or_name_a_spec_path(spec in policy_json()) {
        if let Err(error) = AuthorizationPolicy::from_spec(&spec) {
            prop_assert!(error.path.starts_with("spec"), "{error}");
            prop_assert!(!error.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_rules_inside_a_valid_shape_never_panic(rule in policy_json()) {
        let _ = AuthorizationPolicy::from_spec(&json!({"action": "DENY", "rules": [rule]}));
    }

    #[test]
    fn path_normalization_is_idempotent(path in "/[a-z./%0-9A-F]{0,24}") {
        let once = normalize_path(&path).into_owned();
        prop_assert_eq!(normalize_path(&once), once.as_str());
    }

    #[test]
    fn path_normalization_never_panics(path in "\\PC{0,32}") {
        let _ = normalize_path(&path);
    }
}
