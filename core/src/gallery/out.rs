//! Index folders on disk (native): an index is built in a staging folder beside its `out` and
//! then replaces it whole, so a failed build leaves an existing index exactly as it was (issue
//! 16, `index_clobber`); one writer at a time holds the lock beside it.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::{open_images, AddOptions, AddReport, Gallery, LoadedModel};
use crate::lock::OutputLock;
use crate::store::StoredDtype;
use crate::{EgaError, Result};

/// Files an index folder holds; writing an index replaces such a folder whole.
const INDEX_FOLDER_FILES: &[&str] = &["index.bin", "index.json", "thumbs"];

/// What [`write_index`] indexes, and how.
#[derive(Debug, Clone)]
pub struct IndexJob<'a> {
    /// A folder of images or a dataset spec ([`open_images`]).
    pub images: &'a str,
    /// How its images are taken.
    pub options: AddOptions,
    /// Row storage.
    pub dtype: StoredDtype,
}

/// Refuses an `out` that exists and holds anything but an index (a photo folder, a run, a
/// bundle): the finished index replaces the folder whole, which would delete it.
pub fn check_index_out(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(EgaError::Data(format!("--out {}: exists and is not a folder", out.display())));
    }
    let mut others: Vec<String> = std::fs::read_dir(out)
        .map_err(|err| EgaError::io(out, err))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| !INDEX_FOLDER_FILES.contains(&name.as_str()))
        .collect();
    if !others.is_empty() {
        others.sort();
        let shown = others.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        return Err(EgaError::Data(format!(
            "--out {} exists and is not an index folder (it holds {shown}{}); an index replaces its --out folder whole, so choose a new folder or an existing index",
            out.display(),
            if others.len() > 5 { format!(" and {} more", others.len() - 5) } else { String::new() }
        )));
    }
    Ok(())
}

/// `<parent>/.<name>.<what>-<PID>`: where an index is built before it replaces `out`.
fn sibling(out: &Path, what: &str) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "index".into());
    out.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Removes the staging folders that index writers which died left beside `out` (only call it
/// while holding `out`'s lock: then none is a live writer's).
fn remove_dead_staging(out: &Path) {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else { return };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let prefixes = [".staging-", ".old-"].map(|what| format!(".{}{what}", name.to_string_lossy()));
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        if prefixes.iter().any(|p| file_name.starts_with(p.as_str())) && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Puts the finished `staging` folder in the place of `out` (two renames; if the second fails,
/// the old `out` is put back).
fn replace_folder(staging: &Path, out: &Path) -> Result<()> {
    let moving_in = |err| EgaError::Data(format!("moving the new index into {}: {err}", out.display()));
    if !out.exists() {
        return std::fs::rename(staging, out).map_err(moving_in);
    }
    let old = sibling(out, "old");
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(out, &old)
        .map_err(|err| EgaError::Data(format!("moving the old {} aside: {err}", out.display())))?;
    if let Err(err) = std::fs::rename(staging, out) {
        let _ = std::fs::rename(&old, out);
        return Err(moving_in(err));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Takes the lock of an index folder (beside it: the folder itself is replaced whole) and
/// removes what dead writers left beside it. Returns the lock and, when a dead writer's lock was
/// taken over, a note saying so.
pub fn lock_index_out(out: &Path) -> Result<(OutputLock, Option<String>)> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| EgaError::io(parent, err))?;
    }
    let taken = OutputLock::acquire(&crate::lock::beside(out), out)?;
    remove_dead_staging(out);
    Ok(taken)
}

/// Embeds `job.images` with `model` into the index folder `out` (thumbnails included); returns
/// the gallery made and what was skipped. The index is built in a staging folder beside `out`
/// and then replaces it, so a failed build leaves an existing index exactly as it was. The
/// caller holds `out`'s lock ([`lock_index_out`]).
pub fn write_index(
    model: LoadedModel,
    job: &IndexJob,
    out: &Path,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Gallery, AddReport)> {
    job.options.validate()?;
    check_index_out(out)?;
    let staging = sibling(out, "staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|err| EgaError::io(&staging, err))?;
    let built: Result<(Gallery, AddReport)> = (|| {
        let dataset = open_images(job.images, model.config.image_size(), job.options.skip_bad)?;
        let split = dataset.image_folder().is_none().then_some(job.options.split);
        let mut gallery = Gallery::empty(model, job.images, split, job.dtype, device)?;
        let report = gallery.add_dataset(dataset.as_ref(), &job.options, Some(&staging), progress)?;
        gallery.index().save(&staging)?;
        replace_folder(&staging, out)?;
        Ok((gallery, report))
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    built
}
