//! The time range a query's filters allow, so that a scan reads only the
//! cold files and hot batches that can match (`timestamp > now() - interval
//! '1 hour'` reaches the manifest and the hot tier as a list of files and
//! batches).
//!
//! Only conjuncts of the form `<time column> <op> literal` (and BETWEEN) narrow
//! the range; anything else leaves it open on that side. The filters are
//! still applied to every row afterwards, so the range only has to be wide
//! enough, never exact.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use flowsql_store::TimeRange;

/// Nanoseconds of a timestamp literal of any unit.
fn literal_ns(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else { return None };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn is_time_column(expr: &Expr, column: &str) -> bool {
    matches!(expr, Expr::Column(c) if c.name == column)
}

fn intersect(a: TimeRange, b: TimeRange) -> TimeRange {
    let since = match (a.since_ns, b.since_ns) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let until = match (a.until_ns, b.until_ns) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    TimeRange::new(since, until)
}

/// The range one conjunct allows on the time column `column`.
fn from_filter(filter: &Expr, column: &str) -> TimeRange {
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            intersect(from_filter(left, column), from_filter(right, column))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            // Put the column on the left.
            let (op, value) = if is_time_column(left, column) {
                (*op, literal_ns(right))
            } else if is_time_column(right, column) {
                match op.swap() {
                    Some(swapped) => (swapped, literal_ns(left)),
                    None => return TimeRange::ALL,
                }
            } else {
                return TimeRange::ALL;
            };
            let Some(v) = value else { return TimeRange::ALL };
            match op {
                Operator::Gt => TimeRange::new(v.checked_add(1), None),
                Operator::GtEq => TimeRange::new(Some(v), None),
                Operator::Lt => TimeRange::new(None, Some(v)),
                Operator::LtEq => TimeRange::new(None, v.checked_add(1)),
                Operator::Eq => TimeRange::new(Some(v), v.checked_add(1)),
                _ => TimeRange::ALL,
            }
        }
        Expr::Between(Between { expr, negated: false, low, high }) if is_time_column(expr, column) => {
            TimeRange::new(literal_ns(low), literal_ns(high).and_then(|h| h.checked_add(1)))
        }
        _ => TimeRange::ALL,
    }
}

/// The range all of `filters` (a conjunction) allow on the time column
/// `column`.
pub fn from_filters(filters: &[Expr], column: &str) -> TimeRange {
    filters.iter().map(|f| from_filter(f, column)).fold(TimeRange::ALL, intersect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn from_filters(filters: &[Expr]) -> TimeRange {
        super::from_filters(filters, "timestamp")
    }

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(v), Some("UTC".into())))
    }

    #[test]
    fn comparisons_narrow_the_range() {
        let t = || col("timestamp");
        assert_eq!(from_filters(&[t().gt_eq(ts(10))]), TimeRange::new(Some(10), None));
        assert_eq!(from_filters(&[t().gt(ts(10)), t().lt(ts(20))]), TimeRange::new(Some(11), Some(20)));
        assert_eq!(from_filters(&[ts(10).lt_eq(t())]), TimeRange::new(Some(10), None));
        assert_eq!(from_filters(&[t().between(ts(5), ts(9))]), TimeRange::new(Some(5), Some(10)));
        assert_eq!(from_filters(&[t().eq(ts(7))]), TimeRange::new(Some(7), Some(8)));
        assert_eq!(
            from_filters(&[t().gt_eq(ts(10)).and(t().lt(ts(30))), t().lt(ts(20))]),
            TimeRange::new(Some(10), Some(20))
        );
        let seconds = lit(ScalarValue::TimestampSecond(Some(3), None));
        assert_eq!(from_filters(&[t().gt_eq(seconds)]), TimeRange::new(Some(3_000_000_000), None));
    }

    #[test]
    fn anything_else_leaves_it_open() {
        let t = || col("timestamp");
        assert_eq!(from_filters(&[t().gt(ts(10)).or(t().lt(ts(5)))]), TimeRange::ALL);
        assert_eq!(from_filters(&[col("srcPort").gt(lit(5))]), TimeRange::ALL);
        assert_eq!(from_filters(&[t().not_eq(ts(5))]), TimeRange::ALL);
        assert_eq!(from_filters(&[]), TimeRange::ALL);
    }
}
