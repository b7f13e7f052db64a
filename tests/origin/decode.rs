//! Packages read the way devices read them: GNU tar, and Python's tarfile in streaming
//! mode (`r|gz`, which cannot seek and must see a complete gzip member).

use std::path::Path;
use std::process::{Command, Stdio};

use md5::{Digest, Md5};

/// One tar member as a decoder reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub size: u64,
    pub md5: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Member {
    /// What every entry of a package must be: mode 644, owner 0:0, mtime 0.
    pub fn expected(name: &str, content: &[u8]) -> Self {
        Member {
            name: name.to_owned(),
            size: content.len() as u64,
            md5: hex::encode(Md5::digest(content)),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }
}

fn write_body(dir: &Path, body: &[u8]) -> std::path::PathBuf {
    let path = dir.join("ota-package.tar.gz");
    std::fs::write(&path, body).expect("write package");
    path
}

/// Lists and extracts `body` with GNU tar; `Err` holds tar's complaint.
pub fn gnu_tar(body: &[u8]) -> Result<Vec<Member>, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = write_body(dir.path(), body);
    let listing = Command::new("tar")
        .args(["--numeric-owner", "--full-time", "-tvzf"])
        .arg(&archive)
        .env("TZ", "UTC")
        .output()
        .expect("run tar (GNU tar is needed)");
    if !listing.status.success() {
        return Err(String::from_utf8_lossy(&listing.stderr).into_owned());
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("create dir");
    let extract = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .output()
        .expect("run tar");
    if !extract.status.success() {
        return Err(String::from_utf8_lossy(&extract.stderr).into_owned());
    }
    let listing = String::from_utf8(listing.stdout).expect("UTF-8 listing");
    let members = listing.lines().map(|line| {
        // -rw-r--r-- 0/0  65536 1970-01-01 00:00:00 os_armv8_1.1.0
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 6, "unexpected tar listing line {line:?}");
        let (uid, gid) = fields[1].split_once('/').expect("uid/gid");
        let mode = match fields[0] {
            "-rw-r--r--" => 0o644,
            other => panic!("unexpected type or mode {other} in {line:?}"),
        };
        let mtime = match (fields[3], fields[4]) {
            ("1970-01-01", "00:00:00") => 0,
            _ => panic!("unexpected mtime in {line:?}"),
        };
        let name = fields[5];
        let content = std::fs::read(out.join(name)).expect("extracted file");
        assert_eq!(
            fields[2].parse::<usize>().ok(),
            Some(content.len()),
            "{line}"
        );
        Member {
            name: name.to_owned(),
            size: content.len() as u64,
            md5: hex::encode(Md5::digest(&content)),
            mode,
            uid: uid.parse().expect("uid"),
            gid: gid.parse().expect("gid"),
            mtime,
        }
    });
    Ok(members.collect())
}

const PYTHON_READER: &str = r#"
import hashlib, json, sys, tarfile
members = []
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz") as tar:
    for m in tar:
        assert m.isfile(), f"{m.name} is not a regular file"
        data = tar.extractfile(m).read()
        members.append([m.name, m.size, hashlib.md5(data).hexdigest(), m.mode, m.uid, m.gid, m.mtime])
json.dump(members, sys.stdout)
"#;

/// Reads `body` from stdin with Python's `tarfile` in `r|gz` mode; `Err` holds the traceback.
pub fn python_tarfile(body: &[u8]) -> Result<Vec<Member>, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = write_body(dir.path(), body);
    let output = Command::new("python3")
        .args(["-c", PYTHON_READER])
        .stdin(Stdio::from(
            std::fs::File::open(&archive).expect("open package"),
        ))
        .output()
        .expect("run python3 (Python 3 is needed)");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    type Row = (String, u64, String, u32, u64, u64, u64);
    let rows: Vec<Row> = serde_json::from_slice(&output.stdout).expect("JSON from python");
    Ok(rows
        .into_iter()
        .map(|(name, size, md5, mode, uid, gid, mtime)| Member {
            name,
            size,
            md5,
            mode,
            uid,
            gid,
            mtime,
        })
        .collect())
}

/// Both decoders' view of a package that must be complete and valid; they must agree.
pub fn decode_both(body: &[u8]) -> Vec<Member> {
    let tar = gnu_tar(body).unwrap_or_else(|error| panic!("GNU tar failed: {error}"));
    let python = python_tarfile(body).unwrap_or_else(|error| panic!("tarfile failed: {error}"));
    assert_eq!(tar, python, "GNU tar and Python tarfile disagree");
    tar
}
