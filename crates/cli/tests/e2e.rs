//! End-to-end tests of the real `ironmesh` binary against a control plane it starts with `up` in a
//! temporary IRONMESH_HOME (API only: `IRONMESH_NO_RUNTIME=1`, so no root and no network runtime).
#![allow(unsafe_code, reason = "root tests check geteuid through libc")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ironmesh");

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

/// A cluster of its own; `down` (and, failing that, SIGKILL of its pid) when dropped.
struct Cluster {
    home: tempfile::TempDir,
    /// Whether pods really run (root only); otherwise `IRONMESH_NO_RUNTIME=1`.
    runtime: bool,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Cluster {
    fn up() -> Cluster {
        Cluster::start(false)
    }

    fn start(runtime: bool) -> Cluster {
        let cluster = Cluster {
            home: tempfile::tempdir().unwrap(),
            runtime,
        };
        common::build_control_plane();
        let up = cluster.run(&["up"]);
        assert_eq!(up.code, 0, "up failed: {}{}", up.stdout, up.stderr);
        cluster
    }

    fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .env("IRONMESH_HOME", self.home.path())
            .stdin(Stdio::null());
        if !self.runtime {
            command.env("IRONMESH_NO_RUNTIME", "1");
        }
        command
    }

    fn run(&self, args: &[&str]) -> Ran {
        self.command().args(args).output().unwrap().into()
    }

    /// Runs a bash line with `$IM` bound to the binary (for process substitution and redirects).
    fn bash(&self, line: &str) -> Ran {
        Command::new("bash")
            .arg("-c")
            .arg(line)
            .current_dir(samples().join(".."))
            .env("IM", BIN)
            .env("IRONMESH_HOME", self.home.path())
            .env("IRONMESH_NO_RUNTIME", "1")
            .output()
            .unwrap()
            .into()
    }

    fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert_eq!(ran.code, 0, "ironmesh {args:?} failed: {}", ran.stderr);
        ran.stdout
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.home.path().join("run/control-plane.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.home.path().join("run/control-plane.pid")).ok();
        let _ = self.run(&["down"]);
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok())
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

#[test]
fn walkthrough_apply_messages_and_gets() {
    let c = Cluster::up();
    assert_eq!(c.ok(&["create", "ns", "foo"]), "namespace/foo created\n");
    let injected = c.bash("$IM apply -f <($IM kube-inject -f samples/httpbin/httpbin.yaml) -n foo");
    assert_eq!(injected.code, 0, "{}", injected.stderr);
    assert_eq!(
        injected.stdout,
        "service/httpbin created\ndeployment.extensions/httpbin created\n"
    );
    let sleep = c.bash("$IM apply -f <($IM inject -f samples/sleep/sleep.yaml) -n foo");
    assert_eq!(
        sleep.stdout,
        "service/sleep created\ndeployment.extensions/sleep created\n"
    );
    assert_eq!(
        c.ok(&["create", "ns", "legacy"]),
        "namespace/legacy created\n"
    );
    // The walkthrough's own spelling: a bare `-f` with the file on stdin.
    let legacy = c.bash("$IM apply -f < samples/sleep/sleep.yaml -n legacy");
    assert_eq!(
        legacy.stdout,
        "service/sleep created\ndeployment.extensions/sleep created\n"
    );

    // The walkthrough's checks before any policy.
    let policies = c.run(&[
        "get",
        "policies.authentication.istio.io",
        "--all-namespaces",
    ]);
    assert_eq!((policies.code, policies.stdout.as_str()), (0, ""));
    assert_eq!(policies.stderr, "No resources found.\n");
    assert_eq!(
        c.ok(&["get", "meshpolicies.authentication.istio.io"]),
        "NAME      KIND\ndefault   MeshPolicy.v1alpha1.authentication.istio.io\n"
    );

    let mesh = c.bash(
        "$IM apply -f <(printf 'apiVersion: \"authentication.istio.io/v1alpha1\"\\nkind: \"MeshPolicy\"\\nmetadata:\\n  name: \"default\"\\nspec:\\n  peers:\\n  - mtls: {}\\n')",
    );
    assert_eq!(
        mesh.stdout, "meshpolicy.authentication.istio.io/default configured\n",
        "{}",
        mesh.stderr
    );
    let rule = c.bash(
        "$IM apply -f <(printf 'apiVersion: \"networking.istio.io/v1alpha3\"\\nkind: \"DestinationRule\"\\nmetadata:\\n  name: \"default\"\\n  namespace: \"default\"\\nspec:\\n  host: \"*.local\"\\n  trafficPolicy:\\n    tls:\\n      mode: ISTIO_MUTUAL\\n')",
    );
    assert_eq!(
        rule.stdout, "destinationrule.networking.istio.io/default created\n",
        "{}",
        rule.stderr
    );

    let yaml = c.ok(&[
        "get",
        "destinationrules.networking.istio.io",
        "--all-namespaces",
        "-o",
        "yaml",
    ]);
    assert!(yaml.starts_with("apiVersion: v1\nitems:\n- apiVersion: networking.istio.io/v1alpha3\n  kind: DestinationRule\n  metadata:\n    creationTimestamp: "), "{yaml}");
    assert!(yaml.contains("\n    generation: 1\n    name: default\n    namespace: default\n    resourceVersion: \""), "{yaml}");
    assert!(yaml.contains("\n  spec:\n    host: '*.local'\n    trafficPolicy:\n      tls:\n        mode: ISTIO_MUTUAL\n"), "{yaml}");
    assert!(
        yaml.ends_with("kind: List\nmetadata: {}\nresourceVersion: \"\"\nselfLink: \"\"\n"),
        "{yaml}"
    );
    let hosts: Vec<&str> = yaml.lines().filter(|l| l.contains("host:")).collect();
    assert_eq!(hosts, ["    host: '*.local'"]);

    // -A adds the NAMESPACE column; rows are sorted by namespace then name.
    let services = c.ok(&["get", "svc", "-A"]);
    let rows: Vec<Vec<&str>> = services
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let names: Vec<(&str, &str, &str)> = rows[1..].iter().map(|r| (r[0], r[1], r[5])).collect();
    assert_eq!(
        names,
        [
            ("foo", "httpbin", "8000/TCP"),
            ("foo", "sleep", "80/TCP"),
            ("legacy", "sleep", "80/TCP")
        ]
    );
    let wide = c.ok(&["get", "services", "httpbin", "-o", "wide", "-n", "foo"]);
    assert!(wide.starts_with("NAME      TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)    AGE       SELECTOR\nhttpbin   ClusterIP   "), "{wide}");
    assert!(wide.ends_with("app=httpbin\n"), "{wide}");

    // jsonpath, as the walkthrough types it (unquoted, quoted, and split off by a space).
    assert_eq!(
        c.bash("$IM get deploy -n foo -o jsonpath= {.items..metadata.name}")
            .stdout,
        "httpbin sleep"
    );
    assert!(
        c.ok(&["describe", "deployment/sleep", "-n", "foo"])
            .starts_with("Name:         sleep\nNamespace:    foo\n")
    );
    assert_eq!(
        c.ok(&["get", "svc/sleep", "-n", "foo", "-o", "name"]),
        "service/sleep\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "-n",
            "foo",
            "-o",
            "jsonpath={.items..metadata.name}"
        ]),
        "httpbin sleep"
    );
    assert_eq!(
        c.bash(
            "$IM get deployment sleep -n foo -o jsonpath='{.spec.template.spec.containers[*].name}'"
        )
        .stdout,
        "sleep ironmesh-proxy"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "services",
            "-l",
            "app=sleep",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}"
        ]),
        "foo/sleep\nlegacy/sleep\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "sleep",
            "-n",
            "legacy",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "sleep",
        "legacy pods have no sidecar"
    );
    assert_eq!(
        c.ok(&["get", "deploy", "-n", "foo", "-o", "name"]),
        "deployment.extensions/httpbin\ndeployment.extensions/sleep\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "dr", "default", "-n", "default", "-o", "json"]))
            .unwrap();
    assert_eq!(json["metadata"]["generation"], 1);
    assert_eq!(json["metadata"]["uid"].as_str().map(str::len), Some(36));
}

