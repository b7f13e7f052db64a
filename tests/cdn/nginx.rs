//! nginx (Debian's package) as a CDN in front of an origin, configured by
//! `tests/cdn/nginx.conf` and a [`Keying`]. Shared by the CDN-in-the-loop tests and the
//! fleet simulation.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = include_str!("nginx.conf");

/// What nginx keys its cache on, and what becomes of a device's `If-None-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// The path, the query and `If-None-Match`, which is forwarded: the CloudFront cache
    /// policy from before the CDN's function moved a device's list into the query
    /// (`installed=`). An expired entry is fetched again in full.
    PathQueryAndIfNoneMatch,
    /// The path and query alone, like the CloudFront cache policy: a device's
    /// `If-None-Match` is not forwarded (nginx answers it from the cache when it names
    /// the cached ETag), and an expired entry is revalidated with its ETag.
    PathAndQuery,
}

impl Keying {
    /// The directives that fill `@KEYING@` in nginx.conf.
    fn directives(self) -> &'static str {
        match self {
            Keying::PathQueryAndIfNoneMatch => {
                r#"            proxy_cache_key "$uri?$args|$http_if_none_match";
            # A caching nginx drops conditional headers on the way to the origin; the
            # origin needs If-None-Match to leave out what the device has, as
            # CloudFront forwards the headers of its cache key.
            proxy_set_header If-None-Match $http_if_none_match;"#
            }
            Keying::PathAndQuery => {
                r#"            proxy_cache_key "$uri?$args";
            # A device's If-None-Match is not forwarded (a caching nginx drops
            # conditional headers), and an expired entry is refetched with
            # If-None-Match: <its ETag>; a 304 makes it fresh again, body kept. (Setting
            # If-None-Match here would replace that ETag.)
            proxy_cache_revalidate on;"#
            }
        }
    }
}

/// A running nginx with an empty cache; stopped when dropped.
#[derive(Debug)]
pub struct Cdn {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Cdn {
    /// Starts nginx in front of `origin`, sending `secret` in `X-Origin-Verify`, keyed
    /// as `keying` says.
    pub fn start(origin: SocketAddr, secret: &str, keying: Keying) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Started as root, nginx may run as `nobody`, which must write the cache.
        set_mode(dir.path(), 0o777);
        let addr = free_port();
        let config = CONFIG
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@LISTEN@", &addr.to_string())
            .replace("@ORIGIN@", &origin.to_string())
            .replace("@SECRET@", secret)
            .replace("@KEYING@", keying.directives());
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
