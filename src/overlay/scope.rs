//! Which templates read the node they are rendered for. Those render once per node; all
//! others render once per role, so a role of a thousand nodes renders its `/etc/hosts`
//! once, not a thousand times.
//!
//! The answer comes from the template's syntax tree and errs on the side of "per node":
//! a template that might read the node (an `include`, a loop variable called `node`) is
//! rendered per node. A template judged wrongly the other way could not render at all,
//! since the role's context has no `node`: the mistake would be loud, never a wrong file.

use tera::ast::{Expr, ExprVal, FunctionCall, Node};

/// Whether `ast` reads `node`, or the node's own `tls.node_cert` or `tls.node_key`.
pub fn reads_the_node(ast: &[Node]) -> bool {
    ast.iter().any(node_reads)
}

fn node_reads(node: &Node) -> bool {
    match node {
        Node::VariableBlock(_, expr) => expr_reads(expr),
        Node::Set(_, set) => expr_reads(&set.value),
        Node::FilterSection(_, section, _) => {
            call_reads(&section.filter) || reads_the_node(&section.body)
        }
        Node::Block(_, block, _) => reads_the_node(&block.body),
        Node::MacroDefinition(_, definition, _) => {
            definition.args.values().flatten().any(expr_reads) || reads_the_node(&definition.body)
        }
        Node::Forloop(_, forloop, _) => {
            expr_reads(&forloop.container)
                || reads_the_node(&forloop.body)
                || forloop.empty_body.as_deref().is_some_and(reads_the_node)
        }
        Node::If(branches, _) => {
            branches
                .conditions
                .iter()
                .any(|(_, condition, body)| expr_reads(condition) || reads_the_node(body))
                || branches
                    .otherwise
                    .as_ref()
                    .is_some_and(|(_, body)| reads_the_node(body))
        }
        // Another template's text is not in this tree: assume it reads the node.
        Node::Include(..) | Node::Extends(..) | Node::ImportMacro(..) | Node::Super => true,
        Node::Text(_) | Node::Raw(..) | Node::Comment(..) | Node::Break(_) | Node::Continue(_) => {
            false
        }
    }
}

fn expr_reads(expr: &Expr) -> bool {
    value_reads(&expr.val) || expr.filters.iter().any(call_reads)
}

fn call_reads(call: &FunctionCall) -> bool {
    call.args.values().any(expr_reads)
}

fn value_reads(value: &ExprVal) -> bool {
    match value {
        ExprVal::Ident(name) => ident_reads(name),
        ExprVal::Math(math) => expr_reads(&math.lhs) || expr_reads(&math.rhs),
        ExprVal::Logic(logic) => expr_reads(&logic.lhs) || expr_reads(&logic.rhs),
        ExprVal::In(within) => expr_reads(&within.lhs) || expr_reads(&within.rhs),
        ExprVal::Test(test) => ident_reads(&test.ident) || test.args.iter().any(expr_reads),
        ExprVal::MacroCall(call) => call.args.values().any(expr_reads),
        ExprVal::FunctionCall(call) => call_reads(call),
        ExprVal::Array(items) => items.iter().any(expr_reads),
        ExprVal::StringConcat(concat) => concat.values.iter().any(value_reads),
        ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => false,
    }
}

/// A dotted or subscripted name such as `node.address`, `roles[node.role]` or
/// `tls.node_key`: it reads the node when any of its parts is `node`, or when it reads
/// `tls` for more than the cluster CA.
fn ident_reads(name: &str) -> bool {
    let parts: Vec<&str> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|part| !part.is_empty())
        .collect();
    parts.iter().enumerate().any(|(at, part)| match *part {
        "node" => true,
        "tls" => !matches!(parts.get(at + 1), Some(&("ca_cert" | "ca_id"))),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_that_read_the_node_are_told_apart() {
        // (template, whether it reads the node)
        let table = [
            ("plain text, a node and its nodes", false),
            ("{{ node.name }}", true),
            ("{{ node }}", true),
            (
                "{% for each in nodes %}{{ each.address }}{% endfor %}",
                false,
            ),
            ("{% for node in nodes %}{{ node.name }}{% endfor %}", true),
            ("{{ nodes_by_role.db | length }}", false),
            ("{{ roles[node.role].vars.port }}", true),
            ("{{ cluster.name | replace(from='x', to=node.name) }}", true),
            ("{% if node.mac is defined %}x{% endif %}", true),
            (
                "{% if cluster.name == 'a' %}{% else %}{{ node.name }}{% endif %}",
                true,
            ),
            ("{% set me = node %}{{ me.name }}", true),
            ("{{ 'x' ~ node.name }}", true),
            ("{{ tls.ca_cert }}{{ tls.ca_id }}", false),
            ("{{ tls.node_key }}", true),
            ("{{ tls | json_encode() }}", true),
            ("{% filter upper %}{{ node.name }}{% endfilter %}", true),
            ("{% include 'other' %}", true),
            ("{% raw %}{{ node.name }}{% endraw %}", false),
            ("{# {{ node.name }} #}", false),
            ("{% if node.name in ['a'] %}{% endif %}", true),
            ("{{ throw(message=node.name) }}", true),
        ];
        for (text, expected) in table {
            let mut tera = tera::Tera::default();
            tera.add_raw_template("other", "").unwrap();
            tera.add_raw_template("t", text).unwrap();
            let template = tera.get_template("t").unwrap();
            assert_eq!(reads_the_node(&template.ast), expected, "{text}");
        }
    }
}
