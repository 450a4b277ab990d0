//! The inbox: which of its entries are access logs to read, opened without following links
//! or blocking on what is not a regular file, and hashed.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::classify;

/// The access-log entries of the inbox.
#[derive(Debug, Default)]
pub struct InboxListing {
    /// Regular files in name (byte) order: the name for IO, and its lossy text for display
    /// and the store.
    pub files: Vec<(OsString, String)>,
    /// Entries with an access-log name that are not regular files: (lossy name, kind).
    pub skipped: Vec<(String, &'static str)>,
}

/// Lists the inbox without following or opening anything: each entry's own type decides.
pub fn list_inbox(inbox: &Path) -> anyhow::Result<InboxListing> {
    let mut listing = InboxListing::default();
    let entries = std::fs::read_dir(inbox)
        .with_context(|| format!("cannot list the inbox {}", inbox.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list the inbox {}", inbox.display()))?;
        let os_name = entry.file_name();
        let name = os_name.to_string_lossy().into_owned();
        if classify(&name).is_none() {
            continue;
        }
        // The entry's own type (a symlink is a symlink, whatever it points to). An entry that
        // vanished since the listing is simply not there.
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        match entry_kind(file_type) {
            None => listing.files.push((os_name, name)),
            Some(kind) => listing.skipped.push((name, kind)),
        }
    }
    listing.files.sort();
    listing.skipped.sort();
    Ok(listing)
}

/// `None` for a regular file, else what the entry is.
fn entry_kind(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("symlink")
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_char_device() {
        Some("character device")
    } else {
        Some("special file")
    }
}

/// Opens an inbox file for reading only if it is a regular file: a symlink is not followed
/// and a FIFO put in its place since the listing does not block the run.
pub fn open_regular(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(kind) = entry_kind(meta.file_type()) {
        anyhow::bail!(
            "cannot read {}: a {kind}, not a regular file",
            path.display()
        );
    }
    Ok(file)
}

/// The SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
