//! The one way a Unix socket is bound: a socket file left by a crashed process is replaced, a live one is
//! refused (binding over it would silently steal the other process's clients).

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::HomeError;

/// Binds `path` as a non-blocking listener (ready for `tokio::net::UnixListener::from_std`). When the file
/// exists and a process accepts connections on it, fails with [`HomeError::SocketInUse`]; otherwise the
/// stale file is removed first. The parent directory is created if missing.
pub fn bind_unix(path: &Path) -> Result<UnixListener, HomeError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| HomeError::io("create", parent, e))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(HomeError::SocketInUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path)
            .map_err(|e| HomeError::io("remove the stale socket", path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| HomeError::io("bind", path, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| HomeError::io("configure", path, e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/api.sock");
        drop(bind_unix(&path).unwrap());
        assert!(path.exists(), "the listener's file stays after it closes");
        let listener = bind_unix(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        listener.set_nonblocking(false).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn a_live_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let first = bind_unix(&path).unwrap();
        let error = bind_unix(&path).unwrap_err();
        assert!(matches!(error, HomeError::SocketInUse { .. }), "{error}");
        assert!(error.to_string().contains("api.sock"), "{error}");
        // The first owner still gets its clients.
        let _client = UnixStream::connect(&path).unwrap();
        first.set_nonblocking(false).unwrap();
        first.accept().unwrap();
    }

    #[test]
    fn a_regular_file_in_the_way_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xds.sock");
        std::fs::write(&path, "left over").unwrap();
        bind_unix(&path).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(
            &std::fs::symlink_metadata(&path).unwrap().file_type()
        ));
    }
}
