//! What every layer writes to disk, in one place: atomic files, `.npy` arrays and the names of
//! an explanation's outputs. The bottom of the house beside `engine`: it imports nothing of
//! ours, so `models`, `render`, `train`, `cli` and `app` all write the same way.
//!
//! Atomic: the bytes go to a uniquely named temporary file in the target's folder, are synced,
//! and replace the target by a rename, after which the folder itself is synced. A crash, a kill
//! or a full disk never leaves half a file under the real name, and two writers of one path
//! (two threads, two processes) never share a temporary file: the last rename wins whole.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (see the module doc). The temporary file is removed when
/// anything fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy());
    // dot-prefixed so that folder scans (data sets, the window's lists) skip it
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Makes a rename inside `dir` durable (a no-op where folders cannot be opened, e.g. Windows).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// `.npy` bytes (float32, C order) of `data` with `shape`.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, String> {
    let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data.to_vec()).map_err(|e| {
        format!(
            "{} values do not make an array of shape {shape:?}: {e}",
            data.len()
        )
    })?;
    let mut out = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&a, &mut out)
        .map_err(|e| format!("cannot encode the .npy: {e}"))?;
    Ok(out)
}

/// Writes `data` of `shape` as a float32 `.npy` file, atomically; the error names the file.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), String> {
    let bytes = npy_bytes(shape, data).map_err(|e| format!("{}: {e}", path.display()))?;
    write_atomically(path, &bytes).map_err(|e| format!("{}: cannot write ({e})", path.display()))
}

/// The files of one explanation of image `stem` by `method` in `dir`: the overlay
/// `<stem>.<method>.png` and the map `<stem>.<method>.npy` (the command line and the window's
/// export both name them so).
pub fn explanation_paths(dir: &Path, stem: &str, method: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.{method}.png")),
        dir.join(format!("{stem}.{method}.npy")),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomically(&p, b"first").unwrap();
        write_atomically(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.bin")]);
    }

    #[test]
    fn two_threads_writing_one_path_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shared.bin");
        let payloads: Vec<Vec<u8>> = (0..2u8).map(|t| vec![t; 64 * 1024]).collect();
        std::thread::scope(|s| {
            for payload in &payloads {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomically(p, payload).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert!(payloads.contains(&got), "a mixed or partial file");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary files left"
        );
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/x.npy");
        let e = write_npy(&p, &[2], &[1.0, 2.0]).unwrap_err();
        assert!(e.contains("x.npy"), "{e}");
        assert!(npy_bytes(&[3], &[1.0]).is_err());
    }

    #[test]
    fn npy_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        write_npy(&p, &[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let a: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&p).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a[[1, 2]], 5.0);
    }
}