#[test]
fn a_file_with_one_invalid_document_changes_nothing_and_names_its_line() {
    let c = Cluster::up();
    let mut text = String::new();
    let mut bad_line = 0;
    for i in 0..6 {
        if !text.is_empty() {
            text.push_str("---\n");
        }
        let start = text.lines().count() + 1;
        if i == 4 {
            // The error points at the `kind:` line of the fifth document.
            bad_line = start + 1;
            text.push_str("apiVersion: v1\nkind: Servic\nmetadata:\n  name: broken\n");
        } else {
            text.push_str(&format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc{i}\nspec:\n  ports:\n  - port: 80\n"
            ));
        }
    }
    let file = c.home.path().join("six.yaml");
    std::fs::write(&file, text).unwrap();
    let before = c.ok(&["get", "svc", "-A", "-o", "json"]);
    let applied = c.run(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(applied.code, 1);
    assert_eq!(applied.stdout, "");
    let expected = format!("{}:{bad_line}:", file.display());
    assert!(
        applied.stderr.starts_with(&format!("error: {expected}")),
        "{}",
        applied.stderr
    );
    assert_eq!(c.ok(&["get", "svc", "-A", "-o", "json"]), before);
    let none = c.run(&["get", "svc"]);
    assert_eq!(none.stderr, "No resources found.\n");
}

