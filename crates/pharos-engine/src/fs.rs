//! Small file and network helpers every engine and the server share (one of each).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Writes `path` through a synced temporary file and a rename: never half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// The id of the installation whose data lives in `data_dir`: 8 random hex digits made
/// at the first start and kept in `<data_dir>/installation-id`.
pub fn installation_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("installation-id");
    if let Ok(id) = fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(id);
        }
    }
    fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 4];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(&path, id.as_bytes())?;
    Ok(id)
}
