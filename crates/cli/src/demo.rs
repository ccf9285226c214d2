//! `ironmesh demo`: the seed walkthrough, for real, on a local cluster of its own. Every step runs the
//! `ironmesh` command a user would type (shown with its output), then each phase's nine calls (every sleep
//! to every httpbin) are compared with the walkthrough's outcomes; any difference makes the demo fail.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::CliError;

const HTTPBIN_YAML: &str = include_str!("../../../samples/httpbin/httpbin.yaml");
const SLEEP_YAML: &str = include_str!("../../../samples/sleep/sleep.yaml");
// The walkthrough's own files, under its names (also what docs/WALKTHROUGH.md applies).
const MESH_POLICY_YAML: &str = include_str!("../../../samples/default-mesh-policy.yaml");
const DESTINATION_RULE_YAML: &str = include_str!("../../../samples/all-internal-traffic.yml");

const NAMESPACES: [&str; 3] = ["foo", "bar", "legacy"];
/// How long the cluster may take to serve every call with no policy.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `apply --wait` may take for a policy change to reach every sidecar it alters.
const WAIT_TIMEOUT: &str = "30s";

/// One phase of the walkthrough and what it expects of a call from `src` to `dst`.
#[derive(Clone, Copy)]
enum Phase {
    NoPolicy,
    StrictMeshPolicy,
    IstioMutualRule,
}

impl Phase {
    fn title(self) -> &'static str {
        match self {
            Phase::NoPolicy => "no policy",
            Phase::StrictMeshPolicy => "STRICT MeshPolicy",
            Phase::IstioMutualRule => "+ ISTIO_MUTUAL DestinationRule",
        }
    }

    /// `(http code, curl exit)` as the walkthrough shows it.
    fn expected(self, src: &str, dst: &str) -> (&'static str, i32) {
        let sidecar = |ns: &str| ns != "legacy";
        match (self, sidecar(src), sidecar(dst)) {
            (Phase::NoPolicy, _, _) => ("200", 0),
            (_, false, true) => ("000", 56),
            (_, false, false) => ("200", 0),
            (Phase::StrictMeshPolicy, true, true) => ("503", 0),
            (Phase::StrictMeshPolicy, true, false) => ("200", 0),
            (Phase::IstioMutualRule, true, true) => ("200", 0),
            (Phase::IstioMutualRule, true, false) => ("503", 0),
        }
    }
}

struct Demo {
    exe: PathBuf,
    home: PathBuf,
    files: PathBuf,
    sleep_pods: Vec<(String, String)>,
}

