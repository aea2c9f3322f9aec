//! Names the code spells as `&'static str` (a field, an object kind, a JSON type)
//! read back from storage, e.g. in a recorded refusal. Each distinct name is kept
//! once for the life of the process; the set is bounded, and a name past the bound
//! reads back as `"request"`.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Distinct names kept at most (the code uses a few dozen).
const MAX_NAMES: usize = 1_000;
/// Longest name kept.
const MAX_NAME_LEN: usize = 64;

/// A name as the code spells it. Fields of this type (rather than a written-out
/// `&'static str`) can be read back through [`deserialize`] without tying the
/// deserialiser's input to `'static`.
pub type Name = &'static str;

/// The `'static` copy of `name`.
pub fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    if names.len() >= MAX_NAMES || name.len() > MAX_NAME_LEN {
        return "request";
    }
    let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(kept);
    kept
}

/// Deserialises a `&'static str` field through [`intern`].
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    Ok(intern(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once() {
        let a = intern("address");
        let b = intern(&String::from("address"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(intern(&"x".repeat(65)), "request");
    }
}
