//! Column names that resolve the way SQLite and DuckDB users expect.
//!
//! The event's columns are spelled in camel case (`dstDomains`). DataFusion
//! lowercases unquoted identifiers and matches names exactly, so
//! `SELECT dstDomains FROM flows` would look for `dstdomains` and fail. Before
//! planning, every identifier that matches a known column name ignoring case
//! (quoted or not, as in DuckDB) is replaced by the column's exact spelling,
//! quoted. `select dstdomains`, `SELECT dstDomains` and `SELECT "dstDomains"`
//! then all name the same column, and results print it as `dstDomains`.
//!
//! Output aliases that match a column name are rewritten too, so that an
//! alias and an `ORDER BY` that refers to it stay the same name, and so are
//! the columns of `JOIN ... USING (hostName, flowId)`.
//!
//! One more DuckDB habit: a query that starts with `FROM` and has no
//! `SELECT` (`FROM flows LIMIT 3`) selects every column, as `SELECT *`.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, JoinConstraint, JoinOperator, ObjectNamePart, SelectFlavor, SelectItem, VisitMut,
    VisitorMut, WildcardAdditionalOptions,
};

/// Known column names, keyed by their lower-case form.
#[derive(Debug, Clone, Default)]
pub struct ColumnNames {
    by_lowercase: HashMap<String, String>,
}

impl ColumnNames {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let by_lowercase = names.into_iter().map(|n| (n.to_lowercase(), n.to_owned())).collect();
        ColumnNames { by_lowercase }
    }

    fn canonicalize(&self, ident: &mut Ident) {
        if let Some(exact) = self.by_lowercase.get(&ident.value.to_lowercase()) {
            ident.value.clone_from(exact);
            ident.quote_style = Some('"');
        }
    }

    /// Rewrites the identifiers of `node` (a statement) in place.
    pub fn rewrite<T: VisitMut>(&self, node: &mut T) {
        let _ = node.visit(&mut Rewriter { names: self });
    }
}

struct Rewriter<'a> {
    names: &'a ColumnNames,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(ident) => self.names.canonicalize(ident),
            // table.column: only the column part.
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last_mut() {
                    self.names.canonicalize(last);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut datafusion::sql::sqlparser::ast::Select) -> ControlFlow<()> {
        if select.flavor == SelectFlavor::FromFirstNoSelect && select.projection.is_empty() {
            select.projection.push(SelectItem::Wildcard(WildcardAdditionalOptions::default()));
            select.flavor = SelectFlavor::Standard;
        }
        for item in &mut select.projection {
            if let SelectItem::ExprWithAlias { alias, .. } = item {
                self.names.canonicalize(alias);
            }
        }
        for join in select.from.iter_mut().flat_map(|table| table.joins.iter_mut()) {
            if let Some(JoinConstraint::Using(columns)) = constraint(&mut join.join_operator) {
                for part in columns.iter_mut().flat_map(|name| name.0.iter_mut()) {
                    if let ObjectNamePart::Identifier(ident) = part {
                        self.names.canonicalize(ident);
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// The constraint (`ON`, `USING`, ...) of a join, if it has one.
fn constraint(operator: &mut JoinOperator) -> Option<&mut JoinConstraint> {
    use JoinOperator as J;
    match operator {
        J::Join(c)
        | J::Inner(c)
        | J::Left(c)
        | J::LeftOuter(c)
        | J::Right(c)
        | J::RightOuter(c)
        | J::FullOuter(c)
        | J::CrossJoin(c)
        | J::Semi(c)
        | J::LeftSemi(c)
        | J::RightSemi(c)
        | J::Anti(c)
        | J::LeftAnti(c)
        | J::RightAnti(c)
        | J::StraightJoin(c)
        | J::AsOf { constraint: c, .. } => Some(c),
        J::CrossApply | J::OuterApply | J::ArrayJoin | J::LeftArrayJoin | J::InnerArrayJoin => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let names = ColumnNames::new(["dstDomains", "srcIP", "timestamp"]);
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql).expect("parses");
        names.rewrite(&mut statements);
        statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn any_spelling_becomes_the_quoted_exact_name() {
        assert_eq!(rewritten("SELECT dstdomains FROM flows"), r#"SELECT "dstDomains" FROM flows"#);
        assert_eq!(rewritten("SELECT DSTDOMAINS FROM flows"), r#"SELECT "dstDomains" FROM flows"#);
        assert_eq!(rewritten(r#"SELECT "dstDomains" FROM flows"#), r#"SELECT "dstDomains" FROM flows"#);
        assert_eq!(
            rewritten("SELECT f.srcip FROM flows f WHERE f.SRCIP = '10.0.0.1' ORDER BY timestamp"),
            r#"SELECT f."srcIP" FROM flows f WHERE f."srcIP" = '10.0.0.1' ORDER BY "timestamp""#
        );
    }

    #[test]
    fn from_first_without_select_selects_every_column() {
        assert_eq!(rewritten("FROM flows LIMIT 3"), "SELECT * FROM flows LIMIT 3");
        assert_eq!(rewritten("FROM flows SELECT dstdomains"), r#"FROM flows SELECT "dstDomains""#);
        assert_eq!(rewritten("SELECT FROM flows"), "SELECT FROM flows");
    }

    #[test]
    fn other_identifiers_are_left_alone() {
        assert_eq!(rewritten("SELECT count(*) AS n FROM flows"), "SELECT count(*) AS n FROM flows");
        assert_eq!(
            rewritten("SELECT unnest(dstdomains) AS d FROM flows"),
            r#"SELECT unnest("dstDomains") AS d FROM flows"#
        );
    }

    #[test]
    fn join_using_columns_resolve_too() {
        let names = ColumnNames::new(["hostName", "flowId"]);
        let mut statements = Parser::parse_sql(
            &GenericDialect {},
            "SELECT count(*) FROM flows JOIN flow_ends USING (hostName, flowid)",
        )
        .expect("parses");
        names.rewrite(&mut statements);
        assert_eq!(
            statements[0].to_string(),
            r#"SELECT count(*) FROM flows JOIN flow_ends USING("hostName", "flowId")"#
        );
    }

    #[test]
    fn an_alias_named_like_a_column_stays_consistent_with_order_by() {
        assert_eq!(
            rewritten("SELECT upper(srcip) AS SRCIP FROM flows ORDER BY srcip"),
            r#"SELECT upper("srcIP") AS "srcIP" FROM flows ORDER BY "srcIP""#
        );
    }
}