fn fail(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

impl Demo {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command.args(args).env("IRONMESH_HOME", &self.home);
        command
    }

    /// Runs `ironmesh ARGS`, prints it as typed and its output, and fails when it fails.
    fn step(&self, shown: &str, args: &[&str]) -> Result<String, CliError> {
        println!("$ {shown}");
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fail(format!("cannot run {}: {e}", self.exe.display())))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        print!("{stdout}");
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            return Err(fail(format!("`{shown}` failed ({})", output.status)));
        }
        Ok(stdout)
    }

    fn write_file(&self, name: &str, contents: &str) -> Result<String, CliError> {
        let path = self.files.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        Ok(path.display().to_string())
    }

    /// `ironmesh apply -f <(ironmesh kube-inject -f FILE) -n NS`, as the walkthrough types it.
    fn apply_injected(
        &self,
        file: &str,
        shown_file: &str,
        namespace: &str,
    ) -> Result<(), CliError> {
        let injected = self
            .command(&["kube-inject", "-f", file])
            .output()
            .map_err(|e| fail(format!("kube-inject: {e}")))?;
        if !injected.status.success() {
            return Err(fail(format!(
                "kube-inject -f {shown_file} failed: {}",
                String::from_utf8_lossy(&injected.stderr)
            )));
        }
        let name = format!(
            "injected/{namespace}-{}",
            Path::new(shown_file)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        );
        let injected_file = self.write_file(&name, &String::from_utf8_lossy(&injected.stdout))?;
        self.step(
            &format!("ironmesh apply -f <(ironmesh kube-inject -f {shown_file}) -n {namespace}"),
            &["apply", "-f", &injected_file, "-n", namespace],
        )?;
        Ok(())
    }

    /// The name of the sleep pod of `namespace`, once its Deployment has made it.
    fn sleep_pod(&self, namespace: &str) -> Result<String, CliError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let output = self
                .command(&[
                    "get",
                    "pod",
                    "-l",
                    "app=sleep",
                    "-n",
                    namespace,
                    "-o",
                    "jsonpath={.items..metadata.name}",
                ])
                .stderr(Stdio::null())
                .output()
                .map_err(|e| fail(e.to_string()))?;
            let name = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !name.is_empty() && !name.contains(' ') {
                return Ok(name);
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "expected one sleep pod in {namespace}, found {name:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `curl http://httpbin.DST:8000/ip` from the sleep pod of `src`: `(http code, curl exit)`.
    fn call(&self, src: &str, dst: &str) -> (String, i32) {
        let pod = self
            .sleep_pods
            .iter()
            .find(|(ns, _)| ns == src)
            .map(|(_, pod)| pod.as_str())
            .unwrap_or_default();
        let url = format!("http://httpbin.{dst}:8000/ip");
        let output = self
            .command(&[
                "exec",
                pod,
                "-n",
                src,
                "-c",
                "sleep",
                "--",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "5",
                &url,
                "-w",
                "%{http_code}",
            ])
            .stderr(Stdio::null())
            .output();
        match output {
            Ok(out) => {
                let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                (
                    if code.is_empty() { "none".into() } else { code },
                    out.status.code().unwrap_or(-1),
                )
            }
            Err(_) => ("none".into(), -1),
        }
    }

    /// Runs the nine calls of `phase`, prints them, and returns how many differ from the walkthrough.
    fn phase(&self, phase: Phase, table: &mut Vec<String>) -> usize {
        let mut misses = 0;
        for src in NAMESPACES {
            for dst in NAMESPACES {
                let (code, exit) = self.call(src, dst);
                let (want_code, want_exit) = phase.expected(src, dst);
                let ok = code == want_code && exit == want_exit;
                misses += usize::from(!ok);
                table.push(format!(
                    "{:<32} {:<32} {:<12} {:<10} {}",
                    phase.title(),
                    format!("sleep.{src} -> httpbin.{dst}"),
                    format!("{want_code}/{want_exit}"),
                    format!("{code}/{exit}"),
                    if ok { "ok" } else { "DIFFERS" }
                ));
            }
        }
        misses
    }

    fn wait_until_open(&self) -> Result<(), CliError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut closed = Vec::new();
            for src in NAMESPACES {
                for dst in NAMESPACES {
                    let (code, exit) = self.call(src, dst);
                    if (code.as_str(), exit) != ("200", 0) {
                        closed.push(format!(
                            "sleep.{src} -> httpbin.{dst}: HTTP {code}, curl exit {exit}{}",
                            curl_exit_meaning(exit)
                        ));
                    }
                }
            }
            if closed.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "not every sleep reached every httpbin within {}s; still failing:\n  {}\nsee {}/logs and `ironmesh get pods -A`",
                    READY_TIMEOUT.as_secs(),
                    closed.join("\n  "),
                    self.home.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// What the curl exit codes a pod-to-service call can end with mean, so a failed demo names its cause.
fn curl_exit_meaning(exit: i32) -> &'static str {
    match exit {
        6 => " (could not resolve the service name: the pod's /etc/hosts)",
        7 => " (connection refused)",
        28 => " (timed out; when resolving, the pod's /etc/hosts lacks the service)",
        52 => " (empty reply)",
        56 => " (connection reset)",
        _ => "",
    }
}

