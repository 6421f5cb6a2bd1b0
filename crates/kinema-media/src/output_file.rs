//! Writing an output file through FFmpeg: a safe URL for the path, and no
//! half-written file left behind when something fails.

use std::path::Path;

use crate::MediaError;

/// Creates (or truncates) `out`, lets `write` fill it through FFmpeg using the
/// URL it is given, and returns `write`'s result with the file's size. If
/// anything fails the file is removed again.
pub(crate) fn write_new_file<T>(
    out: &Path,
    write: impl FnOnce(&str) -> Result<T, MediaError>,
) -> Result<(T, u64), MediaError> {
    let url = ffmpeg_url(out)?;
    // Create the file ourselves first: a missing directory or a permission
    // problem then surfaces as a typed I/O error naming the path.
    std::fs::File::create(out).map_err(MediaError::io("creating", out))?;
    // FFmpeg's handles are closed when `write` returns (its writer is dropped).
    let result = write(&url).and_then(|value| {
        let bytes = std::fs::metadata(out)
            .map_err(MediaError::io("reading metadata of", out))?
            .len();
        Ok((value, bytes))
    });
    if result.is_err() {
        // Best effort: do not leave a truncated, unplayable file behind.
        let _ = std::fs::remove_file(out);
    }
    result
}

/// Turns a filesystem path into an FFmpeg URL that always means "this local
/// file" (a bare `pipe:1` or `http:x` would otherwise select a protocol).
pub(crate) fn ffmpeg_url(out: &Path) -> Result<String, MediaError> {
    let unsupported = |reason| MediaError::UnsupportedPath {
        path: out.to_path_buf(),
        reason,
    };
    let path = out.to_str().ok_or_else(|| unsupported("not valid UTF-8"))?;
    if path.is_empty() {
        return Err(unsupported("empty path"));
    }
    if path.contains('\0') {
        return Err(unsupported("contains a NUL byte"));
    }
    Ok(format!("file:{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_always_local_files() {
        assert_eq!(
            ffmpeg_url(Path::new("pipe:1")).unwrap(),
            "file:pipe:1".to_string()
        );
        assert_eq!(
            ffmpeg_url(Path::new("/tmp/a b.mp4")).unwrap(),
            "file:/tmp/a b.mp4".to_string()
        );
        assert!(matches!(
            ffmpeg_url(Path::new("")),
            Err(MediaError::UnsupportedPath { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff.mp4"));
        assert!(matches!(
            ffmpeg_url(path),
            Err(MediaError::UnsupportedPath { .. })
        ));
    }
}
