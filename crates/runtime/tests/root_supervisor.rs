//! ROOT-ONLY tests of the pod supervisor: init containers, pod environment, kill -9 restarting only that
//! container, unknown images, crash-loop backoff and restart policies. Need root; fail loudly without it.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::*;
use ironmesh_runtime::*;

#[tokio::test(flavor = "multi_thread")]
async fn root_kill_9_restarts_only_that_container() {
    let mut guard = ClusterGuard::new();
    let net = guard
        .cluster
        .add_pod("bar", "sleep-k", Ipv4Addr::new(198, 18, 0, 7))
        .expect("add pod");
    let mut spec = pod_spec(
        &guard,
        &net,
        vec![sleep_container("sleep"), sleep_container("ironmesh-proxy")],
    );
    spec.containers.push(ContainerSpec {
        name: "broken".into(),
        image: "nginx:1.25".into(),
        ..Default::default()
    });
    spec.containers.push(ContainerSpec {
        name: "env".into(),
        image: "x".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo pod=$POD_NAME; exec sleep 3650d".into(),
        ],
        ..Default::default()
    });
    spec.init_containers = vec![ContainerSpec {
        name: "init".into(),
        image: "x".into(),
        command: vec!["sh".into(), "-c".into(), "echo init-ran".into()],
        ..Default::default()
    }];
    let pod_dir = spec.pod_dir.clone();
    guard.pods.push(PodHandle::start(spec));
    let handle = &guard.pods[0];
    let first_pid = eventually("sleep to run", Duration::from_secs(10), || {
        running_pid(handle, "sleep")
    })
    .await;
    let proxy_pid = eventually(
        "the second container to run",
        Duration::from_secs(10),
        || running_pid(handle, "ironmesh-proxy"),
    )
    .await;
    eventually("the env container to log", Duration::from_secs(10), || {
        std::fs::read_to_string(log_path(&pod_dir, "env"))
            .ok()
            .filter(|l| l.contains("pod=sleep-k"))
    })
    .await;
    assert!(
        std::fs::read_to_string(log_path(&pod_dir, "init"))
            .unwrap()
            .contains("init-ran")
    );
    let status = handle.status();
    assert_eq!(
        status.init_containers[0].state,
        ContainerState::Terminated {
            exit_code: 0,
            signal: None,
            reason: "Completed".into(),
            started_at: match status.init_containers[0].state {
                ContainerState::Terminated { started_at, .. } => started_at,
                _ => unreachable!(),
            },
            finished_at: match status.init_containers[0].state {
                ContainerState::Terminated { finished_at, .. } => finished_at,
                _ => unreachable!(),
            },
        }
    );
    let broken = status
        .containers
        .iter()
        .find(|c| c.name == "broken")
        .unwrap();
    assert!(
        matches!(&broken.state, ContainerState::Waiting { reason, message } if reason == "ErrImagePull" && message.contains("nginx")),
        "unknown image must be a clear error on that container: {:?}",
        broken.state
    );
    let recorded = std::fs::read_to_string(pod_dir.join("pids/sleep.pid")).unwrap();
    assert!(
        recorded.starts_with(&format!("{first_pid} ")),
        "pid file {recorded:?}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = eventually(
        "sleep to restart after kill -9",
        Duration::from_secs(15),
        || {
            let status = handle.status();
            let sleep = status.containers.iter().find(|c| c.name == "sleep")?;
            (sleep.restart_count == 1 && matches!(sleep.state, ContainerState::Running { .. }))
                .then(|| sleep.clone())
        },
    )
    .await;
    assert_ne!(restarted.pid, Some(first_pid));
    assert!(matches!(
        restarted.last_state,
        Some(ContainerState::Terminated { exit_code: 137, .. })
    ));
    let status = handle.status();
    let proxy = status
        .containers
        .iter()
        .find(|c| c.name == "ironmesh-proxy")
        .unwrap();
    assert_eq!(
        (proxy.restart_count, proxy.pid),
        (0, Some(proxy_pid)),
        "the other container must not notice"
    );
    assert_eq!(status.restarts(), 1);
    let reasons: Vec<&str> = status.events.iter().map(|e| e.reason.as_str()).collect();
    for expected in [
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
        "BackOff",
        "Failed",
    ] {
        assert!(
            reasons.contains(&expected),
            "missing {expected} event in {reasons:?}"
        );
    }

    let handle = guard.pods.pop().unwrap();
    let final_status = handle.stop().await;
    assert!(final_status.events.iter().any(|e| e.reason == "Killing"));
    assert!(
        !pod_dir.join("pids/sleep.pid").exists(),
        "pid files are removed on stop"
    );
    let new_pid = restarted.pid.unwrap();
    assert!(
        !Path::new(&format!("/proc/{new_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{new_pid}/stat"))
                .unwrap()
                .contains(") Z ")
    );
    let id = guard.cluster.id().clone();
    drop(guard);
    assert_cluster_gone(&id, &[new_pid, proxy_pid]);
}

fn shell(name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "x".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn root_crash_loop_backoff_and_restart_policies() {
    let mut guard = ClusterGuard::new();
    let net = guard
        .cluster
        .add_pod("bar", "crasher", Ipv4Addr::new(198, 18, 0, 30))
        .expect("add pod");
    guard.pods.push(PodHandle::start(pod_spec(
        &guard,
        &net,
        vec![shell("crash", "echo boom; exit 3")],
    )));
    let handle = &guard.pods[0];
    let crashing = eventually(
        "CrashLoopBackOff after a restart",
        Duration::from_secs(10),
        || {
            let status = handle.status();
            (status.restarts() >= 1 && status.display_status() == "CrashLoopBackOff")
                .then_some(status)
        },
    )
    .await;
    let crash = &crashing.containers[0];
    assert!(
        matches!(crash.last_state, Some(ContainerState::Terminated { exit_code: 3, ref reason, .. }) if reason == "Error"),
        "last state {:?}",
        crash.last_state
    );
    assert!(
        crashing
            .events
            .iter()
            .any(|e| e.reason == "BackOff" && e.event_type == EventType::Warning)
    );
    let stopped = guard.pods.pop().unwrap().stop().await;
    assert!(!matches!(
        stopped.containers[0].state,
        ContainerState::Running { .. }
    ));

    // Never: a container that exits 0 completes the pod, and is not restarted.
    let done = guard
        .cluster
        .add_pod("bar", "once", Ipv4Addr::new(198, 18, 0, 31))
        .expect("add pod");
    let mut spec = pod_spec(&guard, &done, vec![shell("once", "exit 0")]);
    spec.restart_policy = RestartPolicy::Never;
    guard.pods.push(PodHandle::start(spec));
    let handle = &guard.pods[0];
    let finished = eventually("the pod to succeed", Duration::from_secs(10), || {
        let status = handle.status();
        (status.phase == PodPhase::Succeeded).then_some(status)
    })
    .await;
    assert_eq!(finished.containers[0].restart_count, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        handle.status().containers[0].restart_count,
        0,
        "Never must not restart"
    );
}