#[test]
fn errors_read_as_kubectl() {
    let c = Cluster::up();
    let missing = c.run(&["get", "ns", "foo"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (
            1,
            "Error from server (NotFound): namespaces \"foo\" not found\n"
        )
    );
    let applied = c.run(&[
        "apply",
        "-f",
        samples().join("sleep/sleep.yaml").to_str().unwrap(),
        "-n",
        "foo",
    ]);
    assert_eq!(
        applied.stderr,
        "Error from server (NotFound): namespaces \"foo\" not found\n"
    );
    let deleted = c.run(&["delete", "svc", "httpbin"]);
    assert_eq!(
        deleted.stderr,
        "Error from server (NotFound): services \"httpbin\" not found\n"
    );
    let kind = c.run(&["get", "widgets"]);
    assert_eq!(
        kind.stderr,
        "error: the server doesn't have a resource type \"widgets\"\n"
    );
    c.ok(&["create", "ns", "foo"]);
    let again = c.run(&["create", "ns", "foo"]);
    assert_eq!(
        again.stderr,
        "Error from server (AlreadyExists): namespaces \"foo\" already exists\n"
    );
    let path = c.run(&["apply", "-f", "/nonexistent/x.yaml"]);
    assert_eq!(
        path.stderr,
        "error: the path \"/nonexistent/x.yaml\" does not exist\n"
    );
}

#[test]
fn labels_delete_and_namespace_auto_injection() {
    let c = Cluster::up();
    c.ok(&["create", "ns", "bar"]);
    assert_eq!(
        c.ok(&["label", "ns", "bar", "ironmesh-injection=enabled"]),
        "namespace/bar labeled\n"
    );
    let conflict = c.run(&["label", "ns", "bar", "ironmesh-injection=disabled"]);
    assert_eq!(
        conflict.stderr,
        "error: 'ironmesh-injection' already has a value (enabled), and --overwrite is false\n"
    );
    let sleep = samples().join("sleep/sleep.yaml");
    let sleep = sleep.to_str().unwrap();
    c.ok(&["apply", "-f", sleep, "-n", "bar"]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "sleep",
            "-n",
            "bar",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "sleep ironmesh-proxy"
    );
    // Re-applying the same file leaves the injected deployment unchanged.
    assert_eq!(
        c.ok(&["apply", "-f", sleep, "-n", "bar"]),
        "service/sleep unchanged\ndeployment.extensions/sleep unchanged\n"
    );
    assert_eq!(
        c.ok(&["delete", "-f", sleep, "-n", "bar"]),
        "service \"sleep\" deleted\ndeployment.extensions \"sleep\" deleted\n"
    );
    assert_eq!(
        c.ok(&["delete", "ns", "bar"]),
        "namespace \"bar\" deleted\n"
    );
}

#[test]
fn kill_dash_nine_after_an_acknowledged_apply_loses_nothing() {
    let c = Cluster::up();
    c.ok(&["create", "ns", "foo"]);
    let httpbin = samples().join("httpbin/httpbin.yaml");
    c.ok(&["apply", "-f", httpbin.to_str().unwrap(), "-n", "foo"]);
    let before = c.ok(&["get", "deploy", "httpbin", "-n", "foo", "-o", "json"]);
    let pid = c.pid();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the control plane survived kill -9");
    let status = c.ok(&["status"]);
    assert!(status.contains("not running"), "{status}");
    c.ok(&["up"]);
    assert_ne!(c.pid(), pid);
    assert_eq!(
        c.ok(&["get", "deploy", "httpbin", "-n", "foo", "-o", "json"]),
        before
    );
}

#[test]
fn up_is_idempotent_and_down_purge_forgets_state() {
    let c = Cluster::up();
    let pid = c.pid();
    assert_eq!(
        c.ok(&["up"]),
        format!("ironmesh is already up (control plane pid {pid})\n")
    );
    let options: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.home.path().join("mesh.json")).unwrap())
            .unwrap();
    assert_eq!(options["trustDomain"], "cluster.local");
    assert_eq!(options["workloadCertTtlSeconds"], 86400);
    c.ok(&["create", "ns", "foo"]);
    assert_eq!(
        c.ok(&["down"]),
        format!("control plane stopped (pid {pid})\n")
    );
    assert!(!alive(pid));
    assert!(c.ok(&["status"]).contains("not running"));
    // State is kept across down/up...
    c.ok(&["up"]);
    c.ok(&["get", "ns", "foo"]);
    // ...until --purge.
    c.ok(&["down", "--purge"]);
    assert!(!c.home.path().exists());
    c.ok(&["up"]);
    assert_eq!(c.run(&["get", "ns", "foo"]).code, 1);
}

