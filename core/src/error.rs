//! Typed errors of ega-core. Front ends add context with `anyhow`.

use thiserror::Error;

/// Everything that can go wrong inside ega-core for reasons a user can cause.
#[derive(Debug, Error)]
pub enum EgaError {
    /// A configuration value is out of its valid range.
    #[error("invalid config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field, as spelled in the serialised config.
        field: &'static str,
        /// The offending value, printed.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// A tensor or an input batch has the wrong shape.
    #[error("shape mismatch in {context}: {message}")]
    Shape {
        /// Where the shapes were checked.
        context: &'static str,
        /// What was expected and what was found.
        message: String,
    },
    /// A requested device cannot be opened.
    #[error("device unavailable: {0}")]
    Device(String),
    /// A prompt template or a token sequence is malformed.
    #[error("invalid prompt: {0}")]
    Prompt(String),
    /// Data are unusable for a reason other than a file's format (a file a dataset names is
    /// missing, a split is too small, a folder is not a bundle or a run, a dataset is not set
    /// up); the message names what.
    #[error("{0}")]
    Data(String),
    /// A file is not in the format its reader expects: foreign, truncated, damaged, of another
    /// format version, or with a field out of place.
    #[error("{file}: {problem}")]
    Format {
        /// The file (a path, or the name a caller gave bytes), with `:LINE` for a line of a text
        /// file.
        file: String,
        /// What is wrong with it, with the cause's own words (a parser's message) where there is
        /// one: as with `Io`, the cause is in the message, not a `#[source]` printed twice.
        problem: String,
    },
    /// Writing or reading a value as JSON failed where there is no file to name (serialising a
    /// config, say); its message is serde_json's.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong. Not a `#[source]`: it is in the message already, and `{:#}` would
        /// print it twice ("No space left on device (os error 28): No space left on device").
        error: std::io::Error,
    },
    /// The tokenizer failed (training, loading or encoding).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Training produced a NaN or infinite loss.
    #[error("the loss at step {step} is {value}: training stopped (the last checkpoint is intact)")]
    NonFinite {
        /// The step (0-based).
        step: usize,
        /// The loss value.
        value: f64,
    },
    /// Reading a tensor back from the device failed.
    #[error("tensor read-back failed: {0}")]
    Readback(String),
}

/// Result alias of ega-core.
pub type Result<T, E = EgaError> = std::result::Result<T, E>;

impl EgaError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        EgaError::Io { path: path.as_ref().display().to_string(), error: source }
    }

    /// A [`EgaError::Format`] problem of `file`.
    pub(crate) fn format(file: impl std::fmt::Display, problem: impl Into<String>) -> Self {
        EgaError::Format { file: file.to_string(), problem: problem.into() }
    }

    pub(crate) fn config(field: &'static str, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        EgaError::InvalidConfig { field, value: value.to_string(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_errors_name_the_file_and_json_errors_keep_serde_json_s_words() {
        let err = EgaError::format("a/index.json", "format version 9");
        assert_eq!(err.to_string(), "a/index.json: format version 9");
        let cause = serde_json::from_str::<u32>("x").unwrap_err();
        let words = cause.to_string();
        let err: EgaError = cause.into();
        assert!(matches!(err, EgaError::Json(_)));
        assert_eq!(err.to_string(), words);
    }
}
