//! The SQL functions a statement may call: an allow-list, not a list of the ones found
//! harmful so far. Every name below was reviewed for what one call can cost: the output of
//! most is bounded by the size of their arguments (math, text and date functions, hashes,
//! casts, array functions that combine or select what they are given, aggregates and
//! windows, which the memory pool accounts for); those whose output or work is a number the
//! statement chooses are capped before they run (`limits::CAPPED`: `repeat`, `lpad`, `rpad`,
//! `replace`, `regexp_replace`, `array_repeat`, `array_resize`, `range`, `generate_series`,
//! `levenshtein`). Any function a new DataFusion brings is not callable until it is added
//! here, and a test fails until it is reviewed.
//!
//! Refused: `input_file_name` and `file_row_index`, which would tell a SQL user where the
//! lake's files are.

use datafusion::prelude::SessionContext;

/// Scalar functions (and their aliases).
pub(crate) const SCALAR: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "array_add",
    "array_any_value",
    "array_append",
    "array_avg",
    "array_cat",
    "array_compact",
    "array_concat",
    "array_contains",
    "array_dims",
    "array_distance",
    "array_distinct",
    "array_element",
    "array_empty",
    "array_except",
    "array_extract",
    "array_has",
    "array_has_all",
    "array_has_any",
    "array_indexof",
    "array_intersect",
    "array_join",
    "array_length",
    "array_max",
    "array_min",
    "array_ndims",
    "array_normalize",
    "array_pop_back",
    "array_pop_front",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_product",
    "array_push_back",
    "array_push_front",
    "array_remove",
    "array_remove_all",
    "array_remove_n",
    "array_repeat",
    "array_replace",
    "array_replace_all",
    "array_replace_n",
    "array_resize",
    "array_reverse",
    "array_scale",
    "array_slice",
    "array_sort",
    "array_subtract",
    "array_sum",
    "array_to_string",
    "array_union",
    "arrays_overlap",
    "arrays_zip",
    "arrow_cast",
    "arrow_field",
    "arrow_metadata",
    "arrow_try_cast",
    "arrow_typeof",
    "ascii",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "bit_length",
    "btrim",
    "cardinality",
    "cast_to_type",
    "cbrt",
    "ceil",
    "char_length",
    "character_length",
    "chr",
    "coalesce",
    "concat",
    "concat_ws",
    "contains",
    "cos",
    "cosh",
    "cosine_distance",
    "cot",
    "current_date",
    "current_time",
    "current_timestamp",
    "date_bin",
    "date_format",
    "date_part",
    "date_trunc",
    "datepart",
    "datetrunc",
    "decode",
    "degrees",
    "digest",
    "dot_product",
    "element_at",
    "empty",
    "encode",
    "ends_with",
    "exp",
    "factorial",
    "find_in_set",
    "flatten",
    "floor",
    "from_unixtime",
    "gcd",
    "generate_series",
    "get_field",
    "greatest",
    "ifnull",
    "initcap",
    "inner_product",
    "instr",
    "isnan",
    "iszero",
    "lcm",
    "least",
    "left",
    "length",
    "levenshtein",
    "list_add",
    "list_any_value",
    "list_append",
    "list_avg",
    "list_cat",
    "list_compact",
    "list_concat",
    "list_contains",
    "list_dims",
    "list_distance",
    "list_distinct",
    "list_element",
    "list_empty",
    "list_except",
    "list_extract",
    "list_has",
    "list_has_all",
    "list_has_any",
    "list_indexof",
    "list_intersect",
    "list_join",
    "list_length",
    "list_max",
    "list_ndims",
    "list_normalize",
    "list_pop_back",
    "list_pop_front",
    "list_position",
    "list_positions",
    "list_prepend",
    "list_product",
    "list_push_back",
    "list_push_front",
    "list_remove",
    "list_remove_all",
    "list_remove_n",
    "list_repeat",
    "list_replace",
    "list_replace_all",
    "list_replace_n",
    "list_resize",
    "list_reverse",
    "list_scale",
    "list_slice",
    "list_sort",
    "list_subtract",
    "list_sum",
    "list_to_string",
    "list_union",
    "list_zip",
    "ln",
    "log",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "make_array",
    "make_date",
    "make_list",
    "make_time",
    "map",
    "map_entries",
    "map_extract",
    "map_keys",
    "map_values",
    "md5",
    "named_struct",
    "nanvl",
    "now",
    "nullif",
    "nvl",
    "nvl2",
    "octet_length",
    "overlay",
    "pi",
    "position",
    "pow",
    "power",
    "radians",
    "rand",
    "random",
    "range",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row",
    "rpad",
    "rtrim",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "signum",
    "sin",
    "sinh",
    "split_part",
    "sqrt",
    "starts_with",
    "string_to_array",
    "string_to_list",
    "strpos",
    "struct",
    "substr",
    "substr_index",
    "substring",
    "substring_index",
    "tan",
    "tanh",
    "to_char",
    "to_date",
    "to_hex",
    "to_local_time",
    "to_time",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_nanos",
    "to_timestamp_seconds",
    "to_unixtime",
    "today",
    "translate",
    "trim",
    "trunc",
    "try_cast_to_type",
    "union_extract",
    "union_tag",
    "upper",
    "uuid",
    "version",
    "with_metadata",
];

