//! The real `ironmesh` binary on Istio's validation: `analyze -f` (no control plane), `apply` printing
//! Istio's warnings as kubectl does and refusing Istio-invalid input, and `describe` naming the fields
//! that have no effect in ironmesh. The control plane runs API-only (`IRONMESH_NO_RUNTIME=1`, no root).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ironmesh");

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A home of its own; with a control plane when `up` ran, stopped (or killed) on drop.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        let mut child = Command::new(BIN)
            .args(args)
            .env("IRONMESH_HOME", self.dir.path().join("home"))
            .env("IRONMESH_NO_RUNTIME", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let output = child.wait_with_output().unwrap();
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Ran {
        self.run_with_stdin(args, None)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("home/run/control-plane.pid");
        let pid = std::fs::read_to_string(&pid_file).ok();
        if pid.is_some() {
            let _ = self.run(&["down"]);
        }
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok())
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

const CLEAN: &str = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: httpbin
  namespace: foo
spec:
  host: httpbin.foo.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
";

/// Valid for Istio, with one of its warnings (a deprecated outlier field) and fields ironmesh ignores.
const WARNS: &str = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: httpbin
  namespace: foo
spec:
  host: httpbin.foo.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 10
    outlierDetection:
      consecutiveErrors: 5
    tls:
      mode: ISTIO_MUTUAL
";

/// Invalid for Istio: two subsets with one name, and a connection pool without settings.
const INVALID: &str = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: httpbin
  namespace: foo
spec:
  host: httpbin.foo.svc.cluster.local
  trafficPolicy:
    connectionPool: {}
  subsets:
  - name: v1
  - name: v1
";

#[test]
fn analyze_checks_files_without_a_control_plane() {
    let home = Home::new();
    let clean = home.file("clean.yaml", CLEAN);
    let ran = home.run(&["analyze", "-f", &clean]);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(
        ran.stdout,
        format!("✔ No validation issues found when analyzing {clean}.\n")
    );

    let warns = home.file("warns.yaml", WARNS);
    let ran = home.run(&["analyze", "-f", &warns]);
    assert_eq!(
        ran.code, 0,
        "warnings alone pass: {}{}",
        ran.stdout, ran.stderr
    );
    assert!(
        ran.stdout.contains(&format!(
            "Warning: {warns}:13:26: spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.ends_with(&format!(
            "✔ No validation errors found when analyzing {warns} (1 warning).\n"
        )),
        "{}",
        ran.stdout
    );

    let invalid = home.file("invalid.yaml", INVALID);
    let ran = home.run(&["analyze", "-f", &clean, "-f", &invalid]);
    assert_eq!(ran.code, 1, "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains(&format!(
            "Error: {invalid}:9:21: spec.trafficPolicy.connectionPool: found an empty connection pool"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains(&format!("Error: {invalid}:12:11: spec.subsets[1].name: ")),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains(&format!(
            "✔ No validation issues found when analyzing {clean}.\n"
        )),
        "every file gets its verdict: {}",
        ran.stdout
    );
    assert!(
        ran.stdout.ends_with(&format!(
            "✘ Validation failed when analyzing {invalid}: 2 errors, 0 warnings; nothing was changed.\n"
        )),
        "{}",
        ran.stdout
    );
    // A dry check: no control plane was started for it.
    assert!(!home.dir.path().join("home/run/control-plane.pid").exists());

    let ran = home.run_with_stdin(&["analyze", "-f", "-"], Some(INVALID));
    assert_eq!(ran.code, 1, "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("Error: -:12:11: spec.subsets[1].name"),
        "{}",
        ran.stdout
    );
}

#[test]
fn apply_prints_istios_warnings_refuses_its_errors_and_describe_names_inert_fields() {
    let home = Home::new();
    common::build_control_plane();
    let up = home.run(&["up"]);
    assert_eq!(up.code, 0, "up failed: {}{}", up.stdout, up.stderr);
    let ns = home.run(&["create", "ns", "foo"]);
    assert_eq!(ns.code, 0, "{}", ns.stderr);

    let invalid = home.file("invalid.yaml", INVALID);
    let ran = home.run(&["apply", "-f", &invalid]);
    assert_eq!(ran.code, 1, "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "{invalid}:12:11: spec.subsets[1].name: found \"v1\" again"
        )),
        "{}",
        ran.stderr
    );
    let get = home.run(&["get", "destinationrules", "-n", "foo"]);
    assert!(
        !get.stdout.contains("httpbin"),
        "nothing stored: {}",
        get.stdout
    );

    let warns = home.file("warns.yaml", WARNS);
    let ran = home.run(&["apply", "-f", &warns]);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(
        ran.stdout,
        "destinationrule.networking.istio.io/httpbin created\n"
    );
    assert_eq!(
        ran.stderr,
        format!(
            "Warning: {warns}:13:26: spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead\n"
        )
    );

    let described = home.run(&["describe", "destinationrule", "httpbin", "-n", "foo"]);
    assert_eq!(described.code, 0, "{}", described.stderr);
    assert!(
        described.stdout.contains("No effect in ironmesh:\n  spec.trafficPolicy.connectionPool: stored and validated; ironmesh's proxies do not implement it\n  spec.trafficPolicy.outlierDetection: stored and validated"),
        "{}",
        described.stdout
    );
    assert!(
        !described.stdout.contains("spec.trafficPolicy.tls:"),
        "tls is acted on: {}",
        described.stdout
    );
}

/// A valid DENY policy that names only HTTP attributes: Istio stores it and warns that it denies all TCP
/// traffic in its scope (`ValidateAuthorizationPolicy`'s warning); `analyze` prints that warning at the
/// rule's position and still passes.
#[test]
fn analyze_prints_authorization_policy_warnings() {
    let home = Home::new();
    let policy = home.file(
        "deny-http.yaml",
        "apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-headers
  namespace: foo
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: [/headers]
",
    );
    let ran = home.run(&["analyze", "-f", &policy]);
    assert_eq!(
        ran.code, 0,
        "warnings alone pass: {}{}",
        ran.stdout, ran.stderr
    );
    assert!(
        ran.stdout.contains(&format!(
            "Warning: {policy}:9:5: spec.rules[0]: configured AuthorizationPolicy will deny all traffic to TCP ports under its scope"
        )),
        "{}",
        ran.stdout
    );
}
