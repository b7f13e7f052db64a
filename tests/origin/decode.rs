//! Packages read the way devices read them: GNU tar, busybox tar, and Python's tarfile in
//! streaming mode (`r|gz`, which cannot seek and must see a complete gzip member); and,
//! for the gzip framing itself, Python's zlib and flate2's single-member decoder with a
//! tar reader written here.

use std::io::Read;
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
    tar_command(body, &["tar"], &["--numeric-owner", "--full-time", "-tvzf"])
}

/// Lists and extracts `body` with busybox tar, the tar (and gunzip) of small devices;
/// `Err` holds its complaint.
pub fn busybox_tar(body: &[u8]) -> Result<Vec<Member>, String> {
    tar_command(body, &["busybox", "tar"], &["--numeric-owner", "-tvzf"])
}

/// Lists `body` with `tar list_flags <archive>`, then extracts it with
/// `tar -xzf <archive> -C <dir>`, where `tar` is the command line `tar`; GNU and busybox
/// tar both list as `-rw-r--r-- 0/0  65536 1970-01-01 00:00:00 os_armv8_1.1.0`.
fn tar_command(body: &[u8], tar: &[&str], list_flags: &[&str]) -> Result<Vec<Member>, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = write_body(dir.path(), body);
    let (program, subcommand) = tar.split_first().expect("a command");
    let needed = format!("run {program} (GNU tar and busybox are needed: see scripts/test.sh)");
    let listing = Command::new(program)
        .args(subcommand)
        .args(list_flags)
        .arg(&archive)
        .env("TZ", "UTC")
        .output()
        .expect(&needed);
    if !listing.status.success() {
        return Err(String::from_utf8_lossy(&listing.stderr).into_owned());
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("create dir");
    let extract = Command::new(program)
        .args(subcommand)
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .output()
        .expect(&needed);
    if !extract.status.success() {
        return Err(String::from_utf8_lossy(&extract.stderr).into_owned());
    }
    let listing = String::from_utf8(listing.stdout).expect("UTF-8 listing");
    let members = listing.lines().map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 6, "unexpected {tar:?} listing line {line:?}");
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
    let stdout = run_python(PYTHON_READER, body)?;
    type Row = (String, u64, String, u32, u64, u64, u64);
    let rows: Vec<Row> = serde_json::from_slice(&stdout).expect("JSON from python");
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

const ZLIB_ONE_MEMBER: &str = r#"
import sys, zlib
data = sys.stdin.buffer.read()
inflater = zlib.decompressobj(31)
out = inflater.decompress(data) + inflater.flush()
if not inflater.eof:
    sys.exit("the gzip member does not end")
if inflater.unused_data:
    sys.exit(f"{len(inflater.unused_data)} bytes after the first gzip member")
sys.stdout.buffer.write(out)
"#;

/// The tar inside `body` as Python's zlib inflates it with gzip framing (`wbits=31`,
/// which checks the trailer's CRC-32 and length): `Err` unless `body` is exactly one
/// gzip member, complete, with nothing after it.
pub fn zlib_one_member(body: &[u8]) -> Result<Vec<u8>, String> {
    run_python(ZLIB_ONE_MEMBER, body)
}

/// The tar inside `body` as flate2's single-member gzip decoder inflates it (it checks
/// the trailer); `Err` also when bytes follow the member. `bufread::GzDecoder` is the
/// decoder `read::GzDecoder` wraps around a `BufReader`; over a slice it shows what it
/// left unread.
pub fn flate2_one_member(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = flate2::bufread::GzDecoder::new(body);
    let mut tar = Vec::new();
    decoder
        .read_to_end(&mut tar)
        .map_err(|error| format!("flate2 GzDecoder: {error}"))?;
    match decoder.into_inner().len() {
        0 => Ok(tar),
        left => Err(format!("{left} bytes after the first gzip member")),
    }
}

const BLOCK: usize = 512;

