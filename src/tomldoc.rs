//! Strict TOML decoding that reports every problem of a file, not just the first.
//!
//! A file is parsed once into a spanned tree; then each part of it (a section, one node)
//! is decoded on its own into a `serde` struct with `deny_unknown_fields`. An unknown key
//! is recorded, removed and the part decoded again, so one pass lists every unknown key
//! with serde's own "expected one of" list, and a type error in one node does not hide
//! the problems of the next.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostics, Source};

/// A parsed TOML file: its source and its spanned tree.
pub struct Document<'s> {
    /// The file.
    pub source: &'s Source,
    /// The top-level table.
    pub root: Spanned<DeTable<'s>>,
}

impl<'s> Document<'s> {
    /// Parses a file, recording every syntax error. `None` when there was any: a file
    /// that does not parse has no structure worth checking further.
    pub fn parse(source: &'s Source, diagnostics: &mut Diagnostics) -> Option<Self> {
        let (root, errors) = DeTable::parse_recoverable(&source.text);
        // `[nodes]` written for `[[nodes]]`: one message at the first header says so,
        // instead of a duplicate key for every line of every later entry.
        let mut explained_from = usize::MAX;
        for (name, spans) in repeated_single_headers(&source.text) {
            explained_from = explained_from.min(spans[0].start);
            diagnostics.at(
                source,
                Some(spans[0].clone()),
                format!(
                    "`[{name}]` names one table, written here {} times: each entry is a \
                     `[[{name}]]` block",
                    spans.len()
                ),
                Some(format!(
                    "write [[{name}]] (double brackets) above each entry"
                )),
            );
        }
        for error in &errors {
            let start = error.span().map_or(0, |span| span.start);
            if start >= explained_from && error.message().contains("duplicate key") {
                continue;
            }
            diagnostics.at(
                source,
                error.span(),
                format!("invalid TOML: {}", first_line(error.message())),
                Some("fix the syntax; see https://toml.io".to_string()),
            );
        }
        errors.is_empty().then_some(Document { source, root })
    }

    /// The top-level value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Spanned<DeValue<'s>>> {
        self.root.get_ref().get(key)
    }

    /// The span of a top-level key (for "missing ..." style messages, the whole file).
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.root
            .get_ref()
            .get_key_value(key)
            .map(|(key, _)| key.span())
    }

    /// Records every top-level key not in `known`.
    pub fn reject_unknown_top_level(&self, known: &[&str], diagnostics: &mut Diagnostics) {
        for (key, _) in self.root.get_ref().iter() {
            if !known.contains(&key.get_ref().as_ref()) {
                diagnostics.at(
                    self.source,
                    Some(key.span()),
                    format!("unknown section `{}`", key.get_ref()),
                    Some(format!("use one of: {}", known.join(", "))),
                );
            }
        }
    }

    /// Decodes one value into `T`, recording each unknown key and the first type error.
    /// `None` when the value could not be decoded.
    pub fn decode<T: DeserializeOwned>(
        &self,
        value: &Spanned<DeValue<'s>>,
        diagnostics: &mut Diagnostics,
    ) -> Option<T> {
        let mut value = value.clone();
        loop {
            match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(decoded) => return Some(decoded),
                Err(error) => {
                    let span = error.span();
                    let message = first_line(error.message()).to_string();
                    let removed = message.starts_with("unknown field")
                        && span
                            .clone()
                            .is_some_and(|span| remove_key(&mut value, &span));
                    let hint = if removed {
                        "remove the key or correct its spelling"
                    } else {
                        "see the manifest reference in README.md"
                    };
                    diagnostics.at(self.source, span, message, Some(hint.to_string()));
                    if !removed {
                        return None;
                    }
                }
            }
        }
    }
}

/// Removes the table key whose span is `span`, anywhere below `value`.
fn remove_key(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match value.get_mut() {
        DeValue::Table(table) => {
            let found = table
                .iter()
                .find(|(key, _)| key.span() == *span)
                .map(|(key, _)| key.get_ref().clone());
            if let Some(key) = found {
                table.remove(key.as_ref());
                return true;
            }
            table.iter_mut().any(|(_, child)| remove_key(child, span))
        }
        DeValue::Array(array) => array.iter_mut().any(|child| remove_key(child, span)),
        _ => false,
    }
}

/// The sections written as arrays of tables, in the manifest and in role files.
const ARRAY_SECTIONS: [&str; 5] = ["nodes", "vendor.apt", "vendor.local", "files", "prepare"];

/// Each array section whose single-bracket header (`[nodes]`) appears more than once,
/// with the spans of those headers in file order.
fn repeated_single_headers(text: &str) -> Vec<(&'static str, Vec<Range<usize>>)> {
    let mut found: Vec<(&'static str, Vec<Range<usize>>)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let header = line.trim();
        let name = header
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .filter(|inner| !inner.starts_with('['))
            .map(str::trim);
        if let Some(section) = name.and_then(|name| ARRAY_SECTIONS.iter().find(|s| **s == name)) {
            let start = offset + line.find('[').unwrap_or(0);
            let span = start..start + header.len();
            match found.iter_mut().find(|(known, _)| known == section) {
                Some((_, spans)) => spans.push(span),
                None => found.push((section, vec![span])),
            }
        }
        offset += line.len();
    }
    found.retain(|(_, spans)| spans.len() > 1);
    found
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn nodes_written_as_one_table_get_one_message() {
        let node = |name: &str| format!("[nodes]\nname = \"{name}\"\nrole = \"db\"\n\n");
        let text = format!(
            "[cluster]\nname = \"x\"\n\n{}{}{}",
            node("a"),
            node("b"),
            node("c")
        );
        let source = Source::new("m.toml", text);
        let mut diagnostics = Diagnostics::new();
        assert!(Document::parse(&source, &mut diagnostics).is_none());
        let report = diagnostics.check().unwrap_err().to_string();
        assert_eq!(report.matches("error:").count(), 1, "{report}");
        assert!(
            report.contains("m.toml:4:1: error: `[nodes]` names one table, written here 3 times"),
            "{report}"
        );
        assert!(
            report.contains("write [[nodes]] (double brackets)"),
            "{report}"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Node {
        name: String,
        #[allow(dead_code)]
        size: Option<u32>,
    }

    #[test]
    fn every_unknown_key_is_reported_and_the_rest_still_decodes() {
        let source = Source::new("t.toml", "name = \"a\"\nnmae = 1\nsise = 2\n");
        let mut diagnostics = Diagnostics::new();
        let document = Document::parse(&source, &mut diagnostics).unwrap();
        let root = Spanned::new(
            0..source.text.len(),
            DeValue::Table(document.root.get_ref().clone()),
        );
        let node: Node = document.decode(&root, &mut diagnostics).unwrap();
        assert_eq!(node.name, "a");
        let messages: Vec<_> = diagnostics.items().iter().map(|d| d.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:#?}");
        assert!(
            messages[0].starts_with("t.toml:2:1: error: unknown field `nmae`"),
            "{}",
            messages[0]
        );
        assert!(
            messages[1].starts_with("t.toml:3:1: error: unknown field `sise`"),
            "{}",
            messages[1]
        );
    }

    #[test]
    fn syntax_errors_are_reported_with_their_place() {
        let source = Source::new("t.toml", "name = \"a\"\nsize = = 2\n");
        let mut diagnostics = Diagnostics::new();
        assert!(Document::parse(&source, &mut diagnostics).is_none());
        let message = diagnostics.items()[0].to_string();
        assert!(message.starts_with("t.toml:2:"), "{message}");
        assert!(message.contains("invalid TOML"), "{message}");
    }
}
