//! The state directory: the store, the priced events, the archive, and the lock that keeps
//! two writers apart.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::store::Store;

/// The state directory, opened for writing and locked for as long as this value lives.
pub struct State {
    dir: PathBuf,
    store: Store,
    _lock: File,
}

/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "creditd.sqlite";

impl State {
    /// Creates the state directory if needed, takes its lock (waiting for another writer to
    /// finish, and saying so on stderr), and opens the store.
    pub fn open(dir: &Path) -> anyhow::Result<State> {
        State::open_announced(dir, true)
    }

    /// Like [`State::open`]; `announce = false` waits for the lock without a word (the daemon's
    /// own jobs take turns all the time).
    pub fn open_announced(dir: &Path, announce: bool) -> anyhow::Result<State> {
        create_private_dir(dir)?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open the state lock {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                if announce {
                    eprintln!(
                        "waiting for another creditd to release {}",
                        lock_path.display()
                    );
                }
                lock.lock().with_context(|| {
                    format!("cannot take the state lock {}", lock_path.display())
                })?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e)
                    .with_context(|| format!("cannot take the state lock {}", lock_path.display()))
            }
        }
        let store = Store::open(&dir.join(STORE_FILE))?;
        Ok(State {
            dir: dir.to_path_buf(),
            store,
            _lock: lock,
        })
    }

    /// Opens the store of a state directory for reading; `None` if nothing was stored yet (no
    /// directory, no store, or a store whose tables are not created yet). Never creates or
    /// changes anything, and works in a directory the reader may not write.
    pub fn open_store_read_only(dir: &Path) -> anyhow::Result<Option<Store>> {
        let path = dir.join(STORE_FILE);
        let exists = path.try_exists().with_context(|| {
            format!(
                "cannot read the state directory {}: it must be readable (and searchable) by this user",
                dir.display()
            )
        })?;
        if !exists {
            return Ok(None);
        }
        let opened = Store::open_read_only(&path).and_then(|s| {
            let ready = s.has_reader_tables()?;
            Ok((s, ready))
        });
        let (store, ready) = match opened {
            Ok(x) => x,
            Err(e) => {
                // A store in write-ahead-log mode wants its shared-memory file, which a reader
                // cannot create in a directory it may not write. When no log is pending the
                // database file alone is complete and is read as it is.
                let wal = dir.join(format!("{STORE_FILE}-wal"));
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot read the store {} (its directory must be readable by this user)",
                            path.display()
                        )
                    });
                }
                let store = Store::open_immutable(&path)
                    .and_then(|s| {
                        let ready = s.has_reader_tables()?;
                        Ok((s, ready))
                    })
                    .with_context(|| {
                        format!(
                            "cannot read the store {}: {e:#} (it must be readable by this user)",
                            path.display()
                        )
                    })?;
                store
            }
        };
        if ready {
            store.ensure_current(&path)?;
        }
        Ok(ready.then_some(store))
    }

    /// Takes the writer lock of an existing state directory and opens its store so that
    /// reading changes no file (a dry run). `None` if nothing was stored yet.
    pub fn open_locked_read_only(dir: &Path) -> anyhow::Result<Option<(File, Store)>> {
        let path = dir.join(STORE_FILE);
        let lock_path = dir.join("lock");
        if !path.exists() || !lock_path.exists() {
            return Ok(None);
        }
        let lock = OpenOptions::new()
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open the state lock {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            eprintln!(
                "waiting for another creditd to release {}",
                lock_path.display()
            );
            lock.lock()
                .with_context(|| format!("cannot take the state lock {}", lock_path.display()))?;
        }
        // With the lock held nobody writes; when no write-ahead log is pending the database
        // file is complete and can be read as immutable, which creates no -wal/-shm files.
        let wal = dir.join(format!("{STORE_FILE}-wal"));
        let pending = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let store = if pending {
            Store::open_read_only(&path)?
        } else {
            Store::open_immutable(&path)?
        };
        store.ensure_current(&path)?;
        Ok(Some((lock, store)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }
}

/// The lock a daemon holds for its whole life: one daemon per state directory.
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Takes the daemon lock, or says which directory another daemon already runs on.
    pub fn acquire(dir: &Path) -> anyhow::Result<DaemonLock> {
        create_private_dir(dir)?;
        let path = dir.join("daemon.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the daemon lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DaemonLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another creditd daemon is already running on {} (it holds {})",
                dir.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot take the daemon lock {}", path.display()))
            }
        }
    }
}

/// Creates a directory (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))
}