fn demo_home() -> Result<(PathBuf, bool), CliError> {
    if let Some(home) = std::env::var_os("IRONMESH_HOME").filter(|h| !h.is_empty()) {
        return Ok((PathBuf::from(home), false));
    }
    let base = std::env::temp_dir().join(format!("ironmesh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base)
        .map_err(|e| fail(format!("cannot create {}: {e}", base.display())))?;
    Ok((base, true))
}

/// Runs the walkthrough; `keep` leaves the cluster up afterwards.
pub(crate) fn run(keep: bool) -> Result<(), CliError> {
    let started = Instant::now();
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("cannot find the ironmesh binary: {e}")))?;
    let (home, temporary) = demo_home()?;
    let mut demo = Demo {
        exe,
        files: home.join("demo"),
        home,
        sleep_pods: Vec::new(),
    };
    println!(
        "# ironmesh demo: the mutual TLS walkthrough on a local cluster (IRONMESH_HOME={})\n",
        demo.home.display()
    );
    let result = walkthrough(&mut demo);
    if keep {
        println!(
            "\nThe cluster is still up. Explore it with:\n  export IRONMESH_HOME={}\n  ironmesh get pods -A",
            demo.home.display()
        );
    } else {
        let _ = demo
            .command(&["down"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // A failed run keeps its directory: the error points at its logs.
        if temporary && result.is_ok() {
            let _ = std::fs::remove_dir_all(&demo.home);
        }
    }
    println!("\ndemo finished in {:.1}s", started.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
    result
}

fn walkthrough(demo: &mut Demo) -> Result<(), CliError> {
    demo.step("ironmesh up", &["up"])?;
    let httpbin = demo.write_file("samples/httpbin/httpbin.yaml", HTTPBIN_YAML)?;
    let sleep = demo.write_file("samples/sleep/sleep.yaml", SLEEP_YAML)?;
    println!("\n## Provision foo and bar (with sidecars) and legacy (without)\n");
    for namespace in ["foo", "bar"] {
        demo.step(
            &format!("ironmesh create ns {namespace}"),
            &["create", "ns", namespace],
        )?;
        demo.apply_injected(&httpbin, "samples/httpbin/httpbin.yaml", namespace)?;
        demo.apply_injected(&sleep, "samples/sleep/sleep.yaml", namespace)?;
    }
    demo.step("ironmesh create ns legacy", &["create", "ns", "legacy"])?;
    demo.step(
        "ironmesh apply -f samples/httpbin/httpbin.yaml -n legacy",
        &["apply", "-f", &httpbin, "-n", "legacy"],
    )?;
    demo.step(
        "ironmesh apply -f samples/sleep/sleep.yaml -n legacy",
        &["apply", "-f", &sleep, "-n", "legacy"],
    )?;
    for namespace in NAMESPACES {
        let pod = demo.sleep_pod(namespace)?;
        demo.sleep_pods.push((namespace.to_owned(), pod));
    }
    // Every sidecar running with its configuration; then the calls (legacy has no sidecar to wait for).
    demo.step("ironmesh wait --timeout 90s", &["wait", "--timeout", "90s"])?;
    demo.wait_until_open()?;
    let bar_sleep = demo.sleep_pods[1].1.clone();
    println!("\n## Review the pods and services\n");
    demo.step(
        "ironmesh get pod -l app=sleep -n bar -o jsonpath={.items..metadata.name}",
        &[
            "get",
            "pod",
            "-l",
            "app=sleep",
            "-n",
            "bar",
            "-o",
            "jsonpath={.items..metadata.name}",
        ],
    )?;
    println!();
    demo.step(
        &format!("ironmesh get pods {bar_sleep} -n bar -o jsonpath='{{.spec.containers[*].name}}'"),
        &[
            "get",
            "pods",
            &bar_sleep,
            "-n",
            "bar",
            "-o",
            "jsonpath={.spec.containers[*].name}",
        ],
    )?;
    println!();
    demo.step(
        "ironmesh get services httpbin -o wide -n foo",
        &["get", "services", "httpbin", "-o", "wide", "-n", "foo"],
    )?;

    let mut table = Vec::new();
    let mut misses = demo.phase(Phase::NoPolicy, &mut table);

    println!("\n## Turn mutual TLS on for the whole mesh\n");
    demo.step(
        "ironmesh get policies.authentication.istio.io --all-namespaces",
        &[
            "get",
            "policies.authentication.istio.io",
            "--all-namespaces",
        ],
    )?;
    demo.step(
        "ironmesh get meshpolicies.authentication.istio.io",
        &["get", "meshpolicies.authentication.istio.io"],
    )?;
    let mesh_policy = demo.write_file("samples/default-mesh-policy.yaml", MESH_POLICY_YAML)?;
    demo.step(
        "ironmesh apply -f samples/default-mesh-policy.yaml --wait",
        &[
            "apply",
            "-f",
            &mesh_policy,
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ],
    )?;
    demo.step(
        "ironmesh tls-check httpbin.foo.svc.cluster.local",
        &["tls-check", "httpbin.foo.svc.cluster.local"],
    )?;
    misses += demo.phase(Phase::StrictMeshPolicy, &mut table);

    println!("\n## Let sidecar clients speak mTLS to every service in the cluster\n");
    let rule = demo.write_file("samples/all-internal-traffic.yml", DESTINATION_RULE_YAML)?;
    demo.step(
        "ironmesh apply -f samples/all-internal-traffic.yml --wait",
        &["apply", "-f", &rule, "--wait", "--timeout", WAIT_TIMEOUT],
    )?;
    demo.step(
        "ironmesh tls-check httpbin.foo.svc.cluster.local",
        &["tls-check", "httpbin.foo.svc.cluster.local"],
    )?;
    misses += demo.phase(Phase::IstioMutualRule, &mut table);

    println!(
        "\n## Results: curl http://httpbin.<dst>:8000/ip from each sleep (HTTP code / curl exit)\n"
    );
    println!(
        "{:<32} {:<32} {:<12} {:<10} RESULT",
        "PHASE", "CALL", "WALKTHROUGH", "IRONMESH"
    );
    for row in &table {
        println!("{row}");
    }
    println!(
        "\n{} of {} outcomes as in the walkthrough",
        table.len() - misses,
        table.len()
    );
    if misses == 0 {
        Ok(())
    } else {
        Err(fail(format!(
            "{misses} outcomes differ from the walkthrough (marked DIFFERS above)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_follow_the_walkthrough() {
        let count = |phase: Phase, want: (&str, i32)| {
            NAMESPACES
                .iter()
                .flat_map(|s| NAMESPACES.iter().map(move |d| (*s, *d)))
                .filter(|(s, d)| phase.expected(s, d) == want)
                .count()
        };
        assert_eq!(count(Phase::NoPolicy, ("200", 0)), 9);
        assert_eq!(
            count(Phase::StrictMeshPolicy, ("503", 0)),
            4,
            "sidecar to sidecar"
        );
        assert_eq!(
            count(Phase::StrictMeshPolicy, ("000", 56)),
            2,
            "legacy to sidecars"
        );
        assert_eq!(count(Phase::StrictMeshPolicy, ("200", 0)), 3);
        assert_eq!(count(Phase::IstioMutualRule, ("200", 0)), 5);
        assert_eq!(
            count(Phase::IstioMutualRule, ("503", 0)),
            2,
            "sidecars to legacy"
        );
        assert_eq!(count(Phase::IstioMutualRule, ("000", 56)), 2);
    }
}
