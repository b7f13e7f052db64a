//! The embedded store: a directory holding `rules.json` (the current release of each app
//! and channel, as the AWS sample's table holds them), `history.json` (every release
//! published) and `objects/<key>`.
//!
//! Every write goes to a temporary file in the same directory, is synced, and is then
//! renamed into place, so a reader (the origin) sees the old file or the new one, never
//! a torn one. Writers of the rules take an exclusive lock on `.lock` and check what
//! they replace under it, so that two `seed` runs never lose each other's changes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::SeekFrom;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fleetpack_resolver::{ObjectLocation, Rule, StoredRules};
use tokio::io::AsyncSeekExt;

use crate::digest::digest_file;
use crate::{ObjectDigests, Progress, RulesStamp, Store, StoreError, StoreObject};

const RULES_FILE: &str = "rules.json";
const HISTORY_FILE: &str = "history.json";
const OBJECTS_DIR: &str = "objects";
const TMP_DIR: &str = "tmp";
const LOCK_FILE: &str = ".lock";

/// A store in a local directory; see the module documentation for its layout.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens the store at `root`, creating the directory layout when it is missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in [root.join(OBJECTS_DIR), root.join(TMP_DIR)] {
            fs::create_dir_all(&dir).map_err(StoreError::io("cannot create directory", &dir))?;
        }
        Ok(LocalStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn rules_path(&self) -> PathBuf {
        self.root.join(RULES_FILE)
    }

    fn history_path(&self) -> PathBuf {
        self.root.join(HISTORY_FILE)
    }

    /// The file of an object. Keys are checked by `ObjectLocation::parse` to be relative
    /// paths without `.` or `..` segments, so the result stays below `objects/`.
    fn object_path(&self, object: &ObjectLocation) -> PathBuf {
        self.root.join(OBJECTS_DIR).join(&object.key)
    }

    /// Opens an object's file and reads its length.
    async fn open_file(
        &self,
        object: &ObjectLocation,
    ) -> Result<(tokio::fs::File, u64), StoreError> {
        let path = self.object_path(object);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingObject {
                    key: object.key.clone(),
                });
            }
            Err(error) => return Err(StoreError::io("cannot open", path)(error)),
        };
        let len = file
            .metadata()
            .await
            .map_err(StoreError::io("cannot read metadata of", &path))?
            .len();
        Ok((file, len))
    }

    fn read_rules(path: &Path) -> Result<Vec<Rule>, StoreError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::io("cannot read rules file", path)(error)),
        };
        serde_json::from_slice(&text).map_err(|source| StoreError::BadRulesFile {
            path: path.to_owned(),
            source,
        })
    }

    fn read_stored(&self) -> Result<StoredRules, StoreError> {
        Ok(StoredRules {
            current: Self::read_rules(&self.rules_path())?,
            history: Self::read_rules(&self.history_path())?,
        })
    }

    /// Runs `change` on the rules file at `path` under the writers' lock and writes
    /// what it leaves, sorted by app, channel and version.
    fn change_rules(
        &self,
        path: &Path,
        change: impl FnOnce(&mut Vec<Rule>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let lock_path = self.root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(StoreError::io("cannot open lock file", &lock_path))?;
        lock.lock()
            .map_err(StoreError::io("cannot lock", &lock_path))?;
        let mut rules = Self::read_rules(path)?;
        change(&mut rules)?;
        rules.sort_by(|a, b| {
            (&a.app, &a.channel, &a.version).cmp(&(&b.app, &b.channel, &b.version))
        });
        let mut json =
            serde_json::to_vec_pretty(&rules).map_err(|source| StoreError::BadRulesFile {
                path: path.to_owned(),
                source,
            })?;
        json.push(b'\n');
        self.write_atomically(path, |file| file.write_all(&json))
    }

    fn put_rule_blocking(&self, rule: Rule, expected: Option<&Rule>) -> Result<(), StoreError> {
        self.change_rules(&self.rules_path(), |rules| {
            let slot = rules
                .iter()
                .position(|other| other.is(&rule.app, &rule.channel));
            if slot.map(|at| &rules[at]) != expected {
                return Err(StoreError::Conflict {
                    app: rule.app.clone(),
                    channel: rule.channel.clone(),
                });
            }
            match slot {
                Some(at) => rules[at] = rule,
                None => rules.push(rule),
            }
            Ok(())
        })
    }

    fn put_release_blocking(&self, release: Rule) -> Result<(), StoreError> {
        self.change_rules(&self.history_path(), |history| {
            let slot = history.iter().position(|other| {
                other.is(&release.app, &release.channel) && other.version == release.version
            });
            match slot {
                Some(at) if history[at].md5 != release.md5 => Err(StoreError::OtherBytes {
                    app: release.app.clone(),
                    channel: release.channel.clone(),
                    version: release.version.clone(),
                }),
                Some(at) => {
                    history[at] = release;
                    Ok(())
                }
                None => {
                    history.push(release);
                    Ok(())
                }
            }
        })
    }

    fn put_object_blocking(
        &self,
        object: &ObjectLocation,
        source: &Path,
    ) -> Result<(), StoreError> {
        let target = self.object_path(object);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(StoreError::io("cannot create directory", parent))?;
        }
        let mut input = File::open(source).map_err(StoreError::io("cannot open", source))?;
        self.write_atomically(&target, |file| io::copy(&mut input, file).map(drop))
    }

    /// Writes a temporary file with `fill`, syncs it and renames it to `target`.
    fn write_atomically(
        &self,
        target: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let tmp_dir = self.root.join(TMP_DIR);
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(StoreError::io(
            "cannot create a temporary file in",
            &tmp_dir,
        ))?;
        fill(tmp.as_file_mut())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(StoreError::io("cannot write", tmp.path()))?;
        tmp.persist(target)
            .map_err(|error| StoreError::io("cannot rename into place", target)(error.error))?;
        if let Some(parent) = target.parent() {
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(StoreError::io("cannot sync directory", parent))?;
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local store at {}", self.root.display())
    }

    async fn load_rules(&self) -> Result<StoredRules, StoreError> {
        let store = self.clone();
        blocking(move || store.read_stored()).await
    }

    async fn rules_stamp(&self) -> Result<Option<RulesStamp>, StoreError> {
        // Every write renames a new file into place, so the inode changes with each one.
        let mut stamp = String::new();
        for path in [self.rules_path(), self.history_path()] {
            match tokio::fs::metadata(&path).await {
                Ok(meta) => stamp.push_str(&format!(
                    "{}:{}:{}:{};",
                    meta.dev(),
                    meta.ino(),
                    meta.mtime_nsec(),
                    meta.len()
                )),
                Err(error) if error.kind() == io::ErrorKind::NotFound => stamp.push_str("absent;"),
                Err(error) => return Err(StoreError::io("cannot read rules file", path)(error)),
            }
        }
        Ok(Some(stamp))
    }

    async fn open_object(&self, object: &ObjectLocation) -> Result<StoreObject, StoreError> {
        let (file, len) = self.open_file(object).await?;
        Ok(StoreObject::file(len, file.into_std().await))
    }

    async fn open_object_range(
        &self,
        object: &ObjectLocation,
        offset: u64,
        len: u64,
    ) -> Result<StoreObject, StoreError> {
        let (mut file, actual) = self.open_file(object).await?;
        if offset.checked_add(len).is_none_or(|end| end > actual) {
            return Err(StoreError::ShortObject {
                key: object.key.clone(),
                wanted: offset.saturating_add(len),
                actual,
            });
        }
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(StoreError::io("cannot seek in", self.object_path(object)))?;
        Ok(StoreObject::file(len, file.into_std().await))
    }

    fn location(&self, key: &str) -> ObjectLocation {
        ObjectLocation {
            bucket: None,
            key: key.to_owned(),
        }
    }

    async fn object_md5(&self, object: &ObjectLocation) -> Result<Option<String>, StoreError> {
        let path = self.object_path(object);
        blocking(move || match digest_file(&path) {
            Ok(digests) => Ok(Some(digests.md5)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::io("cannot read", path)(error)),
        })
        .await
    }

    async fn put_object(
        &self,
        object: &ObjectLocation,
        source: PathBuf,
        digests: &ObjectDigests,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        let object = object.clone();
        blocking(move || store.put_object_blocking(&object, &source)).await?;
        progress(digests.size);
        Ok(())
    }

    async fn put_rule(&self, rule: Rule, expected: Option<&Rule>) -> Result<(), StoreError> {
        let (store, expected) = (self.clone(), expected.cloned());
        blocking(move || store.put_rule_blocking(rule, expected.as_ref())).await
    }

    async fn missing_objects(
        &self,
        objects: Vec<ObjectLocation>,
    ) -> Result<HashSet<ObjectLocation>, StoreError> {
        let store = self.clone();
        blocking(move || {
            let mut missing = HashSet::new();
            for object in objects {
                let path = store.object_path(&object);
                match fs::metadata(&path) {
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {
                        missing.insert(object);
                    }
                    Err(error) => return Err(StoreError::io("cannot look up", path)(error)),
                }
            }
            Ok(missing)
        })
        .await
    }

    async fn put_release(&self, release: Rule) -> Result<(), StoreError> {
        let store = self.clone();
        blocking(move || store.put_release_blocking(release)).await
    }
}
