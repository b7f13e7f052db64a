//! nginx (Debian's package) as a CDN in front of an origin, configured by
//! `tests/cdn/nginx.conf`. Shared by the CDN-in-the-loop tests and the fleet simulation.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = include_str!("nginx.conf");

/// A running nginx with an empty cache; stopped when dropped.
#[derive(Debug)]
pub struct Cdn {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Cdn {
    /// Starts nginx in front of `origin`, sending `secret` in `X-Origin-Verify`.
    pub fn start(origin: SocketAddr, secret: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Started as root, nginx may run as `nobody`, which must write the cache.
        set_mode(dir.path(), 0o777);
        let addr = free_port();
        let config = CONFIG
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@LISTEN@", &addr.to_string())
            .replace("@ORIGIN@", &origin.to_string())
            .replace("@SECRET@", secret);
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).expect("write nginx.conf");
        let error_log = dir.path().join("error.log");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start nginx ({error}); install it: apt-get install nginx")
            });
        let mut cdn = Cdn { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = cdn.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", cdn.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx is not listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cdn
    }

    /// What nginx wrote to its error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Cdn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}
