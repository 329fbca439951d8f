//! Holds the code to the module order in `lib.rs`'s map: every `crate::` path (in `use`
//! lines and in code, test modules included; comments aside) may name only a module listed
//! before its own. Also keeps the map, the `pub mod` lines and the files of src/ in step.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

const LIB: &str = include_str!("lib.rs");

/// The modules in the order of the map (bottom layer first).
fn documented_order() -> Vec<String> {
    LIB.lines()
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split_once("`]"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Root re-exports (`pub use config::Config;`): `crate::Config` means `config`.
fn reexports() -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in LIB.lines() {
        let Some(path) = line.strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        if let (Some((module, _)), Some((_, item))) =
            (path.split_once("::"), path.rsplit_once("::"))
        {
            map.insert(item.to_owned(), module.to_owned());
        }
    }
    map
}

/// Every .rs file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level module a file under src/ belongs to, and its depth in the module tree
/// (`a.rs` and `a/mod.rs` are 1, `a/b.rs` is 2).
fn module_of(relative: &Path) -> (String, usize) {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    let depth = parts.len() - usize::from(parts.last().is_some_and(|p| p == "mod"));
    (parts[0].clone(), depth)
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level names a line's crate paths reach: `crate::x`, `crate::{x, y::z}` (braces
/// may span lines: `rest` is the text from the start of this line on) and `super::` chains
/// that climb to the crate root from a file at `depth`. (An inline `mod tests` adds a level
/// this does not see; its `super::` names an item, never one of the modules.)
fn reached(code: &str, rest: &str, depth: usize) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            names.extend(braced(group));
        } else {
            names.push(ident_at(after).to_owned());
        }
    }
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with("super::") {
            continue;
        }
        let mut after = &rest[at..];
        let mut climbs = 0;
        while let Some(next) = after.strip_prefix("super::") {
            (after, climbs) = (next, climbs + 1);
        }
        if climbs < depth {
            continue;
        }
        match after.strip_prefix('{') {
            Some(group) => names.extend(braced(group)),
            None => names.push(ident_at(after).to_owned()),
        }
    }
    // `crate` other than as a path's start or in `pub(crate)` (`use crate as root;`,
    // `$crate`): a name the check cannot follow.
    let bare = code.match_indices("crate").filter(|(at, _)| {
        let before = code[..*at].chars().next_back();
        let word_start = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let after = &code[at + "crate".len()..];
        let word_end = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        word_start && word_end && !after.starts_with("::") && !after.starts_with(')')
    });
    names.extend(bare.map(|_| "crate".to_owned()));
    names
}

/// The first segment of each path in a `{…}` group, nested groups skipped.
fn braced(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let (mut level, mut expecting) = (0usize, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => level += 1,
            '}' if level == 0 => break,
            '}' => level -= 1,
            ',' if level == 0 => expecting = true,
            c if expecting && level == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                names.push(ident_at(&group[i..]).to_owned());
                expecting = false;
            }
            _ => {}
        }
    }
    names
}

/// Whether a line opens an inline module (`mod tests {`).
fn inline_module(code: &str) -> bool {
    let code = code.trim_start();
    let code = code.strip_prefix("pub ").unwrap_or(code);
    code.starts_with("mod ") && code.trim_end().ends_with('{')
}

/// The code of a line: nothing of a comment line, the part before a trailing comment.
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    line.split(" // ").next().unwrap_or(line)
}

#[test]
fn layers_run_one_way() {
    let order = documented_order();
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let aliases = reexports();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap().to_path_buf();
        let (module, depth) = module_of(&relative);
        let Some(&own) = rank.get(module.as_str()) else {
            continue; // lib.rs, main.rs and this file: checked below or outside the layers
        };
        let text = fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut depth = depth;
        for (n, line) in lines.iter().enumerate() {
            let code = code_of(line);
            let rest = lines[n..].join("\n");
            let at = format!("src/{}:{}", relative.display(), n + 1);
            for name in reached(code, &rest, depth) {
                let target = aliases.get(&name).cloned().unwrap_or(name);
                match rank.get(target.as_str()) {
                    Some(&r) if r > own => wrong.push(format!(
                        "{at}: `{module}` uses `{target}`, which lib.rs lists after it"
                    )),
                    Some(_) => {}
                    None => wrong.push(format!("{at}: a crate path the check cannot follow")),
                }
            }
            // An inline module (by custom the tests, at the end) is a level deeper.
            if inline_module(code) {
                depth += 1;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run up the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_map_the_modules_and_the_files_agree() {
    let mut documented = documented_order();
    let mut declared: Vec<String> = LIB
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<String> = fs::read_dir(&src)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .filter(|name| !["lib", "main", "layers"].contains(&name.as_str()))
        .collect();
    documented.sort();
    declared.sort();
    files.sort();
    files.dedup();
    assert_eq!(
        documented, declared,
        "lib.rs's map against its `pub mod` lines"
    );
    assert_eq!(files, declared, "src/ against lib.rs's `pub mod` lines");
}

#[test]
fn the_check_sees_what_it_should() {
    let line = |code: &str, depth| reached(code, code, depth);
    assert_eq!(line("use crate::pool::Pool;", 1), ["pool"]);
    let group = "use crate::{\n    backend::Params,\n    limits::{Cap, Limits},\n};";
    assert_eq!(reached("use crate::{", group, 1), ["backend", "limits"]);
    assert_eq!(line("use super::super::error::X;", 2), ["error"]);
    assert_eq!(
        line("use super::{session::X, pool};", 1),
        ["session", "pool"]
    );
    assert!(line("use super::conn::X;", 2).is_empty());
    // What cannot be followed is reported as a name no module has.
    assert_eq!(line("use crate::*;", 1), [""]);
    assert_eq!(line("use crate as root;", 1), ["crate"]);
    assert!(line(code_of("let increate = 1; // crate"), 1).is_empty());
    assert!(line("pub(crate) const X: i32 = 1;", 1).is_empty());
    assert!(reached(code_of("    /// see [`crate::error`]"), "", 1).is_empty());
    assert!(inline_module("mod tests {") && !inline_module("mod tests;"));
    assert_eq!(module_of(Path::new("pool/gate.rs")), ("pool".into(), 2));
    assert_eq!(module_of(Path::new("pool/mod.rs")), ("pool".into(), 1));
}