/// Aggregate functions: their state is counted by the memory pool.
pub(crate) const AGGREGATE: &[&str] = &[
    "any_value",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar",
    "covar_pop",
    "covar_samp",
    "first_value",
    "grouping",
    "last_value",
    "max",
    "mean",
    "median",
    "min",
    "nth_value",
    "percentile_cont",
    "quantile_cont",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var",
    "var_pop",
    "var_population",
    "var_samp",
    "var_sample",
];

/// Window functions: their state is counted by the memory pool.
pub(crate) const WINDOW: &[&str] = &[
    "cume_dist",
    "dense_rank",
    "first_value",
    "lag",
    "last_value",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
];

/// Table functions: rows produced a batch at a time, so the time limit stops them.
pub(crate) const TABLE: &[&str] = &["generate_series", "range"];

/// Removes from `ctx` every function not on the lists (and not in `also`, a front end's own
/// reviewed additions).
pub(crate) fn restrict(ctx: &SessionContext, also: &[&str]) {
    let state = ctx.state();
    let allowed = |list: &[&str], name: &str| list.contains(&name) || also.contains(&name);
    for name in state.scalar_functions().keys() {
        if !allowed(SCALAR, name) {
            ctx.deregister_udf(name);
        }
    }
    for name in state.aggregate_functions().keys() {
        if !allowed(AGGREGATE, name) {
            ctx.deregister_udaf(name);
        }
    }
    for name in state.window_functions().keys() {
        if !allowed(WINDOW, name) {
            ctx.deregister_udwf(name);
        }
    }
    for name in state.table_functions().keys() {
        if !allowed(TABLE, name) {
            ctx.deregister_udtf(name);
        }
    }
}

/// Every function name `ctx` can call, by kind.
#[cfg(test)]
pub(crate) fn registered(ctx: &SessionContext) -> Vec<(&'static str, String)> {
    let state = ctx.state();
    let mut out: Vec<(&'static str, String)> = Vec::new();
    out.extend(
        state
            .scalar_functions()
            .keys()
            .map(|n| ("scalar", n.clone())),
    );
    out.extend(
        state
            .aggregate_functions()
            .keys()
            .map(|n| ("aggregate", n.clone())),
    );
    out.extend(
        state
            .window_functions()
            .keys()
            .map(|n| ("window", n.clone())),
    );
    out.extend(state.table_functions().keys().map(|n| ("table", n.clone())));
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_a_list(kind: &str, name: &str, also: &[&str]) -> bool {
        also.contains(&name)
            || match kind {
                "scalar" => SCALAR.contains(&name),
                "aggregate" => AGGREGATE.contains(&name),
                "window" => WINDOW.contains(&name),
                _ => TABLE.contains(&name),
            }
    }

    /// What DataFusion (with this build's features) and the PostgreSQL dialect offer that no
    /// list names: after a version change, the functions to review.
    fn unreviewed(ctx: &SessionContext, also: &[&str]) -> Vec<(&'static str, String)> {
        registered(ctx)
            .into_iter()
            .filter(|(k, n)| !on_a_list(k, n, also))
            .collect()
    }

    #[test]
    fn every_function_datafusion_offers_was_reviewed() {
        let raw = SessionContext::new();
        let refused: Vec<String> = unreviewed(&raw, &[]).into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            refused,
            ["file_row_index", "input_file_name"],
            "review these"
        );
        // Every listed name exists: the list is not longer than what there is.
        let names: Vec<String> = registered(&raw).into_iter().map(|(_, n)| n).collect();
        for listed in SCALAR.iter().chain(AGGREGATE).chain(WINDOW).chain(TABLE) {
            assert!(
                names.iter().any(|n| n == listed),
                "{listed} is listed but not offered"
            );
        }
    }

    #[test]
    fn every_function_the_postgres_dialect_adds_was_reviewed() {
        let raw = SessionContext::new();
        let before: Vec<String> = registered(&raw).into_iter().map(|(_, n)| n).collect();
        crate::postgres::install_all(&raw).unwrap();
        let pg = crate::postgres::PG_FUNCTIONS;
        let added: Vec<String> = registered(&raw)
            .into_iter()
            .map(|(_, n)| n)
            .filter(|n| !before.contains(n) && !on_a_list("scalar", n, &[]))
            .collect();
        let unlisted: Vec<&String> = added.iter().filter(|n| !pg.contains(&n.as_str())).collect();
        assert!(unlisted.is_empty(), "review these: {unlisted:?}");
        for listed in pg {
            assert!(
                added.iter().any(|n| n == listed),
                "{listed} is listed but not added"
            );
        }
        let refused = unreviewed(&raw, pg);
        assert_eq!(refused.len(), 2, "{refused:?}");
    }

    #[tokio::test]
    async fn a_function_off_the_list_cannot_be_called() {
        let dir = tempfile::tempdir().unwrap();
        let lake = cryptolake_lake::Lake::open(dir.path().to_str().unwrap()).unwrap();
        let engine = crate::QueryEngine::open(&lake).await.unwrap();
        assert!(unreviewed(engine.context(), &[]).is_empty());
        for call in ["input_file_name()", "file_row_index()"] {
            let e = engine
                .query(&format!("SELECT {call}"))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("Invalid function") || e.contains("not found"),
                "{call}: {e}"
            );
        }
        let ok = engine
            .query("SELECT upper('a'), length(repeat('x', 3))")
            .await;
        assert!(ok.is_ok(), "{ok:?}");
    }
}
