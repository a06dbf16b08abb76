//! Saving pictures and maps from the window: atomically (a temporary file in the same folder,
//! then a rename), so a full disk or a crash never leaves half a file under the real name.

use std::path::{Path, PathBuf};

use image::RgbaImage;

use crate::explain::Map;

/// Writes `bytes` to `path` atomically; the error names the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::io::write_atomically(path, bytes)
        .map_err(|e| format!("{}: cannot save: {e}", path.display()))
}

/// PNG bytes of a picture.
pub fn png_bytes(img: &RgbaImage) -> Result<Vec<u8>, String> {
    crate::render::png_bytes(img).map_err(|e| e.to_string())
}

/// `.npy` bytes (float32, C order) of a map `[h, w]`.
pub fn npy_bytes(map: &Map) -> Result<Vec<u8>, String> {
    crate::io::npy_bytes(&[map.height(), map.width()], map.data())
}

/// Saves the overlay as `<dir>/<stem>.<method>.png` and the map as `.npy`; returns both paths.
pub fn save_explanation(
    dir: &Path,
    stem: &str,
    method: &str,
    overlay: &RgbaImage,
    map: &Map,
) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the folder: {e}", dir.display()))?;
    let (png, npy) = crate::io::explanation_paths(dir, stem, method);
    write_atomically(&png, &png_bytes(overlay)?)?;
    write_atomically(&npy, &npy_bytes(map)?)?;
    Ok((png, npy))
}