/// A tar header field holding an octal number, NUL- or space-terminated.
fn octal(field: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(field).map_err(|_| format!("field {field:?} is not ASCII"))?;
    let digits = text.trim_matches(|c| c == '\0' || c == ' ');
    u64::from_str_radix(digits, 8).map_err(|_| format!("field {text:?} is not octal"))
}

/// A NUL-terminated tar header string.
fn text(field: &[u8]) -> Result<&str, String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).map_err(|_| format!("field {field:?} is not UTF-8"))
}

/// The members of an uncompressed ustar stream of regular files, which must end with
/// exactly its two zero blocks; headers, checksums and padding are checked.
pub fn read_tar(tar: &[u8]) -> Result<Vec<Member>, String> {
    let mut members = Vec::new();
    let mut at = 0;
    loop {
        let header = tar
            .get(at..at + BLOCK)
            .ok_or_else(|| format!("the tar ends at {at} without its end blocks"))?;
        if header.iter().all(|&b| b == 0) {
            let rest = &tar[at..];
            if rest.len() != 2 * BLOCK || rest.iter().any(|&b| b != 0) {
                return Err(format!(
                    "the tar ends with {} bytes from {at}, not two zero blocks",
                    rest.len()
                ));
            }
            return Ok(members);
        }
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if octal(&header[148..156])? != sum {
            return Err(format!("bad header checksum at {at}"));
        }
        if &header[257..265] != b"ustar\x0000" {
            return Err(format!(
                "not a ustar header at {at}: {:?}",
                &header[257..265]
            ));
        }
        if !matches!(header[156], b'0' | 0) {
            return Err(format!("entry type {:?} at {at}", char::from(header[156])));
        }
        let (prefix, name) = (text(&header[345..500])?, text(&header[..100])?);
        let name = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let size = octal(&header[124..136])?;
        let start = at + BLOCK;
        let len = usize::try_from(size).map_err(|_| format!("{name}: size {size}"))?;
        let (end, next) = (start + len, start + len.div_ceil(BLOCK) * BLOCK);
        let content = tar
            .get(start..end)
            .ok_or_else(|| format!("{name}: the tar ends inside its data"))?;
        let padding = tar
            .get(end..next)
            .ok_or_else(|| format!("{name}: the tar ends inside its padding"))?;
        if padding.iter().any(|&b| b != 0) {
            return Err(format!("{name}: padding is not zero"));
        }
        members.push(Member {
            size,
            md5: hex::encode(Md5::digest(content)),
            mode: u32::try_from(octal(&header[100..108])? & 0o7777).expect("12 bits"),
            uid: octal(&header[108..116])?,
            gid: octal(&header[116..124])?,
            mtime: octal(&header[136..148])?,
            name,
        });
        at = next;
    }
}

/// Every decoder's view of a package that must be one complete gzip member of a valid
/// tar: GNU tar, busybox tar, Python's tarfile, Python's zlib and flate2 (with
/// [`read_tar`]) must all agree.
pub fn decode_all(body: &[u8]) -> Vec<Member> {
    let members = decode_both(body);
    let busybox = busybox_tar(body).unwrap_or_else(|error| panic!("busybox tar failed: {error}"));
    assert_eq!(busybox, members, "busybox tar and GNU tar disagree");
    let zlib = zlib_one_member(body).unwrap_or_else(|error| panic!("Python zlib: {error}"));
    let flate2 = flate2_one_member(body).unwrap_or_else(|error| panic!("flate2: {error}"));
    assert!(
        zlib == flate2,
        "Python zlib and flate2 inflate different bytes"
    );
    let read = read_tar(&flate2).unwrap_or_else(|error| panic!("flate2's tar: {error}"));
    assert_eq!(read, members, "flate2 + read_tar and GNU tar disagree");
    members
}

/// Runs a Python script with `body` on its stdin; its stdout, or `Err` with its stderr.
fn run_python(script: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = write_body(dir.path(), body);
    let output = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::from(
            std::fs::File::open(&archive).expect("open package"),
        ))
        .output()
        .expect("run python3 (Python 3 is needed)");
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
