//! `list[i]` (`array_element`) as one `take`.
//!
//! DataFusion's `array_element` copies each row's element through a
//! `MutableArrayData`, one extend per row, after spreading the constant
//! index into an array of the table's length. `dstDomains[1]` over 100
//! million flows (the first name of each destination, what "processes by
//! domain" and "top talkers" group on) spent most of its time there. For a
//! list array and a constant index this function computes each row's
//! position in the list's values from the offsets and takes them all at
//! once; every other case goes to DataFusion's implementation unchanged.
//! The results are the same: 1-based, negative counts from the end, out of
//! range or NULL lists give NULL.
//!
//! `list[i]` is planned straight to DataFusion's function (not looked up by
//! name), so [`FastArrayElementRewrite`] swaps it in during analysis.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// `array_element`, with the fast path of the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FastArrayElement {
    inner: Arc<ScalarUDF>,
}

impl FastArrayElement {
    pub fn new() -> Self {
        FastArrayElement { inner: datafusion::functions_nested::extract::array_element_udf() }
    }
}

impl Default for FastArrayElement {
    fn default() -> Self {
        Self::new()
    }
}

/// The element at 1-based `index` (negative: from the end) of each list of
/// `lists`, NULL where there is none.
fn elements(lists: &ArrayRef, index: i64) -> Result<ArrayRef> {
    let lists = lists.as_list::<i32>();
    let offsets = lists.offsets();
    let positions: UInt32Array = (0..lists.len())
        .map(|row| {
            let (start, end) = (i64::from(offsets[row]), i64::from(offsets[row + 1]));
            let length = end - start;
            let at = if index < 0 { index + length } else { index - 1 };
            (lists.is_valid(row) && (0..length).contains(&at)).then(|| (start + at) as u32)
        })
        .collect();
    Ok(take(lists.values(), &positions, None)?)
}

impl ScalarUDFImpl for FastArrayElement {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(lists), ColumnarValue::Scalar(ScalarValue::Int64(Some(index)))] =
            args.args.as_slice()
            && matches!(lists.data_type(), DataType::List(_))
            && u32::try_from(lists.as_list::<i32>().values().len()).is_ok()
        {
            return Ok(ColumnarValue::Array(elements(lists, *index)?));
        }
        self.inner.invoke_with_args(args)
    }
}

/// Replaces DataFusion's `array_element` in plans by [`FastArrayElement`].
#[derive(Debug)]
pub struct FastArrayElementRewrite {
    fast: Arc<ScalarUDF>,
}

impl FastArrayElementRewrite {
    pub fn new() -> Self {
        FastArrayElementRewrite { fast: Arc::new(ScalarUDF::from(FastArrayElement::new())) }
    }

    /// The function it puts in place (also registered by name).
    pub fn function(&self) -> ScalarUDF {
        self.fast.as_ref().clone()
    }
}

impl Default for FastArrayElementRewrite {
    fn default() -> Self {
        Self::new()
    }
}

impl FunctionRewrite for FastArrayElementRewrite {
    fn name(&self) -> &str {
        "flowsql_fast_array_element"
    }

    fn rewrite(&self, expr: Expr, _schema: &DFSchema, _config: &ConfigOptions) -> Result<Transformed<Expr>> {
        match expr {
            Expr::ScalarFunction(call)
                if call.func.name() == "array_element" && !Arc::ptr_eq(&call.func, &self.fast) =>
            {
                Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::clone(&self.fast),
                    call.args,
                ))))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;

    /// Every case through the plain function and through flowsql's, in one
    /// session: the same text.
    #[tokio::test]
    async fn agrees_with_datafusion() {
        let plain = datafusion::prelude::SessionContext::new();
        let fast = crate::base_context(Some(2));
        let lists = "SELECT * FROM (VALUES (make_array('a.test', 'b.test', 'c.test')), (make_array('x.test')), \
                     (CAST(make_array() AS VARCHAR[])), (CAST(NULL AS VARCHAR[])), (make_array('p', NULL, 'r'))) AS t(l)";
        for index in ["1", "2", "3", "4", "0", "-1", "-3", "-4"] {
            let sql = format!(
                "SELECT l[{index}] AS a, array_element(l, {index}) AS b, list_extract(l, {index}) AS c, l[{index}] FROM ({lists})"
            );
            let expected =
                pretty_format_batches(&plain.sql(&sql).await.expect("plain").collect().await.expect("plain"))
                    .expect("format")
                    .to_string();
            let got =
                pretty_format_batches(&fast.sql(&sql).await.expect("fast").collect().await.expect("fast"))
                    .expect("format")
                    .to_string();
            assert_eq!(got, expected, "index {index}");
        }
    }

    #[test]
    fn list_index_is_rewritten_to_the_fast_function() {
        use datafusion::common::DFSchema;
        use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
        use datafusion::logical_expr::{Expr, col, lit};

        let rewrite = super::FastArrayElementRewrite::new();
        let plain = datafusion::functions_nested::expr_fn::array_element(col("l"), lit(1i64));
        let config = datafusion::common::config::ConfigOptions::default();
        let done = rewrite.rewrite(plain, &DFSchema::empty(), &config).expect("rewrite");
        assert!(done.transformed);
        let Expr::ScalarFunction(call) = &done.data else { panic!("a function call: {}", done.data) };
        assert!(std::sync::Arc::ptr_eq(&call.func, &rewrite.fast));
        // Once is enough.
        assert!(!rewrite.rewrite(done.data, &DFSchema::empty(), &config).expect("again").transformed);
    }
}