#[test]
fn completion_and_kube_inject_outputs() {
    let c = Cluster {
        home: tempfile::tempdir().unwrap(),
        runtime: false,
    };
    let bash = c.ok(&["completion", "bash"]);
    assert!(
        bash.contains("_ironmesh()"),
        "{}",
        &bash[..200.min(bash.len())]
    );
    let injected = c.ok(&[
        "kube-inject",
        "-f",
        samples().join("sleep/sleep.yaml").to_str().unwrap(),
    ]);
    let docs: Vec<&str> = injected.split("---\n").collect();
    assert_eq!(docs.len(), 2);
    assert!(
        docs[0].starts_with("apiVersion: v1\nkind: Service\n"),
        "{injected}"
    );
    assert!(
        docs[1].contains("security.istio.io/tlsMode: istio"),
        "{injected}"
    );
    assert!(docs[1].contains("- name: ironmesh-proxy\n"), "{injected}");
    assert!(docs[1].contains("- name: ironmesh-init\n"), "{injected}");
    // Both injected containers name the release's image, which the test cluster's nodes have imported
    // (images/build.sh), and take it from the node: sleep's own container already says IfNotPresent.
    let image = format!("image: ironmesh/proxy:{}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(docs[1].matches(&image).count(), 2, "{injected}");
    assert_eq!(
        docs[1].matches("imagePullPolicy: IfNotPresent\n").count(),
        3,
        "{injected}"
    );
    // The output loads back and injecting it again changes nothing.
    let file = c.home.path().join("injected.yaml");
    std::fs::write(&file, &injected).unwrap();
    assert_eq!(
        c.ok(&["kube-inject", "-f", file.to_str().unwrap()]),
        injected
    );
}

#[test]
fn tls_check_follows_the_walkthrough_policies() {
    let c = Cluster::up();
    c.ok(&["create", "ns", "foo"]);
    let injected = c.bash("$IM apply -f <($IM kube-inject -f samples/httpbin/httpbin.yaml) -n foo");
    assert_eq!(injected.code, 0, "{}", injected.stderr);
    let row = |out: &str, host: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no row for {host} in\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let host = "httpbin.foo.svc.cluster.local:8000";
    assert_eq!(row(&c.ok(&["tls-check"]), host)[1..3], ["OK", "PERMISSIVE"]);
    let strict = c.home.path().join("mesh-policy.yaml");
    std::fs::write(
        &strict,
        "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata:\n  name: default\nspec:\n  peers:\n  - mtls: {}\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", strict.to_str().unwrap()]);
    let after_policy = row(&c.ok(&["tls-check", "httpbin.foo"]), host);
    assert_eq!(
        after_policy,
        [host, "CONFLICT", "STRICT", "-", "/default", "-"]
    );
    let rule = c.home.path().join("rule.yaml");
    std::fs::write(
        &rule,
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: default\n  namespace: default\nspec:\n  host: \"*.local\"\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", rule.to_str().unwrap()]);
    let after_rule = row(&c.ok(&["tls-check", "httpbin.foo"]), host);
    assert_eq!(
        after_rule,
        [
            host,
            "OK",
            "STRICT",
            "ISTIO_MUTUAL",
            "/default",
            "default/default"
        ]
    );
}

