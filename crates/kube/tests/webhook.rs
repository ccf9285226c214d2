//! The validating webhook: its decisions on AdmissionReviews as the API server sends them, and the same
//! over HTTPS with a TLS client that trusts only the generated CA (as the API server, given `caBundle`).

mod webhook_server;

use std::time::Duration;

use ironmesh_kube::webhook::{ServeLimits, VALIDATE_PATH, review};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_server::TestWebhook;

/// An AdmissionReview request as kube-apiserver v1.34 sends it.
fn admission(operation: &str, object: Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_owned();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let namespace = object["metadata"]["namespace"].clone();
    let plural = format!("{}s", kind.to_lowercase());
    let (object, old_object) = if operation == "DELETE" {
        (Value::Null, object)
    } else {
        (object, Value::Null)
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": plural},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": plural},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-client-side-apply"}
        }
    })
}

fn authorization_policy(action: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "httpbin", "namespace": "foo", "uid": "9c1e", "creationTimestamp": "2026-12-02T02:00:00Z",
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "security.istio.io/v1beta1"}]},
        "spec": {
            "selector": {"matchLabels": {"app": "httpbin"}},
            "action": action,
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/sleep"]}}],
                       "to": [{"operation": {"methods": ["GET"]}}]}]
        }
    })
}

/// `(allowed, message)` of the answer; the answer always echoes the request's uid.
fn decide(request: &Value) -> (bool, String) {
    let answer = review(request);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    if request["request"]["uid"].is_string() {
        assert_eq!(response["uid"], request["request"]["uid"]);
    }
    (
        response["allowed"].as_bool().unwrap(),
        response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn the_webhook_refuses_invalid_istio_resources_with_our_field_errors_and_allows_the_rest() {
    let mesh_policy = json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy",
        "metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {}}]}});
    let bad_rule = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
        "metadata": {"name": "httpbin", "namespace": "foo"},
        "spec": {"host": "httpbin.foo.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTAL"}}}});
    let unknown_field = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "httpbin", "namespace": "foo"},
        "spec": {"host": "httpbin.foo.svc.cluster.local", "trafficPolicy": {"tsl": {"mode": "ISTIO_MUTUAL"}}}});
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "foo"},
        "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}]}});
    let virtual_service = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "v", "namespace": "foo"}, "spec": {"whatever": true}});

    // (case, review, allowed, what the message must contain)
    let table: Vec<(&str, Value, bool, Vec<&str>)> = vec![
        (
            "valid policy",
            admission("CREATE", authorization_policy("ALLOW")),
            true,
            vec![],
        ),
        (
            "valid mesh policy, cluster-scoped",
            admission("CREATE", mesh_policy),
            true,
            vec![],
        ),
        (
            "invalid action",
            admission("CREATE", authorization_policy("ALLOWED")),
            false,
            vec![
                "authorizationpolicy.security.istio.io/httpbin in namespace foo: ",
                "spec.action",
            ],
        ),
        (
            "invalid update",
            admission("UPDATE", authorization_policy("ALLOWED")),
            false,
            vec!["spec.action"],
        ),
        (
            "misspelt TLS mode",
            admission("CREATE", bad_rule.clone()),
            false,
            vec![
                "destinationrule.networking.istio.io/httpbin",
                "spec.trafficPolicy.tls.mode",
                "ISTIO_MUTUAL",
            ],
        ),
        (
            "unknown field",
            admission("CREATE", unknown_field),
            false,
            vec!["spec.trafficPolicy.tsl"],
        ),
        (
            "deleting an invalid object",
            admission("DELETE", bad_rule),
            true,
            vec![],
        ),
        (
            "Kubernetes' own kinds are not ours to judge",
            admission("CREATE", pod),
            true,
            vec![],
        ),
        (
            "an Istio kind ironmesh does not serve",
            admission("CREATE", virtual_service),
            true,
            vec![],
        ),
        (
            "not a review",
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            false,
            vec!["could not read the AdmissionReview"],
        ),
    ];
    for (case, request, allowed, needles) in table {
        let (was_allowed, message) = decide(&request);
        assert_eq!(was_allowed, allowed, "{case}: {message}");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{case}: {needle:?} not in {message:?}"
            );
        }
    }
}

