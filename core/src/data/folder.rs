//! A folder of image files as a [`Dataset`]: the user's own gallery for an index (`native index
//! --images DIR`). It is not a set of pairs: its samples have no captions and no hard negatives,
//! and it has no splits (every split is the whole folder). Each sample's id is its file's path
//! inside the folder.
//!
//! The folder is listed once, when it is opened: recursively, files sorted by path (a stable
//! order), each folder read once however many links lead to it (`ln -s . loop` does not repeat
//! it), an index folder inside it left out (its thumbnails are not gallery images), and files
//! that are not images by their extension left out; what was left out is in
//! [`Dataset::skipped`]. An image file is read and decoded when its sample is asked for: a
//! broken one is an error naming it (an index skips such files, as it skips non-images).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{decode_image, Dataset, Sample, Split};
use crate::{EgaError, Result};

/// File extensions read as images (compared in lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif"];

/// A folder of image files.
#[derive(Debug, Clone)]
pub struct FolderDataset {
    root: PathBuf,
    files: Vec<PathBuf>,
    skipped: Vec<String>,
}

/// True for a folder holding an index's two files (`index.bin`, `index.json`).
fn is_index_folder(folder: &Path) -> bool {
    folder.join("index.bin").is_file() && folder.join("index.json").is_file()
}

impl FolderDataset {
    /// Lists the image files under `root` (see the module's documentation).
    pub fn open(root: &Path) -> Result<Self> {
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        let mut seen = HashSet::new();
        while let Some(folder) = pending.pop() {
            let real = std::fs::canonicalize(&folder).map_err(|err| EgaError::io(&folder, err))?;
            if !seen.insert(real) {
                skipped.push(format!("{}: a link to a folder already read", folder.display()));
                continue;
            }
            if folder != root && is_index_folder(&folder) {
                skipped.push(format!("{}: an index folder, not images", folder.display()));
                continue;
            }
            let entries = std::fs::read_dir(&folder).map_err(|err| EgaError::io(&folder, err))?;
            for entry in entries {
                let path = entry.map_err(|err| EgaError::io(&folder, err))?.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
                    if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                        files.push(path);
                    } else {
                        skipped.push(format!("{}: not an image file (by its extension)", path.display()));
                    }
                }
            }
        }
        files.sort();
        Ok(FolderDataset { root: root.to_path_buf(), files, skipped })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image files, in sample order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The file of sample `index` (any split).
    pub fn file(&self, index: usize) -> Option<&Path> {
        self.files.get(index).map(PathBuf::as_path)
    }
}

impl Dataset for FolderDataset {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    /// Every split is the whole folder.
    fn len(&self, _split: Split) -> Option<usize> {
        Some(self.files.len())
    }

    /// The image of file `index`, without caption or negatives; its id is the file's path inside
    /// the folder. A file that cannot be read or decoded is an error naming it.
    fn sample(&self, split: Split, index: usize) -> Result<Sample> {
        let path = self.file(index).ok_or_else(|| {
            EgaError::Data(format!(
                "{}: the folder has {} images, asked for number {index} (of the {split} split)",
                self.root.display(),
                self.files.len()
            ))
        })?;
        let bytes = crate::fs::read_regular(path, crate::fs::MAX_IMAGE)?;
        let image = decode_image(&bytes, &path.display().to_string())?;
        Ok(Sample {
            id: path.strip_prefix(&self.root).unwrap_or(path).display().to_string(),
            image,
            caption: String::new(),
            negative_captions: Vec::new(),
            negative_images: Vec::new(),
        })
    }

    fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn image_folder(&self) -> Option<&FolderDataset> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, value: u8, size: u32) {
        image::RgbImage::from_pixel(size, size, image::Rgb([value, 255 - value, 40])).save(path).unwrap();
    }

    #[test]
    fn a_folder_yields_its_images_in_a_stable_order_and_names_a_bad_file() {
        let root = std::env::temp_dir().join(format!("ega-folder-dataset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("b/deeper")).unwrap();
        std::fs::create_dir_all(root.join("kept-index")).unwrap();
        png(&root.join("z.png"), 10, 9);
        png(&root.join("a.PNG"), 20, 7);
        png(&root.join("b/deeper/c.png"), 30, 5);
        std::fs::write(root.join("notes.txt"), "words").unwrap();
        std::fs::write(root.join("m-broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
        for file in ["index.bin", "index.json"] {
            std::fs::write(root.join("kept-index").join(file), b"x").unwrap();
        }
        png(&root.join("kept-index/thumb.png"), 40, 4);
        #[cfg(unix)]
        std::os::unix::fs::symlink(".", root.join("loop")).unwrap();

        let folder = FolderDataset::open(&root).unwrap();
        let ids = |folder: &FolderDataset| -> Vec<String> {
            (0..folder.files().len())
                .map(|i| folder.file(i).unwrap().strip_prefix(&root).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(ids(&folder), ["a.PNG", "b/deeper/c.png", "m-broken.png", "z.png"]);
        assert_eq!(ids(&FolderDataset::open(&root).unwrap()), ids(&folder), "the same order every time");
        for split in [Split::Train, Split::Test, Split::Unseen] {
            assert_eq!(folder.len(split), Some(4));
        }
        let skipped = folder.skipped().join("\n");
        assert!(skipped.contains("notes.txt: not an image file"), "{skipped}");
        assert!(skipped.contains("an index folder, not images"), "{skipped}");
        #[cfg(unix)]
        assert!(skipped.contains("a link to a folder already read"), "{skipped}");

        let sample = folder.sample(Split::Test, 1).unwrap();
        assert_eq!(sample.id, "b/deeper/c.png");
        assert_eq!(sample.image.dimensions(), (5, 5));
        assert_eq!(sample.image.get_pixel(0, 0), &image::Rgb([30, 225, 40]));
        assert!(sample.caption.is_empty() && sample.negative_images.is_empty());
        let err = folder.sample(Split::Test, 2).unwrap_err();
        assert!(matches!(err, EgaError::Format { .. }), "{err:?}");
        assert!(err.to_string().contains("m-broken.png"), "{err}");
        assert!(folder.sample(Split::Test, 4).unwrap_err().to_string().contains("has 4 images"));
        assert!(std::ptr::eq(folder.image_folder().unwrap(), &folder));
        let _ = std::fs::remove_dir_all(&root);
    }
}
