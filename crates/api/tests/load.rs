//! Loading and validation of user files: positions, field paths, suggestions and Istio's own rules.

use ironmesh_api::{Object, load_documents, validate_object};

const HTTPBIN: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels:
    app: httpbin
spec:
  ports:
  - name: http
    port: 8000
  selector:
    app: httpbin
---
apiVersion: extensions/v1beta1
kind: Deployment
metadata:
  name: httpbin
spec:
  replicas: 1
  template:
    metadata:
      labels:
        app: httpbin
        version: v1
    spec:
      containers:
      - image: docker.io/citizenstig/httpbin
        imagePullPolicy: IfNotPresent
        name: httpbin
        ports:
        - containerPort: 8000
---
"#;

fn first_error(name: &str, text: &str) -> String {
    load_documents(name, text)
        .expect_err("expected a validation error")
        .problems[0]
        .to_string()
}

#[test]
fn walkthrough_manifests_load_with_document_lines_and_unknown_k8s_fields_kept() {
    let loaded = load_documents("httpbin.yaml", HTTPBIN).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].line, 1);
    assert_eq!(loaded[1].line, 14);
    assert_eq!(loaded[1].object.kind, "Deployment");
    let container = &loaded[1].object.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
}

#[test]
fn typo_in_tls_mode_points_at_the_value_and_suggests() {
    let text = "apiVersion: \"networking.istio.io/v1alpha3\"\nkind: \"DestinationRule\"\nmetadata:\n  name: \"default\"\n  namespace: \"default\"\nspec:\n  host: \"*.local\"\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTAL\n";
    // Line 10 here because the walkthrough's file has no leading blank line; the column is the value's.
    assert_eq!(
        first_error("all-internal-traffic.yml", text),
        "all-internal-traffic.yml:10:13: spec.trafficPolicy.tls.mode: found \"ISTIO_MUTAL\", expected one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL (did you mean ISTIO_MUTUAL?)"
    );
}

#[test]
fn unknown_istio_field_points_at_the_key_and_suggests() {
    let text = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata:\n  name: default\nspec:\n  peers:\n  - mtsl: {}\n";
    let err = first_error("mesh.yaml", text);
    assert!(
        err.starts_with("mesh.yaml:7:5: spec.peers[0].mtsl: unknown field \"mtsl\""),
        "{err}"
    );
    assert!(err.ends_with("(did you mean mtls?)"), "{err}");
}

#[test]
fn mtls_empty_null_and_bare_all_parse() {
    for mtls in ["{}", "", "null", "~"] {
        let text = format!(
            "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata:\n  name: default\nspec:\n  peers:\n  - mtls: {mtls}\n"
        );
        let loaded = load_documents("m.yaml", &text).unwrap_or_else(|e| panic!("{mtls:?}: {e}"));
        assert_eq!(loaded.len(), 1);
    }
}

#[test]
fn five_valid_documents_and_one_invalid_fail_together_pointing_at_the_bad_line() {
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{i}\n"
        ));
    }
    text.push_str("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: Bad_Name\n");
    let err = load_documents("six.yaml", &text).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, 30);
    assert_eq!(err.problems[0].path, "metadata.name");
}

#[test]
fn kind_list_is_expanded_and_item_errors_carry_the_item_path() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: a\n- apiVersion: networking.istio.io/v1beta1\n  kind: DestinationRule\n  metadata:\n    name: r\n  spec:\n    host: x\n";
    let loaded = load_documents("list.yaml", text).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[1].line, 8);
    let bad = text.replace("host: x", "hots: x");
    let err = load_documents("list.yaml", &bad).unwrap_err();
    let rendered = err.to_string();
    assert!(
        rendered.contains("list.yaml:13:5: items[1].spec.hots: unknown field"),
        "{rendered}"
    );
    assert!(
        rendered.contains("items[1].spec.host: missing"),
        "{rendered}"
    );
}

#[test]
fn json_input_loads() {
    let text = r#"{"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}"#;
    let loaded = load_documents("pa.json", text).unwrap();
    assert_eq!(
        loaded[0].object.metadata.namespace.as_deref(),
        Some("istio-system")
    );
}

#[test]
fn unknown_kind_and_wrong_version_are_clear() {
    let err = first_error(
        "x.yaml",
        "apiVersion: v1\nkind: VirtualService\nmetadata:\n  name: a\n",
    );
    assert!(
        err.contains("x.yaml:2:7: kind: unknown kind \"VirtualService\""),
        "{err}"
    );
    let err = first_error(
        "x.yaml",
        "apiVersion: networking.istio.io/v1alpha1\nkind: DestinationRule\nmetadata:\n  name: a\nspec:\n  host: a\n",
    );
    assert!(err.contains("x.yaml:1:13: apiVersion:"), "{err}");
    assert!(err.contains("networking.istio.io/v1alpha3"), "{err}");
}

#[test]
fn syntax_errors_name_the_position() {
    let err = load_documents("bad.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
    assert!(err.to_string().starts_with("bad.yaml:"), "{err}");
    assert!(err.to_string().contains("invalid YAML"), "{err}");
}

#[test]
fn validate_object_reports_paths_without_positions() {
    let obj: Object = serde_json::from_value(serde_json::json!({
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "p", "namespace": "foo"},
        "spec": {"portLevelMtls": {"8080": {"mode": "DISABLE"}}}
    }))
    .unwrap();
    let errors = validate_object(&obj).unwrap_err();
    assert_eq!(errors[0].path, "spec.portLevelMtls");
    assert!(errors[0].message.contains("requires a selector"));
}

#[test]
fn hostile_nesting_is_refused_not_a_crash() {
    for text in [
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        "- ".repeat(10_000),
    ] {
        let err = load_documents("deep.yaml", &text).unwrap_err();
        assert!(!err.problems.is_empty());
    }
}
