//! Fan-out: `for_each` (a list or an object, literal or from an expression) or `matrix` (axes,
//! `include`, `exclude`), with the step's `max_parallel` and `tolerate`. What is literal is
//! checked here (shapes, empty axes, the item limit); what comes from expressions is checked
//! when the step becomes ready (`crate::fan_out`).

use crate::diagnostic::{Code, Diagnostic};
use crate::fan_out::MAX_ITEMS;
use crate::model::*;
use crate::yaml::{Node, Value};

use super::Lower;
use super::expressions::Ctx;
use super::readers::{Obj, is_identifier};

impl Lower {
    /// The step's fan-out, if it has `for_each` or `matrix`. `max_parallel` and `tolerate`
    /// without either are errors: they would silently do nothing.
    pub(super) fn fan_out(&mut self, index: StepIndex, obj: &Obj<'_>) -> Option<FanOut> {
        let items = match (obj.key("for_each"), obj.key("matrix")) {
            (Some(_), Some(matrix)) => {
                self.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        matrix.span,
                        "a step has `for_each` or `matrix`, not both",
                    )
                    .with_help("a matrix is a `for_each` over combinations: keep one of them"),
                );
                return None;
            }
            (Some(key), None) => {
                let node = obj.get("for_each")?;
                (key.span, self.for_each(index, node))
            }
            (None, Some(key)) => {
                let node = obj.get("matrix")?;
                (key.span, self.matrix(index, node))
            }
            (None, None) => {
                for field in ["max_parallel", "tolerate"] {
                    if let Some(key) = obj.key(field) {
                        self.push(
                            Diagnostic::error(
                                Code::InvalidValue,
                                key.span,
                                format!(
                                    "`{field}` only applies to a step with `for_each` or `matrix`"
                                ),
                            )
                            .with_help(
                                "to cap how many steps run at once, use a group's `max_parallel`",
                            ),
                        );
                    }
                }
                return None;
            }
        };
        let (span, items) = items;
        let max_parallel =
            obj.get("max_parallel").and_then(|node| self.count(node, "`max_parallel`"));
        let tolerate = match obj.get("tolerate") {
            Some(node) => self.tolerance(node)?,
            None => Tolerance::Count(0),
        };
        Some(FanOut { items: items?, max_parallel, tolerate, span })
    }

    fn for_each(&mut self, index: StepIndex, node: &Node) -> Option<Items> {
        match &node.value {
            Value::Str(_) => {
                let template = self.value_template(node, Ctx::ForEach(index))?;
                if let ValueTemplate::Literal(_) = template {
                    self.push(
                        Diagnostic::error(
                            Code::WrongType,
                            node.span,
                            "`for_each` must be a list, an object, or an expression that gives one",
                        )
                        .with_help(
                            "write the items as a YAML list, or `${{ steps.<id>.outputs.<key> }}`",
                        ),
                    );
                    return None;
                }
                Some(Items::List(template))
            }
            Value::Seq(items) => {
                self.within_limit(node, items.len())?;
                self.value_template(node, Ctx::ForEach(index)).map(Items::List)
            }
            Value::Map(_) => self.value_template(node, Ctx::ForEach(index)).map(Items::List),
            _ => {
                self.wrong_type(node, "`for_each`", "a list, an object or an expression");
                None
            }
        }
    }

    fn matrix(&mut self, index: StepIndex, node: &Node) -> Option<Items> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "`matrix`", "a mapping of axis names to lists");
            return None;
        };
        self.unique_keys(entries);
        let mut axes = Vec::new();
        let (mut include, mut exclude) = (None, None);
        let mut valid = true;
        let mut literal_product: Option<usize> = Some(1);
        for (key, value) in entries {
            let field = key.name.as_str();
            if matches!(field, "include" | "exclude") {
                let is_list_or_expression = matches!(value.value, Value::Seq(_) | Value::Str(_));
                if !is_list_or_expression {
                    self.wrong_type(value, &format!("matrix `{field}`"), "a list of objects");
                    valid = false;
                    continue;
                }
                let template = self.value_template(value, Ctx::ForEach(index));
                valid &= template.is_some();
                if field == "include" {
                    include = template
                } else {
                    exclude = template
                }
                continue;
            }
            if !is_identifier(field, false) {
                self.error(
                    Code::BadName,
                    key.span,
                    format!("matrix axis `{field}` must be a name: [A-Za-z_][A-Za-z0-9_]*"),
                );
                valid = false;
                continue;
            }
            match &value.value {
                Value::Seq(values) if values.is_empty() => {
                    self.push(
                        Diagnostic::error(
                            Code::InvalidValue,
                            value.span,
                            format!(
                                "matrix axis `{field}` is empty, so the matrix has no combination"
                            ),
                        )
                        .with_help("give the axis at least one value, or remove it"),
                    );
                    valid = false;
                }
                Value::Seq(values) => {
                    literal_product = literal_product.and_then(|n| n.checked_mul(values.len()));
                    match self.value_template(value, Ctx::ForEach(index)) {
                        Some(template) => axes.push((field.to_owned(), template)),
                        None => valid = false,
                    }
                }
                Value::Str(_) => {
                    literal_product = None;
                    match self.value_template(value, Ctx::ForEach(index)) {
                        Some(ValueTemplate::Literal(_)) | None => {
                            self.wrong_type(
                                value,
                                &format!("matrix axis `{field}`"),
                                "a list or an expression that gives one",
                            );
                            valid = false;
                        }
                        Some(template) => axes.push((field.to_owned(), template)),
                    }
                }
                _ => {
                    self.wrong_type(value, &format!("matrix axis `{field}`"), "a list");
                    valid = false;
                }
            }
        }
        if axes.is_empty() && include.is_none() && valid {
            self.push(
                Diagnostic::error(Code::InvalidValue, node.span, "the matrix has no axis")
                    .with_help("give it axes, e.g. `matrix: { os: [linux, mac] }`"),
            );
            return None;
        }
        if let Some(product) = literal_product
            && !axes.is_empty()
        {
            self.within_limit(node, product)?;
        }
        valid.then_some(Items::Matrix { axes, include, exclude })
    }

    fn within_limit(&mut self, node: &Node, count: usize) -> Option<()> {
        if count <= MAX_ITEMS {
            return Some(());
        }
        self.push(
            Diagnostic::error(
                Code::Limit,
                node.span,
                format!("this fan-out has {count} items; a fan-out has at most {MAX_ITEMS}"),
            )
            .with_help("split the list, or process a batch of items per item"),
        );
        None
    }

    /// `tolerate: 2` or `tolerate: 10%`.
    fn tolerance(&mut self, node: &Node) -> Option<Tolerance> {
        match &node.value {
            Value::Int(count) if *count >= 0 => {
                Some(Tolerance::Count((*count).min(u32::MAX as i64) as u32))
            }
            Value::Str(text) => {
                let percent =
                    text.trim().strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok());
                match percent {
                    Some(percent) if (0.0..=100.0).contains(&percent) => {
                        Some(Tolerance::Percent(percent))
                    }
                    _ => {
                        self.push(
                            Diagnostic::error(
                                Code::InvalidValue,
                                node.span,
                                format!("`tolerate` must be a count or a percentage from 0% to 100%, not `{text}`"),
                            )
                            .with_help("write `tolerate: 2` (items) or `tolerate: 10%` (of the items)"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(
                    node,
                    "`tolerate`",
                    "a count of items (0 or more) or a percentage like `10%`",
                );
                None
            }
        }
    }
}

/// The keys of a step's items, when the file gives them literally: a matrix's axes and the
/// keys its `include` entries add, the keys of a `for_each` list of mappings (any of them),
/// or `key` and `value` for a `for_each` mapping. `None` when the items come from an
/// expression or are not all mappings: then `item.<key>` is checked at run time.
pub(super) fn item_keys(obj: &Obj<'_>) -> Option<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !keys.iter().any(|key| key == name) {
            keys.push(name.to_owned());
        }
    };
    let maps = |list: &[Node]| -> Option<Vec<String>> {
        let mut names = Vec::new();
        for entry in list {
            let Value::Map(entries) = &entry.value else { return None };
            names.extend(entries.iter().map(|(key, _)| key.name.clone()));
        }
        Some(names)
    };
    if let Some(matrix) = obj.get("matrix") {
        let Value::Map(entries) = &matrix.value else { return None };
        for (key, value) in entries {
            match (key.name.as_str(), &value.value) {
                ("exclude", _) => {}
                ("include", Value::Seq(list)) => maps(list)?.iter().for_each(|name| add(name)),
                ("include", _) => return None,
                (axis, _) => add(axis),
            }
        }
    } else {
        match &obj.get("for_each")?.value {
            Value::Map(_) => ["key", "value"].into_iter().for_each(&mut add),
            Value::Seq(list) if !list.is_empty() => maps(list)?.iter().for_each(|name| add(name)),
            _ => return None,
        }
    }
    Some(keys)
}