#[test]
fn a_refusal_is_an_invalid_status_the_api_server_passes_to_kubectl() {
    let answer = review(&admission("CREATE", authorization_policy("ALLOWED")));
    let status = &answer["response"]["status"];
    assert_eq!(status["code"], 400);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["status"], "Failure");
}

#[test]
fn istios_warnings_go_back_to_kubectl_with_the_allowed_answer() {
    let peer_authentication = json!({"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "p", "namespace": "foo"}, "spec": {"selector": {}}});
    let answer = review(&admission("CREATE", peer_authentication));
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(
        answer["response"]["warnings"],
        json!([
            "peerauthentication.security.istio.io/p in namespace foo: spec.selector: workload selector specified without labels"
        ])
    );
}

#[tokio::test]
async fn the_webhook_answers_over_https_to_a_client_that_trusts_its_ca() {
    let mut server = TestWebhook::start(ServeLimits::default()).await;
    let request =
        serde_json::to_vec(&admission("CREATE", authorization_policy("ALLOWED"))).unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let answer = server.post(VALIDATE_PATH, &request, Some(version)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["response"]["allowed"], false);
        assert!(
            body["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("spec.action")
        );
    }
    server.stop().await;
}

/// Reads until the server closes the connection (an unclean TLS close counts); `None` if it is still
/// open after a bound far above the configured timeouts. Without the limits it would never close.
async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    match tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received)).await {
        Ok(_closed) => Some(received),
        Err(_still_open) => None,
    }
}

#[tokio::test]
async fn a_client_that_never_starts_the_tls_handshake_is_disconnected() {
    let server = TestWebhook::start(ServeLimits {
        handshake_timeout: Duration::from_millis(200),
        ..ServeLimits::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let received = read_until_closed(&mut tcp).await;
    assert_eq!(
        received,
        Some(vec![]),
        "the server should close a silent connection without sending anything"
    );
}

#[tokio::test]
async fn a_client_that_never_sends_its_request_head_is_disconnected() {
    let server = TestWebhook::start(ServeLimits {
        header_read_timeout: Duration::from_millis(200),
        ..ServeLimits::default()
    })
    .await;
    let mut tls = server.connect(None).await;
    let received = read_until_closed(&mut tls).await;
    let received = received.expect("the server should close a connection that sends no request");
    assert!(
        !String::from_utf8_lossy(&received).contains("200 OK"),
        "{received:?}"
    );
}

#[tokio::test]
async fn a_review_over_the_body_limit_is_answered_413_whether_declared_or_chunked() {
    let server = TestWebhook::start(ServeLimits {
        max_body_bytes: 4096,
        ..ServeLimits::default()
    })
    .await;
    let head = |framing: &str| {
        format!(
            "POST {VALIDATE_PATH} HTTP/1.1\r\nHost: istiod.istio-system.svc\r\n\
             content-type: application/json\r\n{framing}\r\nconnection: close\r\n\r\n"
        )
    };
    // A valid review padded past the limit, so only its size can be why it is refused.
    let mut policy = authorization_policy("ALLOW");
    policy["metadata"]["annotations"] = json!({"padding": "x".repeat(8192)});
    let body = serde_json::to_vec(&admission("UPDATE", policy)).unwrap();

    // Declared: refused on the head alone; the body is never sent.
    let mut tls = server.connect(None).await;
    tls.write_all(head(&format!("content-length: {}", body.len())).as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut tls).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("limit of 4096 bytes"), "{answer}");

    // Chunked: no length up front, so the limit is found while reading.
    let mut tls = server.connect(None).await;
    let mut request = head("transfer-encoding: chunked").into_bytes();
    for chunk in body.chunks(1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before all of it is written.
    let _ = tls.write_all(&request).await;
    let answer = read_until_closed(&mut tls).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // The same review under the limit is read and decided.
    let server = TestWebhook::start(ServeLimits::default()).await;
    let mut tls = server.connect(None).await;
    tls.write_all(head(&format!("content-length: {}", body.len())).as_bytes())
        .await
        .unwrap();
    tls.write_all(&body).await.unwrap();
    let answer = read_until_closed(&mut tls).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""allowed":true"#), "{answer}");
}
