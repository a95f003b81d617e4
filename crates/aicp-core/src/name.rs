//! Model names: checked before a name is ever joined to a path.

use crate::error::{Error, Result};

/// Accepts `[A-Za-z0-9_.-]{1,128}` without `..`, so a name can never leave the model directory.
pub fn validate_model_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty()
        || name.len() > 128
        || !name.chars().all(allowed)
        || name.contains("..")
        || name == "."
    {
        return Err(Error::invalid(format!(
            "invalid model name {name:?}: expected 1-128 letters, digits, '_', '-' or '.', without '..'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_names_pass() {
        for good in ["mnist", "fashion-mnist", "my_model.v2", "A1"] {
            validate_model_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a..b",
            "sp ace",
            "é",
            "a\\b",
            &"x".repeat(129),
        ] {
            let err = validate_model_name(bad).unwrap_err();
            assert!(err.message.contains("invalid model name"), "{bad}: {err}");
        }
    }
}
