//! The state directory `$IRONMESH_HOME` (default `/var/lib/ironmesh`) and the files the CLI uses in it.

use std::path::{Path, PathBuf};

pub(crate) const DEFAULT_HOME: &str = "/var/lib/ironmesh";

#[derive(Debug, Clone)]
pub(crate) struct Home {
    root: PathBuf,
}

impl Home {
    pub(crate) fn from_env() -> Home {
        let root = std::env::var_os("IRONMESH_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HOME));
        Home { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.run_dir().join("api.sock")
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.run_dir().join("control-plane.pid")
    }

    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub(crate) fn log_file(&self) -> PathBuf {
        self.logs_dir().join("control-plane.log")
    }

    pub(crate) fn mesh_options(&self) -> PathBuf {
        self.root.join("mesh.json")
    }

    pub(crate) fn read_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}