/// Root only: pods run in network namespaces. `down` (the Drop guard) removes them even on failure.
#[test]
fn root_exec_and_logs_in_a_running_pod() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "this test needs root: the local runtime creates network namespaces"
    );
    let c = Cluster::start(true);
    c.ok(&["create", "ns", "legacy"]);
    let pod = c.home.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - name: sleep\n    image: busybox\n    command: [\"/bin/sh\", \"-c\", \"echo started; exec sleep 3650d\"]\n  - name: other\n    image: busybox\n    command: [\"/bin/sleep\", \"3650d\"]\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", pod.to_str().unwrap(), "-n", "legacy"]);
    let started = Instant::now();
    // Ready, not only phase Running: Running means one container runs (Kubernetes' rule), and the two
    // start side by side, so `sleep` may not have started yet when `other` has (exec would say so).
    loop {
        let ready = c.ok(&[
            "get",
            "pod",
            "two",
            "-n",
            "legacy",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        if ready == "True" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pod never became ready (Ready {ready:?}); see {}",
            c.home.path().join("logs/control-plane.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let failed = c.run(&[
        "exec", "two", "-n", "legacy", "-c", "sleep", "--", "/bin/sh", "-c", "exit 3",
    ]);
    assert_eq!(failed.code, 3, "{}", failed.stderr);
    assert_eq!(failed.stderr, "command terminated with exit code 3\n");
    let defaulted = c.run(&["exec", "two", "-n", "legacy", "--", "/bin/echo", "hello"]);
    assert_eq!(defaulted.code, 0, "{}", defaulted.stderr);
    assert_eq!(defaulted.stdout, "hello\n");
    assert!(
        defaulted
            .stderr
            .starts_with("Defaulting container name to sleep.\n"),
        "{}",
        defaulted.stderr
    );
    let logs = c.run(&["logs", "two", "-n", "legacy", "-c", "sleep"]);
    assert_eq!(logs.stdout, "started\n", "{}", logs.stderr);
    let missing = c.run(&["exec", "nope", "-n", "legacy", "--", "true"]);
    assert_eq!(
        missing.stderr,
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
}

/// The name of the one pod of `app` in `namespace`, once the Deployment controller has made it.
fn pod_of(c: &Cluster, app: &str, namespace: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let name = c.ok(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={.items..metadata.name}",
        ]);
        let name = name.trim();
        if !name.is_empty() {
            return name.to_string();
        }
        assert!(Instant::now() < deadline, "no {app} pod in {namespace}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `wait` and `apply --wait` against the real control plane and hub, with a real configuration client in
/// this test standing in for the pod's sidecar (no runtime, so no proxy process): they return only once
/// that client has ACKed the configuration that includes the change, and name it when it has not.
#[test]
fn wait_returns_once_the_sidecars_acknowledged_and_names_those_that_did_not() {
    use ironmesh_identity::{CredentialAuthority, PodClaims};
    use ironmesh_proto::pb::ServerMode;
    use ironmesh_proto::{ConfigClient, ConfigClientOptions, TokenSource};

    let c = Cluster::up();
    c.ok(&["create", "ns", "foo"]);
    let injected = c.bash("$IM apply -f <($IM kube-inject -f samples/httpbin/httpbin.yaml) -n foo");
    assert_eq!(injected.code, 0, "{}", injected.stderr);
    let pod = pod_of(&c, "httpbin", "foo");

    // Nothing is connected as the pod's sidecar: the wait times out and says which sidecar and why.
    let timed_out = c.run(&["wait", "--timeout", "1s"]);
    assert_eq!(timed_out.code, 1, "{}", timed_out.stdout);
    assert!(
        timed_out.stderr.starts_with(&format!(
            "error: timed out after 1s waiting for the configuration to reach the sidecars: 1 sidecar(s) have not \
             acknowledged it: {pod}.foo (not connected: is the pod running? `ironmesh get pod {pod} -n foo`)"
        )),
        "{}",
        timed_out.stderr
    );

    // The sidecar's side of the stream, authenticated with a credential for exactly this pod.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let credentials = CredentialAuthority::load_or_create(&c.home.path().join("ca")).unwrap();
    // Credentials are bound to the pod object: the one in the store, by its uid.
    let pod_uid = c.ok(&[
        "get",
        "pod",
        &pod,
        "-n",
        "foo",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let token = credentials.issue(
        &PodClaims {
            namespace: "foo".into(),
            service_account: "default".into(),
            pod: pod.clone(),
            pod_uid: pod_uid.trim().to_owned(),
        },
        Duration::from_secs(600),
    );
    let address = format!("unix://{}", c.home.path().join("run/xds.sock").display());
    let sidecar = ConfigClient::spawn(ConfigClientOptions::new(
        address.parse().unwrap(),
        format!("{pod}.foo"),
        TokenSource::Static(token),
    ));
    let synced = c.run(&["wait", "--timeout", "20s"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert!(
        synced
            .stdout
            .starts_with("sidecars in sync: 1 changed and acknowledged (1 sidecars"),
        "{}",
        synced.stdout
    );

    // apply --wait returns after the ACK: the sidecar already holds STRICT when it does, with no sleep.
    let strict = samples().join("default-mesh-policy.yaml");
    let applied = c.run(&[
        "apply",
        "-f",
        strict.to_str().unwrap(),
        "--wait",
        "--timeout",
        "20s",
    ]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(
        applied.stdout.starts_with(
            "meshpolicy.authentication.istio.io/default configured\nsidecars in sync: 1 changed"
        ),
        "{}",
        applied.stdout
    );
    let held = sidecar.config().borrow().clone().expect("a configuration");
    assert_eq!(
        held.config.workload.as_ref().map(|w| w.default_mode()),
        Some(ServerMode::Strict)
    );
    // `wait KIND NAME` for a change already everywhere returns at once.
    c.ok(&["wait", "meshpolicy", "default"]);

    // The sidecar goes away: the next change cannot reach it, and apply --wait says so after its timeout.
    drop(sidecar);
    let rule = samples().join("all-internal-traffic.yml");
    let unreached = c.run(&[
        "apply",
        "-f",
        rule.to_str().unwrap(),
        "--wait",
        "--timeout",
        "500ms",
    ]);
    assert_eq!(unreached.code, 1);
    assert_eq!(
        unreached.stdout,
        "destinationrule.networking.istio.io/default created\n"
    );
    assert!(
        unreached
            .stderr
            .contains(&format!("{pod}.foo (not connected")),
        "{}",
        unreached.stderr
    );
    let bad = c.run(&["wait", "--timeout", "soon"]);
    assert_eq!(
        (bad.code, bad.stderr.as_str()),
        (
            1,
            "error: \"soon\" is not a duration: use e.g. 30s, 2m, 500ms\n"
        )
    );
}

/// A mistyped pod or host is an error with kubectl's NotFound wording, and a pod without a sidecar is said
/// in words (not as a file path).
#[test]
fn unknown_pods_and_hosts_are_not_found_errors() {
    let c = Cluster::up();
    c.ok(&["create", "ns", "foo"]);
    c.ok(&["create", "ns", "legacy"]);
    let injected = c.bash("$IM apply -f <($IM kube-inject -f samples/httpbin/httpbin.yaml) -n foo");
    assert_eq!(injected.code, 0, "{}", injected.stderr);
    c.ok(&[
        "apply",
        "-f",
        samples().join("sleep/sleep.yaml").to_str().unwrap(),
        "-n",
        "legacy",
    ]);
    let httpbin = format!("{}.foo", pod_of(&c, "httpbin", "foo"));
    let legacy_sleep = pod_of(&c, "sleep", "legacy");
    let no_sidecar = format!(
        "error: pod \"{legacy_sleep}\" in namespace \"legacy\" has no sidecar, so it holds no mesh \
         certificate; apply it through `ironmesh kube-inject` (or label the namespace \
         istio-injection=enabled) to give it one\n"
    );
    let cases: [(&[&str], &str); 7] = [
        (
            &["tls-check", "httpbin.fo"],
            "Error from server (NotFound): pods \"httpbin\" not found, and no service host matches \"httpbin.fo\"\n",
        ),
        (
            &["tls-check", "sleep-nope", "-n", "foo"],
            "Error from server (NotFound): pods \"sleep-nope\" not found, and no service host matches \"sleep-nope\"\n",
        ),
        (
            &["tls-check", &httpbin, "nothing.foo"],
            "Error from server (NotFound): services \"nothing.foo\" not found\n",
        ),
        (
            &["tls-check", "sleep-nope.foo", "httpbin.foo"],
            "Error from server (NotFound): pods \"sleep-nope\" not found\n",
        ),
        (
            &["authz", "check", "sleep-nope", "-n", "foo"],
            "Error from server (NotFound): pods \"sleep-nope\" not found\n",
        ),
        (
            &["proxy-config", "secret", "sleep-nope", "-n", "foo"],
            "Error from server (NotFound): pods \"sleep-nope\" not found\n",
        ),
        (
            &["proxy-config", "secret", &legacy_sleep, "-n", "legacy"],
            &no_sidecar,
        ),
    ];
    for (args, expected) in cases {
        let ran = c.run(args);
        assert_eq!(
            (ran.code, ran.stderr.as_str(), ran.stdout.as_str()),
            (1, expected, ""),
            "ironmesh {args:?}"
        );
    }
    // A known host still answers.
    assert!(
        c.ok(&["tls-check", "httpbin.foo"])
            .contains("httpbin.foo.svc.cluster.local:8000")
    );
}
