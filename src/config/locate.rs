//! Finding a key in the config text: the line where a dotted key (`pool.size`,
//! `users[1].name`) is set, and the key an error offset falls in, from `toml_edit`'s spans.

use std::ops::Range;

use toml_edit::{Item, Key, TableLike, Value};

/// A key set in the config text: its dotted path (e.g. `users[1].name`) and the bytes from the
/// key to the end of its value.
struct Entry {
    path: String,
    span: Range<usize>,
}

/// The 1-based line where dotted `key` (e.g. `pool.size`, `users[1].name`) is set, if the text
/// sets it.
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    let entry = entries(text).into_iter().find(|entry| entry.path == key)?;
    Some(text.get(..entry.span.start)?.matches('\n').count() + 1)
}

/// The dotted key whose text, from key to value, contains byte `offset`: the innermost one, as
/// an inline table's text holds its keys'.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    entries(text)
        .into_iter()
        .filter(|entry| entry.span.contains(&offset))
        .min_by_key(|entry| entry.span.len())
        .map(|entry| entry.path)
}

/// Every key in `text` with its span, from toml_edit's parse (none when the text is not TOML).
fn entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Ok(document) = toml_edit::ImDocument::parse(text) {
        table_entries(document.as_table(), "", &mut out);
    }
    out
}

/// The keys of `table`, under `prefix`, and the keys nested in their values.
fn table_entries(table: &dyn TableLike, prefix: &str, out: &mut Vec<Entry>) {
    for (name, item) in table.iter() {
        let path = format!("{prefix}{name}");
        if let Some(start) = table.key(name).and_then(Key::span).map(|span| span.start) {
            let end = item.span().map_or(start, |span| span.end);
            out.push(Entry {
                path: path.clone(),
                span: start..end,
            });
        }
        nested_entries(item, &path, out);
    }
}

/// The keys inside a value: a table's, or those of each table in an array, indexed `[i]`.
fn nested_entries(item: &Item, path: &str, out: &mut Vec<Entry>) {
    match item {
        Item::ArrayOfTables(tables) => {
            for (index, table) in tables.iter().enumerate() {
                element_entries(table, table.span(), format!("{path}[{index}]"), out);
            }
        }
        Item::Value(Value::Array(values)) => {
            for (index, value) in values.iter().enumerate() {
                if let Some(table) = value.as_inline_table() {
                    element_entries(table, value.span(), format!("{path}[{index}]"), out);
                }
            }
        }
        _ => {
            if let Some(table) = item.as_table_like() {
                table_entries(table, &format!("{path}."), out);
            }
        }
    }
}

/// An array's table at `path`, itself an entry (it has no key of its own), and its keys.
fn element_entries(
    table: &dyn TableLike,
    span: Option<Range<usize>>,
    path: String,
    out: &mut Vec<Entry>,
) {
    table_entries(table, &format!("{path}."), out);
    if let Some(span) = span {
        out.push(Entry { path, span });
    }
}
