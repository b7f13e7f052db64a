//! Varnish Cache (Debian's package, 7.x) as a second CDN in front of an origin,
//! configured by `tests/cdn/varnish.vcl`: keyed on the URL alone like the CloudFront
//! cache policy, objects kept past their lifetime to be revalidated with their ETag.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VCL: &str = include_str!("varnish.vcl");

/// What varnishd prints once its cache process runs.
const STARTED: &str = "Child launched OK";

/// A running varnishd with an empty cache; stopped when dropped.
#[derive(Debug)]
pub struct Varnish {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Varnish {
    /// Starts varnishd in front of `origin`, sending `secret` in `X-Origin-Verify`.
    pub fn start(origin: SocketAddr, secret: &str) -> Self {
        assert!(
            !secret.contains("\"}"),
            "a VCL long string cannot hold the secret"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = free_port();
        let vcl = VCL
            .replace("@ORIGIN_HOST@", &origin.ip().to_string())
            .replace("@ORIGIN_PORT@", &origin.port().to_string())
            .replace("@SECRET@", secret);
        let vcl_path = dir.path().join("varnish.vcl");
        std::fs::write(&vcl_path, vcl).expect("write varnish.vcl");
        let log = std::fs::File::create(dir.path().join("varnishd.log")).expect("log file");
        let child = Command::new("varnishd")
            // In the foreground, so that dropping the child stops it; the cache process
            // it starts ends with it.
            .arg("-F")
            // Its own working directory (shared memory log, compiled VCL): several
            // instances run side by side.
            .arg("-n")
            .arg(dir.path().join("work"))
            .arg("-a")
            .arg(addr.to_string())
            .arg("-f")
            .arg(&vcl_path)
            .args(["-s", "malloc,64m"])
            // No privilege separation: runs as whoever runs the tests, root in a
            // container included (the default jail would switch to the `varnish` user,
            // which cannot read the temporary directory).
            .args(["-j", "none"])
            // No management port: nothing talks to it.
            .args(["-T", "none"])
            // Small: a test sends a few dozen requests.
            .args(["-p", "vsl_space=1M"])
            .args(["-p", "thread_pools=1"])
            .args(["-p", "thread_pool_min=5"])
            .args(["-p", "thread_pool_max=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start varnishd ({error}); install it: apt-get install varnish")
            });
        let mut varnish = Varnish { addr, child, dir };
        // Compiling the VCL (with the C compiler) takes a second or two.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !varnish.log().contains(STARTED) || TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = varnish.child.try_wait() {
                panic!("varnishd exited with {status}:\n{}", varnish.log());
            }
            assert!(
                Instant::now() < deadline,
                "varnishd is not serving on {addr}:\n{}",
                varnish.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        varnish
    }

    /// What varnishd printed (start-up, VCL errors, a cache process that died).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("varnishd.log")).unwrap_or_default()
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}
